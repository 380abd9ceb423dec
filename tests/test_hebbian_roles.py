"""hebbian_roles.py: copies from ema_lm.py, the traces, label independence, the Hebbian rule by hand,
monotone settling, the one-to-one read-out, and a CPU smoke run (tiny data, seconds)."""
import importlib.util
import inspect
import json
import random
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import ema_lm as E  # noqa: E402
import hebbian_roles as hr  # noqa: E402

TINY = hr.Config(code_dim=8, hidden=6, batch_size=16, settle_steps=8)


def fresh(vocab_size: int, cfg: hr.Config, seed: int) -> hr.SPCN:
    """An untrained model with random codes."""
    return hr.SPCN(hr.word_codes([], vocab_size, replace(cfg, codes="random"), seed), cfg, seed)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("roles")
    spec = importlib.util.spec_from_file_location("roles_prepare", REPO / "data" / "roles" / "prepare.py")
    mod = sys.modules["roles_prepare"] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.prepare(out, seed=0, n_train=600, n_dev=60, n_test=60)
    return out


@pytest.mark.parametrize("name", ["ema_decay_matrices", "ema_scan", "ema_scan_reference"])
def test_scan_copied_verbatim_from_ema_lm(name):
    assert inspect.getsource(getattr(hr, name)) == inspect.getsource(getattr(E, name)), \
        f"{name} differs between hebbian_roles.py and ema_lm.py; copy it again from ema_lm.py"


def test_alphas_copied_from_ema_lm():
    assert hr.ALPHAS == E.ALPHAS, f"ALPHAS {hr.ALPHAS} here, {E.ALPHAS} in ema_lm.py"
    line = next(l for l in (REPO / "ema_lm.py").read_text().splitlines() if l.startswith("ALPHAS = "))
    assert line in (REPO / "hebbian_roles.py").read_text().splitlines(), "the ALPHAS line differs from ema_lm.py"


def test_chunked_scan_matches_time_loop():
    x = torch.randn(3, 27, 5)
    assert torch.allclose(hr.ema_scan(x, hr.ALPHAS, chunk_size=8), hr.ema_scan_reference(x, hr.ALPHAS), atol=1e-5)


def test_context_is_normalised_traces_of_other_words():
    """Slow reference: left context = sum_{j<t} a (1-a)^(t-1-j) x_j / (1 - (1-a)^t), right the mirror image."""
    torch.manual_seed(0)
    lengths = torch.tensor([5, 3])
    x = torch.randn(2, 5, 4)
    x[1, 3:] = 0  # padding
    cfg = replace(TINY, code_dim=4, direction="both")
    c = hr.context_traces(x, lengths, cfg).view(2, 5, 2, len(hr.ALPHAS), 4)  # (B, T, dir, S, D)
    for b in range(2):
        n = int(lengths[b])
        for t in range(n):
            for s, a in enumerate(hr.ALPHAS):
                for d, js in ((0, range(t)), (1, range(n - 1, t, -1))):
                    js = list(js)
                    if not js:
                        assert torch.all(c[b, t, d, s] == 0)
                        continue
                    w = torch.tensor([a * (1 - a) ** (len(js) - 1 - k) for k in range(len(js))])
                    want = (w[:, None] * x[b, js]).sum(0) / w.sum()
                    assert torch.allclose(c[b, t, d, s], want, atol=1e-5), (b, t, d, s)


@pytest.mark.parametrize("codes", ["random", "learned"])
def test_training_ignores_labels(tiny_data, codes):
    """Same tokens, role labels shuffled: bit-identical learned weights (and learned codes)."""
    meta, sents = hr.load_role_data(tiny_data)
    train = sents["train_a"][:200]
    rng = random.Random(1)
    shuffled = [dict(s, roles=rng.sample(s["roles"], len(s["roles"]))) for s in train]
    assert any(a["roles"] != b["roles"] for a, b in zip(train, shuffled))
    cfg = replace(TINY, codes=codes)
    m1, _ = hr.train(train, meta["vocabulary"], cfg, seed=3)
    m2, _ = hr.train(shuffled, meta["vocabulary"], cfg, seed=3)
    sd1, sd2 = m1.state_dict(), m2.state_dict()
    assert sd1.keys() == sd2.keys()
    for k in sd1:
        assert torch.equal(sd1[k], sd2[k]), f"{k} depends on the role labels"
    assert not torch.equal(sd1["W_x"], fresh(len(meta["vocabulary"]) + 1, TINY, 3).W_x), "nothing was learned"


def test_hebbian_update_by_hand():
    cfg = replace(TINY, code_dim=1, hidden=2, alphas=(0.5,), direction="forward", lr=0.01, weight_decay=0.001,
                  precision_rate=0.5)
    m = fresh(3, cfg, seed=0)
    m.W_x.copy_(torch.tensor([[1.0, -2.0]]))
    m.W_c.copy_(torch.tensor([[0.5, 0.0]]))
    m.W_spa.copy_(torch.eye(2))
    m.var_x.fill_(0.5)  # precision 2
    m.var_c.fill_(100.0)  # precision 1/100, clamped up to 0.1
    z = torch.tensor([[1.0, 3.0], [2.0, 0.0]])  # (N=2, H=2)
    e_x = torch.tensor([[0.4], [-0.2]])
    e_c = torch.tensor([[1.0], [1.0]])
    e_z = torch.tensor([[0.1, 0.0], [0.0, 0.0]])
    a = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    hr.hebbian_update(m, z, e_x, e_c, e_z, a)
    # W_x: alpha=1, pi=2: mean of pi e z^T = 2 * ([0.4*1 + -0.2*2, 0.4*3 + 0]) / 2 = [0.0, 1.2]
    assert torch.allclose(m.W_x, torch.tensor([[1 + 0.01 * 0.0 - 0.001 * 1, -2 + 0.01 * 1.2 + 0.001 * 2]]))
    # W_c: beta=0.5, pi=0.1 (clamp): mean of 0.05 e z^T = 0.05 * [3, 3] / 2 = [0.075, 0.075]
    assert torch.allclose(m.W_c, torch.tensor([[0.5 + 0.01 * 0.075 - 0.001 * 0.5, 0.01 * 0.075]]))
    # W_spa: gamma=0.3: mean of 0.3 e_z a^T = [[0.015, 0.015], [0, 0]]
    assert torch.allclose(m.W_spa, torch.tensor([[1 + 0.01 * 0.015 - 0.001, 0.01 * 0.015], [0.0, 1 - 0.001]]))
    assert torch.allclose(m.var_x, torch.tensor([0.5 * 0.5 + 0.5 * (0.16 + 0.04) / 2]))
    # Sign: an error of the same sign as the activity grows the weight; no error leaves only the decay.
    m.W_x.copy_(torch.tensor([[0.0, 0.0]]))
    hr.hebbian_update(m, torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0]]), torch.zeros(1, 1), torch.zeros(1, 2),
                      torch.zeros(1, 2))
    assert m.W_x[0, 0] > 0 and m.W_x[0, 1] == 0


def test_settling_lowers_energy_monotonically():
    torch.manual_seed(0)
    cfg = replace(TINY, code_dim=10, hidden=12, settle_steps=40, sparsity=0.05)
    m = fresh(5, cfg, seed=0)
    m.W_x.copy_(torch.randn_like(m.W_x))
    m.W_c.copy_(torch.randn_like(m.W_c))
    m.var_x.uniform_(0.05, 20)  # precisions hit both clamps
    m.var_c.uniform_(0.05, 20)
    x, c, mu = torch.randn(7, 10), torch.randn(7, m.W_c.shape[0]), torch.randn(7, 12).relu()
    z, energies = hr.settle(m, x, c, mu, m.lipschitz(), record=True)
    E_ = torch.stack(energies)  # (steps + 1, B)
    assert torch.all(E_[1:] <= E_[:-1] + 1e-5), (E_[1:] - E_[:-1]).max()
    assert torch.all(E_[-1] < E_[0]) and torch.all(z >= 0)


def test_one_to_one_readout_on_constructed_example():
    # Greedy (largest cell first) would take cluster 0 -> role 0 (10) and then be stuck with 0; optimum is 18.
    assert list(hr.best_one_to_one(np.array([[10, 9], [9, 0]]))) == [1, 0]
    rng = np.random.default_rng(0)
    perm = rng.permutation(7)
    counts = rng.integers(0, 20, (7, 7))
    counts[np.arange(7), perm] += 100  # cluster k is mostly role perm[k]
    assert list(hr.best_one_to_one(counts)) == list(perm)


def test_readout_refuses_test_splits():
    Z, gold = torch.rand(50, 4), np.arange(50) % 7
    for split in ("dev_a", "test_a", "test_b", "test_deep"):
        with pytest.raises(ValueError, match="train_a only"):
            hr.fit_readout(split, Z, gold, 7, TINY, seed=0)


def test_smoke_run_returns_metrics(tiny_data, tmp_path, monkeypatch):
    fitted = []
    real_fit = hr.fit_readout
    monkeypatch.setattr(hr, "fit_readout", lambda split, *a, **k: fitted.append(split) or real_fit(split, *a, **k))
    res = hr.main(["--data_dir", str(tiny_data), "--out_dir", str(tmp_path / "run"), "--seeds", "0,1",
                   "--ablations", "no_spa", "--code_dim", "8", "--hidden", "8", "--settle_steps", "5",
                   "--bigru_results", str(tmp_path / "none.json"), "--quiet"])
    assert fitted == ["train_a"] * 4, f"read-outs fitted on {fitted}: only train_a is allowed"
    for variant in ("hebbian", "no_spa"):
        for split in hr.EVAL_SPLITS:
            s = res["variants"][variant]["summary"][split]
            assert 0.0 <= s["accuracy"]["mean"] <= 1.0 and len(s["accuracy"]["values"]) == 2
            assert set(s) >= {"structure_dependent_accuracy", "per_role", "confusion", "many_to_one", "probe"}
    on_disk = json.loads((tmp_path / "run" / "results.json").read_text())
    assert on_disk["variants"]["hebbian"]["summary"]["test_a"]["accuracy"]["mean"] == \
        res["variants"]["hebbian"]["summary"]["test_a"]["accuracy"]["mean"]
