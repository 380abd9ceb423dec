"""hebbian_roles.py: the traces, role-free codes, label independence, the Hebbian rule by
hand, relative precision, the prior's stiffness, monotone k-sparse settling, the read-outs, the CLI errors, and a
CPU smoke run (tiny data, seconds)."""
import json
import math
import random
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import hebbian_roles as hr  # noqa: E402
from data.roles.prepare import prepare  # noqa: E402

TINY = hr.Config(code_dim=8, hidden=6, active=6, batch_size=16, settle_steps=8)


def fresh(cfg: hr.Config, D: int, Dc: int, seed: int = 0) -> hr.SPCN:
    """An untrained model with random codes of width D and a context of width Dc."""
    return hr.SPCN(torch.randn(5, D), torch.randn(5, D), torch.zeros(Dc), torch.ones(Dc), cfg, seed)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("roles")
    prepare(out, seed=0, n_train=600, n_dev=60, n_test=60)
    return out


def test_context_is_normalised_traces_of_other_words():
    """Slow reference: left context = sum_{j<t} a (1-a)^(t-1-j) x_j / (1 - (1-a)^t), right the mirror image."""
    torch.manual_seed(0)
    lengths = torch.tensor([5, 3])
    x = torch.randn(2, 5, 4)
    x[1, 3:] = 0  # padding
    c = hr.context_traces(x, lengths, replace(TINY, direction="both")).view(2, 5, 2, len(hr.ALPHAS), 4)
    for b in range(2):
        n = int(lengths[b])
        for t in range(n):
            for s, a in enumerate(hr.ALPHAS):
                for d, js in ((0, list(range(t))), (1, list(range(n - 1, t, -1)))):
                    if not js:
                        assert torch.all(c[b, t, d, s] == 0)
                        continue
                    w = torch.tensor([a * (1 - a) ** (len(js) - 1 - k) for k in range(len(js))])
                    want = (w[:, None] * x[b, js]).sum(0) / w.sum()
                    assert torch.allclose(c[b, t, d, s], want, atol=1e-5), (b, t, d, s)


def test_left_codes_do_not_carry_the_role():
    """'lion' is always followed by a verb (an AGENT), 'mouse' by 'was' (a PATIENT); both follow 'the'. Left
    codes must be identical for the two nouns, codes that also read the next word must not."""
    the, lion, mouse, chased, was = 1, 2, 3, 4, 5
    data = [torch.tensor(s) for s in ([the, lion, chased, the, mouse], [the, mouse, was, chased], [the, lion, chased])]
    left = hr.word_codes(data, 6, "left", TINY, seed=0)
    both = hr.word_codes(data, 6, "both", TINY, seed=0)
    assert torch.allclose(left[lion], left[mouse], atol=1e-6), "left codes differ for nouns with the same left context"
    assert not torch.allclose(both[lion], both[mouse], atol=1e-3), "the right neighbour is missing from 'both' codes"
    assert left.shape == (6, 8) and both.shape == (6, 16) and torch.all(left[0] == 0)
    assert not torch.allclose(left[chased], left[lion], atol=1e-3)  # a verb follows nouns and "was", not "the"


@pytest.mark.parametrize("codes", ["left", "both"])
def test_training_ignores_labels(tiny_data, codes):
    """Same tokens, role labels shuffled: bit-identical learned weights, codes and precisions."""
    meta, sents = hr.load_role_data(tiny_data)
    train = sents["train_a"][:200]
    rng = random.Random(1)
    shuffled = [dict(s, roles=rng.sample(s["roles"], len(s["roles"]))) for s in train]
    assert any(a["roles"] != b["roles"] for a, b in zip(train, shuffled))
    cfg = replace(TINY, codes=codes, active=2)
    m1, _ = hr.train(train, meta["vocabulary"], cfg, seed=3)
    m2, _ = hr.train(shuffled, meta["vocabulary"], cfg, seed=3)
    sd1, sd2 = m1.state_dict(), m2.state_dict()
    assert sd1.keys() == sd2.keys()
    for k in sd1:
        assert torch.equal(sd1[k], sd2[k]), f"{k} depends on the role labels"
    init = hr.SPCN(m1.codes, m1.c_codes, m1.c_mean, m1.c_std, cfg, 3)
    assert not torch.equal(sd1["W_x"], init.W_x), "nothing was learned"


def test_relative_precision_and_clamp():
    m = fresh(TINY, D=2, Dc=2)
    m.var_x.copy_(torch.tensor([0.5, 2.0]))
    m.var_c.copy_(torch.tensor([50.0, 0.001]))
    typical = math.exp(np.mean(np.log([0.5, 2.0, 50.0, 0.001])))  # geometric mean, 0.47
    px, pc = m.precisions()
    assert torch.allclose(px, torch.tensor([typical / 0.5, typical / 2.0]))
    assert torch.allclose(pc, torch.tensor([0.1, 10.0]))  # clamped at the paper's 0.1 and 10
    assert all(torch.equal(p, torch.ones(2)) for p in fresh(replace(TINY, use_precision=False), 2, 2).precisions())


def test_hebbian_update_by_hand():
    cfg = replace(TINY, hidden=2, active=2, lr=0.01, weight_decay=0.001, precision_rate=0.5)
    m = fresh(cfg, D=1, Dc=1)
    m.W_x.copy_(torch.tensor([[1.0, -2.0]]))
    m.W_c.copy_(torch.tensor([[0.5, 0.0]]))
    m.W_spa.copy_(torch.eye(2))
    m.var_x.fill_(0.5)  # typical variance sqrt(0.5 * 8) = 2: precision 4 for x, 0.25 for c
    m.var_c.fill_(8.0)
    z = torch.tensor([[1.0, 3.0], [2.0, 0.0]])  # (N=2, H=2)
    e_x, e_c = torch.tensor([[0.4], [-0.2]]), torch.tensor([[1.0], [1.0]])
    e_z, a = torch.tensor([[0.1, 0.0], [0.0, 0.0]]), torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    hr.hebbian_update(m, z, e_x, e_c, e_z, a)
    # W_x: alpha=1, pi=4: mean of 4 e z^T = 4 * [0.4*1 - 0.2*2, 0.4*3 + 0] / 2 = [0.0, 2.4]
    assert torch.allclose(m.W_x, torch.tensor([[1 + 0.0 - 0.001 * 1, -2 + 0.01 * 2.4 + 0.001 * 2]]))
    # W_c: beta=0.5, pi=0.25: mean of 0.125 e z^T = 0.125 * [3, 3] / 2
    assert torch.allclose(m.W_c, torch.tensor([[0.5 + 0.01 * 0.1875 - 0.001 * 0.5, 0.01 * 0.1875]]))
    # W_spa: gamma=1 (default): mean of e_z a^T = [[0.05, 0.05], [0, 0]]
    assert torch.allclose(m.W_spa, torch.tensor([[1 + 0.01 * 0.05 - 0.001, 0.01 * 0.05], [0.0, 1 - 0.001]]))
    assert torch.allclose(m.var_x, torch.tensor([0.5 * 0.5 + 0.5 * (0.16 + 0.04) / 2]))
    assert torch.allclose(m.var_c, torch.tensor([0.5 * 8.0 + 0.5 * 1.0]))


def test_prior_stiffness_is_relative_to_the_data_terms():
    cfg = replace(TINY, hidden=4, active=4, w_prior=0.3)
    m = fresh(cfg, D=3, Dc=5)
    G, g, L = m.curvature()
    assert g == pytest.approx(0.3 * float(G.diagonal().mean()))
    assert L == pytest.approx(float(torch.linalg.eigvalsh(G)[-1]) + g)
    m.W_x.mul_(3)
    m.W_c.mul_(3)
    assert m.curvature()[1] == pytest.approx(9 * g, rel=1e-5), "gamma must not depend on the scale of W"


@pytest.mark.parametrize("active", [12, 3])
def test_settling_lowers_energy_monotonically(active):
    torch.manual_seed(0)
    cfg = replace(TINY, hidden=12, active=active, settle_steps=40)
    m = fresh(cfg, D=10, Dc=7)
    m.W_x.copy_(torch.randn_like(m.W_x))
    m.W_c.copy_(torch.randn_like(m.W_c))
    m.var_x.uniform_(0.05, 20)  # precisions hit both clamps
    m.var_c.uniform_(0.05, 20)
    x, c, mu = torch.randn(7, 10), torch.randn(7, 7), torch.randn(7, 12).relu()
    z, energies = hr.settle(m, x, c, mu, record=True)
    E_ = torch.stack(energies)  # (steps + 1, B)
    assert torch.all(E_[1:] <= E_[:-1] + 1e-4), (E_[1:] - E_[:-1]).max()
    assert torch.all(E_[-1] < E_[0]) and torch.all(z >= 0)
    assert int((z > 0).sum(1).max()) <= active, "more units on than k-winners-take-all allows"


def test_prior_moves_the_latent():
    torch.manual_seed(0)
    cfg = replace(TINY, hidden=4, active=4, settle_steps=200, w_prior=1e5)
    m = fresh(cfg, D=3, Dc=5)
    x, c, mu = torch.randn(2, 3), torch.randn(2, 5), torch.rand(2, 4)
    assert not torch.allclose(hr.settle(fresh(replace(cfg, w_prior=0.0), 3, 5), x, c, mu)[0], mu, atol=1e-2)
    z, _ = hr.settle(m, x, c, mu)
    assert torch.allclose(z, mu, atol=1e-2), "a very stiff prior must pin the latent to its prediction"


def test_weighted_kmeans_and_v_measure():
    X = torch.tensor([[0.0], [10.0]])
    C = hr.kmeans(X, 1, seed=0, weight=torch.tensor([100.0, 1.0]))
    assert C.item() == pytest.approx(10 / 101), "k-means must weigh each point by its weight"
    gold = np.array([0, 0, 0, 1, 1, 1])
    assert hr.v_measure(gold, np.array([5, 5, 5, 2, 2, 2])) == pytest.approx(1.0)
    assert hr.v_measure(gold, np.array([0, 1, 2, 0, 1, 2])) == pytest.approx(0.0, abs=1e-12)
    hom, com = 2 / 3, (2 / 3) * math.log(2) / math.log(3)  # worked by hand from the entropies
    assert hr.v_measure(gold, np.array([0, 0, 1, 1, 2, 2])) == pytest.approx(2 * hom * com / (hom + com))


def test_one_to_one_readout_on_constructed_example():
    # Greedy (largest cell first) would take cluster 0 -> role 0 (10) and then be stuck with 0; optimum is 18.
    assert list(hr.best_one_to_one(np.array([[10, 9], [9, 0]]))) == [1, 0]
    rng = np.random.default_rng(0)
    perm = rng.permutation(7)
    counts = rng.integers(0, 20, (7, 7))
    counts[np.arange(7), perm] += 100  # cluster k is mostly role perm[k]
    assert list(hr.best_one_to_one(counts)) == list(perm)
    assert list(hr.best_one_to_one(np.array([[5, 0], [9, 1], [0, 3]]))) == [-1, 0, 1]  # more clusters than roles


def sentence(words: str, roles: str) -> dict:
    return {"tokens": words.split(), "roles": roles.split()}


def test_window_lookup_backs_off_in_order():
    roles = ["AGENT", "PATIENT", "ACTION", "FUNCTION"]
    train = [sentence("the dog ran", "FUNCTION AGENT ACTION"),
             sentence("the dog was seen", "FUNCTION PATIENT FUNCTION ACTION"),
             sentence("the dog was seen", "FUNCTION PATIENT FUNCTION ACTION"),
             sentence("a cat ran", "FUNCTION AGENT ACTION")]
    window = hr.window_lookup(train, roles)
    # "the dog ran" is a seen 5-word window (AGENT), although "dog" is mostly PATIENT; "the mouse ran": unseen
    # window, its context (<s> the _ ran </s>) was seen as AGENT; "a dog was": only the word is left (PATIENT).
    assert list(window([sentence("the dog ran", "FUNCTION AGENT ACTION")])) == [3, 0, 2]
    assert window([sentence("the mouse ran", "FUNCTION AGENT ACTION")])[1] == 0
    assert window([sentence("a dog was", "FUNCTION PATIENT FUNCTION")])[1] == 1


def test_floors_on_a_tiny_benchmark(tiny_data):
    meta, sentences = hr.load_role_data(tiny_data)
    flat = {s: hr.flatten_split(sentences[s], meta) for s in hr.SPLITS}
    fl = hr.floors(sentences, meta, flat, ("dev_a", "test_a"))
    agent = meta["roles"].index("AGENT")
    for s in ("dev_a", "test_a"):  # on sd tokens the AGENT rule is the share of AGENT among them
        assert fl[s]["ambiguous as AGENT"]["sd"] == pytest.approx((flat[s]["gold"][flat[s]["sd"]] == agent).mean())
        assert set(fl[s]["window +-2"]) == {"accuracy", "sd", "V"}
    assert fl["test_a"]["lookup"]["sd"] < fl["test_a"]["ambiguous as AGENT"]["sd"]  # the swaps defeat the lookup


def test_read_from_inputs_and_codes(tiny_data):
    """The 'where the information sits' variants read the network's inputs, and train nothing."""
    meta, sentences = hr.load_role_data(tiny_data)
    data = hr.encode(sentences["dev_a"][:5], meta["vocabulary"])
    model, log = hr.train(sentences["train_a"][:100], meta["vocabulary"], replace(TINY, read_from="inputs"), 0)
    assert log == [] and torch.equal(model.W_x, hr.SPCN(model.codes, model.c_codes, model.c_mean, model.c_std,
                                                         model.cfg, 0).W_x), "read_inputs must not train"
    ids = torch.nn.utils.rnn.pad_sequence(data, batch_first=True)
    x, c = model.inputs(ids, torch.tensor([len(d) for d in data]))
    Z = hr.states(model, data)
    assert Z.shape == (sum(map(len, data)), x.shape[2] + c.shape[2])
    assert torch.equal(Z[:len(data[0])], torch.cat([x, c], 2)[0, :len(data[0])])
    model.cfg = replace(model.cfg, read_from="codes")
    assert torch.equal(hr.states(model, data), torch.cat([model.codes[d] for d in data]))


def test_word_classes_are_one_hot_and_label_free(tiny_data, monkeypatch):
    meta, sentences = hr.load_role_data(tiny_data)
    train = sentences["train_a"][:150]
    monkeypatch.setattr(hr, "Config", lambda: TINY)  # the class learner at test size
    classes = hr.word_classes(train, meta["vocabulary"], seed=0)
    assert classes.shape == (len(meta["vocabulary"]) + 1, TINY.hidden) and classes[0].sum() == 0
    assert torch.equal(classes[1:].sum(1), torch.ones(len(meta["vocabulary"])))  # one class per word type
    shuffled = [{**s, "roles": random.Random(i).sample(s["roles"], len(s["roles"]))} for i, s in enumerate(train)]
    assert torch.equal(classes, hr.word_classes(shuffled, meta["vocabulary"], seed=0)), "classes read no label"
    assert not set(hr.ATTEMPTS) & set(hr.parse_args([]).ablations), "the attempts are not in the default run"


def test_readout_refuses_test_splits():
    Z, gold, ids = torch.rand(50, 4), np.arange(50) % 7, torch.arange(50) % 5 + 1
    for split in ("dev_a", "test_a", "test_b", "test_deep"):
        with pytest.raises(ValueError, match="train_a only"):
            hr.fit_readout(split, Z, gold, ids, 7, TINY, seed=0)


@pytest.mark.parametrize("argv, flag", [(["--seeds", "a,b"], "--seeds"), (["--active", "0"], "--active"),
                                        (["--alphas", "0.5,2"], "--alphas"), (["--ablations", "no_x"], "--ablations"),
                                        (["--w-prior", "-1"], "--w-prior"), (["--seed", "1"], "--seed")])
def test_cli_rejects_bad_flags_by_name(argv, flag, capsys):
    with pytest.raises(SystemExit):
        hr.parse_args(argv)
    message = capsys.readouterr().err.strip().splitlines()[-1]  # the error line, not the usage that lists every flag
    assert flag in message, message


def test_smoke_run_returns_metrics(tiny_data, tmp_path, monkeypatch):
    fitted = []
    real_fit = hr.fit_readout
    monkeypatch.setattr(hr, "fit_readout", lambda split, *a, **k: fitted.append(split) or real_fit(split, *a, **k))
    res = hr.main(["--data-dir", str(tiny_data), "--out-dir", str(tmp_path / "run"), "--seeds", "0,1", "--quiet",
                   "--ablations", "no_spa", "--hidden", "16", "--bigru-results", str(tmp_path / "none.json")])
    assert fitted == ["train_a"] * 4, f"read-outs fitted on {fitted}: only train_a is allowed"
    for split in hr.EVAL_SPLITS:
        s = res["variants"]["hebbian"]["summary"][split]
        assert len(s[hr.HEADLINE]["accuracy"]["values"]) == 2 and set(s) >= {"1:1 K=7", "M:1 K=28", "V K=7", "probe"}
        assert s["probe"]["accuracy"]["mean"] > (0.6 if split == "dev_a" else 0.4), f"{split}: {s['probe']}"
        assert ("prior_moves_cluster" in s) == (split == "dev_a")  # measured on dev_a, for the model with SPA
        assert "prior_moves_cluster" not in res["variants"]["no_spa"]["summary"][split]
        assert res["floors"][split]["lookup"]["accuracy"] > 0.7, res["floors"][split]  # word identity alone
    recall = res["variants"]["hebbian"]["summary"]["dev_a"][hr.HEADLINE]["per_role"]
    assert sum(r["mean"] > 0.3 for r in recall.values()) >= 3, f"the clusters name too few roles: {recall}"
    on_disk = json.loads((tmp_path / "run" / "results.json").read_text())
    assert on_disk["variants"]["hebbian"]["summary"]["test_a"]["probe"] == \
        res["variants"]["hebbian"]["summary"]["test_a"]["probe"]
    before = (tmp_path / "run" / "results.json").read_bytes()
    with pytest.raises(SystemExit, match="--overwrite"):  # a second run does not replace the first one's results
        hr.main(["--data-dir", str(tiny_data), "--out-dir", str(tmp_path / "run"), "--seeds", "0", "--quiet"])
    assert (tmp_path / "run" / "results.json").read_bytes() == before
