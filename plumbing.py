"""plumbing.py: what every experiment script needs and none of them is about. No science lives here.

Device choice, the learning-rate schedule and optimiser grouping (scalars in, no argparse namespaces), the
run record (versions, hardware, git commit, machine load), atomic writes, and run folders that cannot be
clobbered: one exclusive lock per folder for the life of a run, a refusal to start a fresh run over a
finished or resumable one, and metrics that are cut back to the checkpoint on resume.
"""
import json
import math
import os
import platform
import subprocess
from pathlib import Path

import torch
import torch.nn as nn

from data.common import write_bytes_atomic, write_json_atomic  # noqa: F401  (re-exported for the scripts)

ROOT = Path(__file__).resolve().parent

# ----------------------------------------------------------------------------- device


def pick_device(name: str) -> str:
    """auto -> cuda, then mps, then cpu. An explicit device that is not there is a clear error, not a traceback."""
    if name == "auto":
        if torch.cuda.is_available():
            return "cuda"
        return "mps" if torch.backends.mps.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: this torch build sees no CUDA GPU (torch "
                         f"{torch.__version__}). Run on the CPU with --device cpu (or --device auto), or install "
                         "a CUDA build of torch on a machine with an NVIDIA GPU.")
    if name == "mps" and not torch.backends.mps.is_available():
        raise SystemExit("--device mps: Apple's Metal backend is not available here; use --device cpu or auto.")
    if name not in ("cuda", "mps", "cpu"):
        raise SystemExit(f"--device {name!r}: choose auto, cuda, mps or cpu")
    return name


# ----------------------------------------------------------------------------- optimisation


def lr_at(step: int, lr: float, warmup_steps: int, max_steps: int, min_lr_ratio: float) -> float:
    """Linear warm-up to lr over warmup_steps, then cosine decay to min_lr_ratio * lr at max_steps."""
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, max_steps - warmup_steps))
    return lr * (min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def make_optimizer(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices and embeddings only: norm gains, biases and the learned decays
    (stored 1-D on purpose) are not pulled towards zero."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.95))


# ----------------------------------------------------------------------------- run record


def cpu_name() -> str:
    """The CPU's marketing name from /proc/cpuinfo (platform.processor() is often empty on Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def run_info(device: str) -> dict:
    """What a reader needs to trust a number: versions, hardware, threads, commit and the machine's load."""
    return dict(torch=torch.__version__, python=platform.python_version(), device=device,
                gpu=torch.cuda.get_device_name() if device == "cuda" else None, cpu=cpu_name(),
                cpu_count=os.cpu_count(), threads=torch.get_num_threads(), commit=git_commit(),
                load_average=list(os.getloadavg()) if hasattr(os, "getloadavg") else None)


def write_json(path: Path, obj) -> None:
    """Atomic JSON write (temporary file, fsync, rename)."""
    write_json_atomic(path, obj)


def read_jsonl(path: Path) -> list:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()] if Path(path).exists() else []
