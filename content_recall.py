"""content_recall.py: the content boundary, measured directly. Which kinds of context can recall a token?

Hypothesis (paper, arXiv 2604.08556): fixed EMA traces compress the past independently of the data, so they
lose *which* token came earlier, and only learned, input-dependent selection can recover it. The paper shows
this with C4 perplexity at 130M parameters; here the same blocks face the task that isolates the claim,
multi-query associative recall (MQAR; Arora et al. 2023, "Zoology"): a sequence lists key-value pairs, then
asks for earlier keys again, and the model must emit the value that was paired with each. Zoology found that
attention solves MQAR at small width for every length, while fixed-filter models need width that grows with
the number of pairs. We train the four kinds of context of ema_lm.py on it:

    ema           the paper's SPEN block: three fixed traces, alpha = 0.5, 0.1, 0.02
    ema-learned   the same block, S x D learned constant alphas (input-independent: S4D / RetNet family)
    selective     the same block, alpha_t = f(current token) per trace and channel (gated linear recurrence)
    attention     GPT-2's block with causal softmax attention and learned positions (the control)

What changes relative to ema_lm.py: the data (MQAR instead of text), the loss (only at positions that must
recall a value), two blocks, a dense FFN for every mixer (so that only the context differs; --ffn sparse
gives the paper's top-k FFN), and a sweep over width x length x seed after a per-mixer learning-rate sweep.
The model code (scans, trace modules, blocks, FFN, SPEN) is copied verbatim from ema_lm.py; a test compares
the copies.

Task (Zoology's multiquery_ar, reconstructed): vocabulary V, keys from 1..V/2-1, values from V/2..V-1, both
drawn without replacement per sequence. Positions 0..2K-1 hold k1 v1 ... kK vK; each key is then asked once,
at an even offset of the remaining region drawn from Zoology's power law (power_a 0.01: most queries come
soon after the pairs); every other position is a uniformly random token (--no-noise: token 0). The target at
a query position is its key's value; every other target is ignored (-100), so loss and accuracy count only
recall. Accuracy is the fraction of queries answered exactly (argmax over the whole vocabulary).

Protocol: fresh seeded training sequences every step (the same ones for every mixer and width at a given
seed and length); equal steps, batch and schedule for every run (AdamW, warm-up 10%, cosine to 10%, clip 1);
the learning rate is swept per mixer at one width and length on a fixed validation set (seed 20000), and the
chosen rate is used everywhere; accuracy is reported on a fixed test set (seed 10000), mean +- sample std
over seeds. Reconstruction choices (none is in the paper; Zoology's are noted): two blocks (Zoology); pairs
K = T/16 (Zoology uses 4-64 for T 64-512); dense FFN of 2D for every mixer; attention heads of width 64
(one head below that) with learned absolute positions, as in ema_lm.py; the CPU preset shrinks Zoology's
vocabulary 8192 -> 64, widths 64-512 -> 16-64 and lengths 64-512 -> 32-128 to fit a 2-core CPU.

Commands:
    python content_recall.py                               # default CPU sweep: 120 runs, ~25-30 min on 2 idle cores (estimate)
    python content_recall.py --preset zoology --device cuda --workers 1   # Zoology's scale (hours on one GPU)
    python content_recall.py --mixers attention,ema --widths 32 --lengths 64 --kv-pairs 4 --seeds 0   # one slice

Measured (default CPU sweep; seeds 0, 1, 2; 2-core CPU, torch 2.13): no mixer solves MQAR at this budget.
Attention plateaus at 1/K (0.51 at T=32, 0.27 at T=64, 0.14 at T=128, D=64); selective reaches 0.49 / 0.24 /
0.11, fixed and learned-constant EMA 0.40 / 0.18 / 0.09. The budget must grow before the figure can place the
boundary. README.md "Where the boundary lies" has the table, the figure and the wall time.

Glossary: B batch, T sequence length, D width (d_model), S traces per block (3), K key-value pairs per
sequence, V vocabulary, L blocks. a_t = alpha (weight of the new input), 1 - a_t the decay.
"""
# ----------------------------------------------------------------------------- imports
import argparse
import json
import math
import multiprocessing
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent
ALPHAS = (0.5, 0.1, 0.02)  # paper, Figure 1: fast, medium, slow; constants, never learned
MIXERS = ("ema", "ema-learned", "selective", "attention")  # the four kinds of context (README, "Where the boundary lies")

# ----------------------------------------------------------------------------- config / CLI


@dataclass
class ModelConfig:
    vocab_size: int = 512  # MQAR vocabulary V (keys and values are its two halves); set per run
    n_layer: int = 2  # Zoology's MQAR models have two blocks: one to bind a key to its value, one to look up
    d_model: int = 64  # the swept width D
    d_ffn: int = 128  # 2D: the FFN is not where recall happens; keeps the CPU sweep within budget
    ffn_active: float = 0.06  # paper's top-k fraction, used only with --ffn sparse
    n_head: int = 1  # attention only: max(1, D / head_dim) heads (--head-dim)
    block_size: int = 128  # the sequence length T (attention's position table)
    mixer: str = "ema"  # one of MIXERS
    ffn: str = "dense"  # dense for every mixer, so only the context differs


# Presets fix the whole sweep; explicit flags override them. Pairs grow with length as in Zoology (T/16).
PRESETS = {
    # Sized for a 2-core CPU: 4 mixers x 3 widths x 3 lengths x 3 seeds plus 4 x 3 learning-rate runs, each
    # 1500 steps of 16 sequences, two runs at a time (one thread each). Small widths, lengths and vocabulary
    # because attention needs ~1000+ steps to form the two-step lookup at all (a plateau at 1/K first).
    "cpu": dict(widths="16,32,64", lengths="32,64,128", kv_pairs="2,4,8", vocab=64, steps=1500, batch=16,
                lrs="3e-4,1e-3,3e-3", lr_width=32, lr_length=64, n_test=1000, n_val=500, seeds="0,1,2", noise=True),
    # Zoology Figure 2 scale: vocabulary 8192, widths 64-512, lengths 64-512 with 4-64 pairs, ~100k training
    # sequences seen several times (here: fresh sequences, 20k steps of 64), 3000 test sequences.
    "zoology": dict(widths="64,128,256,512", lengths="64,128,256,512", kv_pairs="4,8,16,64", vocab=8192,
                    steps=20000, batch=64, lrs="1e-4,3e-4,1e-3,3e-3", lr_width=128, lr_length=256, n_test=3000,
                    n_val=1000, seeds="0,1,2", noise=True),
}


def get_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), default="cpu", help="sweep size and training budget")
    p.add_argument("--mixers", default=",".join(MIXERS), help="comma-separated mixers to compare")
    p.add_argument("--widths", default=None, help="comma-separated model widths D")
    p.add_argument("--lengths", default=None, help="comma-separated sequence lengths T")
    p.add_argument("--kv_pairs", "--kv-pairs", default=None, help="comma-separated key-value pairs K, one per length")
    p.add_argument("--vocab", type=int, default=None, help="vocabulary V (keys: 1..V/2-1, values: V/2..V-1)")
    p.add_argument("--steps", type=int, default=None, help="optimiser steps per run (equal for every mixer)")
    p.add_argument("--batch", type=int, default=None, help="sequences per step (fresh, seeded sequences every step)")
    p.add_argument("--lrs", default=None, help="learning-rate grid swept per mixer on the validation set")
    p.add_argument("--lr_width", "--lr-width", type=int, default=None, help="width at which the learning rate is swept")
    p.add_argument("--lr_length", "--lr-length", type=int, default=None, help="length at which the learning rate is swept")
    p.add_argument("--n_test", "--n-test", type=int, default=None, help="sequences in the fixed test set (per length)")
    p.add_argument("--n_val", "--n-val", type=int, default=None, help="sequences in the fixed validation set (lr sweep)")
    p.add_argument("--seeds", default=None, help="comma-separated seeds (initialisation and training data)")
    p.add_argument("--noise", action=argparse.BooleanOptionalAction, default=None, help="fill non-pair, non-query positions with random tokens (Zoology) instead of token 0")
    p.add_argument("--n_layer", "--n-layer", type=int, default=2, help="blocks L")
    p.add_argument("--ffn", choices=["dense", "sparse"], default="dense", help="FFN type, the same for every mixer")
    p.add_argument("--ffn_mult", "--ffn-mult", type=int, default=2, help="FFN hidden width as a multiple of D")
    p.add_argument("--head_dim", "--head-dim", type=int, default=64, help="attention head width (heads = max(1, D / head_dim))")
    p.add_argument("--warmup_steps", "--warmup-steps", type=int, default=None, help="linear warm-up steps (default: 10%% of --steps)")
    p.add_argument("--min_lr_ratio", "--min-lr-ratio", type=float, default=0.1, help="final learning rate as a fraction of the peak")
    p.add_argument("--weight_decay", "--weight-decay", type=float, default=0.1, help="AdamW weight decay on matrices")
    p.add_argument("--grad_clip", "--grad-clip", type=float, default=1.0, help="clip the gradient norm to this (0 = off)")
    p.add_argument("--workers", type=int, default=None, help="parallel runs, one CPU thread each (default: 2 on CPU, 1 on GPU)")
    p.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu), cuda, mps or cpu")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None, help="torch.compile each model (default: on for cuda only)")
    p.add_argument("--out_dir", "--out-dir", default=str(ROOT / "runs" / "content_recall"), help="folder for results.json, runs.jsonl and the figure")
    p.add_argument("--resume", action="store_true", help="reuse the finished runs in <out-dir>/runs.jsonl that have the same budget")
    p.add_argument("--figure", action=argparse.BooleanOptionalAction, default=True, help="save the figure (needs matplotlib; skipped without it)")
    args = p.parse_args(argv)
    for k, v in PRESETS[args.preset].items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    ints = lambda s: [int(v) for v in str(s).split(",") if v]  # noqa: E731
    args.mixers = [m for m in args.mixers.split(",") if m]
    args.widths, args.lengths, args.kv_pairs, args.seeds = map(ints, (args.widths, args.lengths, args.kv_pairs, args.seeds))
    args.lrs = [float(v) for v in str(args.lrs).split(",") if v]
    for m in args.mixers:
        if m not in MIXERS:
            p.error(f"--mixers: unknown mixer {m!r}; choose from {', '.join(MIXERS)}")
    if len(args.kv_pairs) != len(args.lengths):
        p.error(f"--kv-pairs {args.kv_pairs} needs one entry per length in --lengths {args.lengths}")
    for T, K in zip(args.lengths, args.kv_pairs):
        if T % 2 or 4 * K > T or K >= args.vocab // 2:
            p.error(f"length {T} with {K} pairs: T must be even, 4K <= T (pairs, then as many query slots) "
                    f"and K < V/2 = {args.vocab // 2}; lower --kv-pairs or raise --lengths/--vocab")
    for D in args.widths:
        if D % max(1, D // args.head_dim):
            p.error(f"width {D} does not split into {D // args.head_dim} heads of --head-dim {args.head_dim}; "
                    "pick widths that are multiples of it (or smaller than it: one head)")
    if args.warmup_steps is None:
        args.warmup_steps = max(1, args.steps // 10)
    return args


# ----------------------------------------------------------------------------- data: MQAR


def mqar(n: int, T: int, K: int, V: int, seed, noise: bool = True, power_a: float = 0.01):
    """n MQAR sequences of length T with K pairs over vocabulary V, deterministic in seed (an int or a list
    of ints). Positions that are neither pair nor query hold random tokens (noise=True, Zoology's default)
    or token 0, which is never a key or value. Returns inputs (n, T) and targets (n, T) as int64 tensors;
    targets are -100 except at query positions."""
    rng = np.random.default_rng(seed)
    half = V // 2
    rows = np.arange(n)[:, None]
    keys = 1 + np.argsort(rng.random((n, half - 1)), 1)[:, :K]  # (n, K) distinct keys from 1..V/2-1
    values = half + np.argsort(rng.random((n, V - half)), 1)[:, :K]  # (n, K) distinct values from V/2..V-1
    space = (T - 2 * K) // 2  # query slots at even offsets after the pairs
    log_p = (power_a - 1) * np.log(np.arange(1, space + 1))  # Zoology's power law over the gap
    gaps = np.argsort(-(log_p - np.log(-np.log(rng.random((n, space))))), 1)[:, :K]  # Gumbel top-K: K slots without replacement
    inputs = rng.integers(0, V, (n, T)) if noise else np.zeros((n, T), dtype=np.int64)  # filler
    inputs[:, 0:2 * K:2], inputs[:, 1:2 * K:2] = keys, values
    query_pos = 2 * K + 2 * gaps  # (n, K): key k is asked at query_pos[:, k]
    inputs[rows, query_pos] = keys
    targets = np.full((n, T), -100)
    targets[rows, query_pos] = values
    return torch.from_numpy(inputs), torch.from_numpy(targets)


TEST_SEED, VAL_SEED = 10_000, 20_000  # fixed held-out sets, one per length; training data uses the run seed


# ----------------------------------------------------------------------------- model (copied from ema_lm.py)
# Everything from here to the "model: end of copy" banner is identical to ema_lm.py (tests/test_content_recall.py).


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


# ----------------------------------------------------------------------------- model: end of copy


def model_config(args, mixer: str, D: int, T: int) -> ModelConfig:
    return ModelConfig(vocab_size=args.vocab, n_layer=args.n_layer, d_model=D, d_ffn=args.ffn_mult * D,
                       n_head=max(1, D // args.head_dim), block_size=T, mixer=mixer, ffn=args.ffn)


# ----------------------------------------------------------------------------- evaluation


@torch.no_grad()
def recall_metrics(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, batch: int, device: str,
                   autocast) -> dict:
    """Accuracy and mean loss (nats) over the query positions of a fixed set: only recall is scored."""
    model.eval()
    correct, loss_sum, total = 0, 0.0, 0
    for i in range(0, len(inputs), batch):
        x, y = inputs[i:i + batch].to(device), targets[i:i + batch].to(device)
        with autocast:
            logits, _ = model(x)  # (B, T, V)
        asked = y != -100  # (B, T): the query positions
        logits, answer = logits[asked].float(), y[asked]  # (queries, V), (queries,)
        loss_sum += F.cross_entropy(logits, answer, reduction="sum").item()
        correct += (logits.argmax(-1) == answer).sum().item()
        total += int(asked.sum())
    model.train()
    return dict(acc=correct / total, loss=loss_sum / total)


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


def train_run(job: dict) -> dict:
    """Train one model (mixer, width D, length T with K pairs, learning rate, seed) on fresh MQAR sequences
    and score it on the job's fixed held-out set ("val" for the learning-rate sweep, "test" otherwise)."""
    args, mixer, D, T, K, lr, seed = (job[k] for k in ("args", "mixer", "D", "T", "K", "lr", "seed"))
    device = pick_device(args.device)
    use_bf16 = device == "cuda" and torch.cuda.is_bf16_supported()
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if use_bf16 else torch.autocast("cpu", enabled=False)
    held_out = mqar(args.n_val if job["split"] == "val" else args.n_test, T, K, args.vocab,
                    seed=[VAL_SEED if job["split"] == "val" else TEST_SEED, T], noise=args.noise)
    torch.manual_seed(seed)
    model = SPEN(model_config(args, mixer, D, T)).to(device)
    compile_model = args.compile if args.compile is not None else device == "cuda"
    train_model = torch.compile(model) if compile_model else model
    hp = SimpleNamespace(lr=lr, weight_decay=args.weight_decay, warmup_steps=args.warmup_steps,
                         max_steps=args.steps, min_lr_ratio=args.min_lr_ratio)
    optimizer = make_optimizer(model, hp)
    t0 = time.perf_counter()
    for step in range(args.steps):
        for g in optimizer.param_groups:
            g["lr"] = lr_at(step, hp)
        # The same training sequences for every mixer and width at a given seed and length.
        x, y = (t.to(device) for t in mqar(args.batch, T, K, args.vocab, seed=[seed, T, step], noise=args.noise))
        with autocast:
            _, loss = train_model(x, y)  # cross-entropy over the query positions only (-100 elsewhere)
        loss.backward()
        if not math.isfinite(loss.item()):
            raise RuntimeError(f"non-finite loss at step {step} for {mixer} D={D} T={T} lr={lr}; "
                               "lower --lrs or check the mixer")
        if args.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    seconds = time.perf_counter() - t0
    metrics = recall_metrics(model, *held_out, batch=max(args.batch, 64), device=device, autocast=autocast)
    return dict(mixer=mixer, D=D, T=T, K=K, lr=lr, seed=seed, split=job["split"], **metrics,
                train_loss=loss.item(), params=sum(p.numel() for p in model.parameters()), seconds=seconds,
                budget=budget(args))


def budget(args) -> dict:
    """Everything besides the job's own fields that a run's result depends on (checked by --resume)."""
    return {k: getattr(args, k) for k in ("steps", "batch", "vocab", "noise", "n_layer", "ffn", "ffn_mult", "head_dim",
                                          "warmup_steps", "min_lr_ratio", "weight_decay", "grad_clip", "n_test", "n_val")}


def job_key(job: dict) -> tuple:
    return tuple(job[k] for k in ("split", "mixer", "D", "T", "K", "lr", "seed"))


def _init_worker():
    torch.set_num_threads(1)  # one thread per run: the sweep's parallelism is across runs


def run_jobs(jobs: list, workers: int, log_path: Path, t_start: float, done: dict) -> list:
    """Run the jobs (most expensive first, for balance), print one line each and append it to runs.jsonl.
    Jobs already in `done` (from runs.jsonl, with --resume) are not run again."""
    out = [done[job_key(j)] for j in jobs if job_key(j) in done]
    jobs = sorted((j for j in jobs if job_key(j) not in done), key=lambda j: -j["D"] * (j["D"] + 32) * j["T"])
    if out:
        print(f"{len(out)} runs reused from {log_path}, {len(jobs)} to go")
    pool = multiprocessing.get_context("spawn").Pool(workers, _init_worker) if workers > 1 and jobs else None
    results = pool.imap_unordered(train_run, jobs) if pool else map(train_run, jobs)
    n_reused = len(out)
    with open(log_path, "a") as log:
        for r in results:
            out.append(r)
            log.write(json.dumps(r) + "\n")
            log.flush()
            elapsed = time.perf_counter() - t_start
            print(f"[{len(out) - n_reused}/{len(jobs)}] {r['split']:4s} {r['mixer']:11s} D={r['D']:<4d} T={r['T']:<4d} K={r['K']:<3d} "
                  f"lr={r['lr']:.0e} seed={r['seed']}: acc {r['acc']:.3f} loss {r['loss']:.3f} "
                  f"({r['seconds']:.0f} s; {elapsed / 60:.1f} min elapsed)", flush=True)
    if pool:
        pool.close()
        pool.join()
    return out


# ----------------------------------------------------------------------------- results: table and figure


def summarise(runs: list) -> list:
    """Mean and sample std of test accuracy over seeds, per mixer, length and width."""
    groups = {}
    for r in runs:
        groups.setdefault((r["mixer"], r["T"], r["K"], r["D"]), []).append(r)
    rows = []
    for (mixer, T, K, D), rs in groups.items():
        acc = np.array([r["acc"] for r in rs])
        rows.append(dict(mixer=mixer, T=T, K=K, D=D, lr=rs[0]["lr"], n_seeds=len(rs), acc_mean=float(acc.mean()),
                         acc_std=float(acc.std(ddof=1)) if len(rs) > 1 else 0.0, params=rs[0]["params"]))
    return sorted(rows, key=lambda r: (MIXERS.index(r["mixer"]), r["T"], r["D"]))


def format_table(summary: list, chosen_lr: dict) -> str:
    """Markdown: one row per mixer and length, one column per width, test accuracy mean +- std over seeds."""
    widths = sorted({r["D"] for r in summary})
    cell = {(r["mixer"], r["T"], r["D"]): r for r in summary}
    lines = ["| mixer (lr) | T (pairs) | " + " | ".join(f"D = {D}" for D in widths) + " |",
             "|---|---|" + "---|" * len(widths)]
    for mixer, T, K in dict.fromkeys((r["mixer"], r["T"], r["K"]) for r in summary):
        cells = [f"{cell[mixer, T, D]['acc_mean']:.3f} +- {cell[mixer, T, D]['acc_std']:.3f}"
                 if (mixer, T, D) in cell else "" for D in widths]
        lines.append(f"| {mixer} ({chosen_lr[mixer]:.0e}) | {T} ({K}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def save_figure(summary: list, path: Path) -> bool:
    """Zoology's Figure 2 layout: accuracy against width, one panel per length, one line per mixer."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no figure (pip install matplotlib); the table and JSON are complete")
        return False
    lengths = sorted({r["T"] for r in summary})
    fig, axes = plt.subplots(1, len(lengths), figsize=(3.2 * len(lengths), 3.0), sharey=True, squeeze=False)
    for ax, T in zip(axes[0], lengths):
        for mixer in MIXERS:
            rs = sorted((r for r in summary if r["mixer"] == mixer and r["T"] == T), key=lambda r: r["D"])
            if rs:
                ax.errorbar([r["D"] for r in rs], [r["acc_mean"] for r in rs], yerr=[r["acc_std"] for r in rs],
                            marker="o", capsize=3, label=mixer)
        if rs:  # the plateau every mixer sits on first: guessing among the K values in the sequence
            ax.axhline(1 / rs[0]["K"], color="gray", ls=":", lw=1, label="1/K (guess among the K values)")
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted({r["D"] for r in summary}), [str(d) for d in sorted({r["D"] for r in summary})])
        ax.set_title(f"T = {T}, {rs[0]['K'] if rs else '?'} pairs")
        ax.set_xlabel("model width D")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("MQAR accuracy")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=len(labels), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return True


# ----------------------------------------------------------------------------- main


def main(argv=None) -> dict:
    args = get_args(argv)
    device = pick_device(args.device)
    workers = args.workers if args.workers is not None else (min(2, os.cpu_count() or 1) if device == "cpu" else 1)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    log_path = out_dir / "runs.jsonl"
    done = {}
    if args.resume and log_path.exists():
        records = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
        done = {job_key(r): r for r in records if r.get("budget") == budget(args)}
    else:
        log_path.unlink(missing_ok=True)
    pairs = dict(zip(args.lengths, args.kv_pairs))
    t_start = time.perf_counter()
    n_runs = len(args.mixers) * (len(args.lrs) + len(args.widths) * len(args.lengths) * len(args.seeds))
    print(f"MQAR sweep: {len(args.mixers)} mixers, widths {args.widths}, lengths {args.lengths} (pairs "
          f"{args.kv_pairs}), seeds {args.seeds}, {args.steps} steps of {args.batch}; {n_runs} runs on {device} "
          f"with {workers} worker(s)")

    # 1. Learning rate per mixer: one width and length, the first seed, scored on the validation set.
    lr_T = args.lr_length if args.lr_length in pairs else args.lengths[0]
    lr_D = args.lr_width if args.lr_width in args.widths else args.widths[0]
    common = dict(args=args, T=lr_T, K=pairs[lr_T], D=lr_D, seed=args.seeds[0], split="val")
    lr_runs = run_jobs([dict(common, mixer=m, lr=lr) for m in args.mixers for lr in args.lrs] if len(args.lrs) > 1
                       else [], workers, log_path, t_start, done)
    chosen_lr = {}
    for m in args.mixers:
        rs = [r for r in lr_runs if r["mixer"] == m]
        chosen_lr[m] = max(rs, key=lambda r: (r["acc"], -r["loss"]))["lr"] if rs else args.lrs[0]

    # 2. The sweep, every mixer at its own learning rate, scored on the test set.
    jobs = [dict(args=args, mixer=m, D=D, T=T, K=pairs[T], lr=chosen_lr[m], seed=s, split="test")
            for m in args.mixers for T in args.lengths for D in args.widths for s in args.seeds]
    runs = run_jobs(jobs, workers, log_path, t_start, done)
    wall = time.perf_counter() - t_start

    summary = summarise(runs)
    table = format_table(summary, chosen_lr)
    print(f"\nMQAR test accuracy (mean +- std over seeds {args.seeds}; {args.n_test} test sequences per length)")
    print(table)
    print("learning rates (validation accuracy at D = %d, T = %d):" % (lr_D, lr_T))
    for m in args.mixers:
        grid = ", ".join(f"{r['lr']:.0e}: {r['acc']:.3f}" for r in sorted(lr_runs, key=lambda r: r["lr"]) if r["mixer"] == m)
        print(f"  {m}: chose {chosen_lr[m]:.0e} from [{grid or 'a single value'}]")
    print(f"wall time {wall / 60:.1f} min on {device} ({workers} worker(s))")
    figure = out_dir / "content_recall.png"
    has_figure = args.figure and save_figure(summary, figure)
    result = dict(summary=summary, chosen_lr=chosen_lr, lr_sweep=lr_runs, runs=runs, table=table,
                  wall_seconds=wall, figure=str(figure) if has_figure else None,
                  config={k: v for k, v in vars(args).items()}, model_config=asdict(model_config(args, "ema", lr_D, lr_T)),
                  device=device, workers=workers, torch=torch.__version__, python=platform.python_version(),
                  cpu=platform.processor() or platform.machine(), cpu_count=os.cpu_count(),
                  load_average=os.getloadavg() if hasattr(os, "getloadavg") else None)
    (out_dir / "results.json").write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
