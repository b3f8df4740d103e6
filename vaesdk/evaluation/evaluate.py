"""Evaluation with the runtime only: likelihood bounds, reconstruction error, feature quality.

The same function fills the metrics of an exported bundle's manifest and prints `vae eval`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from ..maths.anomaly import SCORE, auroc, fpr_at_tpr, scores_as_new
from . import datasets
from .datasets import ImageSet
from ..base.errors import InvalidArgumentError
from ..maths.latent import ACTIVE_KL_NATS, Posterior
from ..runtime.model import Model
from .probe import fit_probe

EVAL_BATCH = 1000  # images per encode/decode call: bounded memory, few calls
SCORE_DECODES = 20_000  # decoder runs per score call (images x k)
DEFAULT_EVAL_K = 16  # IW samples: within ~0.015 bits/dim of k=100 (README, "Anomaly scores"), 6x faster

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
    k: int = DEFAULT_EVAL_K,
    seed: int = 0,
    progress: Progress = _noop,
    train_features: np.ndarray | None = None,
    ood: dict[str, np.ndarray] | str | None = "default",
    test_is_calibration: bool = False,
) -> dict[str, Any]:
    """Metrics over `test` (uint8 [N, H, W, C]):

    elbo_bpd, iw_bpd (VAE only): mean -ELBO and -IW bound (k samples) in bits/dim;
    recon_mse, recon_psnr: posterior-mean reconstruction error in [0, 1] pixel units;
    probe_accuracy: logistic regression on encoder means, fit on `train`, tested on `test`
    (needs labels on both; classes are matched by name); kl_per_dim (VAE only): average KL
    of each latent dimension. `train_features` may pass encoder means of `train` already computed.

    anomaly (VAE only): the anomaly score's separation of `test` from each out-of-distribution
    set in `ood` (name -> uint8 images; "default": `vaesdk.evaluation.ood_sets.default_sets`, MNIST digits
    included when they can be fetched; None: none), as AUROC and the false-positive rate at 95%
    true-positive rate; and, when the bundle is calibrated, the fraction of `test` with
    p_value below 0.05 and 0.01 (about 0.05 and 0.01 when the calibration holds) and of each
    set (`p_below_0.05`, `p_below_0.01`: the images flagged at those thresholds).
    `test_is_calibration`: `test` holds exactly the bundle's calibration images, in order (a
    model trained on a folder has no other held-out images); their anomaly scores and p-values
    are then those of `anomaly.scores_as_new` (each scored without itself; p-values
    cross-fitted), and the anomaly entry says so.
    """
    images = model.spec.to_batch(test.images)
    out: dict[str, Any] = {"images": len(test), "seed": seed}
    parts = _in_chunks(model.encode, images, EVAL_BATCH, "encode", progress)
    post = Posterior(np.concatenate([p.mean for p in parts]), None if model.kind != "vae" else np.concatenate([p.logvar for p in parts]))
    recon = np.concatenate(_in_chunks(model.decode, post.mean, EVAL_BATCH, "reconstruct", progress))
    mse = float(np.mean((recon.astype(np.float64) - images.astype(np.float64)) ** 2) / 255.0**2)
    out["recon_mse"] = mse
    out["recon_psnr"] = 10.0 * math.log10(1.0 / mse) if mse > 0 else None  # None: a perfect reconstruction
    if model.kind == "vae":
        kl = post.kl().mean(0)
        out["kl_per_dim"] = [float(x) for x in kl]
        out["active_dims"] = int(np.sum(kl > ACTIVE_KL_NATS))
        rng = np.random.default_rng(seed)
        elbo, iw, unusual, p_values = [], [], [], []
        # Images per score call: k decoder runs each, so about SCORE_DECODES runs per call.
        per = max(1, SCORE_DECODES // k)
        for i in range(0, len(images), per):
            s = model.score(images[i : i + per], k=k, seed=rng)
            elbo.append(s.elbo_bpd)
            iw.append(s.iw_bpd)
            unusual.append(s.anomaly)
            p_values.append(s.p_value)
            progress(f"score (k={k})", min(i + per, len(images)), len(images))
        out["elbo_bpd"] = float(np.mean(np.concatenate(elbo)))
        out["iw_bpd"] = float(np.mean(np.concatenate(iw)))
        out["iw_samples"] = k
        if ood is not None:
            p = None if p_values[0] is None else np.concatenate(p_values)
            anomaly, note = np.concatenate(unusual), None
            calibration = model.spec.calibration
            if test_is_calibration and calibration is not None and calibration.n == len(images):
                anomaly, p = scores_as_new(model, images, calibration)
                note = "the test images are the calibration images: each scored without its own point, p-values cross-fitted over 10 folds"
            elif test_is_calibration and calibration is not None:
                # A part of the calibration images (an export's evaluation limit): no image can be
                # scored without its own point, so these figures are in-sample, and say so.
                note = (f"in-sample: the {len(images)} test images are among the {calibration.n} calibration images, "
                        "so their scores and p-values count their own points (evaluate all of them for held-out figures)")
            out["anomaly"] = _anomaly_metrics(model, images, anomaly, p, ood, seed, progress)
            if note:
                out["anomaly"]["test_scores"] = note
    if train is not None and train.labels is not None and test.labels is not None:
        if train_features is None:
            train_features = np.concatenate(_in_chunks(model.embed, model.spec.to_batch(train.images), EVAL_BATCH, "encode probe train", progress))
        probe = fit_probe(train_features, train.labels)
        out["probe_accuracy"] = probe.accuracy(post.mean, _labels_by_name(test, train))
        out["probe_train_images"] = len(train)
    return out


def evaluate_dataset(
    model: Model,
    data: str = "fashion-mnist",
    *,
    data_dir: str | None = None,
    train_data: str | None = None,
    limit: int = 0,
    k: int = DEFAULT_EVAL_K,
    seed: int = 0,
    ood: bool = True,
    progress: Progress = _noop,
) -> dict[str, Any]:
    """`evaluate` on a named data set, as `vae eval` runs it: Fashion-MNIST's test split (its
    training split for the probe; `data_dir` overrides where its files are), or a labelled image
    folder (`train_data`, another folder, for the probe). `limit` > 0 keeps the first N images
    of each. Returns the metrics without `kl_per_dim`, with `data` added."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise InvalidArgumentError(f"limit must be a whole number >= 0 (0 = all images), got {limit!r}")
    h, _, c = model.image_shape
    test = datasets.load_dataset(data, "test", h, c, data_dir)
    if data == "fashion-mnist":
        train = datasets.load_dataset(data, "train", h, c, data_dir)
    else:
        train = datasets.load_dataset(train_data, "train", h, c) if train_data else None
    if limit:
        test = test.head(limit)
        train = train.head(limit) if train is not None else None
    metrics = evaluate(model, test, train, k=k, seed=seed, ood="default" if ood else None, progress=progress)
    metrics.pop("kl_per_dim", None)
    return {"data": data, **metrics}


def _anomaly_metrics(
    model: Model, test: np.ndarray, scores: np.ndarray, p_values: np.ndarray | None, ood: dict[str, np.ndarray] | str,
    seed: int, progress: Progress,
) -> dict[str, Any]:  # fmt: skip
    from .ood_sets import default_sets

    out: dict[str, Any] = {"score": SCORE, "test_images": len(test)}
    if p_values is not None:
        out["test_p_below_0.05"] = float(np.mean(p_values < 0.05))
        out["test_p_below_0.01"] = float(np.mean(p_values < 0.01))
    own_data = ((model.manifest.data.get("training") or {}).get("dataset") or {}).get("name")
    sets, skipped = default_sets(test, min(len(test), 1000), seed, own_data) if isinstance(ood, str) else (dict(ood), {})
    out["ood"] = {}
    for name, images in sets.items():
        progress(f"anomaly: {name}", 0, len(images))
        # k=1 whatever `k` is: the anomaly score uses the first posterior draw only.
        scored = model.score(model.spec.to_batch(images), k=1, seed=seed)
        other = scored.anomaly
        out["ood"][name] = {"images": len(other), "auroc": auroc(scores, other), "fpr_at_95_tpr": fpr_at_tpr(scores, other)}
        if scored.p_value is not None:
            out["ood"][name].update({f"p_below_{t}": float(np.mean(scored.p_value < float(t))) for t in ("0.05", "0.01")})
        progress(f"anomaly: {name}", len(images), len(images))
    if skipped:
        out["ood_skipped"] = skipped
    return out


def _labels_by_name(test: ImageSet, train: ImageSet) -> np.ndarray:
    """The test labels as indices into the training set's classes (folders number classes
    by their own sorted names, so the same index can mean different classes)."""
    if not test.class_names or not train.class_names or test.class_names == train.class_names:
        return test.labels
    index = {name: i for i, name in enumerate(train.class_names)}
    unknown = sorted(set(test.class_names) - set(index))
    if unknown:
        raise InvalidArgumentError(
            f"test classes {unknown} do not occur in the probe's training data (classes: {', '.join(train.class_names)})"
        )
    return np.array([index[test.class_names[i]] for i in test.labels])
