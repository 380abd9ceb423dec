"""content_recall.py: the MQAR generator, the localisation rows, state sizes, the protocol and a smoke run per mixer."""
import json
import math

import pytest
import torch

import content_recall as R
import ema_lm as E
from mixers import ShortConv

TINY = ["--widths", "16", "--lengths", "32", "--kv-pairs", "4", "--vocab", "64", "--steps", "3", "--batch", "4",
        "--lrs", "1e-3", "--n-test", "8", "--n-val", "8", "--seeds", "0", "--workers", "1", "--device", "cpu",
        "--no-figure", "--head-dim", "8", "--lr-width", "16", "--lr-length", "32"]


def tiny_config(T: int = 32) -> E.ModelConfig:
    return R.model_config(R.get_args(TINY), 16, T)


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


def test_queries_follow_zoology_s_power_law_most_of_them_soon_after_the_pairs():
    T, K = 256, 4
    x, y = R.mqar(2000, T, K, 512, seed=0)
    gaps = ((y != -100).nonzero()[:, 1] - 2 * K) // 2  # query slot after the pairs, 0 .. (T - 2K)/2 - 1
    space = (T - 2 * K) // 2
    assert gaps.float().mean().item() < 0.4 * space, "p(gap) ~ gap^-0.99: short gaps dominate"
    assert (gaps < space // 4).float().mean().item() > 0.4 and gaps.max().item() > space // 2


def test_test_and_validation_sets_differ():
    test = R.mqar(8, 64, 4, 64, seed=[R.TEST_SEED, 64])
    val = R.mqar(8, 64, 4, 64, seed=[R.VAL_SEED, 64])
    assert not torch.equal(test[0], val[0])


def test_loss_and_accuracy_count_only_query_positions():
    torch.manual_seed(0)
    model = R.build_model("ema", tiny_config(), conv_kernel=3)
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
    assert row["state_floats"] == R.mixer_state_floats(mixer, tiny_config()) and out["chosen_lr"] == {mixer: 1e-3}
    (run,) = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert run["acc"] == row["acc_mean"] and run["steps"] == 3 and math.isfinite(run["loss"])
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


@pytest.mark.parametrize("argv,words", [
    (["--mixers", "gru"], "unknown mixer 'gru'"),
    (["--lengths", "64,128,256", "--kv-pairs", "4,8"], "one entry per length"),
    (["--lengths", "32", "--kv-pairs", "16"], "4K <= T"),
    (["--lengths", "128", "--kv-pairs", "8", "--vocab", "128"], "--vocab 128 must exceed every length"),
    (["--seeds", "a,b"], "--seeds 'a,b': expected comma-separated integers"),
    (["--steps", "0"], "--steps 0: must be a positive integer"),
    (["--widths", "65"], "width 65 does not split"),
    (["--widths", "64", "--lr-width", "128"], "--lr-width 128 is not in the grid [64]"),
    (["--mixers", "gla@gpt2"], "arm 'gla@gpt2': unknown option @gpt2"),
    (["--mixers", "ema@k"], "arm 'ema@k': unknown option @k"),
    (["--mixers", "ema", "--probe-arms", "attention"], "add the arm to --mixers"),
])
def test_bad_arguments_are_clear_argparse_errors(argv, words, capsys):
    with pytest.raises(SystemExit):
        R.get_args(argv)
    assert words in capsys.readouterr().err


def test_a_finished_sweep_is_not_overwritten_without_a_flag(tmp_path):
    R.main(TINY + ["--mixers", "ema", "--out-dir", str(tmp_path)])
    before = (tmp_path / "metrics.jsonl").read_bytes()
    with pytest.raises(SystemExit, match="--resume"):
        R.main(TINY + ["--mixers", "ema", "--out-dir", str(tmp_path)])
    assert (tmp_path / "metrics.jsonl").read_bytes() == before


# ----------------------------------------------------------------------------- the localisation rows


def trace_attention_reference(m: R.TraceAttention, u: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """One position and one head at a time, with an explicit softmax over the visible slots."""
    B, T, S, D = h.shape
    nh, hd = m.n_head, D // m.n_head
    q, k, v = m.q(u), m.k(h) + m.timescale, m.v(h)  # (B, T, D), (B, T, S, D) x 2
    y = torch.zeros(B, T, D)
    for t in range(T):
        rows = slice(0, t + 1) if m.history else slice(t, t + 1)  # history: every t' <= t; else t itself
        kt, vt = k[:, rows].flatten(1, 2), v[:, rows].flatten(1, 2)  # (B, slots, D)
        for i in range(nh):
            c = slice(i * hd, (i + 1) * hd)
            w = torch.softmax(torch.einsum("bd,bnd->bn", q[:, t, c], kt[..., c]) / math.sqrt(hd), -1)
            y[:, t, c] = torch.einsum("bn,bnd->bd", w, vt[..., c])
    return m.proj(y)


@pytest.mark.parametrize("history", [False, True])
def test_trace_attention_matches_an_explicit_softmax(history):
    torch.manual_seed(0)
    m = R.TraceAttention(16, 2, history)
    u, h = torch.randn(2, 9, 16), torch.randn(2, 9, 3, 16)
    assert torch.allclose(m(u, h), trace_attention_reference(m, u, h), atol=1e-5)


@pytest.mark.parametrize("mixer", R.MIXERS)
def test_no_prediction_sees_the_future(mixer):
    torch.manual_seed(0)
    model = R.build_model(mixer, tiny_config(40), conv_kernel=3).eval()
    idx = torch.randint(0, 64, (1, 40))
    changed = idx.clone()
    changed[0, 23] = (idx[0, 23] + 1) % 64
    a, b = model(idx)[0], model(changed)[0]
    if mixer == "longconv":  # its FFT mixes every position at rounding level (~1e-7), never more
        assert torch.allclose(a[:, :23], b[:, :23], rtol=0, atol=1e-5), f"{mixer}: an output before 23 moved"
    else:
        assert torch.equal(a[:, :23], b[:, :23]), f"{mixer}: an output before position 23 changed with token 23"
    assert not torch.allclose(a[:, 23:], b[:, 23:]), f"{mixer}: token 23 should reach positions >= 23"


def test_localisation_rows_change_only_the_predictor_of_the_spen_block():
    spen, current = (R.build_model(m, tiny_config(), conv_kernel=0) for m in ("ema", "trace-attn-current"))
    names = lambda model: {k for k, _ in model.named_parameters()}  # noqa: E731
    assert {k.split(".", 2)[-1] for k in names(spen) - names(current)} == {"pred.weight"}
    assert {k.split(".", 2)[-1] for k in names(current) - names(spen)} == {
        "read.q.weight", "read.k.weight", "read.v.weight", "read.proj.weight", "read.timescale"}


def test_short_convolution_sits_in_front_of_every_mixer_and_is_causal():
    for mixer in R.MIXERS:
        block = R.build_model(mixer, tiny_config(), conv_kernel=3).blocks[0]
        assert isinstance(block.conv, ShortConv), mixer
    conv = ShortConv(4, 3)
    x = torch.randn(1, 10, 4)
    y = x.clone()
    y[0, 6] += 1.0
    assert torch.equal(conv(x)[:, :6], conv(y)[:, :6]) and not torch.allclose(conv(x)[:, 6:9], conv(y)[:, 6:9])
    assert torch.equal(conv(x)[:, 9], conv(y)[:, 9]), "kernel 3: position 9 sees 7, 8, 9 only"


def test_state_sizes_of_the_localisation_rows():
    cfg = tiny_config(32)
    assert R.mixer_state_floats("trace-attn-current", cfg) == 3 * 16 == R.mixer_state_floats("ema", cfg)
    assert R.mixer_state_floats("trace-attn-history", cfg) == 3 * 16 * 32
    assert R.mixer_state_floats("attention", cfg) == 2 * 32 * 16


# ----------------------------------------------------------------------------- the factorial (issue 25)


def test_chance_is_a_uniform_guess_among_the_values_seen_before_the_query():
    x, y = R.mqar(50, 32, 4, 64, seed=3)
    want = [1 / len({int(t) for t in x[r, :p] if t >= 32}) for r in range(50) for p in (y[r] != -100).nonzero()[:, 0]]
    assert R.chance_accuracy(x, y, 64) == pytest.approx(sum(want) / len(want), rel=1e-6)
    assert 1 / 4 > R.chance_accuracy(x, y, 64) > 0.05  # more values in sight than the K = 4 pairs hold


def test_arms_put_a_vector_state_in_gpt2_s_block_or_change_its_convolution():
    cfg = tiny_config()
    assert R.parse_arm("ema-long@gpt2") == ("ema-long", "gpt2", None)
    assert R.parse_arm("trace-attn-history@k0") == ("trace-attn-history", "auto", 0)
    gpt2 = R.build_model("ema-long@gpt2", cfg, conv_kernel=3).blocks[0]
    assert isinstance(gpt2, E.AttentionBlock) and isinstance(gpt2.attn, E.TraceReadout)
    assert isinstance(R.build_model("ema-long", cfg, conv_kernel=3).blocks[0], E.SPENBlock)
    no_conv = R.build_model("trace-attn-history@k0", cfg, conv_kernel=3).blocks[0]
    assert isinstance(no_conv.conv, torch.nn.Identity)
    assert R.mixer_state_floats("ema-wide@gpt2", cfg) == 32 * 16 == R.mixer_state_floats("legs", cfg)
    assert set(R.FACTORIAL) >= {m for cell in R.DESIGN.values() for m in cell}, "every cell of the design is run"


def test_the_first_seed_s_test_run_is_the_chosen_rate_s_validation_run(tmp_path):
    argv = TINY + ["--mixers", "ema", "--seeds", "0"]
    swept = R.main(argv + ["--lrs", "1e-3,1e-2", "--out-dir", str(tmp_path / "a")])
    alone = R.main(argv + ["--lrs", str(swept["chosen_lr"]["ema"]), "--out-dir", str(tmp_path / "b")])
    (reused,), (trained,) = swept["runs"], alone["runs"]
    assert reused["split"] == trained["split"] == "test" and len(swept["lr_sweep"]) == 2
    assert (reused["acc"], reused["loss"]) == (trained["acc"], trained["loss"]), "one training, scored on both sets"
    assert len((tmp_path / "a" / "metrics.jsonl").read_text().splitlines()) == 2, "trained twice, not three times"


def test_factorial_stages_extend_the_slow_arms_and_probe_the_frozen_models(tmp_path, capsys):
    argv = TINY + ["--mixers", "ema,attention", "--extend-below", "1.1", "--extend-steps", "4",
                   "--probe-arms", "ema,attention", "--probe-steps", "3", "--out-dir", str(tmp_path)]
    out = R.main(argv)
    steps = sorted((r["mixer"], r["budget_steps"]) for r in out["runs"])
    assert steps == [("attention", 3), ("attention", 4), ("ema", 3), ("ema", 4)], "every arm below 1.1 ran again"
    probes = {r["mixer"]: r for r in out["probes"]}
    assert probes["ema"]["n_features"] == 2 * 3 * 16, "the SPEN's traces in both blocks"
    assert probes["attention"]["n_features"] == 16, "attention's final hidden state"
    assert all(0 <= r["acc"] <= 1 and r["steps"] == 3 for r in probes.values())
    assert len(list((tmp_path / "models").glob("*.pt"))) == 4  # ema and attention at 3 and 4 steps
    assert "probe on ema's state" in out["table"] and "chance" in out["table"]
    again = R.main(argv + ["--resume"])  # nothing retrained, the probes included
    assert again["probes"] == out["probes"] and "0 to go" in capsys.readouterr().out


def test_factorial_preset_runs_every_arm_and_the_default_keeps_its_eight(capsys):
    args = R.get_args(["--preset", "factorial"])
    assert args.mixers == list(R.FACTORIAL) and (args.steps, args.extend_steps, args.extend_below) == (4000, 8000, 0.9)
    assert (args.widths, args.lengths, args.kv_pairs, args.lrs) == ([64], [64], [8], [1e-3, 3e-3])
    assert R.get_args([]).mixers == list(R.FIRST_MIXERS) and R.get_args([]).probe_arms == []
    assert len(R.FACTORIAL) == 25


def test_probe_reads_the_traces_in_either_block_and_the_hidden_state_otherwise():
    x = torch.randint(0, 64, (2, 16))
    for block in ("spen", "gpt2"):
        torch.manual_seed(0)
        model = E.LanguageModel(E.ModelConfig(n_layer=2, d_model=32, d_ffn=64, n_head=2, block_size=16, vocab_size=64,
                                              mixer="ema", block=block))
        assert R.probe_features(model, x).shape == (2, 16, 2 * 3 * 32)  # every block's S = 3 traces
    model = E.LanguageModel(E.ModelConfig(n_layer=2, d_model=32, d_ffn=64, n_head=2, block_size=16, vocab_size=64,
                                          mixer="attention"))
    assert R.probe_features(model, x).shape == (2, 16, 32)  # the final hidden state
