"""Fault injection, second ring (issue 23): the two role scripts, bigru_baseline.py and hebbian_roles.py.

Ctrl-C on the real command line (a real SIGINT to a real process) stops at once with one line, exit 130, keeps
the seeds that had finished and names --resume, which both scripts now have: it keeps those seeds and trains
the others, to the same numbers as a run that was never stopped. Their flags refuse nan, inf and repeated seeds;
hebbian_roles.py checks --bigru-results before it trains. Tiny data (800 training sentences) and models."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import bigru_baseline as bg
import hebbian_roles as hr
from data.roles.prepare import prepare

REPO = Path(__file__).resolve().parents[1]
BG = ["--seeds", "0,1", "--hidden-size", "16", "--embed-dim", "8", "--max-epochs", "3", "--patience", "3", "--quiet",
      "--device", "cpu"]
HB = ["--seeds", "0,1", "--quiet", "--ablations", "none", "--hidden", "8"]


@pytest.fixture(scope="module")
def roles(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("roles")
    prepare(out, seed=0, n_train=500, n_dev=60, n_test=60)
    return out


def interrupt(cmd: list, ready) -> subprocess.CompletedProcess:
    """Run a script, send it SIGINT once ready() holds, return its exit status and output."""
    proc = subprocess.Popen([sys.executable, *cmd], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not ready():
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def rows(path: Path) -> list:
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def without_times(result: dict) -> dict:
    return {k: v for k, v in result.items() if "seconds" not in k}


def test_bigru_ctrl_c_keeps_finished_seeds_and_resume_matches_a_straight_run(roles, tmp_path):
    straight = bg.main(BG + ["--seeds", "1", "--data-dir", str(roles), "--out-dir", str(tmp_path / "straight")])
    out = tmp_path / "stopped"
    proc = interrupt(["bigru_baseline.py", *BG, "--data-dir", str(roles), "--out-dir", str(out)],
                     lambda: any(r.get("seed") == 1 for r in rows(out / "metrics.jsonl")))  # seed 1's first epoch
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 130 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert last.startswith("SIGINT: stopped; seeds [0] are finished and kept") and "add --resume" in last
    assert (out / "seed0.json").exists() and not (out / "seed1.json").exists() and not (out / "results.json").exists()
    resumed = bg.main(BG + ["--data-dir", str(roles), "--out-dir", str(out), "--resume"])
    assert [r["seed"] for r in resumed["per_seed"]] == [0, 1]  # seed 0 kept, seed 1 trained again from its start:
    assert without_times(resumed["per_seed"][1]) == without_times(straight["per_seed"][0])  # as if never stopped
    epochs = [(r["seed"], r["epoch"]) for r in rows(out / "metrics.jsonl") if "epoch" in r]
    assert epochs == sorted(set(epochs)), "the stopped seed's epochs were logged twice"


def test_bigru_resume_with_other_settings_is_refused_without_offering_a_missing_flag(roles, tmp_path):
    bg.main(BG + ["--seeds", "0", "--max-epochs", "1", "--data-dir", str(roles), "--out-dir", str(tmp_path)])
    with pytest.raises(SystemExit) as err:
        bg.main(BG + ["--seeds", "0", "--max-epochs", "2", "--data-dir", str(roles), "--out-dir", str(tmp_path),
                      "--resume"])
    assert "--max-epochs 1 (seed0.json) vs 2 (now)" in err.value.code and "--allow-changed" not in err.value.code


def test_hebbian_ctrl_c_keeps_finished_runs_and_resume_matches_a_straight_run(roles, tmp_path):
    common = HB + ["--data-dir", str(roles), "--bigru-results", str(tmp_path / "none.json")]
    straight = hr.main(common + ["--seeds", "1", "--out-dir", str(tmp_path / "straight")])
    out = tmp_path / "stopped"
    proc = interrupt(["hebbian_roles.py", *common, "--out-dir", str(out)],
                     lambda: (out / "seeds" / "hebbian-s0.json").exists())
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 130 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert last.startswith("SIGINT: stopped; the 1 finished (variant, seed) runs are kept") and "--resume" in last
    resumed = hr.main(common + ["--out-dir", str(out), "--resume"])
    seeds = resumed["variants"]["hebbian"]["per_seed"]
    assert [r["seed"] for r in seeds] == [0, 1]
    assert without_times(seeds[1]) == without_times(straight["variants"]["hebbian"]["per_seed"][0])


@pytest.mark.parametrize("content,words", [
    ("{not json", "is unreadable"), ('{"summary": {}}', "is not the results.json of bigru_baseline.py"),
    ('{"script": "bigru_baseline.py", "summary": {}, "dev_only": true}', "a tuning run's dev_a scores only"),
    ('{"script": "bigru_baseline.py", "summary": {}, "data": {"files": {}}}', "on other benchmark files"),
    ("folder", "is a folder where a JSON file is expected")])
def test_hebbian_checks_the_bigru_results_before_it_trains(roles, tmp_path, monkeypatch, content, words):
    monkeypatch.setattr(hr, "train", lambda *a, **k: pytest.fail("trained before the inputs were checked"))
    path = tmp_path / "bigru.json"
    path.mkdir() if content == "folder" else path.write_text(content)
    with pytest.raises(SystemExit) as err:
        hr.main(HB + ["--data-dir", str(roles), "--out-dir", str(tmp_path / "run"), "--bigru-results", str(path)])
    assert words in err.value.code and str(path) in err.value.code and "bigru_baseline.py" in err.value.code
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("main,argv,words", [
    (bg.parse_args, ["--lr", "nan"], "--lr nan: must be a number above 0"),
    (bg.parse_args, ["--lr", "inf"], "--lr inf: must be a number above 0"),
    (bg.parse_args, ["--grad-clip", "inf"], "--grad-clip inf: must be 0 or more"),
    (bg.parse_args, ["--seeds", "0,1,0"], "--seeds 0,1,0: 0 given twice"),
    (bg.parse_args, ["--resume", "--overwrite"], "not allowed with argument"),
    (hr.parse_args, ["--seeds", "2,2"], "--seeds 2,2: 2 given twice"),
    (hr.parse_args, ["--w-prior", "nan"], "--w-prior nan"),
])
def test_role_flags_refuse_nan_inf_and_repeated_seeds(capsys, main, argv, words):
    with pytest.raises(SystemExit) as err:
        main(argv)
    assert err.value.code == 2 and words in capsys.readouterr().err
