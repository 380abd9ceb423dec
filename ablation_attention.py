"""ablation_attention.py: where does the language model of exponential moving averages (EMA) lose content?

Hypothesis (paper, arXiv 2604.08556): replacing the linear predictor of the SPEN (the paper's EMA block) with full
softmax attention over the EMA traces gives the same loss, so the whole gap to a Transformer sits in the traces,
which compress the past lossily and independently of the data. The paper does not say what that attention saw
(query, keys, values, scale). This script makes the question precise by training, on identical data, steps,
learning-rate schedule and validation windows, four rows with 3 seeds each:

    linear        u^_t = W_pred [h_{t-1}^1; h_{t-1}^2; h_{t-1}^3]           ema_lm.py's SPEN, unchanged
    attn-current  u^_t = Attn(q_t; slots (t-1, s) for s = 1..3)           the paper's reading
    attn-history  u^_t = Attn(q_t; slots (t', s) for every t' <= t-1)     the information is there, reachable?
    transformer   ema_lm.py --mixer attention (GPT-2 block)               positive control: what is reachable

What changes relative to ema_lm.py: only how x_hat_t (u^_t below) is formed inside every SPEN block. The
rest of the block, the model, the data, the optimiser and the schedule are ema_lm.py's: copied verbatim
(tests/test_copies.py) or imported from plumbing.py; tests/test_ablation_attention.py checks that the
`linear` and `transformer` rows build the very same parameters as ema_lm.py's two mixers.

The trace attention (both attn-* rows; our reconstruction, the paper gives none of it):
    slots     the trace vectors h_{t'}^s, one slot per (position, timescale); the slot of h_{-1} = 0 (before
              the sequence) is always visible, so position 0 sees only zero traces and predicts exactly 0,
              like the linear predictor, and it doubles as a "nothing relevant" slot later on.
    keys      W_k h_{t'}^s + p_s: a shared linear map plus a learned per-timescale key embedding p_s
              (init N(0, 0.02^2), like every embedding here), so the attention can tell the fast trace from
              the slow one. p_s goes into the keys only: values stay W_v h, so zero traces give zero output.
    values    W_v h_{t'}^s, then the heads are concatenated and mapped by W_o: D -> D.
    query     W_q mean_s h_{t-1}^s: information at t-1 only, never u_t (a query from u_t would leak the
              token being predicted into its own prediction error). The mean rather than the concatenation
              keeps the predictor at 4 D^2 + S D parameters against the linear one's 3 D^2.
    scale     1/sqrt(head_dim), the standard one: with the 0.02 initialisation the logits start near 0, so
              both attention predictors start as a uniform average of their visible values.
    heads     4 (--n-pred-head), head_dim = D/4. No position embedding: as in the whole SPEN, order is
              known only through the traces themselves.
    attn-current: query t sees the S = 3 slots at t' = t-1, exactly the vectors the linear predictor sees.
    attn-history: query t sees the slots of every t' <= t-1 (3t + 3 slots). The sequence of traces is
              invertible to the inputs, u_t = (h_t^s - (1 - a_s) h_{t-1}^s) / a_s, so if this row does not
              beat `linear` either, the traces were not the obstacle and the "data processing inequality"
              reading is wrong; if it closes the gap to `transformer`, the content was present but out of
              reach of a predictor that sees only h_{t-1}. Each slot alone is not invertible; the attention
              must combine slots (or lean on the fast trace, a = 0.5) to recover a single past token.

Commands:
    python ablation_attention.py                       # 4 rows x 3 seeds on Penn Treebank, CPU (see below)
    python ablation_attention.py --predictors linear,attn-current --seeds 0
    python ablation_attention.py --device cuda --preset gpu --dataset fineweb      # one GPU, 262M tokens a run
    python ablation_attention.py --resume              # after an interruption: finished runs are reused
The CPU default (205k tokens a run) took 200-280 s of training a run at one thread on a shared 2-vCPU Xeon
(results/ablation/README.md); on a CPU that other jobs share, set OMP_NUM_THREADS=1: two OpenMP threads on
oversubscribed cores ran 20x slower than one. The GPU preset has not been run (speeds of short eager runs: the
same README).

Measured result (default command, PTB, seeds 0-2, torch 2.13.0, 2-vCPU Intel Xeon shared with other jobs: about 60
minutes of training, 100 elapsed; results/ablation/README.md): validation loss linear 5.315 +- 0.024, attn-current
5.318 +- 0.031 (+0.06%), attn-history 5.315 +- 0.019 (+0.01%), transformer 5.494 +- 0.032 (+3.4%). Both attention
predictors match the linear one within seed noise, as the paper says, but at this budget the Transformer control is
*worse* than the SPEN: there is no content gap yet to localise, so the CPU run cannot test the paper's claim on
text. content_recall.py runs a related localisation on associative recall, where the gap exists (its rows
trace-attn-current and trace-attn-history; there the query is read from u_t and the slots are h_t, a design for
recall, not this script's); the GPU preset here, the test on text, has not been run.

Glossary: B batch, T time (tokens), D model width, S traces (3), H hidden width of the feed-forward network
(FFN), V vocabulary, L blocks, n_head attention heads. a_s = alpha (weight of the new input), h_t^s = trace s
after position t, u_t the block input after LayerNorm, u^_t its prediction from the past (the paper's x_hat_t).
"""
# ----------------------------------------------------------------------------- imports
import argparse
import json
import math
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
from plumbing import (RunFolder, StopOnSignal, check_fits, check_ranges, check_same_settings, command_line,
                      compiled_or_eager, cut_metrics, help_formatter, load_checkpoint, lr_at, make_optimizer,
                      pick_device, portable, read_json, restore_training_state, run_info, save_checkpoint,
                      training_state, write_json_atomic)

ROOT = Path(__file__).resolve().parent
ALPHAS = (0.5, 0.1, 0.02)  # paper, Figure 1: fast, medium, slow; constants, never learned

# ----------------------------------------------------------------------------- model config

PREDICTORS = ("linear", "attn-current", "attn-history")
ROWS = (*PREDICTORS, "transformer")  # the last one is ema_lm.py --mixer attention


@dataclass
class ModelConfig:
    vocab_size: int = 50304  # GPT-2's 50257 padded to a multiple of 64 (as ema_lm.py)
    n_layer: int = 4  # set by the preset; the paper's ablation ran "at a smaller scale" than its 12 blocks
    d_model: int = 128  # set by the preset
    d_ffn: int = 384  # 3D for the SPEN, 4D for the transformer control (as ema_lm.py)
    ffn_active: float = 0.06  # paper: top-k FFN with 6% of hidden units active
    n_head: int = 4  # transformer control only (as ema_lm.py's small preset)
    block_size: int = 128  # context length T of training and validation windows
    mixer: str = "ema"  # "ema" (SPEN block) or "attention" (GPT-2 block, the control row)
    ffn: str = "sparse"  # "sparse" for the SPEN rows, "dense" for the transformer (as ema_lm.py)
    predictor: str = "linear"  # how u^_t is formed: one of PREDICTORS
    n_pred_head: int = 4  # heads of the trace attention (the issue fixes 4)


# ----------------------------------------------------------------------------- model: the EMA scan


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


# ----------------------------------------------------------------------------- model: the predictors


class TraceAttention(nn.Module):
    """Softmax attention from a query at t-1 over trace slots (t', s); see the module docstring.
    history=False: only the S slots at t' = t-1 (attn-current). history=True: every t' <= t-1."""

    def __init__(self, cfg: ModelConfig, history: bool):
        super().__init__()
        D, S = cfg.d_model, len(ALPHAS)
        self.n_head, self.history = cfg.n_pred_head, history
        self.q = nn.Linear(D, D, bias=False)
        self.kv = nn.Linear(D, 2 * D, bias=False)
        self.trace_emb = nn.Parameter(0.02 * torch.randn(S, D))  # p_s: which timescale a key comes from
        self.out = nn.Linear(D, D, bias=False)  # W_o; not named "proj": no residual-branch rescaling here

    def forward(self, h_past: torch.Tensor) -> torch.Tensor:
        """h_past: (B, T, S, D), row t holding the traces h_{t-1} (zeros at t = 0) -> u^: (B, T, D)."""
        B, T, S, D = h_past.shape
        nh, hd = self.n_head, D // self.n_head
        q = self.q(h_past.mean(2))  # (B, T, D): from information at t-1 only
        k, v = self.kv(h_past).chunk(2, -1)  # (B, T, S, D) each
        k = k + self.trace_emb
        if not self.history:  # one tiny attention per position: 1 query, S keys
            q = q.reshape(B * T, 1, nh, hd).transpose(1, 2)  # (B*T, nh, 1, hd)
            k, v = (z.reshape(B * T, S, nh, hd).transpose(1, 2) for z in (k, v))  # (B*T, nh, S, hd)
            y = F.scaled_dot_product_attention(q, k, v)  # (B*T, nh, 1, hd)
        else:  # slot (row r, trace s) sits at index r*S + s; query t sees rows r <= t, i.e. t' = r-1 <= t-1
            q = q.view(B, T, nh, hd).transpose(1, 2)  # (B, nh, T, hd)
            k, v = (z.reshape(B, T * S, nh, hd).transpose(1, 2) for z in (k, v))  # (B, nh, T*S, hd)
            slot = torch.arange(T * S, device=h_past.device)
            visible = slot[None, :] < S * (torch.arange(T, device=h_past.device)[:, None] + 1)  # (T, T*S)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=visible)  # (B, nh, T, hd)
        return self.out(y.transpose(1, 2).reshape(B, T, D))


def trace_attention_reference(m: TraceAttention, h_past: torch.Tensor) -> torch.Tensor:
    """The same attention one position and one head at a time, with an explicit softmax over the visible
    slots: the slow, obviously correct version that the tests hold the fast path to."""
    B, T, S, D = h_past.shape
    nh, hd = m.n_head, D // m.n_head
    q = m.q(h_past.mean(2))  # (B, T, D)
    k, v = m.kv(h_past).chunk(2, -1)  # (B, T, S, D)
    k = k + m.trace_emb
    y = torch.zeros(B, T, D)
    for t in range(T):
        rows = slice(t, t + 1) if not m.history else slice(0, t + 1)  # row r holds h_{r-1}
        kt, vt = k[:, rows].flatten(1, 2), v[:, rows].flatten(1, 2)  # (B, slots, D)
        for i in range(nh):
            c = slice(i * hd, (i + 1) * hd)
            w = torch.softmax(torch.einsum("bd,bnd->bn", q[:, t, c], kt[..., c]) / math.sqrt(hd), -1)
            y[:, t, c] = torch.einsum("bn,bnd->bd", w, vt[..., c])
    return m.out(y)


# ----------------------------------------------------------------------------- model: blocks


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
    """ema_lm.py's SPEN block with a choice of predictor. With predictor "linear" it is ema_lm.py's
    SPENBlock: the same parameters, created in the same order, and the same computation."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        D, S = cfg.d_model, len(ALPHAS)
        if cfg.predictor not in PREDICTORS:
            raise ValueError(f"unknown predictor {cfg.predictor!r}; choose from {', '.join(PREDICTORS)}")
        self.linear = cfg.predictor == "linear"
        self.ln_in = nn.LayerNorm(D, bias=False)
        self.pred = nn.Linear(S * D, D, bias=False) if self.linear else \
            TraceAttention(cfg, history=cfg.predictor == "attn-history")
        self.mix = nn.Linear((S + 1) * D, D, bias=False)
        self.ln_mix = nn.LayerNorm(D, bias=False)
        self.ffn = FFN(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        u = self.ln_in(x)
        h = ema_scan(u, ALPHAS)  # (B, T, S, D): traces up to and including t
        if self.linear:  # ema_lm.py's arithmetic: one product for both reads of h_t, the prediction then shifted
            y = F.linear(h.flatten(2), torch.cat([self.pred.weight, self.mix.weight[:, D:]]))  # (B, T, 2D)
            u_hat, mixed = F.pad(y[..., :D], (0, 0, 1, 0))[:, :T], y[..., D:]  # W_pred h_{t-1}; W_mix,h h_t
        else:  # attention reads the traces up to t-1 (zeros at t = 0)
            u_hat = self.pred(F.pad(h, (0, 0, 0, 0, 1, 0))[:, :T])  # (B, T, D)
            mixed = F.linear(h.flatten(2), self.mix.weight[:, D:])  # (B, T, D)
        err = u - u_hat  # (B, T, D): what the past did not predict
        c = self.ln_mix(F.linear(err, self.mix.weight[:, :D]) + mixed)  # W_mix [e_t; h_t]
        return x + self.ffn(c)


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


class AttentionBlock(nn.Module):
    """GPT-2's block: causal self-attention and an FFN, each pre-norm with its own residual (ema_lm.py's,
    which also offers linear attention there; the transformer row needs only softmax attention)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        D = cfg.d_model
        self.ln_attn = nn.LayerNorm(D, bias=False)
        self.attn = CausalSelfAttention(cfg.d_model, cfg.n_head)
        self.ln_ffn = nn.LayerNorm(D, bias=False)
        self.ffn = FFN(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.attn(self.ln_attn(x))
        return x + (a + self.ffn(self.ln_ffn(x + a)))  # ema_lm.py's order of additions


class LanguageModel(nn.Module):
    """ema_lm.py's model: token embedding -> L blocks -> LayerNorm -> tied output head; a learned position
    embedding only for the transformer control (the SPEN's sense of order is the traces' decays)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.wpe = nn.Embedding(cfg.block_size, cfg.d_model) if cfg.mixer == "attention" else None
        Block = SPENBlock if cfg.mixer == "ema" else AttentionBlock
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.d_model, bias=False)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.head.weight = self.wte.weight  # tied embeddings
        self.apply(self._init)  # as ema_lm.py; the trace embeddings p_s keep their own N(0, 0.02^2)
        for name, p in self.named_parameters():  # GPT-2: scale the projections into the residual stream
            if name.endswith(("ffn.down.weight", "proj.weight")):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())  # the tied matrix is counted once

    def predictor_params(self) -> int:
        return sum(p.numel() for b in self.blocks for p in getattr(b, "pred", nn.Module()).parameters())

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


def summarise(runs: list[dict]) -> tuple[dict, list[str]]:
    """Per row: mean +- std (over seeds) of validation loss and perplexity, the change relative to
    `linear` in percent, and the verdict lines. A change counts as "within seed noise" when it is
    smaller than two standard errors of the difference of the two means."""
    rows = {}
    for r in dict.fromkeys(run["row"] for run in runs):
        loss = np.array([run["val_loss"] for run in runs if run["row"] == r])
        ppl = np.exp(loss)
        first = next(run for run in runs if run["row"] == r)
        rows[r] = dict(seeds=len(loss), params=first["params"], predictor_params=first["predictor_params"],
                       val_loss=float(loss.mean()), val_loss_std=float(loss.std(ddof=1)) if len(loss) > 1 else 0.0,
                       val_ppl=float(ppl.mean()), val_ppl_std=float(ppl.std(ddof=1)) if len(ppl) > 1 else 0.0,
                       seconds=float(np.mean([run["seconds"] for run in runs if run["row"] == r])))
    verdict = []
    if "linear" in rows:
        base = rows["linear"]
        for r, row in rows.items():
            row["d_loss_pct"] = 100 * (row["val_loss"] / base["val_loss"] - 1)
            row["d_ppl_pct"] = 100 * (row["val_ppl"] / base["val_ppl"] - 1)
            se = math.sqrt(row["val_loss_std"] ** 2 / row["seeds"] + base["val_loss_std"] ** 2 / base["seeds"])
            noisy = min(row["seeds"], base["seeds"]) > 1  # one seed gives no noise estimate
            row["within_noise"] = bool(abs(row["val_loss"] - base["val_loss"]) < 2 * se) if noisy else None
        words = {"attn-current": "attention over the current traces (t-1)",
                 "attn-history": "attention over the traces of every earlier position",
                 "transformer": "the same-budget Transformer"}
        claim = {"attn-current": "paper: identical", "attn-history": "no paper number",
                 "transformer": "paper: ~8x perplexity gap at 130M"}
        for r in ("attn-current", "attn-history", "transformer"):
            if r in rows:
                row = rows[r]
                noise = {True: "within seed noise", False: "beyond seed noise", None: "1 seed, no noise estimate"}[
                    row["within_noise"]]
                verdict.append(f"{words[r]} changes validation loss by {row['d_loss_pct']:+.2f}% "
                               f"(perplexity {row['d_ppl_pct']:+.1f}%, {noise}; {claim[r]})")
        if "transformer" in rows and rows["transformer"]["val_loss"] < base["val_loss"]:
            gap = base["val_loss"] - rows["transformer"]["val_loss"]
            for r in ("attn-current", "attn-history"):
                if r in rows:
                    closed = (base["val_loss"] - rows[r]["val_loss"]) / gap
                    verdict.append(f"{words[r]} closes {100 * closed:.0f}% of the {gap:.3f}-nat gap "
                                   f"from linear to the Transformer")
    return rows, verdict


def format_table(rows: dict) -> str:
    lines = ["| row | params | predictor params | val loss | val ppl | loss vs linear | ppl vs linear |",
             "|---|---|---|---|---|---|---|"]
    for r, row in rows.items():
        d = (f"{row['d_loss_pct']:+.2f}% | {row['d_ppl_pct']:+.1f}%") if "d_loss_pct" in row else "- | -"
        lines.append(f"| {r} | {row['params'] / 1e6:.3f}M | {row['predictor_params'] / 1e3:.0f}k | "
                     f"{row['val_loss']:.4f} +- {row['val_loss_std']:.4f} | "
                     f"{row['val_ppl']:.1f} +- {row['val_ppl_std']:.1f} | {d} |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- training loop


def train_run(args, row: str, seed: int, data: dict, device: str, bar: tqdm, stop: StopOnSignal) -> dict:
    """One row, one seed: ema_lm.py's training loop (same batches for every row with the same seed,
    the same schedule, the same validation windows). Checkpoints every checkpoint_interval steps and on
    Ctrl-C or SIGTERM; with --resume a finished run is read back and an unfinished one continues exactly."""
    out_dir = Path(args.out_dir) / f"{row}-s{seed}"
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path, final_path = out_dir / "ckpt.pt", out_dir / "final.json"
    if args.resume and final_path.exists():
        bar.update(args.max_steps)
        return read_json(final_path, f"delete it to train {row} seed {seed} again")
    compile_model = args.compile if args.compile is not None else device == "cuda"
    use_bf16 = device == "cuda" and torch.cuda.is_bf16_supported()
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if use_bf16 else nullcontext()
    torch.manual_seed(seed)
    cfg = model_config(args, row)
    model = LanguageModel(cfg).to(device)
    optimizer = make_optimizer(model, args.lr, args.weight_decay)
    gen = torch.Generator().manual_seed(seed)
    step, tokens_seen, seconds = 0, 0, 0.0
    steady = []  # step times after this process's first step, which pays for torch.compile
    if args.resume and ckpt_path.exists():
        ckpt = load_checkpoint(ckpt_path, cfg)
        restore_training_state(ckpt, model, optimizer, gen)
        step, tokens_seen, seconds = ckpt["step"], ckpt["tokens_seen"], ckpt["seconds"]
        bar.update(step)
    cut_metrics(out_dir / "metrics.jsonl", step)  # the steps after the checkpoint are trained and logged again
    train_model = compiled_or_eager(model, args.micro_batch, device, autocast) if compile_model else model
    accum = args.batch_tokens // (args.micro_batch * cfg.block_size)
    info = dict(config=portable(vars(args)), row=row, seed=seed, model_config=asdict(cfg), params=model.num_params(),
                **run_info(device))
    write_json_atomic(out_dir / "config.json", info)
    log = open(out_dir / "metrics.jsonl", "a")
    bar.set_description(f"{row} s{seed}")

    while step < args.max_steps:
        t0 = time.perf_counter()
        lr = lr_at(step, args.lr, args.warmup_steps, args.max_steps, args.min_lr_ratio)
        for g in optimizer.param_groups:
            g["lr"] = lr
        loss_sum = 0.0
        for _ in range(accum):
            x, y = get_batch(data["train"], args.micro_batch, cfg.block_size, gen, device)
            with autocast:
                _, loss = train_model(x, y)
            (loss / accum).backward()
            loss_sum += loss.item() / accum
        if not math.isfinite(loss_sum):
            raise RuntimeError(f"{row} seed {seed}: non-finite training loss {loss_sum} at step {step}; "
                               f"{ckpt_path} holds the last good checkpoint. Lower --lr or check the data.")
        if args.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        steady.append(dt)
        step, tokens_seen, seconds = step + 1, tokens_seen + args.batch_tokens, seconds + dt
        record = dict(step=step, train_loss=loss_sum, lr=lr, tokens=tokens_seen, tok_per_s=args.batch_tokens / dt)
        post = dict(loss=f"{loss_sum:.3f}", lr=f"{lr:.1e}", tok_s=f"{args.batch_tokens / dt:,.0f}")
        if step % args.eval_interval == 0 and step < args.max_steps:
            record["val_loss"] = evaluate(model, data["val"], cfg.block_size, args.micro_batch, device, autocast)
            post["val"] = f"{record['val_loss']:.3f}"
        signum = stop.signum  # read once, so that a checkpoint is written whenever we stop
        if (step % args.checkpoint_interval == 0 and step < args.max_steps) or signum:
            save_checkpoint(ckpt_path, training_state(model, optimizer, gen, step=step, tokens_seen=tokens_seen,
                                                      seconds=seconds, model_config=asdict(cfg), args=vars(args)),
                            probe=lambda: evaluate(model, data["val"][:args.micro_batch * cfg.block_size + 1],
                                                   cfg.block_size, args.micro_batch, device, autocast))
        bar.set_postfix(post)
        bar.update()
        log.write(json.dumps(record) + "\n")
        log.flush()
        if signum:
            log.close()
            bar.close()
            stop.exit(f"stopped {row} seed {seed} after step {step} of {args.max_steps}; {ckpt_path} holds it and "
                      "finished runs are kept; add --resume to go on", signum)
    log.close()
    val_loss = evaluate(model, data["val"], cfg.block_size, args.micro_batch, device, autocast)
    result = dict(row=row, seed=seed, val_loss=val_loss, val_ppl=math.exp(val_loss), params=model.num_params(),
                  predictor_params=model.predictor_params(), tokens_seen=tokens_seen, seconds=seconds,
                  tok_per_s=args.batch_tokens * len(steady[1:]) / max(sum(steady[1:]), 1e-9), step=step,
                  device=device)
    write_json_atomic(final_path, result)
    ckpt_path.unlink(missing_ok=True)  # final.json marks the run done; the metrics are the product here
    bar.write(f"{row:>12} seed {seed}: val loss {val_loss:.4f}, ppl {math.exp(val_loss):.1f}, "
              f"{result['tok_per_s']:,.0f} tok/s, {seconds:.0f} s")
    return result


# ----------------------------------------------------------------------------- CLI


PRESETS = {
    # 2-core CPU, evaluated once at the end (timing: the docstring). 200 steps of 1024 tokens (~0.2
    # epoch of PTB) is far from converged; rows are compared at an equal budget, not with the paper's numbers.
    # Same model sizes and learning rate as ema_lm.py's "small" preset, a third of its training tokens.
    "cpu": dict(n_layer=4, d_model=128, n_head=4, block_size=128, max_steps=200, batch_tokens=1024,
                micro_batch=8, lr=3e-3, warmup_steps=20, eval_tokens=32768, eval_interval=200, checkpoint_interval=50),
    # One GPU (sized for an H200; not run): 12 blocks of width 512, context 1024, 262k tokens per step, 1000
    # steps = 262M tokens per run.
    "gpu": dict(n_layer=12, d_model=512, n_head=8, block_size=1024, max_steps=1000, batch_tokens=262144,
                micro_batch=16, lr=1e-3, warmup_steps=100, eval_tokens=4194304, eval_interval=250,
                checkpoint_interval=250),
}
DATASETS = ("ptb", "c4", "fineweb", "wikitext103")
EVAL_SPLIT = {"ptb": "val", "c4": "val", "fineweb": "val", "wikitext103": "test"}


def get_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False,
                                formatter_class=help_formatter(PRESETS))
    p.add_argument("--preset", choices=sorted(PRESETS), default="cpu", help="model size and training budget")
    p.add_argument("--predictors", default=",".join(ROWS), help=f"comma-separated rows to run, from {', '.join(ROWS)}")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds; every row runs every seed")
    p.add_argument("--n-layer", type=int, default=None, help="blocks (overrides the preset)")
    p.add_argument("--d-model", type=int, default=None, help="model width D (overrides the preset)")
    p.add_argument("--n-head", type=int, default=None, help="heads of the transformer control (overrides the preset)")
    p.add_argument("--n-pred-head", type=int, default=4, help="heads of the trace attention predictors")
    p.add_argument("--block-size", type=int, default=None, help="training and validation context length T")
    p.add_argument("--dataset", choices=DATASETS, default="ptb", help="training corpus (data/<name>/train.bin)")
    p.add_argument("--max-steps", type=int, default=None, help="optimiser steps per run (overrides the preset)")
    p.add_argument("--batch-tokens", type=int, default=None, help="tokens per optimiser step")
    p.add_argument("--micro-batch", type=int, default=None, help="sequences per forward pass")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate, the same for every row")
    p.add_argument("--min-lr-ratio", type=float, default=0.1, help="final learning rate as a fraction of --lr")
    p.add_argument("--warmup-steps", type=int, default=None, help="linear warm-up steps (overrides the preset)")
    p.add_argument("--weight-decay", type=float, default=0.1, help="AdamW weight decay on matrices")
    p.add_argument("--grad-clip", type=float, default=1.0, help="clip the gradient norm to this (0 = off)")
    p.add_argument("--eval-interval", type=int, default=None, help="evaluate every this many steps")
    p.add_argument("--checkpoint-interval", type=int, default=None, help="checkpoint every this many steps")
    p.add_argument("--eval-tokens", type=int, default=None, help="tokens in the fixed validation set")
    p.add_argument("--device", choices=["auto", "cuda", "mps", "cpu"], default="auto", help="auto: cuda, mps, then cpu")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="torch.compile the model (default: on for cuda only)")
    p.add_argument("--out-dir", default=None, help="folder for results.json and one sub-folder per run "
                   "(default: runs/ablation-<dataset>-<preset>)")
    fresh_or_not = p.add_mutually_exclusive_group()
    fresh_or_not.add_argument("--resume", action="store_true", help="reuse finished runs in --out-dir and continue "
                              "unfinished ones from their checkpoint")
    fresh_or_not.add_argument("--overwrite", action="store_true", help="start afresh in an --out-dir that holds runs")
    p.add_argument("--allow-changed", action="store_true", help="let --resume reuse runs made with other settings")
    args = p.parse_args(argv)
    for k, v in PRESETS[args.preset].items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    args.predictors = [r for r in args.predictors.split(",") if r]
    for r in args.predictors:
        if r not in ROWS:
            p.error(f"--predictors: unknown row {r!r}; choose from {', '.join(ROWS)}")
    try:
        args.seeds = [int(s) for s in args.seeds.split(",") if s]
    except ValueError:
        p.error(f"--seeds must be comma-separated integers, got {args.seeds!r}")
    check_ranges(p, args, non_negative=("seeds",), nonempty=("predictors",))
    check_ranges(p, args, positive=("n_layer", "d_model", "n_head", "n_pred_head", "block_size", "max_steps",
                                    "batch_tokens", "micro_batch", "lr", "eval_interval", "checkpoint_interval",
                                    "eval_tokens"),
                 non_negative=("warmup_steps", "weight_decay", "grad_clip"), fraction=("min_lr_ratio",))
    if args.eval_tokens < args.block_size:
        p.error(f"--eval-tokens {args.eval_tokens}: less than one validation window of --block-size {args.block_size}")
    if args.d_model % args.n_pred_head or args.d_model % args.n_head:
        p.error(f"--d-model {args.d_model} must be divisible by --n-pred-head {args.n_pred_head} "
                f"and --n-head {args.n_head}")
    if args.batch_tokens % (args.micro_batch * args.block_size):
        p.error(f"--batch-tokens {args.batch_tokens} must be a multiple of micro-batch x block-size "
                f"= {args.micro_batch * args.block_size}")
    if args.out_dir is None:
        args.out_dir = str(ROOT / "runs" / f"ablation-{args.dataset}-{args.preset}")
    return args


def model_config(args, row: str) -> ModelConfig:
    """The row's model: every SPEN row is ema_lm.py's SPEN (sparse FFN, H = 3D) with its own predictor;
    the control is ema_lm.py --mixer attention (dense FFN, H = 4D)."""
    control = row == "transformer"
    return ModelConfig(n_layer=args.n_layer, d_model=args.d_model, d_ffn=(4 if control else 3) * args.d_model,
                       n_head=args.n_head, block_size=args.block_size, mixer="attention" if control else "ema",
                       ffn="dense" if control else "sparse", predictor="linear" if control else row,
                       n_pred_head=args.n_pred_head)


OUT_OF_MEMORY = ("lower --micro-batch (--batch-tokens, the tokens per step, stays: more micro-batches are "
                 "accumulated), or --block-size or the model's size")

# ----------------------------------------------------------------------------- main


def main(argv=None) -> dict:
    args = get_args(argv)
    device = pick_device(args.device)
    check_fits(8 * args.micro_batch * args.block_size * ModelConfig.vocab_size, device, f"--micro-batch "
               f"{args.micro_batch} x --block-size {args.block_size}: the logits and their gradient alone",
               OUT_OF_MEMORY)
    out_dir = Path(args.out_dir)
    data = dict(train=get_tokens(args.dataset, "train"),
                val=val_windows(get_tokens(args.dataset, EVAL_SPLIT[args.dataset]), args.block_size, args.eval_tokens))
    plan = [(row, seed) for seed in args.seeds for row in args.predictors]  # seed-major: every row early
    for row, seed in plan if args.resume else ():  # reused runs must be this run's; refuse before writing anything
        run_dir = out_dir / f"{row}-s{seed}"
        if (run_dir / "config.json").exists():
            saved = read_json(run_dir / "config.json", f"delete {run_dir} to train that run again")
            check_same_settings(saved.get("config", {}), vars(args), ignore=("predictors", "seeds"),
                                allow=args.allow_changed, source=f"{row}-s{seed}/config.json")
        if (run_dir / "final.json").exists():
            read_json(run_dir / "final.json", f"delete it to train {row} seed {seed} again")
        elif (run_dir / "ckpt.pt").exists():
            load_checkpoint(run_dir / "ckpt.pt", model_config(args, row))
    t0 = time.time()
    # A fresh ablation must not replace the results or runs of an earlier one (--resume reuses them).
    finished_work = ("results.json", "*/final.json", "*/ckpt.pt", "*/metrics.jsonl")
    with RunFolder(out_dir, args.resume, args.overwrite, finished_work), StopOnSignal() as stop, \
            tqdm(total=len(plan) * args.max_steps, desc="ablation", dynamic_ncols=True) as bar:
        runs = []
        for row, seed in plan:
            if stop.signum:  # it came during the previous run's final evaluation
                bar.close()
                stop.exit(f"stopped before {row} seed {seed}; the {len(runs)} finished runs are kept; add --resume "
                          "to go on")
            runs.append(train_run(args, row, seed, data, device, bar, stop))
        stop.at_once(lambda: f"stopped after all {len(runs)} runs had finished (kept); add --resume to write "
                             "results.json")
        bar.close()
        rows, verdict = summarise(runs)
        n_val = (len(data["val"]) - 1) // args.block_size * args.block_size
        result = dict(rows=rows, table=format_table(rows), verdict=verdict, runs=runs,
                      wall_seconds=time.time() - t0, val_tokens=n_val,
                      train_tokens_per_run=args.max_steps * args.batch_tokens, config=portable(vars(args)),
                      **run_info(device))
        write_json_atomic(out_dir / "results.json", result)
    print(f"\n{args.dataset}, {args.max_steps} steps x {args.batch_tokens} tokens per run, seeds {args.seeds}, "
          f"validation {n_val:,} tokens, {device}, wall {result['wall_seconds'] / 60:.1f} min")
    print(format_table(rows))
    print("\n".join(verdict))
    return result


if __name__ == "__main__":
    command_line(main, out_of_memory=OUT_OF_MEMORY)
