"""bench.py: how fast is the EMA (exponential moving average) scan; does an EMA-only model train faster?

Hypothesis: an EMA-only model exists to be cheap. Its context costs O(T) memory traffic and no attention, so (a) the
chunked scan should run near the memory floor (read x once, write the S traces once) and far faster than the time
loop, and (b) a training step of the SPEN (ema_lm.py's EMA model) should beat a same-size Transformer's, the more so
the longer the context.

What it measures, in one run, on whatever device it finds:
- ceilings (GPU only): device-to-device copy bandwidth and the bf16 matrix-product rate;
- the scan: `ema_scan_reference` (time loop), `ema_scan` eager and compiled (several chunk sizes),
  forward and forward+backward; time, effective GB/s and the multiple of the floor, where
  floor = bytes of x read once + bytes of the (B, T, S, D) traces written once, at the measured copy
  bandwidth (forward+backward: twice that, as the backward reads the traces' gradient and writes x's);
- the model: training-step tokens/s, MFU (model FLOPs utilisation) and peak memory of ema_lm.py's SPEN
  (`--preset paper`) and its
  attention control, at T=1024 and T=4096, bf16 and compiled; the small preset on a CPU.

Commands:
    python bench.py                 # CPU: scan at (8, 1024, 256), small-preset training steps
    python bench.py --device cuda   # GPU: everything above; writes runs/bench/bench-cuda.json

Measured results: README.md, "Performance" (card, torch version, date).

Glossary: B batch, T time, D width, S traces (3), C chunk size, MFU = model FLOPs / (time x peak FLOPs).
"""
# ----------------------------------------------------------------------------- imports
import argparse
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

import ema_lm as E
from plumbing import make_optimizer, peak_bf16_flops, pick_device, write_json_atomic

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


# ----------------------------------------------------------------------------- ceilings


def ceilings(device: str, reps: int) -> dict:
    x = torch.empty(2 ** 28, dtype=torch.float32, device=device)  # 1 GiB
    y = torch.empty_like(x)
    t = timed(lambda: y.copy_(x), device, reps)
    a = torch.randn(8192, 8192, dtype=torch.bfloat16, device=device)
    t_mm = timed(lambda: a @ a, device, reps)  # x, y and a are freed on return
    return dict(copy_GBps=2 * 2 ** 30 / t / 1e9, bf16_matmul_TFLOPs=2 * 8192 ** 3 / t_mm / 1e12)


# ----------------------------------------------------------------------------- scan


def bench_scan(shape, dtype, device: str, reps: int, chunk_sizes, copy_GBps: float, with_reference: bool) -> list:
    B, T, D = shape
    S = len(E.ALPHAS)
    x = torch.randn(B, T, D, device=device, dtype=dtype, requires_grad=True)
    g = torch.randn(B, T, S, D, device=device, dtype=dtype)
    floor = B * T * D * (1 + S) * x.element_size() / (copy_GBps * 1e9)  # seconds, forward
    variants = [("ema_scan eager, C=64", lambda x: E.ema_scan(x, E.ALPHAS, 64))]
    for C in chunk_sizes:
        variants.append((f"ema_scan compiled, C={C}",
                         torch.compile(lambda x, C=C: E.ema_scan(x, E.ALPHAS, C), dynamic=False)))
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
                         fwd_x_floor=t_fwd / floor, fwd_bwd_x_floor=t_bwd / (2 * floor),
                         fwd_GBps=floor * copy_GBps / t_fwd, fwd_bwd_GBps=2 * floor * copy_GBps / t_bwd))
        print(f"  scan {tuple(shape)} {rows[-1]['dtype']:>8} {name:32s} fwd {t_fwd * 1e3:8.3f} ms "
              f"({rows[-1]['fwd_x_floor']:5.1f}x floor)  fwd+bwd {t_bwd * 1e3:8.3f} ms "
              f"({rows[-1]['fwd_bwd_x_floor']:5.1f}x floor)")
    return rows


# ----------------------------------------------------------------------------- model


def bench_model(preset: str, mixer: str, T: int, B: int, device: str, reps: int, peak_flops: float) -> dict:
    """Tokens/s, MFU and peak memory of one full training step (forward, backward, AdamW)."""
    args = E.get_args(["--preset", preset, "--mixer", mixer, "--block-size", str(T), "--micro-batch", str(B),
                       "--batch-tokens", str(B * T)])
    cfg = E.model_config(args)
    torch.manual_seed(0)
    model = E.LanguageModel(cfg).to(device)
    opt = make_optimizer(model, args.lr, args.weight_decay)
    step_model = torch.compile(model) if device == "cuda" else model
    use_bf16 = device == "cuda"
    x = torch.randint(0, 50257, (B, T), device=device)

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_bf16):
            _, loss = step_model(x, x)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t = timed(step, device, reps, warmup=3)
    tok_s = B * T / t
    row = dict(preset=preset, mixer=mixer, ffn=cfg.ffn, T=T, B=B, params=model.num_params(), step_ms=t * 1e3,
               tok_per_s=tok_s, flops_per_token=E.flops_per_token(model))
    if device == "cuda":
        row["peak_mem_GiB"] = torch.cuda.max_memory_allocated() / 2 ** 30
        if peak_flops:
            row["mfu"] = row["flops_per_token"] * tok_s / peak_flops  # against this card's own bf16 peak
    gpu_row = device == "cuda"
    print(f"  model {preset} {mixer:9s} T={T:5d} B={B:3d}: {tok_s:12,.0f} tok/s"
          + (f", MFU {row.get('mfu', float('nan')):.1%}, peak {row['peak_mem_GiB']:.1f} GiB" if gpu_row else ""))
    return row  # the model and optimiser are freed on return; the caller empties the CUDA cache


# ----------------------------------------------------------------------------- CLI


PARTS = ("ceilings", "scan", "model")


def get_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--device", choices=["auto", "cuda", "mps", "cpu"], default="auto", help="auto: cuda, mps, then cpu")
    p.add_argument("--parts", default=",".join(PARTS), help="comma-separated parts to run")
    p.add_argument("--chunk-sizes", default="", help="chunk sizes for the compiled scan "
                   "(default: 16,32,64,128 on GPU, 64 on CPU)")
    p.add_argument("--reps", type=int, default=0, help="timed repetitions per measurement (0: 20 on GPU, 3 on CPU)")
    p.add_argument("--out", default=None, help="JSON output path (default: runs/bench/bench-<device>.json)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    args = p.parse_args(argv)
    args.parts = [x for x in args.parts.split(",") if x]
    if not args.parts or set(args.parts) - set(PARTS):
        p.error(f"--parts {','.join(args.parts)!r}: choose one or more of {','.join(PARTS)}")
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
    if out.exists() and not args.overwrite:  # before the benchmark, not after it
        raise SystemExit(f"{out} already holds a benchmark; add --overwrite to replace it, or choose another --out")
    gpu = device == "cuda"
    reps = args.reps or (20 if gpu else 3)
    parts = set(args.parts)
    chunk_sizes = args.chunk_sizes or ([16, 32, 64, 128] if gpu else [64])
    result = dict(device=device, gpu=torch.cuda.get_device_name() if gpu else None, torch=torch.__version__,
                  date=datetime.now(timezone.utc).strftime("%Y-%m-%d"), threads=torch.get_num_threads())
    print(f"bench on {result['gpu'] or 'cpu'} ({result['threads']} threads), torch {torch.__version__}")
    if gpu:
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32: the parity tests hold at 1e-5
    if "ceilings" in parts and gpu:
        result["ceilings"] = ceilings(device, reps)
        print(f"  copy {result['ceilings']['copy_GBps']:,.0f} GB/s, "
              f"bf16 matmul {result['ceilings']['bf16_matmul_TFLOPs']:.0f} TFLOP/s")
    if "scan" in parts:
        result["scan"] = []
        shapes = [(16, 1024, 768), (4, 8192, 768)] if gpu else [(8, 1024, 256)]
        dtypes = [torch.float32, torch.bfloat16] if gpu else [torch.float32]
        copy_GBps = result.get("ceilings", {}).get("copy_GBps")
        if copy_GBps is None:  # the floor is always this machine's copy bandwidth, measured now
            x = torch.empty(2 ** 26, dtype=torch.float32, device=device)
            y = torch.empty_like(x)
            copy_GBps = 2 * x.numel() * 4 / timed(lambda: y.copy_(x), device, reps) / 1e9
            result["copy_GBps"] = copy_GBps
        for shape in shapes:
            for dtype in dtypes:
                with_ref = shape[1] <= 1024 and dtype == torch.float32
                result["scan"] += bench_scan(shape, dtype, device, reps, chunk_sizes, copy_GBps, with_ref)
    if "model" in parts:
        # MFU against the card's datasheet peak, else the bf16 matmul rate measured above (never another card's)
        peak_flops = peak_bf16_flops(device) or result.get("ceilings", {}).get("bf16_matmul_TFLOPs", 0) * 1e12 or None
        result["peak_bf16_flops"] = peak_flops
        cases = [("paper", 1024, 16), ("paper", 4096, 4)] if gpu else [("small", 128, 16)]
        result["model"] = []
        for preset, T, B in cases:
            for mixer in ("ema", "attention"):
                try:  # one failing case (out of memory, say) must not lose the others
                    result["model"].append(bench_model(preset, mixer, T, B, device, max(3, reps // 2), peak_flops))
                    if gpu:
                        torch.cuda.empty_cache()
                except Exception as err:  # noqa: BLE001 - recorded in the JSON and printed
                    print(f"  model {preset} {mixer} T={T} failed: {err!r}")
                    result["model"].append(dict(preset=preset, mixer=mixer, T=T, B=B, error=repr(err)))
    write_json_atomic(out, result)
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
