"""content_recall.py: the MQAR generator, the copies of ema_lm.py's model code, and a smoke run per mixer."""
import inspect
import json

import pytest
import torch

import content_recall as R
import ema_lm as E

COPIED = ["ALPHAS", "MIXERS", "ALPHA_MAX", "ema_scan_reference", "ema_decay_matrices", "ema_scan",
          "gated_scan_reference", "gated_scan", "initial_alpha_logits", "FixedTraces", "LearnedTraces",
          "SelectiveTraces", "FFN", "SPENBlock", "AttentionBlock", "SPEN", "lr_at", "make_optimizer", "pick_device"]
TINY = ["--widths", "16", "--lengths", "32", "--kv-pairs", "4", "--vocab", "32", "--steps", "3", "--batch", "4",
        "--lrs", "1e-3", "--n-test", "8", "--n-val", "8", "--seeds", "0", "--workers", "1", "--device", "cpu",
        "--no-figure"]


@pytest.mark.parametrize("name", COPIED)
def test_copied_code_matches_ema_lm(name):
    mine, theirs = getattr(R, name), getattr(E, name)
    if inspect.isfunction(mine) or inspect.isclass(mine):
        assert inspect.getsource(mine) == inspect.getsource(theirs), f"{name} drifted from ema_lm.py; copy it again"
    else:
        assert mine == theirs, f"{name} = {mine!r} in content_recall.py but {theirs!r} in ema_lm.py"


def test_trace_table_matches_ema_lm():
    assert {k: v.__name__ for k, v in R.TRACES.items()} == {k: v.__name__ for k, v in E.TRACES.items()}


def test_generator_is_deterministic_in_its_seed():
    a, b, c = (R.mqar(16, 64, 4, 64, seed=s) for s in ([1, 64], [1, 64], [2, 64]))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


@pytest.mark.parametrize("noise", [True, False])
@pytest.mark.parametrize("T,K,V", [(32, 4, 32), (64, 4, 64), (128, 8, 256), (256, 16, 64)])
def test_every_query_asks_an_earlier_key_and_its_answer_is_the_paired_value(T, K, V, noise):
    x, y = R.mqar(200, T, K, V, seed=0, noise=noise)
    assert x.shape == y.shape == (200, T) and x.dtype == y.dtype == torch.int64
    assert int(x.min()) >= 0 and int(x.max()) < V
    keys, values = x[:, 0:2 * K:2], x[:, 1:2 * K:2]
    assert bool(((keys >= 1) & (keys < V // 2)).all()), "keys come from the lower half, never 0"
    assert bool(((values >= V // 2) & (values < V)).all()), "values come from the upper half"
    for row in range(200):
        assert len(set(keys[row].tolist())) == K and len(set(values[row].tolist())) == K
        asked = (y[row] != -100).nonzero().flatten().tolist()
        assert len(asked) == K, "each key is asked exactly once"
        assert sorted(x[row, asked].tolist()) == sorted(keys[row].tolist())
        pairs = dict(zip(keys[row].tolist(), values[row].tolist()))
        for p in asked:
            assert p >= 2 * K and p % 2 == 0, "queries follow the pairs, at even offsets"
            assert int(y[row, p]) == pairs[int(x[row, p])]
    if not noise:
        filler = (y == -100)
        filler[:, :2 * K] = False
        assert int(x[filler].abs().sum()) == 0, "without noise, filler is token 0"


def test_test_and_validation_sets_differ():
    test = R.mqar(8, 64, 4, 64, seed=[R.TEST_SEED, 64])
    val = R.mqar(8, 64, 4, 64, seed=[R.VAL_SEED, 64])
    assert not torch.equal(test[0], val[0])


def test_loss_and_accuracy_count_only_query_positions():
    args = R.get_args(TINY)
    torch.manual_seed(0)
    model = R.SPEN(R.model_config(args, "ema", 16, 32))
    x, y = R.mqar(4, 32, 4, 32, seed=0)
    m = R.recall_metrics(model, x, y, batch=4, device="cpu", autocast=torch.autocast("cpu", enabled=False))
    logits, loss = model(x, y)
    assert m["loss"] == pytest.approx(loss.item(), rel=1e-5), "the model's loss must ignore non-query targets"
    asked = y != -100
    assert m["acc"] == pytest.approx((logits[asked].argmax(-1) == y[asked]).float().mean().item())


@pytest.mark.parametrize("mixer", R.MIXERS)
def test_smoke_run_returns_the_metrics(tmp_path, mixer):
    out = R.main(TINY + ["--mixers", mixer, "--out-dir", str(tmp_path)])
    (row,) = out["summary"]
    assert (row["mixer"], row["D"], row["T"], row["K"], row["n_seeds"]) == (mixer, 16, 32, 4, 1)
    assert 0.0 <= row["acc_mean"] <= 1.0 and out["chosen_lr"] == {mixer: 1e-3}
    assert json.loads((tmp_path / "results.json").read_text())["summary"] == out["summary"]
    assert f"| {mixer} (1e-03) | 32 (4) |" in out["table"]


def test_learning_rate_is_chosen_on_validation_and_workers_do_not_change_results(tmp_path):
    argv = TINY + ["--mixers", "ema,attention", "--lrs", "1e-3,1e-2", "--seeds", "0,1"]
    one = R.main(argv + ["--out-dir", str(tmp_path / "a")])
    two = R.main(argv + ["--out-dir", str(tmp_path / "b"), "--workers", "2"])
    assert {r["split"] for r in one["lr_sweep"]} == {"val"} and len(one["lr_sweep"]) == 4
    assert {r["split"] for r in one["runs"]} == {"test"} and len(one["runs"]) == 4
    assert one["chosen_lr"] == two["chosen_lr"]
    key = lambda r: (r["mixer"], r["seed"])  # noqa: E731
    assert [r["acc"] for r in sorted(one["runs"], key=key)] == [r["acc"] for r in sorted(two["runs"], key=key)]
    again = R.main(argv + ["--out-dir", str(tmp_path / "a"), "--resume"])  # every run reused, none retrained
    assert sorted(again["runs"], key=key) == sorted(one["runs"], key=key) and again["lr_sweep"] == one["lr_sweep"]


def test_bad_arguments_are_argparse_errors():
    for argv in (["--mixers", "gru"], ["--lengths", "64,128", "--kv-pairs", "4"], ["--lengths", "32", "--kv-pairs", "16"]):
        with pytest.raises(SystemExit):
            R.get_args(argv)
