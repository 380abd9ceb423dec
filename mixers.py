"""mixers.py: the kinds of context that ema_lm.py compares with the paper's fixed EMA (exponential moving average)
traces.

The paper (arXiv 2604.08556) claims that fixed-decay traces lose *which* token came earlier and that only
learned, input-dependent selection can recover it. That sentence runs two things together, which the
recall literature separates (Zoology, Based, gated linear attention): a decay that is *fixed* rather than a
function of the input, and a *small state without content addressing* (S x D numbers, read without a
query). The mixers here vary one factor at a time:

    mixer         state per block           decay                       read
    ema           S x D traces (ema_lm.py)  three constants (paper)     all traces, linearly
    ema-learned   S x D traces              learned, constant in time   all traces, linearly
    selective     S x D traces              a function of the token     all traces, linearly
    linattn       H x d_k x d_v matrix      learned, constant in time   by a query (content-addressed)
    gla           H x d_k x d_v matrix      a function of the token     by a query (content-addressed)
    attention     every key and value       none (ema_lm.py, GPT-2)     by a query, softmax

The three trace mixers drop into ema_lm.py's SPEN block (the paper's EMA block; only the traces change); gla and
linattn replace softmax attention in GPT-2's block. Each fast path (a chunked form in plain PyTorch that
torch.compile takes) sits next to its one-step-at-a-time reference, and tests/test_mixers.py checks values and
gradients against it.

Why a module and not ema_lm.py: the paper's model reads first and alone in ema_lm.py; these are the
comparisons, shared by ema_lm.py (language modelling) and content_recall.py (associative recall), so
both experiments measure the very same code.

Glossary: B batch, T time, D width, S traces (3), H heads, d_k / d_v key / value width per head, C chunk
length, N chunks. a = alpha (weight of the new input in a trace), g = decay of a matrix state.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

S_TRACES = 3  # three traces per channel, as the paper's fast / medium / slow EMAs
ALPHA_MAX = 0.99  # cap on alpha, so every per-step decay is >= 0.01: the chunked scans below rely on it
GATE_TEMPERATURE = 16  # gla: log g = logsigmoid(z) / 16 keeps decays near 1 while z moves freely (Yang et al.)
GATE_RANK = 16  # gla: the decay gate is a rank-16 map of the input (Yang et al.)

# ----------------------------------------------------------------------------- vector state: learned, selective traces
# The paper's trace update with alpha free to vary per trace and channel (ema-learned) and, in addition, per
# position as a function of the current token (selective). alpha = ALPHA_MAX * sigmoid(z).


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
    """The same traces as gated_scan_reference, in chunks with a decay per position.

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
    """(S, D) logits z of alphas log-spaced from 0.9 to 0.001 over the S x D channels: trace 0 takes the fastest
    third (0.9 to 0.09), trace 2 the slowest (0.01 to 0.001). The range holds the paper's three constants."""
    a = torch.logspace(math.log10(0.9), math.log10(0.001), S * D).view(S, D)
    return torch.logit(a / ALPHA_MAX)


class LearnedTraces(nn.Module):
    """ema-learned: S traces per channel, each channel with its own learned alpha (S x D decays instead of
    3), constant in time and independent of the input: the S4D / RetNet family of fixed learned filters."""

    def __init__(self, d_model: int):
        super().__init__()
        self.S, self.D = S_TRACES, d_model
        # Stored flat (1-D) so that the optimiser, which decays only matrices, does not pull alpha to 0.5.
        self.alpha_logit = nn.Parameter(initial_alpha_logits(self.S, self.D).flatten())

    def forward(self, u: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, T, S, D)
        return gated_scan(u, self.alpha_logit.view(1, 1, self.S, self.D))


class SelectiveTraces(nn.Module):
    """selective: alpha_t = ALPHA_MAX sigmoid(W u_t + b), per trace and channel, a function of the current token. It is
    at once the input gate (how much of u_t is written) and one minus the decay (how much is kept), as in the
    EMA itself, HGRN and minGRU (Mamba ties them through its step size). alpha_t near 0 skips a token and
    keeps the memory; near 1 overwrites it. A minimal gated linear recurrence without state expansion."""

    def __init__(self, d_model: int):
        super().__init__()
        self.S, self.D = S_TRACES, d_model
        self.gate = nn.Linear(self.D, self.S * self.D)  # the model's init draws the weight with std 0.02
        with torch.no_grad():  # start where ema-learned starts; the weights make it depend on the token
            self.gate.bias.copy_(initial_alpha_logits(self.S, self.D).flatten())

    def forward(self, u: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, T, S, D)
        B, T, D = u.shape
        return gated_scan(u, self.gate(u).view(B, T, self.S, D))


# ----------------------------------------------------------------------------- matrix state: gated linear attention
# Per head, a d_k x d_v state written with the outer product of a key and a value and read by a query
# (Katharopoulos et al. 2020; with a per-channel decay, gated linear attention or GLA, Yang et al. 2023):
#     S_t = diag(g_t) S_{t-1} + k_t v_t^T,     o_t = q_t^T S_t,     S_{-1} = 0
# A key can be found again by a query that resembles it, which a trace cannot offer. g_t in (0, 1]^{d_k}.


def linear_attention_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, log_g: torch.Tensor
                               ) -> torch.Tensor:
    """The definition, one step at a time, in float32. q, k, log_g: (B, H, T, d_k), v: (B, H, T, d_v); log_g
    may also be (1, H, 1, d_k) for decays constant in time. Decays below 1 - ALPHA_MAX are raised to it.
    Returns o: (B, H, T, d_v)."""
    B, H, T, dk = q.shape
    g = log_g.float().clamp(min=math.log(1 - ALPHA_MAX)).exp().expand(B, H, T, dk)
    state = q.new_zeros(B, H, dk, v.shape[-1], dtype=torch.float32)  # (B, H, d_k, d_v)
    out = []
    for t in range(T):
        state = g[:, :, t, :, None] * state + k[:, :, t, :, None].float() * v[:, :, t, None, :].float()
        out.append(torch.einsum("bhk,bhkv->bhv", q[:, :, t].float(), state))
    return torch.stack(out, 2).to(q.dtype)  # (B, H, T, d_v)


def linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, log_g: torch.Tensor,
                     chunk_size: int = 16) -> torch.Tensor:
    """The same outputs as linear_attention_reference, chunked as in GLA's paper (Yang et al. 2023).

    With b_i = the cumulative sum of log g over the chunk up to and including i, and S0 the state before it:
        o_i = (q_i * exp(b_i))^T S0  +  sum_{j<=i} [(q_i * exp(b_i)) . (k_j * exp(-b_j))] v_j
        S_next = diag(exp(b_C)) S0 + sum_j (k_j * exp(b_C - b_j)) v_j^T
    i.e. one masked (C x C) attention-like product inside each chunk and a loop of T/C steps across chunks.
    exp(-b_j) stays finite because every decay is raised to >= 1 - ALPHA_MAX = 0.01 per step, as in the
    reference: over 16 positions -b_j <= 74 < 88 (float32). Runs in float32 under autocast."""
    if chunk_size * -math.log(1 - ALPHA_MAX) >= 88:
        raise ValueError(f"chunk_size {chunk_size} could overflow float32 in linear_attention; use 16 or fewer")
    with torch.autocast(q.device.type, enabled=False):
        B, H, T, dk = q.shape
        dv, dtype = v.shape[-1], v.dtype
        C = chunk_size
        N = -(-T // C)
        pad = (0, 0, 0, N * C - T)  # padded positions come after T: no earlier output sees them
        q, k, v = (F.pad(t.float(), pad).view(B, H, N, C, -1) for t in (q, k, v))  # (B, H, N, C, d)
        log_g = log_g.float().clamp(min=math.log(1 - ALPHA_MAX)).expand(B, H, T, dk)
        b = F.pad(log_g, pad).view(B, H, N, C, dk).cumsum(3)  # (B, H, N, C, d_k)
        q_in, k_in = q * b.exp(), k * (-b).exp()
        causal = torch.ones(C, C, dtype=torch.bool, device=q.device).tril()
        scores = (q_in @ k_in.transpose(-1, -2)).masked_fill(~causal, 0)  # (B, H, N, C, C)
        o = scores @ v  # (B, H, N, C, d_v): the chunk's own tokens
        b_last = b[:, :, :, -1:]  # (B, H, N, 1, d_k)
        writes = (k * (b_last - b).exp()).transpose(-1, -2) @ v  # (B, H, N, d_k, d_v): each chunk's own writes
        state = q.new_zeros(B, H, dk, dv)
        carried = []
        for n in range(N):
            carried.append(q_in[:, :, n] @ state)  # (B, H, C, d_v): what earlier chunks left
            state = b_last[:, :, n].transpose(-1, -2).exp() * state + writes[:, :, n]
        o = o + torch.stack(carried, 2)
        return o.view(B, H, N * C, dv)[:, :, :T].to(dtype)  # (B, H, T, d_v)


def initial_decay_logits(n: int) -> torch.Tensor:
    """n logits z whose decays g = sigmoid(z)^(1/16) are log-spaced in 1 - g from 0.9 to 0.001: memories of about
    1 to 1000 tokens, the same spread of timescales as ema-learned's initial alphas (initial_alpha_logits), so
    every learned-decay mixer starts from the same timescales. Channels near 1 keep a key until its query
    comes; fast ones isolate the last few tokens, which most next-token predictions need (docs/reconstruction.md
    tells why the range was widened from a first version's 16-1024 tokens)."""
    g = 1 - torch.logspace(math.log10(0.9), math.log10(0.001), n)
    return torch.logit(g ** GATE_TEMPERATURE)


class LinearAttention(nn.Module):
    """gla / linattn: the token mixer of GPT-2's block with softmax attention replaced by a matrix state.

    H heads, d_k = D / (2H) and d_v = D / H (GLA's halved key width), so the state is D^2 / (2H) numbers per
    block. q is scaled by d_k^-1/2; each head's output is normalised (no parameters) before the output map,
    as GLA does, because a sum over the whole past has no softmax to bound it. Decay per head and key
    channel, log g = logsigmoid(z) / 16:
        gla      z_t = W_2 W_1 u_t + b  (rank 16): a function of the token (Yang et al. 2023)
        linattn  z = b, a learned constant: the same state, reads and initialisation, no input in the decay
    GLA's output gate is left out of both: it mixes no positions, so it is not part of the question."""

    def __init__(self, d_model: int, n_head: int, input_dependent: bool):
        super().__init__()
        if d_model % (2 * n_head):
            raise ValueError(f"linear attention needs d_model divisible by 2 x n_head, got {d_model} and {n_head}")
        self.H, self.dk, self.dv = n_head, d_model // (2 * n_head), d_model // n_head
        self.q = nn.Linear(d_model, d_model // 2, bias=False)
        self.k = nn.Linear(d_model, d_model // 2, bias=False)
        self.v = nn.Linear(d_model, d_model, bias=False)
        self.proj = nn.Linear(d_model, d_model, bias=False)
        self.input_dependent = input_dependent
        bias = initial_decay_logits(self.dk).repeat(n_head)  # (H * d_k,): every head spans the same memories
        if input_dependent:
            self.gate = nn.Sequential(nn.Linear(d_model, GATE_RANK, bias=False), nn.Linear(GATE_RANK, d_model // 2))
            with torch.no_grad():
                self.gate[1].bias.copy_(bias)
        else:
            self.decay_logit = nn.Parameter(bias)  # 1-D, so it gets no weight decay, like ema-learned's alphas

    def heads(self, t: torch.Tensor) -> torch.Tensor:  # (B', T', H * d) -> (B', H, T', d)
        return t.view(t.shape[0], t.shape[1], self.H, -1).transpose(1, 2)

    def log_decay(self, u: torch.Tensor) -> torch.Tensor:
        """log g per head and key channel: (B, H, T, d_k) for gla, (1, H, 1, d_k) for linattn (no u in it)."""
        z = self.gate(u) if self.input_dependent else self.decay_logit.view(1, 1, -1)  # (B, T, H d_k) or (1, 1, H d_k)
        return self.heads(F.logsigmoid(z.float()) / GATE_TEMPERATURE)

    def forward(self, u: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, T, D)
        B, T, D = u.shape
        q, k, v = self.heads(self.q(u)) * self.dk ** -0.5, self.heads(self.k(u)), self.heads(self.v(u))
        o = linear_attention(q, k, v, self.log_decay(u))  # (B, H, T, d_v)
        o = F.layer_norm(o.float(), (self.dv,)).to(u.dtype)  # per-head normalisation
        return self.proj(o.transpose(1, 2).reshape(B, T, D))


# ----------------------------------------------------------------------------- short convolution


class ShortConv(nn.Module):
    """Causal depthwise convolution over the last `kernel` positions, put in front of a mixer (--conv-kernel;
    Zoology gives every mixer one): any mixer then sees the previous token directly, so a value arrives already
    bound to its key."""

    def __init__(self, d_model: int, kernel: int):
        super().__init__()
        self.conv = nn.Conv1d(d_model, d_model, kernel, groups=d_model, padding=kernel - 1)

    def forward(self, u: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, T, D)
        return self.conv(u.transpose(1, 2))[..., :u.shape[1]].transpose(1, 2)


# ----------------------------------------------------------------------------- the registry ema_lm.py builds from
# Vector states map (B, T, D) to S traces per channel, (B, T, S, D), and carry S as an attribute; they sit in the
# SPEN block (or, read by one linear map, in GPT-2's). Matrix states map (B, T, D) to (B, T, D) in GPT-2's block.
TRACE_MIXERS = {"ema-learned": LearnedTraces, "selective": SelectiveTraces}  # (d_model) -> module
MATRIX_MIXERS = {"linattn": lambda d_model, n_head: LinearAttention(d_model, n_head, input_dependent=False),
                 "gla": lambda d_model, n_head: LinearAttention(d_model, n_head, input_dependent=True)}


def state_floats(mixer: str, d_model: int, n_head: int, T: int) -> int:
    """Numbers the mixer keeps about the past, per block, after T tokens (Zoology's "state size")."""
    if mixer in ("ema", "ema-learned", "selective"):
        return S_TRACES * d_model
    if mixer in ("gla", "linattn"):
        return d_model * d_model // (2 * n_head)
    if mixer == "attention":
        return 2 * T * d_model  # the key-value cache
    raise ValueError(f"unknown mixer {mixer!r}")
