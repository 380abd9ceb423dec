"""ema_lm.py's reading of the LM comparison: token classes, the repeated-segment probe, --eval-only, and
results/lm/compare.py and plot_onset.py, which read its run folders."""
import json

import numpy as np
import pytest
import torch

import ema_lm as E


def load_tool(name: str):
    """A script of results/lm/ as a module."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(name, E.ROOT / "results" / "lm" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

TINY = ["--n-layer", "1", "--d-model", "32", "--n-head", "2", "--block-size", "32", "--micro-batch", "4",
        "--batch-tokens", "128", "--warmup-steps", "1", "--eval-tokens", "1024", "--device", "cpu", "--max-steps", "2"]


def test_token_classes_on_a_hand_made_window():
    # window: 5 7 5 7 9 5 9 7; targets (previous token -> target): 5->7 novel, 7->5 repeated (5 seen, the pair
    # is new), 5->7 induction, 7->9 novel, 9->5 repeated, 5->9 repeated, 9->7 repeated
    tokens = torch.tensor([5, 7, 5, 7, 9, 5, 9, 7])
    classes = E.token_classes(tokens, T=7)
    names = [E.TOKEN_CLASSES[c] for c in classes[0]]
    assert names == ["novel", "repeated", "induction", "novel", "repeated", "repeated", "repeated"]


def test_token_classes_restart_in_every_window():
    tokens = torch.tensor([1, 2, 1, 2, 1, 2, 1])  # windows of 3: [1 2 1 2], [2 1 2 1]
    classes = E.token_classes(tokens, T=3)
    assert classes.shape == (2, 3)
    assert [E.TOKEN_CLASSES[c] for c in classes[0]] == ["novel", "repeated", "induction"]
    assert [E.TOKEN_CLASSES[c] for c in classes[1]] == ["novel", "repeated", "induction"]


def test_loss_by_class_weights_every_token_once():
    losses = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    classes = np.array([[0, 1, 2], [2, 2, 1]])
    out = E.loss_by_class(losses, classes)
    assert out["all"] == dict(loss=3.5, count=6)
    assert out["induction"] == dict(loss=1.0, count=1) and out["repeated"] == dict(loss=4.0, count=2)
    assert out["novel"] == dict(loss=4.0, count=3)


def test_probe_is_a_random_segment_and_its_exact_copy_from_training_types():
    train = np.array([3, 9, 3, 12, 40, 9] * 50, dtype=np.uint16)
    seqs = E.probe_sequences(train, block_size=20, n=5)
    assert seqs.shape == (5, 20)
    assert torch.equal(seqs[:, :10], seqs[:, 10:]), "the second half repeats the first exactly"
    assert set(seqs.unique().tolist()) <= {3, 9, 12, 40}, "ids are drawn from the training data's types"
    assert torch.equal(seqs, E.probe_sequences(train, block_size=20, n=5)), "the same probe for every model"
    assert E.probe_sequences(train, block_size=512).shape == (64, 128), "halves of at most 64 tokens"


class Copier(torch.nn.Module):
    """A perfect copier of the probe (which knows the segment length h): after the first copy it puts all its
    mass on the token h positions back; before that, uniform over a vocabulary of V."""

    def __init__(self, h: int, V: int):
        super().__init__()
        self.h, self.V = h, V

    def eval(self):
        return self

    def train(self, mode: bool = True):
        return self

    def forward(self, idx):
        B, T = idx.shape
        logits = torch.zeros(B, T, self.V)
        for t in range(self.h - 1, T):  # predicting token t+1 = token t+1-h
            logits[torch.arange(B), t, idx[:, t + 1 - self.h]] = 50.0
        return logits, None


def test_copy_probe_tells_a_copier_from_a_guesser():
    seqs = E.probe_sequences(np.arange(100, dtype=np.uint16), block_size=16, n=8)  # h = 8, ids < 100
    out = E.copy_probe(Copier(8, 128), seqs, "cpu", torch.autocast("cpu", enabled=False))
    assert out["probe_first"] == pytest.approx(np.log(128), rel=1e-4), "first copy: a uniform guess"
    assert out["probe_second"] < 1e-6 and out["probe_gap"] == pytest.approx(np.log(128), rel=1e-4)


def test_final_json_holds_the_breakdown_and_eval_only_reproduces_it(tmp_path):
    out = E.main(TINY + ["--out-dir", str(tmp_path)])
    assert set(out["classes"]) == {"all", *E.TOKEN_CLASSES} and out["classes"]["all"]["count"] == 1024
    assert sum(out["classes"][c]["count"] for c in E.TOKEN_CLASSES) == 1024
    assert out["val_loss"] == pytest.approx(out["classes"]["all"]["loss"])
    metrics = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert "probe_gap" in metrics[-1] and "val_loss_ptb" in metrics[-1]
    again = E.main(TINY + ["--out-dir", str(tmp_path), "--eval-only"])
    assert again["classes"] == out["classes"] and again["probe_first"] == out["probe_first"]
    assert json.loads((tmp_path / "eval.json").read_text())["classes"] == out["classes"]


def test_compare_groups_runs_by_mixer_and_splits_the_gap_by_class(tmp_path, capsys):
    dirs = []
    for mixer in ("ema", "attention"):
        d = tmp_path / mixer
        E.main(TINY + ["--mixer", mixer, "--out-dir", str(d)])
        dirs.append(str(d))
    compare = load_tool("compare")
    out = compare.main(dirs)
    shares = out["shares"]["attention"]
    assert sum(shares.values()) == pytest.approx(1.0), "the classes' shares add up to the whole gap"
    assert "| ema (1) |" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="no final.json"):
        compare.main([str(tmp_path / "missing")])


def test_onset_figure_reads_the_probe_from_run_folders(tmp_path):
    plot_onset = load_tool("plot_onset")
    for mixer, gap in (("ema", 0.0), ("attention", 2.0)):
        run = tmp_path / mixer
        run.mkdir()
        (run / "config.json").write_text(json.dumps({"config": {"dataset": "ptb"}, "model_config": {"mixer": mixer}}))
        rows = [{"step": s, "tokens": 2048 * s, "probe_gap": gap * s / 2, "val_loss_ptb": 6.0 - s} for s in (1, 2)]
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [{"step": 0, "tokens": 0}, *rows]))
    curves = plot_onset.main([str(tmp_path / "ema"), str(tmp_path / "attention"), "--out", str(tmp_path / "f.png")])
    assert curves["attention"]["gap"] == [1.0, 2.0] and curves["ema"]["tokens"] == [2048 / 1e6, 4096 / 1e6]
    assert (tmp_path / "f.png").stat().st_size > 1000


def test_compare_takes_the_later_scores_and_refuses_a_partial_run(tmp_path):
    compare, run = load_tool("compare"), tmp_path / "run"
    E.main(TINY + ["--out-dir", str(run), "--steps-this-run", "1"])  # a partial run: step 1 of 2
    with pytest.raises(SystemExit, match="partial run"):
        compare.main([str(run)])
    E.main(TINY + ["--out-dir", str(run), "--eval-only"])  # eval.json at step 1
    E.main(TINY + ["--out-dir", str(run), "--resume"])  # final.json at step 2
    assert compare.latest_scores(str(run))["step"] == 2, "the final scores, not the older --eval-only ones"


def test_eval_only_scores_the_data_the_run_was_trained_on(tmp_path):
    E.main(TINY + ["--out-dir", str(tmp_path), "--eval-tokens", "512"])
    out = E.main(["--out-dir", str(tmp_path), "--eval-only", "--device", "cpu"])  # the run folder is enough
    assert out["classes"]["all"]["count"] == 512
    with pytest.raises(SystemExit, match="--eval-tokens 2048 .given. vs 512 .the run."):
        E.main(["--out-dir", str(tmp_path), "--eval-only", "--eval-tokens", "2048"])  # contradicts the run
