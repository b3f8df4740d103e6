"""The whole path through the command line: `vae train` on real Fashion-MNIST images,
`vae export`, then the runtime against PyTorch on the same weights."""

import pytest

# Needs torch (the train extra): marked, and skipped at collection where it is absent.
pytestmark = pytest.mark.train
pytest.importorskip("torch")

import json

import numpy as np
import torch
from typer.testing import CliRunner

import vaesdk
from vaesdk.cli.main import app
from vaesdk.training.train import load_checkpoint


def test_train_export_load_compare(tmp_path, fashion_test):
    runner = CliRunner()
    run_dir, bundle = tmp_path / "run", tmp_path / "bundle"
    r = runner.invoke(app, ["train", "--out-dir", str(run_dir), "--limit", "2000", "--epochs", "2", "--latent-dim", "6",
                            "--widths", "8,16,32", "--batch-size", "64"])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "epoch 2:" in r.output
    record = json.loads((run_dir / "checkpoint.json").read_text())
    assert record["command"].startswith("vae train") or record["command"] == "vae train"
    r = runner.invoke(app, ["export", str(run_dir), "--out", str(bundle), "--eval-limit", "300", "--iw-samples", "8"])
    assert r.exit_code == 0, r.output
    assert "parity gate passed" in r.output

    model = vaesdk.load(bundle, device="cpu")
    torch_model, _ = load_checkpoint(run_dir)
    x = fashion_test.images[:32]
    with torch.no_grad():
        t_mean, _ = torch_model.encoder(torch.from_numpy(x.transpose(0, 3, 1, 2).astype(np.float32) / 255))
        t_img = torch_model.decoder(t_mean)[0]
    np.testing.assert_allclose(model.encode(x).mean, t_mean.numpy(), atol=1e-4, rtol=1e-4)
    ours = model.reconstruct(x).astype(int)
    theirs = np.rint(t_img.numpy().transpose(0, 2, 3, 1).clip(0, 1) * 255).astype(int)
    assert np.abs(ours - theirs).max() <= 1  # rounding at a bin edge may differ by one level
    metrics = model.manifest.data["metrics"]
    assert metrics["images"] == 300 and metrics["iw_bpd"] < metrics["elbo_bpd"]
