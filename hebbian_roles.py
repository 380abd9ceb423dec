"""Grammatical roles with zero labels: a Hebbian predictive-coding network over multi-timescale EMA traces.

Hypothesis. The paper (arXiv 2604.08556) reports that an unsupervised Hebbian network whose only context is EMA
traces (alpha 0.5, 0.1, 0.02) assigns grammatical roles at 96% of a supervised BiGRU's accuracy, with zero labels,
and beats the BiGRU on structure-dependent roles (held-out: within A 96, transfer B 61.8, deep 84). This script
builds such a network on the benchmark of data/roles/prepare.py and scores it against bigru_baseline.py
(runs/bigru/results.json), with the same splits and the same metric code.

What changes relative to bigru_baseline.py. No labels during training and no backpropagation at all: the model
reads token ids only, settles latent states by iterative inference and learns by local Hebbian rules. Role labels
enter only the read-out, fitted on train_a's frozen states and applied unchanged to dev_a and the test splits:
K = 7 k-means clusters mapped one-to-one to the 7 roles (the bijection with the best train_a accuracy). Secondary
read-outs: many-to-one with K = 14 clusters (each cluster -> its majority train_a role), and a linear probe
trained on train_a *labels* (a supervised upper bound on what the states hold linearly, not a zero-label number).

The model (the paper gives only the constants; the equations are ours). Per token t of a sentence:
  x_t      = code of the word, fixed while the SPCN learns. --codes random: an N(0, 1) vector per word type
           (D dims). --codes learned (default, chosen on dev_a): each word's code is the mean, over its train_a
           occurrences, of the fast traces (a = 0.5) of the random codes of its neighbours before and after it
           (2D dims, standardised) -- what the local rule code_w += (c_t - code_w) / n_w (a Hebbian delta rule,
           rate 1/n) reaches in one pass -- so words with similar neighbours (determiners, verbs, animate nouns)
           get similar codes. Neither kind ever receives a gradient or a label.
  traces   h_t^s = (1 - a_s) h_{t-1}^s + a_s x_t, h_{-1} = 0, a_s in ALPHAS, the same chunked scan as ema_lm.py.
           The context c_t stacks, per timescale, the left traces h_{t-1}^s (words before t) and, with
           --direction both, the same traces run over the reversed sentence (words after t). Each trace is
           divided by 1 - (1 - a_s)^n (n = words it has seen), so every timescale is a weighted *mean* of its
           words: otherwise the slow trace (a = 0.02) is 50x smaller than the fast one after one word and its
           errors would sit at the precision clamp.
  latent   z_t >= 0, H units, found by settling (iterative inference) on the energy
     E(z) = alpha/2 sum_i pi^x_i (x_t - W_x z)_i^2          input prediction error  (alpha = 1.0)
          + beta /2 sum_k pi^c_k (c_t - W_c z)_k^2          context prediction error (beta = 0.5)
          + gamma/2 ||z - mu_t||^2                          temporal prior from SPA  (gamma = 0.3)
          + lambda sum_j z_j                                optional sparsity (lambda = 0 by default)
     W_fb = [W_x; W_c] are the feedback (top-down) weights: the latent explains both the current word and its
     trace context, so tokens whose words *and* contexts agree fall on similar latents, which is what a role is.
     alpha > beta because the word is the strongest single cue; beta > gamma because the prior is a guess from
     memory and should bend, not fix, the state.
     Settling is projected gradient descent, z <- max(0, z - grad E / L), from z = 0, for settle_steps steps;
     L = lambda_max(alpha W_x^T P_x W_x + beta W_c^T P_c W_c) + gamma is the Lipschitz constant of grad E, which
     makes every step lower E (proximal gradient with step 1/L on a convex energy).
  SPA      mu_t = W_spa a_t, a_t = sum over the top 4 (by score) of the 8 most recent latents z_j of the
           sentence, softmax(score_j) z_j, score_j = z_j . q_t / sqrt(H), q_t = relu(W_fb^T P [alpha x_t;
           beta c_t]) the bottom-up drive (fixed during settling, so E stays convex in z). The SPA is a second
           path from earlier words besides the traces; --no_spa removes it (mu_t = 0).
  precision pi = 1 / running variance of each error dimension (EMA over batches, rate 0.05), clamped to
           [0.1, 10]; units whose errors are large count less.
  learning after each batch, with the settled z (mean over the batch's tokens, eta = 0.01, decay 0.001):
           W_x  += eta * (alpha pi^x * e_x) z^T - 0.001 W_x      (= -eta dE/dW_x: error times activity)
           W_c  += eta * (beta  pi^c * e_c) z^T - 0.001 W_c
           W_spa+= eta * (gamma (z - mu))  a^T  - 0.001 W_spa
  No gradient from any label, no backpropagation through time: every update is a product of a local error and
  a local activity.

Commands.
  CPU (the reported run):  OMP_NUM_THREADS=1 python hebbian_roles.py        (3 seeds + 3 ablations, table)
  Tuning (dev_a only):     OMP_NUM_THREADS=1 python hebbian_roles.py --dev_only --seeds 0 --ablations none ...
  GPU:                     not supported and not needed (the model is tiny); --device is absent on purpose.
  Tests:                   OMP_NUM_THREADS=1 python -m pytest -q tests/test_hebbian_roles.py
  Output:                  runs/hebbian/results.json and runs/hebbian/metrics.jsonl (--out_dir).

Measured (`OMP_NUM_THREADS=1 python hebbian_roles.py`; seeds 0, 1, 2; 2-core CPU "Intel(R) Xeon(R) Processor",
1 thread; 193 s wall on a lightly loaded machine). Token accuracy, one-to-one read-out, test_a / test_b /
test_deep: 49.3 +- 9.3 / 46.7 +- 14.7 / 51.3 +- 12.7; the BiGRU gets 99.9 / 92.6 / 98.3. Ratio on test_a: 0.49
(paper 0.96), NOT reproduced. Many-to-one (K = 14) gives 76.9 and the label-using probe 83.5 on test_a. So the
1:1 read-out is the bottleneck (FUNCTION words take several clusters, nouns share one), and the traces help only
on structure-dependent tokens: test_a sd 42.0 against 19.0 with the current word only. README.md
"Structure: grammatical roles" has the full table, the per-role numbers and the ablations.

Tuning (dev_a only, seed 0, 1:1 accuracy): 3 configurations, listed in the README with every run, so MORE tuning
than the BiGRU (1 configuration, its appendix one, and early stopping on dev_a). Chosen: learned codes, forward
traces (49.1 on dev_a with 5000 training sentences).

Glossary. B sentences in a batch, T longest sentence, D code width, S timescales, Dc context width (S*D, or
2*S*D with --direction both), H latent units, K clusters, N tokens of a split, W SPA window. "sd" =
structure-dependent token (see bigru_baseline.py). Paper symbols: alpha, beta, gamma (settling weights), pi
(precision), W_fb (feedback weights).
"""
# ---------------------------------------------------------------- imports
from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import math
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

REPO = Path(__file__).resolve().parent
ALPHAS = (0.5, 0.1, 0.02)  # paper, Figure 1: fast, medium, slow; constants, never learned
READOUT_SENTENCES = 5000  # the read-outs are fitted on the first 5000 train_a sentences (~43k tokens): CPU time
PAPER = {"test_a": 0.96, "test_b": 0.618, "test_deep": 0.84, "ratio_to_bigru": 0.96}


# ---------------------------------------------------------------- config / CLI
@dataclass
class Config:
    codes: str = "learned"      # "learned" (dev_a: 49.1 vs 38.4 for "random"; see the tuning list) or "random"
    code_dim: int = 64          # D: random codes for ~90 word types; 64 dims keeps them nearly orthogonal
    hidden: int = 64            # H latent units: enough to code word classes x contexts, small enough to share
    alphas: tuple = ALPHAS      # trace timescales (paper); the one-timescale ablation keeps (0.1,)
    direction: str = "forward"  # traces of the words before t only (dev_a: 49.1 vs 39.6 for "both")
    w_input: float = 1.0        # alpha (paper): weight of the input prediction error
    w_context: float = 0.5      # beta (paper): weight of the trace-context prediction error
    w_prior: float = 0.3        # gamma (paper): weight of the SPA temporal prior
    sparsity: float = 0.0       # lambda: L1 on z (not in the paper; 0 = off unless dev_a says otherwise)
    settle_steps: int = 20      # inference steps per token; energy is near its minimum by then
    lr: float = 0.01            # paper: Hebbian learning rate of W_fb
    weight_decay: float = 0.001  # paper: weight decay of W_fb (applied per update, decoupled)
    precision_rate: float = 0.05  # EMA rate of the error variances (per batch)
    precision_min: float = 0.1  # paper: precision clamp
    precision_max: float = 10.0  # paper: precision clamp
    spa_window: int = 8         # paper appendix: buffer of 8 recent states
    spa_topk: int = 4           # paper appendix: keep the top 4
    use_spa: bool = True        # --no_spa ablation
    use_traces: bool = True     # --no_traces ablation (current word only; also turns the SPA off)
    epochs: int = 1             # passes over train_a; the weights settle well within one
    batch_size: int = 64        # sentences per Hebbian update (~550 tokens)
    init_scale: float = 0.1     # std of the initial feedback weights
    cluster_norm: bool = True   # cluster unit-length states (cosine k-means) rather than raw ones


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    c = Config()
    ap = argparse.ArgumentParser(description="Hebbian predictive-coding role assignment (arXiv 2604.08556)")
    ap.add_argument("--data_dir", default=str(REPO / "data" / "roles"),
                    help="folder with the role benchmark; generated there by data/roles/prepare.py if missing")
    ap.add_argument("--out_dir", default=str(REPO / "runs" / "hebbian"),
                    help="where results.json and metrics.jsonl are written")
    ap.add_argument("--bigru_results", default=str(REPO / "runs" / "bigru" / "results.json"),
                    help="BiGRU results for the side-by-side table (make them: python bigru_baseline.py --seeds 0,1,2)")
    ap.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (codes, weights, batch order, k-means)")
    ap.add_argument("--ablations", default="no_traces,one_timescale,no_spa",
                    help="comma-separated ablations to run after the main model, or 'none'")
    ap.add_argument("--dev_only", action="store_true",
                    help="tuning mode: score dev_a only and never compute test-split states")
    ap.add_argument("--max_train", type=int, default=0, help="use only the first N train_a sentences (0 = all)")
    ap.add_argument("--codes", default=c.codes, choices=("random", "learned"),
                    help="word codes: fixed random, or learned by a local averaging rule before the SPCN trains")
    ap.add_argument("--code_dim", type=int, default=c.code_dim, help="D, width of the random word codes")
    ap.add_argument("--hidden", type=int, default=c.hidden, help="H, latent units")
    ap.add_argument("--alphas", default=",".join(map(str, c.alphas)), help="trace timescales, e.g. 0.5,0.1,0.02")
    ap.add_argument("--direction", default=c.direction, choices=("forward", "both"),
                    help="traces of earlier words only, or of earlier and later words")
    ap.add_argument("--w_input", type=float, default=c.w_input, help="alpha, input error weight")
    ap.add_argument("--w_context", type=float, default=c.w_context, help="beta, context error weight")
    ap.add_argument("--w_prior", type=float, default=c.w_prior, help="gamma, SPA prior weight")
    ap.add_argument("--sparsity", type=float, default=c.sparsity, help="lambda, L1 weight on the latent")
    ap.add_argument("--settle_steps", type=int, default=c.settle_steps, help="inference steps per token")
    ap.add_argument("--lr", type=float, default=c.lr, help="Hebbian learning rate")
    ap.add_argument("--weight_decay", type=float, default=c.weight_decay, help="weight decay per update")
    ap.add_argument("--epochs", type=int, default=c.epochs, help="passes over train_a")
    ap.add_argument("--batch_size", type=int, default=c.batch_size, help="sentences per Hebbian update")
    ap.add_argument("--no_spa", action="store_true", help="ablation: no SPA prior (mu = 0)")
    ap.add_argument("--no_traces", action="store_true", help="ablation: no traces and no SPA (current word only)")
    ap.add_argument("--no_cluster_norm", action="store_true", help="k-means on raw rather than unit-length states")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    return ap.parse_args(argv)


def config_from_args(args: argparse.Namespace) -> Config:
    same = {k: v for k, v in vars(args).items() if k in Config.__dataclass_fields__ and k != "alphas"}  # same names
    return Config(**same, alphas=tuple(float(a) for a in args.alphas.split(",")), cluster_norm=not args.no_cluster_norm,
                  use_spa=not (args.no_spa or args.no_traces), use_traces=not args.no_traces)


ABLATIONS = {  # name -> what changes; each is also reachable with the flags of the same name
    "no_traces": dict(use_traces=False, use_spa=False),  # the current word's code only
    "one_timescale": dict(alphas=(0.1,)),                # the medium trace alone
    "no_spa": dict(use_spa=False),                       # traces only, no memory of latents
}


# ---------------------------------------------------------------- data + metrics
# ---- shared role-task code: copied verbatim into hebbian_roles.py (tests compare the copies) ----
SPLITS = ("train_a", "dev_a", "test_a", "test_b", "test_deep")
EVAL_SPLITS = ("dev_a", "test_a", "test_b", "test_deep")
REGENERATE = "rerun `python data/roles/prepare.py --force` to regenerate the benchmark"


def read_role_file(path: Path, roles: list[str], vocab: set[str], expected: int) -> list[dict]:
    """One split file: a JSON object per line with tokens, roles (same length), construction, depth."""
    sentences = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
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
        spec = importlib.util.spec_from_file_location(
            "roles_prepare", Path(__file__).resolve().parent / "data" / "roles" / "prepare.py")
        prepare = sys.modules[spec.name] = importlib.util.module_from_spec(spec)  # dataclasses look it up
        spec.loader.exec_module(prepare)
        print(f"{data_dir}: benchmark files missing, generating them with data/roles/prepare.py (seed 0)")
        prepare.prepare(data_dir)
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


def role_metrics(gold: np.ndarray, pred: np.ndarray, sd: np.ndarray, roles: list[str],
                 construction: np.ndarray | None = None) -> dict:
    """gold, pred: (N,) role ids; sd: (N,) bool. Per-role accuracy is recall of the gold role; the
    confusion matrix has gold roles as rows and predicted roles as columns."""
    assert gold.shape == pred.shape == sd.shape, \
        f"gold {gold.shape}, pred {pred.shape}, sd {sd.shape} differ: pass one entry per token of the split"
    K = len(roles)
    confusion = np.zeros((K, K), dtype=np.int64)
    np.add.at(confusion, (gold, pred), 1)
    correct = gold == pred
    out = {"accuracy": float(correct.mean()),
           "structure_dependent_accuracy": float(correct[sd].mean()) if sd.any() else None,
           "n_tokens": int(gold.size), "n_structure_dependent": int(sd.sum()),
           "per_role": {r: float(confusion[k, k] / confusion[k].sum()) if confusion[k].sum() else None
                        for k, r in enumerate(roles)},
           "confusion": confusion.tolist()}
    if construction is not None:
        out["per_construction"] = {c: float(correct[construction == c].mean()) for c in sorted(set(construction))}
    return out


def summarise_seeds(per_seed: list[dict]) -> dict:
    """Mean and std (ddof=1; 0 for one seed) of every float over seeds; ints are kept (they are counts of
    the same data); lists (confusion matrices) are summed over seeds."""
    first = per_seed[0]
    if isinstance(first, dict):
        return {k: summarise_seeds([d[k] for d in per_seed]) for k in first}
    if isinstance(first, float):
        v = np.array(per_seed, dtype=np.float64)
        return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if v.size > 1 else 0.0,
                "values": [float(x) for x in v]}
    if isinstance(first, list):
        return np.sum(np.array(per_seed), axis=0).tolist()
    return first
# ---- end of shared role-task code ----

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


# ---------------------------------------------------------------- model: the EMA scan (copied from ema_lm.py)
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


def context_traces(x: torch.Tensor, lengths: torch.Tensor, cfg: Config) -> torch.Tensor:
    """x: (B, T, D) codes, zero past each sentence's end -> context c: (B, T, Dc), normalised traces of the
    words before t (and, direction 'both', after t). Never includes the word at t itself."""
    B, T, D = x.shape
    if not cfg.use_traces:
        return x.new_zeros(B, T, 0)
    a = torch.tensor(cfg.alphas).view(1, 1, -1, 1)  # (1, 1, S, 1)
    t = torch.arange(T).view(1, T, 1, 1).float()

    def mean_traces(h: torch.Tensor, n: torch.Tensor) -> torch.Tensor:  # h (B, T, S, D); n words seen
        w = 1 - (1 - a) ** n.clamp(min=1)
        return torch.where(n > 0, h / w, torch.zeros_like(h))

    left = F.pad(ema_scan(x, cfg.alphas, chunk_size=32), (0, 0, 0, 0, 1, 0))[:, :T]  # (B, T, S, D): h_{t-1}
    ctx = [mean_traces(left, t)]
    if cfg.direction == "both":
        # Padding is zero and only precedes the real words in the reversed order, so traces stay 0 there.
        right = ema_scan(x.flip(1), cfg.alphas, chunk_size=32).flip(1)  # (B, T, S, D): words t..end
        right = F.pad(right, (0, 0, 0, 0, 0, 1))[:, 1:]  # words t+1..end
        n_right = (lengths.view(B, 1, 1, 1) - 1 - t).clamp(min=0)
        ctx.append(mean_traces(right, n_right))
    return torch.cat(ctx, 2).reshape(B, T, -1)  # (B, T, Dc)


# ---------------------------------------------------------------- model: word codes
def word_codes(data: list[torch.Tensor], vocab_size: int, cfg: Config, seed: int) -> torch.Tensor:
    """(V, D) codes, row 0 (padding) is 0: N(0, 1) entries for "random"; for "learned" the x_t of the
    module docstring, the mean fast context of each word's occurrences, standardised per dimension."""
    g = torch.Generator().manual_seed(seed)
    codes = torch.randn(vocab_size, cfg.code_dim, generator=g)
    codes[0] = 0
    if cfg.codes == "random":
        return codes
    fast = replace(cfg, alphas=(0.5,), direction="both", use_traces=True)
    sums, counts = torch.zeros(vocab_size, 2 * cfg.code_dim), torch.zeros(vocab_size)
    for _, ids, lengths in batches(data, 512, None):
        c = context_traces(codes[ids], lengths, fast)  # (B, T, 2D)
        sums.index_add_(0, ids.reshape(-1), c.reshape(-1, c.shape[-1]))
        counts.index_add_(0, ids.reshape(-1), torch.ones(ids.numel()))
    learned = sums / counts.clamp(min=1)[:, None]
    learned = (learned - learned[1:].mean(0)) / (learned[1:].std(0) + 1e-6)
    learned[0] = 0
    return learned


# ---------------------------------------------------------------- model: SPCN + SPA
class SPCN(nn.Module):
    """All state is in buffers: nothing here has a gradient, every change is a local Hebbian update."""

    def __init__(self, codes: torch.Tensor, cfg: Config, seed: int):
        super().__init__()
        self.cfg = cfg
        g = torch.Generator().manual_seed(seed + 1)
        D, H = codes.shape[1], cfg.hidden
        Dc = (len(cfg.alphas) * D * (2 if cfg.direction == "both" else 1)) if cfg.use_traces else 0
        self.register_buffer("codes", codes)  # (V, D) fixed during SPCN training, row 0 = padding
        self.register_buffer("W_x", cfg.init_scale * torch.randn(D, H, generator=g))
        self.register_buffer("W_c", cfg.init_scale * torch.randn(Dc, H, generator=g))
        self.register_buffer("W_spa", torch.eye(H) * 0.5)  # start as "the next latent resembles the attended"
        self.register_buffer("var_x", torch.ones(D))
        self.register_buffer("var_c", torch.ones(Dc))

    def precisions(self) -> tuple[torch.Tensor, torch.Tensor]:  # (pi^x (D,), pi^c (Dc,)), clamped
        return tuple((1 / v).clamp(self.cfg.precision_min, self.cfg.precision_max) for v in (self.var_x, self.var_c))

    def lipschitz(self) -> float:
        c, (px, pc) = self.cfg, self.precisions()
        Hs = c.w_input * self.W_x.T @ (px[:, None] * self.W_x) + c.w_context * self.W_c.T @ (pc[:, None] * self.W_c)
        return float(torch.linalg.eigvalsh(Hs)[-1]) + c.w_prior


def energy(model: SPCN, z: torch.Tensor, x: torch.Tensor, c: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
    """E(z) per row: z, mu (B, H), x (B, D), c (B, Dc) -> (B,)."""
    cfg, (px, pc) = model.cfg, model.precisions()
    e_x, e_c = x - z @ model.W_x.T, c - z @ model.W_c.T
    return (0.5 * cfg.w_input * (px * e_x ** 2).sum(1) + 0.5 * cfg.w_context * (pc * e_c ** 2).sum(1)
            + 0.5 * cfg.w_prior * ((z - mu) ** 2).sum(1) + cfg.sparsity * z.sum(1))


def settle(model: SPCN, x: torch.Tensor, c: torch.Tensor, mu: torch.Tensor, L: float,
           record: bool = False) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Projected gradient descent on E from z = 0 with step 1/L; every step lowers E (record=True keeps
    E after each step, for the test)."""
    cfg, (px, pc) = model.cfg, model.precisions()
    z = torch.zeros_like(mu)
    drive = (cfg.w_input * px * x) @ model.W_x + (cfg.w_context * pc * c) @ model.W_c  # (B, H): W_fb^T P [x; c]
    G = (model.W_x.T @ (cfg.w_input * px[:, None] * model.W_x)  # (H, H): the curvature of E
         + model.W_c.T @ (cfg.w_context * pc[:, None] * model.W_c))
    energies = [energy(model, z, x, c, mu)] if record else []
    for _ in range(cfg.settle_steps):
        grad = z @ G - drive + cfg.w_prior * (z - mu) + cfg.sparsity  # dE/dz, (B, H)
        z = (z - grad / L).clamp(min=0)
        if record:
            energies.append(energy(model, z, x, c, mu))
    return z, energies


def spa_prior(model: SPCN, buffer: torch.Tensor, query: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sparse attention over the latents of the last W positions: buffer (B, W, H), query (B, H) ->
    (mu (B, H), attended a (B, H)). Keeps the top k scores (an empty buffer would give zeros)."""
    B, W, H = buffer.shape
    scores = (buffer @ query[:, :, None]).squeeze(2) / math.sqrt(H)  # (B, W)
    top, idx = scores.topk(min(model.cfg.spa_topk, W), dim=1)  # (B, k)
    w = torch.softmax(top, dim=1)
    a = (w[:, :, None] * buffer.gather(1, idx[:, :, None].expand(-1, -1, H))).sum(1)  # (B, H)
    return a @ model.W_spa.T, a


def run_batch(model: SPCN, ids: torch.Tensor, lengths: torch.Tensor, learn: bool) -> tuple[torch.Tensor, dict]:
    """Settle every token of a batch of sentences, left to right; with learn=True apply one Hebbian
    update. ids (B, T) -> latents (B, T, H) and batch statistics."""
    cfg, H = model.cfg, model.cfg.hidden
    B, T = ids.shape
    x = model.codes[ids]  # (B, T, D); padding rows are 0
    c = context_traces(x, lengths, cfg)  # (B, T, Dc)
    L = model.lipschitz()
    px, pc = model.precisions()
    Z, MU, A = (x.new_zeros(B, T, H) for _ in range(3))
    for t in range(T):
        mu, a = x.new_zeros(B, H), x.new_zeros(B, H)
        if cfg.use_spa and t > 0:
            q = ((cfg.w_input * px * x[:, t]) @ model.W_x + (cfg.w_context * pc * c[:, t]) @ model.W_c).relu()
            mu, a = spa_prior(model, Z[:, max(0, t - cfg.spa_window):t], q)
        z, _ = settle(model, x[:, t], c[:, t], mu, L)
        Z[:, t], MU[:, t], A[:, t] = z, mu, a
    live = (torch.arange(T)[None, :] < lengths[:, None]).reshape(-1)  # (B*T,) real tokens
    z, mu, a, xs, cs = (u.reshape(B * T, -1)[live] for u in (Z, MU, A, x, c))  # (N, H) ... (N, Dc)
    e_x, e_c = xs - z @ model.W_x.T, cs - z @ model.W_c.T  # (N, D), (N, Dc)
    stats = {"err_x": float((e_x ** 2).mean()), "err_c": float((e_c ** 2).mean()) if e_c.numel() else 0.0,
             "active": float((z > 0).float().mean())}
    if learn:
        hebbian_update(model, z, e_x, e_c, z - mu, a)
    return Z, stats


def hebbian_update(model: SPCN, z: torch.Tensor, e_x: torch.Tensor, e_c: torch.Tensor, e_z: torch.Tensor,
                   a: torch.Tensor) -> None:
    """Local rules, mean over the N tokens: dW = lr * (weighted error) (presynaptic activity)^T - decay W.
    z, e_z, a: (N, H); e_x (N, D); e_c (N, Dc). Precisions use the errors before this update."""
    cfg, (px, pc) = model.cfg, model.precisions()
    N = z.shape[0]
    model.W_x += cfg.lr * ((cfg.w_input * px * e_x).T @ z) / N - cfg.weight_decay * model.W_x
    model.W_c += cfg.lr * ((cfg.w_context * pc * e_c).T @ z) / N - cfg.weight_decay * model.W_c
    if cfg.use_spa:
        model.W_spa += cfg.lr * ((cfg.w_prior * e_z).T @ a) / N - cfg.weight_decay * model.W_spa
    r = cfg.precision_rate
    model.var_x.mul_(1 - r).add_(r * (e_x ** 2).mean(0))
    model.var_c.mul_(1 - r).add_(r * (e_c ** 2).mean(0))


@torch.no_grad()
def states(model: SPCN, data: list[torch.Tensor], batch_size: int = 512) -> torch.Tensor:
    """Frozen model: the settled latent of every token of a split, (N, H), in file order."""
    out: list[torch.Tensor | None] = [None] * len(data)
    for group, ids, lengths in batches(data, batch_size, None):
        Z, _ = run_batch(model, ids, lengths, learn=False)
        for b, i in enumerate(group):
            out[i] = Z[b, :lengths[b]]
    return torch.cat(out)


# ---------------------------------------------------------------- evaluation: the zero-label read-out
def sq_dist(X: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
    """(N, F), (K, F) -> (N, K) squared Euclidean distances, as one matmul."""
    return ((X * X).sum(1, keepdim=True) - 2 * X @ C.T + (C * C).sum(1)).clamp(min=0)


def kmeans(X: torch.Tensor, K: int, seed: int, restarts: int = 3, iters: int = 50) -> torch.Tensor:
    """Lloyd's k-means with k-means++ seeding; keeps the restart with the lowest inertia (unsupervised).
    X (N, F) -> centroids (K, F)."""
    g = torch.Generator().manual_seed(seed)
    best, best_inertia = None, float("inf")
    for _ in range(restarts):
        C = X[torch.randint(len(X), (1,), generator=g)]
        for _ in range(K - 1):  # k-means++: next centre drawn with probability ~ squared distance
            d2 = sq_dist(X, C).min(1).values
            C = torch.cat([C, X[torch.multinomial(d2 / d2.sum(), 1, generator=g)]])
        assign = None
        for _ in range(iters):
            new = sq_dist(X, C).argmin(1)  # (N,)
            if assign is not None and torch.equal(new, assign):
                break
            assign = new
            counts = torch.bincount(assign, minlength=K).float()  # (K,)
            sums = torch.zeros_like(C).index_add_(0, assign, X)  # (K, F)
            C = torch.where(counts[:, None] > 0, sums / counts.clamp(min=1)[:, None], C)  # empty: keep
        inertia = float(sq_dist(X, C).min(1).values.sum())
        if inertia < best_inertia:
            best, best_inertia = C, inertia
    return best


def best_one_to_one(counts: np.ndarray) -> np.ndarray:
    """counts (K, K): cluster x role co-occurrences -> role of each cluster, the bijection with the most
    correct tokens. Exact: all K! permutations (5040 for K = 7), so no Hungarian solver is needed."""
    K = counts.shape[0]
    assert counts.shape == (K, K) and K <= 8, f"counts {counts.shape}: need a square matrix with K <= 8"
    perms = np.array(list(itertools.permutations(range(K))))  # (K!, K): perms[p, cluster] = role
    totals = counts[np.arange(K)[None, :], perms].sum(1)
    return perms[int(totals.argmax())]


def features(Z: torch.Tensor, cfg: Config) -> torch.Tensor:
    return F.normalize(Z, dim=1) if cfg.cluster_norm else Z


def fit_readout(split: str, Z: torch.Tensor, gold: np.ndarray, K_roles: int, cfg: Config, seed: int) -> dict:
    """Fit all three read-outs on one split's frozen states; refuses any split but train_a."""
    if split != "train_a":
        raise ValueError(f"fit_readout got split {split!r}: read-outs are fitted on train_a only, then applied "
                         f"unchanged to the other splits")
    X = features(Z, cfg)
    out = {}
    for name, K in (("one_to_one", K_roles), ("many_to_one", 2 * K_roles)):
        C = kmeans(X, K, seed)
        counts = np.zeros((K, K_roles), dtype=np.int64)
        np.add.at(counts, (sq_dist(X, C).argmin(1).numpy(), gold), 1)
        mapping = best_one_to_one(counts) if K == K_roles else counts.argmax(1)
        out[name] = (C, mapping)
    out["probe"] = linear_probe(Z, gold, K_roles, seed)
    return out


def linear_probe(Z: torch.Tensor, gold: np.ndarray, K: int, seed: int, steps: int = 150,
                 max_tokens: int = 40000) -> nn.Linear:
    """Softmax regression on frozen (standardised) states, full-batch Adam on a seeded sample of at most
    max_tokens train_a tokens. USES LABELS: an upper bound on what the states hold, not a zero-label score."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(Z), generator=g)[:max_tokens]
    mean, std = Z.mean(0), Z.std(0) + 1e-6
    lin = nn.Linear(Z.shape[1], K)
    with torch.no_grad():
        lin.weight.copy_(0.01 * torch.randn(lin.weight.shape, generator=g))
        lin.bias.zero_()
    opt = torch.optim.Adam(lin.parameters(), lr=0.05)
    X, y = (Z[idx] - mean) / std, torch.from_numpy(gold)[idx]
    with torch.enable_grad():
        for _ in range(steps):
            loss = F.cross_entropy(lin(X), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    lin.register_buffer("mean", mean)
    lin.register_buffer("std", std)
    return lin


@torch.no_grad()
def apply_readout(readout: dict, Z: torch.Tensor, cfg: Config) -> dict[str, np.ndarray]:
    X = features(Z, cfg)
    out = {name: readout[name][1][sq_dist(X, readout[name][0]).argmin(1).numpy()]
           for name in ("one_to_one", "many_to_one")}
    lin = readout["probe"]
    out["probe"] = lin((Z - lin.mean) / lin.std).argmax(1).numpy()
    return out


# ---------------------------------------------------------------- training loop
@torch.no_grad()
def train(sentences: list[dict], vocabulary: list[str], cfg: Config, seed: int, quiet: bool = True,
          desc: str = "") -> tuple[SPCN, list[dict]]:
    """Unsupervised training on the tokens of `sentences` (role labels, if present, are never read)."""
    data = encode(sentences, vocabulary)
    model = SPCN(word_codes(data, len(vocabulary) + 1, cfg, seed), cfg, seed)
    gen = torch.Generator().manual_seed(seed + 1000)  # batch order, independent of the init stream
    plan = [b for _ in range(cfg.epochs) for b in batches(data, cfg.batch_size, gen)]
    log, t0, n_tok = [], time.time(), 0
    bar = tqdm(plan, desc=desc or f"seed {seed}", disable=quiet, mininterval=1.0)
    for step, (_, ids, lengths) in enumerate(bar):
        _, st = run_batch(model, ids, lengths, learn=True)
        n_tok += int(lengths.sum())
        bar.set_postfix(err_x=f"{st['err_x']:.3f}", err_c=f"{st['err_c']:.3f}", lr=cfg.lr,
                        tok_s=f"{n_tok / (time.time() - t0):.0f}", refresh=False)
        if step % 50 == 0 or step == len(plan) - 1:
            log.append({"step": step, **st, "seconds": round(time.time() - t0, 1)})
    return model, log


def evaluate_model(model: SPCN, sentences: dict[str, list[dict]], meta: dict, flat: dict, seed: int,
                   splits: tuple[str, ...]) -> dict:
    """States of train_a fit the read-outs; every split in `splits` is scored with them unchanged."""
    fit_on = sentences["train_a"][:READOUT_SENTENCES]  # train_a is in random order; its head is a fair sample
    gold = flat["train_a"]["gold"][:sum(len(s["tokens"]) for s in fit_on)]
    readout = fit_readout("train_a", states(model, encode(fit_on, meta["vocabulary"])), gold, len(meta["roles"]),
                          model.cfg, seed)
    result = {}
    for split in splits:
        preds = apply_readout(readout, states(model, encode(sentences[split], meta["vocabulary"])), model.cfg)
        f = flat[split]
        result[split] = role_metrics(f["gold"], preds["one_to_one"], f["sd"], meta["roles"], f["construction"])
        for name in ("many_to_one", "probe"):
            m = role_metrics(f["gold"], preds[name], f["sd"], meta["roles"])
            result[split][name] = {k: m[k] for k in ("accuracy", "structure_dependent_accuracy")}
    return result


def atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def environment() -> dict:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                                timeout=10).stdout.strip() or "none"
    except (OSError, subprocess.SubprocessError):
        commit = "unknown"
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []
    cpu = next((l.split(":", 1)[1].strip() for l in cpuinfo if l.startswith("model name")), "unknown")
    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
            "device": "cpu", "cpu": cpu, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "git_commit": commit}


def pct(d: dict | None, key: str = "accuracy") -> str:
    """'mean +- std' in % from a summarise_seeds entry, '-' when missing."""
    v = d.get(key) if isinstance(d, dict) else None
    if v is None:
        return "-"
    return f"{100 * v['mean']:.1f} +- {100 * v['std']:.1f}"


def table(results: dict) -> str:
    """The side-by-side table: Hebbian (three read-outs, ablations) vs BiGRU vs the paper, per split."""
    V, B, roles = results["variants"], results.get("bigru_summary") or {}, results["roles"]
    main_s = V["hebbian"]["summary"]
    lines = ["split      | Hebbian 1:1 (K=7) | sd (1:1)      | M:1 (K=14)    | probe (labels) | BiGRU        "
             "| BiGRU sd     | paper"]
    for s, h in main_s.items():
        paper = f"{100 * PAPER[s]:.1f}" if s in PAPER else "-"
        lines.append(f"{s:10s} | {pct(h):17s} | {pct(h, 'structure_dependent_accuracy'):13s} | "
                     f"{pct(h['many_to_one']):13s} | {pct(h['probe']):14s} | {pct(B.get(s)):12s} | "
                     f"{pct(B.get(s), 'structure_dependent_accuracy'):12s} | {paper}")
    if "ratio_to_bigru" in results:
        r = results["ratio_to_bigru"]
        lines.append(f"ratio Hebbian/BiGRU on test_a: {r['accuracy']:.3f} overall, {r['structure_dependent']:.3f} "
                     f"sd (paper: {PAPER['ratio_to_bigru']})")
    lines += ["", "ablation (1:1 accuracy / sd) | " + " | ".join(main_s)]
    for name, v in V.items():
        lines.append(f"{name:28s} | " + " | ".join(
            f"{pct(v['summary'][s])} / {pct(v['summary'][s], 'structure_dependent_accuracy')}" for s in main_s))
    lines += ["", "per-role 1:1 accuracy, Hebbian vs BiGRU | " + " | ".join(roles)]
    for s, h in main_s.items():
        lines.append(f"{s:10s} Hebbian | " + " | ".join(pct(h["per_role"], r) for r in roles))
        if br := B.get(s, {}).get("per_role", {}):
            lines.append(f"{s:10s} BiGRU   | " + " | ".join(pct(br, r) for r in roles))
    if results.get("hebbian_beats_bigru"):
        lines.append("roles where the Hebbian model beats the BiGRU: " + "; ".join(
            f"{s}: {', '.join(rs) or 'none'}" for s, rs in results["hebbian_beats_bigru"].items()))
    return "\n".join(lines)


# ---------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    cfg = config_from_args(args)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    if not seeds:
        raise ValueError(f"--seeds {args.seeds!r} names no seed; pass e.g. --seeds 0,1,2")
    ablations = [] if args.ablations in ("none", "") else [a.strip() for a in args.ablations.split(",")]
    if unknown := [a for a in ablations if a not in ABLATIONS]:
        raise ValueError(f"--ablations: unknown {unknown}; choose from {sorted(ABLATIONS)} or 'none'")
    out_dir, suffix = Path(args.out_dir), "_dev" if args.dev_only else ""  # tuning runs write *_dev files
    out_dir.mkdir(parents=True, exist_ok=True)
    t_start = time.time()

    meta, sentences = load_role_data(args.data_dir)
    if args.max_train:
        sentences["train_a"] = sentences["train_a"][:args.max_train]
    flat = {s: flatten_split(sentences[s], meta) for s in SPLITS}
    splits = ("dev_a",) if args.dev_only else EVAL_SPLITS  # tuning never computes a test-split state
    variants = {"hebbian": cfg, **{a: replace(cfg, **ABLATIONS[a]) for a in ablations}}
    env, out_variants = environment(), {}
    with open(out_dir / f"metrics{suffix}.jsonl", "w", buffering=1) as log:  # line-buffered: rows land at once
        log.write(json.dumps({"config": asdict(cfg), "seeds": seeds, "args": vars(args), **env}) + "\n")
        for name, vcfg in variants.items():
            per_seed = []
            for seed in seeds:
                t0 = time.time()
                model, train_log = train(sentences["train_a"], meta["vocabulary"], vcfg, seed, args.quiet,
                                         desc=f"{name} seed {seed}")
                t1 = time.time()
                res = evaluate_model(model, sentences, meta, flat, seed, splits)
                res.update(seed=seed, train_seconds=round(t1 - t0, 1), eval_seconds=round(time.time() - t1, 1))
                per_seed.append(res)
                final = {s: {"accuracy": res[s]["accuracy"], "sd": res[s]["structure_dependent_accuracy"]}
                         for s in splits}
                log.write(json.dumps({"variant": name, "seed": seed, "train_log": train_log, "final": final,
                                      "train_seconds": res["train_seconds"]}) + "\n")
            out_variants[name] = {"config": asdict(vcfg), "per_seed": per_seed,
                                  "summary": {s: summarise_seeds([r[s] for r in per_seed]) for s in splits}}

    results = {"script": "hebbian_roles.py", "model": "hebbian-spcn", "config": asdict(cfg), "seeds": seeds,
               "roles": meta["roles"], "dev_only": args.dev_only,
               "data": {"dir": str(args.data_dir), "generator_version": meta["generator_version"],
                        "n_train": len(sentences["train_a"])},
               "variants": out_variants, "env": env}
    bigru_path = Path(args.bigru_results)
    if bigru_path.exists():
        results["bigru_summary"] = bigru = json.loads(bigru_path.read_text())["summary"]
        h = out_variants["hebbian"]["summary"]
        if "test_a" in h:
            results["ratio_to_bigru"] = {
                "accuracy": h["test_a"]["accuracy"]["mean"] / bigru["test_a"]["accuracy"]["mean"],
                "structure_dependent": h["test_a"]["structure_dependent_accuracy"]["mean"]
                / bigru["test_a"]["structure_dependent_accuracy"]["mean"]}
        results["hebbian_beats_bigru"] = {
            s: [r for r in meta["roles"] if h[s]["per_role"][r] is not None and bigru[s]["per_role"][r] is not None
                and h[s]["per_role"][r]["mean"] > bigru[s]["per_role"][r]["mean"]] for s in h if s in bigru}
    else:
        print(f"{bigru_path} not found: the BiGRU columns stay empty; make them with "
              f"`OMP_NUM_THREADS=1 python bigru_baseline.py --seeds 0,1,2`")
    results["wall_seconds"] = round(time.time() - t_start, 1)
    atomic_write(out_dir / f"results{suffix}.json", json.dumps(results, indent=1) + "\n")
    print(table(results))
    print(f"{len(seeds)} seeds, wall {results['wall_seconds']} s -> {out_dir / f'results{suffix}.json'}")
    return results


if __name__ == "__main__":
    main()
