"""Evaluation with the runtime only: likelihood bounds, reconstruction error, feature quality.

The same function fills the metrics of an exported bundle's manifest and prints `vae eval`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from .datasets import ImageSet
from .model import Model
from .probe import fit_probe

Progress = Callable[[str, int, int], None]


def _noop(task: str, done: int, total: int) -> None:
    pass


def _in_chunks(fn: Callable[[np.ndarray], Any], images: np.ndarray, size: int, task: str, progress: Progress) -> list[Any]:
    out = []
    for i in range(0, len(images), size):
        out.append(fn(images[i : i + size]))
        progress(task, min(i + size, len(images)), len(images))
    return out


def evaluate(
    model: Model,
    test: ImageSet,
    train: ImageSet | None = None,
    *,
    k: int = 100,
    seed: int = 0,
    progress: Progress = _noop,
) -> dict[str, Any]:
    """Metrics over `test` (uint8 [N, H, W, C]):

    elbo_bpd, iw_bpd (VAE only): mean -ELBO and -IW bound (k samples) in bits/dim;
    recon_mse, recon_psnr: posterior-mean reconstruction error in [0, 1] pixel units;
    probe_accuracy: logistic regression on encoder means, fit on `train`, tested on `test`
    (needs labels on both); kl_per_dim (VAE only): average KL of each latent dimension.
    """
    chunk = 1000
    out: dict[str, Any] = {"images": len(test), "seed": seed}
    means, logvars = [], []
    for part in _in_chunks(model.encode, test.images, chunk, "encode", progress):
        means.append(part.mean)
        logvars.append(part.logvar)
    mean = np.concatenate(means)
    recon = np.concatenate(_in_chunks(model.decode, mean, chunk, "reconstruct", progress))
    mse = float(np.mean((recon.astype(np.float64) - test.images.astype(np.float64)) ** 2) / 255.0**2)
    out["recon_mse"] = mse
    out["recon_psnr"] = 10.0 * math.log10(1.0 / mse) if mse > 0 else math.inf
    if model.kind == "vae":
        logvar = np.concatenate(logvars)
        kl = 0.5 * (mean.astype(np.float64) ** 2 + np.exp(logvar.astype(np.float64)) - 1.0 - logvar)
        out["kl_per_dim"] = [float(x) for x in kl.mean(0)]
        out["active_dims"] = int(np.sum(kl.mean(0) > 0.01))
        rng = np.random.default_rng(seed)
        elbo, iw = [], []
        per = max(1, 2000 // k) * 10
        for i in range(0, len(test), per):
            s = model.score(test.images[i : i + per], k=k, seed=rng)
            elbo.append(s.elbo_bpd)
            iw.append(s.iw_bpd)
            progress(f"score (k={k})", min(i + per, len(test)), len(test))
        out["elbo_bpd"] = float(np.mean(np.concatenate(elbo)))
        out["iw_bpd"] = float(np.mean(np.concatenate(iw)))
        out["iw_samples"] = k
    if train is not None and train.labels is not None and test.labels is not None:
        train_feats = np.concatenate(_in_chunks(model.embed, train.images, chunk, "encode probe train", progress))
        probe = fit_probe(train_feats, train.labels)
        out["probe_accuracy"] = probe.accuracy(mean, test.labels)
        out["probe_train_images"] = len(train)
    return out
