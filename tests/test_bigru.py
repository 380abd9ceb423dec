"""Tests for bigru_baseline.py: metrics, data-file errors, and a tiny end-to-end run (CPU, seconds)."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import bigru_baseline as bg  # noqa: E402
from data.roles.prepare import prepare  # noqa: E402

ROLES = ["AGENT", "PATIENT", "RECIPIENT", "LOCATION", "ACTION", "MODIFIER", "FUNCTION"]


@pytest.fixture(scope="module")
def small_data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("roles")
    prepare(out, seed=0, n_train=800, n_dev=150, n_test=150)
    return out


def test_structure_dependent_definition():
    train_roles = {"the": ["FUNCTION"], "dog": ["AGENT", "PATIENT"], "lion": ["AGENT"], "chased": ["ACTION"]}
    tokens = ["the", "lion", "chased", "the", "dog"]
    assert bg.structure_dependent(tokens, ["FUNCTION", "PATIENT", "ACTION", "FUNCTION", "PATIENT"], train_roles) \
        == [False, True, False, False, True]  # lion: held-out swap; dog: several roles in training
    assert bg.structure_dependent(["lion"], ["AGENT"], train_roles) == [False]


def test_role_metrics_on_constructed_example():
    # 8 tokens: gold A P F F V A P F, prediction gets tokens 1 (P->A) and 5 (A->P) wrong.
    gold = np.array([0, 1, 6, 6, 4, 0, 1, 6])
    pred = np.array([0, 0, 6, 6, 4, 1, 1, 6])
    sd = np.array([True, True, False, False, False, True, True, False])
    cons = np.array(["passive_by"] * 5 + ["active_transitive"] * 3)
    m = bg.role_metrics(gold, pred, sd, ROLES, cons)
    assert m["accuracy"] == pytest.approx(6 / 8)
    assert m["structure_dependent_accuracy"] == pytest.approx(2 / 4)
    assert m["n_tokens"] == 8 and m["n_structure_dependent"] == 4
    assert m["per_role"]["AGENT"] == pytest.approx(1 / 2) and m["per_role"]["PATIENT"] == pytest.approx(1 / 2)
    assert m["per_role"]["FUNCTION"] == 1.0 and m["per_role"]["ACTION"] == 1.0
    assert m["per_role"]["RECIPIENT"] is None  # no gold RECIPIENT: undefined, not 0
    conf = np.array(m["confusion"])
    assert conf.sum() == 8 and conf[0, 0] == 1 and conf[0, 1] == 1 and conf[1, 0] == 1 and conf[6, 6] == 3
    assert m["per_construction"] == {"active_transitive": pytest.approx(2 / 3), "passive_by": pytest.approx(4 / 5)}


def test_summarise_seeds_mean_std():
    runs = [{"accuracy": 0.5, "n_tokens": 8, "per_role": {"AGENT": 1.0, "RECIPIENT": None}, "confusion": [[1, 2]]},
            {"accuracy": 0.7, "n_tokens": 8, "per_role": {"AGENT": 0.0, "RECIPIENT": None}, "confusion": [[3, 4]]}]
    s = bg.summarise_seeds(runs)
    assert s["accuracy"]["mean"] == pytest.approx(0.6)
    assert s["accuracy"]["std"] == pytest.approx(np.std([0.5, 0.7], ddof=1))
    assert s["n_tokens"] == 8 and s["per_role"]["RECIPIENT"] is None and s["confusion"] == [[4, 6]]
    assert bg.summarise_seeds(runs[:1])["accuracy"]["std"] == 0.0


def copy_data(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def test_corrupted_line_names_file_and_line(small_data, tmp_path):
    d = copy_data(small_data, tmp_path / "bad")
    lines = (d / "test_b.jsonl").read_text().splitlines(keepends=True)
    lines[2] = '{"id": "test_b-00002", "tokens": ["the", "cat"'  + "\n"
    (d / "test_b.jsonl").write_text("".join(lines))
    with pytest.raises(ValueError, match=r"test_b\.jsonl line 3: .*corrupted or truncated.*prepare\.py"):
        bg.load_role_data(d)


def test_mismatched_roles_name_file_and_line(small_data, tmp_path):
    d = copy_data(small_data, tmp_path / "bad")
    lines = (d / "dev_a.jsonl").read_text().splitlines(keepends=True)
    rec = json.loads(lines[4])
    rec["roles"] = rec["roles"][:-1]
    lines[4] = json.dumps(rec) + "\n"
    (d / "dev_a.jsonl").write_text("".join(lines))
    with pytest.raises(ValueError, match=r"dev_a\.jsonl line 5: .*prepare\.py"):
        bg.load_role_data(d)


def test_truncated_file_names_file_and_line(small_data, tmp_path):
    d = copy_data(small_data, tmp_path / "cut")
    text = (d / "train_a.jsonl").read_text()
    n_lines = text.count("\n")
    (d / "train_a.jsonl").write_text(text[: len(text) - 40])  # cut inside the last line
    with pytest.raises(ValueError, match=rf"train_a\.jsonl line {n_lines}: .*truncated"):
        bg.load_role_data(d)
    lines = text.splitlines(keepends=True)
    (d / "train_a.jsonl").write_text("".join(lines[:-10]))  # cut at a line boundary
    with pytest.raises(ValueError, match=rf"train_a\.jsonl line {n_lines - 9}: .*truncated"):
        bg.load_role_data(d)


def test_bigru_smoke_learns_tiny_split(small_data, tmp_path):
    out = tmp_path / "run"
    res = bg.main(["--data-dir", str(small_data), "--out-dir", str(out), "--seeds", "0", "--hidden-size", "32",
                   "--embed-dim", "16", "--batch-size", "16", "--max-epochs", "4", "--lr", "0.003", "--quiet",
                   "--device", "cpu"])
    # Chance is 1/7; always answering FUNCTION, the commonest role, gives about 0.45.
    assert res["summary"]["dev_a"]["accuracy"]["mean"] > 0.85, res["summary"]["dev_a"]["accuracy"]
    assert res["summary"]["test_a"]["accuracy"]["mean"] > 0.7, res["summary"]["test_a"]["accuracy"]
    for split in bg.EVAL_SPLITS:
        m = res["per_seed"][0][split]
        assert set(m) >= {"accuracy", "structure_dependent_accuracy", "per_role", "confusion"}
        assert np.array(m["confusion"]).sum() == m["n_tokens"]
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["summary"]["test_b"]["accuracy"]["mean"] == res["summary"]["test_b"]["accuracy"]["mean"]
    assert (out / "metrics.jsonl").exists() and (out / "seed0.pt").exists()
    before = (out / "results.json").read_bytes()
    with pytest.raises(SystemExit, match="--overwrite"):  # a second run does not replace the first one's results
        bg.main(["--data-dir", str(small_data), "--out-dir", str(out), "--seeds", "0", "--quiet", "--device", "cpu"])
    assert (out / "results.json").read_bytes() == before


def test_dev_only_never_scores_a_test_split(small_data, tmp_path):
    res = bg.main(["--data-dir", str(small_data), "--out-dir", str(tmp_path), "--seeds", "0", "--hidden-size", "16",
                   "--embed-dim", "8", "--max-epochs", "1", "--dev-only", "--quiet", "--device", "cpu"])
    assert set(res["summary"]) == {"dev_a"} and set(res["per_seed"][0]) & set(bg.EVAL_SPLITS) == {"dev_a"}
    assert (tmp_path / "results_dev.json").exists() and not (tmp_path / "results.json").exists()
    assert not list(tmp_path.glob("*.pt")), "tuning runs write no checkpoints"


@pytest.mark.parametrize("argv, flag", [(["--seeds", "a,b"], "--seeds"), (["--lr", "0"], "--lr"),
                                        (["--hidden-size", "x"], "--hidden-size"), (["--seed", "1"], "--seed"),
                                        (["--max-train", "-3"], "--max-train")])
def test_cli_rejects_bad_flags_by_name(argv, flag, capsys):
    with pytest.raises(SystemExit):
        bg.parse_args(argv)
    message = capsys.readouterr().err.strip().splitlines()[-1]  # the error line, not the usage that lists every flag
    assert flag in message, message


def test_missing_files_are_generated(tmp_path):
    meta, data = bg.load_role_data(tmp_path / "fresh")  # default benchmark, about a second
    assert meta["sizes"]["train_a"] == len(data["train_a"]) == 20000
    assert (tmp_path / "fresh" / "meta.json").exists()
