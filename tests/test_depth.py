"""ema_lm.py across depth: DepthMixing (residual, dwa, dynamic) and the depth probe."""
import json

import pytest
import torch

import ema_lm as E


def depth_model(mixer: str, depth: str, seed: int = 0, n_layer: int = 3) -> E.LanguageModel:
    torch.manual_seed(seed)
    return E.LanguageModel(E.ModelConfig(n_layer=n_layer, d_model=32, d_ffn=96, n_head=2, block_size=64, mixer=mixer,
                                         ffn="sparse" if mixer == "ema" else "dense", vocab_size=100,
                                         depth_mixing=depth))


@pytest.mark.parametrize("mixer", ["ema", "attention"])
@pytest.mark.parametrize("depth", ["dwa", "dynamic"])
def test_learned_depth_mixing_starts_as_the_residual_stream_exactly(mixer, depth):
    residual, mixed = depth_model(mixer, "residual"), depth_model(mixer, depth)
    missing, unexpected = mixed.load_state_dict(residual.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("depth.") for k in missing), (missing, unexpected)
    idx = torch.randint(0, 100, (2, 40))
    states_r, states_m = [], []
    assert torch.equal(residual(idx, states=states_r)[0], mixed(idx, states=states_m)[0]), \
        f"{depth} at initialisation must compute exactly what the residual stream computes"
    assert all(torch.equal(a, b) for a, b in zip(states_r, states_m)) and len(states_r) == 3 + 1


@pytest.mark.parametrize("depth", E.DEPTH_MIXINGS)
def test_depth_mixing_is_causal_and_learns(depth):
    model = depth_model("ema", depth).eval()
    if depth != "residual":  # move the weights off their start, so that the mixing really acts
        with torch.no_grad():
            for p in model.depth.parameters():
                p.add_(0.3 * torch.randn_like(p))
    idx = torch.randint(0, 100, (1, 40))
    changed = idx.clone()
    changed[0, 23] = (idx[0, 23] + 1) % 100
    a, b = model(idx)[0], model(changed)[0]
    assert torch.equal(a[:, :23], b[:, :23]) and not torch.allclose(a[:, 23:], b[:, 23:])
    if depth != "residual":
        model.train()
        _, loss = model(idx, idx)
        loss.backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.depth.parameters())


@pytest.mark.parametrize("L", [3, 4])
def test_depth_mixing_parameter_counts(L):
    base = depth_model("ema", "residual", n_layer=L).num_params()
    n_weights = (L + 1) * (L + 2) // 2 - 1  # block 1..L-1 inputs and the final state: 2 + 3 + ... + (L + 1)
    assert depth_model("ema", "dwa", n_layer=L).num_params() - base == n_weights
    assert depth_model("ema", "dynamic", n_layer=L).num_params() - base == 32 * n_weights
    assert n_weights == {3: 9, 4: 14}[L]


def test_ridge_probe_reads_a_decodable_state_and_not_noise():
    import depth_probe as P
    gen = torch.Generator().manual_seed(0)
    y_fit, y_val = torch.randint(0, 20, (2000,), generator=gen), torch.randint(0, 20, (500,), generator=gen)
    codes = torch.randn(20, 8, generator=gen, dtype=torch.float64)  # a state that names its token
    classes = torch.arange(10)  # only tokens 0..9 are probed and scored
    assert P.ridge_probe(codes[y_fit], y_fit, codes[y_val], y_val, classes) == 1.0
    noise = torch.randn(2500, 8, generator=gen, dtype=torch.float64)
    assert P.ridge_probe(noise[:2000], y_fit, noise[2000:], y_val, classes) < 0.25  # chance is about 0.1


def test_lagged_pairs_each_state_with_the_token_lag_positions_back():
    import depth_probe as P
    windows = torch.arange(12).view(2, 6)  # token ids equal their positions
    states = windows[None, :, :, None].double().expand(3, 2, 6, 4)  # (L + 1, n, T, D): the state holds t
    x, y = P.lagged(states, windows, 2)
    assert x.shape == (3, 8, 4) and torch.equal(x[0, :, 0].long() - 2, y), "the state at t, the token at t - 2"


def test_probe_run_on_a_tiny_run(tmp_path, lm_argv, monkeypatch):
    import depth_probe as P
    monkeypatch.setattr(P, "N_WINDOWS", 8)
    E.main(lm_argv + ["--max-steps", "2", "--depth-mixing", "dwa", "--out-dir", str(tmp_path / "run")])
    out = P.main([str(tmp_path / "run"), "--figure", str(tmp_path / "fig.png")])
    (row,) = out["rows"]
    assert (row["mixer"], row["depth_mixing"]) == ("ema", "dwa") and len(row["curve_lag0"]) == 2 + 1
    probe = json.loads((tmp_path / "run" / "depth_probe.json").read_text())
    assert all(0 <= a <= 1 for v in probe["accuracy"].values() for a in v) and (tmp_path / "fig.png").exists()
    record = tmp_path / "record"  # a committed record: final.json and depth_probe.json, no checkpoint
    record.mkdir()
    for name in ("final.json", "depth_probe.json"):
        (record / name).write_text((tmp_path / "run" / name).read_text())
    assert P.main([str(record), "--figure", ""])["rows"] == out["rows"]
    with pytest.raises(SystemExit):  # probing it again needs the checkpoint
        P.main([str(record), "--overwrite", "--figure", ""])
