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
                                                                    args=vars(args)), probe=loss_on_fixed_batch)
            if stop.signum:                      # Ctrl-C or SIGTERM during the step; atomic, only if good
                stop.exit(f"stopped after step {step}; add --resume to go on")  # exit code 130 / 143
        stop.at_once(lambda: "stopped during the final scoring; add --resume to score it")
    ...
    if __name__ == "__main__":
        command_line(main, out_of_memory="lower --micro-batch")  # never a traceback for a fault that is no bug

Every refusal is a SystemExit whose text names the file or flag, what was found and what to do: the
script stops with that one paragraph and no traceback, and a test can catch it. command_line (data/common.py,
re-exported here) gives everything else that is not a bug one paragraph and an exit status (EXIT_CODES): 1
refused or failed, 2 a bad command line, 130 / 143 stopped by SIGINT / SIGTERM; an out-of-memory error, an
OSError with a file name and a ValueError or RuntimeError raised on purpose by this repository's code.
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
import tempfile
import threading
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import NoReturn

import torch
import torch.distributed as dist
import torch.nn as nn

from data.common import (_mkstemp_beside, command_line, read_json, remove_stale_temporaries,  # noqa: F401
                         run_command_line, write_bytes_atomic, write_json_atomic)  # (re-exported)

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
                 non_negative: tuple = (), fraction: tuple = (), nonempty: tuple = ()) -> None:
    """parser.error (exit 2, naming the flag, the value and the fix) for a value out of its range: positive
    (> 0), non_negative (>= 0) or fraction (0..1), all finite (nan and inf are refused). Names are the argparse
    dests ("max_steps"). A list (a comma-separated flag, parsed) must be non-empty, hold no value twice (a
    repeated seed or mixer would be counted twice in a mean) and have every value in range; `nonempty` names
    lists of other things (names) that get only the first two checks."""
    def flag(name: str) -> str:
        return f"--{name.replace('_', '-')}"
    for name in (*positive, *non_negative, *fraction, *nonempty):
        value = getattr(args, name)
        if isinstance(value, (list, tuple)):
            if not value:
                parser.error(f"{flag(name)} is empty: give at least one value")
            twice = sorted({v for v in value if value.count(v) > 1}, key=str)
            if twice:
                parser.error(f"{flag(name)} {','.join(map(str, value))}: {','.join(map(str, twice))} given twice; "
                             "list each value once")
    for names, ok, need in ((positive, lambda v: v > 0, "a number above 0"),
                            (non_negative, lambda v: v >= 0, "0 or more"),
                            (fraction, lambda v: 0 <= v <= 1, "between 0 and 1")):
        for name in names:
            value = getattr(args, name)
            for v in value if isinstance(value, (list, tuple)) else [value]:
                if not (isinstance(v, (int, float)) and math.isfinite(v) and ok(v)):
                    parser.error(f"{flag(name)} {v}: must be {need}" + (
                        f" (in {','.join(map(str, value))})" if isinstance(value, (list, tuple)) else ""))


def help_formatter(presets: dict | None = None) -> type:
    """An argparse formatter_class that shows every flag's default once, the real one: its value; for a flag left
    unset (None) that the script's presets fill, each preset's value; for another unset flag, nothing beyond what
    its help already says (it says what happens then). A help that names its default itself is left alone."""
    class Formatter(argparse.ArgumentDefaultsHelpFormatter):
        def _get_help_string(self, action: argparse.Action) -> str:
            text = action.help or ""
            switch = action.nargs == 0 and not isinstance(action, argparse.BooleanOptionalAction)  # --resume: off
            if "default" in text or not action.option_strings or switch or action.default is argparse.SUPPRESS:
                return text
            if action.default is None:
                values = [f"{name}: {preset[action.dest]}" for name, preset in (presets or {}).items()
                          if action.dest in preset]
                return text + (f" (default: the preset's; {', '.join(values)})" if values else "")
            return text + " (default: %(default)s)"
    return Formatter


def check_fits(need_bytes: float, device: str, what: str, fix: str) -> None:
    """A SystemExit, before any work, when a configuration plainly cannot fit: `need_bytes`, a lower bound of
    what it allocates at once (`what`, in words), exceeds the device's whole memory (the GPU's, else the
    machine's RAM). A configuration that fits only just is left to the allocator (run_command_line explains
    an out-of-memory error)."""
    if device == "cuda":
        total = torch.cuda.mem_get_info()[1]
    elif hasattr(os, "sysconf") and "SC_PHYS_PAGES" in os.sysconf_names:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    else:
        return
    if need_bytes > total:
        raise SystemExit(f"{what} needs at least {need_bytes / 2**30:,.1f} GiB at once, more than the "
                         f"{total / 2**30:,.1f} GiB of this {device}'s memory; {fix}")


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


def compile_static(fn):
    """torch.compile with static shapes, after clearing what this process compiled before: a new shape (another
    length, the evaluation's batch) compiles anew instead of turning T symbolic (torch 2.11 on CUDA once failed
    there), and one model's graphs never count against another's recompile limit. For a module or a function."""
    torch._dynamo.reset()
    return torch.compile(fn, dynamic=False)


def compiled_or_eager(model: nn.Module, batch: int, device: str, autocast) -> nn.Module:
    """compile_static(model), tried once on a dummy batch (forward and backward, so both graphs are built);
    if the compiler fails on this torch/GPU, say so and train eagerly rather than not at all."""
    compiled = compile_static(model)
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


def checkpoint_fault(obj: dict, probe=None) -> str:
    """Why `obj` is not a good checkpoint, or "" if it is one. Good means: every floating-point tensor of its
    weights (obj["model"]) finite and, if `probe` is given (a function returning the loss of the weights as
    they are now on a fixed batch, which draws no random numbers), that loss finite too. The second test
    catches weights that blew up without overflowing yet: one step of --lr 1e9 leaves max |w| = 3.4e7, finite,
    and the next forward pass gives NaN."""
    for name, t in obj.get("model", {}).items():
        if torch.is_tensor(t) and t.is_floating_point() and not torch.isfinite(t).all():
            return f"the weights {name} hold NaN or inf"
    loss = probe() if probe is not None else 0.0
    return "" if math.isfinite(loss) else f"the weights give a loss of {loss} on a fixed batch"


def save_checkpoint(path: Path, obj: dict, probe=None, fix: str = "lower --lr") -> None:
    """torch.save to a temporary file beside `path`, fsync, then rename: a crash, a full disk or a second
    Ctrl-C during the write leaves the previous checkpoint whole (and the next write removes the stale
    temporary file). Only a good checkpoint (checkpoint_fault) is written: a run whose weights blew up
    stops with a SystemExit that says so, and `path` keeps the last good one."""
    path = Path(path)
    fault = checkpoint_fault(obj, probe)
    if fault:
        raise SystemExit(f"not saving the checkpoint of step {obj.get('step', '?')}: {fault}, so the run has "
                         f"diverged. {path} keeps the last good checkpoint{'' if path.exists() else ' (none yet)'}; "
                         f"{fix}.")
    fd, tmp = _mkstemp_beside(path)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
            os.replace(tmp, path)  # before closing: the lock marks the file as in use till then
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


def check_same_settings(saved: dict, now: dict, ignore=(), allow: bool = False, source: str = "checkpoint",
                        has_allow_flag: bool = True) -> dict:
    """A resumed run must be the run that was started. Returns {setting: (checkpoint's, now)} for the settings
    (argparse dests) that differ, apart from RUN_CONTROL and `ignore`; a difference is a SystemExit listing
    them all, unless `allow` (--allow-changed) says they are intended. A flag that exists on one side only (added
    or removed since) counts only if it was set: unset (None, False or 0), it did not change the run. A script
    without --allow-changed passes has_allow_flag=False, and the message does not offer it."""
    saved, now = (json.loads(json.dumps(d, default=str)) for d in (saved, now))  # a tuple now, a list once saved
    unset = (None, False, "(absent)")
    changed = {k: (saved.get(k, "(absent)"), now.get(k, "(absent)")) for k in sorted(set(saved) | set(now))
               if k not in (*RUN_CONTROL, *ignore) and saved.get(k, "(absent)") != now.get(k, "(absent)")
               and not (k in set(saved) ^ set(now) and saved.get(k, "(absent)") in unset
                        and now.get(k, "(absent)") in unset)}
    listed = "; ".join(f"--{k.replace('_', '-')} {a} ({source}) vs {b} (now)" for k, (a, b) in changed.items())
    if changed and not allow:
        raise SystemExit(f"--resume: this run's settings differ from the {source}'s: {listed}. Pass the "
                         f"{source}'s values to continue the same run, or "
                         + ("add --allow-changed if the change is intended (it is then printed and kept in "
                            "config.json)." if has_allow_flag else "choose another --out-dir for the new settings."))
    if changed:
        print(f"resuming with changed settings (--allow-changed): {listed}")
    return changed


def finished_parts(parts: dict, args, ignore=()) -> dict:
    """--resume where a script keeps whole units (a seed; a variant and a seed), each in its own JSON file
    {"args": portable(vars(args)), "result": ...} once finished: {key: result} of the units in `parts`
    ({key: path}) that an earlier run of these settings finished. Checked before any work: a damaged file, or one
    written with other settings (apart from `ignore`), is a SystemExit that names it."""
    kept = {}
    for key, path in parts.items():
        if Path(path).exists():
            saved = read_json(path, "delete it to run that part again")
            check_same_settings(saved["args"], portable(vars(args)), ignore=ignore, source=Path(path).name,
                                has_allow_flag=False)
            kept[key] = saved["result"]
    return kept


# ----------------------------------------------------------------------------- run folders


def keep_records(path: Path, keep) -> None:
    """Rewrite a JSON-lines file (atomically) with only the records for which keep(record) is true; a line
    cut short by a killed process is dropped too, so the next record starts on a line of its own."""
    if not Path(path).exists():
        return
    kept = []
    for line in Path(path).read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if keep(record):
            kept.append(line + "\n")
    write_bytes_atomic(path, "".join(kept).encode())


def cut_metrics(path: Path, step: float) -> None:
    """Keep the records of a metrics file (JSON lines) up to and including `step`, the checkpoint's, so that a
    resumed run logs every step once (a record without a step is kept), and drop a line cut short."""
    keep_records(path, lambda r: not isinstance(r, dict) or r.get("step", 0) <= step)


PROTECTED = ("ckpt.pt", "final.json", "metrics.jsonl", "eval.json", "results.json")  # what finished work leaves
LOCK = "run.lock"


def folder_owner(folder: Path) -> tuple[Path, str] | None:
    """(run folder, script) of the run folder that holds `folder` (itself or a folder above it), read from the
    run.lock that RunFolder leaves ("pid 123 ema_lm.py: <command>"), or None."""
    for f in (folder, *folder.parents):
        try:
            first = (f / LOCK).read_text().partition("\n")[0]
        except OSError:  # none here (or unreadable): look further up
            continue
        found = re.match(r"pid \d+ (\S+):", first)
        return (f, found.group(1)) if found else None
    return None


class RunFolder:
    """A run's output folder, held for the life of the run:

        with RunFolder(out_dir, resume=args.resume, overwrite=args.overwrite) as run:

    - an exclusive lock (fcntl.flock on <out_dir>/run.lock, freed by the kernel even if the process is
      killed), so a second process cannot write into a folder that a run is using; the lock file names the
      script (`owner`, by default the file that calls RunFolder) and its command, and stays after the run;
    - a folder that belongs to another script's run (its run.lock, or one in a folder above it) is refused,
      with --resume and --overwrite too: an ablation's files written into an ema_lm.py run would mix two runs;
    - a fresh run (resume=False) refuses a folder that holds any of `protected` (file names or glob patterns
      such as "*/final.json"), naming --resume and --overwrite (`resume_flag=False`: a script without --resume,
      and the message does not offer it); with overwrite=True those files are deleted first, so nothing stale
      survives, unless one lies in another run's folder (a sub-folder with its own run.lock): then it refuses;
    - a folder that is not a folder, or cannot be written, is refused before anything is done;
    - temporary files of writes that were killed (SIGKILL during a checkpoint write) are removed, here and
      one level down; on resume a metrics.jsonl line cut short by a crash is dropped;
    - cut_metrics(step) on resume drops metrics.jsonl lines written after the checkpoint, so every step
      appears once; log(record) appends one line and flushes it.
    The folder is created only here: call it once the inputs are known to be good. On a refusal nothing in
    the folder is changed."""

    def __init__(self, path, resume: bool = False, overwrite: bool = False, protected=PROTECTED,
                 resume_flag: bool = True, owner: str | None = None, metrics: str = "metrics.jsonl"):
        self.path, self.resume, self.overwrite, self.protected = Path(path), resume, overwrite, protected
        self.resume_flag = resume_flag
        self.owner = owner or Path(sys._getframe(1).f_code.co_filename).name  # the script that holds the folder
        self.metrics = self.path / metrics
        self._lock = self._log = None

    def __enter__(self) -> "RunFolder":
        if self.path.exists() and not self.path.is_dir():
            raise SystemExit(f"--out-dir {self.path} is a file, not a folder; choose another --out-dir")
        self._refuse_other_owner()
        self._refuse_if_taken()  # before creating anything, so that a refusal leaves the folder as it was
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self._lock = open(self.path / LOCK, "a+")  # "a+": opening changes nothing in the file
            tempfile.TemporaryFile(dir=self.path).close()  # can files be created here (mode, read-only mount)?
        except OSError as err:
            self.__exit__()
            raise SystemExit(f"cannot write into the run folder {self.path} ({err.strerror}: {err.filename}); make "
                             "it writable (chmod u+w) or choose another --out-dir") from None
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.seek(0)
            holder = self._lock.read().strip() or "another process"
            self.__exit__()
            raise SystemExit(f"{self.path} is in use by {holder}; wait for that run to finish (or stop it), "
                             "or choose another --out-dir") from None
        self._refuse_other_owner()  # again, now that no other run can start here
        for f in self._refuse_if_taken():  # --overwrite
            (self.path / f).unlink()
        for folder in (self.path, *(d for d in self.path.iterdir() if d.is_dir())):
            remove_stale_temporaries(folder)
        if self.resume:
            cut_metrics(self.metrics, math.inf)  # only a line cut short goes
        self._lock.truncate(0)
        self._lock.write(f"pid {os.getpid()} {self.owner}: {' '.join([Path(sys.argv[0]).name, *sys.argv[1:]])[:300]}\n")
        self._lock.flush()
        return self

    def _refuse_other_owner(self) -> None:
        found = folder_owner(self.path)
        if found and found[1] != self.owner:
            self.__exit__()
            inside = "" if found[0] == self.path else f", inside {found[0]},"
            raise SystemExit(f"{self.path}{inside} is a run folder of {found[1]} ({found[0] / LOCK}); {self.owner} "
                             "does not write into another script's run. Choose another --out-dir.")

    def _refuse_if_taken(self) -> list:
        """The protected files a fresh run would replace: a SystemExit without --overwrite, else their names."""
        found = [] if self.resume else sorted(str(f.relative_to(self.path)) for pattern in self.protected
                                              for f in self.path.glob(pattern))
        if found and not self.overwrite:
            self.__exit__()
            raise SystemExit(f"{self.path} already holds {', '.join(found)} from an earlier run. "
                             + ("Add --resume to continue it, " if self.resume_flag else "")
                             + "--overwrite to delete those files and start afresh, or choose another --out-dir.")
        others = sorted({str(Path(f).parent) for f in found if (self.path / f).parent != self.path
                         and ((self.path / f).parent / LOCK).exists()})
        if others:
            self.__exit__()
            raise SystemExit(f"{self.path} holds other runs' folders ({', '.join(others)}: each has its own {LOCK}); "
                             "--overwrite would delete their files. Choose another --out-dir.")
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
    Python cannot catch signals, this does nothing.

    Where a loop does not check stop.signum (a script that keeps whole seeds, not steps; a run's final
    scoring), at_once(message) makes the next signal stop at once, printing message() (what is kept, how to go
    on); a signal that came before the call stops there. StopOnSignal(at_once=message) does so from the start."""

    def __init__(self, at_once=None):
        self.signum, self._old, self._message = 0, {}, at_once

    def __enter__(self) -> "StopOnSignal":
        if threading.current_thread() is threading.main_thread():
            self._old = {s: signal.signal(s, self._handler) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def _handler(self, signum: int, frame) -> None:
        if self._message is not None:
            self.signum = signum
            self._stop_now()
        if self.signum:
            print(f"{signal.Signals(signum).name} again: stopping at once, without a new checkpoint", file=sys.stderr)
            raise SystemExit(128 + signum)
        self.signum = signum

    def at_once(self, message) -> None:
        """From now on a signal stops at once with message(); one that already came stops now."""
        self._message = message
        if self.signum:
            self._stop_now()

    def _stop_now(self) -> NoReturn:  # no barrier: this process alone may be left (process 0's final scoring)
        print(f"{signal.Signals(self.signum).name}: {self._message()}", file=sys.stderr, flush=True)
        raise SystemExit(128 + self.signum)

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


def portable(record):
    """The record with every absolute path under the repository written relative to its root, so that a run
    record reads the same on every machine. Dicts, lists and tuples are walked; other values, and paths outside
    the repository, are kept as they are."""
    if isinstance(record, dict):
        return {k: portable(v) for k, v in record.items()}
    if isinstance(record, (list, tuple)):
        return type(record)(portable(v) for v in record)
    if isinstance(record, (str, Path)) and os.path.isabs(record):
        try:
            return str(Path(os.path.abspath(record)).relative_to(ROOT))
        except ValueError:
            return str(record)
    return record


def run_info(device: str) -> dict:
    """What a reader needs to trust a number: versions, hardware, threads, commit and the machine's load."""
    return dict(torch=torch.__version__, python=platform.python_version(), device=device,
                gpu=torch.cuda.get_device_name() if device == "cuda" else None, cpu=cpu_name(),
                cpu_count=os.cpu_count(), threads=torch.get_num_threads(), commit=git_commit(),
                load_average=list(os.getloadavg()) if hasattr(os, "getloadavg") else None)


def read_jsonl(path: Path) -> list:
    """The records of a JSON-lines file ([] if there is none). A line that is not JSON, such as the last one of
    a process killed mid-write, is skipped with a note (RunFolder drops it from the file on resume)."""
    if not Path(path).exists():
        return []
    records, bad = [], 0
    for line in filter(str.strip, Path(path).read_text().splitlines()):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            bad += 1
    if bad:
        print(f"{path}: skipped {bad} line(s) that are not JSON (a write cut short by a crash)", file=sys.stderr)
    return records
