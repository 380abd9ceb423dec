"""ema_lm.py: a language model whose only temporal context is fixed-decay EMA traces.

Hypothesis (paper, arXiv 2604.08556, "EMA Is Not All You Need"): a 12-block "SPEN" model whose only way
of mixing positions is three exponential moving averages with constant decays reaches C4 perplexity 260,
about 8x GPT-2, because the traces forget *which* token came earlier and no later layer can undo that.
This script trains that model and, with `--mixer attention`, a same-budget GPT-2 control on identical
data, steps and validation windows, so "8x GPT-2" becomes a measured ratio instead of a quoted one.

The SPEN block (Figure 1 of the paper; everything not in the figure is our reconstruction, see README):

    u_t     = LayerNorm(x_t)                                    block input, pre-norm
    h_t^s   = (1 - a_s) h_{t-1}^s + a_s u_t,  a = 0.5, 0.1, 0.02  three fixed traces, h_{-1} = 0
    u^_t    = W_pred [h_{t-1}^1; h_{t-1}^2; h_{t-1}^3]           linear predictor, sees only the past
    e_t     = u_t - u^_t                                        prediction error
    c_t     = LayerNorm(W_mix [e_t; h_t^1; h_t^2; h_t^3])        context mix: (S+1)D -> D, the "bottleneck"
    x'_t    = x_t + W_down topk_6%(W_up c_t)                    sparse FFN, then the residual add

Four kinds of context (`--mixer`; README "Where the boundary lies", and content_recall.py, which tests them
on associative recall): "ema" is the block above; "ema-learned" replaces the three constants by S x D learned
alphas, still independent of the input (S4D / RetNet family); "selective" makes alpha a function of the
current token, a_t = 0.99 sigmoid(W u_t + b) per trace and channel (a gated linear recurrence, GLA / Mamba
family, without state expansion); "attention" is GPT-2's block. The predictor, error, mix and FFN are the
same for the three trace mixers.

Commands:
    python ema_lm.py                                   # small SPEN on Penn Treebank, CPU, ~6 minutes
    python ema_lm.py --mixer attention                 # the same budget with causal self-attention
    python ema_lm.py --mixer selective                 # or ema-learned: the SPEN block with other traces
    python ema_lm.py --device cuda                     # the same run on a GPU
    python ema_lm.py --device cuda --preset paper --dataset fineweb --eval-datasets c4,wikitext103

Measured (seeds 0, 1, 2; 2-core CPU, one thread per run; README "Results"): default small preset on PTB,
614k tokens, SPEN (7.29M parameters) validation perplexity 137.3 +- 1.0, the attention control (7.24M)
163.2 +- 2.4. At this size and budget the EMA model is *ahead*; the paper's 8x gap is at 130M on C4.

Glossary: B batch, T time (tokens), D model width (d_model), S number of traces (3), H FFN hidden width,
V vocabulary, L blocks. a_s = alpha (weight of the new input), 1 - a_s = the decay.
"""
# ----------------------------------------------------------------------------- imports
import argparse
import json
import math
import os
import platform
import subprocess
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from data.common import load_tokens

ROOT = Path(__file__).resolve().parent
ALPHAS = (0.5, 0.1, 0.02)  # paper, Figure 1: fast, medium, slow; constants, never learned
MIXERS = ("ema", "ema-learned", "selective", "attention")  # the four kinds of context (README, "Where the boundary lies")

# ----------------------------------------------------------------------------- config / CLI


@dataclass
class ModelConfig:
    vocab_size: int = 50304  # GPT-2's 50257 padded to a multiple of 64 (faster matmuls; nanoGPT)
    n_layer: int = 12  # paper: twelve blocks
    d_model: int = 768  # GPT-2 small's width, so the two mixers differ only in the block
    d_ffn: int = 2304  # 3*D makes the 12-block SPEN 130.7M parameters, the paper's 130M
    ffn_active: float = 0.06  # paper: top-k FFN with 6% of hidden units active
    n_head: int = 12  # attention mixer only (GPT-2 small)
    block_size: int = 1024  # context length; the SPEN itself has no limit, only the attention control
    mixer: str = "ema"  # "ema", "ema-learned", "selective" (SPEN block, three kinds of trace) or "attention" (GPT-2)
    ffn: str = "sparse"  # "sparse" (top-k) or "dense"; either mixer, one factor at a time


# Presets give every model field and the training budget; explicit flags override them.
PRESETS = {
    # CPU-sized: 300 steps of 2048 tokens (about half an epoch of PTB); ~1,800 tokens/s on 2 cores (bench.py), ~6 min.
    # Most of its time is the 50k-way output layer, which no width choice below can avoid.
    "small": dict(n_layer=4, d_model=128, n_head=4, block_size=128, max_steps=300, batch_tokens=2048,
                  micro_batch=16, lr=3e-3, warmup_steps=30, eval_tokens=65536, eval_interval=100),
    # The paper's recipe: 130M SPEN, ~8B tokens (paper), 0.5M tokens per step, context 1024.
    "paper": dict(n_layer=12, d_model=768, n_head=12, block_size=1024, max_steps=16000,
                  batch_tokens=524288, micro_batch=16, lr=6e-4, warmup_steps=700,
                  eval_tokens=4194304, eval_interval=1000),
}
DATASETS = ("ptb", "c4", "fineweb", "wikitext103")
EVAL_SPLIT = {"ptb": "val", "c4": "val", "fineweb": "val", "wikitext103": "test"}


def get_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), default="small", help="model size and training budget")
    p.add_argument("--mixer", choices=MIXERS, default="ema", help="how positions are mixed: the SPEN block with fixed, "
                   "learned or input-dependent traces, or causal self-attention")
    p.add_argument("--ffn", choices=["sparse", "dense"], default=None, help="FFN type (default: sparse for the SPEN mixers, dense for attention)")
    p.add_argument("--n-layer", type=int, default=None, help="blocks (overrides the preset)")
    p.add_argument("--d-model", type=int, default=None, help="model width D (overrides the preset)")
    p.add_argument("--d-ffn", type=int, default=None, help="FFN hidden width H (default: 3D for the SPEN mixers, 4D for attention)")
    p.add_argument("--n-head", type=int, default=None, help="attention heads (overrides the preset)")
    p.add_argument("--block-size", type=int, default=None, help="training context length T (overrides the preset)")
    p.add_argument("--dataset", choices=DATASETS, default="ptb", help="training corpus (data/<name>/train.bin)")
    p.add_argument("--eval-datasets", default="", help="comma-separated extra datasets to report perplexity on, e.g. c4,wikitext103")
    p.add_argument("--max-steps", type=int, default=None, help="optimiser steps (overrides the preset)")
    p.add_argument("--steps-this-run", type=int, default=0, help="stop after this many steps, leaving a checkpoint for --resume (0 = run to the end)")
    p.add_argument("--batch-tokens", type=int, default=None, help="tokens per optimiser step; gradient accumulation is derived from it")
    p.add_argument("--micro-batch", type=int, default=None, help="sequences per forward pass")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (overrides the preset)")
    p.add_argument("--min-lr-ratio", type=float, default=0.1, help="final learning rate as a fraction of --lr")
    p.add_argument("--warmup-steps", type=int, default=None, help="linear warm-up steps (overrides the preset)")
    p.add_argument("--weight-decay", type=float, default=0.1, help="AdamW weight decay on matrices")
    p.add_argument("--grad-clip", type=float, default=1.0, help="clip the gradient norm to this (0 = off)")
    p.add_argument("--eval-interval", type=int, default=None, help="evaluate every this many steps")
    p.add_argument("--eval-tokens", type=int, default=None, help="tokens in the fixed validation set (from the start of val.bin)")
    p.add_argument("--seed", type=int, default=0, help="seed for initialisation and data sampling")
    p.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu), cuda, mps or cpu")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None, help="torch.compile the model (default: on for cuda only)")
    p.add_argument("--out-dir", default=None, help="run folder for metrics and checkpoints (default: runs/<dataset>-<mixer>-<preset>-s<seed>)")
    p.add_argument("--resume", action="store_true", help="continue from <out-dir>/ckpt.pt exactly")
    p.add_argument("--sample", action="store_true", help="generate text from <out-dir>/ckpt.pt instead of training")
    p.add_argument("--prompt", default="the company said", help="prompt for --sample")
    p.add_argument("--sample-tokens", type=int, default=50, help="tokens to generate with --sample")
    args = p.parse_args(argv)
    for k, v in PRESETS[args.preset].items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if args.ffn is None:
        args.ffn = "dense" if args.mixer == "attention" else "sparse"
    if args.d_ffn is None:
        args.d_ffn = (4 if args.mixer == "attention" else 3) * args.d_model
    args.eval_datasets = [d for d in args.eval_datasets.split(",") if d]
    for d in args.eval_datasets:
        if d not in DATASETS:
            p.error(f"--eval-datasets: unknown dataset {d!r}; choose from {', '.join(DATASETS)}")
    if args.batch_tokens % (args.micro_batch * args.block_size):
        p.error(f"--batch-tokens {args.batch_tokens} must be a multiple of micro-batch x block-size "
                f"= {args.micro_batch * args.block_size}")
    if args.out_dir is None:
        args.out_dir = str(ROOT / "runs" / f"{args.dataset}-{args.mixer}-{args.preset}-s{args.seed}")
    return args


# ----------------------------------------------------------------------------- data


def get_tokens(dataset: str, split: str) -> np.ndarray:
    """uint16 token ids of data/<dataset>/<split>.bin; the built-in PTB is prepared on first use."""
    if dataset == "ptb" and not (ROOT / "data" / "ptb" / f"{split}.bin").exists():
        from data.ptb.prepare import prepare
        prepare()
    return load_tokens(dataset, split)


def get_batch(data: np.ndarray, B: int, T: int, gen: torch.Generator, device: str):
    """B random windows of T+1 tokens; the generator makes sampling reproducible and resumable."""
    ix = torch.randint(len(data) - T - 1, (B,), generator=gen).tolist()
    xy = torch.stack([torch.from_numpy(data[i:i + T + 1].astype(np.int64)) for i in ix])
    return xy[:, :-1].to(device), xy[:, 1:].to(device)  # (B, T) each


def val_windows(data: np.ndarray, T: int, n_tokens: int) -> torch.Tensor:
    """The fixed validation set: consecutive non-overlapping windows from the start of the split.
    Identical for every model with the same block size, so losses are comparable."""
    n = min(n_tokens, len(data) - 1) // T
    if n == 0:
        raise ValueError(f"validation split has {len(data)} tokens, fewer than one window of {T + 1}; "
                         "lower --block-size or prepare more validation data")
    return torch.from_numpy(data[:n * T + 1].astype(np.int64))


# ----------------------------------------------------------------------------- model: the EMA scan


def ema_scan_reference(x: torch.Tensor, alphas) -> torch.Tensor:
    """The definition, one step at a time: h_t = (1 - a) h_{t-1} + a x_t, h_{-1} = 0.
    x: (B, T, D) -> traces (B, T, S, D), computed in float32."""
    B, T, D = x.shape
    a = torch.tensor(alphas, dtype=torch.float32, device=x.device).view(-1, 1)  # (S, 1)
    h = x.new_zeros(B, len(alphas), D, dtype=torch.float32)  # (B, S, D)
    out = []
    for t in range(T):
        h = (1 - a) * h + a * x[:, t, None, :].float()
        out.append(h)
    return torch.stack(out, 1).to(x.dtype)  # (B, T, S, D)


@torch.compiler.assume_constant_result
def ema_decay_matrices(alphas: tuple, C: int, N: int, device: torch.device):
    """The constant weights of ema_scan, in float32. torch.compile calls this once at trace time and
    bakes the results into the graph as constants (tracing their construction instead trips an inductor
    bug in torch 2.11 on CUDA, "The argument '-((0))' is not comparable")."""
    S = len(alphas)
    a = torch.tensor(alphas, dtype=torch.float32, device=device)  # (S,)
    lam = 1 - a
    i = torch.arange(C, device=device, dtype=torch.float32)
    dij = i[:, None] - i[None, :]  # (C, C): i - j
    W = a[:, None, None] * lam[:, None, None] ** dij.clamp(min=0) * (dij >= 0)  # (S, C, C)
    n = torch.arange(N, device=device, dtype=torch.float32)
    dnm = n[:, None] - 1 - n[None, :]  # (N, N): n - 1 - m
    A = lam[:, None, None] ** (C * dnm.clamp(min=0)) * (dnm >= 0)  # (S, N, N)
    M_in = W.permute(1, 0, 2).reshape(C * S, C)  # row (i, s), column j
    M_carry = torch.diag_embed(lam[None, :] ** (i[:, None] + 1)).reshape(C * S, S)  # row (i, s), column s'
    return W[:, -1, :].contiguous(), A, torch.cat([M_in, M_carry], 1)  # (S, C), (S, N, N), (C*S, C+S)


def ema_scan(x: torch.Tensor, alphas, chunk_size: int = 64) -> torch.Tensor:
    """The same traces as ema_scan_reference, in three matrix products instead of T sequential steps.

    Inside a chunk of C positions with carried state c (the trace just before the chunk):
        h_i = sum_{j<=i} a lam^(i-j) x_j  +  lam^(i+1) c,        lam = 1 - a
    1. each chunk's own contribution to its last trace: a weighted sum over the chunk;
    2. the carry into chunk n: sum over earlier chunks m of lam^(C(n-1-m)) times their contribution;
    3. one matmul per chunk whose input rows are the C inputs followed by the S carries and whose
       output rows are ordered (position, trace), so the result is already (B, T, S, D).
    Decay weights are built in float32; any T works (the tail is padded with zeros, which only
    positions after T could see)."""
    B, T, D = x.shape
    S, C = len(alphas), chunk_size
    N = -(-T // C)  # chunks
    if N * C != T:
        x = F.pad(x, (0, 0, 0, N * C - T))
    xc = x.view(B, N, C, D)
    w_last, A, M = ema_decay_matrices(tuple(alphas), C, N, x.device)
    own = torch.einsum("sj,bnjd->bnsd", w_last.to(x.dtype), xc)  # (B, N, S, D)
    carry = torch.einsum("snm,bmsd->bnsd", A.to(x.dtype), own)  # (B, N, S, D): trace before chunk n
    h = M.to(x.dtype) @ torch.cat([xc, carry], 2)  # (B, N, C*S, D)
    return h.view(B, N * C, S, D)[:, :T]  # (B, T, S, D)


# ----------------------------------------------------------------------------- model: learned and selective traces
# The same trace update with alpha free to vary per trace and channel (ema-learned) and, in addition, per
# position as a function of the current token (selective). alpha = ALPHA_MAX * sigmoid(z): the cap keeps the
# per-step decay 1 - alpha >= 0.01, which is what makes the chunked scan below safe in float32.
ALPHA_MAX = 0.99


def gated_scan_reference(x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """The definition, one step at a time: h_t = (1 - a_t) h_{t-1} + a_t x_t, a_t = ALPHA_MAX sigmoid(z_t),
    h_{-1} = 0. x: (B, T, D); z: (B, T, S, D), or (1, 1, S, D) for decays constant in time -> (B, T, S, D),
    computed in float32."""
    B, T, D = x.shape
    a = (ALPHA_MAX * torch.sigmoid(z.float())).expand(B, T, *z.shape[2:])  # (B, T, S, D)
    h = x.new_zeros(B, *z.shape[2:], dtype=torch.float32)  # (B, S, D)
    out = []
    for t in range(T):
        h = (1 - a[:, t]) * h + a[:, t] * x[:, t, None, :].float()
        out.append(h)
    return torch.stack(out, 1).to(x.dtype)  # (B, T, S, D)


def gated_scan(x: torch.Tensor, z: torch.Tensor, chunk_size: int = 16) -> torch.Tensor:
    """The same traces as gated_scan_reference, chunked like ema_scan but with a decay per position.

    Write v_t = a_t x_t and L_i = sum over the chunk, up to and including i, of log(1 - a). Inside a chunk
    with carried state c (the trace just before the chunk):
        h_i = sum_{j<=i} exp(L_i - L_j) v_j  +  exp(L_i) c  =  exp(L_i) cumsum_j(exp(-L_j) v_j)  +  exp(L_i) c
    The cumsum form needs exp(-L_j) to stay finite: with 1 - a >= 0.01 (ALPHA_MAX) and 16 positions per
    chunk, -L_j <= 16 ln(100) = 74 < 88, the float32 limit, so it cannot overflow. Across chunks the state is
    carried in a loop of T/C steps (every exponent there is <= 0). All of it runs in float32, autocast or not."""
    if chunk_size * -math.log(1 - ALPHA_MAX) >= 88:
        raise ValueError(f"chunk_size {chunk_size} could overflow float32 in gated_scan; use 16 or fewer")
    with torch.autocast(x.device.type, enabled=False):
        B, T, D = x.shape
        Bz, Tz, S, _ = z.shape  # Tz is T (selective) or 1 (ema-learned: decays constant in time)
        C = chunk_size
        N = -(-T // C)  # chunks
        pad = N * C - T  # padded positions come after T, so nothing at t < T sees them
        a = ALPHA_MAX * torch.sigmoid(z.float())  # (Bz, Tz, S, D)
        v = F.pad(a * x.float()[:, :, None, :], (0, 0, 0, 0, 0, pad)).view(B, N, C, S, D)
        log_lam = torch.log1p(-a)  # log(1 - a), between ln(0.01) and 0
        if Tz == 1:  # the same L for every chunk: L_i = (i + 1) log(1 - a)
            L = torch.arange(1, C + 1, device=x.device).view(1, 1, C, 1, 1) * log_lam[:, :, None]  # (Bz, 1, C, S, D)
        else:
            L = F.pad(log_lam, (0, 0, 0, 0, 0, pad)).view(B, N, C, S, D).cumsum(2)  # (B, N, C, S, D)
        local = L.exp() * (v * (-L).exp()).cumsum(2)  # (B, N, C, S, D): each chunk from a zero state
        chunk_decay = L[:, :, -1].exp().expand(Bz, N, S, D)  # decay across a whole chunk
        carry = [local.new_zeros(B, S, D)]
        for n in range(1, N):
            carry.append(chunk_decay[:, n - 1] * carry[-1] + local[:, n - 1, -1])
        h = local + L.exp() * torch.stack(carry, 1)[:, :, None]  # (B, N, C, S, D)
        return h.view(B, N * C, S, D)[:, :T].to(x.dtype)  # (B, T, S, D)


def initial_alpha_logits(S: int, D: int) -> torch.Tensor:
    """(S, D) logits z of alphas log-spaced from 0.9 to 0.001: trace 0 covers the fastest third (0.9-0.1),
    trace 2 the slowest (0.01-0.001), so each band holds (or borders) the paper's constant for that trace."""
    a = torch.logspace(math.log10(0.9), math.log10(0.001), S * D).view(S, D)
    return torch.logit(a / ALPHA_MAX)


class FixedTraces(nn.Module):
    """ema: the paper's three traces with constant alphas (ALPHAS). No parameters, no dependence on x."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()

    def forward(self, u):  # (B, T, D) -> (B, T, S, D)
        return ema_scan(u, ALPHAS)


class LearnedTraces(nn.Module):
    """ema-learned: S traces per channel, each channel with its own learned alpha (S x D decays instead of
    3), constant in time and independent of the input: the S4D / RetNet family of fixed learned filters."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.S, self.D = len(ALPHAS), cfg.d_model
        # Stored flat (1-D) so that make_optimizer, which decays only matrices, does not pull alpha to 0.5.
        self.alpha_logit = nn.Parameter(initial_alpha_logits(self.S, self.D).flatten())

    def forward(self, u):  # (B, T, D) -> (B, T, S, D)
        return gated_scan(u, self.alpha_logit.view(1, 1, self.S, self.D))


class SelectiveTraces(nn.Module):
    """selective: alpha_t = sigmoid(W u_t + b), per trace and channel, a function of the current token. It is
    at once the input gate (how much of u_t is written) and one minus the decay (how much is kept), as in the
    EMA itself, HGRN and minGRU (Mamba ties them through its step size). alpha_t near 0 skips a token and
    keeps the memory; near 1 overwrites it. A minimal gated linear recurrence without state expansion."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.S, self.D = len(ALPHAS), cfg.d_model
        self.gate = nn.Linear(self.D, self.S * self.D)  # SPEN._init draws the weight with std 0.02
        with torch.no_grad():  # start where ema-learned starts; the weights make it depend on the token
            self.gate.bias.copy_(initial_alpha_logits(self.S, self.D).flatten())

    def forward(self, u):  # (B, T, D) -> (B, T, S, D)
        B, T, D = u.shape
        return gated_scan(u, self.gate(u).view(B, T, self.S, D))


TRACES = {"ema": FixedTraces, "ema-learned": LearnedTraces, "selective": SelectiveTraces}


# ----------------------------------------------------------------------------- model: blocks


class FFN(nn.Module):
    """D -> H -> D with GELU; "sparse" keeps only the top-k hidden pre-activations per token (paper:
    6% active). The mask is computed densely: it models the paper's sparsity, not its speed."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.up = nn.Linear(cfg.d_model, cfg.d_ffn, bias=False)
        self.down = nn.Linear(cfg.d_ffn, cfg.d_model, bias=False)
        self.k = max(1, round(cfg.ffn_active * cfg.d_ffn)) if cfg.ffn == "sparse" else 0

    def forward(self, x):
        a = self.up(x)  # (B, T, H)
        if self.k:
            kth = a.topk(self.k, dim=-1).values[..., -1:]  # (B, T, 1): the k-th largest
            a = a * (a >= kth)  # gelu(0) = 0, so masked units contribute nothing
        return self.down(F.gelu(a))


class SPENBlock(nn.Module):
    """Traces -> linear predictor -> prediction error -> context mix -> FFN -> residual. The traces are the
    paper's fixed EMAs (mixer "ema"), learned constant decays or input-dependent ones; nothing else changes."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        D, S = cfg.d_model, len(ALPHAS)
        self.traces = TRACES[cfg.mixer](cfg)  # first in reading order; "ema" has no parameters, so its init is unchanged
        self.ln_in = nn.LayerNorm(D, bias=False)
        self.pred = nn.Linear(S * D, D, bias=False)
        self.mix = nn.Linear((S + 1) * D, D, bias=False)
        self.ln_mix = nn.LayerNorm(D, bias=False)
        self.ffn = FFN(cfg)

    def forward(self, x):
        B, T, D = x.shape
        u = self.ln_in(x)
        h = self.traces(u)  # (B, T, S, D): traces up to and including t
        h_past = F.pad(h, (0, 0, 0, 0, 1, 0))[:, :T]  # (B, T, S, D): traces up to t-1, zeros at t=0
        err = u - self.pred(h_past.flatten(2))  # (B, T, D): what the past did not predict
        c = self.ln_mix(self.mix(torch.cat([err, h.flatten(2)], -1)))  # (B, T, D)
        return x + self.ffn(c)


class AttentionBlock(nn.Module):
    """GPT-2's block: causal self-attention and an FFN, each pre-norm with its own residual."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        D = cfg.d_model
        self.n_head = cfg.n_head
        self.ln_attn = nn.LayerNorm(D, bias=False)
        self.qkv = nn.Linear(D, 3 * D, bias=False)
        self.proj = nn.Linear(D, D, bias=False)
        self.ln_ffn = nn.LayerNorm(D, bias=False)
        self.ffn = FFN(cfg)

    def forward(self, x):
        B, T, D = x.shape
        q, k, v = self.qkv(self.ln_attn(x)).view(B, T, 3, self.n_head, D // self.n_head).transpose(1, 3).unbind(2)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, n_head, T, D/n_head)
        x = x + self.proj(y.transpose(1, 2).reshape(B, T, D))
        return x + self.ffn(self.ln_ffn(x))


class SPEN(nn.Module):
    """Token embedding -> L blocks -> LayerNorm -> tied output head. With mixer "ema" there is no
    position embedding: the traces' different decays are the only sense of order."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.wpe = nn.Embedding(cfg.block_size, cfg.d_model) if cfg.mixer == "attention" else None
        if cfg.mixer not in MIXERS:
            raise ValueError(f"unknown mixer {cfg.mixer!r}; choose from {', '.join(MIXERS)}")
        Block = AttentionBlock if cfg.mixer == "attention" else SPENBlock
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.d_model, bias=False)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.head.weight = self.wte.weight  # tied embeddings (paper's parameter count assumes them)
        self.apply(self._init)
        for name, p in self.named_parameters():  # GPT-2: scale the projections into the residual stream
            if name.endswith(("ffn.down.weight", "proj.weight")):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init(m):
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())  # the tied matrix is counted once

    def forward(self, idx, targets=None):
        B, T = idx.shape
        x = self.wte(idx)  # (B, T, D)
        if self.wpe is not None:
            if T > self.cfg.block_size:
                raise ValueError(f"sequence of {T} tokens exceeds the attention model's block size {self.cfg.block_size}")
            x = x + self.wpe(torch.arange(T, device=idx.device))
        for block in self.blocks:
            x = block(x)
        logits = self.head(self.ln_f(x))  # (B, T, V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())
        return logits, loss

    @torch.no_grad()
    def generate(self, idx, n_new: int, temperature: float = 1.0, top_k: int = 50, vocab: int = 50257):
        for _ in range(n_new):
            logits, _ = self(idx[:, -self.cfg.block_size:])
            logits = logits[:, -1, :vocab] / temperature  # never sample the padding ids
            kth = logits.topk(top_k, dim=-1).values[:, -1:]
            probs = F.softmax(logits.masked_fill(logits < kth, -float("inf")), dim=-1)
            idx = torch.cat([idx, torch.multinomial(probs, 1)], 1)
        return idx


# ----------------------------------------------------------------------------- evaluation


@torch.no_grad()
def evaluate(model: SPEN, tokens: torch.Tensor, T: int, batch: int, device: str, autocast) -> float:
    """Mean next-token loss (nats) over the fixed validation windows."""
    model.eval()
    n = (len(tokens) - 1) // T
    x_all, y_all = tokens[:n * T].view(n, T), tokens[1:n * T + 1].view(n, T)
    total = 0.0
    for i in range(0, n, batch):
        with autocast:
            _, loss = model(x_all[i:i + batch].to(device), y_all[i:i + batch].to(device))
        total += loss.item() * len(x_all[i:i + batch])
    model.train()
    return total / n


def flops_per_token(model: SPEN) -> float:
    """Training FLOPs per token: 6 per weight (forward + backward) plus attention's 12 L D T."""
    cfg = model.cfg
    n = model.num_params() - (model.wpe.weight.numel() if model.wpe is not None else 0)
    attn = 12 * cfg.n_layer * cfg.d_model * cfg.block_size if cfg.mixer == "attention" else 0
    return 6 * n + attn


# ----------------------------------------------------------------------------- training loop


def pick_device(name: str) -> str:
    if name != "auto":
        return name
    if torch.cuda.is_available():
        return "cuda"
    return "mps" if torch.backends.mps.is_available() else "cpu"


def lr_at(step: int, args) -> float:
    """Linear warm-up, then cosine decay to min_lr_ratio * lr at max_steps."""
    if step < args.warmup_steps:
        return args.lr * (step + 1) / args.warmup_steps
    progress = min(1.0, (step - args.warmup_steps) / max(1, args.max_steps - args.warmup_steps))
    return args.lr * (args.min_lr_ratio + (1 - args.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def make_optimizer(model: nn.Module, args) -> torch.optim.AdamW:
    decay = [p for p in model.parameters() if p.dim() >= 2]  # matrices and embeddings
    no_decay = [p for p in model.parameters() if p.dim() < 2]  # norm gains
    return torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.95))


def save_checkpoint(path: Path, obj: dict):
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)  # atomic: a crash mid-write leaves the previous checkpoint intact


def load_checkpoint(path: Path, cfg: ModelConfig) -> dict:
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}; train first (without --resume/--sample) "
                                "or point --out-dir at a run folder")
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    if ckpt["model_config"] != asdict(cfg):
        diff = {k: (v, asdict(cfg)[k]) for k, v in ckpt["model_config"].items() if asdict(cfg).get(k) != v}
        raise ValueError(f"checkpoint {path} was trained with another model config (checkpoint, now): {diff}; "
                         "pass the same --preset/--mixer/--ffn/size flags or use another --out-dir")
    return ckpt


def run_info(device: str) -> dict:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    except OSError:
        commit = ""
    gpu = torch.cuda.get_device_name() if device == "cuda" else None
    return dict(torch=torch.__version__, python=platform.python_version(), device=device, gpu=gpu,
                cpu=platform.processor() or platform.machine(), threads=torch.get_num_threads(), commit=commit)


def compiled_or_eager(model: SPEN, batch: int, device: str, autocast) -> nn.Module:
    """torch.compile(model), tried once on a dummy batch (forward and backward, so both graphs are built);
    if the compiler fails on this torch/GPU, say so and train eagerly rather than not at all."""
    compiled = torch.compile(model)
    try:
        idx = torch.zeros(batch, model.cfg.block_size, dtype=torch.long, device=device)
        with autocast:
            _, loss = compiled(idx, idx)
        loss.backward()
    except Exception as err:  # noqa: BLE001 - any compiler failure; the message is printed
        print(f"torch.compile failed ({type(err).__name__}: {str(err).splitlines()[0][:200]}); "
              "training without it (pass --no-compile to skip the attempt)")
        compiled = model
    model.zero_grad(set_to_none=True)
    return compiled


def main(argv=None) -> dict:
    args = get_args(argv)
    device = pick_device(args.device)
    compile_model = args.compile if args.compile is not None else device == "cuda"
    use_bf16 = device == "cuda" and torch.cuda.is_bf16_supported()
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if use_bf16 else nullcontext()
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = out_dir / "ckpt.pt"

    torch.manual_seed(args.seed)
    cfg = ModelConfig(n_layer=args.n_layer, d_model=args.d_model, d_ffn=args.d_ffn, n_head=args.n_head,
                      block_size=args.block_size, mixer=args.mixer, ffn=args.ffn)
    model = SPEN(cfg).to(device)

    if args.sample:
        from data.common import gpt2_encoding
        model.load_state_dict(load_checkpoint(ckpt_path, cfg)["model"])
        enc = gpt2_encoding()
        idx = torch.tensor([enc.encode_ordinary(args.prompt)], device=device)
        text = enc.decode(model.eval().generate(idx, args.sample_tokens)[0].tolist())
        print(text)
        return {"sample": text}

    train_data = get_tokens(args.dataset, "train")
    val_sets = {d: val_windows(get_tokens(d, EVAL_SPLIT[d]), cfg.block_size, args.eval_tokens)
                for d in dict.fromkeys([args.dataset, *args.eval_datasets])}
    optimizer = make_optimizer(model, args)
    gen = torch.Generator().manual_seed(args.seed)
    step, tokens_seen, seconds = 0, 0, 0.0
    if args.resume:
        ckpt = load_checkpoint(ckpt_path, cfg)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        gen.set_state(ckpt["data_rng"])
        torch.set_rng_state(ckpt["torch_rng"])
        step, tokens_seen, seconds = ckpt["step"], ckpt["tokens_seen"], ckpt["seconds"]
    train_model = compiled_or_eager(model, args.micro_batch, device, autocast) if compile_model else model
    accum = args.batch_tokens // (args.micro_batch * cfg.block_size)
    n_params = model.num_params()
    peak_flops = 989e12 if device == "cuda" else None  # H100/H200 dense bf16 datasheet; MFU on GPU only
    info = dict(config=vars(args), model_config=asdict(cfg), params=n_params, **run_info(device))
    (out_dir / "config.json").write_text(json.dumps(info, indent=2))
    log = open(out_dir / "metrics.jsonl", "a")
    print(f"{cfg.mixer} / {cfg.ffn} FFN: {n_params / 1e6:.2f}M parameters, {device}, "
          f"{'bf16' if use_bf16 else 'fp32'}, compile={compile_model}, accum={accum}")

    def checkpoint():
        save_checkpoint(ckpt_path, dict(model=model.state_dict(), optimizer=optimizer.state_dict(),
                                        model_config=asdict(cfg), args=vars(args), step=step,
                                        tokens_seen=tokens_seen, seconds=seconds, data_rng=gen.get_state(),
                                        torch_rng=torch.get_rng_state()))

    def eval_all() -> dict:
        return {d: evaluate(model, v, cfg.block_size, args.micro_batch, device, autocast) for d, v in val_sets.items()}

    stop_at = min(args.max_steps, step + args.steps_this_run) if args.steps_this_run else args.max_steps
    bar = tqdm(total=args.max_steps, initial=step, desc=f"{cfg.mixer}", dynamic_ncols=True)
    while step < stop_at:
        t0 = time.perf_counter()
        lr = lr_at(step, args)
        for g in optimizer.param_groups:
            g["lr"] = lr
        loss_sum = 0.0
        for _ in range(accum):
            x, y = get_batch(train_data, args.micro_batch, cfg.block_size, gen, device)
            with autocast:
                _, loss = train_model(x, y)
            (loss / accum).backward()
            loss_sum += loss.item() / accum
        if not math.isfinite(loss_sum):
            bar.close()
            raise RuntimeError(f"non-finite training loss {loss_sum} at step {step}; stopped without saving, so "
                               f"{ckpt_path} still holds the last good checkpoint. Lower --lr or check the data.")
        if args.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        step, tokens_seen, seconds = step + 1, tokens_seen + args.batch_tokens, seconds + dt
        tok_s = args.batch_tokens / dt
        post = dict(loss=f"{loss_sum:.3f}", lr=f"{lr:.1e}", tok_s=f"{tok_s:,.0f}")
        record = dict(step=step, train_loss=loss_sum, lr=lr, tokens=tokens_seen, tok_per_s=tok_s)
        if peak_flops:
            record["mfu"] = flops_per_token(model) * tok_s / peak_flops
            post["mfu"] = f"{record['mfu']:.1%}"
        if step % args.eval_interval == 0 or step == args.max_steps:
            record.update({f"val_loss_{d}": v for d, v in eval_all().items()})
            post["val"] = f"{record[f'val_loss_{args.dataset}']:.3f}"
            checkpoint()
        bar.set_postfix(post)
        bar.update()
        log.write(json.dumps(record) + "\n")
        log.flush()
    bar.close()
    if step < args.max_steps:  # --steps-this-run: leave a checkpoint to resume from
        checkpoint()
    log.close()

    val = eval_all()
    result = dict(val_loss=val[args.dataset], val_ppl=math.exp(val[args.dataset]), params=n_params,
                  tokens_seen=tokens_seen, seconds=seconds, step=step, mixer=cfg.mixer, ffn=cfg.ffn,
                  seed=args.seed, device=device,
                  eval={d: dict(loss=v, ppl=math.exp(v)) for d, v in val.items()})
    (out_dir / "final.json").write_text(json.dumps(result, indent=2))
    print(f"validation loss {result['val_loss']:.4f}, perplexity {result['val_ppl']:.2f} on {args.dataset} "
          f"({n_params / 1e6:.2f}M params, {tokens_seen:,} tokens, {seconds:.0f} s training)")
    for d, v in val.items():
        if d != args.dataset:
            print(f"  {d}: loss {v:.4f}, perplexity {math.exp(v):.2f}")
    return result


if __name__ == "__main__":
    main()
