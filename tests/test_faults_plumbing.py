"""Fault injection, second ring (issue 23): the shared machinery every script goes through, case by kind.

run_command_line (what `if __name__ == "__main__": command_line(main)` runs): which faults become one paragraph
and an exit status, and which keep their traceback (bugs); every script's last line goes through it. Flag lists
(empty, repeated, nan), run folders (a file, unwritable, another script's, other runs under --overwrite, a metrics
line cut short), checkpoints (what "good" means; stale temporary files) and checked JSON readers. All in this
process, no training: about a second in all."""
import ast
import errno
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import data.common as common
import plumbing as P

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = ["ema_lm.py", "ablation_attention.py", "content_recall.py", "hebbian_roles.py", "bigru_baseline.py",
           "bench.py", "depth_probe.py",
           "results/lm/compare.py", "results/lm/plot_onset.py", "data/ptb/prepare.py", "data/c4/prepare.py",
           "data/fineweb/prepare.py", "data/wikitext103/prepare.py"]


# ----------------------------------------------------------------------------- the command line


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_script_runs_its_main_through_command_line(script):
    last = ast.parse((REPO / script).read_text()).body[-1]
    assert isinstance(last, ast.If) and "__main__" in ast.unparse(last.test), f"{script}: no __main__ block last"
    call = last.body[-1].value
    assert ast.unparse(call.func) == "command_line" and ast.unparse(call.args[0]) == "main", \
        f"{script} ends with {ast.unparse(last.body[-1])}: call command_line(main) so that no fault gives a traceback"


def raises(err: BaseException):
    def main(argv):
        raise err
    return main


def ours(argv):  # a message raised on purpose by this repository's code
    raise ValueError("validation split has 10 tokens, fewer than one window of 17; lower --block-size")


def library_bug(argv):  # raised inside a library: a bug, whose traceback is wanted
    json.loads("{not json")


def pooled(argv):  # a worker's RuntimeError, raised again by multiprocessing in the main process
    lines = (REPO / "content_recall.py").read_text().splitlines()
    line = next(i for i, s in enumerate(lines, 1) if s.lstrip().startswith("raise"))
    err = RuntimeError("non-finite loss at step 3; lower --lrs")
    err.__cause__ = type("RemoteTraceback", (Exception,), {"__init__": lambda self, tb: setattr(self, "tb", tb)})(
        f'Traceback (most recent call last):\n  File "{REPO / "content_recall.py"}", line {line}, in train_run')
    raise err


@pytest.mark.parametrize("main,status,words", [
    (raises(SystemExit("refused: say what to do")), 1, "refused: say what to do"),
    (raises(SystemExit(2)), 2, ""),
    (raises(KeyboardInterrupt()), 130, "SIGINT: stopped; the files written so far are whole"),
    (raises(common.Interrupted(signal.SIGTERM)), 143, "SIGTERM: stopped"),
    (ours, 1, "validation split has 10 tokens"),
    (pooled, 1, "non-finite loss at step 3"),
    (raises(PermissionError(errno.EACCES, "Permission denied", "/x/run.lock")), 1,
     "PermissionError: Permission denied: /x/run.lock; make it writable"),
    (raises(IsADirectoryError(errno.EISDIR, "Is a directory", "/x/bench.json")), 1, "a folder stands where a file"),
    (raises(OSError(errno.ENOSPC, "No space left on device")), 1, "the disk is full"),
    (raises(RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory")), 1,
     "out of memory: [enforce fail"),
    (raises(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 TiB")), 1, "out of memory: CUDA"),
])
def test_command_line_turns_a_fault_into_one_paragraph_and_a_status(capsys, main, status, words):
    assert common.run_command_line(main, [], out_of_memory="lower --micro-batch") == status
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err and len(err.strip().splitlines()) <= 1, err
    if "out of memory" in words:
        assert "lower --micro-batch" in err


def test_command_line_keeps_the_traceback_of_a_bug():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(json.JSONDecodeError):
        common.run_command_line(library_bug)
    with pytest.raises(KeyError):
        common.run_command_line(raises(KeyError("oops")))
    assert signal.getsignal(signal.SIGTERM) == before


def test_sigterm_outside_a_loop_stops_with_143_and_runs_the_finally_blocks(capsys, tmp_path):
    def main(argv):
        with open(tmp_path / "held", "w"):
            try:
                os.kill(os.getpid(), signal.SIGTERM)
            finally:
                (tmp_path / "cleaned").touch()
    before = signal.getsignal(signal.SIGTERM)
    assert common.run_command_line(main) == 143 and (tmp_path / "cleaned").exists()
    assert signal.getsignal(signal.SIGTERM) == before, "the handler was not restored"


# ----------------------------------------------------------------------------- flags


@pytest.mark.parametrize("value,words", [([], "--seeds is empty"), ([0, 1, 0], "--seeds 0,1,0: 0 given twice"),
                                         ([0, float("nan")], "--seeds nan: must be 0 or more (in 0,nan)"),
                                         ([0, -1], "--seeds -1: must be 0 or more")])
def test_list_flags_are_non_empty_without_repeats_and_in_range(capsys, value, words):
    import argparse
    parser = argparse.ArgumentParser()
    with pytest.raises(SystemExit) as err:
        P.check_ranges(parser, argparse.Namespace(seeds=value), non_negative=("seeds",))
    assert err.value.code == 2 and words in capsys.readouterr().err


# ----------------------------------------------------------------------------- run folders


def fails(fn) -> str:
    with pytest.raises(SystemExit) as err:
        fn()
    return err.value.code


def test_a_run_folder_that_is_a_file_or_cannot_be_written_is_refused_before_anything(tmp_path):
    (tmp_path / "file").write_text("x")
    assert "is a file, not a folder" in fails(lambda: P.RunFolder(tmp_path / "file").__enter__())
    msg = fails(lambda: P.RunFolder("/sys/ema-lm-fault-test").__enter__())  # unwritable for every user, root too
    assert "cannot write into the run folder /sys/ema-lm-fault-test" in msg and "--out-dir" in msg
    (tmp_path / "run" / "run.lock").mkdir(parents=True)  # the lock cannot be opened: an OSError, like EACCES
    assert "cannot write into the run folder" in fails(lambda: P.RunFolder(tmp_path / "run", resume=True).__enter__())


def test_another_script_s_run_folder_is_refused_even_with_overwrite_or_resume(tmp_path):
    with P.RunFolder(tmp_path / "lm", owner="ema_lm.py"):
        (tmp_path / "lm" / "final.json").write_text("{}")
    before = sorted(p.name for p in (tmp_path / "lm").iterdir())
    for kw in ({}, {"overwrite": True}, {"resume": True}):
        msg = fails(lambda: P.RunFolder(tmp_path / "lm", owner="ablation_attention.py", **kw).__enter__())
        assert "is a run folder of ema_lm.py" in msg and "another --out-dir" in msg
    msg = fails(lambda: P.RunFolder(tmp_path / "lm" / "sub", owner="content_recall.py").__enter__())
    assert f"inside {tmp_path / 'lm'}" in msg and not (tmp_path / "lm" / "sub").exists()
    assert sorted(p.name for p in (tmp_path / "lm").iterdir()) == before


def test_overwrite_never_deletes_the_files_of_other_runs_below(tmp_path):
    with P.RunFolder(tmp_path / "runs" / "ptb-ema-s0", owner="ema_lm.py"):
        (tmp_path / "runs" / "ptb-ema-s0" / "final.json").write_text("{}")
    msg = fails(lambda: P.RunFolder(tmp_path / "runs", overwrite=True, protected=("*/final.json",),
                                    owner="ablation_attention.py").__enter__())
    assert "holds other runs' folders (ptb-ema-s0" in msg and (tmp_path / "runs" / "ptb-ema-s0" / "final.json").exists()


def test_a_script_without_resume_is_not_told_to_add_it(tmp_path):
    (tmp_path / "results.json").write_text("{}")
    msg = fails(lambda: P.RunFolder(tmp_path, protected=("results.json",), resume_flag=False).__enter__())
    assert "--resume" not in msg and "--overwrite" in msg


def test_resume_drops_a_metrics_line_cut_short_so_the_next_record_starts_on_its_own(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"run": 1}\n{"run": 2, "ac')
    with P.RunFolder(tmp_path, resume=True) as run:
        run.log({"run": 3})
    assert [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [{"run": 1}, {"run": 3}]


def test_read_jsonl_skips_a_cut_line_with_a_note(tmp_path, capsys):
    (tmp_path / "m.jsonl").write_text('{"a": 1}\n{"a": 2, "b')
    assert P.read_jsonl(tmp_path / "m.jsonl") == [{"a": 1}] and "skipped 1 line" in capsys.readouterr().err


@pytest.mark.parametrize("content,words", [(None, "not found; FIX"), ("{cut", "cut short, damaged or not JSON; FIX"),
                                           ("folder", "is a folder where a JSON file is expected; FIX")])
def test_read_json_names_the_file_the_fault_and_the_fix(tmp_path, content, words):
    path = tmp_path / "x.json"
    if content == "folder":
        path.mkdir()
    elif content:
        path.write_text(content)
    assert str(path) in fails(lambda: P.read_json(path, "FIX")) and words in fails(lambda: P.read_json(path, "FIX"))
    assert content is not None or P.read_json(path, "FIX", default={}) == {}


# ----------------------------------------------------------------------------- checkpoints


def test_a_checkpoint_is_saved_only_if_good_and_the_last_good_one_stays(tmp_path):
    good = {"step": 1, "model": {"w": torch.ones(3)}}
    P.save_checkpoint(tmp_path / "ckpt.pt", good)
    before = (tmp_path / "ckpt.pt").read_bytes()
    nan = {"step": 2, "model": {"w": torch.tensor([1, float("nan")])}}
    msg = fails(lambda: P.save_checkpoint(tmp_path / "ckpt.pt", nan))
    assert "not saving the checkpoint of step 2: the weights w hold NaN or inf" in msg and "keeps the last good" in msg
    msg = fails(lambda: P.save_checkpoint(tmp_path / "ckpt.pt", {"step": 3, "model": {"w": torch.full((3,), 3.4e7)}},
                                          probe=lambda: float("inf")))  # finite weights that already blew up
    assert "step 3: the weights give a loss of inf on a fixed batch" in msg and "lower --lr" in msg
    assert (tmp_path / "ckpt.pt").read_bytes() == before and not list(tmp_path.glob(".*.tmp"))


def test_a_stale_temporary_file_is_removed_and_a_live_one_kept(tmp_path, capsys):
    stale, live = tmp_path / ".ckpt.pt.dead.tmp", tmp_path / ".ckpt.pt.live.tmp"
    stale.write_bytes(b"x" * 1000)  # what a SIGKILL during torch.save leaves
    fd, name = common._mkstemp_beside(tmp_path / "ckpt.pt")  # a writer at work: its file is locked
    os.rename(name, live)
    for p in (stale, live):
        os.utime(p, (0, 0))  # old enough to be judged
    P.save_checkpoint(tmp_path / "ckpt.pt", {"model": {}})
    assert not stale.exists() and live.exists() and "removed" in capsys.readouterr().err
    os.close(fd)
    with P.RunFolder(tmp_path, resume=True):  # a run folder sweeps too, here and one level down
        pass
    assert not live.exists()


def test_a_write_killed_by_sigkill_leaves_a_temporary_file_that_the_next_write_removes(tmp_path):
    code = (f"import sys, os, signal; sys.path.insert(0, {str(REPO)!r}); from data.common import _mkstemp_beside; "
            f"from pathlib import Path; fd, tmp = _mkstemp_beside(Path({str(tmp_path / 'ckpt.pt')!r})); "
            "os.write(fd, b'x' * 100000); os.kill(os.getpid(), signal.SIGKILL)")
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == -signal.SIGKILL
    [left] = tmp_path.glob(".ckpt.pt.*.tmp")
    os.utime(left, (0, 0))
    common.write_json_atomic(tmp_path / "ckpt.pt", {})
    assert not left.exists() and (tmp_path / "ckpt.pt").exists()
