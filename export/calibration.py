"""Anomaly-score calibration for a bundle: reproduce the training run's held-out validation
split and store the score's quantiles on it in the manifest (`vaesdk.maths.anomaly`).

Export calls `validation_images` for every new VAE bundle; `calibrate_bundle` (and
`scripts/calibrate_bundle.py`) adds a calibration to a bundle made before calibration existed,
or replaces one for an earlier score; `remeasure_anomaly` then measures the score again on the
test set the manifest's metrics record, so the manifest's anomaly figures are the new score's.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

import vaesdk
from vaesdk.maths.anomaly import calibrate_anomaly
from vaesdk.bundle.reading import read_manifest
from vaesdk.bundle.editing import write_manifest
from vaesdk.evaluation.datasets import ImageSet, load_dataset
from vaesdk.evaluation.evaluate import evaluate
from vaesdk.base.errors import InvalidArgumentError, OutputError

from ..training.config import TrainConfig


# What a folder's run records as its test split: it has none, so its validation images, which
# are also the anomaly calibration's images, stand in (export/pipeline.py).
FOLDER_TEST_SPLIT = "validation split of the training folder (not used for training)"


def run_split(config: dict[str, Any], data_dir: str | os.PathLike | None = None) -> tuple[ImageSet, ImageSet]:
    """A training run's training and validation images, reproduced from its recorded config
    (checkpoint.json's or the manifest's `training.config`): the same data, limit, seed and
    fraction give the same split. `data_dir` overrides where the run's Fashion-MNIST files or
    image folder are now."""
    cfg = TrainConfig.from_dict(config)
    if data_dir is not None:
        cfg.data_dir = str(data_dir)
    return cfg.split()


def validation_images(config: dict[str, Any], data_dir: str | os.PathLike | None = None) -> tuple[np.ndarray, str]:
    """The validation images of a training run (uint8 [N, H, W, C]), exactly the images the
    weights were not trained on (see `run_split`), and a description of them."""
    return run_split(config, data_dir)[1].images, validation_source(config)


def validation_source(config: dict[str, Any]) -> str:
    """How a calibration describes a run's validation split (the manifest's anomaly source)."""
    cfg = TrainConfig.from_dict(config)
    return f"validation split of the training run ({cfg.dataset}, seed {cfg.seed}, val_fraction {cfg.val_fraction:.4g})"


def calibrate_bundle(
    bundle_dir: str | os.PathLike,
    *,
    images: np.ndarray | None = None,
    source: str | None = None,
    data_dir: str | os.PathLike | None = None,
    out: str | os.PathLike | None = None,
    prior: str | None = None,
) -> Path:
    """Add (or replace) the anomaly calibration of a VAE bundle and return its folder.

    images: held-out in-distribution images NOT used for training; by default the
    validation split reproduced from the manifest's `training.config`. out: write a
    calibrated copy there instead of changing `bundle_dir` (which must then not exist).
    prior: the prior of the score's latent part (`calibrate_anomaly`; default: the default
    prior when it is a mixture).
    Only the manifest changes; the model files and their checksums stay as they are."""
    bundle_dir = Path(bundle_dir)
    if out is not None:
        out = Path(out)
        if out.exists() or out.is_symlink():
            raise OutputError(f"{out} already exists; choose another --out or remove it")
        shutil.copytree(bundle_dir, out)
        bundle_dir = out
    model = vaesdk.load(bundle_dir, device="cpu")
    if images is None:
        config = (model.manifest.data.get("training") or {}).get("config")
        if not config:
            raise InvalidArgumentError(
                f"{bundle_dir} records no training config to reproduce its validation split from; pass held-out images"
            )
        images, source = validation_images(config, data_dir)
    entry = calibrate_anomaly(model, images, source or "held-out images", prior)
    data = read_manifest(bundle_dir).data
    data["anomaly"] = entry
    write_manifest(bundle_dir, data)
    return bundle_dir


def remeasure_anomaly(bundle_dir: str | os.PathLike, data_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """Measure the anomaly score again exactly as export does (the recorded test set, seed and
    number of importance samples) and write it to the manifest's `metrics.anomaly`; returns it.
    Only that entry changes."""
    bundle_dir = Path(bundle_dir)
    model = vaesdk.load(bundle_dir, device="cpu")
    recorded = model.manifest.data.get("metrics") or {}
    if not {"dataset", "split", "images", "seed"} <= set(recorded):
        raise InvalidArgumentError(f"{bundle_dir} records no test-set metrics to measure the anomaly score again on")
    h, _, c = model.image_shape
    test = load_dataset(recorded["dataset"], recorded["split"], h, c, data_dir).head(recorded["images"])
    same = recorded["split"] == FOLDER_TEST_SPLIT  # the calibration's own images
    measured = evaluate(model, test, k=recorded.get("iw_samples", 16), seed=recorded["seed"], test_is_calibration=same)["anomaly"]
    data = read_manifest(bundle_dir).data
    data["metrics"]["anomaly"] = measured
    write_manifest(bundle_dir, data)
    return measured
