"""The decoder's pixel likelihood p(x|z), one kind per entry of KINDS: which outputs the
decoder gives, log p(x|z) of 8-bit images, and draws of pixels.

Pixels are in [0, 1] units (pixel k sits at k/255), as the bundle format's graphs take and
give them. The kinds:

  discretized_gaussian   mean and logvar outputs: exact masses of the 256 bins
  dequantized_gaussian   mean, logvar (and a low-rank factor): the dequantized lower bound
  fixed_gaussian         mean output and a fixed sigma from the manifest: exact bin masses
  bernoulli              mean output (the probabilities): sum x log p + (1 - x) log(1 - p), the
                         binary cross-entropy a Bernoulli decoder is trained on; x in [0, 1] is
                         not binary, so this is the model's objective, not a normalised mass
  continuous_bernoulli   mean output (lambda): the continuous Bernoulli density of x, times the
                         bin width 1/255 (the density at the bin centre, not the bin's mass)
  none                   mean output, a deterministic decoder: no likelihood and no bounds;
                         scores measure reconstruction under a reference Gaussian instead

A kind is registered here with all it needs; nothing elsewhere lists the kinds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..base.errors import BundleError, UnsupportedOperationError
from . import likelihood

# Probabilities are clipped this far from 0 and 1 before their logarithm.
EPS = 1e-7
# The reference Gaussian of a decoder without a likelihood: its reconstruction error in bits.
REFERENCE_SIGMA = 0.1


@dataclass(frozen=True)
class PixelKind:
    name: str
    outputs: tuple[str, ...]  # the decoder's outputs, after `mean`
    bounds: bool  # whether -log p(x|z) gives the ELBO and the IW bound
    draws: bool  # whether pixels can be drawn from p(x|z)
    description: str


KINDS: dict[str, PixelKind] = {
    k.name: k
    for k in (
        PixelKind("discretized_gaussian", ("mean", "logvar"), True, True, "a Gaussian per pixel, discretized to the 256 levels"),
        PixelKind("dequantized_gaussian", ("mean", "logvar"), True, True, "a Gaussian per pixel, scored by the dequantized bound"),
        PixelKind("fixed_gaussian", ("mean",), True, True, "a Gaussian per pixel with a fixed sigma, discretized"),
        PixelKind("bernoulli", ("mean",), True, True, "a Bernoulli per pixel (binary cross-entropy on [0, 1] pixels)"),
        PixelKind("continuous_bernoulli", ("mean",), True, True, "a continuous Bernoulli per pixel"),
        PixelKind("none", ("mean",), False, False, "no likelihood: a deterministic decoder"),
    )
}


@dataclass(frozen=True)
class PixelLikelihood:
    """One bundle's p(x|z): its kind, the fixed sigma of `fixed_gaussian`, the rank of a
    low-rank factor (0 without one)."""

    kind: PixelKind
    sigma: float | None = None
    rank: int = 0

    @classmethod
    def from_manifest(cls, entry: dict[str, Any] | None) -> PixelLikelihood | None:
        """The likelihood of a validated manifest's `likelihood` entry (None for an ae)."""
        if not entry:
            return None
        name = entry["type"]
        if name == "discretized_gaussian" and entry.get("covariance") == "fixed":
            return cls(KINDS["fixed_gaussian"], float(entry["sigma"]))
        rank = int(entry.get("rank", 0)) if entry.get("covariance") == "lowrank" else 0
        return cls(KINDS[name], None, rank)

    @property
    def name(self) -> str:
        return self.kind.name

    @property
    def outputs(self) -> list[str]:
        """The decoder outputs p(x|z) needs, in the contract's order."""
        return list(self.kind.outputs) + (["factor"] if self.rank else [])

    def require_draws(self) -> None:
        if not self.kind.draws:
            raise UnsupportedOperationError(f"this model's decoder has no pixel likelihood ({self.kind.description}), so pixels cannot be drawn from p(x|z); decode the means instead")

    def log_prob(self, images: np.ndarray, res: list[np.ndarray], noise: np.ndarray | None = None) -> np.ndarray:
        """log p(x|z) in nats, float64, summed over the trailing C, H, W axes, for uint8
        images [..., C, H, W] against the decoder's outputs `res` (in `outputs` order,
        broadcastable to the images). `noise` (uniform in [0, 1), the outputs' shape) is the
        dequantization of `dequantized_gaussian`."""
        name = self.kind.name
        mean = res[0]
        if name == "dequantized_gaussian":
            assert noise is not None
            return likelihood.dequantized_log_prob(images, noise, mean, res[1], res[2] if self.rank else None)
        if name == "discretized_gaussian":
            lp = likelihood.discretized_gaussian_log_prob(images, mean, res[1])
        elif name in ("fixed_gaussian", "none"):
            sigma = self.sigma if name == "fixed_gaussian" else REFERENCE_SIGMA
            lp = likelihood.discretized_gaussian_log_prob(images, mean, np.full(np.shape(mean), 2.0 * math.log(sigma)))
        else:
            x = np.asarray(images, np.float64) / 255.0
            p = np.clip(np.asarray(mean, np.float64), EPS, 1.0 - EPS)
            lp = x * np.log(p) + (1.0 - x) * np.log1p(-p)
            if name == "continuous_bernoulli":
                lp = lp + continuous_bernoulli_log_norm(p) - math.log(255.0)
        lp = np.broadcast_to(lp, np.broadcast_shapes(np.shape(images), lp.shape))
        return lp.reshape(*lp.shape[:-3], -1).sum(-1)

    def draw(self, res: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
        """x ~ p(x|z) in [0, 1] units, float32 like the outputs, before rounding to 8-bit
        values; each image takes its uniforms or normals in one row of `rng`, so draws do not
        depend on how images are split into batches. Gaussians: see `Model.decode`."""
        self.require_draws()
        mean = res[0]
        n, pixels = len(mean), mean[0].size
        name = self.kind.name
        if name in ("discretized_gaussian", "dequantized_gaussian"):
            eps = rng.standard_normal((n, self.rank + pixels), dtype=np.float32)
            mean += np.exp(0.5 * res[1]) * eps[:, self.rank :].reshape(mean.shape)
            if self.rank:
                mean += np.einsum("nr,nrp->np", eps[:, : self.rank], res[2].reshape(n, self.rank, pixels)).reshape(mean.shape)
            return mean
        if name == "fixed_gaussian":
            return mean + np.float32(self.sigma) * rng.standard_normal((n, pixels), dtype=np.float32).reshape(mean.shape)
        u = rng.random((n, pixels), dtype=np.float32).reshape(mean.shape)
        if name == "bernoulli":
            return (u < mean).astype(np.float32)
        return continuous_bernoulli_quantile(np.clip(mean, EPS, 1.0 - EPS), u)


def continuous_bernoulli_log_norm(lam: np.ndarray) -> np.ndarray:
    """log C(lambda), C = 2 artanh(1 - 2 lambda) / (1 - 2 lambda) (2 at lambda = 1/2), float64;
    near 1/2 by its series, log 2 + log1p(t^2 / 3 + t^4 / 5) with t = 1 - 2 lambda."""
    lam = np.asarray(lam, np.float64)
    t = 1.0 - 2.0 * lam
    near = np.abs(t) < 1e-3
    safe = np.where(near, 0.5, t)
    exact = np.log(2.0 * np.arctanh(safe) / safe)
    series = math.log(2.0) + np.log1p(t * t / 3.0 + t**4 / 5.0)
    return np.where(near, series, exact)


def continuous_bernoulli_quantile(lam: np.ndarray, u: np.ndarray) -> np.ndarray:
    """The inverse CDF of the continuous Bernoulli at u: log(1 + u (2 lambda - 1) / (1 - lambda))
    / log(lambda / (1 - lambda)), and u itself at lambda = 1/2; float32."""
    lam64, u64 = np.asarray(lam, np.float64), np.asarray(u, np.float64)
    near = np.abs(lam64 - 0.5) < 1e-4
    safe = np.where(near, 0.25, lam64)
    x = np.log1p(u64 * (2.0 * safe - 1.0) / (1.0 - safe)) / np.log(safe / (1.0 - safe))
    return np.where(near, u64, x).astype(np.float32)


# The manifest's `likelihood.type` values: a fixed-sigma Gaussian is a discretized one with
# `covariance: "fixed"`.
MANIFEST_TYPES = tuple(k for k in KINDS if k != "fixed_gaussian")


def decoder_outputs(entry: dict[str, Any] | None, kind: str) -> list[str]:
    """The decoder outputs a manifest's `likelihood` entry asks for (a checked entry)."""
    if kind != "vae":
        return ["mean"]
    found = PixelLikelihood.from_manifest(entry)
    if found is None:
        raise BundleError("a vae bundle needs a likelihood entry")
    return found.outputs
