"""Checkpoint -> verified bundle folder, in one call (`vae export`).

The bundle is assembled in a temporary folder beside the destination and moved into place
only when every step has passed: ONNX export, onnx.checker, the parity gate, loading through
the runtime, and evaluation. A failure leaves no partial bundle behind.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import vaesdk
from vaesdk.anomaly import calibrate_anomaly
from vaesdk.bundle import NAME_RE, write_manifest
from vaesdk.datasets import DEFAULT_FASHION_MNIST_DIR, ImageSet, load_dataset
from vaesdk.errors import InvalidArgumentError, OutputError
from vaesdk.evaluate import Progress, evaluate
from vaesdk.fileio import UMASK
from vaesdk.latent import Posterior, class_mean_directions, fit_gaussian

from ..training.train import load_model
from .calibration import validation_images
from .manifest import build_manifest
from .onnx import export_graphs
from .verify import check_parity


def export_bundle(
    run_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    name: str | None = None,
    description: str = "",
    eval_data: str | None = "fashion-mnist",
    data_dir: str | os.PathLike | None = None,
    probe_data: str | None = None,
    iw_samples: int = 100,
    eval_limit: int = 0,
    force: bool = False,
    log: Callable[[str], None] = lambda s: None,
    progress: Progress | None = None,
) -> Path:
    """Export the best weights of `run_dir` to the bundle folder `out_dir`.

    eval_data: 'fashion-mnist' (test split for metrics, train split for the probe and the
    class directions), a labelled image folder, or None to skip metrics. eval_limit > 0 uses
    only that many images of each set (quick runs and tests).
    """
    out_dir = Path(out_dir)
    name = name or out_dir.name
    if not NAME_RE.match(name):
        raise InvalidArgumentError(f"bundle name {name!r} must be 1-64 letters, digits, '_', '.' or '-'; pass --name")
    if (out_dir.exists() or out_dir.is_symlink()) and not force:
        raise OutputError(f"{out_dir} already exists; pass --force to replace it")
    model, checkpoint = load_model(run_dir)
    config = model.config
    test, train = _eval_sets(eval_data, probe_data, data_dir, config.image_size, config.channels)
    if eval_limit:
        test = test.head(eval_limit) if test is not None else None
        train = train.head(eval_limit) if train is not None else None

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".partial", dir=out_dir.parent))
    try:
        log("exporting encoder.onnx and decoder.onnx")
        files = export_graphs(model, tmp)
        real = test.images[:256] if test is not None else _random_images(config.image_size, config.channels)
        report = check_parity(model, files["encoder"].read_bytes(), files["decoder"].read_bytes(), real)
        log(f"parity gate passed: worst error {report.worst_ratio:.3f} of tolerance")
        data = build_manifest(name, config, files, checkpoint, report.as_manifest(), description)
        write_manifest(tmp, data)
        if config.kind == "vae":
            _add_anomaly_calibration(tmp, data, checkpoint, log)
        if test is not None:
            _add_evaluation(tmp, data, test, train, eval_data, iw_samples, log, progress)
        vaesdk.load(tmp, device="cpu")  # the finished bundle must load through the runtime's checks
        os.chmod(tmp, 0o777 & ~UMASK)  # mkdtemp makes it private; a bundle is for others to read
        _move_into_place(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"bundle written to {out_dir}")
    return out_dir


def _eval_sets(
    eval_data: str | None, probe_data: str | None, data_dir: Any, size: int, channels: int
) -> tuple[ImageSet | None, ImageSet | None]:
    if eval_data is None:
        return None, None
    if eval_data == "fashion-mnist":
        data_dir = data_dir or DEFAULT_FASHION_MNIST_DIR
        return load_dataset("fashion-mnist", "test", size, channels, data_dir), load_dataset(
            "fashion-mnist", "train", size, channels, data_dir
        )
    test = load_dataset(eval_data, "test", size, channels)
    train = load_dataset(probe_data, "train", size, channels) if probe_data else None
    return test, train


def _random_images(size: int, channels: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (64, size, size, channels), dtype=np.uint8)


def _add_evaluation(
    bundle_dir: Path,
    data: dict[str, Any],
    test: ImageSet,
    train: ImageSet | None,
    source: str,
    k: int,
    log: Callable[[str], None],
    progress: Progress | None,
) -> None:
    model = vaesdk.load(bundle_dir, device="cpu")
    log(f"evaluating on {len(test)} images (importance-weighted bound with k={k})")
    train_post = model.encode(train.images) if train is not None else None
    train_features = train_post.mean if train_post is not None else None
    metrics = evaluate(
        model, test, train, k=k, seed=0, train_features=train_features, **({"progress": progress} if progress else {})
    )
    kl = metrics.pop("kl_per_dim", None)
    if kl is not None:
        data["latent"]["kl_per_dim"] = kl
    split = "test" if source == "fashion-mnist" else source
    data["metrics"] = {"dataset": "fashion-mnist" if source == "fashion-mnist" else "image folder", "split": split, **metrics}
    if train_post is not None:
        data["latent"]["gaussians"] = _fit_gaussians(train_post, train)
    if train is not None and train.labels is not None and train.class_names:
        vectors = class_mean_directions(train_features, train.labels, train.class_names)
        data["directions"] = {
            cls: {
                "vector": [float(x) for x in v],
                "description": f"towards '{cls}': mean latent of '{cls}' training images minus that of all others",
                "source": "export",
            }
            for cls, v in vectors.items()
        }
    write_manifest(bundle_dir, data)


def _add_anomaly_calibration(
    bundle_dir: Path, data: dict[str, Any], checkpoint: dict[str, Any], log: Callable[[str], None]
) -> None:
    """Calibrate the anomaly score on the run's validation split, images the weights were
    never trained on (reproduced from the checkpoint's recorded data, seed and fraction)."""
    images, source = validation_images(checkpoint["config"])
    log(f"calibrating the anomaly score on {len(images)} held-out validation images")
    data["anomaly"] = calibrate_anomaly(vaesdk.load(bundle_dir, device="cpu"), images, source)
    write_manifest(bundle_dir, data)


def _fit_gaussians(post: Posterior, data: ImageSet) -> dict[str, dict[str, Any]]:
    """Gaussians moment-matched to the encoded training images: all of them ('aggregate'),
    and each class. Sampling from them avoids the regions of N(0, I) no image encodes to."""
    groups = {"aggregate": np.ones(len(data), bool)}
    if data.labels is not None:
        groups.update({name: data.labels == k for k, name in enumerate(data.class_names)})
    out = {}
    for name, sel in groups.items():
        if sel.sum() < 2:
            continue
        g = fit_gaussian(post.mean[sel], None if post.logvar is None else post.logvar[sel])
        out[name] = {**g.to_manifest(), "images": int(sel.sum()), "fitted_to": "encoded training images" + ("" if name == "aggregate" else f" of class '{name}'")}
    return out


def _move_into_place(tmp: Path, out_dir: Path) -> None:
    """Swap the finished bundle in; an old one is removed only after the new one is in place."""
    old = None
    if out_dir.exists() or out_dir.is_symlink():
        old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
        os.replace(out_dir, old)
    os.replace(tmp, out_dir)
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old)
        else:
            old.unlink()
