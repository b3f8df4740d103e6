"""Distributed training: two CPU processes under torchrun (gloo, loopback) against one process.

The global batch, the data order and the posterior/dequantization noise of every image are
the same for any number of processes, so a 2-process run follows the 1-process run step by
step. They are not bit-identical: DDP sums the two processes' gradients (and the metrics are
summed over processes) in another order than one process summing over the whole batch, and
those float32 rounding differences (~1e-7 relative per step) pass through Adam for every
step. Measured over 3 epochs of this setup: at most 1.9e-7 relative on any metric. RTOL
(500 times that) leaves room for other CPUs' kernels while still catching a wrong batch share,
gradient weighting or noise draw, each of which changes what a step computes, not just rounding.
"""

from __future__ import annotations

import pytest

# Needs torch (the train extra): marked, and skipped at collection where it is absent.
pytestmark = pytest.mark.train
pytest.importorskip("torch")

import json
import os
import subprocess
import sys
from pathlib import Path


from vaesdk.training.config import ModelConfig, TrainConfig
from vaesdk.training.distributed import free_loopback_port
from vaesdk.training.train import BEST_WEIGHTS, CHECKPOINT_JSON, LAST_STATE, train

RTOL = 1e-4
MODEL = dict(latent_dim=8, widths=(8, 16, 32))
# On the CPU everywhere (gloo), also on a machine with GPUs: the runs are compared number by number.
RUN = dict(limit=400, batch_size=50, kl_warmup_epochs=1, fixed_variance_epochs=1, num_threads=1, seed=0, device="cpu")
CLI_ARGS = [
    "--latent-dim", "8", "--widths", "8,16,32", "--limit", "400", "--batch-size", "50",
    "--kl-warmup-epochs", "1", "--fixed-variance-epochs", "1", "--threads", "1", "--seed", "0", "--device", "cpu",
]  # fmt: skip


def _config(out_dir: Path, epochs: int) -> TrainConfig:
    return TrainConfig(model=ModelConfig(**MODEL), out_dir=str(out_dir), max_epochs=epochs, **RUN)


def _torchrun(nproc: int, *args: str) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--nnodes=1",
        "--master_addr=127.0.0.1", f"--master_port={free_loopback_port()}", "-m", "vaesdk.cli.main", "train", *args,
    ]  # fmt: skip
    return _run(cmd)


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _history(run_dir: Path) -> list[dict]:
    return json.loads((run_dir / CHECKPOINT_JSON).read_text())["history"]


def _assert_same_curve(got: list[dict], want: list[dict]) -> None:
    assert [h["epoch"] for h in got] == [h["epoch"] for h in want]
    for g, w in zip(got, want):
        for part in ("train", "val"):
            for key in ("bpd", "kl", "mse"):
                assert g[part][key] == pytest.approx(w[part][key], rel=RTOL), (g["epoch"], part, key)
        assert g["val"]["active_dims"] == w["val"]["active_dims"]
        assert g["val_kl_per_dim"] == pytest.approx(w["val_kl_per_dim"], rel=RTOL, abs=1e-6)
        assert g["kl_weight"] == w["kl_weight"] and g["fixed_variance"] == w["fixed_variance"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> list[dict]:
    """One process, three epochs: warm-up (fixed variance, KL weight rising), then the true ELBO."""
    run = tmp_path_factory.mktemp("single") / "run"
    train(_config(run, 3), log=lambda s: None)
    return _history(run)


def test_two_processes_follow_one_process_and_write_one_checkpoint(tmp_path, reference):
    run = tmp_path / "ddp"
    done = _torchrun(2, "--out-dir", str(run), "--epochs", "2", *CLI_ARGS)
    # Only process 0 logs and writes: one line per epoch, one set of run files, nothing left over.
    epoch_lines = [line for line in done.stdout.splitlines() if line.startswith("epoch ")]
    assert [line.split(":")[0] for line in epoch_lines] == ["epoch 1", "epoch 2"]
    assert "2 processes (gloo), 50 images per step in all" in done.stdout
    assert sorted(p.name for p in run.iterdir()) == sorted([CHECKPOINT_JSON, BEST_WEIGHTS, LAST_STATE])
    record = json.loads((run / CHECKPOINT_JSON).read_text())
    assert record["distributed"] == {"world_size": 2, "global_batch_size": 50, "backend": "gloo"}
    assert all(h["world_size"] == 2 for h in record["history"])
    _assert_same_curve(record["history"], reference[:2])

    # Resume the 2-process run with one process: it continues to the reference's third epoch.
    train(_config(run, 3), resume=True, log=lambda s: None)
    resumed = _history(run)
    assert [h["world_size"] for h in resumed] == [2, 2, 1]
    _assert_same_curve(resumed, reference)


def test_vae_train_nproc_per_node_resumes_a_one_process_run(tmp_path, reference):
    run = tmp_path / "grow"
    train(_config(run, 1), log=lambda s: None)
    cmd = [sys.executable, "-m", "vaesdk.cli.main", "train", "--nproc-per-node", "2", "--resume", "--out-dir", str(run), "--epochs", "3", *CLI_ARGS]
    done = _run(cmd)
    assert "resumed at epoch 1" in done.stdout and "trained so far with 1 processes" in done.stdout
    record = json.loads((run / CHECKPOINT_JSON).read_text())
    assert record["distributed"]["world_size"] == 2
    assert [h["world_size"] for h in record["history"]] == [1, 2, 2]
    _assert_same_curve(record["history"], reference)


def test_batch_smaller_than_the_process_count_is_refused(tmp_path):
    cmd = [sys.executable, "-m", "vaesdk.cli.main", "train", "--nproc-per-node", "2", "--out-dir", str(tmp_path / "r"), "--batch-size", "1", "--limit", "100"]
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600)
    assert done.returncode != 0
    assert "batch_size 1 is smaller than the 2 processes; use --batch-size 2 or more" in done.stderr
    assert not (tmp_path / "r").exists()


def test_the_training_device_is_checked_before_anything_runs(monkeypatch):
    import torch

    from vaesdk.base.errors import InvalidArgumentError
    from vaesdk.training.distributed import join

    with pytest.raises(InvalidArgumentError, match="device must be one of auto, cuda, cpu, got 'gpu'"):
        TrainConfig(device="gpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(InvalidArgumentError, match="--device cuda, but torch sees no CUDA GPU"):
        join("cuda")
    assert join("auto").device == torch.device("cpu") and join("cpu").world_size == 1


def test_a_process_without_a_gpu_of_its_own_is_refused(monkeypatch):
    import torch

    from vaesdk.base.errors import InvalidArgumentError
    from vaesdk.training.distributed import join

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setenv("LOCAL_RANK", "1")
    with pytest.raises(InvalidArgumentError, match=r"process 1 on this machine has no GPU of its own \(1 GPU"):
        join("auto")
