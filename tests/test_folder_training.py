"""The documented route for your own pictures (docs/training.md), exactly as written: `vae train --data FOLDER`,
then `vae export RUN --out BUNDLE` with no other flags, then `vae sample -m BUNDLE`."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import vaesdk
from vaesdk.cli.main import app

pytestmark = pytest.mark.train  # `vae train` and `vae export` run torch

CLASSES = ("circles", "stripes", "squares")


def _make_folder(root, channels: int, per_class: int = 40):
    """Three classes of 20x20 pictures with different shapes and colours (and noise)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:20, :20]
    for k, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            if name == "circles":
                mask = (yy - 10) ** 2 + (xx - 10) ** 2 < rng.integers(20, 60)
            elif name == "stripes":
                mask = (xx // rng.integers(2, 5)) % 2 == 0
            else:
                a, b = rng.integers(2, 8, 2)
                mask = (yy > a) & (yy < 20 - b) & (xx > b) & (xx < 20 - a)
            colour = np.array([[220, 40, 40], [40, 200, 40], [40, 40, 230]][k]) + rng.integers(-20, 20, 3)
            img = mask[..., None] * colour + rng.integers(0, 25, (20, 20, 3))
            img = np.clip(img, 0, 255).astype(np.uint8)
            pil = Image.fromarray(img, "RGB")
            (pil if channels == 3 else pil.convert("L")).save(root / name / f"{i:03d}.png")


@pytest.mark.parametrize("channels", [3, 1])
def test_readme_route_for_an_image_folder(tmp_path, monkeypatch, channels):
    data = tmp_path / "pictures"
    _make_folder(data, channels)
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    train = runner.invoke(
        app,
        ["train", "--data", str(data), "--image-size", "16", "--channels", str(channels), "--out-dir", "runs/mine",
         "--widths", "8,16", "--latent-dim", "4", "--epochs", "2", "--batch-size", "32"],
    )  # fmt: skip
    assert train.exit_code == 0, train.output
    export = runner.invoke(app, ["export", "runs/mine", "--out", "bundles/mine"])
    assert export.exit_code == 0, export.output

    model = vaesdk.load(tmp_path / "bundles/mine", device="cpu")
    manifest = model.manifest.data
    assert manifest["image"]["channels"] == channels
    # Metrics come from images held out of training, and say so.
    assert "validation split" in manifest["metrics"]["split"] and manifest["metrics"]["dataset"] == "image folder"
    assert manifest["metrics"]["images"] == manifest["training"]["dataset"]["val_images"]
    # Class priors and directions from the sub-folders, without extra flags; the mixture is the default.
    assert set(CLASSES) <= set(model.priors) and set(CLASSES) == set(model.directions)
    assert model.default_prior == "mixture"
    assert manifest["latent"]["active_dims"] >= 1

    sample = runner.invoke(app, ["sample", "-m", "bundles/mine", "--n", "4", "--seed", "0", "--out", "s.png"])
    assert sample.exit_code == 0, sample.output
    with Image.open(tmp_path / "s.png") as im:
        assert im.mode == ("RGB" if channels == 3 else "L")
    for prior in CLASSES:
        assert model.sample(2, seed=1, prior=prior).shape == (2, 16, 16, channels)

    # Measured again from the manifest alone (the run's folder and split reproduced from the
    # record), the calibration and every metric come out as export recorded them.
    from vaesdk.export.pipeline import remeasure

    before = (tmp_path / "bundles/mine/manifest.json").read_text()
    assert remeasure(tmp_path / "bundles/mine") == json.loads(before)["metrics"]
    assert json.loads((tmp_path / "bundles/mine/manifest.json").read_text()) == json.loads(before)


def test_export_refuses_a_collapsed_run_unless_allowed(tmp_path, monkeypatch):
    from vaesdk.training.train import CHECKPOINT_JSON

    data = tmp_path / "pictures"
    _make_folder(data, 1, per_class=20)
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    args = ["train", "--data", str(data), "--image-size", "16", "--channels", "1", "--out-dir", "runs/c",
            "--widths", "8,16", "--latent-dim", "4", "--epochs", "1"]  # fmt: skip
    assert runner.invoke(app, args).exit_code == 0
    # A run whose posterior ignores z: zero every latent's KL in the record export checks
    # when there is no evaluation data, and force it through the evaluation path too.
    record = json.loads((tmp_path / "runs/c" / CHECKPOINT_JSON).read_text())
    record["history"][-1]["val"]["active_dims"] = 0
    (tmp_path / "runs/c" / CHECKPOINT_JSON).write_text(json.dumps(record))
    refused = runner.invoke(app, ["export", "runs/c", "--out", "b", "--data", "none"])
    assert refused.exit_code == 4 and "posterior collapse" in refused.output and not (tmp_path / "b").exists()
    allowed = runner.invoke(app, ["export", "runs/c", "--out", "b", "--data", "none", "--allow-collapsed"])
    assert allowed.exit_code == 0, allowed.output
