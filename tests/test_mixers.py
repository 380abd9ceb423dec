"""ema_lm.py's four mixers: the gated scan against its time loop, causality, and what is (not) input-dependent."""
import pytest
import torch

import ema_lm as E

TINY = ["--n-layer", "2", "--d-model", "32", "--n-head", "2", "--block-size", "32", "--micro-batch", "4",
        "--batch-tokens", "128", "--warmup-steps", "2", "--eval-tokens", "2048", "--device", "cpu"]


def tiny_model(mixer: str, ffn: str = "sparse", seed: int = 0) -> E.SPEN:
    torch.manual_seed(seed)
    return E.SPEN(E.ModelConfig(n_layer=2, d_model=32, d_ffn=96, n_head=2, block_size=64, mixer=mixer,
                                ffn=ffn, vocab_size=100))


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("T", [1, 63, 64, 65, 300])
@pytest.mark.parametrize("chunk", [8, 16])
@pytest.mark.parametrize("per_position", [True, False], ids=["selective", "constant"])
def test_gated_scan_matches_time_loop(T, chunk, per_position):
    x = torch.randn(2, T, 8, requires_grad=True)
    shape = (2, T, 3, 8) if per_position else (1, 1, 3, 8)
    z = (4 * torch.randn(shape)).requires_grad_()  # alphas from ~0 to ALPHA_MAX: fast, slow and saturated
    ref = E.gated_scan_reference(x, z)
    out = E.gated_scan(x, z, chunk_size=chunk)
    assert out.shape == ref.shape == (2, T, 3, 8) and out.dtype == torch.float32
    assert rel(out, ref) <= 1e-5
    g = torch.randn_like(ref)
    for got, want in zip(torch.autograd.grad(out, (x, z), g), torch.autograd.grad(ref, (x, z), g)):
        assert rel(got, want) <= 1e-5


def test_gated_scan_reference_follows_the_stated_update():
    x = torch.tensor([[[1.0], [3.0]]])  # (B=1, T=2, D=1)
    z = torch.tensor([0.0, 2.0]).view(1, 2, 1, 1)
    a = E.ALPHA_MAX * torch.sigmoid(z.flatten())
    h = E.gated_scan_reference(x, z)[0, :, 0, 0]
    assert h[0].item() == pytest.approx(a[0].item())
    assert h[1].item() == pytest.approx(((1 - a[1]) * a[0] + a[1] * 3).item())


def test_gated_scan_is_finite_at_saturated_gates_and_refuses_unsafe_chunks():
    x = torch.randn(1, 40, 4)
    for value in (40.0, -40.0):  # every alpha at ALPHA_MAX (fastest decay), or ~0
        assert torch.isfinite(E.gated_scan(x, torch.full((1, 40, 3, 4), value))).all()
    with pytest.raises(ValueError, match="chunk_size 32"):
        E.gated_scan(x, torch.zeros(1, 40, 3, 4), chunk_size=32)


@pytest.mark.parametrize("mixer", E.MIXERS)
def test_no_logit_sees_the_future(mixer):
    model = tiny_model(mixer).eval()
    idx = torch.randint(0, 100, (1, 40))
    j = 23
    changed = idx.clone()
    changed[0, j] = (idx[0, j] + 1) % 100
    a, _ = model(idx)
    b, _ = model(changed)
    assert torch.equal(a[:, :j], b[:, :j]), f"{mixer}: a logit before position j changed when token j changed"
    assert not torch.allclose(a[:, j:], b[:, j:]), f"{mixer}: token j should influence positions >= j"


def test_ema_decays_are_constants_not_parameters_and_not_functions_of_x():
    traces = tiny_model("ema").blocks[0].traces
    assert isinstance(traces, E.FixedTraces) and not list(traces.parameters()), "ema traces must have no parameters"
    assert all(type(a) is float for a in E.ALPHAS) and E.ALPHAS == (0.5, 0.1, 0.02)
    # Coefficients independent of x <=> the map is linear in x: f(x1 + 2 x2) = f(x1) + 2 f(x2).
    x1, x2 = torch.randn(2, 50, 32), torch.randn(2, 50, 32)
    assert torch.allclose(traces(x1 + 2 * x2), traces(x1) + 2 * traces(x2), atol=1e-5)
    assert torch.allclose(traces(x1), E.ema_scan_reference(x1, E.ALPHAS), atol=1e-5)


def test_learned_decays_are_trained_constants_and_selective_ones_depend_on_x():
    learned = tiny_model("ema-learned").blocks[0].traces
    selective = tiny_model("selective").blocks[0].traces
    x1, x2 = torch.randn(2, 50, 32), torch.randn(2, 50, 32)
    assert learned.alpha_logit.requires_grad
    assert torch.allclose(learned(x1 + 2 * x2), learned(x1) + 2 * learned(x2), atol=1e-5)  # linear: no x in the decay
    assert not torch.allclose(selective(x1 + 2 * x2), selective(x1) + 2 * selective(x2), atol=1e-3)
    a = E.ALPHA_MAX * torch.sigmoid(learned.alpha_logit)
    assert a.max().item() == pytest.approx(0.9, rel=1e-4) and a.min().item() == pytest.approx(0.001, rel=1e-3)


def test_learned_decays_get_no_weight_decay():
    model = tiny_model("ema-learned")
    opt = E.make_optimizer(model, E.get_args(TINY))
    no_decay = {id(p) for g in opt.param_groups if g["weight_decay"] == 0 for p in g["params"]}
    assert all(id(b.traces.alpha_logit) in no_decay for b in model.blocks)


def test_ema_parameters_are_unchanged_by_the_new_mixers():
    # The default model's parameter names and shapes (and so its init order and checkpoints) stay as before.
    names = [(k, tuple(v.shape)) for k, v in tiny_model("ema").state_dict().items()]
    block = [("ln_in.weight", (32,)), ("pred.weight", (32, 96)), ("mix.weight", (32, 128)),
             ("ln_mix.weight", (32,)), ("ffn.up.weight", (96, 32)), ("ffn.down.weight", (32, 96))]
    want = [("wte.weight", (100, 32))] + [(f"blocks.{i}.{k}", s) for i in range(2) for k, s in block]
    assert names == want + [("ln_f.weight", (32,)), ("head.weight", (100, 32))]


@pytest.mark.parametrize("mixer", ["ema-learned", "selective"])
def test_new_mixers_default_to_the_spen_ffn_and_train(tmp_path, mixer):
    args = E.get_args(TINY + ["--mixer", mixer])
    assert args.ffn == "sparse" and args.d_ffn == 3 * 32
    out = E.main(TINY + ["--mixer", mixer, "--max-steps", "4", "--eval-interval", "100", "--out-dir", str(tmp_path)])
    assert out["mixer"] == mixer and out["step"] == 4 and torch.isfinite(torch.tensor(out["val_loss"]))


def test_unknown_mixer_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown mixer 'gru'"):
        E.SPEN(E.ModelConfig(n_layer=1, d_model=8, d_ffn=8, vocab_size=10, mixer="gru"))
