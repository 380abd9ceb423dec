"""ema_lm.py: the scan against its definition, causality, parameter counts, checkpoints, errors, a smoke run."""
import json

import pytest
import torch

import ema_lm as E

@pytest.mark.parametrize("T", [1, 63, 64, 65, 1000])
@pytest.mark.parametrize("chunk", [16, 64, 100])
def test_chunked_scan_matches_time_loop(T, chunk):
    x = torch.randn(2, T, 8, requires_grad=True)
    ref = E.ema_scan_reference(x, E.ALPHAS)
    out = E.ema_scan(x, E.ALPHAS, chunk_size=chunk)
    assert out.shape == (2, T, len(E.ALPHAS), 8)
    assert ((out - ref).norm() / ref.norm()).item() <= 1e-5
    g = torch.randn_like(ref)
    (gx_ref,) = torch.autograd.grad(ref, x, g)
    (gx,) = torch.autograd.grad(out, x, g)
    assert ((gx - gx_ref).norm() / gx_ref.norm()).item() <= 1e-5


def test_reference_follows_the_stated_update():
    # h_0 = a x_0, h_1 = (1 - a) h_0 + a x_1, for every alpha.
    x = torch.tensor([[[1.0], [3.0]]])  # (B=1, T=2, D=1)
    h = E.ema_scan_reference(x, E.ALPHAS)[0, :, :, 0]  # (T, S)
    for s, a in enumerate(E.ALPHAS):
        assert h[0, s].item() == pytest.approx(a)
        assert h[1, s].item() == pytest.approx((1 - a) * a + a * 3)


@pytest.mark.parametrize("mixer,ffn", [("ema", "sparse"), ("ema", "dense"), ("attention", "dense"),
                                       ("attention", "sparse")])
def test_no_logit_sees_the_future(mixer, ffn, make_model):
    model = make_model(mixer, ffn).eval()
    idx = torch.randint(0, 100, (1, 40))
    j = 23
    changed = idx.clone()
    changed[0, j] = (idx[0, j] + 1) % 100
    a, _ = model(idx)
    b, _ = model(changed)
    assert torch.equal(a[:, :j], b[:, :j]), "a logit before position j changed when token j changed"
    assert not torch.allclose(a[:, j:], b[:, j:]), "token j should influence positions >= j"


def sparse_ffn_reference(ffn: E.FFN, x: torch.Tensor) -> torch.Tensor:
    """One token at a time: keep the k largest pre-activations, GELU them, zero the rest, map down."""
    out = []
    for token in x.reshape(-1, x.shape[-1]):
        a = ffn.up.weight @ token  # (H,)
        hidden = torch.zeros_like(a)
        keep = a.topk(ffn.k).indices
        hidden[keep] = torch.nn.functional.gelu(a[keep])
        out.append(ffn.down.weight @ hidden)
    return torch.stack(out).view(x.shape)


def test_sparse_ffn_keeps_the_top_six_percent_of_each_token():
    torch.manual_seed(0)
    ffn = E.FFN(E.ModelConfig(d_model=16, d_ffn=200, ffn="sparse"))
    x = torch.randn(3, 5, 16)
    assert ffn.k == 12, "round(0.06 x 200)"
    assert torch.allclose(ffn(x), sparse_ffn_reference(ffn, x), atol=1e-6)
    dense = E.FFN(E.ModelConfig(d_model=16, d_ffn=200, ffn="dense"))
    dense.load_state_dict(ffn.state_dict())
    assert not torch.allclose(dense(x), ffn(x), atol=1e-3), "sparse must differ from dense"


def test_causal_self_attention_matches_an_explicit_softmax():
    torch.manual_seed(0)
    attn = E.CausalSelfAttention(16, 4)
    u = torch.randn(2, 7, 16)
    q, k, v = attn.qkv(u).split(16, -1)
    y = torch.zeros(2, 7, 16)
    for t in range(7):
        for h in range(4):
            c = slice(4 * h, 4 * h + 4)
            w = torch.softmax(torch.einsum("bd,bjd->bj", q[:, t, c], k[:, :t + 1, c]) / 2.0, -1)  # sqrt(4) = 2
            y[:, t, c] = torch.einsum("bj,bjd->bd", w, v[:, :t + 1, c])
    assert torch.allclose(attn(u), attn.proj(y), atol=1e-5)


def test_learning_rate_schedule_end_points():
    lr, warmup, steps = 1e-3, 10, 100
    at = [E.lr_at(s, lr, warmup, steps, 0.1) for s in range(steps + 1)]
    assert at[0] == pytest.approx(lr / warmup) and at[warmup - 1] == pytest.approx(lr)
    assert at[warmup] == pytest.approx(lr) and at[steps] == pytest.approx(0.1 * lr)
    assert all(a >= b for a, b in zip(at[warmup:], at[warmup + 1:])), "cosine decay never rises"
    assert E.lr_at(10 * steps, lr, warmup, steps, 0.1) == pytest.approx(0.1 * lr), "flat after max_steps"


@pytest.fixture(scope="module")
def odd_run(tmp_path_factory):
    """A finished tiny run whose model flags all differ from the defaults (issue 22: a run folder is enough)."""
    out = tmp_path_factory.mktemp("odd")
    E.main(["--mixer", "attention", "--n-layer", "1", "--d-model", "48", "--n-head", "3", "--block-size", "24",
            "--depth-mixing", "dwa", "--micro-batch", "2", "--batch-tokens", "48", "--warmup-steps", "1",
            "--eval-tokens", "96", "--max-steps", "2", "--device", "cpu", "--out-dir", str(out)])
    return out


def test_sample_and_eval_only_need_only_the_run_folder(odd_run):
    out = E.main(["--sample", "--prompt", "the company said", "--sample-tokens", "5", "--device", "cpu",
                  "--out-dir", str(odd_run)])
    assert out["sample"].startswith("the company said") and len(out["sample"]) > len("the company said")
    scores = E.main(["--eval-only", "--device", "cpu", "--out-dir", str(odd_run)])
    assert scores["classes"]["all"]["count"] == 96 and scores["step"] == 2, "the run's own data and checkpoint"
    agreeing = E.main(["--eval-only", "--n-layer", "1", "--mixer", "attention", "--device", "cpu", "--out-dir",
                       str(odd_run)])
    assert agreeing["val_loss"] == scores["val_loss"]


def test_sample_refuses_flags_that_contradict_the_run(odd_run):
    with pytest.raises(SystemExit) as err:
        E.main(["--sample", "--n-layer", "3", "--d-model", "48", "--mixer", "ema", "--device", "cpu",
                "--out-dir", str(odd_run)])
    msg = str(err.value)
    assert "--n-layer 3 (given) vs 1 (the run)" in msg and "--mixer ema (given) vs attention (the run)" in msg
    assert "--d-model" not in msg, "a flag that agrees with the run is not listed"


@pytest.mark.parametrize("mixer,low,high", [("ema", 126e6, 134e6), ("attention", 124e6 * 0.99, 124e6 * 1.01)])
def test_paper_preset_parameter_counts(mixer, low, high):
    args = E.get_args(["--preset", "paper", "--mixer", mixer])
    cfg = E.ModelConfig(n_layer=args.n_layer, d_model=args.d_model, d_ffn=args.d_ffn, n_head=args.n_head,
                        block_size=args.block_size, mixer=mixer, ffn=args.ffn)
    with torch.device("meta"):
        n = E.LanguageModel(cfg).num_params()
    assert low <= n <= high, f"{mixer}: {n / 1e6:.2f}M parameters"


def test_smoke_run_trains_and_reports(tmp_path, lm_argv):
    out = E.main(lm_argv + ["--max-steps", "30", "--eval-interval", "30", "--lr", "1e-2", "--out-dir", str(tmp_path)])
    for key in ("val_loss", "val_ppl", "params", "tokens_seen", "seconds"):
        assert key in out
    losses = [json.loads(line)["train_loss"] for line in open(tmp_path / "metrics.jsonl")]
    assert sum(losses[-5:]) / 5 < losses[0] - 1.0, f"loss did not fall: {losses[0]:.2f} -> {losses[-5:]}"
    assert out["tokens_seen"] == 30 * 128
    assert json.loads((tmp_path / "final.json").read_text())["val_loss"] == out["val_loss"]


@pytest.mark.parametrize("mixer", ["ema", "attention"])
def test_resume_is_exact(tmp_path, mixer, lm_argv):
    common = lm_argv + ["--mixer", mixer, "--max-steps", "6", "--eval-interval", "100"]
    straight = E.main(common + ["--out-dir", str(tmp_path / "a")])
    E.main(common + ["--out-dir", str(tmp_path / "b"), "--steps-this-run", "3"])
    resumed = E.main(common + ["--out-dir", str(tmp_path / "b"), "--resume"])
    assert resumed["step"] == straight["step"] == 6
    assert resumed["val_loss"] == straight["val_loss"]
    a = torch.load(tmp_path / "a" / "ckpt.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "b" / "ckpt.pt", weights_only=False)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


# A tiny run's training losses and final validation loss as ema_lm.py computed them before its training loop was
# rebuilt for torchrun and interrupts (2-core x86 CPU, torch 2.13). On that machine the new loop reproduces them
# bit for bit; the tolerance only allows for another CPU's rounding. Reordering the data, rescaling the loss or
# changing the schedule moves them by far more.
PINNED_LOSSES = [10.819249629974365, 10.796506881713867, 10.784034729003906, 10.703860759735107, 10.71572208404541,
                 10.67039966583252]
PINNED_VAL_LOSS = 10.624118868261576


def test_training_numerics_are_pinned(tmp_path, lm_argv):
    """At one CPU thread, as the README's numbers: the thread count changes the order of float sums."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = E.main(lm_argv + ["--batch-tokens", "256", "--max-steps", "6", "--eval-interval", "3", "--out-dir",
                                str(tmp_path)])  # two micro-batches a step
    finally:
        torch.set_num_threads(threads)
    losses = [json.loads(line)["train_loss"] for line in open(tmp_path / "metrics.jsonl")]
    assert losses == pytest.approx(PINNED_LOSSES, abs=1e-5)
    assert out["val_loss"] == pytest.approx(PINNED_VAL_LOSS, abs=1e-5)


def test_checkpoint_round_trip_gives_identical_logits(tmp_path, make_model):
    model = make_model("ema")
    path = tmp_path / "ckpt.pt"
    E.save_checkpoint(path, dict(model=model.state_dict(), model_config=E.asdict(model.cfg)))
    assert not list(tmp_path.glob(".ckpt.pt.*")), "no temporary file is left beside the checkpoint"
    clone = make_model("ema", seed=1)
    clone.load_state_dict(E.load_checkpoint(path, model.cfg)["model"])
    idx = torch.randint(0, 100, (2, 20))
    assert torch.equal(model(idx)[0], clone(idx)[0])


def test_checkpoint_from_another_config_is_a_clear_error(tmp_path, make_model):
    model = make_model("ema")
    path = tmp_path / "ckpt.pt"
    E.save_checkpoint(path, dict(model=model.state_dict(), model_config=E.asdict(model.cfg)))
    other = E.ModelConfig(**{**E.asdict(model.cfg), "d_model": 48})
    with pytest.raises(SystemExit, match="another model config.*d_model 32 .checkpoint. vs 48"):
        E.load_checkpoint(path, other)


def test_non_finite_loss_stops_and_keeps_the_last_checkpoint(tmp_path, monkeypatch, lm_argv):
    args = lm_argv + ["--max-steps", "6", "--eval-interval", "2", "--checkpoint-interval", "2",
                      "--out-dir", str(tmp_path)]
    real_forward = E.LanguageModel.forward
    calls = {"n": 0}

    def poisoned(self, idx, targets=None):
        logits, loss = real_forward(self, idx, targets)
        if self.training:
            calls["n"] += 1
            if calls["n"] > 3:  # one micro-batch per step: steps 1-3 are fine, step 4 is not
                loss = loss * float("nan")
        return logits, loss

    monkeypatch.setattr(E.LanguageModel, "forward", poisoned)
    with pytest.raises(RuntimeError, match="non-finite training loss.*last good checkpoint"):
        E.main(args)
    assert torch.load(tmp_path / "ckpt.pt", weights_only=False)["step"] == 2


def test_missing_data_names_the_prepare_command(tmp_path, monkeypatch, lm_argv):
    import data.common
    monkeypatch.setattr(data.common, "DATA_DIR", tmp_path)
    with pytest.raises(SystemExit, match=r"python data/c4/prepare\.py"):
        E.main(lm_argv + ["--dataset", "c4", "--out-dir", str(tmp_path / "run")])


def test_scan_in_bfloat16_stays_within_one_percent_values_and_gradients():
    x = torch.randn(2, 300, 16, requires_grad=True)
    xb = x.detach().bfloat16().requires_grad_()
    ref, out = E.ema_scan_reference(x, E.ALPHAS), E.ema_scan(xb, E.ALPHAS)
    assert out.dtype == torch.bfloat16 and ((out.float() - ref).norm() / ref.norm()).item() <= 1e-2
    g = torch.randn_like(ref)
    (gx_ref,), (gx,) = torch.autograd.grad(ref, x, g), torch.autograd.grad(out, xb, g.bfloat16())
    assert gx.dtype == torch.bfloat16 and ((gx.float() - gx_ref).norm() / gx_ref.norm()).item() <= 1e-2


def test_scan_chunk_matrices_are_aligned_and_carries_match_a_loop():
    M, w_last, r = E.ema_chunk_matrices(E.ALPHAS, 64, torch.device("cpu"))
    assert M.shape == (64 * 3, 72) and M.shape[1] % 8 == 0, "K = C + S padded to a multiple of 8"
    own = torch.randn(2, 11, 3, 5)
    carry, loop = E.chunk_carries(own, r), torch.zeros_like(own)
    for n in range(1, 11):
        loop[:, n] = r.view(3, 1) * loop[:, n - 1] + own[:, n - 1]
    assert torch.allclose(carry, loop, atol=1e-6)


def test_scan_compiles_without_graph_breaks():
    fn = torch.compile(lambda x: E.ema_scan(x, E.ALPHAS, 16), fullgraph=True, backend="eager")
    x = torch.randn(1, 40, 4)
    assert torch.allclose(fn(x), E.ema_scan_reference(x, E.ALPHAS), atol=1e-6)


def test_a_failing_compiler_falls_back_to_eager(monkeypatch, capsys, make_model):
    def broken_compile(model, dynamic=None):
        assert dynamic is False  # static shapes: a new length compiles anew instead of turning symbolic
        def fail(*args, **kwargs):
            raise RuntimeError("inductor exploded")
        return fail

    monkeypatch.setattr(E.torch, "compile", broken_compile)
    model = make_model("ema")
    assert E.compiled_or_eager(model, 2, "cpu", E.nullcontext()) is model
    assert "torch.compile failed (RuntimeError: inductor exploded)" in capsys.readouterr().out
    assert all(p.grad is None for p in model.parameters())
