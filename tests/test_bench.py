"""bench.py: the exact top-k thresholds, the profile's parts, the recompilation check."""
import pytest
import torch

import bench

TINY = ("--n-layer", "1", "--d-model", "32", "--n-head", "2")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_every_top_k_threshold_gives_the_sorted_top_k_mask(dtype):
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(64, 200, generator=gen).to(dtype)
    a[:8] = (a[:8] * 2).round() / 2  # rows with many ties
    a[8:12] = -a[8:12].abs()  # rows of negative values only
    truth = bench.topk_mask(a, 12, "topk sorted")
    assert (truth.sum(-1) >= 12).all()
    for method in bench.TOPK:
        assert torch.equal(bench.topk_mask(a, 12, method), truth), method


def test_order_keys_keep_the_order_of_the_floats():
    x = torch.tensor([-3.0, -1.0, -0.5, 0.0, 1e-30, 0.25, 2.0, 1e30])
    for dtype in (torch.float32, torch.bfloat16):
        keys = bench.order_keys(x.to(dtype))
        assert (keys[1:] > keys[:-1]).all() and (keys >= 0).all(), dtype


@pytest.mark.parametrize("mixer,present,absent", [("ema", ("scan", "top-k"), "attention"),
                                                  ("attention", ("attention",), "scan")])
def test_profile_attributes_the_step_to_its_parts(mixer, present, absent):
    out = bench.profile_step(*bench.build_case("small", mixer, 32, 2, "cpu", flags=TINY), "cpu", steps=1)
    share = out["share"]
    assert sum(share.values()) == pytest.approx(1.0)
    assert all(share[p] > 0 for p in (*present, "projections", "output layer", "optimiser")), share
    assert share[absent] == 0.0


def test_compiled_spen_runs_three_lengths_in_one_process():
    assert bench.recompile_check("cpu", lengths=(32, 48, 64), backend="eager")["ok"]
