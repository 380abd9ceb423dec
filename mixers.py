"""mixers.py: the kinds of context that ema_lm.py compares with the paper's fixed EMA (exponential moving average)
traces.

The paper (arXiv 2604.08556) claims that fixed-decay traces lose *which* token came earlier and that only
learned, input-dependent selection can recover it. That sentence runs two things together, which the
recall literature separates (Zoology, Based, gated linear attention): a decay that is *fixed* rather than a
function of the input, and a *small state without content addressing* (S x D numbers, read without a
query). The mixers here vary one factor at a time:

    mixer          state per block            coefficients                   read
    ema            3 x D traces (ema_lm.py)   three constants (paper)        all traces, linearly
    ema-long       3 x D traces               fixed, the long spread         all traces, linearly
    ema-learned    3 x D traces               learned, constant in time      all traces, linearly
    selective      3 x D traces               a function of the token        all traces, linearly
    cumavg         D                          fixed, 1/t (uniform average)   linearly
    ema-wide       32 x D traces              fixed, the long spread         all traces, linearly
    legs           32 x D coefficients        fixed, HiPPO-LegS              all coefficients, linearly
    longconv       T x D (the whole input)    a learned filter, constant     the filter's output, linearly
    linattn-paper  H x d_k x d_v matrix       fixed, 0.5 / 0.9 / 0.98        by a query (content-addressed)
    linattn-long   H x d_k x d_v matrix       fixed, the long spread         by a query
    linattn-one    H x d_k x d_v matrix       fixed, 0.995 for every key     by a query
    linattn        H x d_k x d_v matrix       learned, constant in time      by a query
    gla            H x d_k x d_v matrix       a function of the token        by a query
    attention      every key and value        none (ema_lm.py, GPT-2)        by a query, softmax

The vector states (traces) drop into ema_lm.py's SPEN block (the paper's EMA block; only the traces change), or
with --block gpt2 into GPT-2's block, read by one linear map; the matrix states replace softmax attention in
GPT-2's block. "The long spread" is the learned mixers' starting point (memories of about 1 to 1000 tokens,
initial_alpha_logits / initial_decay_logits) held fixed. content_recall.py's factorial crosses the coefficients
(fixed short, fixed long, learned constant, input-dependent) with the state (3D, D, 32D, T x D, matrix).
Each fast path (a chunked, FFT or kernel form in plain PyTorch that torch.compile takes) sits next to its
one-step-at-a-time reference, and tests/test_mixers.py checks values and gradients against it.

Why a module and not ema_lm.py: the paper's model reads first and alone in ema_lm.py; these are the
comparisons, shared by ema_lm.py (language modelling) and content_recall.py (associative recall), so
both experiments measure the very same code.

Glossary: B batch, T time, D width, S traces (3, or N), H heads, d_k / d_v key / value width per head, C chunk
length, N chunks (in the scans) or coefficients per channel (ema-wide, legs). a = alpha (weight of the new input
in a trace), g = decay of a matrix state. HiPPO: high-order polynomial projection operators (Gu et al. 2020);
LegS: its scaled-Legendre measure, uniform over the whole past. FFT: fast Fourier transform.
"""
import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

S_TRACES = 3  # three traces per channel, as the paper's fast / medium / slow EMAs
ALPHA_MAX = 0.99  # cap on alpha, so every per-step decay is >= 0.01: the chunked scans below rely on it
GATE_TEMPERATURE = 16  # gla: log g = logsigmoid(z) / 16 keeps decays near 1 while z moves freely (Yang et al.)
GATE_RANK = 16  # gla: the decay gate is a rank-16 map of the input (Yang et al.)
N_WIDE = 32  # ema-wide and legs: N x D = linattn's d_k x D (= D^2 / 2H) whenever heads are 64 wide, as in GPT-2
LONGCONV_MAX = 1024  # longconv: filter taps stored, the paper's and GPT-2's context; longer contexts are refused

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


# ----------------------------------------------------------------------------- vector states with fixed coefficients
# The referee's objection to the paper: all its evidence is EMA. These vector states keep coefficients that do
# not depend on the input, vary the timescale (ema-long), the size (ema-wide, legs) and the kind of filter
# (uniform average, polynomial projection, a free filter over the whole context), and are read, like the
# paper's traces, by fixed linear maps: no query.


def long_alphas(n: int) -> torch.Tensor:
    """n alphas log-spaced from 0.9 to 0.001: the learned mixers' starting timescales (memories of about 1 to 1000
    tokens), i.e. 1 - g for linattn's initial decays g (initial_decay_logits)."""
    return torch.logspace(math.log10(0.9), math.log10(0.001), n)


def apply_causal_kernel(K: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """c_t = sum_{j <= t} K[t, j] u_j for a fixed kernel K stored as (T N, T) (row t N + n, column j), the same for
    every channel: one (T N x T) by (T x D) product per sequence, in float32. (B, T, D) -> (B, T, N, D)."""
    B, T, D = u.shape
    with torch.autocast(u.device.type, enabled=False):
        return (K @ u.float()).view(B, T, K.shape[0] // T, D).to(u.dtype)


def ema_kernel(alphas: torch.Tensor, T: int) -> torch.Tensor:
    """The traces h_t^s = sum_{j <= t} a_s (1 - a_s)^(t - j) u_j as a kernel (T S, T) for apply_causal_kernel."""
    a = alphas.double()[None, None, :]  # (1, 1, S)
    lag = (torch.arange(T)[:, None] - torch.arange(T)[None, :]).double()[..., None]  # (T, T, 1): t - j
    K = torch.where(lag >= 0, a * (1 - a) ** lag.clamp(min=0), torch.zeros(()))  # (T, T, S)
    return K.permute(0, 2, 1).reshape(T * len(alphas), T).float()


class LongTraces(nn.Module):
    """ema-long (S = 3) and ema-wide (S = N_WIDE): S traces per channel with alphas *fixed* at the long spread, not
    learned and independent of the input.

    ema-long is ema-learned's starting point frozen (alphas 0.9 to 0.001 over the 3 x D channels): the paper's
    mixer with its timescale changed and nothing else, 3D floats; fast path gated_scan. ema-wide gives every
    channel the N_WIDE = 32 alphas of linattn's initial key decays (trace s of every channel decays like key
    channel s of linattn-long), so its state, 32 x D floats, equals linattn's d_k x D at head width 64 and differs
    from linattn-long in one thing: the outer product with a key, and the read by a query, are gone. Its alphas are
    the same for every channel, so its fast path is one fixed kernel for all of them (ema_kernel, built once per
    length; 3x faster than the chunked scan at S = 32). Reference for both: gated_scan_reference."""

    def __init__(self, d_model: int, S: int):
        super().__init__()
        self.S, self.D = S, d_model
        a = long_alphas(S * d_model).view(S, d_model) if S == S_TRACES else long_alphas(S)[:, None].expand(S, d_model)
        self.register_buffer("alpha_logit", torch.logit(a / ALPHA_MAX).contiguous(), persistent=False)  # constants
        self._kernels = {}  # (T, device) -> ema_kernel, for the shared alphas of ema-wide

    def forward(self, u: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, T, S, D)
        if self.S == S_TRACES:
            return gated_scan(u, self.alpha_logit.view(1, 1, self.S, self.D))
        T = u.shape[1]
        if (T, u.device) not in self._kernels:
            alphas = ALPHA_MAX * torch.sigmoid(self.alpha_logit[:, 0].double())  # exactly the reference's alphas
            self._kernels[T, u.device] = ema_kernel(alphas, T).to(u.device)
        return apply_causal_kernel(self._kernels[T, u.device], u)


def cumulative_average_reference(x: torch.Tensor) -> torch.Tensor:
    """h_t = (1 - 1/(t+1)) h_{t-1} + x_t / (t+1), h_{-1} = 0 (t from 0): the mean of x_0 .. x_t, one step at a time,
    in float32. (B, T, D) -> (B, T, 1, D)."""
    h, out = torch.zeros_like(x[:, 0], dtype=torch.float32), []
    for t in range(x.shape[1]):
        h = (1 - 1 / (t + 1)) * h + x[:, t].float() / (t + 1)
        out.append(h)
    return torch.stack(out, 1)[:, :, None].to(x.dtype)


class CumulativeAverage(nn.Module):
    """cumavg: the uniform running average, coefficient 1/t, state D (S = 1). The referee's "uniform averaging":
    no decay at all, every past token weighted alike however far back (no timescale to get wrong), and the
    smallest state in the design. Fast path: a cumulative sum divided by the count, in float32."""
    S = 1

    def __init__(self, d_model: int):
        super().__init__()

    def forward(self, u: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, T, 1, D)
        with torch.autocast(u.device.type, enabled=False):
            count = torch.arange(1, u.shape[1] + 1, device=u.device, dtype=torch.float32)[:, None]  # (T, 1)
            return (u.float().cumsum(1) / count)[:, :, None].to(u.dtype)


def legs_transitions(N: int, T: int) -> tuple:
    """HiPPO-LegS (Gu et al. 2020), discretised by the bilinear rule at step t = 1, 2, ... (HiPPO's code does the same):
        continuous  dc/dt = -A c / t + B u / t,  A_nk = sqrt(2n+1) sqrt(2k+1) (n > k), n + 1 (n = k), 0 (n < k),
                                                   B_n = sqrt(2n+1)
        discrete    c_t = M_t c_{t-1} + b_t u_t,  M_t = (I + A/2t)^-1 (I - A/2t),  b_t = (I + A/2t)^-1 B / t
    Returns M (T, N, N) and b (T, N) in float64 (numpy). Every M_t is a function of A, so the M_t commute."""
    n = np.arange(N)
    r = np.sqrt(2 * n + 1.0)
    A = np.tril(r[:, None] * r[None, :], -1) + np.diag(n + 1.0)
    eye, M, b = np.eye(N), np.empty((T, N, N)), np.empty((T, N))
    for i in range(T):
        t = i + 1.0
        lhs = eye + A / (2 * t)
        M[i] = np.linalg.solve(lhs, eye - A / (2 * t))
        b[i] = np.linalg.solve(lhs, r / t)
    return M, b


def legs_reference(x: torch.Tensor, N: int) -> torch.Tensor:
    """The LegS recurrence one step at a time, per channel, in float32. (B, T, D) -> (B, T, N, D)."""
    B, T, D = x.shape
    M, b = (torch.tensor(a, dtype=torch.float32, device=x.device) for a in legs_transitions(N, T))
    c, out = x.new_zeros(B, N, D, dtype=torch.float32), []
    for t in range(T):
        c = M[t] @ c + b[t][:, None] * x[:, t, None, :].float()  # (B, N, D)
        out.append(c)
    return torch.stack(out, 1).to(x.dtype)


def legs_kernel(N: int, T: int) -> np.ndarray:
    """K (T, T, N) with c_t = sum_{j <= t} K[t, j] u_j: K[t, j] = M_t ... M_{j+1} b_j, zero for j > t. Built in
    float64 by carrying every column j forward at once (T products of (T, N) by (N, N))."""
    M, b = legs_transitions(N, T)
    K, carried = np.zeros((T, T, N)), np.zeros((T, N))  # carried[j]: column j's coefficients so far
    for t in range(T):
        carried = carried @ M[t].T
        carried[t] = b[t]
        K[t, :t + 1] = carried[:t + 1]
    return K


class LegS(nn.Module):
    """legs: a fixed HiPPO polynomial projection of the past: N = N_WIDE coefficients per channel, the best
    degree-(N-1) Legendre fit of u over the whole past [0, t] (uniform measure), updated with A and B from HiPPO's
    formulas, discretised, not trained. State N x D, linattn's at head width 64: a large vector state with fixed
    coefficients and no content addressing.

    Why LegS and not LegT: LegT fits a sliding window of a chosen length, a timescale that the factorial varies
    elsewhere (ema-long, ema-wide); LegS has none, remembers every position in proportion, and its first
    coefficient is a running average (the 1/t of cumavg, up to the discretisation), so cumavg -> legs changes the
    state size and nothing else. Fast path: the coefficients are a fixed linear map of the past, c_t = sum_{j<=t}
    K[t, j] u_j, one (T N x T) by (T x D) product per sequence with K built once per length (legs_kernel); the
    cost grows as T^2 like attention's, fine at the contexts run here. Reference: legs_reference."""

    def __init__(self, d_model: int, N: int = N_WIDE):
        super().__init__()
        self.S = N
        self._kernels = {}  # (T, device) -> K (T N, T) float32: constants, not parameters or buffers

    def kernel(self, T: int, device: torch.device) -> torch.Tensor:
        if (T, device) not in self._kernels:
            K = torch.tensor(legs_kernel(self.S, T), dtype=torch.float32)  # (T, T, N)
            self._kernels[T, device] = K.permute(0, 2, 1).reshape(T * self.S, T).to(device)
        return self._kernels[T, device]

    def forward(self, u: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, T, N, D)
        return apply_causal_kernel(self.kernel(u.shape[1], u.device), u)


def long_conv_reference(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """y_t = sum_{k=0..t} f_k * x_{t-k} per channel, one position at a time, in float32. x (B, T, D), f (D, >= T)
    -> (B, T, 1, D)."""
    T = x.shape[1]
    out = [(x[:, :t + 1].float().flip(1) * f[:, :t + 1].float().T).sum(1) for t in range(T)]
    return torch.stack(out, 1)[:, :, None].to(x.dtype)


def long_conv(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """The same causal convolution by FFT: zero-padded to 2T so the circular convolution is the linear one, then
    cut to the first T positions (nothing after t reaches t). x (B, T, D), f (D, >= T) -> (B, T, 1, D), float32."""
    with torch.autocast(x.device.type, enabled=False):
        T = x.shape[1]
        X = torch.fft.rfft(x.float(), n=2 * T, dim=1)  # (B, T+1, D)
        F_ = torch.fft.rfft(f[:, :T].float().T, n=2 * T, dim=0)  # (T+1, D)
        return torch.fft.irfft(X * F_, n=2 * T, dim=1)[:, :T, None].to(x.dtype)


class LongConv(nn.Module):
    """longconv: a learned causal filter over the whole context, one per channel, independent of the input (S = 1):
    the referee's fixed FIR (finite impulse response) filter at its largest, without the gating that H3 and
    Hyena put around it. It can represent any linear time-invariant read of the past, every EMA among them, so it
    is the strongest fixed-coefficient mixer of the design; its state is the whole input, T x D. The taps start as
    one EMA per channel at the long spread (a = 0.9 to 0.001 over the channels) and are then free. LONGCONV_MAX
    taps are stored (flat, so that the optimiser does not decay them, like the learned alphas); a context of T
    uses the first T, the rest never act. Fast path: FFT (long_conv); reference: long_conv_reference."""
    S = 1

    def __init__(self, d_model: int):
        super().__init__()
        a = long_alphas(d_model)[:, None]  # (D, 1)
        taps = a * (1 - a) ** torch.arange(LONGCONV_MAX)  # (D, L): the EMA kernel a (1 - a)^k
        self.D = d_model
        self.filter = nn.Parameter(taps.flatten())

    def forward(self, u: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, T, 1, D)
        if u.shape[1] > LONGCONV_MAX:
            raise ValueError(f"longconv stores {LONGCONV_MAX} taps, the context has {u.shape[1]}; raise LONGCONV_MAX "
                             "in mixers.py or shorten --block-size")
        return long_conv(u, self.filter.view(self.D, LONGCONV_MAX))


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
    With fixed_decays (d_k,) the decays g are constants instead, the same for every head, not learned (the
    fixed-coefficient matrix states, FIXED_DECAYS). GLA's output gate is left out of all of them: it mixes no
    positions, so it is not part of the question."""

    def __init__(self, d_model: int, n_head: int, input_dependent: bool, fixed_decays: torch.Tensor | None = None):
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
        if fixed_decays is not None:  # constants: log g per key channel, repeated over the heads
            if input_dependent or fixed_decays.shape != (self.dk,):
                raise ValueError(f"fixed_decays needs shape ({self.dk},) and input_dependent=False")
            self.register_buffer("fixed_log_g", fixed_decays.log().repeat(n_head), persistent=False)
        elif input_dependent:
            self.gate = nn.Sequential(nn.Linear(d_model, GATE_RANK, bias=False), nn.Linear(GATE_RANK, d_model // 2))
            with torch.no_grad():
                self.gate[1].bias.copy_(bias)
        else:
            self.decay_logit = nn.Parameter(bias)  # 1-D, so it gets no weight decay, like ema-learned's alphas

    def heads(self, t: torch.Tensor) -> torch.Tensor:  # (B', T', H * d) -> (B', H, T', d)
        return t.view(t.shape[0], t.shape[1], self.H, -1).transpose(1, 2)

    def log_decay(self, u: torch.Tensor) -> torch.Tensor:
        """log g per head and key channel: (B, H, T, d_k) for gla, (1, H, 1, d_k) for linattn (no u in it)."""
        if hasattr(self, "fixed_log_g"):
            return self.heads(self.fixed_log_g.view(1, 1, -1))
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


# ----------------------------------------------------------------------------- fixed decays for the matrix state
# linattn's state, queries and reads with the decays held fixed (per key channel, every head alike):
#     paper  0.5 / 0.9 / 0.98 over thirds of the key channels: the SPEN's alphas 0.5 / 0.1 / 0.02 as decays
#     long   linattn's starting spread, 0.1 ... 0.999 (initial_decay_logits), frozen
#     one    0.995 on every key channel: one timescale of about 200 tokens, longer than every key-query distance of
#            the recall task (at most 61 tokens at T = 64, where 0.995 keeps 74% of a key) and than PTB's context
#            of 128, like RetNet's slower heads. Not 0.98 (the paper's slowest trace, already a third of "paper"),
#            which forgets most of a key within the longer distances; not 1.0, no decay at all, a state that only
#            grows (the per-head normalisation would hide it, but it is not a timescale). So "one" asks whether a
#            single long enough timescale suffices, against "long" with fast channels too.
FIXED_DECAYS = {
    "paper": lambda dk: torch.tensor([1 - a for a in (0.5, 0.1, 0.02)])[torch.arange(dk) * 3 // dk],
    "long": lambda dk: (F.logsigmoid(initial_decay_logits(dk)) / GATE_TEMPERATURE).exp(),
    "one": lambda dk: torch.full((dk,), 0.995),
}


def fixed_linear_attention(kind: str):
    """A (d_model, n_head) -> LinearAttention builder with the decays FIXED_DECAYS[kind], for the registry."""
    def build(d_model: int, n_head: int) -> LinearAttention:
        return LinearAttention(d_model, n_head, input_dependent=False,
                               fixed_decays=FIXED_DECAYS[kind](d_model // (2 * n_head)))
    return build


# ----------------------------------------------------------------------------- the registry ema_lm.py builds from
# Vector states map (B, T, D) to S traces per channel, (B, T, S, D), and carry S as an attribute; they sit in the
# SPEN block (or, read by one linear map, in GPT-2's). Matrix states map (B, T, D) to (B, T, D) in GPT-2's block.
TRACE_MIXERS = {"ema-learned": LearnedTraces, "selective": SelectiveTraces,  # (d_model) -> module
                "ema-long": lambda d_model: LongTraces(d_model, S_TRACES),
                "ema-wide": lambda d_model: LongTraces(d_model, N_WIDE),
                "cumavg": CumulativeAverage, "legs": LegS, "longconv": LongConv}
MATRIX_MIXERS = {"linattn": lambda d_model, n_head: LinearAttention(d_model, n_head, input_dependent=False),
                 "gla": lambda d_model, n_head: LinearAttention(d_model, n_head, input_dependent=True),
                 "linattn-paper": fixed_linear_attention("paper"), "linattn-long": fixed_linear_attention("long"),
                 "linattn-one": fixed_linear_attention("one")}


def state_floats(mixer: str, d_model: int, n_head: int, T: int) -> int:
    """Numbers the mixer keeps about the past, per block, after T tokens (Zoology's "state size")."""
    if mixer in ("ema", "ema-learned", "selective", "ema-long"):
        return S_TRACES * d_model
    if mixer == "cumavg":
        return d_model  # and the count t
    if mixer in ("ema-wide", "legs"):
        return N_WIDE * d_model
    if mixer == "longconv":
        return T * d_model  # a filter over the whole context needs every input in it
    if mixer in MATRIX_MIXERS:
        return d_model * d_model // (2 * n_head)
    if mixer == "attention":
        return 2 * T * d_model  # the key-value cache
    raise ValueError(f"unknown mixer {mixer!r}")
