"""ema_lm.py on several processes (issue 16): torchrun with DistributedDataParallel on the CPU (gloo, 2
processes, offline on 127.0.0.1) trains the same run as one process, and a checkpoint resumes on any number
of processes; each process computes only its share of a step's micro-batches."""
import json
import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

import ema_lm as E

REPO = Path(__file__).resolve().parents[1]
# 4 micro-batches a step: 2 per process, so that no_sync (no all-reduce before the last one) is exercised.
TINY = ["--n-layer", "2", "--d-model", "32", "--n-head", "2", "--block-size", "16", "--micro-batch", "4",
        "--batch-tokens", "256", "--warmup-steps", "2", "--eval-tokens", "128", "--device", "cpu",
        "--max-steps", "100", "--eval-interval", "100", "--checkpoint-interval", "100"]


class FakeDDP(torch.nn.Module):
    """Records which micro-batches a process computes and which of them skip the all-reduce."""

    def __init__(self, model):
        super().__init__()
        self.model, self.calls, self.synced = model, [], []
        self._sync = True

    @contextmanager
    def no_sync(self):
        self._sync = False
        yield
        self._sync = True

    def forward(self, x, y):
        self.calls.append(x.clone())
        self.synced.append(self._sync)
        return self.model(x, y)


def test_each_process_computes_its_share_and_draws_every_window():
    args = E.get_args(TINY)
    data = np.arange(5000, dtype=np.uint16) % 100
    torch.manual_seed(0)
    model = E.LanguageModel(E.ModelConfig(n_layer=1, d_model=16, d_ffn=48, block_size=16, vocab_size=100))
    one = FakeDDP(model)
    gen_one = torch.Generator().manual_seed(0)
    loss_one = E.train_step(one, data, args, gen_one, "cpu", E.nullcontext())
    grad_one = [p.grad.clone() for p in model.parameters()]
    assert len(one.calls) == 4 and all(one.synced)
    shares, losses, grads = [], [], []
    for rank in (0, 1):
        model.zero_grad(set_to_none=True)
        ddp = FakeDDP(model)
        gen = torch.Generator().manual_seed(0)
        losses.append(E.train_step(ddp, data, args, gen, "cpu", E.nullcontext(), rank, 2))
        assert ddp.synced == [False, True], f"rank {rank}: the all-reduce must run on the last micro-batch only"
        assert torch.equal(gen.get_state(), gen_one.get_state()), "every process must draw every window"
        shares.append(ddp.calls)
        grads.append([p.grad.clone() for p in model.parameters()])
    for i, x in enumerate(one.calls):  # rank r computes micro-batches r, r + 2
        assert torch.equal(shares[i % 2][i // 2], x)
    assert abs(sum(losses) / 2 - loss_one) < 1e-5  # what agree_across_ranks reports
    for g, g0, g1 in zip(grad_one, *grads):  # DDP's average of the processes' gradients is one process's gradient
        assert torch.allclose((g0 + g1) / 2, g, atol=1e-7), "the per-process loss scaling is wrong"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_match_one_and_resume_on_any_number(tmp_path):
    """Steps 1-2 on one process, 3-4 on two (torchrun, resumed), 5-6 on one again (resumed): the losses and the
    weights match a straight one-process run of 6 steps to float tolerance (the order of the gradient sums
    differs), and every resume continues exactly where the checkpoint left off."""
    straight = E.main(TINY + ["--out-dir", str(tmp_path / "one"), "--steps-this-run", "6"])
    mixed = tmp_path / "mixed"
    E.main(TINY + ["--out-dir", str(mixed), "--steps-this-run", "2"])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": os.environ.get("GLOO_SOCKET_IFNAME", "lo")}
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2",
                           "--master_addr=127.0.0.1", f"--master_port={free_port()}", "ema_lm.py", *TINY,
                           "--out-dir", str(mixed), "--resume", "--steps-this-run", "2"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    seconds = time.time() - t0
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((mixed / "config.json").read_text())["processes"] == 2
    assert "processes=2" in proc.stdout and proc.stdout.count("PARTIAL RUN") == 1, "process 0 alone reports"
    resumed = E.main(TINY + ["--out-dir", str(mixed), "--resume", "--steps-this-run", "2"])
    a = [json.loads(x) for x in open(tmp_path / "one" / "metrics.jsonl")]
    b = [json.loads(x) for x in open(mixed / "metrics.jsonl")]
    assert [r["step"] for r in b] == [1, 2, 3, 4, 5, 6]
    loss_diff = max(abs(x["train_loss"] - y["train_loss"]) for x, y in zip(a, b))
    wa = torch.load(tmp_path / "one" / "ckpt.pt", weights_only=False)["model"]
    wb = torch.load(mixed / "ckpt.pt", weights_only=False)["model"]
    weight_diff = max((wa[k] - wb[k]).abs().max().item() for k in wa)
    print(f"2 processes: max |train loss difference| {loss_diff:.1e}, max |weight difference| {weight_diff:.1e}, "
          f"val loss {straight['val_loss']:.6f} vs {resumed['val_loss']:.6f}, torchrun {seconds:.1f} s")
    assert [x["train_loss"] for x in a[:2]] == [y["train_loss"] for y in b[:2]]  # one process: identical
    assert loss_diff < 1e-5 and weight_diff < 1e-5
    assert abs(straight["val_loss"] - resumed["val_loss"]) < 1e-5
