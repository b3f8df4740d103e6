"""An anomaly score that works, and its calibration into p-values.

Likelihood alone is a poor judge of what a model has not seen: a VAE trained on
Fashion-MNIST gives MNIST digits *higher* likelihood than its own test images, because simple
images are cheap to describe for any model. The score adds two kinds of evidence, each
measured in bits/dim:

    pixel(x)  = -log p(x|z) - complexity(x)       how badly the decoder explains the pixels,
                                                  beyond what any compressor needs for them
    latent(x) = -log p_prior(mu(x))                how far the image's code lies from where
                                                  the training images' codes lie

pixel follows Serra et al. (2020, "Input complexity and out-of-distribution detection with
likelihood-based generative models"): z is the first posterior draw of `Model.score` (one
decoder run per image, shared with the bounds), complexity(x) the shorter of zlib (level 9)
and raw LZMA2 (preset 6) on the image's bytes. It catches noise, textures, shuffled or
constant images, but an MNIST digit or a letter is simple enough to pass it. latent is the
density of the posterior mean under the bundle's fitted prior (the Gaussian mixture export
fits to the training latents; N(0, I) for a bundle without one): a digit is decoded well
enough, but its code falls where no garment's does.

    anomaly = (pixel - mean_pixel) / sd_pixel + (latent - mean_latent) / sd_latent

standardised by their means and spreads on held-out in-distribution images, so neither part
drowns the other whatever the image size, latent size or data set. A bundle without a
calibration has no such statistics: its anomaly is pixel + latent, unweighted. Every choice
here was made by measurement (benchmarks/anomaly.py; README, "Anomaly scores").

Calibration turns a score into a p-value: the fraction of held-out in-distribution images
(not used for training) scoring at least as high. Export scores the training run's validation
split and stores the standardisation and quantiles of the scores in the manifest under
`anomaly.calibration`; a bundle without them reports scores without p-values.
"""

from __future__ import annotations

import lzma
import math
import zlib
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from ..base.errors import BundleError, InvalidArgumentError, UnsupportedOperationError


class Described(Protocol):
    """What `check_flag` reads: a `Model` or a `ModelSpec`."""

    @property
    def manifest(self) -> Any: ...

    def require_vae(self, what: str) -> None: ...


class AnomalyParts(Protocol):
    """The raw parts of the anomaly score, bits/dim [N] each (a `Scores`)."""

    anomaly_pixel: np.ndarray | None
    anomaly_latent: np.ndarray | None


class PriorChoice(Protocol):
    @property
    def anomaly_prior(self) -> str: ...


class ScoringSpec(Protocol):
    @property
    def prior_set(self) -> PriorChoice: ...


class Scorable(Protocol):
    """What `calibrate_anomaly` needs of a model (a `Model` is one): to refuse a model
    without a likelihood, to score images without the calibration being replaced, and the
    prior whose density the latent part uses."""

    @property
    def spec(self) -> ScoringSpec: ...

    def require_vae(self, what: str) -> None: ...

    def score(self, images: Any, *, k: int, seed: int, calibrated: bool) -> AnomalyParts: ...

SCORE = "pixel-plus-latent/2"
SCORE_DESCRIPTION = (
    "sum of two parts, each standardised on held-out images: pixel = -log p(x|z) for one posterior draw z minus the "
    "bits/dim of the shorter of zlib level 9 and raw LZMA2 preset 6 on the image's bytes; latent = -log density of the "
    "posterior mean under the fitted prior, in bits/dim; higher = more unusual"
)
CALIBRATION_SEED = 0
QUANTILES = 1001  # stored quantile levels 0, 0.001, ..., 1
MIN_CALIBRATION = 100
MAX_CALIBRATION_N = 1 << 31
PARTS = ("pixel", "latent")


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


def combine(pixel: np.ndarray, latent: np.ndarray, calibration: Calibration | None) -> np.ndarray:
    """The anomaly score from its two parts (bits/dim, float64 [N]): standardised and added
    when the bundle is calibrated, else added as they are."""
    pixel, latent = np.asarray(pixel, np.float64), np.asarray(latent, np.float64)
    if calibration is None:
        return pixel + latent
    (mp, sp), (ml, sl) = (calibration.standardization[k] for k in PARTS)
    return (pixel - mp) / sp + (latent - ml) / sl


@dataclass(frozen=True)
class Calibration:
    """Quantiles of the anomaly score over n held-out in-distribution images, at the evenly
    spaced levels 0, 1/(m-1), ..., 1 (m = len(quantiles)); the (mean, sd) of each part over
    the same images; and the prior of the latent part."""

    quantiles: np.ndarray
    n: int
    source: str
    standardization: dict[str, tuple[float, float]]
    prior: str

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
        return {
            "quantiles": [float(x) for x in self.quantiles],
            "n": self.n,
            "source": self.source,
            "prior": self.prior,
            "standardization": {k: {"mean": float(m), "sd": float(sd)} for k, (m, sd) in self.standardization.items()},
        }


def fit_calibration(pixel: np.ndarray, latent: np.ndarray, prior: str, source: str = "held-out images") -> dict[str, Any]:
    """The manifest's `anomaly` entry fitted to the raw (unstandardised) score parts of held-out
    in-distribution images, float64 [n] each, whose latent part was measured under `prior`: the
    score's name and description, and its calibration (standardisation, quantiles, n, source)."""
    parts = {"pixel": np.asarray(pixel, np.float64), "latent": np.asarray(latent, np.float64)}
    n = len(parts["pixel"])
    if not all(np.isfinite(v).all() for v in parts.values()):
        raise InvalidArgumentError("some calibration images have a non-finite anomaly score; the model is broken for them")
    standardization = {k: (float(np.mean(v)), float(np.std(v))) for k, v in parts.items()}
    if min(sd for _, sd in standardization.values()) <= 0.0:
        raise InvalidArgumentError("the calibration images all score the same; calibrate on a varied held-out set")
    m = min(QUANTILES, n)
    draft = Calibration(np.zeros(2), n, str(source), standardization, prior)
    quantiles = np.quantile(combine(parts["pixel"], parts["latent"], draft), np.linspace(0.0, 1.0, m))
    calibration = Calibration(quantiles, n, str(source), standardization, draft.prior)
    return {"score": SCORE, "description": SCORE_DESCRIPTION, "calibration": calibration.to_manifest()}


def calibrate_anomaly(model: Scorable, images: Any, source: str = "held-out images") -> dict[str, Any]:
    """Score held-out in-distribution images (NOT used for training; anything `Model.score`
    takes) with a `Model` and return the manifest's `anomaly` entry (`fit_calibration`).
    Export writes it; `vaesdk.runtime.calibration.calibrate_bundle` adds it to a bundle."""
    model.require_vae("calibrating anomaly scores")
    n = len(images) if isinstance(images, (list, tuple, np.ndarray)) else 0
    if n < MIN_CALIBRATION:
        raise InvalidArgumentError(f"calibration needs at least {MIN_CALIBRATION} held-out images, got {n}")
    # Raw parts, whatever calibration the bundle holds now (it is being replaced).
    # k=1 whatever the default: the parts use the first posterior draw only.
    scores = model.score(images, k=1, seed=CALIBRATION_SEED, calibrated=False)
    assert scores.anomaly_pixel is not None and scores.anomaly_latent is not None  # uncalibrated scores carry their parts
    return fit_calibration(scores.anomaly_pixel, scores.anomaly_latent, model.spec.prior_set.anomaly_prior, source)


def flag_unusual(p_values: np.ndarray | None, p_below: float) -> np.ndarray:
    """bool [N]: p_value < p_below. Needs p-values (a calibrated bundle)."""
    if isinstance(p_below, bool) or not isinstance(p_below, (int, float)) or not 0.0 < p_below < 1.0:
        raise InvalidArgumentError(f"the p-value threshold must be a number between 0 and 1 (e.g. 0.01), got {p_below!r}")
    if p_values is None:
        raise UnsupportedOperationError(
            "this bundle has no anomaly calibration, so there are no p-values to flag by; add one with "
            "`vae calibrate BUNDLE --held-out DIR` (images the model did not train on), or threshold the anomaly score yourself"
        )
    return np.asarray(p_values) < p_below


def check_flag(model: Described, p_below: float) -> None:
    """Raise unless images of `model` can be flagged at `p_below` (a calibrated VAE bundle,
    a threshold in (0, 1)): called before any work is done."""
    model.require_vae("anomaly scores")
    cal = read_calibration(model.manifest.data)
    flag_unusual(None if cal is None else np.zeros(0), p_below)


def read_calibration(data: dict[str, Any]) -> Calibration | None:
    """The calibration stored in a (validated) manifest, or None when it holds none or holds
    one for a different score."""
    entry = data.get("anomaly")
    if not entry or entry.get("score") != SCORE or not entry.get("calibration"):
        return None
    cal = entry["calibration"]
    standardization = {k: (float(cal["standardization"][k]["mean"]), float(cal["standardization"][k]["sd"])) for k in PARTS}
    return Calibration(
        np.asarray(cal["quantiles"], np.float64), int(cal["n"]), str(cal.get("source", "")), standardization, str(cal["prior"])
    )


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
    if entry["score"] != SCORE:
        return  # an older score's calibration: kept, not used
    if not isinstance(cal.get("prior"), str):
        raise fail(".calibration.prior", "must name the prior of the latent part ('standard' or a mixture)")
    std = cal.get("standardization")
    if not isinstance(std, dict):
        raise fail(".calibration.standardization", f"must be an object with {' and '.join(PARTS)}")
    for part in PARTS:
        ms = std.get(part)
        if not isinstance(ms, dict):
            raise fail(f".calibration.standardization.{part}", "must be an object {mean, sd}")
        for key in ("mean", "sd"):
            x = ms.get(key)
            if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x) or (key == "sd" and x <= 0):
                raise fail(f".calibration.standardization.{part}.{key}", f"must be a finite number{' > 0' if key == 'sd' else ''}, got {x!r:.40}")


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
