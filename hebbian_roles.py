"""Grammatical roles with zero labels: a Hebbian predictive-coding network over multi-timescale EMA (exponential
moving average) traces.

Hypothesis (arXiv 2604.08556): an unsupervised Hebbian network whose only context is EMA traces (alpha 0.5, 0.1,
0.02) assigns grammatical roles at 96% of a supervised BiGRU (bidirectional gated recurrent unit), zero labels,
and beats it on structure-dependent roles. Changes against bigru_baseline.py: no labels, no backpropagation in
training; the SPCN (the paper's name, read here as sparse predictive coding network) settles a latent per token
by iterative inference and learns by local Hebbian rules. Labels only name k-means clusters of frozen train_a
states (each token weighted 1 / count of its word type); protocol, fixed before the final runs, and all tables:
results/roles/README.md. The headline read-out is many-to-one with K = 14 clusters (M:1 K=14).

Model (the paper gives only constants; equations and choices are ours), for token t:
  x_t  the word's code: the mean random code of the word *before* it. Every noun follows a determiner or an
       adjective in every role, so the code cannot carry a noun's training role (`codes_both` adds the word
       after: lion is followed by verbs, mouse by "was"). Standardised over training tokens.
  c_t  EMA traces h_t = (1 - a) h_{t-1} + a u_t (ema_lm.py's scan) of the neighbours' codes u (these do see the
       word after: a neighbour's class must show), of the words before t and, reversed, after t ("was" after a
       passive subject); divided by 1 - (1 - a)^n (weighted means) and standardised.
  z_t  H = 64 units, at most k = 4 on (k-winners-take-all, lateral inhibition): the bottleneck (a dense latent
       copies word and context almost losslessly). Settling: 20 steps z <- top_k(max(0, z - dE/dz / L)) on
       E = alpha/2 |x - W_x z|^2_Px + beta/2 |c - W_c z|^2_Pc + g/2 |z - mu_t|^2, alpha 1, beta 0.5 (paper);
       projecting onto {z >= 0, k on} minimises E's quadratic upper bound, so every step lowers E (tested).
  g    prior stiffness gamma * mean diag(alpha W_x' Px W_x + beta W_c' Pc W_c): relative to the data terms whatever
       the scale of W (a fixed gamma moved 0.1% of clusters or less: results/roles rows c1-c6). gamma 1.0 (dev_a; paper
       0.3: an ablation).
  SPA  (paper's name; read as sparse attention over past states; window 8, top 4): mu_t = W_spa a_t, a_t the mix of
       the top 4 of the sentence's last 8 latents, softmax(z_j . q_t / sqrt(H)), q_t = relu(W_fb' P [alpha x_t;
       beta c_t]).
  P    precision per error dimension: geometric-mean error variance / that dimension's running variance (EMA
       0.05 per batch), clamped to [0.1, 10] (paper). Plain 1 / variance put 34-96% of dimensions at the upper
       clamp (results/roles rows c1-c5).
  learn per batch of 64 sentences (paper: lr 0.01, decay 0.001): W_x += lr (alpha Px e_x) z' - 0.001 W_x, W_c
       likewise with beta, W_spa += lr (gamma (z - mu)) a' - 0.001 W_spa: local error times local activity.

Commands (CPU; no GPU needed): OMP_NUM_THREADS=1 python bigru_baseline.py && OMP_NUM_THREADS=1 python hebbian_roles.py
  Tuning: hebbian_roles.py --dev-only --seeds 0 --ablations none [flags]. Tests: pytest -q tests/test_hebbian_roles.py
  Issue 24's attempts: hebbian_roles.py --ablations class_traces_forward,class_traces --out-dir runs/moonshot

Measured (seeds 0-2; 2-core VM shared at load about 4, 1 thread; hardware and timing in results/roles/README.md).
M:1 K=14, % of tokens / of sd tokens: test_a 77.2 +- 1.5 / 55.1 +- 2.0, test_b 67.9 +- 3.7 / 50.7 +- 5.8, test_deep
82.6 +- 1.5 / 57.6 +- 7.2, test_pairs 82.3 +- 0.4 / 50.1 +- 0.2. BiGRU (selected on dev_a): 100.0 / 100.0, 93.4 /
75.6, 97.6 / 88.6, 100.0 / 100.0. Floors on sd (train_a lookups, no model): ambiguous nouns as AGENT 56.5, 49.9,
70.0, 50.0; +-2-word window 87.0, 74.5, 82.7, 50.0. Ratio to the BiGRU on test_a 0.772 (paper 0.96): NOT
reproduced, and sd is at the constant-AGENT level or below it on every split (above it only within the seed
spread: test_b 50.7 +- 5.8 vs 49.9, test_pairs 50.1 +- 0.2 vs 50.0). Where the roles are lost: a labelled
probe reads 98.2 of test_a's sd tokens (69.5 of test_pairs') off the raw inputs, 87.3 (71.3) off the dense latent
(no_bottleneck) and 56.8 (49.8) off the selected k-winners-take-all latent; k-means finds none of it on any of
them (52.3-56.1 on test_a, 49.6-50.1 on test_pairs). Tuning (dev_a): 14 configurations + the best 3 with 3 seeds,
the BiGRU's budget; issue 24's attempts (ATTEMPTS) had the same budget and did not meet their target.

Glossary. B sentences, T length, D / Dc code / context width, H latent units, k units on, K clusters, N tokens,
W SPA window, sd structure-dependent token, M:1 / 1:1 many-to-one / one-to-one naming of clusters.
"""
# ---------------------------------------------------------------- imports
from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from tqdm import tqdm

from data.roles.prepare import prepare as prepare_roles
from ema_lm import ALPHAS, ema_scan  # the paper's three decays and the chunked scan (its tests: test_ema_lm.py)
from plumbing import (RunFolder, StopOnSignal, check_ranges, command_line, finished_parts, help_formatter, portable,
                      read_json, run_info, write_json_atomic)

REPO = Path(__file__).resolve().parent
READOUT_SENTENCES = 5000  # read-outs are fitted on the first 5000 train_a sentences (~43k tokens): CPU time
HEADLINE = "M:1 K=14"  # the headline read-out (protocol, fixed before the final runs: results/roles/README.md)
READOUTS = ("1:1 K=7", "M:1 K=7", "M:1 K=14", "M:1 K=28", "probe")  # the last one uses labels: an upper bound


# ---------------------------------------------------------------- config
@dataclass
class Config:
    codes: str = "left"         # code of the word itself: mean code of the word before it (role-free), or "both"
    context_codes: str = "both"  # codes the traces average: left and right neighbours (finer classes), or "left",
                                 # or "classes" (one-hot learned word classes: word_classes, issue 24's attempt)
    code_dim: int = 64          # D: random base codes for ~90 word types; 64 dims keeps them nearly orthogonal
    hidden: int = 64            # H latent units
    active: int = 4             # k of the k-winners-take-all latent: the bottleneck (k >= H turns it off)
    alphas: tuple = ALPHAS      # trace timescales (paper)
    direction: str = "both"     # traces of the words before and after t: a passive subject needs "was" after it
    w_input: float = 1.0        # alpha (paper): weight of the input prediction error
    w_context: float = 0.5      # beta (paper): weight of the trace-context prediction error
    w_prior: float = 1.0        # gamma, in units of the data terms' stiffness; dev_a chose 1.0 over the paper's 0.3
    settle_steps: int = 20      # inference steps per token (each lowers the energy; tested)
    lr: float = 0.01            # paper: Hebbian learning rate of W_fb
    weight_decay: float = 0.001  # paper: weight decay of W_fb (applied per update, decoupled)
    precision_rate: float = 0.05  # EMA rate of the error variances (per batch)
    precision_min: float = 0.1  # paper: precision clamp
    precision_max: float = 10.0  # paper: precision clamp
    use_precision: bool = True  # --no-precision ablation: every precision fixed at 1
    spa_window: int = 8         # paper appendix: buffer of 8 recent states
    spa_topk: int = 4           # paper appendix: keep the top 4
    use_spa: bool = True        # --no-spa ablation
    use_traces: bool = True     # --no-traces ablation (current word only; also turns the SPA off)
    epochs: int = 1             # passes over train_a (one pass already sees every word type hundreds of times)
    batch_size: int = 64        # sentences per Hebbian update (~550 tokens)
    init_scale: float = 0.1     # std of the initial feedback weights
    type_weighted: bool = True  # read-out: k-means weighs a token by 1/count of its word type (no labels needed)
    trace_weight: str = "none"  # "surprisal": each word's trace input scaled by -log p(word) (issue 24's attempt)
    read_from: str = "latent"   # what the read-outs see: the settled latent z, or (no network trained) the raw
                                # inputs [x; c] ("inputs") or the word codes x alone ("codes"): where the roles sit


def context_traces(x: torch.Tensor, lengths: torch.Tensor, cfg: Config) -> torch.Tensor:
    """x: (B, T, D) codes, zero past each sentence's end -> context c: (B, T, Dc), bias-corrected traces of
    the words before t (and, direction 'both', after t). Never includes the word at t itself."""
    B, T, D = x.shape
    if not cfg.use_traces:
        return x.new_zeros(B, T, 0)
    a, t = torch.tensor(cfg.alphas).view(1, 1, -1, 1), torch.arange(T).view(1, T, 1, 1).float()  # (1, 1, S, 1)

    def mean_traces(h: torch.Tensor, n: torch.Tensor) -> torch.Tensor:  # h (B, T, S, D); n words seen
        return torch.where(n > 0, h / (1 - (1 - a) ** n.clamp(min=1)), torch.zeros_like(h))

    left = F.pad(ema_scan(x, cfg.alphas, chunk_size=32), (0, 0, 0, 0, 1, 0))[:, :T]  # (B, T, S, D): h_{t-1}
    ctx = [mean_traces(left, t)]
    if cfg.direction == "both":  # padding is zero and precedes the real words when reversed: traces stay 0 there
        right = F.pad(ema_scan(x.flip(1), cfg.alphas, chunk_size=32).flip(1), (0, 0, 0, 0, 0, 1))[:, 1:]  # t+1..
        ctx.append(mean_traces(right, (lengths.view(B, 1, 1, 1) - 1 - t).clamp(min=0)))
    return torch.cat(ctx, 2).reshape(B, T, -1)  # (B, T, Dc)


# ---------------------------------------------------------------- model: word codes
def word_codes(data: list[torch.Tensor], vocab_size: int, kind: str, cfg: Config, seed: int) -> torch.Tensor:
    """(V, D') codes, row 0 (padding) = 0, standardised over training tokens: per word, the mean over its
    occurrences of the random code of the word before it ("left", D' = D; a sentence-start code for the first
    word) and of the word after it ("both", D' = 2D); what code_w += (r - code_w) / n_w reaches in one pass."""
    base = torch.randn(vocab_size + 2, cfg.code_dim, generator=torch.Generator().manual_seed(seed))
    base[0] = 0  # rows V and V + 1: sentence start and sentence end
    codes, counts = torch.zeros(vocab_size, (2 if kind == "both" else 1) * cfg.code_dim), torch.zeros(vocab_size)
    for _, ids, lengths in batches(data, 512, None):
        B, T = ids.shape
        ctx = [base[torch.cat([torch.full((B, 1), vocab_size), ids[:, :-1]], 1)]]  # (B, T, D): word before
        if kind == "both":
            nxt = torch.cat([ids[:, 1:], torch.zeros(B, 1, dtype=ids.dtype)], 1)
            nxt[torch.arange(B), lengths - 1] = vocab_size + 1
            ctx.append(base[nxt])  # word after
        codes.index_add_(0, ids.reshape(-1), torch.cat(ctx, 2).reshape(B * T, -1))
        counts.index_add_(0, ids.reshape(-1), torch.ones(B * T))
    counts[0] = 0
    codes, w = codes / counts.clamp(min=1)[:, None], counts / counts.sum()  # w: token frequency of each word
    mean = (w[:, None] * codes).sum(0)
    codes = (codes - mean) / ((w[:, None] * (codes - mean) ** 2).sum(0).sqrt() + 1e-6)
    codes[0] = 0
    return codes


# ---------------------------------------------------------------- model: SPCN (sparse predictive coding network)
class SPCN(nn.Module):
    """All state is in buffers: nothing here has a gradient, every change is a local Hebbian update."""

    def __init__(self, codes: torch.Tensor, c_codes: torch.Tensor, c_mean: torch.Tensor, c_std: torch.Tensor,
                 cfg: Config, seed: int):
        super().__init__()
        self.cfg, g = cfg, torch.Generator().manual_seed(seed + 1)
        (D, H), Dc = (codes.shape[1], cfg.hidden), c_mean.numel()
        self.register_buffer("codes", codes)  # (V, D) the word's own code, fixed while the SPCN learns
        self.register_buffer("c_codes", c_codes)  # (V, D') what the traces average
        self.register_buffer("c_mean", c_mean)  # (Dc,) context standardisation, over train_a tokens
        self.register_buffer("c_std", c_std)
        self.register_buffer("W_x", cfg.init_scale * torch.randn(D, H, generator=g))
        self.register_buffer("W_c", cfg.init_scale * torch.randn(Dc, H, generator=g))
        self.register_buffer("W_spa", torch.eye(H) * 0.5)  # start as "the next latent resembles the attended"
        self.register_buffer("var_x", torch.ones(D)), self.register_buffer("var_c", torch.ones(Dc))  # error variances

    def precisions(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(pi^x (D,), pi^c (Dc,)): geometric-mean error variance / each dimension's error variance, clamped."""
        c, typical = self.cfg, torch.cat([self.var_x, self.var_c]).log().mean().exp()
        return tuple((typical / v).clamp(c.precision_min, c.precision_max) if c.use_precision else torch.ones_like(v)
                     for v in (self.var_x, self.var_c))

    def inputs(self, ids: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """ids (B, T) -> word codes x (B, T, D) and standardised context c (B, T, Dc)."""
        return self.codes[ids], (context_traces(self.c_codes[ids], lengths, self.cfg) - self.c_mean) / self.c_std

    def curvature(self) -> tuple[torch.Tensor, float, float]:
        """G = alpha W_x^T P_x W_x + beta W_c^T P_c W_c (H, H); the prior's stiffness g = gamma * mean(diag G)
        (gamma is relative to what the data terms pull with); L = lambda_max(G) + g, the Lipschitz constant."""
        c, (px, pc) = self.cfg, self.precisions()
        G = c.w_input * self.W_x.T @ (px[:, None] * self.W_x) + c.w_context * self.W_c.T @ (pc[:, None] * self.W_c)
        g = c.w_prior * float(G.diagonal().mean())
        return G, g, float(torch.linalg.eigvalsh(G)[-1]) + g


def energy(model: SPCN, z: torch.Tensor, x: torch.Tensor, c: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
    """E(z) per row: z, mu (B, H), x (B, D), c (B, Dc) -> (B,)."""
    cfg, (px, pc) = model.cfg, model.precisions()
    e_x, e_c = x - z @ model.W_x.T, c - z @ model.W_c.T
    return (0.5 * cfg.w_input * (px * e_x ** 2).sum(1) + 0.5 * cfg.w_context * (pc * e_c ** 2).sum(1)
            + 0.5 * model.curvature()[1] * ((z - mu) ** 2).sum(1))


def winners(z: torch.Tensor, k: int) -> torch.Tensor:
    """k-winners-take-all: keep the k largest units of each row, zero the rest. z (B, H) -> (B, H)."""
    return z if k >= z.shape[1] else z * (z >= z.topk(k, dim=1).values[:, -1:])


def settle(model: SPCN, x: torch.Tensor, c: torch.Tensor, mu: torch.Tensor, record: bool = False
           ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Projected gradient descent on E from z = 0, step 1/L, onto {z >= 0, at most k on}: the projection minimises
    E's quadratic upper bound at z_n over that set, so each step lowers E (record=True keeps E, for the test)."""
    cfg, (px, pc) = model.cfg, model.precisions()
    G, g, L = model.curvature()
    z = torch.zeros_like(mu)
    drive = (cfg.w_input * px * x) @ model.W_x + (cfg.w_context * pc * c) @ model.W_c  # (B, H): W_fb^T P [x; c]
    energies = [energy(model, z, x, c, mu)] if record else []
    for _ in range(cfg.settle_steps):
        z = winners((z - (z @ G - drive + g * (z - mu)) / L).clamp(min=0), cfg.active)  # step along -dE/dz
        if record:
            energies.append(energy(model, z, x, c, mu))
    return z, energies


def spa_prior(model: SPCN, buffer: torch.Tensor, query: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """SPA: buffer (B, W, H) of the last W latents, query (B, H) -> (mu, attended a), both (B, H); top k scores."""
    B, W, H = buffer.shape
    scores = (buffer @ query[:, :, None]).squeeze(2) / math.sqrt(H)  # (B, W)
    top, idx = scores.topk(min(model.cfg.spa_topk, W), dim=1)  # (B, k)
    a = (torch.softmax(top, dim=1)[:, :, None] * buffer.gather(1, idx[:, :, None].expand(-1, -1, H))).sum(1)
    return a @ model.W_spa.T, a


def run_batch(model: SPCN, ids: torch.Tensor, lengths: torch.Tensor, learn: bool, prior: bool = True
              ) -> tuple[torch.Tensor, dict]:
    """Settle every token of a batch of sentences, left to right; learn=True applies one Hebbian update;
    prior=False drops mu at inference only (what the prior moves). ids (B, T) -> latents (B, T, H), stats."""
    cfg, H, (B, T) = model.cfg, model.cfg.hidden, ids.shape
    x, c = model.inputs(ids, lengths)  # (B, T, D), (B, T, Dc)
    px, pc = model.precisions()
    Z, MU, A = (x.new_zeros(B, T, H) for _ in range(3))
    for t in range(T):
        if cfg.use_spa and prior and t > 0:
            q = ((cfg.w_input * px * x[:, t]) @ model.W_x + (cfg.w_context * pc * c[:, t]) @ model.W_c).relu()
            MU[:, t], A[:, t] = spa_prior(model, Z[:, max(0, t - cfg.spa_window):t], q)
        Z[:, t], _ = settle(model, x[:, t], c[:, t], MU[:, t])
    live = (torch.arange(T)[None, :] < lengths[:, None]).reshape(-1)  # (B*T,) real tokens
    z, mu, a, xs, cs = (u.reshape(B * T, -1)[live] for u in (Z, MU, A, x, c))  # (N, H) ... (N, Dc)
    e_x, e_c = xs - z @ model.W_x.T, cs - z @ model.W_c.T  # (N, D), (N, Dc)
    stats = {"err_x": float((e_x ** 2).mean()), "err_c": float((e_c ** 2).mean()) if e_c.numel() else 0.0,
             "units_used": int((z > 0).any(0).sum())}
    if learn:
        hebbian_update(model, z, e_x, e_c, z - mu, a)
    return Z, stats


def hebbian_update(model: SPCN, z: torch.Tensor, e_x: torch.Tensor, e_c: torch.Tensor, e_z: torch.Tensor,
                   a: torch.Tensor) -> None:
    """Local rules, mean over N tokens: dW = lr (weighted error) (activity)^T - decay W; z, e_z, a (N, H)."""
    cfg, (px, pc) = model.cfg, model.precisions()
    N = z.shape[0]
    model.W_x += cfg.lr * ((cfg.w_input * px * e_x).T @ z) / N - cfg.weight_decay * model.W_x
    model.W_c += cfg.lr * ((cfg.w_context * pc * e_c).T @ z) / N - cfg.weight_decay * model.W_c
    if cfg.use_spa:
        model.W_spa += cfg.lr * ((cfg.w_prior * e_z).T @ a) / N - cfg.weight_decay * model.W_spa
    model.var_x.mul_(1 - cfg.precision_rate).add_(cfg.precision_rate * (e_x ** 2).mean(0))
    model.var_c.mul_(1 - cfg.precision_rate).add_(cfg.precision_rate * (e_c ** 2).mean(0))


# ---------------------------------------------------------------- data + metrics
# ---- role-task data and scoring, copied verbatim from bigru_baseline.py (tests/test_copies.py) ----
SPLITS = ("train_a", "dev_a", "test_a", "test_b", "test_deep", "test_pairs")
EVAL_SPLITS = ("dev_a", "test_a", "test_b", "test_deep", "test_pairs")
REGENERATE = "rerun `python data/roles/prepare.py --force` to regenerate the benchmark"


def read_role_file(path: Path, roles: list[str], vocab: set[str], expected: int) -> list[dict]:
    """One split file: a JSON object per line with tokens, roles (same length), construction, depth."""
    sentences = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        try:
            rec = json.loads(line)
            ok = (len(rec["tokens"]) == len(rec["roles"]) > 0 and set(rec["roles"]) <= set(roles)
                  and set(rec["tokens"]) <= vocab and isinstance(rec["construction"], str))
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise ValueError(f"{path} line {lineno}: not a valid sentence record ({e}); the file is "
                             f"corrupted or truncated; {REGENERATE}") from None
        if not ok:
            raise ValueError(f"{path} line {lineno}: tokens/roles differ in length, or hold a role or "
                             f"word missing from meta.json: {line[:120]!r}; {REGENERATE}")
        sentences.append(rec)
    if len(sentences) != expected:
        raise ValueError(f"{path} line {len(sentences) + 1}: file ends after {len(sentences)} sentences but "
                         f"meta.json says {expected}; the file is truncated; {REGENERATE}")
    return sentences


def load_role_data(data_dir: str | Path) -> tuple[dict, dict[str, list[dict]]]:
    """(meta, {split: sentences}); generates the default benchmark first if any file is missing."""
    data_dir = Path(data_dir)
    if not all((data_dir / f).exists() for f in ["meta.json"] + [f"{s}.jsonl" for s in SPLITS]):
        print(f"{data_dir}: benchmark files missing, generating them with data/roles/prepare.py (seed 0)")
        prepare_roles(data_dir)
    try:
        meta = json.loads((data_dir / "meta.json").read_text(encoding="utf-8"))
        roles, vocab = meta["roles"], set(meta["vocabulary"])
        counts = {s: meta["files"][f"{s}.jsonl"]["sentences"] for s in SPLITS}
    except (json.JSONDecodeError, KeyError) as e:
        raise ValueError(f"{data_dir / 'meta.json'}: unreadable or incomplete ({e!r}); {REGENERATE}") from None
    return meta, {s: read_role_file(data_dir / f"{s}.jsonl", roles, vocab, counts[s]) for s in SPLITS}


def structure_dependent(tokens: list[str], gold: list[str], train_roles: dict[str, list[str]]) -> list[bool]:
    """A token is structure-dependent unless its word had exactly one role in train_a and that role is
    the gold one: then word identity fixes the answer and no structure is needed."""
    return [train_roles.get(w) != [r] for w, r in zip(tokens, gold)]


def flatten_split(sentences: list[dict], meta: dict) -> dict[str, np.ndarray]:
    """Token-level arrays of a split, in file order: gold role ids, sd mask, construction per token."""
    index = {r: k for k, r in enumerate(meta["roles"])}
    gold = [index[r] for s in sentences for r in s["roles"]]
    sd = [m for s in sentences for m in structure_dependent(s["tokens"], s["roles"], meta["train_roles_by_word"])]
    cons = [s["construction"] for s in sentences for _ in s["tokens"]]
    return {"gold": np.array(gold, dtype=np.int64), "sd": np.array(sd, dtype=bool), "construction": np.array(cons)}


def summarise_seeds(per_seed: list[dict]) -> dict:
    """Mean and std (ddof=1; 0 for one seed) of every float over seeds; ints are kept (they are counts of
    the same data); lists (confusion matrices) are summed over seeds."""
    if isinstance(first := per_seed[0], dict):
        return {k: summarise_seeds([d[k] for d in per_seed]) for k in first}
    if isinstance(first, float):
        v = np.array(per_seed, dtype=np.float64)
        return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if v.size > 1 else 0.0,
                "values": [float(x) for x in v]}
    if isinstance(first, list):
        return np.sum(np.array(per_seed), axis=0).tolist()
    return first

# ---- end of the copy ----

def encode(sentences: list[dict], vocabulary: list[str]) -> list[torch.Tensor]:
    """Word ids per sentence (0 is padding). Only the tokens are read: no role label reaches training."""
    word_index = {w: i + 1 for i, w in enumerate(vocabulary)}
    return [torch.tensor([word_index[w] for w in s["tokens"]]) for s in sentences]


def batches(data: list[torch.Tensor], batch_size: int, gen: torch.Generator | None) -> list[tuple]:
    """(sentence indices, ids (B, T) zero-padded, lengths (B,)) per batch. Sentences are grouped by length
    (little padding); batch order is shuffled when gen is given."""
    order = sorted(range(len(data)), key=lambda i: len(data[i]))
    groups = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    if gen is not None:
        groups = [groups[j] for j in torch.randperm(len(groups), generator=gen).tolist()]
    return [(g, nn.utils.rnn.pad_sequence([data[i] for i in g], batch_first=True),
             torch.tensor([len(data[i]) for i in g])) for g in groups]


@torch.no_grad()
def states(model: SPCN, data: list[torch.Tensor], prior: bool = True, batch_size: int = 512) -> torch.Tensor:
    """Frozen model: the settled latent of every token of a split, (N, H), in file order; with cfg.read_from
    "inputs" or "codes", the network's inputs instead: [x; c] (N, D + Dc) or x (N, D)."""
    out: list[torch.Tensor | None] = [None] * len(data)
    for group, ids, lengths in batches(data, batch_size, None):
        if model.cfg.read_from == "latent":
            Z, _ = run_batch(model, ids, lengths, learn=False, prior=prior)  # (B, T, H)
        else:
            x, c = model.inputs(ids, lengths)  # (B, T, D), (B, T, Dc)
            Z = x if model.cfg.read_from == "codes" else torch.cat([x, c], 2)
        for b, i in enumerate(group):
            out[i] = Z[b, :lengths[b]]
    return torch.cat(out)


# ---------------------------------------------------------------- evaluation: the read-outs
def sq_dist(X: torch.Tensor, C: torch.Tensor, xx: torch.Tensor | None = None) -> torch.Tensor:
    """(N, F), (K, F) -> (N, K) squared Euclidean distances, as one matmul; xx = (X * X).sum(1, keepdim=True)
    may be passed in when X is reused (k-means: no (N, F) temporary per call)."""
    xx = (X * X).sum(1, keepdim=True) if xx is None else xx
    return (xx - 2 * X @ C.T + (C * C).sum(1)).clamp(min=0)


def kmeans(X: torch.Tensor, K: int, seed: int, weight: torch.Tensor | None = None, restarts: int = 3) -> torch.Tensor:
    """Weighted Lloyd's k-means, k-means++ seeding, best of `restarts` by inertia. X (N, F) -> centroids (K, F)."""
    g, w, best = torch.Generator().manual_seed(seed), torch.ones(len(X)) if weight is None else weight, (None, math.inf)
    xx, Xw = (X * X).sum(1, keepdim=True), X * w[:, None]  # (N, 1), (N, F): computed once, not per step
    for _ in range(restarts):
        C = X[torch.multinomial(w, 1, generator=g)]
        for _ in range(K - 1):  # k-means++: next centre drawn with probability ~ weight * squared distance
            d2 = sq_dist(X, C, xx).min(1).values * w
            C = torch.cat([C, X[torch.multinomial(d2 / d2.sum(), 1, generator=g)]])
        previous = None
        for _ in range(50):  # Lloyd steps; an assignment that repeats is a fixed point: C would not change again
            assign = sq_dist(X, C, xx).argmin(1)  # (N,)
            if previous is not None and torch.equal(assign, previous):
                break
            previous = assign
            mass = torch.zeros(K).index_add_(0, assign, w)  # (K,)
            sums = torch.zeros_like(C).index_add_(0, assign, Xw)  # (K, F)
            C = torch.where(mass[:, None] > 0, sums / mass.clamp(min=1e-12)[:, None], C)  # (K, F); empty: keep
        best = min(best, (C, float((sq_dist(X, C, xx).min(1).values * w).sum())), key=lambda b: b[1])
    return best[0]


def best_one_to_one(counts: np.ndarray) -> np.ndarray:
    """counts (K, R): cluster x role co-occurrences -> role of each cluster (-1: none); distinct roles, the
    assignment with the most correct tokens (Hungarian algorithm, exact)."""
    rows, cols = linear_sum_assignment(-counts)
    mapping = np.full(counts.shape[0], -1)
    mapping[rows] = cols
    return mapping


def v_measure(gold: np.ndarray, cluster: np.ndarray) -> float:
    """V-measure (Rosenberg and Hirschberg 2007): harmonic mean of homogeneity I(C;K)/H(C) and completeness
    I(C;K)/H(K) of a clustering K against the gold roles C. Needs no mapping from clusters to roles."""
    p = np.zeros((gold.max() + 1, cluster.max() + 1))
    np.add.at(p, (gold, cluster), 1.0 / gold.size)
    ent = lambda q: float(-(q[q > 0] * np.log(q[q > 0])).sum())  # noqa: E731
    h_c, h_k = ent(p.sum(1)), ent(p.sum(0))
    mi = h_c + h_k - ent(p.ravel())
    hom, com = (mi / h_c if h_c else 1.0), (mi / h_k if h_k else 1.0)
    return 2 * hom * com / (hom + com) if hom + com else 0.0


def fit_readout(split: str, Z: torch.Tensor, gold: np.ndarray, ids: torch.Tensor, K_roles: int, cfg: Config,
                seed: int) -> dict:
    """Fit every read-out on one split's frozen states (Z (N, H), gold and word ids (N,)); train_a only."""
    if split != "train_a":
        raise ValueError(f"fit_readout got split {split!r}: read-outs are fitted on train_a only, then applied "
                         f"unchanged to the other splits")
    X, w, out = F.normalize(Z, dim=1), (1.0 / torch.bincount(ids)[ids].float()) if cfg.type_weighted else None, {}
    for K in (7, 14, 28):
        C = kmeans(X, K, seed + K, w)  # no labels up to here
        counts = np.zeros((K, K_roles), dtype=np.int64)
        np.add.at(counts, (sq_dist(X, C).argmin(1).numpy(), gold), 1)  # labels only name the clusters
        out[K] = (C, {f"M:1 K={K}": counts.argmax(1), **({"1:1 K=7": best_one_to_one(counts)} if K == 7 else {})})
    g = torch.Generator().manual_seed(seed)  # the probe: softmax regression, USES LABELS (an upper bound)
    idx, mean, std = torch.randperm(len(Z), generator=g)[:40000], Z.mean(0), Z.std(0) + 1e-6
    lin = nn.Linear(Z.shape[1], K_roles)
    nn.init.normal_(lin.weight, std=0.01, generator=g), nn.init.zeros_(lin.bias)
    opt = torch.optim.Adam(lin.parameters(), lr=0.05)
    Xp, yp = (Z[idx] - mean) / std, torch.from_numpy(gold)[idx]  # the probe's training set, standardised once
    with torch.enable_grad():
        for _ in range(150):  # full batch
            opt.zero_grad(), F.cross_entropy(lin(Xp), yp).backward()
            opt.step()
    return {**out, "probe": (lin, mean, std)}


@torch.no_grad()
def apply_readout(readout: dict, Z: torch.Tensor) -> tuple[dict[str, np.ndarray], dict[int, np.ndarray]]:
    """Frozen states (N, H) -> ({read-out: role ids (N,), -1 = no role}, {K: cluster ids (N,)})."""
    X, preds, clusters = F.normalize(Z, dim=1), {}, {}
    for K in (7, 14, 28):
        C, maps = readout[K]
        clusters[K] = sq_dist(X, C).argmin(1).numpy()
        preds.update({name: m[clusters[K]] for name, m in maps.items()})
    lin, mean, std = readout["probe"]
    preds["probe"] = lin((Z - mean) / std).argmax(1).numpy()
    return preds, clusters


def score(f: dict, pred: np.ndarray, roles: list[str] | None = None) -> dict:
    """Token accuracy overall and on sd tokens; with roles, also recall per gold role and accuracy per construction."""
    correct, out, g, cons = pred == f["gold"], {}, f["gold"], f["construction"]
    if roles:
        out = {"per_role": {r: float(correct[g == k].mean()) for k, r in enumerate(roles) if (g == k).any()},
               "per_construction": {c: float(correct[cons == c].mean()) for c in sorted(set(cons))}}
    return {"accuracy": float(correct.mean()), "sd": float(correct[f["sd"]].mean()), **out}


def evaluate_model(model: SPCN, sentences: dict[str, list[dict]], meta: dict, flat: dict, seed: int,
                   splits: tuple[str, ...]) -> dict:
    """States of train_a fit the read-outs; every split in `splits` is scored with them unchanged."""
    fit_on = encode(sentences["train_a"][:READOUT_SENTENCES], meta["vocabulary"])
    gold = flat["train_a"]["gold"][:sum(len(s) for s in fit_on)]
    readout = fit_readout("train_a", states(model, fit_on), gold, torch.cat(fit_on), len(meta["roles"]),
                          model.cfg, seed)
    var, c = torch.cat([model.var_x, model.var_c]), model.cfg  # unclamped relative precision: a saturated clamp?
    raw = var.log().mean().exp() / var
    result = {"precision_min_p10_median_p90_max": raw.quantile(torch.tensor([0, .1, .5, .9, 1])).tolist(),
              "precision_clamped": float(((raw >= c.precision_max) | (raw <= c.precision_min)).float().mean())}
    for split in splits:
        data, f = encode(sentences[split], meta["vocabulary"]), flat[split]
        preds, clusters = apply_readout(readout, states(model, data))
        result[split] = {name: score(f, p, meta["roles"] if name == HEADLINE else None) for name, p in preds.items()}
        result[split].update({f"V K={K}": v_measure(f["gold"], cl) for K, cl in clusters.items()})
        if model.cfg.use_spa and model.cfg.read_from == "latent" and split == "dev_a":  # K = 14 moves without mu?
            no_prior = apply_readout(readout, states(model, data, prior=False))[1][14]
            result[split]["prior_moves_cluster"] = float((no_prior != clusters[14]).mean())
    return result


WINDOW_BACKOFF = ((-2, -1, 0, 1, 2), (-2, -1, 1, 2), (-1, 0, 1), (-1, 1), (0,))  # offsets of each key, tried in order


def window_lookup(train: list[dict], roles: list[str]):
    """The +-2-word window lookup (labels), fitted on `train`: a function split -> (N,) role ids in file order. Each
    token gets the majority train_a role of its most specific key seen in train_a, backing off from the 5 words
    around t, to the 4 context words without t itself (so a held-out noun in its unseen role still finds its
    context), to the 3 words around t, to its 2 neighbours, to the word alone. Sentence edges are padded with <s>
    and </s>; ties go to the first role."""
    def keys(tokens: list[str], i: int) -> list[tuple]:
        p = ["<s>", "<s>"] + tokens + ["</s>", "</s>"]
        return [(k, *(p[i + 2 + o] for o in offs)) for k, offs in enumerate(WINDOW_BACKOFF)]

    index, counts = {r: k for k, r in enumerate(roles)}, {}
    for s in train:
        for i, r in enumerate(s["roles"]):
            for key in keys(s["tokens"], i):
                counts.setdefault(key, np.zeros(len(roles), dtype=np.int64))[index[r]] += 1
    return lambda split: np.array([int(counts[next(k for k in keys(s["tokens"], i) if k in counts)].argmax())
                                   for s in split for i in range(len(s["tokens"]))], dtype=np.int64)


def floors(sentences: dict[str, list[dict]], meta: dict, flat: dict, splits: tuple[str, ...]) -> dict:
    """Model-free floors, all fitted on train_a (labels), each with accuracy, sd accuracy and the V-measure of its
    predictions: the word -> majority role lookup (ties: first role, as in bigru_baseline.py); the same lookup with
    every ambiguous word (more than one train_a role) and every held-out noun (meta.json) called AGENT, i.e. the
    constant AGENT on sd tokens; the +-2-word window lookup (window_lookup). Also word identity as a clustering
    (one-to-one on the read-out sample; V-measure)."""
    ids, gold = torch.cat(encode(sentences["train_a"], meta["vocabulary"])).numpy(), flat["train_a"]["gold"]
    counts = np.zeros((2, len(meta["vocabulary"]) + 1, len(meta["roles"])), dtype=np.int64)
    n_fit = sum(len(s["tokens"]) for s in sentences["train_a"][:READOUT_SENTENCES])
    np.add.at(counts, ((np.arange(len(ids)) >= n_fit).astype(int), ids, gold), 1)  # [0]: read-out sample, [1]: rest
    lookup, one_to_one, out = counts.sum(0).argmax(1), best_one_to_one(counts[0]), {}
    held_out = {h["noun"] for h in meta["held_out_pairings"]}
    as_agent = np.array([False] + [len(meta["train_roles_by_word"][w]) > 1 or w in held_out
                                   for w in meta["vocabulary"]])  # (V + 1,), row 0 = padding
    agent_rule, window = np.where(as_agent, meta["roles"].index("AGENT"), lookup), window_lookup(
        sentences["train_a"], meta["roles"])
    with_v = lambda f, pred: {**score(f, pred), "V": v_measure(f["gold"], pred)}  # noqa: E731
    for s in splits:
        f, ids = flat[s], torch.cat(encode(sentences[s], meta["vocabulary"])).numpy()
        out[s] = {"lookup": with_v(f, lookup[ids]), "ambiguous as AGENT": with_v(f, agent_rule[ids]),
                  "window +-2": with_v(f, window(sentences[s])),
                  "word identity 1:1": score(f, one_to_one[ids]), "word identity V": v_measure(f["gold"], ids)}
    return out


# ---------------------------------------------------------------- training loop
@torch.no_grad()
def train(sentences: list[dict], vocabulary: list[str], cfg: Config, seed: int, quiet: bool = True,
          desc: str = "") -> tuple[SPCN, list[dict]]:
    """Unsupervised training on the tokens of `sentences` (role labels, if present, are never read)."""
    data = encode(sentences, vocabulary)
    codes = word_codes(data, len(vocabulary) + 1, cfg.codes, cfg, seed)
    c_codes = word_classes(sentences, vocabulary, seed) if cfg.context_codes == "classes" else \
        word_codes(data, len(vocabulary) + 1, cfg.context_codes, cfg, seed)
    if cfg.trace_weight == "surprisal":  # frequent words ("the", "a", "was") weigh less in the traces; mean weight 1
        count = torch.bincount(torch.cat(data), minlength=len(vocabulary) + 1).float()
        surprisal = -(count.clamp(min=1) / count.sum()).log()
        c_codes = c_codes * (surprisal / (count * surprisal).sum() * count.sum())[:, None]
    n, s1, s2 = 0, 0.0, 0.0  # one pass for the context's per-dimension mean and std over training tokens
    for _, ids, lengths in batches(data, 512, None):
        c = context_traces(c_codes[ids], lengths, cfg)[torch.arange(ids.shape[1])[None, :] < lengths[:, None]]
        n, s1, s2 = n + len(c), s1 + c.sum(0), s2 + (c ** 2).sum(0)
    model = SPCN(codes, c_codes, s1 / n, (s2 / n - (s1 / n) ** 2).clamp(min=0).sqrt() + 1e-6, cfg, seed)
    gen = torch.Generator().manual_seed(seed + 1000)  # batch order, independent of the init stream
    plan = [b for _ in range(cfg.epochs) for b in batches(data, cfg.batch_size, gen)] if cfg.read_from == "latent" \
        else []  # the inputs do not depend on the Hebbian weights: nothing to train
    log, t0, n_tok = [], time.time(), 0
    bar = tqdm(plan, desc=desc or f"seed {seed}", disable=quiet, mininterval=1.0)
    for step, (_, ids, lengths) in enumerate(bar):
        _, st = run_batch(model, ids, lengths, learn=True)
        n_tok += int(lengths.sum())
        bar.set_postfix(**{k: f"{v:.3f}" for k, v in st.items()}, tok_s=f"{n_tok / (time.time() - t0):.0f}")
        if step % 50 == 0 or step == len(plan) - 1:
            log.append({"step": step, **st, "seconds": round(time.time() - t0, 1)})
    return model, log


# ---------------------------------------------------------------- variant (issue 24): traces of learned word classes
def word_classes(sentences: list[dict], vocabulary: list[str], seed: int) -> torch.Tensor:
    """(V, H) one-hot word classes for the traces to average, learned with zero labels: a word type's class is the
    most active unit of its mean settled latent over its train_a tokens, under the selected SPCN (Config's
    defaults, same seed). Row 0 (padding) is 0. The traces then carry sequences of classes, not of word identities."""
    model, _ = train(sentences, vocabulary, Config(), seed)
    data = encode(sentences, vocabulary)
    Z, ids, V = states(model, data), torch.cat(data), len(vocabulary) + 1  # (N, H), (N,)
    mean = torch.zeros(V, Z.shape[1]).index_add_(0, ids, Z) / torch.bincount(ids, minlength=V).clamp(min=1)[:, None]
    classes = F.one_hot(mean.argmax(1), Z.shape[1]).float()  # (V, H)
    classes[0] = 0
    return classes


# ---------------------------------------------------------------- CLI
ABLATIONS = {  # name -> what changes: each newly active part, and the floor without context
    "no_traces": dict(use_traces=False, use_spa=False),  # the current word's code only (a floor)
    "no_spa": dict(use_spa=False),                       # traces only: mu = 0, so g pulls z towards 0 (a ridge)
    "paper_gamma": dict(w_prior=0.3),                    # the paper's gamma: does the prior's weight matter?
    "no_precision": dict(use_precision=False),           # every precision 1
    "no_bottleneck": dict(active=10 ** 6),               # dense latent: every unit may be on
    "codes_both": dict(codes="both"),                    # a word's own code also from its right neighbour
    "token_weighted": dict(type_weighted=False),         # plain k-means read-out (same model, other read-out)
    "read_inputs": dict(read_from="inputs"),             # read-outs of the raw inputs [x; c], no network (a floor)
    "read_codes": dict(read_from="codes"),               # read-outs of the word codes x alone (no context)
}
ATTEMPTS = {  # issue 24's moonshot: the best 3 of 14 dev_a configurations (results/roles/README.md); not run by default
    "dense_forward": dict(active=10 ** 6, direction="forward"),
    "class_traces": dict(context_codes="classes", read_from="inputs"),  # read-outs of [x; traces of classes]
    "class_traces_forward": dict(context_codes="classes", read_from="inputs", direction="forward"),
}
ABLATIONS.update(ATTEMPTS)


def listed(kind, flag: str, ok, need: str):
    """argparse type: comma-separated values of `kind`, each passing `ok`; a clear error naming the flag."""
    def parse(text: str) -> tuple:
        vals = tuple(v.strip() for v in text.split(",") if v.strip())
        try:
            good = bool(vals) and all(ok(kind(v)) for v in vals)
        except ValueError:
            good = False
        if not good:
            raise argparse.ArgumentTypeError(f"{flag} {text!r}: {need}")
        return tuple(map(kind, vals))
    return parse


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    c = Config()
    ap = argparse.ArgumentParser(description="Hebbian predictive-coding role assignment (arXiv 2604.08556)",
                                 allow_abbrev=False, formatter_class=help_formatter())
    add = ap.add_argument

    def count(flag: str):  # a flag that takes one positive integer
        return lambda text: listed(int, flag, lambda v: v > 0, "must be a positive integer")(text)[0]

    add("--data-dir", default=str(REPO / "data" / "roles"), help="role benchmark (made by data/roles/prepare.py)")
    add("--out-dir", default=str(REPO / "runs" / "hebbian"), help="where results.json and metrics.jsonl go")
    fresh_or_not = ap.add_mutually_exclusive_group()
    fresh_or_not.add_argument("--resume", action="store_true", help="keep the (variant, seed) runs an earlier run of "
                              "these settings finished in --out-dir (seeds/) and run the others")
    fresh_or_not.add_argument("--overwrite", action="store_true", help="replace the results of an earlier run in "
                              "--out-dir")
    add("--bigru-results", default=str(REPO / "runs" / "bigru" / "results.json"),
        help="BiGRU results for the ratios (make them: python bigru_baseline.py)")
    add("--seeds", type=listed(int, "--seeds", lambda s: s >= 0, "seeds are integers >= 0, e.g. 0,1,2"),
        default="0,1,2", help="comma-separated seeds (codes, weights, batch order, k-means)")
    add("--ablations", default=",".join(a for a in ABLATIONS if a not in ATTEMPTS),
        help="comma-separated ablations after the main model, or none",
        type=listed(str, "--ablations", lambda a: a in ABLATIONS or a == "none", f"choose from {list(ABLATIONS)}"))
    add("--dev-only", action="store_true", help="tuning mode: score dev_a only, never compute a test-split state")
    add("--codes", default=c.codes, choices=("left", "both"), help="code of the word itself (see docstring)")
    add("--context-codes", default=c.context_codes, choices=("left", "both"), help="codes the traces average")
    add("--hidden", type=count("--hidden"), default=c.hidden, help="H, latent units")
    add("--active", type=count("--active"), default=c.active, help="k, latent units on at once (>= H: dense)")
    add("--alphas", type=listed(float, "--alphas", lambda a: 0 < a <= 1, "each alpha must lie in (0, 1]"),
        default=",".join(map(str, c.alphas)), help="trace timescales")
    add("--direction", default=c.direction, choices=("forward", "both"), help="traces of earlier (+ later) words")
    add("--w-prior", type=float, default=c.w_prior, help="gamma, SPA prior weight (alpha, beta: paper, fixed)")
    add("--no-spa", action="store_true", help="ablation: no SPA prior (mu = 0)")
    add("--no-traces", action="store_true", help="ablation: no traces and no SPA (current word only)")
    add("--no-precision", action="store_true", help="ablation: every precision fixed at 1")
    add("--token-weighted", action="store_true", help="read-out: plain k-means instead of 1/word-type-count")
    add("--quiet", action="store_true", help="no progress bar")
    args = ap.parse_args(argv)
    if not 0 <= args.w_prior < 1e3:
        ap.error(f"--w-prior {args.w_prior}: must lie in [0, 1000) (0 = no prior; the default is 1.0)")
    check_ranges(ap, args, non_negative=("seeds",))  # a seed given twice would count twice in the mean
    return args


def config_from_args(args: argparse.Namespace) -> Config:
    return Config(**{k: v for k, v in vars(args).items() if k in Config.__dataclass_fields__},
                  use_spa=not (args.no_spa or args.no_traces), use_traces=not args.no_traces,
                  use_precision=not args.no_precision, type_weighted=not args.token_weighted)


# ---------------------------------------------------------------- main
def pct(v: dict | None, key: str = "accuracy") -> str:
    """'mean +- std' in % from a summarise_seeds entry."""
    v = v[key] if v and key in v else v
    return f"{100 * v['mean']:.1f} +- {100 * v['std']:.1f}" if v and "mean" in v else "-"


def table(res: dict) -> str:
    """Per split every read-out (accuracy / sd accuracy, %), the lookup and the BiGRU; then each variant's headline."""
    v, fl, bg = res["variants"], res["floors"], res.get("bigru_summary", {})
    both = lambda d, k="sd": f"{pct(d)} / {pct(d, k)}"  # noqa: E731
    floor = lambda s: "; ".join(f"{n} {100 * fl[s][n]['accuracy']:.1f} / {100 * fl[s][n]['sd']:.1f}"  # noqa: E731
                                for n in ("lookup", "ambiguous as AGENT", "window +-2"))
    rows = [f"{s}: " + "; ".join(f"{n} {both(h[n])}" for n in READOUTS) + f"; V K=14 {pct(h['V K=14'])}; "
            f"{floor(s)}; BiGRU {both(bg.get(s), 'structure_dependent_accuracy')}"
            for s, h in v["hebbian"]["summary"].items()]
    rows += [f"ratio to the BiGRU ({HEADLINE}), {s}: {r[HEADLINE]['accuracy']:.3f} overall, {r[HEADLINE]['sd']:.3f} sd"
             for s, r in res.get("ratio_to_bigru", {}).items()]
    return "\n".join(rows + [f"{n:14s} " + " | ".join(f"{s} {both(x[HEADLINE])}" for s, x in var["summary"].items())
                             for n, var in v.items()])


def bigru_summary(path: str, meta: dict, dev_only: bool) -> dict | None:
    """The BiGRU's summary for the ratios (None: no file), checked before any training."""
    if not Path(path).exists():
        print(f"{path} not found: no BiGRU columns; make them with `python bigru_baseline.py`")
        return None
    bg = read_json(path, fix := "make it with `python bigru_baseline.py` on the same --data-dir, or point "
                               "--bigru-results at its results.json")
    if not isinstance(bg, dict) or bg.get("script") != "bigru_baseline.py" or "summary" not in bg:
        fault = "it is not the results.json of bigru_baseline.py"
    elif bg.get("dev_only") and not dev_only:
        fault = "it holds a tuning run's dev_a scores only (--dev-only)"
    elif bg.get("data", {}).get("files") != meta["files"]:
        fault = "the BiGRU was trained and scored on other benchmark files (meta.json's sha256 differ)"
    else:
        return bg["summary"]
    raise SystemExit(f"--bigru-results {path}: {fault}; {fix}")


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    cfg, seeds, t_start = config_from_args(args), list(args.seeds), time.time()
    out_dir, suffix = Path(args.out_dir), "_dev" if args.dev_only else ""  # tuning runs write *_dev files
    meta, sentences = load_role_data(args.data_dir)
    bg = bigru_summary(args.bigru_results, meta, args.dev_only)
    flat = {s: flatten_split(sentences[s], meta) for s in SPLITS}
    splits = ("dev_a",) if args.dev_only else EVAL_SPLITS  # tuning never computes a test-split state
    variants = {"hebbian": cfg, **{a: replace(cfg, **ABLATIONS[a]) for a in args.ablations if a != "none"}}
    env, out_variants = run_info("cpu"), {}
    part = {(n, s): out_dir / f"seeds{suffix}" / f"{n}-s{s}.json" for n in variants for s in seeds}  # a finished run
    kept = finished_parts(part, args, ("seeds", "ablations", "quiet", "bigru_results")) if args.resume else {}
    done = list(kept)  # checked before anything is trained

    def stopped() -> str:
        if not done:
            return "stopped before any run had finished; add --resume to start again"
        return (f"stopped; the {len(done)} finished (variant, seed) runs are kept in {out_dir / f'seeds{suffix}'}; "
                "add --resume to run the others")
    with RunFolder(out_dir, args.resume, args.overwrite, protected=(f"results{suffix}.json", f"metrics{suffix}.jsonl",
                                                                    f"seeds{suffix}/*.json")), \
            StopOnSignal(at_once=stopped), open(out_dir / f"metrics{suffix}.jsonl", "a" if args.resume else "w",
                                                 buffering=1) as log:  # line-buffered: rows land at once
        log.write(json.dumps({"config": asdict(cfg), "seeds": seeds, "args": portable(vars(args)), **env}) + "\n")
        for name, vcfg in variants.items():
            per_seed = []
            for seed in seeds:
                if (name, seed) in kept:
                    per_seed.append(kept[name, seed])
                    continue
                t0 = time.time()  # (token_weighted retrains: training is deterministic and never reads it)
                model, train_log = train(sentences["train_a"], meta["vocabulary"], vcfg, seed, args.quiet,
                                         f"{name} seed {seed}")
                per_seed.append(res := {**evaluate_model(model, sentences, meta, flat, seed, splits), "seed": seed,
                                        "seconds": round(time.time() - t0, 1)})
                log.write(json.dumps({"variant": name, "seed": seed, "train_log": train_log,
                                      "final": {s: res[s][HEADLINE] for s in splits}}) + "\n")
                write_json_atomic(part[name, seed], {"args": portable(vars(args)), "result": res})
                done.append((name, seed))
            out_variants[name] = {"config": asdict(vcfg), "per_seed": per_seed,
                                  "summary": {s: summarise_seeds([r[s] for r in per_seed]) for s in splits}}
    res = {"script": "hebbian_roles.py", "config": asdict(cfg), "seeds": seeds, "headline_readout": HEADLINE,
           "dev_only": args.dev_only, "floors": floors(sentences, meta, flat, splits), "variants": out_variants,
           "env": env}
    if bg is not None:
        res["bigru_summary"] = bg
        h = out_variants["hebbian"]["summary"]
        res["ratio_to_bigru"] = {s: {n: {"accuracy": h[s][n]["accuracy"]["mean"] / bg[s]["accuracy"]["mean"],
                                         "sd": h[s][n]["sd"]["mean"] / bg[s]["structure_dependent_accuracy"]["mean"]}
                                     for n in READOUTS} for s in splits if s in bg}
    res["wall_seconds"] = round(time.time() - t_start, 1)
    write_json_atomic(path := out_dir / f"results{suffix}.json", res)
    print(table(res))
    print(f"{len(seeds)} seeds, wall {res['wall_seconds']} s -> {path}")
    return res


if __name__ == "__main__":
    command_line(main, out_of_memory="lower --hidden")
