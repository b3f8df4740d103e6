"""An anomaly score that works, and its calibration into p-values.

Likelihood alone is a poor judge of what a model has not seen: a VAE trained on
Fashion-MNIST gives MNIST digits *higher* likelihood than its own test images, because simple
images are cheap to describe for any model. The score measures each image by a few parts,
each a number per image:

    pixel(x)       = -log p(x|z) - complexity(x)   how badly the decoder explains the pixels,
                                                   beyond what any compressor needs for them
    latent(x)      = -log p_prior(mu(x))            how far the image's code lies from where
                                                   the training images' codes lie
    complexity(x)                                  bits/dim a lossless compressor needs
    colour(x)                                      the largest spread between an image's colour
                                                   channels at any pixel (0 for grey images)
    decoder_logvar(x) = mean log sigma^2(z)         the decoder's own uncertainty at the image's
                                                   code: its mean log-variance over the pixels

pixel follows Serra et al. (2020, "Input complexity and out-of-distribution detection with
likelihood-based generative models"): z is the first posterior draw of `Model.score` (one
decoder run per image, shared with the bounds), complexity(x) the shorter of zlib (level 9)
and raw LZMA2 (preset 6) on the image's bytes. latent is the density of the posterior mean
under the bundle's fitted prior (N(0, I) for a bundle without one), both in bits/dim.

No single part, and no sum of them, tells every kind of stranger apart. Subtracting the
complexity makes incompressible noise look *well* explained; blank images are explained well
and compress to nothing; a grey garment shown to a model of colour emoji has a plausible
pixel part and complexity, and no colour. So the score (`density-of-parts/3`) is how rare the
image's whole vector of features is among held-out in-distribution images:

    f(x)     = (pixel, latent, complexity, log(complexity + 0.001), [log(1 + colour)])

or, for a colour model whose decoder gives a variance per pixel,

    f(x)     = (decoder_logvar, latent, complexity, log(complexity + 0.001), log(1 + colour))

    anomaly  = -log( mean_j exp(-|s(f(x)) - s(f_j)|^2 / (2 h^2)) )

a Gaussian kernel density over the standardised features s(f_j) of up to 2,000 calibration
images (stored in the manifest), h = m^(-1/(d + 4)) for m points in d dimensions (Scott's
rule). Both ends of a feature count: complexity near 8 bits/dim (noise) and near 0 (a blank
image) are both rare. The colour feature is used by colour models only. decoder_logvar is,
up to an affine map, the -log p(x|z) the decoder expects at z (the entropy of its Gaussian),
where pixel is the one it gives x: on colour images the pixel part's tail is held by flat
colour images the decoder is over-confident about, and with pixel in place of decoder_logvar
the emoji model flagged 77% of Fashion-MNIST garments at p < 0.01 instead of 93% (grey
models keep pixel: with decoder_logvar the fashion-mnist model flagged 85% of noised
garments instead of 100%). Every choice here was made by measurement
(benchmarks/anomaly_features.py compares the ways of combining the parts;
benchmarks/anomaly.py the compressors; docs/anomaly.md).

Calibration turns a score into a p-value: the fraction of held-out in-distribution images
(not used for training) scoring at least as high. Each calibration image that is also a
point of the density is scored without itself (leave one out), so its score is distributed
as a new image's is. Export scores the training run's validation split and stores the
density and the quantiles of the scores in the manifest under `anomaly.calibration`; a bundle
without them reports the unweighted sum pixel + latent and no p-values. Bundles calibrated
for the earlier score `pixel-plus-latent/2` (the two parts standardised on held-out images
and added) keep it and their p-values.
"""

from __future__ import annotations

import lzma
import math
import zlib
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from ..base.errors import BundleError, InvalidArgumentError, UnsupportedOperationError
from .likelihood import nats_to_bpd
from .priors import STANDARD_PRIOR


class Described(Protocol):
    """What `check_flag` reads: a `Model` or a `ModelSpec`."""

    @property
    def manifest(self) -> Any: ...

    def require_vae(self, what: str) -> None: ...


class AnomalyParts(Protocol):
    """The raw parts of the anomaly score, float64 [N] each (a `Scores`)."""

    anomaly_pixel: np.ndarray | None
    anomaly_latent: np.ndarray | None
    anomaly_complexity: np.ndarray | None
    anomaly_colour: np.ndarray | None
    anomaly_decoder_logvar: np.ndarray | None


class PriorChoice(Protocol):
    @property
    def anomaly_prior(self) -> str: ...

    def check_anomaly_prior(self, prior: str) -> str: ...

    def log_density(self, z: np.ndarray, prior: str) -> np.ndarray: ...


class ScoringSpec(Protocol):
    @property
    def prior_set(self) -> PriorChoice: ...

    @property
    def image_shape(self) -> tuple[int, int, int]: ...

    @property
    def calibration(self) -> Calibration | None: ...


class Scorable(Protocol):
    """What `calibrate_anomaly` needs of a model (a `Model` is one): to refuse a model
    without a likelihood, to score images without the calibration being replaced, and the
    prior whose density the latent part uses."""

    @property
    def spec(self) -> ScoringSpec: ...

    def require_vae(self, what: str) -> None: ...

    def score(self, images: Any, *, k: int, seed: int, calibrated: bool) -> AnomalyParts: ...

    def encode(self, images: Any) -> Any: ...

SCORE = "density-of-parts/3"
SCORE_DESCRIPTION = (
    "-log of a Gaussian kernel density, over held-out in-distribution images, of the image's standardised features: "
    "pixel = -log p(x|z) for one posterior draw z minus the bits/dim of the shorter of zlib level 9 and raw LZMA2 preset 6 "
    "on the image's bytes; latent = -log density of the posterior mean under the fitted prior, in bits/dim; that complexity "
    "and its log; for colour models log(1 + the largest channel spread at any pixel), and in place of pixel, when the "
    "decoder gives a variance, the mean log-variance of p(x|z) at that draw; higher = more unusual"
)
LEGACY_SCORE = "pixel-plus-latent/2"  # read and used; no longer written
CALIBRATION_SEED = 0
QUANTILES = 1001  # stored quantile levels 0, 0.001, ..., 1
MIN_CALIBRATION = 100
MAX_CALIBRATION_N = 1 << 31
PARTS = ("pixel", "latent")  # the parts of the legacy score
MAX_POINTS = 2000  # calibration images kept as points of the density
COMPLEXITY_FLOOR = 1e-3  # bits/dim added before the log: a blank image compresses to about 0.02
GREY_FEATURES = ("pixel", "latent", "complexity", "log_complexity")
COLOUR_FEATURES = (*GREY_FEATURES, "log_colour")
# A colour model whose decoder gives a variance per pixel: its mean log-variance in place of pixel.
COLOUR_VARIANCE_FEATURES = ("decoder_logvar", "latent", "complexity", "log_complexity", "log_colour")
FEATURES = (*COLOUR_FEATURES, "decoder_logvar")  # every feature a density may name


def default_features(colour: bool, decoder_variance: bool) -> tuple[str, ...]:
    """The features a new calibration uses: for a colour model with a decoder variance,
    COLOUR_VARIANCE_FEATURES; else COLOUR_FEATURES or GREY_FEATURES."""
    if not colour:
        return GREY_FEATURES
    return COLOUR_VARIANCE_FEATURES if decoder_variance else COLOUR_FEATURES


@dataclass(frozen=True)
class Parts:
    """The raw parts of the anomaly score of N images, float64 [N] each: pixel and latent in
    bits/dim, complexity in bits/dim, colour the largest channel spread at any pixel (0..255),
    decoder_logvar the mean log-variance of p(x|z) at the first posterior draw (None for a
    decoder without a variance output)."""

    pixel: np.ndarray
    latent: np.ndarray
    complexity: np.ndarray
    colour: np.ndarray
    decoder_logvar: np.ndarray | None = None

    @staticmethod
    def of(scores: AnomalyParts) -> Parts:
        """The parts an uncalibrated `Scores` carries."""
        values = (scores.anomaly_pixel, scores.anomaly_latent, scores.anomaly_complexity, scores.anomaly_colour)
        assert all(v is not None for v in values)  # every Scores from Model.score carries them
        logvar = scores.anomaly_decoder_logvar
        return Parts(*(np.asarray(v, np.float64) for v in values), None if logvar is None else np.asarray(logvar, np.float64))  # type: ignore[arg-type]

    def take(self, index: np.ndarray) -> Parts:
        """The parts of the images at `index`."""
        logvar = None if self.decoder_logvar is None else self.decoder_logvar[index]
        return Parts(self.pixel[index], self.latent[index], self.complexity[index], self.colour[index], logvar)

    def features(self, names: tuple[str, ...]) -> np.ndarray:
        """float64 [N, len(names)]: the named features (FEATURES) of each image."""
        columns = {
            "pixel": lambda: self.pixel,
            "latent": lambda: self.latent,
            "complexity": lambda: self.complexity,
            "log_complexity": lambda: np.log(self.complexity + COMPLEXITY_FLOOR),
            "log_colour": lambda: np.log1p(self.colour),
            "decoder_logvar": lambda: self._decoder_logvar(),
        }
        return np.stack([np.asarray(columns[n](), np.float64) for n in names], axis=1)

    def _decoder_logvar(self) -> np.ndarray:
        if self.decoder_logvar is None:
            raise BundleError("the anomaly calibration uses the decoder's variance, which this model's decoder does not give")
        return self.decoder_logvar


def _log_sum_exp(a: np.ndarray) -> np.ndarray:
    """log(sum(exp(a), axis=1)), stable, float64 [N]."""
    top = np.max(a, axis=1, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    return top[:, 0] + np.log(np.exp(a - top).sum(axis=1))


@dataclass(frozen=True)
class FeatureDensity:
    """A Gaussian kernel density over standardised features: `points` [m, d] are the
    calibration images' features minus `center`, divided by `scale` (d each); `bandwidth` the
    kernel's standard deviation in those units."""

    features: tuple[str, ...]
    center: np.ndarray
    scale: np.ndarray
    bandwidth: float
    points: np.ndarray

    CHUNK = 256  # images per [chunk, m, d] block

    @staticmethod
    def fit(features: tuple[str, ...], values: np.ndarray, points: np.ndarray) -> FeatureDensity:
        """The density of `values[points]` (float64 [n, d], index array `points`), standardised
        by the mean and sd of all n rows (a feature every row shares is scaled by 1)."""
        center, sd = values.mean(axis=0), values.std(axis=0)
        scale = np.where(sd > 0.0, sd, 1.0)
        chosen = (values[points] - center) / scale
        bandwidth = float(len(chosen) ** (-1.0 / (values.shape[1] + 4)))
        return FeatureDensity(tuple(features), center, scale, bandwidth, chosen)

    def anomaly(self, values: np.ndarray, leave_out: np.ndarray | None = None) -> np.ndarray:
        """-log of the mean kernel value at each row of `values` [N, d] (the kernel's constant
        left out: the score only ranks). `leave_out` [N]: the index of the point that row is
        (its own point, skipped, the mean taken over the others), or -1."""
        q = (np.asarray(values, np.float64) - self.center) / self.scale
        out = np.empty(len(q))
        m = len(self.points)
        for lo in range(0, len(q), self.CHUNK):
            block = q[lo : lo + self.CHUNK]
            a = -((block[:, None, :] - self.points[None, :, :]) ** 2).sum(axis=2) / (2.0 * self.bandwidth**2)
            count = m
            if leave_out is not None:
                own = leave_out[lo : lo + self.CHUNK]
                rows = np.flatnonzero(own >= 0)
                a[rows, own[rows]] = -np.inf
                count = np.where(own >= 0, m - 1, m)
            out[lo : lo + len(block)] = np.log(count) - _log_sum_exp(a)
        return out

    def to_manifest(self) -> dict[str, Any]:
        return {
            "features": list(self.features),
            "center": [float(x) for x in self.center],
            "scale": [float(x) for x in self.scale],
            "bandwidth": self.bandwidth,
            "points": [[float(x) for x in row] for row in self.points],
        }

    @staticmethod
    def from_manifest(entry: dict[str, Any]) -> FeatureDensity:
        return FeatureDensity(
            tuple(entry["features"]), np.asarray(entry["center"], np.float64), np.asarray(entry["scale"], np.float64),
            float(entry["bandwidth"]), np.asarray(entry["points"], np.float64).reshape(len(entry["points"]), len(entry["features"])),
        )  # fmt: skip


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


def latent_part(prior_set: PriorChoice, mean: np.ndarray, prior: str, dims: int) -> np.ndarray:
    """The latent part of N images, float64 [N]: -log density of their posterior means [N, D]
    under `prior` ('standard' or a mixture), in bits/dim of images of `dims` values."""
    return nats_to_bpd(prior_set.log_density(mean, prior), dims)


def colour_spread(images: np.ndarray) -> np.ndarray:
    """The largest spread between an image's channels at any pixel, max over pixels of
    (max over channels - min over channels), float64 [N] for uint8 images [N, H, W, C]: 0 for
    a grey image, up to 255."""
    images = np.asarray(images)
    if images.shape[-1] == 1:
        return np.zeros(len(images))
    return (images.max(axis=-1).astype(np.int16) - images.min(axis=-1)).reshape(len(images), -1).max(axis=1).astype(np.float64)


def combine(parts: Parts, calibration: Calibration | None) -> np.ndarray:
    """The anomaly score of images from their parts, float64 [N]: the calibration's score,
    or pixel + latent, unweighted, for a bundle without one."""
    if calibration is None:
        return parts.pixel + parts.latent
    return calibration.anomaly(parts)


@dataclass(frozen=True)
class Calibration:
    """Quantiles of the anomaly score over n held-out in-distribution images, at the evenly
    spaced levels 0, 1/(m-1), ..., 1 (m = len(quantiles)); the prior of the latent part; and
    the score's own statistics: the feature density (`density-of-parts/3`) or, for the
    legacy score `pixel-plus-latent/2`, the (mean, sd) of each part (`standardization`)."""

    quantiles: np.ndarray
    n: int
    source: str
    standardization: dict[str, tuple[float, float]] | None
    prior: str
    density: FeatureDensity | None = None

    @property
    def score(self) -> str:
        return SCORE if self.density is not None else LEGACY_SCORE

    def anomaly(self, parts: Parts) -> np.ndarray:
        """The score of images from their parts, float64 [N]."""
        if self.density is not None:
            return self.density.anomaly(parts.features(self.density.features))
        assert self.standardization is not None
        (mp, sp), (ml, sl) = (self.standardization[k] for k in PARTS)
        return (parts.pixel - mp) / sp + (parts.latent - ml) / sl

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
        entry: dict[str, Any] = {"quantiles": [float(x) for x in self.quantiles], "n": self.n, "source": self.source, "prior": self.prior}
        if self.density is not None:
            entry["density"] = self.density.to_manifest()
        else:
            assert self.standardization is not None
            entry["standardization"] = {k: {"mean": float(m), "sd": float(sd)} for k, (m, sd) in self.standardization.items()}
        return entry


def _own_points(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(the indices of the n calibration images that become the density's points, and for
    each image the index of its own point or -1): all n, or MAX_POINTS chosen with
    CALIBRATION_SEED."""
    chosen = np.arange(n) if n <= MAX_POINTS else np.sort(np.random.default_rng(CALIBRATION_SEED).choice(n, MAX_POINTS, replace=False))
    own = np.full(n, -1)
    own[chosen] = np.arange(len(chosen))
    return chosen, own


def fit_calibration(parts: Parts, prior: str, source: str = "held-out images", *, colour: bool, features: tuple[str, ...] | None = None) -> dict[str, Any]:
    """The manifest's `anomaly` entry fitted to the raw parts of held-out in-distribution
    images (n of them; their latent part measured under `prior`): the score's name and
    description, and its calibration. The density's points are all n images, or MAX_POINTS of
    them chosen with CALIBRATION_SEED; its features are `features`, by default
    `default_features` (the colour one when `colour`, a colour model). The quantiles are those
    of every image's score, a point's own score taken without itself."""
    names = features or default_features(colour, parts.decoder_logvar is not None)
    values = parts.features(names)
    n = len(values)
    if n < 2 or not np.isfinite(values).all():
        raise InvalidArgumentError("some calibration images have a non-finite anomaly score; the model is broken for them")
    if np.all(values.std(axis=0)[:2] == 0.0):
        raise InvalidArgumentError("the calibration images all score the same; calibrate on a varied held-out set")
    chosen, own = _own_points(n)
    density = FeatureDensity.fit(names, values, chosen)
    scores = density.anomaly(values, leave_out=own)
    quantiles = np.quantile(scores, np.linspace(0.0, 1.0, min(QUANTILES, n)))
    calibration = Calibration(quantiles, n, str(source), None, prior, density)
    return {"score": SCORE, "description": SCORE_DESCRIPTION, "calibration": calibration.to_manifest()}


def calibrate_anomaly(model: Scorable, images: Any, source: str = "held-out images", prior: str | None = None) -> dict[str, Any]:
    """Score held-out in-distribution images (NOT used for training; anything `Model.score`
    takes) with a `Model` and return the manifest's `anomaly` entry (`fit_calibration`).
    `prior`: the prior whose density gives the latent part ('standard' or a mixture of the
    bundle; default: the prior of the bundle's current calibration when it has one, so a
    recalibration keeps its latent part, else the default prior when it is a mixture). Export
    writes the entry;
    `vaesdk.runtime.calibration.calibrate_bundle` adds it to a bundle."""
    model.require_vae("calibrating anomaly scores")
    n = len(images) if isinstance(images, (list, tuple, np.ndarray)) else 0
    if n < MIN_CALIBRATION:
        raise InvalidArgumentError(f"calibration needs at least {MIN_CALIBRATION} held-out images, got {n}")
    prior_set = model.spec.prior_set
    if prior is None:
        current = model.spec.calibration
        prior = current.prior if current is not None and current.prior is not None else prior_set.anomaly_prior
    prior = prior_set.check_anomaly_prior(prior)
    return fit_calibration(raw_parts(model, images, prior), prior, source, colour=model.spec.image_shape[2] == 3)


def raw_parts(model: Scorable, images: Any, prior: str) -> Parts:
    """The parts a calibration is fitted to: k=1 whatever the default (the parts use the first
    posterior draw only), seeded with CALIBRATION_SEED, whatever calibration the bundle holds
    now, the latent part under `prior`."""
    parts = Parts.of(model.score(images, k=1, seed=CALIBRATION_SEED, calibrated=False))
    if prior == model.spec.prior_set.anomaly_prior:
        return parts
    h, w, c = model.spec.image_shape
    latent = latent_part(model.spec.prior_set, model.encode(images).mean, prior, h * w * c)
    return Parts(parts.pixel, latent, parts.complexity, parts.colour, parts.decoder_logvar)


def scores_as_new(model: Scorable, images: np.ndarray, calibration: Calibration, folds: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """(anomaly scores, p-values) of a model's own calibration images (the same images in the
    same order), as images it has not seen would get them: the score of each without its own
    point in the density, and its p-value from a calibration fitted to the other `folds` - 1
    folds (seeded). A calibration image scored as it is sits on its own point and looks more
    usual than it is; this is how the bundled colour model, whose only held-out images are its
    calibration images, measures its calibration and separation honestly."""
    parts = raw_parts(model, images, calibration.prior)
    n = len(parts.pixel)
    if calibration.density is None or calibration.n != n:
        raise InvalidArgumentError(f"these {n} images are not the {calibration.n} images of the bundle's {calibration.score} calibration")
    names = calibration.density.features
    _, own = _own_points(n)
    anomaly = calibration.density.anomaly(parts.features(names), leave_out=own)
    p_values = np.empty(n)
    order = np.random.default_rng(CALIBRATION_SEED).permutation(n)
    for fold in np.array_split(order, folds):
        rest = np.setdiff1d(order, fold)
        fitted = read_calibration({"anomaly": fit_calibration(parts.take(rest), calibration.prior, colour="log_colour" in names, features=names)})
        assert fitted is not None
        p_values[fold] = fitted.p_values(fitted.anomaly(parts.take(fold)))
    return anomaly, p_values


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
    one for a score this runtime does not compute."""
    entry = data.get("anomaly")
    if not entry or entry.get("score") not in (SCORE, LEGACY_SCORE) or not entry.get("calibration"):
        return None
    cal = entry["calibration"]
    quantiles, n, source, prior = np.asarray(cal["quantiles"], np.float64), int(cal["n"]), str(cal.get("source", "")), str(cal["prior"])
    if entry["score"] == SCORE:
        return Calibration(quantiles, n, source, None, prior, FeatureDensity.from_manifest(cal["density"]))
    standardization = {k: (float(cal["standardization"][k]["mean"]), float(cal["standardization"][k]["sd"])) for k in PARTS}
    return Calibration(quantiles, n, source, standardization, prior)


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
        if not _finite(x):
            raise fail(".calibration.quantiles", f"must hold finite numbers, found {x!r:.40}")
    if any(b < a for a, b in zip(q, q[1:])):
        raise fail(".calibration.quantiles", "must be in non-decreasing order")
    n = cal.get("n")
    if isinstance(n, bool) or not isinstance(n, int) or not len(q) <= n <= MAX_CALIBRATION_N:
        raise fail(".calibration.n", f"must be an integer from the number of quantiles ({len(q)}) up, got {n!r}")
    if not isinstance(cal.get("source", ""), str):
        raise fail(".calibration.source", "must be a string")
    if entry["score"] not in (SCORE, LEGACY_SCORE):
        return  # another score's calibration: kept, not used
    if not isinstance(cal.get("prior"), str):
        raise fail(".calibration.prior", "must name the prior of the latent part ('standard' or a mixture)")
    if entry["score"] == SCORE:
        _check_density(cal.get("density"), n, fail)
        return
    std = cal.get("standardization")
    if not isinstance(std, dict):
        raise fail(".calibration.standardization", f"must be an object with {' and '.join(PARTS)}")
    for part in PARTS:
        ms = std.get(part)
        if not isinstance(ms, dict):
            raise fail(f".calibration.standardization.{part}", "must be an object {mean, sd}")
        for key in ("mean", "sd"):
            x = ms.get(key)
            if not _finite(x) or (key == "sd" and x <= 0):
                raise fail(f".calibration.standardization.{part}.{key}", f"must be a finite number{' > 0' if key == 'sd' else ''}, got {x!r:.40}")


def _finite(x: Any) -> bool:
    return not isinstance(x, bool) and isinstance(x, (int, float)) and math.isfinite(x)


def _check_density(density: Any, n: int, fail: Any) -> None:
    where = ".calibration.density"
    if not isinstance(density, dict):
        raise fail(where, "must be an object {features, center, scale, bandwidth, points}")
    names = density.get("features")
    if not isinstance(names, list) or not names or len(set(map(str, names))) != len(names) or not set(names) <= set(FEATURES):
        raise fail(f"{where}.features", f"must be a list of distinct feature names from {list(FEATURES)}, got {names!r:.80}")
    d = len(names)
    for key in ("center", "scale"):
        v = density.get(key)
        if not isinstance(v, list) or len(v) != d or not all(_finite(x) for x in v) or (key == "scale" and min(v) <= 0):
            raise fail(f"{where}.{key}", f"must be a list of {d} finite numbers{' > 0' if key == 'scale' else ''}, one per feature")
    h = density.get("bandwidth")
    if not _finite(h) or h <= 0:
        raise fail(f"{where}.bandwidth", f"must be a finite number > 0, got {h!r:.40}")
    points = density.get("points")
    if not isinstance(points, list) or not 2 <= len(points) <= min(n, MAX_POINTS):
        raise fail(f"{where}.points", f"must be a list of 2 to min(n, {MAX_POINTS}) points")
    for row in points:
        if not isinstance(row, list) or len(row) != d or not all(_finite(x) for x in row):
            raise fail(f"{where}.points", f"must hold lists of {d} finite numbers, one per feature")


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
