"""Shared test helpers: the command line and the model of a language model small enough that a training step
takes milliseconds (the data is the built-in Penn Treebank)."""
import pytest
import torch

import ema_lm as E

TINY_LM_ARGV = ["--n-layer", "2", "--d-model", "32", "--n-head", "2", "--block-size", "32", "--micro-batch", "4",
                "--batch-tokens", "128", "--warmup-steps", "2", "--eval-tokens", "2048", "--device", "cpu"]


@pytest.fixture
def lm_argv() -> list:
    """ema_lm.py flags for a tiny run; append --max-steps, --out-dir and the flag under test."""
    return list(TINY_LM_ARGV)


@pytest.fixture
def make_model():
    """make_model(mixer, ffn, seed): a 2-block, width-32 LanguageModel over a 100-token vocabulary."""
    def build(mixer: str = "ema", ffn: str = "sparse", seed: int = 0) -> E.LanguageModel:
        torch.manual_seed(seed)
        return E.LanguageModel(E.ModelConfig(n_layer=2, d_model=32, d_ffn=96, n_head=2, block_size=64, mixer=mixer,
                                             ffn=ffn, vocab_size=100))
    return build
