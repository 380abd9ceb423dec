"""Fault injection, second ring (issue 23): content_recall.py, ablation_attention.py and results/lm/compare.py.

Flags that were silently accepted (nan, an empty or repeated list, an early stop that can never or always fire, a
clip that zeroes every gradient); a resume from a metrics file cut mid-line; another script's run folder; a
signal between two runs and during the last one's evaluation; damaged files of finished runs, checked before
anything is trained; compare.py given a partial, damaged or repeated run. Tiny models, a few seconds in all."""
import io
import json
import os
import signal
from contextlib import redirect_stderr
from pathlib import Path

import pytest

import ablation_attention as A
import content_recall as R
from plumbing import run_command_line

REPO = Path(__file__).resolve().parents[1]
CR = ["--widths", "16", "--lengths", "32", "--kv-pairs", "4", "--vocab", "64", "--steps", "3", "--batch", "4",
      "--lrs", "1e-3", "--n-test", "8", "--n-val", "8", "--seeds", "0", "--workers", "1", "--device", "cpu",
      "--no-figure", "--head-dim", "8", "--lr-width", "16", "--lr-length", "32", "--mixers", "ema"]
ABL = ["--n-layer", "2", "--d-model", "32", "--n-head", "2", "--n-pred-head", "4", "--block-size", "32",
       "--micro-batch", "4", "--batch-tokens", "128", "--eval-tokens", "256", "--device", "cpu", "--max-steps", "2",
       "--seeds", "0", "--predictors", "linear"]


def say(main, argv) -> tuple[int, str]:
    """What the command line shows: the exit status and stderr of run_command_line, which has no traceback."""
    err = io.StringIO()
    with redirect_stderr(err):
        status = run_command_line(main, argv)
    assert "Traceback" not in err.getvalue()
    return status, err.getvalue().strip().split("\n")[-1]  # the last line: progress bars come before it


# ----------------------------------------------------------------------------- content_recall.py


@pytest.mark.parametrize("argv,words", [
    (["--lrs", "nan"], "--lrs nan: must be a number above 0"),
    (["--lrs", "1e-3,inf"], "--lrs inf: must be a number above 0 (in 0.001,inf)"),
    (["--mixers", ","], "--mixers is empty"),
    (["--mixers", "ema,ema"], "--mixers ema,ema: ema given twice"),
    (["--seeds", "0,1,0"], "--seeds 0,1,0: 0 given twice"),
    (["--widths", "16,16"], "--widths 16,16: 16 given twice"),
    (["--early-stop", "5"], "--early-stop 5.0: must be between 0 and 1"),
    (["--early-stop", "-1"], "--early-stop -1.0: must be between 0 and 1"),
    (["--grad-clip", "0"], "--grad-clip 0.0: must be a number above 0"),
    (["--min-lr-ratio", "2"], "--min-lr-ratio 2.0: must be between 0 and 1"),
    (["--weight-decay", "-1"], "--weight-decay -1.0: must be 0 or more"),
    (["--workers", "0"], "--workers 0: must be a number above 0"),
])
def test_content_recall_refuses_flags_it_used_to_accept(capsys, argv, words):
    with pytest.raises(SystemExit) as err:
        R.get_args(CR + argv)
    assert err.value.code == 2 and words in capsys.readouterr().err


def test_content_recall_resumes_from_a_metrics_file_cut_mid_line(tmp_path, capsys):
    argv = CR + ["--seeds", "0,1", "--out-dir", str(tmp_path)]
    straight = R.main(argv)
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text(metrics.read_text()[:-40])  # killed while writing seed 1's line
    (tmp_path / "results.json").unlink()
    resumed = R.main(argv + ["--resume"])
    assert "skipped 1 line(s) that are not JSON" in capsys.readouterr().err
    assert [json.loads(x)["seed"] for x in metrics.read_text().splitlines()] == [0, 1], "every line whole, once"
    assert [(r["seed"], r["acc"], r["loss"]) for r in resumed["runs"]] == \
        [(r["seed"], r["acc"], r["loss"]) for r in straight["runs"]]


def test_content_recall_non_finite_loss_is_one_line(tmp_path):
    status, msg = say(R.main, CR + ["--lrs", "1e12", "--steps", "30", "--out-dir", str(tmp_path)])
    assert status == 1 and msg.startswith("non-finite loss at step") and "lower --lrs" in msg


# ----------------------------------------------------------------------------- ablation_attention.py


def test_ablation_refuses_another_script_s_run_folder_before_it_trains(tmp_path, monkeypatch):
    (tmp_path / "run.lock").write_text("pid 1 ema_lm.py: ema_lm.py --out-dir x\n")  # what ema_lm.py leaves
    (tmp_path / "final.json").write_text("{}")
    monkeypatch.setattr(A, "train_run", lambda *a, **k: pytest.fail("trained in another script's folder"))
    for extra in ([], ["--overwrite"], ["--resume"]):
        status, msg = say(A.main, ABL + ["--out-dir", str(tmp_path), *extra])
        assert status == 1 and "is a run folder of ema_lm.py" in msg
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final.json", "run.lock"]


@pytest.mark.parametrize("argv,words", [(["--seeds", "0,0"], "--seeds 0,0: 0 given twice"),
                                        (["--predictors", "linear,linear"], "linear given twice"),
                                        (["--seeds", ""], "--seeds is empty"), (["--lr", "inf"], "--lr inf")])
def test_ablation_refuses_repeated_or_empty_lists(capsys, argv, words):
    with pytest.raises(SystemExit) as err:
        A.get_args(ABL + argv)
    assert err.value.code == 2 and words in capsys.readouterr().err


def test_ablation_signal_during_a_run_s_final_evaluation_stops_before_the_next_run(tmp_path, monkeypatch):
    real, calls = A.evaluate, {"n": 0}

    def evaluate(*a, **k):  # the final evaluation of the first run (no evaluation inside: eval_interval 2)
        calls["n"] += 1
        if calls["n"] == 1:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(*a, **k)
    monkeypatch.setattr(A, "evaluate", evaluate)
    status, msg = say(A.main, ABL + ["--seeds", "0,1", "--out-dir", str(tmp_path)])
    assert status == 143 and msg.endswith("SIGTERM: stopped before linear seed 1; the 1 finished runs are kept; add "
                                          "--resume to go on")
    assert (tmp_path / "linear-s0" / "final.json").exists() and not (tmp_path / "linear-s1").exists()
    monkeypatch.undo()
    damaged = tmp_path / "linear-s0" / "final.json"
    good = damaged.read_text()
    damaged.write_text(good[:30])
    monkeypatch.setattr(A, "train_run", lambda *a, **k: pytest.fail("trained before the damaged file was found"))
    status, msg = say(A.main, ABL + ["--seeds", "0,1", "--out-dir", str(tmp_path), "--resume"])
    assert status == 1 and f"{damaged} is unreadable" in msg and "delete it to train linear seed 0 again" in msg
    monkeypatch.undo()
    damaged.write_text(good)
    out = A.main(ABL + ["--seeds", "0,1", "--out-dir", str(tmp_path), "--resume"])
    assert [r["seed"] for r in out["runs"]] == [0, 1]


# ----------------------------------------------------------------------------- results/lm/compare.py


def compare_tool():
    import importlib.util
    spec = importlib.util.spec_from_file_location("compare", REPO / "results" / "lm" / "compare.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def scores(step: int, **extra) -> dict:
    classes = {c: {"loss": 5.0, "count": 10} for c in ("all", "induction", "repeated", "novel")}
    return dict(step=step, classes=classes, mixer="ema", ffn="sparse", val_ppl=150.0, probe_first=9.0,
                probe_second=8.0, **extra)


@pytest.mark.parametrize("files,words", [
    ({"eval.json": scores(2, partial=True, max_steps=4)}, "partial run (step 2)"),
    ({"eval.json": scores(2), "config.json": {"config": {"max_steps": 4}}}, "partial run (step 2)"),  # older eval.json
    ({"final.json": '{"step": 4, "cla'}, "final.json is unreadable"),
    ({"final.json": "{}"}, "is not the score record"),
    ({"final.json": "[1]"}, "is not the score record"),
    ({"final.json": scores(4, partial=False, max_steps=4), "twice": True}, "given more than once"),
])
def test_compare_refuses_partial_damaged_and_repeated_runs(tmp_path, files, words):
    run = tmp_path / "run"
    run.mkdir()
    for name, content in files.items():
        if name != "twice":
            (run / name).write_text(content if isinstance(content, str) else json.dumps(content))
    status, msg = say(compare_tool().main, [str(run)] * (2 if "twice" in files else 1))
    assert status == 1 and words in msg


def test_compare_keeps_runs_of_other_settings_apart(tmp_path, capsys):
    """Runs of one mixer with another --conv-kernel, --depth-mixing or block are other rows, never one mean."""
    settings = [{}, {"conv_kernel": 3}, {"depth_mixing": "dwa"}, {"depth_mixing": "residual", "conv_kernel": 0},
                {"block": "gpt2"}]
    runs = []
    for i, config in enumerate(settings):
        run = tmp_path / f"run{i}"
        run.mkdir()
        (run / "final.json").write_text(json.dumps(scores(4, partial=False, max_steps=4)))
        (run / "config.json").write_text(json.dumps({"config": {"max_steps": 4, **config}}))
        runs.append(str(run))
    out = compare_tool().main(runs)
    assert out["runs"] == {"ema": 2, "ema, conv 3": 1, "ema, dwa": 1, "ema, gpt2 block": 1}


@pytest.mark.parametrize("module", ["ema_lm", "content_recall", "ablation_attention", "hebbian_roles",
                                    "bigru_baseline", "bench", "depth_probe"])
def test_help_shows_one_real_default_per_flag(module, capsys):
    import importlib
    import re
    m = importlib.import_module(module)
    with pytest.raises(SystemExit):
        (getattr(m, "get_args", None) or m.parse_args)(["--help"])
    options = re.split(r"\n  (?=-)", capsys.readouterr().out)[1:]
    assert options, f"{module}: no options in --help"
    for option in options:
        text = " ".join(option.split())
        assert text.count("(default") <= 1 and "default: None" not in text, f"{module}: {text}"
