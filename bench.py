"""bench.py: is the EMA (exponential moving average) model cheap? The scan, the top-k, and training steps.

Hypothesis: an EMA-only model exists to be cheap. Its context costs O(T) memory traffic and no attention, so (a) the
chunked scan should run near the memory floor (read x once, write the S traces once; the backward the reverse) and
far faster than the time loop, (b) the sparse FFN's top-k should cost a few percent of a step, and (c) a training
step of the SPEN (ema_lm.py's EMA model) should beat a same-size Transformer's (GPT-2), the more so the longer the
context. Targets on a GPU (README "Speed"): scan forward+backward <= 3x the floor; SPEN tokens/s >= 1.0x GPT-2 at
T = 1024, 1.3x at 4096, 1.6x at 8192; SPEN MFU >= 40%; SPEN peak memory <= GPT-2's at T = 1024; top-k <= 5%.

What it measures, in one process (every compiled case with static shapes, the compiler reset between cases):
- recompile: a compiled SPEN at three lengths in one process, forward and backward, against eager (torch 2.11 once
  failed here when dynamo turned T symbolic on the second length);
- ceilings (GPU only): copy bandwidth and the bf16 matrix-product rate;
- scan: `ema_scan_reference` (time loop) and `ema_scan` eager and compiled, forward and forward+backward, against
  the floor = bytes of x read once + bytes of the (B, T, S, D) traces written once, at the measured copy bandwidth
  (forward+backward: twice that, the backward reading the traces' gradient and writing x's);
- topk: the FFN's k-th-largest threshold on a (tokens, H) tensor, four exact ways (every mask is checked equal);
- model: training-step tokens/s, MFU (model FLOPs utilisation), peak memory of the 130M SPEN (`--preset paper`) and
  its GPT-2 control at T = 1024, 4096 and 8192 (the small preset on a CPU), and the ratios the targets name;
- profile: the share of a SPEN step and of a GPT-2 step taken by each part (scan, top-k, attention, projections,
  output layer, optimiser, other), from torch.profiler: device kernel time on a GPU (the compiled step), CPU time
  on a CPU (the eager step). A kernel belongs to the part of the op that launched it (`part_of`).

Commands:
    python bench.py                 # CPU: small shapes, the small preset; runs/bench/bench-cpu.json
    python bench.py --device cuda   # GPU: everything above at the paper's size; runs/bench/bench-cuda.json

Measured: results/bench/README.md (card, torch version, date, commit).

Glossary: B batch, T time, D width, S traces (3), C chunk size, H FFN hidden width, k kept units (6% of H),
MFU = model FLOPs / (time x peak FLOPs).
"""
# ----------------------------------------------------------------------------- imports
import argparse
import statistics
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

import ema_lm as E
from plumbing import (command_line, compile_static, git_commit, help_formatter, make_optimizer, peak_bf16_flops,
                      pick_device, write_json_atomic)

ROOT = Path(__file__).resolve().parent

# ----------------------------------------------------------------------------- timing


def timed(fn, device: str, reps: int, warmup: int = 2) -> float:
    """Median seconds of fn() over reps runs, after warm-up (which also triggers compilation)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


# ----------------------------------------------------------------------------- recompilation


def recompile_check(device: str, lengths=(64, 96, 128), backend: str = "inductor") -> dict:
    """A compiled SPEN (2 blocks, width 64) at several lengths in one process, with torch.compile's default
    dynamic-shape policy (the second length makes T symbolic): logits and gradients against eager."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = E.LanguageModel(E.ModelConfig(n_layer=2, d_model=64, d_ffn=192, n_head=2, block_size=max(lengths),
                                          vocab_size=512)).to(device)
    step = torch.compile(model, backend=backend)
    worst = 0.0
    for T in lengths:
        idx = torch.randint(0, 512, (2, T), device=device)
        grads = []
        for fn in (model, step):
            model.zero_grad(set_to_none=True)
            logits, loss = fn(idx, idx)
            loss.backward()
            grads.append([logits.detach()] + [p.grad for p in model.parameters()])
        worst = max(worst, max(((a - b).abs().max() / b.abs().max().clamp(min=1e-12)).item()
                               for a, b in zip(*grads)))
    ok = worst < 1e-3
    print(f"  recompile: compiled SPEN at T = {', '.join(map(str, lengths))} in one process: "
          f"{'ok' if ok else 'MISMATCH'} (largest relative difference from eager {worst:.1e})")
    return dict(lengths=list(lengths), max_rel_diff=worst, ok=ok)


# ----------------------------------------------------------------------------- ceilings


def ceilings(device: str, reps: int) -> dict:
    x = torch.empty(2 ** 28, dtype=torch.float32, device=device)  # 1 GiB
    y = torch.empty_like(x)
    t = timed(lambda: y.copy_(x), device, reps)
    a = torch.randn(8192, 8192, dtype=torch.bfloat16, device=device)
    t_mm = timed(lambda: a @ a, device, reps)  # x, y and a are freed on return
    return dict(copy_GBps=2 * 2 ** 30 / t / 1e9, bf16_matmul_TFLOPs=2 * 8192 ** 3 / t_mm / 1e12)


def copy_bandwidth(device: str, reps: int) -> float:
    x = torch.empty(2 ** 26, dtype=torch.float32, device=device)
    y = torch.empty_like(x)
    return 2 * x.numel() * 4 / timed(lambda: y.copy_(x), device, reps) / 1e9


# ----------------------------------------------------------------------------- scan


def bench_scan(shape, dtype, device: str, reps: int, chunk_sizes, copy_GBps: float, with_reference: bool) -> list:
    B, T, D = shape
    S = len(E.ALPHAS)
    x = torch.randn(B, T, D, device=device, dtype=dtype, requires_grad=True)
    g = torch.randn(B, T, S, D, device=device, dtype=dtype)
    floor = B * T * D * (1 + S) * x.element_size() / (copy_GBps * 1e9)  # seconds, forward
    variants = [("ema_scan eager, C=64", lambda x: E.ema_scan(x, E.ALPHAS, 64))]
    variants += [(f"ema_scan compiled, C={C}", compile_static(lambda x, C=C: E.ema_scan(x, E.ALPHAS, C)))
                 for C in chunk_sizes]
    if with_reference:
        variants.insert(0, ("ema_scan_reference (time loop)", lambda x: E.ema_scan_reference(x, E.ALPHAS)))
    rows = []
    for name, fn in variants:
        r = reps if "reference" not in name else max(1, reps // 10)
        try:  # a compiler failure in one variant must not lose the others
            with torch.no_grad():
                t_fwd = timed(lambda: fn(x), device, r)
            t_bwd = timed(lambda: torch.autograd.grad(fn(x), x, g), device, r)
        except Exception as err:  # noqa: BLE001 - recorded in the JSON and printed
            print(f"  scan {tuple(shape)} {name} failed: {err!r}"[:300])
            rows.append(dict(name=name, shape=list(shape), dtype=str(dtype).split(".")[-1], error=repr(err)[:500]))
            continue
        rows.append(dict(name=name, shape=list(shape), dtype=str(dtype).split(".")[-1],
                         fwd_ms=t_fwd * 1e3, fwd_bwd_ms=t_bwd * 1e3,
                         fwd_x_floor=t_fwd / floor, fwd_bwd_x_floor=t_bwd / (2 * floor)))
        print(f"  scan {tuple(shape)} {rows[-1]['dtype']:>8} {name:32s} fwd {t_fwd * 1e3:8.3f} ms "
              f"({rows[-1]['fwd_x_floor']:5.1f}x floor)  fwd+bwd {t_bwd * 1e3:8.3f} ms "
              f"({rows[-1]['fwd_bwd_x_floor']:5.1f}x floor)")
    return rows


# ----------------------------------------------------------------------------- top-k: four exact thresholds


def order_keys(a: torch.Tensor) -> torch.Tensor:
    """Integers in the order of the floats (bf16, fp16 or fp32): the bits, with a negative float's magnitude bits
    flipped so that a larger magnitude gives a smaller key. Shifted to be non-negative (int64)."""
    bits = 16 if a.dtype in (torch.bfloat16, torch.float16) else 32
    key = a.view(torch.int16 if bits == 16 else torch.int32).long()  # sign-extended
    return (key ^ ((key >> (bits - 1)) & ((1 << (bits - 1)) - 1))) + (1 << (bits - 1))


def kth_sorted(a: torch.Tensor, k: int) -> torch.Tensor:
    return a.topk(k, dim=-1).values[..., -1:]  # the model's first version


def kth_unsorted(a: torch.Tensor, k: int) -> torch.Tensor:
    return a.topk(k, dim=-1, sorted=False).values.amin(-1, keepdim=True)  # ema_lm.FFN today


def kth_bisection(a: torch.Tensor, k: int) -> torch.Tensor:
    """The k-th largest key by bisection, one bit a step (16 steps in bf16): each step one reduction over the row."""
    key = order_keys(a)
    bits = 8 * a.element_size()
    lo, hi = torch.zeros_like(key[..., :1]), torch.full_like(key[..., :1], (1 << bits) - 1)
    for _ in range(bits):  # invariant: the k-th largest key lies in [lo, hi]
        mid = (lo + hi + 1) >> 1
        ok = (key >= mid).sum(-1, keepdim=True) >= k
        lo, hi = torch.where(ok, mid, lo), torch.where(ok, hi, mid - 1)
    return lo


def kth_radix(a: torch.Tensor, k: int) -> torch.Tensor:
    """The k-th largest key, 4 bits a pass (4 passes in bf16): each pass counts the keys at or above 16
    thresholds at once, so that a fused kernel reads the row once per pass, not once per bit."""
    key = order_keys(a)
    prefix = torch.zeros_like(key[..., :1])
    digits = torch.arange(16, device=a.device)
    for shift in range(8 * a.element_size() - 4, -1, -4):  # invariant: the answer lies in [prefix, prefix + 16^..)
        counts = (key[..., None, :] >= prefix[..., None] + (digits[:, None] << shift)).sum(-1)  # (..., 16)
        prefix = prefix + (((counts >= k).sum(-1, keepdim=True) - 1) << shift)  # the largest digit keeping >= k
    return prefix


TOPK = {"topk sorted": kth_sorted, "topk unsorted + amin (model)": kth_unsorted, "bisection on order keys":
        kth_bisection, "radix-16 on order keys": kth_radix}


def topk_mask(a: torch.Tensor, k: int, method: str) -> torch.Tensor:
    kth = TOPK[method](a, k)
    return order_keys(a) >= kth if "order keys" in method else a >= kth


def bench_topk(rows: int, H: int, dtype, device: str, reps: int) -> list:
    k = max(1, round(0.06 * H))
    a = torch.randn(rows, H, device=device, dtype=dtype)
    truth = topk_mask(a, k, "topk sorted")
    out = []
    for method in TOPK:
        fns = [("eager", lambda m=method: topk_mask(a, k, m))]
        if device == "cuda":
            fns.append(("compiled", lambda f=compile_static(lambda x, m=method: topk_mask(x, k, m)): f(a)))
        for mode, fn in fns:
            same = bool(torch.equal(fn(), truth))
            t = timed(fn, device, reps)
            out.append(dict(method=method, mode=mode, shape=[rows, H], k=k, dtype=str(dtype).split(".")[-1],
                            ms=t * 1e3, mask_identical=same))
            print(f"  top-k {rows}x{H} k={k} {out[-1]['dtype']:>8} {method:30s} {mode:8s} {t * 1e3:8.3f} ms"
                  f"{'' if same else '  MASK DIFFERS'}")
    return out


# ----------------------------------------------------------------------------- model: steps and profiles


def build_case(preset: str, mixer: str, T: int, B: int, device: str, flags: tuple = ()) -> tuple:
    """The model and one training step of it (compiled on a GPU) on a fixed batch; `flags`: more ema_lm.py flags."""
    args = E.get_args(["--preset", preset, "--mixer", mixer, "--block-size", str(T), "--micro-batch", str(B),
                       "--batch-tokens", str(B * T), *flags])
    torch.manual_seed(0)
    model = E.LanguageModel(E.model_config(args)).to(device)
    opt = make_optimizer(model, args.lr, args.weight_decay)
    step_model = compile_static(model) if device == "cuda" else model
    x = torch.randint(0, 50257, (B, T), device=device)

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device == "cuda"):
            _, loss = step_model(x, x)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return model, step


def bench_model(model: E.LanguageModel, step, B: int, T: int, device: str, reps: int, peak_flops: float) -> dict:
    """Tokens/s, MFU and peak memory of one full training step (forward, backward, AdamW)."""
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t = timed(step, device, reps, warmup=3)
    tok_s = B * T / t
    row = dict(mixer=model.cfg.mixer, ffn=model.cfg.ffn, T=T, B=B, params=model.num_params(), step_ms=t * 1e3,
               tok_per_s=tok_s, flops_per_token=E.flops_per_token(model))
    if device == "cuda":
        row["peak_mem_GiB"] = torch.cuda.max_memory_allocated() / 2 ** 30
        if peak_flops:
            row["mfu"] = row["flops_per_token"] * tok_s / peak_flops  # against this card's own bf16 peak
    print(f"  model {model.cfg.mixer:9s} T={T:5d} B={B:3d}: {tok_s:12,.0f} tok/s"
          + (f", MFU {row.get('mfu', float('nan')):.1%}, peak {row['peak_mem_GiB']:.1f} GiB" if device == "cuda"
             else ""))
    return row


PARTS = ("scan", "top-k", "attention", "projections", "output layer", "optimiser", "other")
MATMULS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear")


def part_of(event, kernel: str, vocab: int) -> str:
    """The part of a training step that a profiler event (an op, or the launch of a GPU kernel named `kernel`)
    belongs to, from its own name and its ancestors' (a torch.profiler FunctionEvent chain through cpu_parent).
    Eager steps carry the scan's own label (the EMAScan autograd function); compiled ones do not, so there the
    scan is the batched matrix product (only the scan multiplies batched matrices in these models) and the scan's
    small elementwise kernels count as "other"."""
    chain = []
    while event is not None:
        chain.append(event)
        event = event.cpu_parent
    text, kernel = " ".join(e.name for e in chain), kernel.lower()
    if "Optimizer." in text:
        return "optimiser"
    if "EMAScan" in text:
        return "scan"
    if "aten::topk" in text or "topk" in kernel:
        return "top-k"
    if "scaled_dot_product" in text or "flash" in kernel or "fmha" in kernel:
        return "attention"
    if any(s in text.lower() for s in ("log_softmax", "nllloss", "nll_loss", "cross_entropy")) or \
            "log_softmax" in kernel or "nll" in kernel:
        return "output layer"
    for e in chain:
        if e.name in MATMULS:
            if any(vocab in shape for shape in e.input_shapes or []):
                return "output layer"  # a product with the V-wide output layer, forward or backward
            return "scan" if e.name == "aten::bmm" else "projections"
    return "other"


def profile_step(model: E.LanguageModel, step, device: str, steps: int = 3) -> dict:
    """Share of the step's time taken by each of PARTS (GPU kernel time, or CPU self time on a CPU)."""
    for _ in range(2):
        step()  # compiled and warm before the profile
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    with profile(activities=activities, record_shapes=True) as prof:
        for _ in range(steps):
            step()
        if device == "cuda":
            torch.cuda.synchronize()
    vocab = model.cfg.vocab_size
    totals, kernels = dict.fromkeys(PARTS, 0.0), {}
    for ev in prof.events():
        if device == "cuda":
            for k in ev.kernels:  # the GPU kernels this launch started
                totals[part_of(ev, k.name, vocab)] += k.duration
                kernels[k.name] = kernels.get(k.name, 0.0) + k.duration
        else:
            totals[part_of(ev, "", vocab)] += ev.self_cpu_time_total
    whole = sum(totals.values()) or 1.0
    top = sorted(kernels.items(), key=lambda kv: -kv[1])[:15]
    out = dict(mixer=model.cfg.mixer, T=model.cfg.block_size, clock="gpu kernels" if device == "cuda" else "cpu",
               ms_per_step=whole / steps / 1e3, share={p: totals[p] / whole for p in PARTS},
               top_kernels=[dict(name=n[:160], share=t / whole) for n, t in top],
               align1_kernels=[n[:160] for n in kernels if "align1" in n])
    print(f"  profile {out['mixer']:9s} T={out['T']}: " + ", ".join(f"{p} {s:.1%}" for p, s in out["share"].items())
          + (f"; sm75 align1 kernels: {len(out['align1_kernels'])}" if device == "cuda" else ""))
    return out


def targets(models: list, scan: list) -> list:
    """The issue's targets, each met or missed, with the measured value (GPU rows only)."""
    by = {(r["mixer"], r["T"]): r for r in models if "error" not in r}
    out = []
    for T, want in ((1024, 1.0), (4096, 1.3), (8192, 1.6)):
        if ("ema", T) in by and ("attention", T) in by:
            ratio = by["ema", T]["tok_per_s"] / by["attention", T]["tok_per_s"]
            out.append(dict(target=f"SPEN tokens/s >= {want}x GPT-2 at T = {T}", value=ratio, met=ratio >= want))
    for (mixer, T), r in by.items():
        if mixer == "ema" and "mfu" in r:
            out.append(dict(target=f"SPEN MFU >= 40% at T = {T}", value=r["mfu"], met=r["mfu"] >= 0.40))
    if ("ema", 1024) in by and "peak_mem_GiB" in by["ema", 1024]:
        mem = by["ema", 1024]["peak_mem_GiB"] / by["attention", 1024]["peak_mem_GiB"]
        out.append(dict(target="SPEN peak memory <= GPT-2's at T = 1024", value=mem, met=mem <= 1.0))
    for r in scan:
        if "compiled" in r["name"] and "error" not in r and r["shape"][0] in (16, 4):
            out.append(dict(target=f"scan fwd+bwd <= 3x floor, {tuple(r['shape'])} {r['dtype']}",
                            value=r["fwd_bwd_x_floor"], met=r["fwd_bwd_x_floor"] <= 3))
    for t in out:
        print(f"  target: {t['target']}: {t['value']:.2f} -> {'met' if t['met'] else 'MISSED'}")
    return out


# ----------------------------------------------------------------------------- CLI


STAGES = ("recompile", "ceilings", "scan", "topk", "model", "profile")


def get_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False,
                                formatter_class=help_formatter())
    p.add_argument("--device", choices=["auto", "cuda", "mps", "cpu"], default="auto", help="auto: cuda, mps, then cpu")
    p.add_argument("--parts", default=",".join(STAGES), help="comma-separated parts to run")
    p.add_argument("--chunk-sizes", default="64", help="chunk sizes of the compiled scan (each one is compiled anew)")
    p.add_argument("--reps", type=int, default=0, help="timed repetitions per measurement; 0: 20 on a GPU, 3 on a CPU")
    p.add_argument("--out", default=None, help="JSON output path; default: runs/bench/bench-<device>.json")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    args = p.parse_args(argv)
    args.parts = [x for x in args.parts.split(",") if x]
    if not args.parts or set(args.parts) - set(STAGES):
        p.error(f"--parts {','.join(args.parts)!r}: choose one or more of {','.join(STAGES)}")
    try:
        args.chunk_sizes = [int(c) for c in args.chunk_sizes.split(",") if c]
    except ValueError:
        p.error(f"--chunk-sizes {args.chunk_sizes!r}: give comma-separated integers, e.g. 32,64")
    if any(c < 1 for c in args.chunk_sizes) or args.reps < 0:
        p.error(f"--chunk-sizes {args.chunk_sizes} and --reps {args.reps}: chunk sizes must be >= 1, --reps >= 0")
    return args


# ----------------------------------------------------------------------------- main


def main(argv=None) -> dict:
    args = get_args(argv)
    device = pick_device(args.device)
    out = Path(args.out) if args.out else ROOT / "runs" / "bench" / f"bench-{device}.json"
    if out.is_dir():  # before the benchmark, not after it
        raise SystemExit(f"--out {out} is a folder; give a file name, e.g. {out / f'bench-{device}.json'}")
    if out.exists() and not args.overwrite:
        raise SystemExit(f"{out} already holds a benchmark; add --overwrite to replace it, or choose another --out")
    try:  # a folder that cannot be written is found now, not after the benchmark
        out.parent.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=out.parent).close()
    except OSError as err:
        raise SystemExit(f"--out {out}: cannot write there ({err.strerror}); choose another --out") from None
    gpu = device == "cuda"
    reps = args.reps or (20 if gpu else 3)
    parts = set(args.parts)
    result = dict(device=device, gpu=torch.cuda.get_device_name() if gpu else None, torch=torch.__version__,
                  date=datetime.now(timezone.utc).strftime("%Y-%m-%d"), threads=torch.get_num_threads(),
                  commit=git_commit())
    print(f"bench on {result['gpu'] or 'cpu'} ({result['threads']} threads), torch {torch.__version__}")
    if gpu:
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32: the parity tests hold at 1e-5
    if "recompile" in parts:
        result["recompile"] = recompile_check(device)
    if "ceilings" in parts and gpu:
        result["ceilings"] = ceilings(device, reps)
        print(f"  copy {result['ceilings']['copy_GBps']:,.0f} GB/s, "
              f"bf16 matmul {result['ceilings']['bf16_matmul_TFLOPs']:.0f} TFLOP/s")
    if "scan" in parts:
        copy_GBps = result.get("ceilings", {}).get("copy_GBps") or copy_bandwidth(device, reps)
        result["copy_GBps"], result["scan"] = copy_GBps, []
        for shape in [(16, 1024, 768), (4, 8192, 768)] if gpu else [(8, 1024, 256)]:
            for dtype in [torch.float32, torch.bfloat16] if gpu else [torch.float32]:
                result["scan"] += bench_scan(shape, dtype, device, reps, args.chunk_sizes, copy_GBps,
                                             with_reference=shape[1] <= 1024 and dtype == torch.float32)
    if "topk" in parts:  # the paper-size FFN at B x T = 16k tokens on a GPU; the small one on a CPU
        result["topk"] = bench_topk(16384, 2304, torch.bfloat16, device, reps) if gpu else \
            bench_topk(2048, 384, torch.float32, device, reps)
    # The paper's size on a GPU, one batch of 16k tokens; the small preset on a CPU. The profile reuses the first
    # case's compiled step. MFU against the card's datasheet peak, else the bf16 rate measured above.
    cases = [("paper", 1024, 16), ("paper", 4096, 4), ("paper", 8192, 2)] if gpu else [("small", 128, 16)]
    peak_flops = peak_bf16_flops(device) or result.get("ceilings", {}).get("bf16_matmul_TFLOPs", 0) * 1e12 or None
    result["peak_bf16_flops"] = peak_flops
    for preset, T, B in cases if "model" in parts else cases[:1]:
        for mixer in ("ema", "attention"):
            try:  # one failing case (out of memory, say) must not lose the others
                model, step = build_case(preset, mixer, T, B, device)
                if "model" in parts:
                    result.setdefault("model", []).append(bench_model(model, step, B, T, device, max(3, reps // 2),
                                                                      peak_flops))
                if "profile" in parts and T == cases[0][1]:
                    result.setdefault("profile", []).append(profile_step(model, step, device))
            except Exception as err:  # noqa: BLE001 - recorded in the JSON and printed
                print(f"  model {preset} {mixer} T={T} failed: {err!r}"[:300])
                result.setdefault("errors", []).append(dict(preset=preset, mixer=mixer, T=T, error=repr(err)[:500]))
            model = step = None  # freed before the next case
            if gpu:
                torch.cuda.empty_cache()
    if gpu:
        result["targets"] = targets(result.get("model", []), result.get("scan", []))
    write_json_atomic(out, result)
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    command_line(main, out_of_memory="run fewer parts (--parts), or on a card with more memory: the model cases are "
                                     "the paper's 130M models at 16k tokens a step")
