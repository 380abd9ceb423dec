"""plumbing.py's lookups and checks that the other tests do not reach: the card's peak for MFU, resumed settings."""
import pytest
import torch

import plumbing as P


@pytest.mark.parametrize("name,tflops", [("NVIDIA H100 80GB HBM3", 989), ("NVIDIA H100 PCIe", 756),
                                         ("NVIDIA H200", 989), ("NVIDIA GH200 480GB", 989),
                                         ("NVIDIA A100-SXM4-80GB", 312), ("NVIDIA L4", 121),
                                         ("NVIDIA L40", 181), ("NVIDIA L40S", 362),
                                         ("NVIDIA A10G", None), ("NVIDIA GeForce GTX 1080", None)])
def test_mfu_uses_the_card_s_own_peak_or_none(monkeypatch, name, tflops):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: name)
    assert P.peak_bf16_flops("cuda") == (tflops * 1e12 if tflops else None)
    assert P.peak_bf16_flops("cpu") is None


def test_resume_ignores_a_flag_added_or_removed_since_only_while_it_is_unset():
    assert P.check_same_settings({"lr": 1e-3, "compare": None}, {"lr": 1e-3}) == {}, "a removed, unused flag"
    assert P.check_same_settings({"lr": 1e-3}, {"lr": 1e-3, "new_flag": False}) == {}, "a new flag at its default"
    with pytest.raises(SystemExit, match="--old-flag 3"):
        P.check_same_settings({"lr": 1e-3, "old_flag": 3}, {"lr": 1e-3})
    with pytest.raises(SystemExit, match="--lr 0.001"):
        P.check_same_settings({"lr": 1e-3}, {"lr": 3e-3})


def test_run_records_hold_paths_relative_to_the_repository():
    from plumbing import ROOT, portable
    record = {"out_dir": str(ROOT / "runs" / "x"), "figure": ROOT / "figures" / "a.png", "elsewhere": "/tmp/run",
              "lrs": [1e-3], "nested": [{"out": str(ROOT / "results")}], "name": "ema"}
    assert portable(record) == {"out_dir": "runs/x", "figure": "figures/a.png", "elsewhere": "/tmp/run",
                                "lrs": [1e-3], "nested": [{"out": "results"}], "name": "ema"}
