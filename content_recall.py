"""content_recall.py: the content boundary, measured directly. Which kinds of context can recall a token?

Hypothesis (paper, arXiv 2604.08556): fixed EMA (exponential moving average) traces compress the past
independently of the data, so they lose *which* token came earlier, and only learned, input-dependent
selection can recover it. The paper shows this with C4 perplexity at 130M parameters; here the same blocks
face the task that isolates the claim, multi-query associative recall (MQAR; Arora et al. 2023, "Zoology"):
a sequence lists key-value pairs, then asks for earlier keys again, and the model must emit the value that
was paired with each. The paper's conclusion runs four candidate causes together, and the arms here separate
them (README, "Four hypotheses", states what each predicts): *fixed coefficients* (the paper), *timescale*
(the paper's traces forget within about 50 tokens), *state size* (Zoology) and *content addressing* (a state
written by key-value outer products and read by a query). The mixers of ema_lm.py / mixers.py, one factor at a
time (coefficients x state; mixers.py's docstring has the whole list):

    mixer          state per block        coefficients                   read of the state
    ema            3 D traces             three constants (paper)        linear (SPEN, the paper's EMA block)
    ema-long       3 D traces             fixed, the long spread         linear
    ema-learned    3 D traces             learned constants              linear
    selective      3 D traces             f(current token)               linear
    cumavg         D                      fixed, 1/t                     linear
    ema-wide       32 D traces            fixed, the long spread         linear
    legs           32 D coefficients      fixed, HiPPO-LegS              linear
    longconv       T D (every input)      a learned filter               linear
    linattn-paper  D^2 / 2H matrix        fixed 0.5 / 0.9 / 0.98         query (content-addressed)
    linattn-long   D^2 / 2H matrix        fixed, the long spread         query
    linattn-one    D^2 / 2H matrix        fixed 0.995                    query
    linattn        D^2 / 2H matrix        learned constants              query
    gla            D^2 / 2H matrix        f(current token)               query (gated linear attention)
    attention      2 T D (every k, v)     none                           query, softmax

An arm is a mixer, or with @gpt2 a vector state in GPT-2's block read by one linear map (so that "vector vs
matrix" changes the state and not also the block), or with @k<N> its own short convolution.
Beside them, the paper's predictor ablation, run where a content gap exists (the localisation rows): the SPEN block
with its linear predictor replaced by softmax attention over EMA trace vectors, queried by the current
input u_t (current token included, so the read can be addressed by the key being asked):

    trace-attn-current   slots h_t^s, s = 1..3: the SPEN's own fixed-size state (the paper's reading)
    trace-attn-history   slots h_t'^s for every t' <= t: every trace the SPEN ever computed
The sequence of traces is invertible to the inputs (u_t = (h_t - (1 - a) h_{t-1}) / a), so if
trace-attn-history recalls and trace-attn-current does not, the traces did not destroy the content; it is
out of reach of any reader of a fixed-size state (the data processing inequality binds the state, not the
traces). Each slot's key is W_k h + p_s, p_s a learned per-timescale embedding; values W_v h; heads as
attention's. A strong reader of the fixed-size state is the third localisation row: an MLP probe trained on the
frozen SPEN's traces at the query position (plus the query token) to name the value, beside the same probe on
attention's hidden state (probe_run; docs/reconstruction.md).

Task (Zoology's multiquery_ar, reconstructed): vocabulary V > T, keys from 1..V/2-1, values from V/2..V-1,
both drawn without replacement per sequence. Positions 0..2K-1 hold k1 v1 ... kK vK; each key is then asked
once, at an even offset of the remaining region drawn from Zoology's power law (power_a 0.01: most queries
come soon after the pairs); every other position is a uniformly random token (--no-noise: token 0). The
target at a query position is its key's value; every other target is ignored (-100), so loss and accuracy
count only recall. Accuracy = the fraction of queries answered exactly (argmax over the whole vocabulary).
Chance = a uniform guess among the distinct values seen before the query (chance_accuracy): 0.089 at T = 64,
0.176 at T = 32, above 1/K's share of the values because the random filler holds values too.

Protocol: fresh seeded training sequences every step (the same for every mixer and width at a given seed and
length); equal steps, batch and schedule for every run (AdamW, warm-up 10%, cosine to 10%, clip 1); the learning
rate is chosen per mixer from a stated grid on a fixed validation set (seed 20000) at one width and length and used
everywhere; accuracy is reported on a fixed test set (seed 10000), mean +- sample std over seeds. Every run records
its mixer's state size (floats per block, mixers.state_floats). Choices (none is in the paper; Zoology's are noted):
two blocks (Zoology); pairs K = T/8 (Zoology: 4-64 for T 64-512); a dense FFN of 2D for every mixer, so only the
context differs; a causal depthwise convolution of kernel 3 in front of every mixer (Zoology's current baselines
give every mixer one; without it attention must first learn to bind each value to its key from learned absolute
positions; in pilots on the validation set, not kept, it sat near 1/K for thousands of steps and the trace mixers
scored the same either way); attention heads of width 64 (one head below that) with learned absolute positions, as
in ema_lm.py; no weight decay (pilots on the validation set: with 0.1 attention solved MQAR on one of two seeds,
without it on both). The CPU preset shrinks Zoology's vocabulary 8192 -> 128, widths 64-512 -> 64-128 and lengths
64-512 -> 32-64 (pairs K = T/8) and trains 1000 steps of 1024 tokens (batch by length, as Zoology). There attention
solves the task on every seed, while the slower learners are still learning (gla at D = 64, T = 64: 0.434 +- 0.137
after 1000 steps, 0.955 +- 0.014 after 4000; trace-attn-history 0.028, then 0.871), so the CPU map tells "cannot"
from "not yet" only together with the longer run (README).

Commands:
    python content_recall.py                                 # the CPU default (see Measured), 2 worker processes
    python content_recall.py --preset factorial --workers 1  # the four hypotheses: 25 arms at T = 64, D = 64
    python content_recall.py --preset zoology --device cuda  # Zoology's scale, one GPU (ETA in the README)
    python content_recall.py --mixers attention,ema --widths 64 --lengths 64 --seeds 0   # one slice

Measured (3 seeds; 2-core AMD EPYC VM, torch 2.13.0; tables in results/content_recall/README.md): the default
runs in 23.3 minutes on 2 idle cores. At T = 64, D = 128: attention 1.000, gla 0.962, linattn 0.935, selective
0.088, ema 0.021 (chance 0.089). The factorial (T = 64, D = 64, 4000 steps): linattn with decays frozen at the
long spread 0.957, learned 0.960, gla 0.959, attention 1.000; with the paper's decays 0.181; every vector state,
up to 4,096 floats, fixed, learned or input-dependent, in either block, 0.06-0.14; trace-attn-current 0.057, the
MLP probe of the SPEN's state 0.108 (of attention's 1.000); trace-attn-history 0.971, 0.612 without the short
convolution. Recall needs a content-addressed state with a long enough memory, not input-dependent coefficients.

Glossary: B batch, T sequence length, D width (d_model), S traces per block (3), H heads, K key-value pairs
per sequence, V vocabulary, L blocks. a = alpha (weight of the new input in a trace).
"""
# ----------------------------------------------------------------------------- imports
import argparse
import json
import math
import multiprocessing
import os
import signal
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ema_lm import ALPHAS, MIXERS as LM_MIXERS, SPEN_MIXERS, LanguageModel, ModelConfig, SPENBlock
from mixers import state_floats
from plumbing import (RunFolder, StopOnSignal, check_ranges, command_line, compile_static, help_formatter, lr_at,
                      make_optimizer, pick_device, portable, read_jsonl, run_info, write_json_atomic)

ROOT = Path(__file__).resolve().parent
LOCALISATION = ("trace-attn-current", "trace-attn-history")
MIXERS = (*LM_MIXERS, *LOCALISATION)
TEST_SEED, VAL_SEED, PROBE_SEED = 10_000, 20_000, 30_000  # fixed held-out sets; training data uses the run seed

# ----------------------------------------------------------------------------- model: the localisation rows


class TraceAttention(nn.Module):
    """Softmax attention over EMA trace slots, queried by the current input u_t.
    history=False: the S slots h_t^s (a fixed-size state); history=True: h_t'^s for every t' <= t.
    The output map is named proj, so the model's init scales it like every projection (std 0.02 / sqrt(2L));
    ablation_attention.py's predictor calls its map out and keeps std 0.02 (a difference of initial scale only)."""

    def __init__(self, d_model: int, n_head: int, history: bool):
        super().__init__()
        self.n_head, self.history = n_head, history
        self.q, self.k, self.v, self.proj = (nn.Linear(d_model, d_model, bias=False) for _ in range(4))
        self.timescale = nn.Parameter(0.02 * torch.randn(len(ALPHAS), d_model))  # p_s: tells the traces apart

    def forward(self, u: torch.Tensor, h: torch.Tensor) -> torch.Tensor:  # u (B, T, D), h (B, T, S, D)
        B, T, S, D = h.shape
        H, d = self.n_head, D // self.n_head
        q = self.q(u).view(B, T, H, d).transpose(1, 2)  # (B, H, T, d)
        k, v = self.k(h) + self.timescale, self.v(h)  # (B, T, S, D)
        if self.history:  # slot (t', s) is visible to the query at t iff t' <= t
            k, v = (t.reshape(B, T * S, H, d).transpose(1, 2) for t in (k, v))  # (B, H, T*S, d)
            visible = torch.arange(T * S, device=u.device)[None, :] // S <= torch.arange(T, device=u.device)[:, None]
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=visible)  # (B, H, T, d)
        else:  # each position reads its own S slots
            k, v = (t.view(B, T, S, H, d).permute(0, 3, 1, 2, 4) for t in (k, v))  # (B, H, T, S, d)
            weights = torch.softmax((q[:, :, :, None, :] * k).sum(-1) / math.sqrt(d), dim=-1)  # (B, H, T, S)
            y = (weights[..., None] * v).sum(3)  # (B, H, T, d)
        return self.proj(y.transpose(1, 2).reshape(B, T, D))


class TraceReaderBlock(SPENBlock):
    """ema_lm.py's SPEN block with the linear predictor replaced by TraceAttention; nothing else changes."""

    def __init__(self, cfg: ModelConfig, history: bool):
        super().__init__(replace(cfg, mixer="ema"))  # the paper's fixed traces
        del self.pred
        self.read = TraceAttention(cfg.d_model, cfg.n_head, history)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = self.ln_in(x)
        h = self.traces(self.conv(u))  # (B, T, S, D): traces up to and including t
        err = u - self.read(u, h)  # (B, T, D)
        c = self.ln_mix(self.mix(torch.cat([err, h.flatten(2)], -1)))  # (B, T, D)
        return self.ffn(c)


def parse_arm(arm: str) -> tuple:
    """An arm of the comparison, 'mixer[@gpt2][@k<kernel>]' -> (mixer, block, conv kernel or None). @gpt2 puts a
    vector state in GPT-2's block, read by one linear map (ema_lm.TraceReadout), so that state form is one factor;
    @kN gives the arm its own short convolution instead of --conv-kernel's (the localisation rows at 0 and 3)."""
    mixer, *options = arm.split("@")
    block, kernel = "auto", None
    for option in options:
        if option == "gpt2" and mixer in SPEN_MIXERS:
            block = "gpt2"
        elif option[:1] == "k" and option[1:].isdigit():
            kernel = int(option[1:])
        else:
            raise ValueError(f"arm {arm!r}: unknown option @{option}; use @k<kernel>, or @gpt2 with a vector state "
                             f"({', '.join(SPEN_MIXERS)})")
    if mixer not in MIXERS:
        raise ValueError(f"unknown mixer {mixer!r}; choose from {', '.join(MIXERS)}")
    return mixer, block, kernel


def build_model(arm: str, cfg: ModelConfig, conv_kernel: int) -> LanguageModel:
    """ema_lm.py's LanguageModel with the arm's mixer in its block (a trace reader for the localisation rows) and,
    if the kernel (the arm's own, else conv_kernel) is > 0, a short convolution in front of the block's mixer."""
    mixer, block, kernel = parse_arm(arm)
    cfg = replace(cfg, conv_kernel=conv_kernel if kernel is None else kernel, block=block)
    if mixer in LOCALISATION:
        return LanguageModel(replace(cfg, mixer="ema"), block=lambda c: TraceReaderBlock(c, mixer.endswith("history")))
    return LanguageModel(replace(cfg, mixer=mixer))


def mixer_state_floats(arm: str, cfg: ModelConfig) -> int:
    """Floats per block that the arm's mixer keeps about the past at the end of a sequence of block_size tokens."""
    mixer = parse_arm(arm)[0]
    if mixer in LOCALISATION:
        S = len(ALPHAS) * cfg.d_model
        return S * cfg.block_size if mixer.endswith("history") else S
    return state_floats(mixer, cfg.d_model, cfg.n_head, cfg.block_size)


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
    gumbel = -np.log(-np.log(rng.random((n, space))))
    gaps = np.argsort(-(log_p + gumbel), 1)[:, :K]  # Gumbel top-K: K slots drawn without replacement
    inputs = rng.integers(0, V, (n, T)) if noise else np.zeros((n, T), dtype=np.int64)  # filler
    inputs[:, 0:2 * K:2], inputs[:, 1:2 * K:2] = keys, values
    query_pos = 2 * K + 2 * gaps  # (n, K): key k is asked at query_pos[:, k]
    inputs[rows, query_pos] = keys
    targets = np.full((n, T), -100)
    targets[rows, query_pos] = values
    return torch.from_numpy(inputs), torch.from_numpy(targets)


def chance_accuracy(inputs: torch.Tensor, targets: torch.Tensor, V: int) -> float:
    """Accuracy of a guess that knows the answer is a value token already seen and picks one of the distinct ones
    before the query uniformly: mean over queries of 1 / (distinct values in the sequence up to the query). The
    filler is random (noise=True), so it holds values too: at T = 64 about 11 are in sight at a query, not K = 8.
    (Counting the values of the whole sequence, after the query too, gives about half: no causal model sees those.)"""
    seen = F.one_hot(inputs, V)[..., V // 2:].cummax(1).values.sum(-1)  # (n, T): distinct values up to t
    asked = targets != -100
    before = F.pad(seen, (1, 0))[:, :-1]  # (n, T): up to t - 1, the query itself is a key
    return float((1 / before[asked].float()).mean())


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


def model_config(args, D: int, T: int) -> ModelConfig:
    return ModelConfig(vocab_size=args.vocab, n_layer=args.n_layer, d_model=D, d_ffn=args.ffn_mult * D,
                       n_head=max(1, D // args.head_dim), block_size=T, ffn=args.ffn)


def train_run(job: dict) -> dict:
    """Train one model (arm, width D, length T with K pairs, batch, learning rate, seed, steps) on fresh MQAR
    sequences and score it on the job's fixed held-out set ("val" for the learning-rate sweep, else "test").
    A validation run also scores the test set (test_acc, test_loss), never used to choose anything: the run at the
    chosen rate and the first seed is then the test run of that seed too, trained once (main). Models of the
    --probe-arms are saved for the probe (model_path)."""
    args, mixer, D, T, K, B, lr, seed = (job[k] for k in ("args", "mixer", "D", "T", "K", "B", "lr", "seed"))
    steps = job["budget_steps"]
    device = pick_device(args.device)
    use_bf16 = device == "cuda" and torch.cuda.is_bf16_supported()
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if use_bf16 else torch.autocast("cpu", enabled=False)
    held_out = mqar(args.n_val if job["split"] == "val" else args.n_test, T, K, args.vocab,
                    seed=[VAL_SEED if job["split"] == "val" else TEST_SEED, T], noise=args.noise)
    early = mqar(args.n_val, T, K, args.vocab, seed=[VAL_SEED, T], noise=args.noise) if args.early_stop else None
    cfg = model_config(args, D, T)
    torch.manual_seed(seed)
    model = build_model(mixer, cfg, args.conv_kernel).to(device)
    compile_model = args.compile if args.compile is not None else device == "cuda"
    train_model = compile_static(model) if compile_model else model
    optimizer = make_optimizer(model, lr, args.weight_decay)
    warmup = max(1, steps // 10)
    t0, step = time.perf_counter(), 0
    for step in range(1, steps + 1):
        for g in optimizer.param_groups:
            g["lr"] = lr_at(step - 1, lr, warmup, steps, args.min_lr_ratio)
        # The same training sequences for every mixer and width at a given seed and length.
        x, y = (t.to(device) for t in mqar(B, T, K, args.vocab, seed=[seed, T, step], noise=args.noise))
        with autocast:
            _, loss = train_model(x, y)  # cross-entropy over the query positions only (-100 elsewhere)
        loss.backward()
        if not math.isfinite(loss.item()):
            raise RuntimeError(f"non-finite loss at step {step} for {mixer} D={D} T={T} lr={lr}; "
                               "lower --lrs or check the mixer")
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if early is not None and step % args.eval_every == 0 and \
                recall_metrics(model, *early, batch=256, device=device, autocast=autocast)["acc"] >= args.early_stop:
            break  # validation accuracy reached the target (Zoology's early stop); the test set is never seen
    seconds = time.perf_counter() - t0
    metrics = recall_metrics(model, *held_out, batch=256, device=device, autocast=autocast)
    if job["split"] == "val":
        test = mqar(args.n_test, T, K, args.vocab, seed=[TEST_SEED, T], noise=args.noise)
        metrics.update({f"test_{k}": v for k, v in recall_metrics(model, *test, 256, device, autocast).items()})
    if mixer in args.probe_arms:
        path = model_path(args, job)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), path.with_suffix(".tmp"))
        os.replace(path.with_suffix(".tmp"), path)  # atomic: a half-written model is never read
    return dict(mixer=mixer, D=D, T=T, K=K, B=B, lr=lr, seed=seed, split=job["split"], **metrics, steps=step,
                budget_steps=steps, train_loss=loss.item(), params=sum(p.numel() for p in model.parameters()),
                state_floats=mixer_state_floats(mixer, cfg), seconds=seconds, budget=budget(args, steps))


def model_path(args, job: dict) -> Path:
    return Path(args.out_dir) / "models" / "{mixer}-D{D}-T{T}-lr{lr:.0e}-s{seed}-n{budget_steps}.pt".format(**job)


# ----------------------------------------------------------------------------- probe: a strong reader of a frozen state
# "No reader of the fixed-size state recovers the content" is a claim about every reader. The probe is the strongest
# we run: an MLP (multi-layer perceptron) trained, on fresh sequences, to name the value from what a frozen trained
# model holds at the query position, plus the query token itself (one-hot, so the probe need not find it in the
# state). On the SPEN ("ema"): its traces h_t in every block, the whole of what it carries about the past besides
# the short convolution's last two inputs (3D per block). On attention: its hidden state at the query (the final
# LayerNorm's input, D floats), into which attention has already read its cache: the positive control.
PROBE_HIDDEN, PROBE_BATCH, PROBE_LR = 1024, 64, 1e-3  # two hidden layers; sequences a step (8 queries each); AdamW


def probe_features(model: LanguageModel, x: torch.Tensor) -> torch.Tensor:
    """What the frozen model holds at every position: its traces (in the SPEN block or, for an @gpt2 arm, in GPT-2's)
    or, for a model without traces, its final hidden state."""
    traces = [m for name, m in model.named_modules() if name.endswith(".traces")]
    if traces:
        kept = []
        hooks = [t.register_forward_hook(lambda m, i, out: kept.append(out.flatten(2))) for t in traces]
        model(x)
        for h in hooks:
            h.remove()
        return torch.cat(kept, -1)  # (B, T, L S D)
    states = []
    model(x, states=states)
    return states[-1]  # (B, T, D)


def probe_run(job: dict) -> dict:
    """Train the probe on the frozen model of one training run and score it on the test set."""
    args, mixer, D, T, K, seed = (job[k] for k in ("args", "mixer", "D", "T", "K", "seed"))
    path = model_path(args, dict(job, budget_steps=job["model_steps"]))  # the model trained for model_steps
    model = build_model(mixer, model_config(args, D, T), args.conv_kernel)
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    model.eval().requires_grad_(False)
    V, t0 = args.vocab, time.perf_counter()

    def examples(inputs: torch.Tensor, targets: torch.Tensor) -> tuple:  # features and answers at the queries
        asked = targets != -100
        with torch.no_grad():
            feats = probe_features(model, inputs)[asked]  # (queries, F)
        return torch.cat([feats, F.one_hot(inputs[asked], V).float()], -1), targets[asked]

    torch.manual_seed(seed)
    first, _ = examples(*mqar(512, T, K, V, seed=[PROBE_SEED, T, 0], noise=args.noise))
    mean, std = first.mean(0), first.std(0) + 1e-6  # standardise each feature: the slow traces are small
    probe = nn.Sequential(nn.Linear(first.shape[1], PROBE_HIDDEN), nn.GELU(), nn.Linear(PROBE_HIDDEN, PROBE_HIDDEN),
                          nn.GELU(), nn.Linear(PROBE_HIDDEN, V))
    optimizer = torch.optim.AdamW(probe.parameters(), lr=PROBE_LR, weight_decay=0.0)
    steps, hits = job["budget_steps"], []
    for step in range(1, steps + 1):
        for g in optimizer.param_groups:
            g["lr"] = lr_at(step - 1, PROBE_LR, max(1, steps // 10), steps, args.min_lr_ratio)
        f, y = examples(*mqar(PROBE_BATCH, T, K, V, seed=[PROBE_SEED, T, step], noise=args.noise))
        logits = probe((f - mean) / std)
        F.cross_entropy(logits, y).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        hits.append((logits.argmax(-1) == y).float().mean().item())
    f, y = examples(*mqar(args.n_test, T, K, V, seed=[TEST_SEED, T], noise=args.noise))
    with torch.no_grad():
        logits = probe((f - mean) / std)
    return dict(mixer=mixer, D=D, T=T, K=K, B=job["B"], lr=job["lr"], seed=seed, split="probe",
                acc=(logits.argmax(-1) == y).float().mean().item(), loss=F.cross_entropy(logits, y).item(),
                train_acc=float(np.mean(hits[-50:])), n_features=first.shape[1] - V, steps=steps,
                budget_steps=steps, model=str(path), seconds=time.perf_counter() - t0, budget=budget(args, steps))


def run_job(job: dict) -> dict:
    return probe_run(job) if job["split"] == "probe" else train_run(job)


def budget(args, steps: int) -> dict:
    """Everything besides the job's own fields that a run's result depends on (checked by --resume)."""
    return {"steps": steps, **{k: getattr(args, k) for k in (
        "vocab", "noise", "n_layer", "ffn", "ffn_mult", "head_dim", "conv_kernel", "min_lr_ratio", "weight_decay",
        "grad_clip", "n_test", "n_val", "early_stop", "eval_every")}}


def job_key(job: dict) -> tuple:
    return (*(job[k] for k in ("split", "mixer", "D", "T", "K", "B", "lr", "seed")),
            job.get("budget_steps", job.get("budget", {}).get("steps")))  # records from before budget_steps: budget


def _init_worker():
    torch.set_num_threads(1)  # one thread per run: the sweep's parallelism is across runs
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle


def next_result(results, pool, stop: StopOnSignal):
    """The next finished run, or None once Ctrl-C or SIGTERM has arrived (checked every second with workers;
    without them the run in progress finishes first)."""
    while not stop.signum:
        if pool is None:
            return next(results)
        try:
            return results.next(timeout=1)
        except multiprocessing.TimeoutError:
            pass
    return None


def run_jobs(jobs: list, workers: int, run: RunFolder, stop: StopOnSignal, t_start: float, done: dict) -> list:
    """Run the jobs (most expensive first, for balance), print one line each and append it to metrics.jsonl.
    Jobs already in `done` (from metrics.jsonl, with --resume) are not run again. On Ctrl-C or SIGTERM the
    finished runs stay in metrics.jsonl and the sweep exits (130 / 143); --resume continues it."""
    out = [done[job_key(j)] for j in jobs if job_key(j) in done]
    todo = sorted((j for j in jobs if job_key(j) not in done), key=lambda j: -j["D"] * (j["D"] + 32) * j["T"] * j["B"])
    if out:
        print(f"{len(out)} runs reused from {run.metrics}, {len(todo)} to go")
    pool = multiprocessing.get_context("spawn").Pool(workers, _init_worker) if workers > 1 and todo else None
    results = pool.imap_unordered(run_job, todo) if pool else map(run_job, todo)
    for i in range(1, len(todo) + 1):
        r = next_result(results, pool, stop)
        if r is None:
            break
        out.append(r)
        run.log(r)
        print(f"[{i}/{len(todo)}] {r['split']:4s} {r['mixer']:18s} D={r['D']:<4d} T={r['T']:<4d} lr={r['lr']:.0e} "
              f"seed={r['seed']}: acc {r['acc']:.3f} loss {r['loss']:.3f} ({r['seconds']:.0f} s; "
              f"{(time.perf_counter() - t_start) / 60:.1f} min elapsed)", flush=True)
    if pool:
        pool.terminate() if stop.signum else pool.close()
        pool.join()
    if stop.signum:
        stop.exit(f"{len(out)} finished runs are kept in {run.metrics}; add --resume to continue the sweep")
    return out


# ----------------------------------------------------------------------------- results: table and figure


def summarise(runs: list) -> list:
    """Mean and sample std of test accuracy over seeds, per arm, length, width and step budget (probes apart)."""
    groups = {}
    for r in runs:
        groups.setdefault((r["mixer"], r["T"], r["K"], r["D"], r["budget_steps"], r["split"]), []).append(r)
    rows = []
    for (mixer, T, K, D, steps, split), rs in groups.items():
        acc = np.array([r["acc"] for r in rs])
        rows.append(dict(mixer=mixer, T=T, K=K, D=D, steps=steps, split=split, lr=rs[0]["lr"], n_seeds=len(rs),
                         acc_mean=float(acc.mean()), acc_std=float(acc.std(ddof=1)) if len(rs) > 1 else 0.0,
                         accs=acc.tolist(), params=rs[0].get("params"), state_floats=rs[0].get("state_floats"),
                         seconds=float(np.mean([r["seconds"] for r in rs]))))
    order = lambda r: (r["split"], MIXERS.index(parse_arm(r["mixer"])[0]), r["mixer"], r["T"], r["D"], r["steps"])  # noqa: E731
    return sorted(rows, key=order)


def cell(r: dict | None) -> str:
    return f"{r['acc_mean']:.3f} +- {r['acc_std']:.3f}" if r else ""


def format_table(summary: list, chosen_lr: dict, chance: dict) -> str:
    """Markdown: one row per arm, length and step budget, one column per width, test accuracy mean +- std over
    seeds; probes last; chance (chance_accuracy) per length."""
    widths = sorted({r["D"] for r in summary})
    at = {(r["mixer"], r["T"], r["D"], r["steps"], r["split"]): r for r in summary}
    lines = ["| arm (lr) | T (pairs) | steps | " + " | ".join(f"D = {D}" for D in widths) + " |",
             "|---|---|---|" + "---|" * len(widths)]
    for mixer, T, K, steps, split in dict.fromkeys((r["mixer"], r["T"], r["K"], r["steps"], r["split"])
                                                   for r in summary):
        name = f"probe on {mixer}'s state" if split == "probe" else mixer
        lines.append(f"| {name} ({chosen_lr[mixer]:.0e}) | {T} ({K}) | {steps} | "
                     + " | ".join(cell(at.get((mixer, T, D, steps, split))) for D in widths) + " |")
    lines.append("| chance: a guess among the values seen | " + ", ".join(f"T = {T}: {c:.3f}" for T, c in
                                                                           sorted(chance.items())) + " |")
    return "\n".join(lines)


# The factorial's layout: coefficients (rows) by state (columns); every vector state also runs in GPT-2's block.
DESIGN_ROWS = ("fixed short", "fixed long", "learned constant", "input-dependent")
DESIGN_COLUMNS = ("vector 3D (cumavg: D)", "vector 32D: traces", "vector 32D: Legendre", "whole history T x D",
                  "matrix, content-addressed")
DESIGN = {("fixed short", DESIGN_COLUMNS[0]): ("ema",), ("fixed short", DESIGN_COLUMNS[4]): ("linattn-paper",),
          ("fixed long", DESIGN_COLUMNS[0]): ("ema-long", "cumavg"), ("fixed long", DESIGN_COLUMNS[1]): ("ema-wide",),
          ("fixed long", DESIGN_COLUMNS[2]): ("legs",),
          ("fixed long", DESIGN_COLUMNS[4]): ("linattn-long", "linattn-one"),
          ("learned constant", DESIGN_COLUMNS[0]): ("ema-learned",),
          ("learned constant", DESIGN_COLUMNS[3]): ("longconv",), ("learned constant", DESIGN_COLUMNS[4]): ("linattn",),
          ("input-dependent", DESIGN_COLUMNS[0]): ("selective",),
          ("input-dependent", DESIGN_COLUMNS[3]): ("attention",), ("input-dependent", DESIGN_COLUMNS[4]): ("gla",)}


def format_design(summary: list) -> str:
    """The factorial as the design: each cell names its arms with test accuracy (mean over seeds) at the first step
    budget, the longer budget after an arrow where it ran, and for a vector state its GPT-2-block twin after '/'."""
    test = [r for r in summary if r["split"] == "test"]
    first = min(r["steps"] for r in test)

    def result(arm: str) -> str:
        rs = sorted((r for r in test if r["mixer"] == arm), key=lambda r: r["steps"])
        text = " -> ".join(f"{r['acc_mean']:.2f}" for r in rs if r["steps"] >= first)
        return text or "-"

    lines = ["| coefficients | " + " | ".join(DESIGN_COLUMNS) + " |", "|---|" + "---|" * len(DESIGN_COLUMNS)]
    for row in DESIGN_ROWS:
        cells = []
        for col in DESIGN_COLUMNS:
            cells.append("; ".join(f"{m} {result(m)}" + (f" / {result(m + '@gpt2')}" if m in SPEN_MIXERS else "")
                                   for m in DESIGN.get((row, col), ())))
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


COEFFICIENT_KIND = {m: row for (row, _), ms in DESIGN.items() for m in ms}  # colour of each mixer in the figure


def save_figure(summaries: list, path: Path, chance: dict, titles: list | None = None) -> bool:
    """Zoology's Figure 2 layout with state size on the x axis: accuracy against floats of state per block, one
    panel per (sweep, length), error bars over seeds. An arm with several widths is a line; an arm at one width a
    point, coloured by its coefficients (fixed short, fixed long, learned constant, input-dependent), a circle in the
    SPEN block, a square in GPT-2's, hollow for a localisation row, a cross for its longer budget where it ran.
    Chance (chance_accuracy) is the dotted line."""
    try:
        import matplotlib
        import matplotlib.ticker
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no figure (pip install matplotlib); the table and JSON are complete")
        return False
    panels = [(i, T) for i, summary in enumerate(summaries) for T in sorted({r["T"] for r in summary})]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.8 * len(panels), 4.0), sharey=True, squeeze=False)
    colour = {kind: f"C{i}" for i, kind in enumerate(DESIGN_ROWS)}
    for ax, (i, T) in zip(axes[0], panels):
        tests = [r for r in summaries[i] if r["T"] == T and r["split"] == "test"]
        first = {r["mixer"]: min(q["steps"] for q in tests if q["mixer"] == r["mixer"]) for r in tests}
        rows = [r for r in tests if r["steps"] == first[r["mixer"]]]
        arms = list(dict.fromkeys(r["mixer"] for r in rows))
        # Arms at one width that share a state size are spread sideways (by accuracy) and labelled without overlap.
        single = sorted((r for r in rows if sum(q["mixer"] == r["mixer"] for q in rows) == 1),
                        key=lambda r: (r["state_floats"], r["acc_mean"]))
        x_at, label_y = {}, {}
        for size in dict.fromkeys(r["state_floats"] for r in single):
            group = [r for r in single if r["state_floats"] == size]
            for k, r in enumerate(group):
                x_at[r["mixer"]] = size * 1.07 ** (k - (len(group) - 1) / 2)
                label_y[r["mixer"]] = max(r["acc_mean"], label_y[group[k - 1]["mixer"]] + 0.035 if k else -1)
        for arm in arms:
            rs = sorted((r for r in rows if r["mixer"] == arm), key=lambda r: r["state_floats"])
            mixer, block, _ = parse_arm(arm)
            local = mixer in LOCALISATION
            style = dict(marker="s" if block == "gpt2" or (mixer not in SPEN_MIXERS and not local) else "o",
                         color=colour.get(COEFFICIENT_KIND.get(mixer), "0.4"), ms=6, capsize=3, alpha=0.85,
                         mfc="none" if local else None, ls="-" if len(rs) > 1 else "none")
            xs = [x_at.get(arm, r["state_floats"]) for r in rs]
            ax.errorbar(xs, [r["acc_mean"] for r in rs], yerr=[r["acc_std"] for r in rs], **style)
            longer = [r for r in tests if r["mixer"] == arm and r["steps"] > first[arm] and len(rs) == 1]
            for r in longer:  # the longer budget of an arm that was below --extend-below: a cross above or below
                ax.plot([xs[0]] * 2, [rs[0]["acc_mean"], r["acc_mean"]], color=style["color"], lw=0.6, alpha=0.6)
                ax.plot(xs[0], r["acc_mean"], marker="x", ms=5, color=style["color"], ls="none")
            ax.annotate(arm, (xs[-1], rs[-1]["acc_mean"]), xytext=(xs[-1] * 1.05, label_y.get(arm, rs[-1]["acc_mean"])),
                        fontsize=6, va="center")
        ax.axhline(chance[T], color="gray", ls=":", lw=1)
        ax.text(0.01, chance[T] + 0.01, f"chance {chance[T]:.3f}", transform=ax.get_yaxis_transform(), fontsize=7,
                color="gray")
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        steps = min(r["steps"] for r in rows)
        widths = sorted({r["D"] for r in rows})
        ax.set_title((titles[i] + ": " if titles else "") + f"T = {T}, {rows[0]['K']} pairs, D = "
                     f"{','.join(map(str, widths))}, {steps} steps", fontsize=9)
        ax.set_xlabel("state size (floats per block)")
        ax.set_ylim(-0.02, 1.05)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("MQAR test accuracy")
    handles = [matplotlib.lines.Line2D([], [], color=c, marker="o", ls="none", label=k) for k, c in colour.items()]
    handles += [matplotlib.lines.Line2D([], [], color="0.3", marker=m, ls="none", mfc=f, label=label) for m, f, label in
                (("o", None, "SPEN block"), ("s", None, "GPT-2 block"), ("o", "none", "reader of the traces"),
                 ("x", None, "the same arm, twice the steps"))]
    fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=7, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=130, bbox_inches="tight")
    plt.close(fig)
    return True


def redraw_figure(result_files: list, path: Path, titles: list | None = None) -> None:
    """The README's figure from several sweeps' results.json side by side (the default and the factorial):
    python -c "import content_recall as R; R.redraw_figure(['results/content_recall/results.json',
    'results/content_recall/factorial_results.json'], 'figures/content_recall.png', ['default', 'factorial'])"
    """
    summaries, chance = [], {}
    for f in result_files:
        result = json.loads(Path(f).read_text())
        c = result["config"]
        for T, K in zip(c["lengths"], c["kv_pairs"]):
            test = mqar(c["n_test"], T, K, c["vocab"], seed=[TEST_SEED, T], noise=c["noise"])
            chance[T] = chance_accuracy(*test, c["vocab"])
        runs = [dict(r, budget_steps=r.get("budget_steps", r["budget"]["steps"])) for r in result["runs"]]
        summaries.append(summarise(runs))  # runs written before budget_steps existed carry it in their budget
    save_figure(summaries, Path(path), chance, titles)


# ----------------------------------------------------------------------------- CLI

# Presets fix the whole sweep; explicit flags override them. Pairs grow with length: the preset's table, else T/8.
FIRST_MIXERS = ("ema", "ema-learned", "selective", "linattn", "gla", "attention", *LOCALISATION)  # the default's
VECTOR_ARMS = ("ema", "ema-long", "ema-learned", "selective", "cumavg", "ema-wide", "legs", "longconv")
FACTORIAL = (*VECTOR_ARMS, *(f"{m}@gpt2" for m in VECTOR_ARMS), "linattn-paper", "linattn-long", "linattn-one",
             "linattn", "gla", "attention", *LOCALISATION, "trace-attn-history@k0")
PRESETS = {
    # Sized for 30 minutes on 2 idle CPU cores (two runs at a time, one thread each): the widths and lengths at
    # which attention, with the short convolution, solves MQAR on every seed within 1000 steps (pilots on the
    # validation set). Vocabulary 128 > T; pairs K = T/8, twice Zoology's density, so that T = 32 asks 4;
    # batch by length, 1024 tokens a step (with 16 sequences at T = 32, attention at D = 128 failed 2 seeds of 3).
    "cpu": dict(widths="64,128", lengths="32,64", pairs={32: 4, 64: 8}, tokens=1024, vocab=128, steps=1000,
                lrs="1e-3,3e-3,1e-2", lr_width=64, lr_length=64, n_test=1000, n_val=500, seeds="0,1,2",
                early_stop=0.0, mixers=",".join(FIRST_MIXERS)),
    # Zoology Figure 2 scale: vocabulary 8192, widths 64-512, lengths 64-512 with 4-64 pairs, batch by length
    # (about 16k tokens a step), up to 20k steps with early stop at 0.99 validation accuracy, lr from a log grid.
    "zoology": dict(widths="64,128,256,512", lengths="64,128,256,512", pairs={64: 4, 128: 8, 256: 16, 512: 64},
                    tokens=16384,
                    vocab=8192, steps=20000, lrs="1e-4,3e-4,1e-3,3e-3,1e-2", lr_width=128, lr_length=256,
                    n_test=3000, n_val=1000, seeds="0,1,2", early_stop=0.99, mixers=",".join(FIRST_MIXERS)),
    # What lets a recurrence recall (README, "Four hypotheses"): the default grid's hardest point, every arm of the
    # design (FACTORIAL), 4000 steps, then 8000 for the arms below 0.9, and the probe on the SPEN and on attention.
    # Without the 8000-step stage: about 3.5 hours on one CPU thread (--workers 1) beside other runs, 194 minutes of
    # runs (results/content_recall/README.md); the 8000-step stage would add about 2.5 more (an estimate).
    "factorial": dict(widths="64", lengths="64", pairs={64: 8}, tokens=1024, vocab=128, steps=4000, lrs="1e-3,3e-3",
                      lr_width=64, lr_length=64, n_test=1000, n_val=500, seeds="0,1,2", early_stop=0.0,
                      mixers=",".join(FACTORIAL), extend_below=0.9, extend_steps=8000, probe_arms="ema,attention",
                      probe_steps=3000),
}


def get_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False,
                                formatter_class=help_formatter(PRESETS))
    p.add_argument("--preset", choices=sorted(PRESETS), default="cpu", help="sweep size and training budget")
    p.add_argument("--mixers", default=None, help="comma-separated arms to compare: a mixer, with @gpt2 a vector state "
                   f"in GPT-2's block, with @k<N> its own --conv-kernel (mixers: {', '.join(MIXERS)})")
    p.add_argument("--widths", default=None, help="comma-separated model widths D")
    p.add_argument("--lengths", default=None, help="comma-separated sequence lengths T")
    p.add_argument("--kv-pairs", default=None, help="comma-separated key-value pairs K, one per length (default: the "
                   "preset's for its lengths, else T/8)")
    p.add_argument("--batch", default=None, help="comma-separated sequences per step, one per length (default: the "
                   "preset's tokens per step / T)")
    p.add_argument("--vocab", type=int, default=None, help="vocabulary V > every T (keys: 1..V/2-1, values: V/2..V-1)")
    p.add_argument("--steps", type=int, default=None, help="optimiser steps per run (equal for every mixer)")
    p.add_argument("--lrs", default=None, help="learning-rate grid, swept per mixer on the validation set")
    p.add_argument("--lr-width", type=int, default=None, help="width at which the learning rate is swept and the "
                   "localisation rows run (default: the preset's if in --widths, else the first width)")
    p.add_argument("--lr-length", type=int, default=None, help="length at which the learning rate is swept and the "
                   "localisation rows run (default: the preset's if in --lengths, else the first length)")
    p.add_argument("--n-test", type=int, default=None, help="sequences in the fixed test set (per length)")
    p.add_argument("--n-val", type=int, default=None, help="sequences in the fixed validation set (per length)")
    p.add_argument("--seeds", default=None, help="comma-separated seeds (initialisation and training data)")
    p.add_argument("--early-stop", type=float, default=None, help="stop a run once its validation accuracy "
                   "reaches this (0 = off: every run trains for --steps)")
    p.add_argument("--eval-every", type=int, default=250, help="steps between early-stop checks")
    p.add_argument("--extend-below", type=float, default=None, help="arms whose mean test accuracy at the lr point is "
                   "below this run every seed again with --extend-steps (default: the preset's, else 0 = never)")
    p.add_argument("--extend-steps", type=int, default=None, help="the longer budget for those arms (default: the "
                   "preset's, else 0)")
    p.add_argument("--probe-arms", default=None, help="comma-separated arms whose trained models (lr point, every "
                   "seed) get an MLP probe of their state at the query position (default: the preset's, else none)")
    p.add_argument("--probe-steps", type=int, default=None, help="training steps of each probe (default: the "
                   "preset's, else 3000)")
    p.add_argument("--noise", action=argparse.BooleanOptionalAction, default=True, help="fill non-pair, non-query "
                   "positions with random tokens (Zoology) instead of token 0")
    p.add_argument("--conv-kernel", type=int, default=3, help="causal depthwise convolution in front of every "
                   "mixer, as Zoology's baselines (0 = none)")
    p.add_argument("--n-layer", type=int, default=2, help="blocks L")
    p.add_argument("--ffn", choices=["dense", "sparse"], default="dense", help="FFN type, the same for every mixer")
    p.add_argument("--ffn-mult", type=int, default=2, help="FFN hidden width as a multiple of D")
    p.add_argument("--head-dim", type=int, default=64, help="attention head width (heads = max(1, D / head-dim))")
    p.add_argument("--min-lr-ratio", type=float, default=0.1, help="final learning rate as a fraction of the peak")
    p.add_argument("--weight-decay", type=float, default=0.0, help="AdamW weight decay on matrices (0: it pulls the "
                   "key and value embeddings to zero; with 0.1 attention solved one of two pilot seeds)")
    p.add_argument("--grad-clip", type=float, default=1.0, help="clip the gradient norm to this")
    p.add_argument("--workers", type=int, default=None, help="parallel runs, one CPU thread each (default: 2 on "
                   "CPU, 1 on GPU)")
    p.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu), cuda, mps or cpu")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None, help="torch.compile each model "
                   "(default: on for cuda only)")
    p.add_argument("--out-dir", default=str(ROOT / "runs" / "content_recall"), help="folder for results.json, "
                   "metrics.jsonl (one line per finished run) and the figure")
    fresh_or_not = p.add_mutually_exclusive_group()
    fresh_or_not.add_argument("--resume", action="store_true", help="reuse the finished runs in "
                              "<out-dir>/metrics.jsonl that have the same budget")
    fresh_or_not.add_argument("--overwrite", action="store_true", help="start afresh in an --out-dir that holds "
                              "runs (they are deleted)")
    p.add_argument("--figure", action=argparse.BooleanOptionalAction, default=True, help="save the figure (needs "
                   "matplotlib)")
    args = p.parse_args(argv)
    user_point = {k: getattr(args, k) for k in ("lr_width", "lr_length") if getattr(args, k) is not None}
    preset = PRESETS[args.preset]
    for k, v in {**dict(extend_below=0.0, extend_steps=0, probe_arms="", probe_steps=3000), **preset}.items():
        if getattr(args, k, "") is None:
            setattr(args, k, v)

    def ints(flag: str, text) -> list:
        try:
            values = [int(v) for v in str(text).split(",") if v.strip()]
        except ValueError:
            p.error(f"--{flag} {text!r}: expected comma-separated integers")
        if not values or min(values) < (0 if flag == "seeds" else 1):
            kind = "non-negative" if flag == "seeds" else "positive"
            p.error(f"--{flag} {text!r}: expected at least one {kind} integer")
        return values

    args.mixers = [m for m in args.mixers.split(",") if m]
    args.probe_arms = [m for m in args.probe_arms.split(",") if m]
    args.widths, args.lengths = ints("widths", args.widths), ints("lengths", args.lengths)
    args.seeds = ints("seeds", args.seeds)
    args.kv_pairs = ints("kv-pairs", args.kv_pairs) if args.kv_pairs else \
        [preset["pairs"].get(T, max(1, T // 8)) for T in args.lengths]
    args.batch = ints("batch", args.batch) if args.batch else [max(1, preset["tokens"] // T) for T in args.lengths]
    try:
        args.lrs = [float(v) for v in str(args.lrs).split(",") if v]
    except ValueError:
        p.error(f"--lrs {args.lrs!r}: expected comma-separated numbers")
    for m in args.mixers + args.probe_arms:
        try:
            parse_arm(m)
        except ValueError as err:
            p.error(f"--mixers: {err}")
    if set(args.probe_arms) - set(args.mixers):
        p.error(f"--probe-arms {','.join(args.probe_arms)}: a probe reads a trained model; add the arm to --mixers")
    for flag in ("steps", "n_test", "n_val", "n_layer", "ffn_mult", "head_dim", "eval_every", "probe_steps"):
        if getattr(args, flag) < 1:
            p.error(f"--{flag.replace('_', '-')} {getattr(args, flag)}: must be a positive integer")
    if args.conv_kernel < 0 or not args.lrs or min(args.lrs) <= 0:
        p.error("--conv-kernel must be >= 0 and --lrs positive numbers")
    check_ranges(p, args, positive=("lrs", "widths", "lengths", "grad_clip", *(("workers",) if args.workers is not None
                                                                                 else ())),
                 non_negative=("seeds", "weight_decay"), fraction=("min_lr_ratio", "early_stop"),
                 nonempty=("mixers",))  # nan, inf, an empty or repeated list; --early-stop above 1 is never reached
    for flag in ("kv_pairs", "batch"):
        if len(getattr(args, flag)) == 1:
            setattr(args, flag, getattr(args, flag) * len(args.lengths))
        if len(getattr(args, flag)) != len(args.lengths):
            p.error(f"--{flag.replace('_', '-')} {getattr(args, flag)} needs one entry per length in "
                    f"--lengths {args.lengths}")
    for T, K in zip(args.lengths, args.kv_pairs):
        if T % 2 or 4 * K > T or K >= args.vocab // 2:
            p.error(f"length {T} with {K} pairs: T must be even, 4K <= T (pairs, then as many query slots) "
                    f"and K < V/2 = {args.vocab // 2}; lower --kv-pairs or raise --lengths/--vocab")
    if args.vocab <= max(args.lengths):
        p.error(f"--vocab {args.vocab} must exceed every length (here {max(args.lengths)}), as Zoology's generator "
                "requires; raise --vocab or lower --lengths")
    for D in args.widths:
        if D % (2 * max(1, D // args.head_dim)):  # heads divide D, and linattn/gla's half-width keys too
            p.error(f"width {D} does not split into {D // args.head_dim} heads of --head-dim {args.head_dim} "
                    "(and half-width keys for linattn/gla); pick even multiples of it, or widths below it")
    for flag, grid in (("lr_width", args.widths), ("lr_length", args.lengths)):
        if getattr(args, flag) not in grid:  # the preset's point is off a grid given on the command line
            if flag in user_point:
                p.error(f"--{flag.replace('_', '-')} {user_point[flag]} is not in the grid {grid}; pick one of them")
            setattr(args, flag, grid[0])
    return args


# ----------------------------------------------------------------------------- main


def main(argv=None) -> dict:
    args = get_args(argv)
    device = pick_device(args.device)
    workers = args.workers if args.workers is not None else (min(2, os.cpu_count() or 1) if device == "cpu" else 1)
    out_dir = Path(args.out_dir)
    done = {job_key(r): r for r in read_jsonl(out_dir / "metrics.jsonl")
            if r.get("budget") == budget(args, r.get("budget", {}).get("steps"))} if args.resume else {}
    lr_D, lr_T = args.lr_width, args.lr_length  # where the learning rate is chosen and the localisation rows run
    setting = {T: (K, B) for T, K, B in zip(args.lengths, args.kv_pairs, args.batch)}
    chance = {T: chance_accuracy(*mqar(args.n_test, T, K, args.vocab, seed=[TEST_SEED, T], noise=args.noise),
                                 args.vocab) for T, (K, _) in setting.items()}
    t_start = time.perf_counter()
    n_grid = sum(1 if parse_arm(m)[0] in LOCALISATION else len(args.widths) * len(args.lengths) for m in args.mixers)
    n_runs = len(args.mixers) * (len(args.lrs) if len(args.lrs) > 1 else 0) + n_grid * len(args.seeds)
    print(f"MQAR: {len(args.mixers)} mixers, widths {args.widths}, lengths {args.lengths} (pairs {args.kv_pairs}, "
          f"batch {args.batch}), V {args.vocab}, seeds {args.seeds}, {args.steps} steps; at most {n_runs} runs on "
          f"{device} with {workers} worker(s)")

    # metrics.jsonl is the folder's metrics file: one line per finished run, the record --resume reads back.
    with RunFolder(out_dir, args.resume, args.overwrite, protected=("metrics.jsonl", "results.json",
                                                                         "content_recall.png", "models/*.pt")) as run, \
            StopOnSignal() as stop:
        # 1. Learning rate per mixer: one width and length, the first seed, scored on the validation set.
        common = dict(args=args, T=lr_T, K=setting[lr_T][0], B=setting[lr_T][1], D=lr_D, seed=args.seeds[0],
                      split="val", budget_steps=args.steps)
        lr_runs = run_jobs([dict(common, mixer=m, lr=lr) for m in args.mixers for lr in args.lrs] if len(args.lrs) > 1
                           else [], workers, run, stop, t_start, done)
        chosen_lr = {}
        for m in args.mixers:
            rs = [r for r in lr_runs if r["mixer"] == m]
            chosen_lr[m] = max(rs, key=lambda r: (r["acc"], -r["loss"]))["lr"] if rs else args.lrs[0]

        # 2. The sweep, every mixer at its own learning rate, scored on the test set; the localisation rows (the
        #    paper's predictor ablation, which only needs a point where a content gap exists) at the lr point only.
        #    The first seed's run at the lr point is the learning-rate run itself (trained once, scored on both).
        def sweep(mixers: list, steps: int) -> list:
            jobs = [dict(args=args, mixer=m, D=D, T=T, K=setting[T][0], B=setting[T][1], lr=chosen_lr[m], seed=s,
                         split="test", budget_steps=steps)
                    for m in mixers for T in args.lengths for D in args.widths for s in args.seeds
                    if parse_arm(m)[0] not in LOCALISATION or (D, T) == (lr_D, lr_T)]
            for r in lr_runs:
                if r["lr"] == chosen_lr[r["mixer"]] and r["budget_steps"] == steps and "test_acc" in r:
                    done.setdefault(job_key(dict(r, split="test")), dict(r, split="test", acc=r["test_acc"],
                                                                          loss=r["test_loss"]))
            return run_jobs(jobs, workers, run, stop, t_start, done)

        runs = sweep(args.mixers, args.steps)
        # 3. The arms still below --extend-below get every seed again with --extend-steps: "cannot" or "not yet".
        mean = {m: np.mean([r["acc"] for r in runs if r["mixer"] == m and (r["D"], r["T"]) == (lr_D, lr_T)])
                for m in args.mixers}
        slow = [m for m in args.mixers if mean[m] < args.extend_below]
        runs += sweep(slow, args.extend_steps) if slow and args.extend_steps > args.steps else []
        # 4. The probe: a strong reader trained on each frozen model of the --probe-arms at the lr point.
        probes = run_jobs([dict(common, mixer=m, lr=chosen_lr[m], seed=s, split="probe", budget_steps=args.probe_steps,
                                model_steps=args.steps)
                           for m in args.probe_arms for s in args.seeds], workers, run, stop, t_start, done)
        wall = time.perf_counter() - t_start
    summary = summarise(runs + probes)
    table = format_table(summary, chosen_lr, chance)
    print(f"\nMQAR test accuracy (mean +- std over seeds {args.seeds}; {args.n_test} test sequences per length)")
    print(table)
    if {m for cell in DESIGN.values() for m in cell} <= {parse_arm(m)[0] for m in args.mixers}:
        print("\nThe factorial, by coefficients and state (SPEN block / GPT-2 block):\n" + format_design(summary))
    print(f"learning rates (validation accuracy at D = {lr_D}, T = {lr_T}):")
    for m in args.mixers:
        grid = ", ".join(f"{r['lr']:.0e}: {r['acc']:.3f}" for r in sorted(lr_runs, key=lambda r: r["lr"])
                         if r["mixer"] == m)
        print(f"  {m}: chose {chosen_lr[m]:.0e} from [{grid or 'a single value'}]")
    new = [r for r in runs + lr_runs + probes if job_key(r) not in done]
    print(f"wall time {wall / 60:.1f} min on {device} ({workers} worker(s)); CPU seconds in runs "
          f"{sum(r['seconds'] for r in new):.0f}")
    figure = out_dir / "content_recall.png"
    has_figure = args.figure and save_figure([summary], figure, chance)
    result = dict(summary=summary, chosen_lr=chosen_lr, chance=chance, lr_sweep=lr_runs, runs=runs, probes=probes,
                  table=table, wall_seconds=wall, figure=portable(figure) if has_figure else None,
                  config=portable(vars(args)), model_config=asdict(model_config(args, lr_D, lr_T)), workers=workers,
                  **run_info(device))
    write_json_atomic(out_dir / "results.json", result)
    return result


if __name__ == "__main__":
    command_line(main, out_of_memory="lower --batch (sequences per step) or --widths, or run fewer --workers at once")
