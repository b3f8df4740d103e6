"""Calibrating a bundle's anomaly score on images the model did not train on: its scores'
density and quantiles go into the manifest, so `score` gives p-values
(`vae calibrate BUNDLE --held-out DIR`)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from ..base.errors import OutputError
from ..bundle.editing import set_anomaly
from ..bundle.reading import read_bundle
from ..maths.anomaly import calibrate_anomaly
from .model import Model


def calibrate_bundle(
    bundle_dir: str | os.PathLike, held_out: Any, *, source: str = "held-out images", out: str | os.PathLike | None = None, prior: str | None = None
) -> Path:
    """Calibrate the anomaly score of the VAE bundle at `bundle_dir` on `held_out` (anything
    `Model.score` takes: at least 100 in-distribution images NOT used for training) and
    return the calibrated bundle's folder. `out`: write a calibrated copy there instead (it
    must not exist). `prior`: the prior whose density gives the score's latent part
    (`calibrate_anomaly`; default: the current calibration's, else the default prior when it is
    a mixture). Only manifest.json changes; the model files and checksums do not."""
    bundle_dir = Path(bundle_dir)
    if out is not None:
        out = Path(out)
        if out.exists() or out.is_symlink():
            raise OutputError(f"{out} already exists; choose another --out or remove it")
        model = Model(read_bundle(bundle_dir), device="cpu")  # checked before anything is copied
        shutil.copytree(bundle_dir, out)
        bundle_dir = out
    else:
        model = Model(read_bundle(bundle_dir), device="cpu")
    set_anomaly(bundle_dir, calibrate_anomaly(model, held_out, source, prior))
    return bundle_dir
