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
    if mixer == "longconv":  # its FFT mixes every position at rounding level (~1e-7), never more
        assert torch.allclose(a[:, :j], b[:, :j], rtol=0, atol=1e-5), f"{mixer}: a logit before j moved past rounding"
    else:
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


# ----------------------------------------------------------------------------- fixed-coefficient mixers (issue 25)
# Every test below runs in well under a second; together about 3 s on one CPU thread.

NEW_VECTOR = ["ema-long", "ema-wide", "cumavg", "legs", "longconv"]
NEW_MATRIX = ["linattn-paper", "linattn-long", "linattn-one"]


def vector_reference(mixer: str, module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The slow, one-step-at-a-time form of each new vector mixer."""
    if mixer in ("ema-long", "ema-wide"):
        return M.gated_scan_reference(x, module.alpha_logit.view(1, 1, module.S, module.D))
    if mixer == "cumavg":
        return M.cumulative_average_reference(x)
    if mixer == "legs":
        return M.legs_reference(x, module.S)
    return M.long_conv_reference(x, module.filter.view(module.D, M.LONGCONV_MAX))


def matrix_reference(module: M.LinearAttention, u: torch.Tensor) -> torch.Tensor:
    """LinearAttention.forward with the time loop in place of the chunked form."""
    B, T, D = u.shape
    q, k, v = module.heads(module.q(u)) * module.dk ** -0.5, module.heads(module.k(u)), module.heads(module.v(u))
    o = torch.nn.functional.layer_norm(M.linear_attention_reference(q, k, v, module.log_decay(u)), (module.dv,))
    return module.proj(o.transpose(1, 2).reshape(B, T, D))


@pytest.mark.parametrize("T", [1, 17, 70])
@pytest.mark.parametrize("mixer", NEW_VECTOR)
def test_new_vector_mixers_match_their_time_loops_in_values_and_gradients(mixer, T):
    torch.manual_seed(0)
    module = M.TRACE_MIXERS[mixer](8)
    if mixer == "longconv":  # random taps, not only the smooth EMA start
        module.filter.data.normal_()
    x = torch.randn(2, T, 8, requires_grad=True)
    out, ref = module(x), vector_reference(mixer, module, x)
    assert out.shape == ref.shape == (2, T, module.S, 8) and out.dtype == torch.float32
    assert rel(out, ref) <= 1e-5
    params = [x] + [p for p in module.parameters()]
    g = torch.randn_like(ref)
    for got, want in zip(torch.autograd.grad(out, params, g), torch.autograd.grad(ref, params, g)):
        assert rel(got, want) <= 1e-5


@pytest.mark.parametrize("mixer", NEW_MATRIX)
def test_fixed_decay_linear_attention_matches_its_time_loop(mixer):
    torch.manual_seed(0)
    module = M.MATRIX_MIXERS[mixer](32, 2)
    u = torch.randn(2, 37, 32, requires_grad=True)
    out, ref = module(u), matrix_reference(module, u)
    assert rel(out, ref) <= 1e-5
    params = [u] + list(module.parameters())
    g = torch.randn_like(ref)
    for got, want in zip(torch.autograd.grad(out, params, g), torch.autograd.grad(ref, params, g)):
        assert rel(got, want) <= 1e-4


@pytest.mark.parametrize("mixer", NEW_VECTOR + NEW_MATRIX)
def test_new_mixers_under_bf16_autocast_agree_with_float32(mixer):
    torch.manual_seed(0)
    module = M.TRACE_MIXERS[mixer](32) if mixer in NEW_VECTOR else M.MATRIX_MIXERS[mixer](32, 2)
    x = torch.randn(2, 40, 32).bfloat16().float().requires_grad_()  # inputs exactly representable in bf16
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = module(x.bfloat16() if mixer in NEW_VECTOR else x)
    high = module(x)
    assert low.dtype == (torch.bfloat16 if mixer in NEW_VECTOR else low.dtype)
    assert rel(low.float(), high) <= 3e-2  # bf16 keeps 8 bits: about 0.4% a rounding, the scans run in float32
    g = torch.randn_like(high)
    (g_low,), (g_high,) = torch.autograd.grad(low.float(), x, g), torch.autograd.grad(high, x, g)
    assert rel(g_low, g_high) <= 5e-2


@pytest.mark.parametrize("mixer", NEW_VECTOR + NEW_MATRIX)
def test_new_mixers_are_causal(mixer):
    torch.manual_seed(0)
    module = M.TRACE_MIXERS[mixer](8) if mixer in NEW_VECTOR else M.MATRIX_MIXERS[mixer](16, 2)
    x = torch.randn(1, 50, 8 if mixer in NEW_VECTOR else 16)
    y = x.clone()
    y[0, 31] += 1.0
    a, b = module(x), module(y)
    if mixer == "longconv":  # FFT rounding spreads ~1e-7 of every input over every position: causal to that level
        assert (a[:, :31] - b[:, :31]).abs().max() < 1e-5 * a.abs().max()
    else:
        assert torch.equal(a[:, :31], b[:, :31]), f"{mixer}: an output before position 31 changed with input 31"
    assert not torch.allclose(a[:, 31:], b[:, 31:]), f"{mixer}: input 31 should reach positions >= 31"


@pytest.mark.parametrize("mixer", NEW_VECTOR)
def test_fixed_coefficient_vector_mixers_are_linear_in_their_input(mixer):
    # Coefficients independent of the input <=> f(x1 + 2 x2) = f(x1) + 2 f(x2) (no gate, no query).
    module = M.TRACE_MIXERS[mixer](8)
    x1, x2 = torch.randn(2, 30, 8), torch.randn(2, 30, 8)
    assert torch.allclose(module(x1 + 2 * x2), module(x1) + 2 * module(x2), atol=1e-4)
    learned = [n for n, p in module.named_parameters()]
    assert learned == (["filter"] if mixer == "longconv" else []), f"{mixer}: only longconv learns its coefficients"


def test_long_traces_are_the_learned_mixers_starting_timescales_held_fixed(make_model):
    long3, wide = M.TRACE_MIXERS["ema-long"](32), M.TRACE_MIXERS["ema-wide"](32)
    assert torch.equal(long3.alpha_logit, M.initial_alpha_logits(3, 32))  # ema-learned's start, frozen
    a = M.ALPHA_MAX * torch.sigmoid(wide.alpha_logit)  # (32 traces, D): trace s decays like linattn's key channel s
    g_long = M.MATRIX_MIXERS["linattn-long"](64, 1).fixed_log_g.exp()  # d_k = 32 at D = 64, one head
    assert torch.allclose(a[:, 0], 1 - g_long, atol=1e-5)
    assert torch.equal(a[:, 0], a[:, 5]), "every channel gets the same 32 timescales"
    ema = make_model("ema-long").blocks[0].traces
    x = torch.randn(2, 30, 32)
    assert torch.allclose(ema(x), make_model("ema-learned").blocks[0].traces(x), atol=1e-6)


def test_fixed_linear_attention_starts_as_linattn_and_its_decays_are_the_stated_constants():
    torch.manual_seed(0)
    learned = M.MATRIX_MIXERS["linattn"](32, 2)
    torch.manual_seed(0)
    frozen = M.MATRIX_MIXERS["linattn-long"](32, 2)
    u = torch.randn(2, 20, 32)
    assert torch.allclose(learned(u), frozen(u), atol=1e-6), "linattn-long is linattn's start, frozen"
    assert not any("decay" in n for n, _ in frozen.named_parameters()) and frozen.fixed_log_g.requires_grad is False
    paper = M.MATRIX_MIXERS["linattn-paper"](48, 2).log_decay(u).exp().flatten()  # d_k = 12: thirds of 4
    assert paper.tolist() == pytest.approx([0.5] * 4 + [0.9] * 4 + [0.98] * 4 + [0.5] * 4 + [0.9] * 4 + [0.98] * 4)
    assert M.MATRIX_MIXERS["linattn-one"](32, 2).log_decay(u).exp().flatten().tolist() == pytest.approx([0.995] * 16)


def test_cumavg_is_the_running_mean():
    x = torch.randn(3, 25, 4)
    out = M.CumulativeAverage(4)(x)[:, :, 0]
    assert torch.allclose(out[:, 9], x[:, :10].mean(1), atol=1e-6)
    assert torch.allclose(out[:, -1], x.mean(1), atol=1e-6)


def test_legs_projects_the_past_onto_legendre_polynomials():
    # HiPPO-LegS: c_n(t) ~ the n-th coefficient of u over [0, t] in the orthonormal shifted-Legendre basis, so a
    # constant gives (u, 0, 0, ...) and a smooth input is rebuilt at t from sum_n c_n sqrt(2n+1) P_n(1) = sum ...
    T, N = 400, 8
    const = M.legs_reference(torch.full((1, T, 1), 2.0), N)[0, -1, :, 0]
    assert const[0].item() == pytest.approx(2.0, rel=1e-2) and const[1:].abs().max().item() < 2e-2
    s = torch.linspace(0, 1, T)
    smooth = (torch.sin(3 * s) + s ** 2).view(1, T, 1)
    c = M.LegS(1, N)(smooth)[0, -1, :, 0]
    rebuilt = (c * torch.sqrt(2 * torch.arange(N) + 1.0)).sum()  # P_n(1) = 1
    assert rebuilt.item() == pytest.approx(smooth[0, -1, 0].item(), abs=2e-2)
    M_, b = M.legs_transitions(N, 5)
    assert M_.shape == (5, N, N) and b.shape == (5, N)
    assert abs(M_[0, 0, 0] - 1 / 3) < 1e-12 and abs(b[0, 0] - 2 / 3) < 1e-12  # bilinear at t = 1: (1 - 1/2)/(1 + 1/2)


def test_longconv_starts_as_one_long_ema_per_channel_and_refuses_contexts_past_its_taps():
    module = M.LongConv(8)
    x = torch.randn(2, 50, 8)
    a = M.long_alphas(8)  # channel d: alpha a_d
    z = torch.logit(a / M.ALPHA_MAX).view(1, 1, 1, 8)
    assert torch.allclose(module(x), M.gated_scan_reference(x, z), atol=1e-5)
    with pytest.raises(ValueError, match="longconv stores 1024 taps, the context has 1025"):
        module(torch.randn(1, M.LONGCONV_MAX + 1, 8))


def test_state_sizes_of_the_new_mixers():
    D, H, T = 64, 1, 64
    assert M.state_floats("ema-long", D, H, T) == 3 * D and M.state_floats("cumavg", D, H, T) == D
    assert M.state_floats("ema-wide", D, H, T) == M.state_floats("legs", D, H, T) == 32 * D == \
        M.state_floats("linattn", D, H, T) == M.state_floats("linattn-paper", D, H, T) == 2048
    assert M.state_floats("longconv", D, H, T) == T * D
    for mixer in NEW_VECTOR:
        assert M.TRACE_MIXERS[mixer](D).S * D <= M.state_floats(mixer, D, H, T)
