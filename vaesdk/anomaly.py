"""An anomaly score that works, and its calibration into p-values.

Likelihood alone is a poor judge of what a model has not seen: a VAE trained on
Fashion-MNIST gives MNIST digits *higher* likelihood than its own test images, because simple
images are cheap to describe for any model. Following Serrà et al. (2020, "Input complexity
and out-of-distribution detection with likelihood-based generative models"), the score
subtracts what a generic lossless compressor needs for the same image:

    anomaly = -ELBO_1(x) - complexity(x)          (both in bits/dim; higher = more unusual)

-ELBO_1(x) = -log p(x|z) + KL(q(z|x) || p(z)) with z the first posterior draw of `Model.score`:
the single-sample ELBO, so the score costs one decoder run per image, shared with the bounds.
complexity(x) = the shorter of zlib (level 9) and raw LZMA2 (preset 6) on the image's bytes.
Both were chosen by measurement (benchmarks/anomaly.py; README, "Anomaly scores"): the
single-sample ELBO separates as well as the ELBO at the posterior mean or with more samples,
and the importance-weighted bound does worse; of PNG, zlib, bz2, LZMA and JPEG 2000, the
shorter of zlib and LZMA was the most even over the kinds of unusual images measured.

Calibration turns a score into a p-value: the fraction of held-out in-distribution images
(not used for training) scoring at least as high. Export scores the training run's validation
split and stores quantiles of the scores in the manifest under `anomaly.calibration`; a
bundle without them reports scores without p-values.
"""

from __future__ import annotations

import lzma
import math
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import BundleError, InvalidArgumentError, UnsupportedOperationError

if TYPE_CHECKING:
    from .model import Model

SCORE = "elbo1-minus-complexity/1"
SCORE_DESCRIPTION = (
    "bits/dim: -log p(x|z) + KL(q(z|x) || p(z)) for one posterior draw z, minus the bits/dim of the shorter of "
    "zlib level 9 and raw LZMA2 preset 6 on the image's bytes; higher = more unusual"
)
CALIBRATION_SEED = 0
QUANTILES = 1001  # stored quantile levels 0, 0.001, ..., 1
MIN_CALIBRATION = 100
MAX_CALIBRATION_N = 1 << 31


def _lzma_filters(nbytes: int) -> list[dict[str, int]]:
    # Preset 6 with a dictionary just large enough for one image: the same output as the
    # preset's 8 MiB dictionary, without allocating it for every image (1 ms each).
    size = 4096
    while size < nbytes and size < (1 << 26):
        size *= 2
    return [{"id": lzma.FILTER_LZMA2, "preset": 6, "dict_size": size}]


def complexity_bpd(images: np.ndarray) -> np.ndarray:
    """Bits per dimension a generic lossless compressor needs for each image (uint8 [N, ...]):
    the shorter of zlib level 9 and raw LZMA2 preset 6, float64 [N]."""
    images = np.ascontiguousarray(images)
    dims = int(np.prod(images.shape[1:]))
    out = np.empty(len(images))
    filters = _lzma_filters(dims)
    for i, image in enumerate(images):
        raw = image.tobytes()
        size = min(len(zlib.compress(raw, 9)), len(lzma.compress(raw, format=lzma.FORMAT_RAW, filters=filters)))
        out[i] = 8.0 * size / dims
    return out


def anomaly_from_elbo(neg_elbo_bpd: np.ndarray, images: np.ndarray) -> np.ndarray:
    """The anomaly score (see the module docstring), float64 [N], from each image's
    single-sample -ELBO in bits/dim and the image itself (uint8 [N, H, W, C])."""
    return np.asarray(neg_elbo_bpd, np.float64) - complexity_bpd(images)


@dataclass(frozen=True)
class Calibration:
    """Quantiles of the anomaly score over n held-out in-distribution images, at the evenly
    spaced levels 0, 1/(m-1), ..., 1 (m = len(quantiles))."""

    quantiles: np.ndarray
    n: int
    source: str

    def p_values(self, scores: np.ndarray) -> np.ndarray:
        """For each score: (1 + n * tail) / (n + 1), where tail is the fraction of calibration
        images scoring at least as high (interpolated between the stored quantiles). Adding one
        image's worth (the conformal correction) keeps p-values valid for small n: the smallest
        is 1/(n + 1), for a score above every calibration score."""
        scores = np.asarray(scores, np.float64)
        q = self.quantiles
        levels = np.linspace(0.0, 1.0, len(q))
        # np.interp wants increasing x: ties (a score many images share) take the lowest level,
        # so "at least as high" counts all of them.
        below = np.interp(scores, q, levels, left=0.0, right=1.0)
        below = np.where(scores <= q[0], 0.0, below)
        tail = 1.0 - below
        p = (1.0 + self.n * tail) / (self.n + 1.0)
        return np.where(np.isnan(scores), np.nan, p)

    def to_manifest(self) -> dict[str, Any]:
        return {"quantiles": [float(x) for x in self.quantiles], "n": self.n, "source": self.source}


def calibrate_anomaly(model: Model, images: Any, source: str = "held-out images") -> dict[str, Any]:
    """Score held-out in-distribution images (NOT used for training; anything `Model.score`
    takes) and return the manifest's `anomaly` entry: the score's name and description, and
    its calibration (quantiles, n, source). Export writes it; `add_calibration` adds it to a
    bundle."""
    model.require_vae("calibrating anomaly scores")
    n = len(images) if isinstance(images, (list, tuple, np.ndarray)) else 0
    if n < MIN_CALIBRATION:
        raise InvalidArgumentError(f"calibration needs at least {MIN_CALIBRATION} held-out images, got {n}")
    scores = model.score(images, k=1, seed=CALIBRATION_SEED).anomaly
    if not np.isfinite(scores).all():
        raise InvalidArgumentError("some calibration images have a non-finite anomaly score; the model is broken for them")
    m = min(QUANTILES, len(scores))
    quantiles = np.quantile(scores, np.linspace(0.0, 1.0, m))
    calibration = Calibration(quantiles, len(scores), str(source))
    return {"score": SCORE, "description": SCORE_DESCRIPTION, "calibration": calibration.to_manifest()}


def flag(p_values: np.ndarray | None, p_below: float) -> np.ndarray:
    """bool [N]: p_value < p_below. Needs p-values (a calibrated bundle)."""
    if isinstance(p_below, bool) or not isinstance(p_below, (int, float)) or not 0.0 < p_below < 1.0:
        raise InvalidArgumentError(f"the p-value threshold must be a number between 0 and 1 (e.g. 0.01), got {p_below!r}")
    if p_values is None:
        raise UnsupportedOperationError(
            "this bundle has no anomaly calibration, so there are no p-values to flag by; add one with "
            "`python scripts/calibrate_bundle.py BUNDLE` (held-out images), or threshold the anomaly score yourself"
        )
    return np.asarray(p_values) < p_below


def calibration_of(model: Model) -> Calibration | None:
    """The model's anomaly calibration, or None when its bundle has none."""
    return calibration_from_manifest(model.manifest.data)


def check_flag(model: Model, p_below: float) -> None:
    """Raise unless images of `model` can be flagged at `p_below` (a calibrated VAE bundle,
    a threshold in (0, 1)): called before any work is done."""
    model.require_vae("anomaly scores")
    cal = calibration_of(model)
    flag(None if cal is None else np.zeros(0), p_below)


def calibration_from_manifest(data: dict[str, Any]) -> Calibration | None:
    """The calibration stored in a (validated) manifest, or None when it holds none or holds
    one for a different score."""
    entry = data.get("anomaly")
    if not entry or entry.get("score") != SCORE or not entry.get("calibration"):
        return None
    cal = entry["calibration"]
    return Calibration(np.asarray(cal["quantiles"], np.float64), int(cal["n"]), str(cal.get("source", "")))


def check_manifest_entry(entry: Any) -> None:
    """Validate the manifest's `anomaly` entry; raise BundleError naming the bad field."""

    def fail(where: str, problem: str) -> BundleError:
        return BundleError(f"invalid manifest: anomaly{where} {problem}")

    if not isinstance(entry, dict):
        raise fail("", "must be an object {score, description, calibration}")
    if not isinstance(entry.get("score"), str):
        raise fail(".score", "must be a string naming the score")
    cal = entry.get("calibration")
    if cal is None:
        return
    if not isinstance(cal, dict):
        raise fail(".calibration", "must be an object {quantiles, n, source} or null")
    q = cal.get("quantiles")
    if not isinstance(q, list) or not 2 <= len(q) <= QUANTILES:
        raise fail(".calibration.quantiles", f"must be a list of 2 to {QUANTILES} numbers")
    for x in q:
        if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
            raise fail(".calibration.quantiles", f"must hold finite numbers, found {x!r:.40}")
    if any(b < a for a, b in zip(q, q[1:])):
        raise fail(".calibration.quantiles", "must be in non-decreasing order")
    n = cal.get("n")
    if isinstance(n, bool) or not isinstance(n, int) or not len(q) <= n <= MAX_CALIBRATION_N:
        raise fail(".calibration.n", f"must be an integer from the number of quantiles ({len(q)}) up, got {n!r}")
    if not isinstance(cal.get("source", ""), str):
        raise fail(".calibration.source", "must be a string")


# ---- measuring a score ----------------------------------------------------------------------


def auroc(in_scores: np.ndarray, out_scores: np.ndarray) -> float:
    """Area under the ROC curve for telling `out_scores` (unusual) from `in_scores` by a
    higher score: the probability that a random unusual image outscores a random usual one,
    ties counting one half (the Mann-Whitney statistic)."""
    a, b = np.asarray(in_scores, np.float64), np.asarray(out_scores, np.float64)
    if len(a) == 0 or len(b) == 0:
        raise InvalidArgumentError("AUROC needs at least one score on each side")
    both = np.concatenate([a, b])
    order = np.argsort(both, kind="mergesort")
    ranks = np.empty(len(both))
    ranks[order] = np.arange(1, len(both) + 1)
    # Average the ranks of tied scores.
    values, first, counts = np.unique(both[order], return_index=True, return_counts=True)
    mean_rank = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(mean_rank, counts)
    return float((ranks[len(a) :].sum() - len(b) * (len(b) + 1) / 2.0) / (len(a) * len(b)))


def fpr_at_tpr(in_scores: np.ndarray, out_scores: np.ndarray, tpr: float = 0.95) -> float:
    """The fraction of usual images flagged when the threshold flags `tpr` of the unusual
    ones (the highest threshold that does)."""
    b = np.sort(np.asarray(out_scores, np.float64))
    threshold = b[int(np.floor((1.0 - tpr) * len(b)))]
    return float(np.mean(np.asarray(in_scores, np.float64) >= threshold))
