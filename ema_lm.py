"""ema_lm.py: a language model whose only temporal context is fixed-decay exponential moving averages (EMA).

Hypothesis (paper, arXiv 2604.08556, "EMA Is Not All You Need"): a 12-block SPEN model (the paper's name; read
below) whose only way of mixing positions is three exponential moving averages (EMAs) with constant decays reaches
C4 perplexity 260, about 8x GPT-2, because the traces forget *which* token came earlier and no later layer can undo
that. This script trains that model and, with `--mixer attention`, a same-budget GPT-2 control on identical data,
steps and validation windows, so "8x GPT-2" becomes a measured ratio instead of a quoted one.

SPEN is the paper's name for its block; we read it as a sparse predictive-error network: traces predict the block
input, the prediction error is mixed with the traces and passed through a sparse feed-forward network (FFN) (Figure
1 of the paper; everything not in the figure is our reconstruction, see README "Reconstruction notes"):

    u_t     = LayerNorm(x_t)                                    block input, pre-norm
    h_t^s   = (1 - a_s) h_{t-1}^s + a_s u_t,  a = 0.5, 0.1, 0.02  three fixed traces, h_{-1} = 0
    u^_t    = W_pred [h_{t-1}^1; h_{t-1}^2; h_{t-1}^3]           linear predictor, sees only the past
    e_t     = u_t - u^_t                                        prediction error
    c_t     = LayerNorm(W_mix [e_t; h_t^1; h_t^2; h_t^3])        context mix: (S+1)D -> D, the "bottleneck"
    x'_t    = x_t + W_down topk_6%(W_up c_t)                    sparse FFN, then the residual add

Other kinds of context (`--mixer`, defined in mixers.py, one factor at a time): ema-learned (S x D learned
constant decays) and selective (decays a function of the token) replace only the traces in the block above;
linattn (a matrix state per head read by a query, learned constant decays) and gla (gated linear attention,
decays a function of the token) replace softmax attention in GPT-2's block; attention is GPT-2's block.

Commands:
    python ema_lm.py                                   # small SPEN on Penn Treebank, CPU, about 11 minutes
    python ema_lm.py --mixer attention                 # the same budget with causal self-attention
    python ema_lm.py --mixer gla                       # or ema-learned, selective, linattn
    python ema_lm.py --eval-only --out-dir runs/ptb-ema-small-s0    # loss by token class, copy probe
    python results/lm/compare.py runs/ptb-ema-small-s* runs/ptb-attention-small-s*   # the table over seeds
    python ema_lm.py --device cuda                     # the same run on a GPU
    python ema_lm.py --device cuda --preset paper --dataset fineweb --eval-datasets c4,wikitext103
    torchrun --standalone --nproc_per_node=8 ema_lm.py --preset paper --dataset fineweb   # 8 GPUs, PyTorch DDP

Measured (2-core CPU, one thread per run; README "Results", results/lm/README.md): default small preset on PTB,
614k tokens, seed 0: SPEN (7.29M parameters) validation perplexity 134.6, the attention control (7.24M)
160.5; gla 242.9 +- 31.7 and linattn 256.4 +- 6.8 (seeds 0-2). The SPEN is ahead on every token class,
induction tokens included, and at 10x the tokens (context 256, seed 0) still ahead, 68.7 against 76.2, with
a control that has not learned to copy. At this size and budget the EMA model is *ahead*; the paper's 8x gap
is at 130M on C4.

Glossary: B batch, T time (tokens), D model width (d_model), S number of traces (3), H FFN hidden width,
V vocabulary, L blocks. a_s = alpha (weight of the new input), 1 - a_s = the decay. FFN feed-forward network.
"""
# ----------------------------------------------------------------------------- imports
import argparse
import json
import math
import os
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from data.common import gpt2_encoding, load_tokens
from mixers import LearnedTraces, LinearAttention, SelectiveTraces
from plumbing import (RunFolder, StopOnSignal, agree_across_ranks, check_fits, check_ranges, check_same_settings,
                      command_line, compiled_or_eager, init_distributed, load_checkpoint, lr_at, make_optimizer,
                      peak_bf16_flops, pick_device, restore_training_state, run_info, save_checkpoint,
                      training_state, write_json_atomic)

ROOT = Path(__file__).resolve().parent
ALPHAS = (0.5, 0.1, 0.02)  # paper, Figure 1: fast, medium, slow; constants, never learned
SPEN_MIXERS = ("ema", "ema-learned", "selective")  # the SPEN block with three kinds of trace
MIXERS = (*SPEN_MIXERS, "linattn", "gla", "attention")  # the last three: GPT-2's block with its attention

# ----------------------------------------------------------------------------- model config


@dataclass
class ModelConfig:
    vocab_size: int = 50304  # GPT-2's 50257 padded to a multiple of 64 (faster matmuls; nanoGPT)
    n_layer: int = 12  # paper: twelve blocks
    d_model: int = 768  # GPT-2 small's width, so the mixers differ only in the block
    d_ffn: int = 2304  # 3*D makes the 12-block SPEN 130.7M parameters, the paper's 130M
    ffn_active: float = 0.06  # paper: top-k FFN with 6% of hidden units active
    n_head: int = 12  # attention, linattn and gla only (GPT-2 small's 12 heads)
    block_size: int = 1024  # context length; only softmax attention's position table depends on it
    mixer: str = "ema"  # one of MIXERS
    ffn: str = "sparse"  # "sparse" (top-k) or "dense"; either block, one factor at a time


# ----------------------------------------------------------------------------- model: the EMA scan


def ema_scan_reference(x: torch.Tensor, alphas: tuple) -> torch.Tensor:
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
def ema_decay_matrices(alphas: tuple, C: int, N: int, device: torch.device) -> tuple:
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


def ema_scan(x: torch.Tensor, alphas: tuple, chunk_size: int = 64) -> torch.Tensor:
    """The same traces as ema_scan_reference (ema_lm.py), in three matrix products, not T sequential steps.

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


# ----------------------------------------------------------------------------- model: blocks


class FixedTraces(nn.Module):
    """ema: the paper's three traces with constant alphas (ALPHAS); no parameters (d_model: the common signature)."""

    def __init__(self, d_model: int):
        super().__init__()

    def forward(self, u: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, T, S, D)
        return ema_scan(u, ALPHAS)


TRACES = {"ema": FixedTraces, "ema-learned": LearnedTraces, "selective": SelectiveTraces}


class FFN(nn.Module):
    """D -> H -> D with GELU; "sparse" keeps only the top-k hidden pre-activations per token (paper:
    6% active). The mask is computed densely: it models the paper's sparsity, not its speed."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.up = nn.Linear(cfg.d_model, cfg.d_ffn, bias=False)
        self.down = nn.Linear(cfg.d_ffn, cfg.d_model, bias=False)
        self.k = max(1, round(cfg.ffn_active * cfg.d_ffn)) if cfg.ffn == "sparse" else 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
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
        self.traces = TRACES[cfg.mixer](D)  # first in reading order; "ema" has no parameters, so its init is unchanged
        self.ln_in = nn.LayerNorm(D, bias=False)
        self.pred = nn.Linear(S * D, D, bias=False)
        self.mix = nn.Linear((S + 1) * D, D, bias=False)
        self.ln_mix = nn.LayerNorm(D, bias=False)
        self.ffn = FFN(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        u = self.ln_in(x)
        h = self.traces(u)  # (B, T, S, D): traces up to and including t
        h_past = F.pad(h, (0, 0, 0, 0, 1, 0))[:, :T]  # (B, T, S, D): traces up to t-1, zeros at t=0
        err = u - self.pred(h_past.flatten(2))  # (B, T, D): what the past did not predict
        c = self.ln_mix(self.mix(torch.cat([err, h.flatten(2)], -1)))  # (B, T, D)
        return x + self.ffn(c)


class CausalSelfAttention(nn.Module):
    """GPT-2's softmax attention: every earlier key and value is kept, and read by a query."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_head = cfg.n_head
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=False)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model, bias=False)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        B, T, D = u.shape
        q, k, v = self.qkv(u).view(B, T, 3, self.n_head, D // self.n_head).transpose(1, 3).unbind(2)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, n_head, T, D/n_head)
        return self.proj(y.transpose(1, 2).reshape(B, T, D))


class AttentionBlock(nn.Module):
    """GPT-2's block: attention and an FFN, each pre-norm with its own residual. The attention is softmax
    (mixer "attention") or linear with a matrix state (linattn, gla; mixers.py)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        D = cfg.d_model
        self.ln_attn = nn.LayerNorm(D, bias=False)
        self.attn = (CausalSelfAttention(cfg) if cfg.mixer == "attention"
                     else LinearAttention(D, cfg.n_head, input_dependent=cfg.mixer == "gla"))
        self.ln_ffn = nn.LayerNorm(D, bias=False)
        self.ffn = FFN(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_attn(x))
        return x + self.ffn(self.ln_ffn(x))


class LanguageModel(nn.Module):
    """Token embedding -> L blocks -> LayerNorm -> tied output head. The block is the SPEN block for the
    trace mixers and GPT-2's block for the attention mixers. Only softmax attention gets a position
    embedding: the traces' and the linear attentions' decays are their own sense of order. `block`, a
    function of the config, replaces the mixer's own block (content_recall.py's trace readers)."""

    def __init__(self, cfg: ModelConfig, block=None):
        super().__init__()
        if cfg.mixer not in MIXERS:
            raise ValueError(f"unknown mixer {cfg.mixer!r}; choose from {', '.join(MIXERS)}")
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.wpe = nn.Embedding(cfg.block_size, cfg.d_model) if cfg.mixer == "attention" else None
        block = block or (SPENBlock if cfg.mixer in SPEN_MIXERS else AttentionBlock)
        self.blocks = nn.ModuleList(block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.d_model, bias=False)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.head.weight = self.wte.weight  # tied embeddings (paper's parameter count assumes them)
        self.apply(self._init)
        for name, p in self.named_parameters():  # GPT-2: scale the projections into the residual stream
            if name.endswith(("ffn.down.weight", "proj.weight")):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())  # the tied matrix is counted once

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None) -> tuple:
        B, T = idx.shape
        x = self.wte(idx)  # (B, T, D)
        if self.wpe is not None:
            if T > self.cfg.block_size:
                raise ValueError(f"sequence of {T} tokens exceeds the attention model's block size "
                                 f"{self.cfg.block_size}")
            x = x + self.wpe(torch.arange(T, device=idx.device))
        for block in self.blocks:
            x = block(x)
        logits = self.head(self.ln_f(x))  # (B, T, V)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())
        return logits, loss

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, n_new: int, temperature: float = 1.0, top_k: int = 50,
                 vocab: int = 50257) -> torch.Tensor:
        for _ in range(n_new):
            logits, _ = self(idx[:, -self.cfg.block_size:])
            logits = logits[:, -1, :vocab] / temperature  # never sample the padding ids
            kth = logits.topk(top_k, dim=-1).values[:, -1:]
            probs = F.softmax(logits.masked_fill(logits < kth, -float("inf")), dim=-1)
            idx = torch.cat([idx, torch.multinomial(probs, 1)], 1)
        return idx


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


# ----------------------------------------------------------------------------- evaluation


@torch.no_grad()
def token_losses(model: LanguageModel, tokens: torch.Tensor, T: int, batch: int, device: str, autocast) -> torch.Tensor:
    """Next-token loss (nats) at every position of the fixed validation windows: (n_windows, T)."""
    model.eval()
    n = (len(tokens) - 1) // T
    x_all, y_all = tokens[:n * T].view(n, T), tokens[1:n * T + 1].view(n, T)
    out = []
    for i in range(0, n, batch):
        with autocast:
            logits, _ = model(x_all[i:i + batch].to(device))  # (b, T, V)
        y = y_all[i:i + batch].to(device)
        out.append(F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), reduction="none").view(y.shape).cpu())
    model.train()
    return torch.cat(out)


def evaluate(model: LanguageModel, tokens: torch.Tensor, T: int, batch: int, device: str, autocast) -> float:
    """Mean next-token loss (nats) over the fixed validation windows."""
    return token_losses(model, tokens, T, batch, device, autocast).mean().item()


# Where the paper's claim should show on text: a token that can be predicted by recalling one earlier token.
TOKEN_CLASSES = ("induction", "repeated", "novel")


def token_classes(tokens: torch.Tensor, T: int) -> np.ndarray:
    """The class of every validation target, (n_windows, T), as an index into TOKEN_CLASSES. Window i holds
    tokens[iT .. iT + T]; the target at t is token t+1 and its previous token is token t.
        induction  the pair (previous token, target) already occurred earlier in the window: a copy of what
                   followed the same token before (what an induction head does, Olsson et al. 2022)
        repeated   the target occurred earlier in the window, but not after this previous token
        novel      the first occurrence of the target in the window (the window's first token counts)"""
    n = (len(tokens) - 1) // T
    classes = np.empty((n, T), dtype=np.int64)
    for i in range(n):
        window = tokens[i * T:(i + 1) * T + 1].tolist()
        seen, pairs = {window[0]}, set()
        for t in range(T):
            pair = (window[t], window[t + 1])
            classes[i, t] = 0 if pair in pairs else 1 if pair[1] in seen else 2
            seen.add(pair[1])
            pairs.add(pair)
    return classes


def loss_by_class(losses: torch.Tensor, classes: np.ndarray) -> dict:
    """Mean loss and token count per class, plus the mean over all tokens."""
    losses = losses.double().numpy().ravel()
    out = {"all": dict(loss=float(losses.mean()), count=int(losses.size))}
    for c, name in enumerate(TOKEN_CLASSES):
        mask = classes.ravel() == c
        out[name] = dict(loss=float(losses[mask].mean()) if mask.any() else float("nan"), count=int(mask.sum()))
    return out


def probe_sequences(train_data: np.ndarray, block_size: int, n: int = 64, seed: int = 1234) -> torch.Tensor:
    """The repeated-segment probe (Olsson et al. 2022): n sequences of h random token ids, each followed by an
    exact copy, h = min(64, block_size // 2). Ids are drawn uniformly from the token types of the first 16M
    training tokens, so every id has a trained embedding; the same ids for every model with that block size."""
    h = min(64, block_size // 2)
    types = np.flatnonzero(np.bincount(np.asarray(train_data[:1 << 24]), minlength=2))
    gen = torch.Generator().manual_seed(seed)
    half = torch.from_numpy(types)[torch.randint(len(types), (n, h), generator=gen)]  # (n, h)
    return torch.cat([half, half], 1)  # (n, 2h)


@torch.no_grad()
def copy_probe(model: LanguageModel, seqs: torch.Tensor, device: str, autocast) -> dict:
    """Mean loss on the first copy and on the second, over the same targets (the copy's tokens 2..h). A
    model that copies predicts the second copy far better; one that cannot, equally badly (the ids are random)."""
    model.eval()
    h = seqs.shape[1] // 2
    with autocast:
        logits, _ = model(seqs[:, :-1].to(device))  # (n, 2h-1, V)
    losses = F.cross_entropy(logits.float().transpose(1, 2), seqs[:, 1:].to(device), reduction="none").cpu()
    model.train()
    first, second = losses[:, :h - 1].mean().item(), losses[:, h:].mean().item()  # targets 2..h of each copy
    return dict(probe_first=first, probe_second=second, probe_gap=first - second)


def flops_per_token(model: LanguageModel) -> float:
    """Training FLOPs per token: 6 per weight (forward + backward) plus softmax attention's 12 L D T."""
    cfg = model.cfg
    n = model.num_params() - (model.wpe.weight.numel() if model.wpe is not None else 0)
    attn = 12 * cfg.n_layer * cfg.d_model * cfg.block_size if cfg.mixer == "attention" else 0
    return 6 * n + attn


def print_scores(result: dict, dataset: str) -> None:
    if result.get("partial"):  # --steps-this-run: a checkpoint to resume from, not a result
        print(f"PARTIAL RUN, step {result['step']} of {result['max_steps']} (finish it with --resume):")
    print(f"validation loss {result['val_loss']:.4f}, perplexity {result['val_ppl']:.2f} on {dataset} "
          f"({result['params'] / 1e6:.2f}M params, {result['tokens_seen']:,} tokens"
          + (f", {result['seconds']:.0f} s training)" if "seconds" in result else ")"))
    print("  by token class: " + ", ".join(f"{c} {v['loss']:.3f} ({v['count']:,})"
                                         for c, v in result["classes"].items() if c != "all")
          + f"; copy probe: 1st copy {result['probe_first']:.2f}, 2nd copy {result['probe_second']:.2f}")
    for d, v in result["eval"].items():
        if d != dataset:
            print(f"  {d}: loss {v['loss']:.4f}, perplexity {v['ppl']:.2f}")


# ----------------------------------------------------------------------------- training loop


def train_step(train_model: nn.Module, data: np.ndarray, args, gen: torch.Generator, device: str, autocast,
               rank: int = 0, world: int = 1) -> float:
    """Forward and backward passes of one optimiser step (accum micro-batches); returns this process's mean loss.
    Every process draws every window from `gen` in the same order, so a checkpoint resumes on any number of
    processes, and computes micro-batches rank, rank + world, ...; DDP averages the gradients on the last one
    (no_sync skips the all-reduce before it), which is the one-process gradient up to float rounding."""
    accum = args.batch_tokens // (args.micro_batch * args.block_size)
    own, loss_sum = accum // world, 0.0
    for i in range(accum):
        x, y = get_batch(data, args.micro_batch, args.block_size, gen, device)
        if i % world != rank:
            continue
        with train_model.no_sync() if world > 1 and i < accum - world else nullcontext():
            with autocast:
                _, loss = train_model(x, y)
            (loss / own).backward()
        loss_sum += loss.item() / own
    return loss_sum


# ----------------------------------------------------------------------------- CLI

# Presets give every model field and the training budget; explicit flags override them.
PRESETS = {
    # CPU-sized: 300 steps of 2048 tokens (about half an epoch of PTB); ~1,800 tokens/s on 2 cores (bench.py), ~6 min.
    # Most of its time is the 50k-way output layer, which no width choice below can avoid.
    "small": dict(n_layer=4, d_model=128, n_head=4, block_size=128, max_steps=300, batch_tokens=2048, micro_batch=16,
                  lr=3e-3, warmup_steps=30, eval_tokens=65536, eval_interval=100, checkpoint_interval=100),
    # The paper's recipe: 130M SPEN, ~8B tokens (paper), 0.5M tokens per step, context 1024; a checkpoint every ~5 min.
    "paper": dict(n_layer=12, d_model=768, n_head=12, block_size=1024, max_steps=16000, batch_tokens=524288,
                  micro_batch=16, lr=6e-4, warmup_steps=700, eval_tokens=4194304, eval_interval=1000,
                  checkpoint_interval=250),
}
DATASETS = ("ptb", "c4", "fineweb", "wikitext103")
EVAL_SPLIT = {"ptb": "val", "c4": "val", "fineweb": "val", "wikitext103": "test"}


def get_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add = p.add_argument
    add("--preset", choices=sorted(PRESETS), default="small", help="model size and training budget")
    add("--mixer", choices=MIXERS, default="ema", help="how positions are mixed: traces or attention (docstring)")
    add("--ffn", choices=["sparse", "dense"], default=None, help="default: sparse for the SPEN mixers, else dense")
    add("--n-layer", type=int, default=None, help="blocks (overrides the preset)")
    add("--d-model", type=int, default=None, help="model width D (overrides the preset)")
    add("--d-ffn", type=int, default=None, help="FFN hidden width H (default: 3D for the SPEN mixers, 4D otherwise)")
    add("--n-head", type=int, default=None, help="heads of attention, linattn and gla (overrides the preset)")
    add("--block-size", type=int, default=None, help="training context length T (overrides the preset)")
    add("--dataset", choices=DATASETS, default="ptb", help="training corpus (data/<name>/train.bin)")
    add("--eval-datasets", default="", help="comma-separated extra datasets to score, e.g. c4,wikitext103")
    add("--max-steps", type=int, default=None, help="optimiser steps (overrides the preset)")
    add("--steps-this-run", type=int, default=0, help="stop after this many steps (0 = run to the end)")
    add("--batch-tokens", type=int, default=None, help="tokens per optimiser step, however many processes share it")
    add("--micro-batch", type=int, default=None, help="sequences per forward pass")
    add("--lr", type=float, default=None, help="peak learning rate (overrides the preset)")
    add("--min-lr-ratio", type=float, default=0.1, help="final learning rate as a fraction of --lr")
    add("--warmup-steps", type=int, default=None, help="linear warm-up steps (overrides the preset)")
    add("--weight-decay", type=float, default=0.1, help="AdamW weight decay on matrices")
    add("--grad-clip", type=float, default=1.0, help="clip the gradient norm to this (0 = off)")
    add("--eval-interval", type=int, default=None, help="evaluate every this many steps")
    add("--checkpoint-interval", type=int, default=None, help="write ckpt.pt every this many steps (and on Ctrl-C)")
    add("--eval-tokens", type=int, default=None, help="tokens in the fixed validation set (from the start of val.bin)")
    add("--seed", type=int, default=0, help="seed for initialisation and data sampling")
    add("--device", choices=["auto", "cuda", "mps", "cpu"], default="auto", help="auto: cuda, then mps, then cpu")
    add("--compile", action=argparse.BooleanOptionalAction, default=None, help="torch.compile (default: on cuda only)")
    add("--out-dir", default=None, help="run folder (default: runs/<dataset>-<mixer>-<preset>-s<seed>)")
    fresh_or_not = p.add_mutually_exclusive_group()
    fresh_or_not.add_argument("--resume", action="store_true", help="continue from <out-dir>/ckpt.pt exactly")
    fresh_or_not.add_argument("--overwrite", action="store_true", help="start afresh in an --out-dir that holds a run")
    add("--allow-changed", action="store_true", help="let --resume change settings (they are listed)")
    add("--sample", action="store_true", help="generate text from <out-dir>/ckpt.pt instead of training")
    add("--prompt", default="the company said", help="prompt for --sample")
    add("--sample-tokens", type=int, default=50, help="tokens to generate with --sample")
    add("--eval-only", action="store_true", help="score <out-dir>/ckpt.pt by token class into <out-dir>/eval.json")
    args = p.parse_args(argv)
    vars(args).update({k: v for k, v in PRESETS[args.preset].items() if getattr(args, k) is None})  # unset flags
    args.ffn = args.ffn or ("sparse" if args.mixer in SPEN_MIXERS else "dense")
    if args.d_ffn is None:
        args.d_ffn = (3 if args.mixer in SPEN_MIXERS else 4) * args.d_model
    check_ranges(p, args, positive=("n_layer", "d_model", "d_ffn", "n_head", "block_size", "max_steps", "batch_tokens",
                                    "micro_batch", "lr", "eval_interval", "checkpoint_interval", "sample_tokens"),
                 non_negative=("steps_this_run", "warmup_steps", "weight_decay", "grad_clip"),
                 fraction=("min_lr_ratio",))
    args.eval_datasets = [d for d in args.eval_datasets.split(",") if d]
    if set(args.eval_datasets) - set(DATASETS):
        p.error(f"--eval-datasets: unknown {sorted(set(args.eval_datasets) - set(DATASETS))}; choose from {DATASETS}")
    width = {"attention": args.n_head, "linattn": 2 * args.n_head, "gla": 2 * args.n_head}.get(args.mixer, 1)
    if args.d_model % width:  # every head gets an equal share of the width (linear attention: keys get half of it)
        p.error(f"--n-head {args.n_head}: --mixer {args.mixer} needs --d-model {args.d_model} divisible by {width}")
    if args.eval_tokens < args.block_size:
        p.error(f"--eval-tokens {args.eval_tokens}: less than one validation window of --block-size {args.block_size}")
    if args.sample and not args.prompt.strip():
        p.error("--prompt '': --sample continues a text; give one, e.g. --prompt 'the company said'")
    unit = args.micro_batch * args.block_size * int(os.environ.get("WORLD_SIZE", "1"))  # x torchrun's processes
    if args.batch_tokens % unit:  # every process computes the same number of micro-batches
        p.error(f"--batch-tokens {args.batch_tokens}: use a multiple of micro-batch x block-size x processes, {unit}")
    args.out_dir = args.out_dir or str(ROOT / "runs" / f"{args.dataset}-{args.mixer}-{args.preset}-s{args.seed}")
    return args


OUT_OF_MEMORY = ("lower --micro-batch (--batch-tokens, the tokens per step, stays: more micro-batches are "
                 "accumulated), or --block-size or the model's size")


def earlier_resumes(path: Path) -> list:
    """The resumes that config.json records. It is only a record (the checkpoint holds what --resume needs), so a
    missing or damaged one is replaced, with a note in it and on the screen, rather than stopping the run."""
    try:
        return json.loads(path.read_text()).get("resumes", [])
    except (OSError, ValueError, AttributeError) as err:  # AttributeError: JSON, but not an object
        print(f"{path} is missing or damaged ({type(err).__name__}); the record of earlier resumes is lost and a new "
              "config.json is written")
        return [dict(step=None, changed={}, note="config.json was missing or damaged at this resume")]


# ----------------------------------------------------------------------------- main


def main(argv=None) -> dict:
    args = get_args(argv)
    device = pick_device(args.device)
    check_fits(8 * args.micro_batch * args.block_size * ModelConfig.vocab_size, device, f"--micro-batch "
               f"{args.micro_batch} x --block-size {args.block_size}: the logits and their gradient alone",
               OUT_OF_MEMORY)
    rank, world = init_distributed(device)  # (0, 1) unless torchrun started several processes
    compile_model = args.compile if args.compile is not None else device == "cuda"
    use_bf16 = device == "cuda" and torch.cuda.is_bf16_supported()
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if use_bf16 else nullcontext()
    out_dir = Path(args.out_dir)
    ckpt_path = out_dir / "ckpt.pt"
    torch.manual_seed(args.seed)
    cfg = ModelConfig(n_layer=args.n_layer, d_model=args.d_model, d_ffn=args.d_ffn, n_head=args.n_head,
                      block_size=args.block_size, mixer=args.mixer, ffn=args.ffn)
    model = LanguageModel(cfg).to(device)
    if args.sample or args.eval_only:  # a checkpoint of another model is refused, with the fields that differ
        ckpt = load_checkpoint(ckpt_path, cfg)
        model.load_state_dict(ckpt["model"])
        for k in ("dataset", "eval_datasets", "eval_tokens"):  # score the data the run was trained and scored on
            setattr(args, k, ckpt["args"][k])

    if args.sample:
        enc = gpt2_encoding()
        idx = torch.tensor([enc.encode_ordinary(args.prompt)], device=device)
        text = enc.decode(model.eval().generate(idx, args.sample_tokens)[0].tolist())
        print(text)
        return {"sample": text}

    train_data = get_tokens(args.dataset, "train")
    val_sets = {d: val_windows(get_tokens(d, EVAL_SPLIT[d]), cfg.block_size, args.eval_tokens)
                for d in dict.fromkeys([args.dataset, *args.eval_datasets])}
    probe = probe_sequences(train_data, cfg.block_size)

    def final_scores() -> dict:
        """Loss by token class on the training dataset's windows, the copy probe, the other datasets' loss."""
        losses = token_losses(model, val_sets[args.dataset], cfg.block_size, args.micro_batch, device, autocast)
        classes = loss_by_class(losses, token_classes(val_sets[args.dataset], cfg.block_size))
        other = {d: evaluate(model, v, cfg.block_size, args.micro_batch, device, autocast)
                 for d, v in val_sets.items() if d != args.dataset}
        return dict(val_loss=classes["all"]["loss"], val_ppl=math.exp(classes["all"]["loss"]), classes=classes,
                    **copy_probe(model, probe, device, autocast), mixer=cfg.mixer, ffn=cfg.ffn, seed=args.seed,
                    eval={d: dict(loss=v, ppl=math.exp(v)) for d, v in
                          {args.dataset: classes["all"]["loss"], **other}.items()})

    if args.eval_only:
        with RunFolder(out_dir, resume=True):  # not into a folder that a training run is writing
            result = dict(final_scores(), step=ckpt["step"], tokens_seen=ckpt["tokens_seen"], params=model.num_params(),
                          max_steps=ckpt["args"]["max_steps"], partial=ckpt["step"] < ckpt["args"]["max_steps"])
            write_json_atomic(out_dir / "eval.json", result)  # partial: an unfinished run's scores, marked as such
        print_scores(result, args.dataset)
        return result
    optimizer = make_optimizer(model, args.lr, args.weight_decay)
    gen = torch.Generator().manual_seed(args.seed)
    step, tokens_seen, seconds = 0, 0, 0.0
    changed = {}
    if args.resume:
        ckpt = load_checkpoint(ckpt_path, cfg)
        changed = check_same_settings(ckpt["args"], vars(args), ignore=("prompt", "sample_tokens"),
                                      allow=args.allow_changed)
        restore_training_state(ckpt, model, optimizer, gen)
        step, tokens_seen, seconds = ckpt["step"], ckpt["tokens_seen"], ckpt["seconds"]
    train_model = compiled_or_eager(model, args.micro_batch, device, autocast) if compile_model else model
    if world > 1:  # DDP averages the gradients over the processes; `model` stays the module we save and evaluate
        train_model = DDP(train_model, device_ids=[torch.cuda.current_device()] if device == "cuda" else None)
    n_params = model.num_params()
    peak_flops = (peak_bf16_flops(device) or 0) * world  # the card's peak, for MFU (model FLOPs utilisation)
    model_flops = flops_per_token(model)
    stop_at = min(args.max_steps, step + args.steps_this_run) if args.steps_this_run else args.max_steps
    fixed_batch = val_sets[args.dataset][:args.micro_batch * cfg.block_size + 1]  # the checkpoints' health check

    def probe_loss() -> float:
        return evaluate(model, fixed_batch, cfg.block_size, args.micro_batch, device, autocast)
    # Process 0 alone holds the folder, evaluates, prints and writes; the others only train.
    with (RunFolder(out_dir, args.resume, args.overwrite) if rank == 0 else nullcontext() as run,
          StopOnSignal() as stop, tqdm(total=args.max_steps, initial=step, desc=cfg.mixer, disable=rank > 0) as bar):
        if rank == 0:
            run.cut_metrics(step)  # after a crash, the steps past the checkpoint are trained and logged again
            earlier = earlier_resumes(out_dir / "config.json") if args.resume else []
            write_json_atomic(out_dir / "config.json", dict(  # every resume and what it changed is kept
                config=vars(args), model_config=asdict(cfg), params=n_params, processes=world, **run_info(device),
                resumes=earlier + [dict(step=step, changed=changed)] if args.resume else []))
            print(f"{cfg.mixer} / {cfg.ffn} FFN: {n_params / 1e6:.2f}M parameters, {device}, "
                  f"{'bf16' if use_bf16 else 'fp32'}, compile={compile_model}, processes={world}, "
                  f"accum={args.batch_tokens // (args.micro_batch * cfg.block_size)}")
        while step < stop_at:
            t0 = time.perf_counter()
            lr = lr_at(step, args.lr, args.warmup_steps, args.max_steps, args.min_lr_ratio)
            for g in optimizer.param_groups:
                g["lr"] = lr
            loss_sum = train_step(train_model, train_data, args, gen, device, autocast, rank, world)
            # The signal read once (a later one counts a step later); every process takes the same decisions.
            loss_sum, signum = agree_across_ranks(loss_sum, stop.signum, device, world)
            if not math.isfinite(loss_sum):
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
                record["mfu"] = model_flops * tok_s / peak_flops
                post["mfu"] = f"{record['mfu']:.1%}"
            if rank == 0:
                if step % args.eval_interval == 0 or step == args.max_steps:
                    record.update({f"val_loss_{d}": evaluate(model, v, cfg.block_size, args.micro_batch, device,
                                                             autocast) for d, v in val_sets.items()},
                                  **copy_probe(model, probe, device, autocast))
                    post["val"] = f"{record[f'val_loss_{args.dataset}']:.3f}"
                if step % args.checkpoint_interval == 0 or step == stop_at or signum:
                    save_checkpoint(ckpt_path, training_state(model, optimizer, gen, step=step, seconds=seconds,
                                                              tokens_seen=tokens_seen, args=vars(args),
                                                              model_config=asdict(cfg)), probe=probe_loss)
                bar.set_postfix(post)
                bar.update()
                run.log(record)
            if signum:
                bar.close()
                stop.exit(f"stopped after step {step} of {args.max_steps}; {ckpt_path} holds it; add --resume", signum)
        bar.close()  # before the final scores' output
        if rank > 0:
            return dict(step=step, rank=rank)
        stop.at_once(lambda: f"stopped during the final scoring; {ckpt_path} holds step {step}: add --resume to "
                             "score it into final.json")
        result = dict(final_scores(), params=n_params, tokens_seen=tokens_seen, seconds=seconds, step=step,
                      max_steps=args.max_steps, partial=step < args.max_steps, device=device, processes=world)
        write_json_atomic(out_dir / "final.json", result)
    print_scores(result, args.dataset)
    return result


if __name__ == "__main__":
    command_line(main, out_of_memory=OUT_OF_MEMORY)
