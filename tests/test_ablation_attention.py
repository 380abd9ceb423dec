"""ablation_attention.py: the two control rows, causality, what attn-current can
see, the trace attention against its slow reference, and a smoke run of every row."""
import json

import pytest
import torch

import ablation_attention as A
import ema_lm as E

ROWS = list(A.ROWS)

TINY = ["--n-layer", "2", "--d-model", "32", "--n-head", "2", "--n-pred-head", "4", "--block-size", "32",
        "--micro-batch", "4", "--batch-tokens", "128", "--warmup-steps", "2", "--eval-tokens", "1024",
        "--device", "cpu"]


def tiny_cfg(row: str, **kw) -> A.ModelConfig:
    args = A.get_args(TINY)
    cfg = A.model_config(args, row)
    cfg.vocab_size, cfg.block_size = 100, 64
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg


@pytest.mark.parametrize("row", ["linear", "transformer"])
def test_control_rows_are_ema_lm_models(row):
    # Same seed -> the same parameters (names, shapes, values) and the same logits as ema_lm.py's model.
    cfg = tiny_cfg(row)
    torch.manual_seed(0)
    ours = A.LanguageModel(cfg)
    torch.manual_seed(0)
    shared = ("vocab_size", "n_layer", "d_model", "d_ffn", "ffn_active", "n_head", "block_size", "mixer", "ffn")
    theirs = E.LanguageModel(E.ModelConfig(**{k: getattr(cfg, k) for k in shared}))
    a, b = ours.state_dict(), theirs.state_dict()
    assert list(a) == list(b), f"parameter names differ: {set(a) ^ set(b)}"
    for k in a:
        assert torch.equal(a[k], b[k]), f"{row}: {k} initialised differently from ema_lm.py"
    idx = torch.randint(0, 100, (2, 40))
    assert torch.equal(ours(idx)[0], theirs(idx)[0]), f"{row}: logits differ from ema_lm.py's"


@pytest.mark.parametrize("row", ROWS)
def test_no_logit_sees_the_future(row):
    torch.manual_seed(0)
    model = A.LanguageModel(tiny_cfg(row)).eval()
    idx = torch.randint(0, 100, (1, 40))
    for j in (0, 17, 39):
        changed = idx.clone()
        changed[0, j] = (idx[0, j] + 1) % 100
        a, b = model(idx)[0], model(changed)[0]
        assert torch.equal(a[:, :j], b[:, :j]), f"{row}: a logit before position {j} changed when token {j} changed"
        assert not torch.allclose(a[:, j:], b[:, j:]), f"{row}: token {j} should influence positions >= {j}"


def trace_attention(history: bool, D: int = 32) -> A.TraceAttention:
    torch.manual_seed(0)
    m = A.TraceAttention(A.ModelConfig(d_model=D, n_pred_head=4), history=history)
    for p in m.parameters():  # larger weights than the 0.02 init, so that the softmax is far from uniform
        torch.nn.init.normal_(p, std=0.5)
    return m


@pytest.mark.parametrize("history", [False, True])
def test_trace_attention_matches_reference(history):
    m = trace_attention(history)
    h = torch.randn(2, 19, len(A.ALPHAS), 32)
    h[:, 0] = 0  # row 0 holds h_{-1} = 0
    fast, slow = m(h), A.trace_attention_reference(m, h)
    assert torch.allclose(fast, slow, atol=1e-5), f"max difference {(fast - slow).abs().max():.2e}"
    assert torch.equal(fast[:, 0], torch.zeros_like(fast[:, 0])), "zero traces before the sequence must predict 0"


def test_attn_current_depends_only_on_traces_at_t_minus_1():
    m = trace_attention(history=False)
    h = torch.randn(2, 12, len(A.ALPHAS), 32)
    h[1, 9] = h[0, 4]  # equal traces at two different positions of two sequences
    out = m(h)
    assert torch.allclose(out[1, 9], out[0, 4], atol=1e-6), "equal traces at t-1 must give equal predictions"
    other = torch.randn_like(h)
    other[:, 5] = h[:, 5]  # everything else changed, the traces at row 5 (= h_{t-1} for t = 5) kept
    assert torch.allclose(m(other)[:, 5], out[:, 5], atol=1e-6), "attn-current saw traces other than h_{t-1}"


def test_attn_history_sees_the_past_but_not_the_future():
    m = trace_attention(history=True)
    h = torch.randn(1, 12, len(A.ALPHAS), 32)
    out = m(h)
    later, earlier = h.clone(), h.clone()
    later[:, 8:] += 1.0  # rows > 7: traces at t' >= 7
    earlier[:, 2] += 1.0  # row 2: traces at t' = 1
    assert torch.equal(m(later)[:, :8], out[:, :8]), "attn-history at t saw traces at t' >= t"
    assert not torch.allclose(m(earlier)[:, 7], out[:, 7]), "attn-history at t = 7 should see the traces at t' = 1"


def test_parameter_counts_are_close():
    counts = {row: A.LanguageModel(tiny_cfg(row, d_model=128, vocab_size=50304, block_size=128)).num_params()
              for row in ROWS}
    assert counts["attn-current"] == counts["attn-history"]  # the same module, only the visible slots differ
    assert abs(counts["attn-current"] / counts["linear"] - 1) < 0.03, counts


def test_summary_statistics_and_verdict():
    runs = [dict(row=r, seed=k, val_loss=loss + 0.01 * k, params=1, predictor_params=1, seconds=1.0)
            for r, loss in [("linear", 6.0), ("attn-current", 6.0), ("attn-history", 5.5), ("transformer", 5.0)]
            for k in (0, 1, 2)]
    rows, verdict = A.summarise(runs)
    assert rows["linear"]["val_loss"] == pytest.approx(6.01) and rows["linear"]["val_loss_std"] == pytest.approx(0.01)
    assert rows["attn-current"]["d_loss_pct"] == pytest.approx(0.0) and rows["attn-current"]["within_noise"]
    assert rows["attn-history"]["d_loss_pct"] == pytest.approx(100 * (5.51 / 6.01 - 1))
    assert not rows["attn-history"]["within_noise"]
    assert "attention over the current traces (t-1) changes validation loss by +0.00% (perplexity +0.0%, " \
           "within seed noise; paper: identical)" in verdict
    assert any("traces of every earlier position closes 50% of the 1.000-nat gap" in v for v in verdict), verdict


def test_smoke_run_every_row(tmp_path):
    out = A.main(TINY + ["--max-steps", "4", "--eval-interval", "2", "--lr", "1e-2", "--seeds", "0",
                         "--out-dir", str(tmp_path)])
    assert list(out["rows"]) == ROWS
    for row, r in out["rows"].items():
        for key in ("val_loss", "val_loss_std", "val_ppl", "val_ppl_std", "d_loss_pct", "params", "seconds"):
            assert key in r, f"{row}: {key} missing from {sorted(r)}"
        assert r["seeds"] == 1 and r["val_loss"] < 10.9, f"{row}: {r}"  # ln(50304) = 10.83 at chance
    assert out["rows"]["linear"]["d_loss_pct"] == 0.0
    assert any("current traces" in v and "paper: identical" in v for v in out["verdict"]), out["verdict"]
    assert json.loads((tmp_path / "results.json").read_text())["rows"] == out["rows"]
    assert {r["tokens_seen"] for r in out["runs"]} == {4 * 128}, "every run must see the same number of tokens"
    again = A.main(TINY + ["--max-steps", "4", "--lr", "1e-2", "--seeds", "0", "--out-dir", str(tmp_path), "--resume"])
    assert again["rows"] == out["rows"], "--resume should reuse the finished runs unchanged"
