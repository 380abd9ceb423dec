"""plumbing.py: what every experiment script needs and none of them is about. No science lives here.

Device choice, the learning-rate schedule and optimiser grouping (scalars in, no argparse namespaces), flag
range checks, torchrun's process group, checkpoints, run folders that cannot be clobbered, interrupts that
keep the work, the run record (versions, hardware, git commit, machine load) and atomic writes.

A training script needs a few lines of it (ema_lm.py is the worked example; its flags --resume and
--overwrite are mutually exclusive, --allow-changed lets --resume change settings):

    check_ranges(parser, args, positive=("max_steps", "lr"), non_negative=("warmup_steps",))  # in get_args
    device = pick_device(args.device)            # --device cuda without CUDA: one clear message
    rank, world = init_distributed(device)       # (0, 1) unless torchrun started several processes
    if args.resume:                              # a missing, damaged or other-model checkpoint: one clear message
        ckpt = load_checkpoint(out_dir / "ckpt.pt", model_config)
        check_same_settings(ckpt["args"], vars(args), allow=args.allow_changed)  # lists what differs
        restore_training_state(ckpt, model, optimizer, gen)
    with RunFolder(out_dir, args.resume, args.overwrite) as run, StopOnSignal() as stop:  # lock, no clobbering
        run.cut_metrics(step)                    # resume: drop the records written after the checkpoint
        while step < max_steps:
            ...                                  # one optimiser step
            run.log(record)                      # one line of <out_dir>/metrics.jsonl
            if step % checkpoint_interval == 0 or stop.signum:
                save_checkpoint(out_dir / "ckpt.pt", training_state(model, optimizer, gen, step=step,
                                                                    args=vars(args)))  # atomic
            if stop.signum:                      # Ctrl-C or SIGTERM during the step
                stop.exit(f"stopped after step {step}; add --resume to go on")  # exit code 130 / 143

Every refusal is a SystemExit whose text names the file or flag, what was found and what to do: the
script stops with that one paragraph and no traceback, and a test can catch it.
"""
import argparse
import atexit
import fcntl
import json
import math
import os
import platform
import re
import signal
import subprocess
import sys
import threading
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import NoReturn

import torch
import torch.distributed as dist
import torch.nn as nn

from data.common import _mkstemp_beside, write_bytes_atomic, write_json_atomic  # noqa: F401  (re-exported)

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


# ----------------------------------------------------------------------------- flags


def check_ranges(parser: argparse.ArgumentParser, args: argparse.Namespace, positive: tuple = (),
                 non_negative: tuple = (), fraction: tuple = ()) -> None:
    """parser.error (exit 2, naming the flag, the value and the fix) for a value out of its range: positive
    (> 0), non_negative (>= 0) or fraction (0..1). Names are the argparse dests ("max_steps")."""
    for names, ok, need in ((positive, lambda v: v > 0, "a number above 0"),
                            (non_negative, lambda v: v >= 0, "0 or more"),
                            (fraction, lambda v: 0 <= v <= 1, "between 0 and 1")):
        for name in names:
            value = getattr(args, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and ok(value)):
                parser.error(f"--{name.replace('_', '-')} {value}: must be {need}")


# Dense bf16 peak of a card, from its datasheet, by a regular expression on torch.cuda.get_device_name() (the
# first match wins, so the more specific names come first). An unknown card gets no MFU (model FLOPs
# utilisation) rather than another card's peak.
PEAK_BF16_TFLOPS = ((r"GH200", 989), (r"H200", 989), (r"H100 PCIe", 756), (r"H100 NVL", 835), (r"H100", 989),
                    (r"A100", 312), (r"L40S", 362), (r"L40\b", 181), (r"L4\b", 121), (r"A10\b", 125),
                    (r"RTX 4090", 165), (r"RTX 3090", 71))


def peak_bf16_flops(device: str) -> float | None:
    """The card's dense bf16 FLOP/s for MFU, or None (CPU, MPS, or a card not in PEAK_BF16_TFLOPS)."""
    if device != "cuda":
        return None
    name = torch.cuda.get_device_name()
    return next((tflops * 1e12 for pattern, tflops in PEAK_BF16_TFLOPS if re.search(pattern, name)), None)


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


def compiled_or_eager(model: nn.Module, batch: int, device: str, autocast) -> nn.Module:
    """torch.compile(model), tried once on a dummy batch (forward and backward, so both graphs are built);
    if the compiler fails on this torch/GPU, say so and train eagerly rather than not at all."""
    compiled = torch.compile(model)
    try:
        idx = torch.zeros(batch, model.cfg.block_size, dtype=torch.long, device=device)
        with autocast:
            _, loss = compiled(idx, idx)
        loss.backward()
    except Exception as err:  # noqa: BLE001 - any compiler failure; the message is printed
        print(f"torch.compile failed ({type(err).__name__}: {str(err).splitlines()[0][:200]}); "
              "training without it (pass --no-compile to skip the attempt)")
        compiled = model
    model.zero_grad(set_to_none=True)
    return compiled


# ----------------------------------------------------------------------------- several processes (torchrun)


def init_distributed(device: str) -> tuple[int, int]:
    """(rank, world size). `torchrun --nproc_per_node=N` sets RANK, LOCAL_RANK and WORLD_SIZE; with N > 1
    this joins the process group (NCCL on CUDA, gloo on the CPU) and makes "cuda" mean this process's own
    GPU, so the rest of a script keeps saying "cuda". A plain `python script.py` gets (0, 1), nothing else."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1
    local_rank = int(os.environ["LOCAL_RANK"])
    if device == "mps":
        raise SystemExit("torchrun with --device mps: Apple's Metal backend has no process group; use cpu or cuda")
    if device == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise SystemExit(f"torchrun started {world} processes on this node but it has {torch.cuda.device_count()} "
                             f"GPU(s); pass --nproc_per_node={torch.cuda.device_count()} or fewer")
        torch.cuda.set_device(local_rank)
    dist.init_process_group("nccl" if device == "cuda" else "gloo")
    atexit.register(dist.destroy_process_group)
    return dist.get_rank(), world


def agree_across_ranks(loss: float, signum: int, device: str, world: int) -> tuple[float, int]:
    """The mean of the processes' losses and the largest pending signal number, so that every process takes the
    same decisions (stop on a non-finite loss, stop on Ctrl-C) at the same step; otherwise the others would wait
    for it forever. One process: (loss, signum) unchanged."""
    if world == 1:
        return loss, signum
    both = torch.tensor([loss, signum], dtype=torch.float64, device=device)
    dist.all_reduce(both[:1], op=dist.ReduceOp.SUM)
    dist.all_reduce(both[1:], op=dist.ReduceOp.MAX)
    return both[0].item() / dist.get_world_size(), int(both[1].item())


# ----------------------------------------------------------------------------- checkpoints


def training_state(model: nn.Module, optimizer, gen: torch.Generator, **fields) -> dict:
    """What a checkpoint holds to resume exactly: weights, optimiser moments, the data generator, torch's global
    generator, and the script's `fields` (step, config, ...)."""
    return dict(model=model.state_dict(), optimizer=optimizer.state_dict(), data_rng=gen.get_state(),
                torch_rng=torch.get_rng_state(), **fields)


def restore_training_state(ckpt: dict, model: nn.Module, optimizer, gen: torch.Generator) -> None:
    """The inverse of training_state: model, optimiser and both generators as they were when it was saved."""
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    gen.set_state(ckpt["data_rng"])
    torch.set_rng_state(ckpt["torch_rng"])


def save_checkpoint(path: Path, obj: dict) -> None:
    """torch.save to a temporary file beside `path`, fsync, then rename: a crash, a full disk or a second
    Ctrl-C during the write leaves the previous checkpoint whole."""
    path = Path(path)
    fd, tmp = _mkstemp_beside(path)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def load_checkpoint(path: Path, model_config=None) -> dict:
    """A checkpoint written by save_checkpoint, read on the CPU. A missing or unreadable file, or one from
    another model configuration (a dataclass or dict compared field by field), is a SystemExit that says so."""
    path = Path(path)
    if not path.exists():
        raise SystemExit(f"no checkpoint at {path}: train first (a run without --resume), or point --out-dir at a "
                         "run folder that holds one")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
        if not isinstance(ckpt, dict) or "model" not in ckpt:
            raise ValueError(f"a {type(ckpt).__name__} without a 'model' entry")
    except Exception as err:  # noqa: BLE001 - torch.load fails in many ways (EOFError, UnpicklingError, ...)
        cause = (str(err).splitlines() or [""])[0][:200]
        raise SystemExit(f"cannot read the checkpoint {path} ({path.stat().st_size:,} bytes; "
                         f"{type(err).__name__}: {cause}). It is damaged (a full disk, a copy cut short) or not a "
                         "checkpoint of this script. Restore it from a copy, or delete the run folder's files and "
                         "start afresh with --overwrite.") from None
    if model_config is not None:
        now = asdict(model_config) if is_dataclass(model_config) else dict(model_config)
        saved = ckpt.get("model_config", {})
        if saved != now:
            diff = ", ".join(f"{k} {saved.get(k, '(absent)')} (checkpoint) vs {now.get(k, '(absent)')} (now)"
                             for k in sorted(set(saved) | set(now)) if saved.get(k) != now.get(k))
            raise SystemExit(f"checkpoint {path} was trained with another model config: {diff}. Pass the flags "
                             "that set those fields as the run had them, or use another --out-dir.")
    return ckpt


# Flags that say how to run, not what is trained: a resumed run may change them freely.
RUN_CONTROL = ("resume", "overwrite", "allow_changed", "out_dir", "device", "compile", "steps_this_run",
               "eval_interval", "checkpoint_interval")


def check_same_settings(saved: dict, now: dict, ignore=(), allow: bool = False, source: str = "checkpoint") -> dict:
    """A resumed run must be the run that was started. Returns {setting: (checkpoint's, now)} for the settings
    (argparse dests) that differ, apart from RUN_CONTROL and `ignore`; a difference is a SystemExit listing
    them all, unless `allow` (--allow-changed) says they are intended. A flag that exists on one side only (added
    or removed since) counts only if it was set: unset (None, False or 0), it did not change the run."""
    unset = (None, False, "(absent)")
    changed = {k: (saved.get(k, "(absent)"), now.get(k, "(absent)")) for k in sorted(set(saved) | set(now))
               if k not in (*RUN_CONTROL, *ignore) and saved.get(k, "(absent)") != now.get(k, "(absent)")
               and not (k in set(saved) ^ set(now) and saved.get(k, "(absent)") in unset
                        and now.get(k, "(absent)") in unset)}
    listed = "; ".join(f"--{k.replace('_', '-')} {a} ({source}) vs {b} (now)" for k, (a, b) in changed.items())
    if changed and not allow:
        raise SystemExit(f"--resume: this run's settings differ from the {source}'s: {listed}. Pass the "
                         f"{source}'s values to continue the same run, or add --allow-changed if the change is "
                         "intended (it is then printed and kept in config.json).")
    if changed:
        print(f"resuming with changed settings (--allow-changed): {listed}")
    return changed


# ----------------------------------------------------------------------------- run folders


def cut_metrics(path: Path, step: int) -> None:
    """Keep the records of a metrics file (JSON lines) up to and including `step`, the checkpoint's, so that a
    resumed run logs every step once. A line cut short by a killed process is dropped too. Atomic."""
    if not Path(path).exists():
        return
    kept = []
    for line in Path(path).read_text().splitlines():
        try:
            if json.loads(line).get("step", 0) <= step:
                kept.append(line + "\n")
        except json.JSONDecodeError:
            pass
    write_bytes_atomic(path, "".join(kept).encode())


PROTECTED = ("ckpt.pt", "final.json", "metrics.jsonl", "eval.json", "results.json")  # what finished work leaves


class RunFolder:
    """A run's output folder, held for the life of the run:

        with RunFolder(out_dir, resume=args.resume, overwrite=args.overwrite) as run:

    - an exclusive lock (fcntl.flock on <out_dir>/run.lock, freed by the kernel even if the process is
      killed), so a second process cannot write into a folder that a run is using;
    - a fresh run (resume=False) refuses a folder that holds any of `protected` (file names or glob patterns
      such as "*/final.json"), naming --resume and --overwrite; with overwrite=True those files are deleted
      first, so nothing stale survives;
    - cut_metrics(step) on resume drops metrics.jsonl lines written after the checkpoint (and a line cut
      short by a crash), so every step appears once; log(record) appends one line and flushes it.
    The folder is created only here: call it once the inputs are known to be good. On a refusal nothing in
    the folder is changed."""

    def __init__(self, path, resume: bool = False, overwrite: bool = False, protected=PROTECTED):
        self.path, self.resume, self.overwrite, self.protected = Path(path), resume, overwrite, protected
        self.metrics = self.path / "metrics.jsonl"
        self._lock = self._log = None

    def __enter__(self) -> "RunFolder":
        self._refuse_if_taken()  # before creating anything, so that a refusal leaves the folder as it was
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock = open(self.path / "run.lock", "a+")  # "a+": opening changes nothing in the file
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.seek(0)
            holder = self._lock.read().strip() or "another process"
            self.__exit__()
            raise SystemExit(f"{self.path} is in use by {holder}; wait for that run to finish (or stop it), "
                             "or choose another --out-dir") from None
        for f in self._refuse_if_taken():  # again, now that no other run can start here: --overwrite
            (self.path / f).unlink()
        self._lock.truncate(0)
        self._lock.write(f"pid {os.getpid()} ({' '.join([Path(sys.argv[0]).name, *sys.argv[1:]])[:300]})\n")
        self._lock.flush()
        return self

    def _refuse_if_taken(self) -> list:
        """The protected files a fresh run would replace: a SystemExit without --overwrite, else their names."""
        found = [] if self.resume else sorted(str(f.relative_to(self.path)) for pattern in self.protected
                                              for f in self.path.glob(pattern))
        if found and not self.overwrite:
            self.__exit__()
            raise SystemExit(f"{self.path} already holds {', '.join(found)} from an earlier run. Add --resume to "
                             "continue it, --overwrite to delete those files and start afresh, or choose another "
                             "--out-dir.")
        return found

    def cut_metrics(self, step: int) -> None:
        cut_metrics(self.metrics, step)

    def log(self, record: dict) -> None:
        if self._log is None:
            self._log = open(self.metrics, "a")
        self._log.write(json.dumps(record) + "\n")
        self._log.flush()

    def __exit__(self, *exc) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._lock is not None:
            self._lock.close()  # closing the file frees the lock; the file stays, so no two runs race over it
            self._lock = None


# ----------------------------------------------------------------------------- interrupts


class StopOnSignal:
    """with StopOnSignal() as stop: the first SIGINT (Ctrl-C) or SIGTERM (kill, a scheduler's time limit,
    torchrun passing one on) only sets stop.signum, so the loop can finish its step, write a checkpoint and
    call stop.exit(message): one line, exit code 128 + signal (130, 143). A second signal stops at once;
    the atomic checkpoint write then leaves the previous checkpoint whole. Outside the main thread, where
    Python cannot catch signals, this does nothing."""

    def __init__(self):
        self.signum, self._old = 0, {}

    def __enter__(self) -> "StopOnSignal":
        if threading.current_thread() is threading.main_thread():
            self._old = {s: signal.signal(s, self._handler) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def _handler(self, signum: int, frame) -> None:
        if self.signum:
            print(f"{signal.Signals(signum).name} again: stopping at once, without a new checkpoint", file=sys.stderr)
            raise SystemExit(128 + signum)
        self.signum = signum

    def exit(self, message: str, signum: int = 0) -> NoReturn:
        """Print `message` and exit with 128 + the signal (`signum`, the one agreed across processes, or the one
        this process received). Under torchrun every process first waits for the others (process 0 writes the
        checkpoint): torchrun stops the whole group as soon as one process exits."""
        signum = signum or self.signum
        several = dist.is_available() and dist.is_initialized()
        if several:
            dist.barrier()
        if not several or dist.get_rank() == 0:  # one line, not one per process
            print(f"{signal.Signals(signum).name}: {message}", file=sys.stderr, flush=True)
        raise SystemExit(128 + signum)

    def __exit__(self, *exc) -> None:
        for s, handler in self._old.items():
            signal.signal(s, handler)


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
    """HEAD's hash, with "-dirty" if tracked files differ from it (the numbers then come from uncommitted code)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
    try:
        return (git("rev-parse", "HEAD") or "unknown") + ("-dirty" if git("status", "--porcelain", "-uno") else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def run_info(device: str) -> dict:
    """What a reader needs to trust a number: versions, hardware, threads, commit and the machine's load."""
    return dict(torch=torch.__version__, python=platform.python_version(), device=device,
                gpu=torch.cuda.get_device_name() if device == "cuda" else None, cpu=cpu_name(),
                cpu_count=os.cpu_count(), threads=torch.get_num_threads(), commit=git_commit(),
                load_average=list(os.getloadavg()) if hasattr(os, "getloadavg") else None)


def read_jsonl(path: Path) -> list:
    if not Path(path).exists():
        return []
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
