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

Other kinds of context (`--mixer`; mixers.py's docstring lists them, one factor at a time): a vector state (traces
with other coefficients) replaces only the traces in the block above; a matrix state (linear attention, fixed,
learned or gated decays) replaces softmax attention in GPT-2's block; attention is GPT-2's block. `--block gpt2`
puts a vector state in GPT-2's block, so that state and block can be compared one at a time.

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
614k tokens, seeds 0-2: SPEN (7.29M parameters) validation perplexity 135.9 +- 1.4, the attention control (7.24M)
163.3 +- 2.5; gla 260.8 +- 20.4 and linattn 250.2 +- 25.2. The SPEN is ahead on every token class, induction
tokens included, and at 10x the tokens (context 256, seed 0) still ahead, 68.7 against 76.2, with a control that
has not learned to copy. At this size and budget the EMA model is *ahead*; the paper's 8x gap is at 130M on C4.
--depth-mixing dynamic lowers both models' perplexity, dwa does not (README, "Across depth").

Glossary: B batch, T time (tokens), D model width (d_model), S number of traces (3), H FFN hidden width,
V vocabulary, L blocks. a_s = alpha (weight of the new input), 1 - a_s = the decay. FFN feed-forward network.
"""
# ----------------------------------------------------------------------------- imports
import argparse
import copy
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
from mixers import MATRIX_MIXERS, TRACE_MIXERS, ShortConv
from plumbing import (RunFolder, StopOnSignal, agree_across_ranks, check_fits, check_ranges, check_same_settings,
                      command_line, compiled_or_eager, help_formatter, init_distributed, load_checkpoint, lr_at,
                      make_optimizer, peak_bf16_flops, pick_device, portable, restore_training_state, run_info,
                      save_checkpoint, training_state, write_json_atomic)

ROOT = Path(__file__).resolve().parent
ALPHAS = (0.5, 0.1, 0.02)  # paper, Figure 1: fast, medium, slow; constants, never learned
SPEN_MIXERS = ("ema", *TRACE_MIXERS)  # vector states (traces): the SPEN block, unless --block gpt2
MIXERS = (*SPEN_MIXERS, *MATRIX_MIXERS, "attention")  # matrix states and softmax attention: GPT-2's block
BLOCKS = ("auto", "spen", "gpt2")  # auto: the SPEN block for SPEN_MIXERS, GPT-2's for the others
DEPTH_MIXINGS = ("residual", "dwa", "dynamic")  # how block inputs sum the earlier blocks' updates (DepthMixing)

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
    block: str = "auto"  # one of BLOCKS: "gpt2" puts a vector state in GPT-2's block, so state form is one factor
    conv_kernel: int = 0  # a short causal convolution in front of every mixer (Zoology); 0 = none, the paper's model
    depth_mixing: str = "residual"  # one of DEPTH_MIXINGS; residual is the paper's (and GPT-2's) stream


def block_kind(cfg) -> str:
    """'spen' or 'gpt2': the block that the mixer sits in (cfg: a ModelConfig or the parsed flags)."""
    auto = "spen" if cfg.mixer in SPEN_MIXERS else "gpt2"
    return auto if cfg.block == "auto" else cfg.block


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
def ema_chunk_matrices(alphas: tuple, C: int, device: torch.device) -> tuple:
    """The constant weights of ema_scan for chunks of C positions, in float32; they do not depend on T.
        M       (C*S, K)  row (i, s): [a_s lam_s^(i-j) for j <= i, else 0 | lam_s^(i+1) in column C+s | zeros]
        w_last  (S, C)    row C-1 of the first part: a chunk's own contribution to its last trace
        r       (S,)      lam_s^C, the decay across one whole chunk
    K = C + S rounded up to a multiple of 8, so that every row of M and of the matrix it multiplies starts
    16-byte aligned in bf16 (an odd K = 67 sent cuBLAS to slow sm75 `align1` kernels on an H200). torch.compile
    calls this once at trace time and bakes the results in as constants (building them inside the graph trips
    an inductor bug in torch 2.11 on CUDA, "The argument '-((0))' is not comparable")."""
    S = len(alphas)
    a = torch.tensor(alphas, dtype=torch.float64)
    lam = 1 - a
    i = torch.arange(C, dtype=torch.float64)
    dij = i[:, None] - i[None, :]  # (C, C): i - j
    W = a[:, None, None] * lam[:, None, None] ** dij.clamp(min=0) * (dij >= 0)  # (S, C, C)
    K = -(-(C + S) // 8) * 8
    M = torch.zeros(C, S, K, dtype=torch.float64)
    M[:, :, :C] = W.permute(1, 0, 2)
    M[:, range(S), range(C, C + S)] = lam[None, :] ** (i[:, None] + 1)  # the carried state, decayed to position i
    return (M.reshape(C * S, K).float().to(device), W[:, -1].float().to(device),
            (lam ** C).float().to(device))


def chunk_carries(own: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """carry_n = sum_{m < n} r^(n-1-m) own_m: the trace just before chunk n, from every earlier chunk's own
    contribution. own: (B, N, S, D) float32, r: (S,). An inclusive scan by doubling (Hillis and Steele): after
    the step with offset k each position holds the sum over its last 2k chunks, so log2(N) elementwise steps
    suffice, with no (N, N) matrix and nothing that depends on N but the number of steps."""
    N = own.shape[1]
    r = r.view(1, 1, -1, 1)
    k = 1
    while k < N:
        own = own + r * F.pad(own, (0, 0, 0, 0, k, 0))[:, :N]  # position n adds r^k times position n - k
        r, k = r * r, 2 * k
    return F.pad(own, (0, 0, 0, 0, 1, 0))[:, :N]  # exclusive: chunk n starts from the state after chunk n-1


class EMAScan(torch.autograd.Function):
    """h = chunked EMA of x, forward and backward each one aligned matrix product plus a scan over chunks.

    Forward, per chunk n of C positions (x_n: (C, D)):
        own_n   = w_last x_n                    each chunk's last trace, from a zero state  (B, N, S, D)
        carry_n = sum_{m<n} r^(n-1-m) own_m     the trace entering chunk n (chunk_carries, float32)
        h_n     = M [x_n; carry_n; 0]           all C x S traces of the chunk, rows (i, s)   (C*S, D)
    The traces are linear in x with constant weights, so the backward needs nothing saved but the
    constants: it is the adjoint, the same scan run backwards in time. With g_n = dL/dh_n:
        [dx'_n; dcarry_n; 0] = M^T g_n          one matrix product whose extra rows are the carries' gradients
        down_n  = sum_{m>n} r^(m-1-n) dcarry_m  chunk_carries on the chunks in reverse order
        dx_n    = dx'_n + w_last^T down_n
    Reads and writes: x once and h once forward, dh once and dx once backward, plus the small (B, N, S, D)
    carries and the concatenation of x with them (about 1.5x the memory floor in bytes; README "Speed")."""

    @staticmethod
    def forward(ctx, xc: torch.Tensor, M: torch.Tensor, w_last: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        B, N, C, D = xc.shape
        S, K = len(r), M.shape[1]
        own = torch.einsum("sj,bnjd->bnsd", w_last.to(xc.dtype), xc)  # (B, N, S, D)
        carry = chunk_carries(own.float(), r).to(xc.dtype)  # (B, N, S, D)
        inp = torch.cat([xc, carry, xc.new_zeros(B, N, K - C - S, D)], 2)  # (B, N, K, D)
        ctx.save_for_backward(M, w_last, r)
        return M.to(xc.dtype) @ inp  # (B, N, C*S, D)

    @staticmethod
    def backward(ctx, g: torch.Tensor) -> tuple:
        M, w_last, r = ctx.saved_tensors
        C, S = w_last.shape[1], len(r)
        out = M.t().to(g.dtype) @ g  # (B, N, K, D)
        down = chunk_carries(out[:, :, C:C + S].float().flip(1), r).flip(1)  # (B, N, S, D)
        dx = out[:, :, :C] + torch.einsum("sj,bnsd->bnjd", w_last.to(g.dtype), down.to(g.dtype))
        return dx, None, None, None


def ema_scan(x: torch.Tensor, alphas: tuple, chunk_size: int = 64) -> torch.Tensor:
    """The same traces as ema_scan_reference (ema_lm.py), computed chunk by chunk with matrix products (EMAScan).
    x: (B, T, D) -> (B, T, S, D). Any T works: the tail is padded with zeros, which only positions after T
    could see. Decay weights are float32 constants; the products run in x's dtype."""
    B, T, D = x.shape
    S, C = len(alphas), chunk_size
    N = -(-T // C)  # chunks
    if N * C != T:
        x = F.pad(x, (0, 0, 0, N * C - T))
    h = EMAScan.apply(x.view(B, N, C, D), *ema_chunk_matrices(tuple(alphas), C, x.device))  # (B, N, C*S, D)
    return h.view(B, N * C, S, D)[:, :T]  # (B, T, S, D)


# ----------------------------------------------------------------------------- model: blocks


class FixedTraces(nn.Module):
    """ema: the paper's three traces with constant alphas (ALPHAS); no parameters (d_model: the common signature)."""
    S = len(ALPHAS)  # traces per channel

    def __init__(self, d_model: int):
        super().__init__()

    def forward(self, u: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, T, S, D)
        return ema_scan(u, ALPHAS)


TRACES = {"ema": FixedTraces, **TRACE_MIXERS}  # vector states: (B, T, D) -> (B, T, S, D) traces


class FFN(nn.Module):
    """D -> H -> D with GELU; "sparse" keeps only the top-k hidden pre-activations per token (paper:
    6% active). The mask is computed densely: it models the paper's sparsity, not its speed. The k-th largest
    value comes from an unsorted top-k (the sort of a sorted one is wasted work: its minimum is the same)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.up = nn.Linear(cfg.d_model, cfg.d_ffn, bias=False)
        self.down = nn.Linear(cfg.d_ffn, cfg.d_model, bias=False)
        self.k = max(1, round(cfg.ffn_active * cfg.d_ffn)) if cfg.ffn == "sparse" else 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.up(x)  # (B, T, H)
        if self.k:
            kth = a.topk(self.k, dim=-1, sorted=False).values.amin(-1, keepdim=True)  # (B, T, 1): the k-th largest
            a = a * (a >= kth)  # gelu(0) = 0, so masked units contribute nothing
        return self.down(F.gelu(a))


class SPENBlock(nn.Module):
    """Traces -> linear predictor -> prediction error -> context mix -> FFN; returns the block's update to the
    residual stream. The traces are the paper's fixed EMAs (mixer "ema") or another vector state (mixers.py);
    nothing else changes. Both linear reads of the traces (the predictor's and the mix's) are one matrix
    product over h_t; the predictor's output is then shifted one position, W_pred h_{t-1} = (W_pred h)_{t-1},
    so no shifted copy of the S-times-wider traces is made."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        D = cfg.d_model
        self.traces = TRACES[cfg.mixer](D)  # first in reading order; "ema" has no parameters, so its init is unchanged
        S = self.traces.S
        self.ln_in = nn.LayerNorm(D, bias=False)
        self.pred = nn.Linear(S * D, D, bias=False)
        self.mix = nn.Linear((S + 1) * D, D, bias=False)  # [e_t; h_t] -> D
        self.ln_mix = nn.LayerNorm(D, bias=False)
        self.ffn = FFN(cfg)
        self.conv = ShortConv(D, cfg.conv_kernel) if cfg.conv_kernel else nn.Identity()  # in front of the traces

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        u = self.ln_in(x)
        h = self.traces(self.conv(u)).flatten(2)  # (B, T, S*D): traces up to and including t
        y = F.linear(h, torch.cat([self.pred.weight, self.mix.weight[:, D:]]))  # (B, T, 2D): W_pred h_t, W_mix,h h_t
        pred = F.pad(y[..., :D], (0, 0, 1, 0))[:, :T]  # (B, T, D): W_pred h_{t-1}, zero at t = 0
        err = u - pred  # (B, T, D): what the past did not predict
        c = self.ln_mix(F.linear(err, self.mix.weight[:, :D]) + y[..., D:])  # W_mix [e_t; h_t]
        return self.ffn(c)


class CausalSelfAttention(nn.Module):
    """GPT-2's softmax attention: every earlier key and value is kept, and read by a query."""

    def __init__(self, d_model: int, n_head: int):
        super().__init__()
        self.n_head = n_head
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.proj = nn.Linear(d_model, d_model, bias=False)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        B, T, D = u.shape
        q, k, v = self.qkv(u).view(B, T, 3, self.n_head, D // self.n_head).transpose(1, 3).unbind(2)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, n_head, T, D/n_head)
        return self.proj(y.transpose(1, 2).reshape(B, T, D))


TOKEN_MIXERS = {"attention": CausalSelfAttention, **MATRIX_MIXERS}  # (d_model, n_head): (B, T, D) -> (B, T, D)


class AttentionBlock(nn.Module):
    """GPT-2's block: a token mixer and an FFN, each pre-norm; returns the block's update to the residual
    stream. The mixer is softmax attention (GPT-2), a matrix state (mixers.py), or with --block gpt2 a vector
    state read by one linear map (TraceReadout)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        D = cfg.d_model
        self.ln_attn = nn.LayerNorm(D, bias=False)
        self.attn = (TOKEN_MIXERS[cfg.mixer](D, cfg.n_head) if cfg.mixer in TOKEN_MIXERS
                     else TraceReadout(TRACES[cfg.mixer](D), D))
        self.ln_ffn = nn.LayerNorm(D, bias=False)
        self.ffn = FFN(cfg)
        self.conv = ShortConv(D, cfg.conv_kernel) if cfg.conv_kernel else nn.Identity()  # in front of the mixer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.attn(self.conv(self.ln_attn(x)))
        return a + self.ffn(self.ln_ffn(x + a))


# ----------------------------------------------------------------------------- model: variants for comparison


class TraceReadout(nn.Module):
    """A vector state in GPT-2's block (--block gpt2): its S traces per channel read by one linear map
    S*D -> D where attention would be. With it, a trace mixer and a matrix mixer differ in the state alone,
    not also in the block around it. Named proj, its map is initialised like attention's output map."""

    def __init__(self, traces: nn.Module, d_model: int):
        super().__init__()
        self.traces = traces
        self.proj = nn.Linear(traces.S * d_model, d_model, bias=False)

    def forward(self, u: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, T, D)
        return self.proj(self.traces(u).flatten(2))


class DepthMixing(nn.Module):
    """How block l's input is formed from the embedding d_0 and the earlier blocks' updates d_1 .. d_l (--depth-
    mixing; the final LayerNorm's input is formed the same way, as l = L):
        residual  x_l = d_0 + d_1 + ... + d_l                    every weight 1, fixed: the plain residual stream
        dwa       x_l = sum_j w_lj d_j,  w_lj learned constants    DenseFormer's depth-weighted average
        dynamic   x_l = sum_j w_lj(t) d_j,  w_l(t) = 1 + tanh(W_l LN(r_l(t)))   computed from the token's state,
                  r_l = d_0 + ... + d_l its plain residual sum (hyper-connections' dynamic form; the depth
                  analogue of selective decays)
    Both start as the residual stream: w = 1 and W = 0, and the sums run in the residual's order, so a fresh
    model computes exactly what residual computes. Parameters: dwa (L+1)(L+2)/2 - 1 weights (14 at L = 4),
    dynamic D times as many (1,792 at L = 4, D = 128). DenseFormer weights the states x_j rather than the
    updates d_j; a linear map of one is a linear map of the other, and all-ones on updates is its identity."""

    def __init__(self, kind: str, n_layer: int, d_model: int):
        super().__init__()
        self.kind = kind
        if kind == "dwa":  # 1-D, so the optimiser does not decay them towards zero
            self.w = nn.ParameterList(nn.Parameter(torch.ones(n + 1)) for n in range(1, n_layer + 1))
        elif kind == "dynamic":
            self.w = nn.ModuleList(nn.Linear(d_model, n + 1, bias=False) for n in range(1, n_layer + 1))

    def forward(self, parts: list, residual: torch.Tensor) -> torch.Tensor:
        """parts: [d_0, ..., d_l], each (B, T, D); residual: their plain sum r_l. Returns x_l (B, T, D)."""
        if self.kind == "residual":
            return residual
        n = len(parts) - 1  # the consumer: block n, or the final LayerNorm (n = L)
        w = (self.w[n - 1] if self.kind == "dwa"  # (n+1,) or (B, T, n+1)
             else 1 + torch.tanh(self.w[n - 1](F.layer_norm(residual, residual.shape[-1:]))))
        x = w[..., :1] * parts[0]
        for j in range(1, n + 1):  # the residual's order of additions
            x = x + w[..., j:j + 1] * parts[j]
        return x


class LanguageModel(nn.Module):
    """Token embedding -> L blocks -> LayerNorm -> tied output head. The block is the SPEN block for the
    trace mixers and GPT-2's block for the attention mixers (or for every mixer, with --block gpt2); each block
    returns its update, and DepthMixing forms the next block's input from the updates (the residual stream by
    default). Only softmax attention gets a position embedding: the traces' and the linear attentions' decays
    are their own sense of order. `block`, a function of the config, replaces the mixer's own block
    (content_recall.py's trace readers)."""

    def __init__(self, cfg: ModelConfig, block=None):
        super().__init__()
        if cfg.mixer not in MIXERS:
            raise ValueError(f"unknown mixer {cfg.mixer!r}; choose from {', '.join(MIXERS)}")
        if cfg.block not in BLOCKS or (cfg.block == "spen" and cfg.mixer not in TRACES):
            raise ValueError(f"block {cfg.block!r} with mixer {cfg.mixer!r}: choose auto or gpt2 (a token mixer "
                             "has no traces for the SPEN block to predict from)")
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.wpe = nn.Embedding(cfg.block_size, cfg.d_model) if cfg.mixer == "attention" else None
        block = block or (SPENBlock if block_kind(cfg) == "spen" else AttentionBlock)
        self.blocks = nn.ModuleList(block(cfg) for _ in range(cfg.n_layer))
        self.depth = DepthMixing(cfg.depth_mixing, cfg.n_layer, cfg.d_model)
        self.ln_f = nn.LayerNorm(cfg.d_model, bias=False)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.head.weight = self.wte.weight  # tied embeddings (paper's parameter count assumes them)
        self.apply(self._init)
        for name, p in self.named_parameters():  # GPT-2: scale the projections into the residual stream
            if name.endswith(("ffn.down.weight", "proj.weight")):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * cfg.n_layer))
        if cfg.depth_mixing == "dynamic":  # W = 0: a fresh model is the residual stream
            for w in self.depth.w:
                nn.init.zeros_(w.weight)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())  # the tied matrix is counted once

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, states: list | None = None) -> tuple:
        """Logits (B, T, V) and the mean loss if targets are given. A list passed as `states` receives the input
        of every block and the final LayerNorm's input, L + 1 tensors (B, T, D) (the depth probe reads them)."""
        B, T = idx.shape
        x = self.wte(idx)  # (B, T, D)
        if self.wpe is not None:
            if T > self.cfg.block_size:
                raise ValueError(f"sequence of {T} tokens exceeds the attention model's block size "
                                 f"{self.cfg.block_size}")
            x = x + self.wpe(torch.arange(T, device=idx.device))
        parts, residual = [x], x  # the embedding and every block's update; their plain sum
        for block in self.blocks:
            if states is not None:
                states.append(x)
            parts.append(block(x))
            residual = residual + parts[-1]
            x = self.depth(parts, residual)  # the next block's input (residual: the plain sum itself)
        if states is not None:
            states.append(x)
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
    # CPU-sized: 300 steps of 2048 tokens (about half an epoch of PTB); 350-460 s of training at one thread with
    # jemalloc (results/lm), about 11 min without.
    # Most of its time is the 50k-way output layer, which no width choice below can avoid.
    "small": dict(n_layer=4, d_model=128, n_head=4, block_size=128, max_steps=300, batch_tokens=2048, micro_batch=16,
                  lr=3e-3, warmup_steps=30, eval_tokens=65536, eval_interval=100, checkpoint_interval=100),
    # The paper's recipe: 130M SPEN, ~8B tokens (paper), 0.5M tokens per step, context 1024; a checkpoint every 250
    # steps (about 6 min on one H200 at its measured 374k tokens/s, results/bench).
    "paper": dict(n_layer=12, d_model=768, n_head=12, block_size=1024, max_steps=16000, batch_tokens=524288,
                  micro_batch=16, lr=6e-4, warmup_steps=700, eval_tokens=4194304, eval_interval=1000,
                  checkpoint_interval=250),
}
DATASETS = ("ptb", "c4", "fineweb", "wikitext103")
EVAL_SPLIT = {"ptb": "val", "c4": "val", "fineweb": "val", "wikitext103": "test"}


def get_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False,
                                formatter_class=help_formatter(PRESETS))
    add = p.add_argument
    add("--preset", choices=sorted(PRESETS), default="small", help="model size and training budget")
    add("--mixer", choices=MIXERS, default="ema", help="how positions are mixed: traces or attention (docstring)")
    add("--block", choices=BLOCKS, default="auto", help="the block around the mixer: auto (SPEN block for the trace "
        "mixers, GPT-2's for the others) or gpt2 (a trace mixer read by one linear map in GPT-2's block)")
    add("--conv-kernel", type=int, default=0, help="short causal convolution of this width in front of every mixer "
        "(Zoology); 0 = none, the paper's model")
    add("--depth-mixing", choices=DEPTH_MIXINGS, default="residual", help="how each block's input sums the earlier "
        "blocks' updates (DepthMixing): the plain residual stream, learned constant weights, or input-dependent ones")
    add("--ffn", choices=["sparse", "dense"], default=None, help="sparse in the SPEN block, dense in GPT-2's "
        "(default: the block's)")
    add("--n-layer", type=int, default=None, help="blocks (overrides the preset)")
    add("--d-model", type=int, default=None, help="model width D (overrides the preset)")
    add("--d-ffn", type=int, default=None, help="FFN hidden width H (default: 3D in the SPEN block, 4D in GPT-2's)")
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
    args.given = given_flags(p, argv)  # what the user wrote, for --sample and --eval-only
    vars(args).update({k: v for k, v in PRESETS[args.preset].items() if getattr(args, k) is None})  # unset flags
    if args.block == "spen" and args.mixer not in SPEN_MIXERS:
        p.error(f"--block spen --mixer {args.mixer}: the SPEN block needs a trace mixer ({', '.join(SPEN_MIXERS)})")
    spen = block_kind(args) == "spen"
    args.ffn = args.ffn or ("sparse" if spen else "dense")
    if args.d_ffn is None:
        args.d_ffn = (3 if spen else 4) * args.d_model
    check_ranges(p, args, positive=("n_layer", "d_model", "d_ffn", "n_head", "block_size", "max_steps", "batch_tokens",
                                    "micro_batch", "lr", "eval_interval", "checkpoint_interval", "sample_tokens"),
                 non_negative=("steps_this_run", "warmup_steps", "weight_decay", "grad_clip", "conv_kernel"),
                 fraction=("min_lr_ratio",))
    args.eval_datasets = [d for d in args.eval_datasets.split(",") if d]
    if set(args.eval_datasets) - set(DATASETS):
        p.error(f"--eval-datasets: unknown {sorted(set(args.eval_datasets) - set(DATASETS))}; choose from {DATASETS}")
    width = 2 * args.n_head if args.mixer in MATRIX_MIXERS else args.n_head if args.mixer == "attention" else 1
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


# What --sample and --eval-only take from the run in --out-dir (its checkpoint's flags), not from the command line.
RUN_SETTINGS = ("preset", "n_layer", "d_model", "d_ffn", "n_head", "block_size", "mixer", "ffn", "block",
                "conv_kernel", "depth_mixing", "dataset", "eval_datasets", "eval_tokens")


def given_flags(parser: argparse.ArgumentParser, argv) -> set:
    """The dests of the flags written on the command line (a copy of the parser with every default suppressed)."""
    quiet = copy.deepcopy(parser)
    for action in quiet._actions:
        action.default = argparse.SUPPRESS
    return set(vars(quiet.parse_args(argv)))


def adopt_run_settings(args: argparse.Namespace, saved: dict, given: set) -> None:
    """--sample and --eval-only read the model and data of the run in --out-dir, as nanoGPT's sample.py does: its
    RUN_SETTINGS replace the command line's. A flag given explicitly that contradicts the run is refused, listing
    every such flag; one that agrees, or a default, is fine."""
    clash = [k for k in RUN_SETTINGS if k in given and k in saved and saved[k] != getattr(args, k)]
    if clash:
        listed = "; ".join(f"--{k.replace('_', '-')} {getattr(args, k)} (given) vs {saved[k]} (the run)" for k in clash)
        raise SystemExit(f"{args.out_dir} holds another model or data than the flags say: {listed}. --sample and "
                         "--eval-only take these from the run: drop those flags, or point --out-dir at another run.")
    for k in RUN_SETTINGS:
        if k in saved:  # a checkpoint older than a flag keeps that flag's default
            setattr(args, k, saved[k])


def model_config(args: argparse.Namespace) -> ModelConfig:
    """The model's fields from the parsed flags."""
    return ModelConfig(**{f: getattr(args, f) for f in ("n_layer", "d_model", "d_ffn", "n_head", "block_size", "mixer",
                                                        "ffn", "block", "conv_kernel", "depth_mixing")})


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
    given = vars(args).pop("given")  # not a setting of the run, so not recorded with it
    device = pick_device(args.device)
    rank, world = init_distributed(device)  # (0, 1) unless torchrun started several processes; sets this one's GPU
    check_fits(8 * args.micro_batch * args.block_size * ModelConfig.vocab_size, device, f"--micro-batch "
               f"{args.micro_batch} x --block-size {args.block_size}: the logits and their gradient alone",
               OUT_OF_MEMORY)
    compile_model = args.compile if args.compile is not None else device == "cuda"
    use_bf16 = device == "cuda" and torch.cuda.is_bf16_supported()
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if use_bf16 else nullcontext()
    out_dir = Path(args.out_dir)
    ckpt_path = out_dir / "ckpt.pt"
    torch.manual_seed(args.seed)
    if args.sample or args.eval_only:  # the run's own model and data, from its checkpoint
        ckpt = load_checkpoint(ckpt_path)
        adopt_run_settings(args, ckpt["args"], given)
        cfg = ModelConfig(**ckpt["model_config"])
    else:
        cfg = model_config(args)
    model = LanguageModel(cfg).to(device)
    if args.sample or args.eval_only:
        model.load_state_dict(ckpt["model"])

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
                config=portable(vars(args)), model_config=asdict(cfg), params=n_params, processes=world,
                **run_info(device), resumes=earlier + [dict(step=step, changed=changed)] if args.resume else []))
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
