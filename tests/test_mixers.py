"""The mixers of ema_lm.py and mixers.py: fast paths against their time loops, causality, and what is (not)
input-dependent."""
import pytest
import torch

import ema_lm as E
import mixers as M

def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("T", [1, 63, 64, 65, 300])
@pytest.mark.parametrize("chunk", [8, 16])
@pytest.mark.parametrize("per_position", [True, False], ids=["selective", "constant"])
def test_gated_scan_matches_time_loop(T, chunk, per_position):
    x = torch.randn(2, T, 8, requires_grad=True)
    shape = (2, T, 3, 8) if per_position else (1, 1, 3, 8)
    z = (4 * torch.randn(shape)).requires_grad_()  # alphas from ~0 to ALPHA_MAX: fast, slow and saturated
    ref = M.gated_scan_reference(x, z)
    out = M.gated_scan(x, z, chunk_size=chunk)
    assert out.shape == ref.shape == (2, T, 3, 8) and out.dtype == torch.float32
    assert rel(out, ref) <= 1e-5
    g = torch.randn_like(ref)
    for got, want in zip(torch.autograd.grad(out, (x, z), g), torch.autograd.grad(ref, (x, z), g)):
        assert rel(got, want) <= 1e-5


def test_gated_scan_reference_follows_the_stated_update():
    x = torch.tensor([[[1.0], [3.0]]])  # (B=1, T=2, D=1)
    z = torch.tensor([0.0, 2.0]).view(1, 2, 1, 1)
    a = M.ALPHA_MAX * torch.sigmoid(z.flatten())
    h = M.gated_scan_reference(x, z)[0, :, 0, 0]
    assert h[0].item() == pytest.approx(a[0].item())
    assert h[1].item() == pytest.approx(((1 - a[1]) * a[0] + a[1] * 3).item())


def test_gated_scan_is_finite_at_saturated_gates_and_refuses_unsafe_chunks():
    x = torch.randn(1, 40, 4)
    for value in (40.0, -40.0):  # every alpha at ALPHA_MAX (fastest decay), or ~0
        assert torch.isfinite(M.gated_scan(x, torch.full((1, 40, 3, 4), value))).all()
    with pytest.raises(ValueError, match="chunk_size 32"):
        M.gated_scan(x, torch.zeros(1, 40, 3, 4), chunk_size=32)


@pytest.mark.parametrize("mixer", E.MIXERS)
def test_no_logit_sees_the_future(mixer, make_model):
    model = make_model(mixer).eval()
    idx = torch.randint(0, 100, (1, 40))
    j = 23
    changed = idx.clone()
    changed[0, j] = (idx[0, j] + 1) % 100
    a, _ = model(idx)
    b, _ = model(changed)
    assert torch.equal(a[:, :j], b[:, :j]), f"{mixer}: a logit before position j changed when token j changed"
    assert not torch.allclose(a[:, j:], b[:, j:]), f"{mixer}: token j should influence positions >= j"


def test_ema_decays_are_constants_not_parameters_and_not_functions_of_x(make_model):
    traces = make_model("ema").blocks[0].traces
    assert isinstance(traces, E.FixedTraces) and not list(traces.parameters()), "ema traces must have no parameters"
    assert all(type(a) is float for a in E.ALPHAS) and E.ALPHAS == (0.5, 0.1, 0.02)
    # Coefficients independent of x <=> the map is linear in x: f(x1 + 2 x2) = f(x1) + 2 f(x2).
    x1, x2 = torch.randn(2, 50, 32), torch.randn(2, 50, 32)
    assert torch.allclose(traces(x1 + 2 * x2), traces(x1) + 2 * traces(x2), atol=1e-5)
    assert torch.allclose(traces(x1), E.ema_scan_reference(x1, E.ALPHAS), atol=1e-5)


def test_learned_decays_are_trained_constants_and_selective_ones_depend_on_x(make_model):
    learned = make_model("ema-learned").blocks[0].traces
    selective = make_model("selective").blocks[0].traces
    x1, x2 = torch.randn(2, 50, 32), torch.randn(2, 50, 32)
    assert learned.alpha_logit.requires_grad
    assert torch.allclose(learned(x1 + 2 * x2), learned(x1) + 2 * learned(x2), atol=1e-5)  # linear: no x in the decay
    assert not torch.allclose(selective(x1 + 2 * x2), selective(x1) + 2 * selective(x2), atol=1e-3)
    a = M.ALPHA_MAX * torch.sigmoid(learned.alpha_logit)
    assert a.max().item() == pytest.approx(0.9, rel=1e-4) and a.min().item() == pytest.approx(0.001, rel=1e-3)


def test_learned_decays_get_no_weight_decay(make_model, lm_argv):
    model = make_model("ema-learned")
    args = E.get_args(lm_argv)
    opt = E.make_optimizer(model, args.lr, args.weight_decay)
    no_decay = {id(p) for g in opt.param_groups if g["weight_decay"] == 0 for p in g["params"]}
    assert all(id(b.traces.alpha_logit) in no_decay for b in model.blocks)


def test_ema_parameters_are_unchanged_by_the_new_mixers(make_model):
    # The default model's parameter names and shapes (and so its init order and checkpoints) stay as before.
    names = [(k, tuple(v.shape)) for k, v in make_model("ema").state_dict().items()]
    block = [("ln_in.weight", (32,)), ("pred.weight", (32, 96)), ("mix.weight", (32, 128)),
             ("ln_mix.weight", (32,)), ("ffn.up.weight", (96, 32)), ("ffn.down.weight", (32, 96))]
    want = [("wte.weight", (100, 32))] + [(f"blocks.{i}.{k}", s) for i in range(2) for k, s in block]
    assert names == want + [("ln_f.weight", (32,)), ("head.weight", (100, 32))]


@pytest.mark.parametrize("mixer", ["ema-learned", "selective", "linattn", "gla"])
def test_comparison_mixers_get_their_block_s_ffn_and_train(tmp_path, mixer, lm_argv):
    args = E.get_args(lm_argv + ["--mixer", mixer])
    spen = mixer in E.SPEN_MIXERS  # the SPEN block's sparse 3D FFN, or GPT-2's dense 4D one
    assert (args.ffn, args.d_ffn) == (("sparse", 3 * 32) if spen else ("dense", 4 * 32))
    out = E.main(lm_argv + ["--mixer", mixer, "--max-steps", "4", "--eval-interval", "100", "--out-dir", str(tmp_path)])
    assert out["mixer"] == mixer and out["step"] == 4 and torch.isfinite(torch.tensor(out["val_loss"]))


def test_unknown_mixer_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown mixer 'gru'"):
        E.LanguageModel(E.ModelConfig(n_layer=1, d_model=8, d_ffn=8, vocab_size=10, mixer="gru"))


# ----------------------------------------------------------------------------- matrix-state mixers: linattn, gla


def grads(out: torch.Tensor, inputs: tuple, g: torch.Tensor) -> tuple:
    return torch.autograd.grad(out, inputs, g)


@pytest.mark.parametrize("T", [1, 15, 16, 17, 70])
@pytest.mark.parametrize("chunk", [4, 16])
@pytest.mark.parametrize("per_position", [True, False], ids=["gla", "linattn"])
def test_linear_attention_matches_time_loop(T, chunk, per_position):
    B, H, dk, dv = 2, 3, 4, 5
    q, k = torch.randn(B, H, T, dk, requires_grad=True), torch.randn(B, H, T, dk, requires_grad=True)
    v = torch.randn(B, H, T, dv, requires_grad=True)
    z = (3 * torch.randn(B if per_position else 1, H, T if per_position else 1, dk)).requires_grad_()
    ref = M.linear_attention_reference(q, k, v, torch.nn.functional.logsigmoid(z))
    out = M.linear_attention(q, k, v, torch.nn.functional.logsigmoid(z), chunk_size=chunk)
    assert out.shape == ref.shape == (B, H, T, dv)
    assert rel(out, ref) <= 1e-5
    g = torch.randn_like(ref)
    (*got, got_z), (*want, want_z) = grads(out, (q, k, v, z), g), grads(ref, (q, k, v, z), g)
    assert all(rel(a, b) <= 1e-5 for a, b in zip(got, want))
    if T == 1:  # the decay multiplies an empty state, so its exact gradient is 0
        assert got_z.abs().max() <= 1e-5 and want_z.abs().max() == 0
    else:
        assert rel(got_z, want_z) <= 1e-5


def test_linear_attention_reference_follows_the_stated_update():
    # One head, d_k = d_v = 1: S_0 = k_0 v_0, S_1 = g_1 S_0 + k_1 v_1, o_t = q_t S_t.
    q, k, v = (torch.tensor([a, b]).view(1, 1, 2, 1) for a, b in ((2.0, 3.0), (1.0, 5.0), (7.0, 11.0)))
    log_g = torch.log(torch.tensor([0.5, 0.25])).view(1, 1, 2, 1)
    o = M.linear_attention_reference(q, k, v, log_g).flatten()
    assert o.tolist() == pytest.approx([2 * 7, 3 * (0.25 * 7 + 5 * 11)])


def test_linear_attention_is_finite_at_the_decay_floor_and_refuses_unsafe_chunks():
    q, k, v = torch.randn(1, 1, 40, 4), torch.randn(1, 1, 40, 4), torch.randn(1, 1, 40, 4)
    out = M.linear_attention(q, k, v, torch.full((1, 1, 40, 4), -50.0))  # below the floor of 0.01 a step
    assert torch.isfinite(out).all()
    assert rel(out, M.linear_attention_reference(q, k, v, torch.full((1, 1, 40, 4), -50.0))) <= 1e-5
    with pytest.raises(ValueError, match="chunk_size 32"):
        M.linear_attention(q, k, v, torch.zeros(1, 1, 40, 4), chunk_size=32)


def test_linattn_decays_are_constants_and_gla_decays_depend_on_the_token(make_model):
    gla, linattn = (make_model(m).blocks[0].attn for m in ("gla", "linattn"))
    assert isinstance(gla, M.LinearAttention) and isinstance(linattn, M.LinearAttention)
    u1, u2 = torch.randn(2, 30, 32), torch.randn(2, 30, 32)
    assert linattn.log_decay(u1).shape == (1, 2, 1, 8) and torch.equal(linattn.log_decay(u1), linattn.log_decay(u2))
    assert linattn.decay_logit.requires_grad and linattn.decay_logit.dim() == 1  # learned, no weight decay
    assert gla.log_decay(u1).shape == (2, 2, 30, 8) and not torch.allclose(gla.log_decay(u1), gla.log_decay(u2))


def test_matrix_state_mixers_start_from_the_same_decays_near_one(make_model):
    gla, linattn = (make_model(m).blocks[0].attn for m in ("gla", "linattn"))
    g_const = linattn.log_decay(torch.zeros(1, 1, 32)).exp().flatten()
    g_input = gla.log_decay(torch.zeros(1, 1, 32)).exp().flatten()  # u = 0: only the bias is left
    assert torch.allclose(g_const, g_input, atol=1e-6)
    assert g_const.min().item() == pytest.approx(0.1, rel=1e-3)
    assert g_const.max().item() == pytest.approx(0.999, abs=1e-5)
    alphas = M.ALPHA_MAX * torch.sigmoid(M.initial_alpha_logits(3, 32)).flatten()  # ema-learned: a = 1 - decay
    assert (1 - g_const).min().item() == pytest.approx(alphas.min().item(), rel=1e-3)
    assert (1 - g_const).max().item() == pytest.approx(alphas.max().item(), rel=1e-3)


def test_state_sizes_follow_the_definitions():
    D, H, T = 64, 2, 128
    assert M.state_floats("ema", D, H, T) == M.state_floats("selective", D, H, T) == 3 * D
    assert M.state_floats("gla", D, H, T) == M.state_floats("linattn", D, H, T) == H * (D // (2 * H)) * (D // H)
    assert M.state_floats("attention", D, H, T) == 2 * T * D
    with pytest.raises(ValueError, match="unknown mixer"):
        M.state_floats("gru", D, H, T)
