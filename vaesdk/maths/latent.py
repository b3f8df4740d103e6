"""Latent-space maths in numpy: posterior draws, prior draws, paths and directions.

Latents are float32 [N, D]. Every random function takes a `numpy.random.Generator`, so a
caller that seeds it gets the same numbers on any machine and any execution provider.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Union

import numpy as np

from ..base.checks import check_seed_value
from ..base.errors import BundleError, InvalidArgumentError
from .likelihood import kl_to_standard_normal

MAX_TRUNCATION_TRIES = 1000
# Far beyond any latent a trained model produces (the prior puts |z| > 10 at ~1e-23), yet
# small enough that a decoder's first layer cannot overflow float32.
MAX_ABS_LATENT = 1e6
# A latent dimension is "active" (carries information about the image) when its KL to the
# prior, averaged over a set of images, exceeds this many nats. Training, export, `vae info`
# and `vae eval` all count active dimensions with this one threshold.
ACTIVE_KL_NATS = 0.01


def rng_from(seed: int | np.random.Generator | None) -> np.random.Generator:
    """A Generator from an int seed, an existing Generator, or fresh entropy (None)."""
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, RandomStreams):
        raise InvalidArgumentError("this operation draws from one stream; pass an int seed or a numpy Generator")
    if seed is not None:
        check_seed_value(seed)
    return np.random.default_rng(seed)


@dataclass(frozen=True)
class RandomStreams:
    """Separate generators for latent draws and pixel draws that persist across calls.

    Passing one RandomStreams as `seed` to successive calls on consecutive batches gives the
    same numbers as a single call over all of them (the CLI relies on this for batches).
    """

    latent: np.random.Generator
    pixels: np.random.Generator

    @classmethod
    def from_seed(cls, seed: int | np.random.Generator | None) -> RandomStreams:
        return cls(*split_rng(seed, 2))


Seed = Union[int, np.random.Generator, RandomStreams, None]


def split_rng(seed: Seed, n: int) -> list[np.random.Generator]:
    """n independent streams (e.g. one for latents, one for pixels), so the number of draws
    made from one stream never shifts the others."""
    if isinstance(seed, RandomStreams):
        if n != 2:
            raise InvalidArgumentError("RandomStreams carries exactly two streams (latent, pixels)")
        return [seed.latent, seed.pixels]
    if isinstance(seed, np.random.Generator):
        return list(seed.spawn(n))
    root = _root_entropy(seed)
    return [_child(root, i) for i in range(n)]


def latent_stream(seed: Seed) -> np.random.Generator:
    """`split_rng(seed, 2)[0]` (the stream of latent draws) for calls that draw no pixels:
    an int or None seed skips building the pixel stream's generator, about half of what
    seeding costs; a Generator still spawns both, so what it spawns next is unchanged."""
    if isinstance(seed, (RandomStreams, np.random.Generator)):
        return split_rng(seed, 2)[0]
    return _child(_root_entropy(seed), 0)


def _root_entropy(seed: int | None) -> int:
    """The entropy of `SeedSequence(seed)`: the seed, checked (rng_from's check, without
    building a generator only to drop it), or fresh entropy for None."""
    return np.random.SeedSequence().entropy if seed is None else check_seed_value(seed)


def _child(entropy: int, i: int) -> np.random.Generator:
    """The generator of `SeedSequence(entropy).spawn(n)[i]` for any n > i, built directly: a
    spawned child is its parent's entropy with the spawn key (i,)."""
    return np.random.default_rng(np.random.SeedSequence(entropy, spawn_key=(i,)))


class ImageNoise:
    """The random numbers a score draws for each image, from streams of that image's own: the
    seed and the image's pixels choose them, so an image scores the same alone, in any batch
    and at any position (and two equal images score alike).

    The rule (docs/bundle-format.md, Scores): the image's key is the first 16 bytes of
    sha256(shape as 3 little-endian uint32, then the uint8 pixels [H, W, C] in C order), read as 4
    little-endian uint32 words w0..w3. Its posterior normals come from
    `default_rng(SeedSequence(seed, spawn_key=(w0, w1, w2, w3, 0)))`, [k, D] float32, and its
    dequantization uniforms (dequantized likelihoods only) from spawn key (w0, w1, w2, w3, 1),
    [k, C, H, W] float64. A Generator as the seed gives the call one seed drawn from it
    (`integers(2**63)`); None, fresh entropy."""

    def __init__(self, seed: int | np.random.Generator | None, images: np.ndarray):
        if isinstance(seed, np.random.Generator):
            entropy = int(seed.integers(2**63))
        elif isinstance(seed, RandomStreams):
            raise InvalidArgumentError("scores draw from streams of each image's own; pass an int seed or a numpy Generator")
        else:
            entropy = _root_entropy(seed)
        self._keys = [image_key(image) for image in images]
        self._entropy = entropy

    def _stream(self, i: int, which: int) -> np.random.Generator:
        return np.random.default_rng(np.random.SeedSequence(self._entropy, spawn_key=(*self._keys[i], which)))

    def normals(self, rows: slice, k: int, d: int) -> np.ndarray:
        """float32 [n, k, d]: the posterior normals of images `rows`."""
        return np.stack([self._stream(i, 0).standard_normal((k, d), dtype=np.float32) for i in range(*rows.indices(len(self._keys)))])

    def uniforms(self, rows: slice, shape: tuple[int, ...]) -> np.ndarray:
        """float64 [n, *shape]: the dequantization uniforms of images `rows`."""
        return np.stack([self._stream(i, 1).random(shape) for i in range(*rows.indices(len(self._keys)))])


class GivenNoise:
    """Scores from given numbers (the conformance vectors' check): normals [N, k, D] and
    uniforms [N, k, C, H, W] (or None)."""

    def __init__(self, normals: np.ndarray, uniforms: np.ndarray | None = None):
        self._normals, self._uniforms = normals, uniforms

    def normals(self, rows: slice, k: int, d: int) -> np.ndarray:
        return np.asarray(self._normals[rows], np.float32)

    def uniforms(self, rows: slice, shape: tuple[int, ...]) -> np.ndarray:
        if self._uniforms is None:
            raise InvalidArgumentError("this likelihood needs dequantization uniforms; give them")
        return np.asarray(self._uniforms[rows], np.float64)


def image_key(image: np.ndarray) -> tuple[int, int, int, int]:
    """The 4 words that pick an image's own random streams (ImageNoise)."""
    digest = hashlib.sha256(np.asarray(image.shape, "<u4").tobytes() + np.ascontiguousarray(image, np.uint8).tobytes()).digest()
    return tuple(int(w) for w in np.frombuffer(digest[:16], "<u4"))  # type: ignore[return-value]


@dataclass(frozen=True)
class Posterior:
    """q(z|x) = N(mean, diag(exp(logvar))) for a batch: mean and logvar are float32 [N, D].

    A plain autoencoder has no variance: `logvar` is None and `sample` returns the mean.
    """

    mean: np.ndarray
    logvar: np.ndarray | None = None

    @property
    def std(self) -> np.ndarray | None:
        return None if self.logvar is None else np.exp(0.5 * self.logvar)

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        if self.logvar is None:
            return self.mean
        eps = rng.standard_normal(self.mean.shape, dtype=np.float32)
        return (self.mean + np.exp(0.5 * self.logvar) * eps).astype(np.float32)

    def kl(self) -> np.ndarray:
        """KL(q || N(0, I)) per example and dimension, float64 [N, D]."""
        if self.logvar is None:
            raise InvalidArgumentError("a plain autoencoder has no posterior variance, so no KL")
        return kl_to_standard_normal(self.mean, self.logvar)


def prior_sample(
    n: int, dim: int, rng: np.random.Generator, temperature: float = 1.0, truncation: float | None = None
) -> np.ndarray:
    """z ~ N(0, temperature^2 I), optionally truncated to |z_i| <= truncation (before scaling).

    Truncation redraws out-of-range components, which trades diversity for typical samples.
    """
    check_finite_positive("temperature", temperature, allow_zero=True)
    z = rng.standard_normal((n, dim), dtype=np.float32)
    if truncation is not None:
        check_finite_positive("truncation", truncation)
        for _ in range(MAX_TRUNCATION_TRIES):
            bad = np.abs(z) > truncation
            if not bad.any():
                break
            z[bad] = rng.standard_normal(int(bad.sum()), dtype=np.float32)
        else:  # pragma: no cover - needs truncation far below any practical value
            np.clip(z, -truncation, truncation, out=z)
    return (z * np.float32(temperature)).astype(np.float32)


# The largest condition number (infinity norm) a stored prior's Cholesky factor may have:
# beyond it, densities and draws lose every digit to rounding.
MAX_PRIOR_CONDITION = 1e8


def check_prior_factors(means: np.ndarray, cholesky: np.ndarray, label: str) -> np.ndarray:
    """Check stored Gaussian factors, means [..., D] and lower-triangular Cholesky factors
    [..., D, D] with a positive diagonal (or positive standard deviations [..., D] of diagonal
    Gaussians): finite, means within the latent bound, and well-conditioned. Returns the
    factors' inverses. Raises BundleError naming `label`."""
    if not (np.isfinite(means).all() and np.isfinite(cholesky).all()):
        raise BundleError(f"{label}: means and cholesky must hold finite numbers; refit the prior")
    if means.size and np.abs(means).max() > MAX_ABS_LATENT:
        raise BundleError(f"{label}: a mean reaches {np.abs(means).max():.3g}, beyond the latent bound {MAX_ABS_LATENT:g}; refit the prior")
    with np.errstate(all="ignore"):
        if cholesky.ndim == means.ndim:  # diagonal: standard deviations [..., D]
            inverse = 1.0 / cholesky
            norm = cholesky.max(-1) * inverse.max(-1)
        else:
            try:
                inverse = np.linalg.inv(cholesky)
            except np.linalg.LinAlgError:
                inverse = np.full_like(cholesky, np.inf)
            norm = np.abs(cholesky).sum(-1).max(-1) * np.abs(inverse).sum(-1).max(-1)
    worst = float(np.max(np.where(np.isfinite(norm), norm, np.inf), initial=0.0))
    if not worst <= MAX_PRIOR_CONDITION:
        raise BundleError(
            f"{label}: a covariance factor is near-singular (condition number {worst:.3g}, the limit is {MAX_PRIOR_CONDITION:g}); "
            "refit the prior with more images or a larger ridge"
        )
    return inverse


def lerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Straight-line path: [T, D] for a, b [D] and t [T]."""
    t = np.asarray(t, np.float64)[:, None]
    return ((1.0 - t) * a.astype(np.float64) + t * b.astype(np.float64)).astype(np.float32)


def slerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Spherical path (constant angular speed, norm interpolated): [T, D].

    Under a Gaussian prior most mass lies near a sphere, so slerp keeps intermediate points
    typical where a straight line would pass through the low-norm centre. Falls back to a
    straight line when a and b are (anti)parallel or one is zero.
    """
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    na, nb = np.linalg.norm(a64), np.linalg.norm(b64)
    t = np.asarray(t, np.float64)[:, None]
    if na == 0.0 or nb == 0.0:
        return lerp(a, b, t[:, 0])
    cos = np.clip(np.dot(a64, b64) / (na * nb), -1.0, 1.0)
    omega = np.arccos(cos)
    if omega < 1e-6 or np.pi - omega < 1e-6:
        return lerp(a, b, t[:, 0])
    sin = np.sin(omega)
    unit_a, unit_b = a64 / na, b64 / nb
    direction = (np.sin((1.0 - t) * omega) * unit_a + np.sin(t * omega) * unit_b) / sin
    norm = (1.0 - t) * na + t * nb
    return (direction * norm).astype(np.float32)


def check_finite_positive(name: str, value: float, allow_zero: bool = False) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: an integer beyond float range
        raise InvalidArgumentError(f"{name} must be a number, got {value!r:.80}") from None
    if not np.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise InvalidArgumentError(f"{name} must be a finite number {bound}, got {value!r}")
    return v


def check_latents(z: np.ndarray, dim: int, name: str = "z") -> np.ndarray:
    """Validate a latent batch: float32 [N, D], finite. A single [D] vector becomes [1, D]."""
    try:
        z = np.asarray(z)
    except Exception:
        raise InvalidArgumentError(f"{name} must be an array of shape [N, {dim}]") from None
    if z.dtype.kind not in "fiu":  # floating or integer; not bool, complex, object or text
        raise InvalidArgumentError(f"{name} must hold real numbers, got dtype {z.dtype}")
    if z.ndim == 1:
        z = z[None]
    if z.ndim != 2 or z.shape[1] != dim:
        raise InvalidArgumentError(f"{name} must have shape [N, {dim}] for this model, got {tuple(z.shape)}")
    if z.shape[0] == 0:
        raise InvalidArgumentError(f"{name} is empty (shape {tuple(z.shape)})")
    given = z
    if z.dtype == np.float32:
        z = z.copy()  # the caller's array stays theirs; no float32 overflow is possible
    else:
        with np.errstate(over="ignore", invalid="ignore"):
            z = z.astype(np.float32)
    # One reduction answers both questions on valid input: NaN propagates through max, and
    # inf is beyond any bound. The two messages are worked out only for a batch that fails.
    if np.abs(z).max() <= MAX_ABS_LATENT:
        return z
    finite = np.isfinite(z)
    if not finite.all():
        row, col = (int(i) for i in np.argwhere(~finite)[0])
        raise InvalidArgumentError(
            f"{name} contains NaN or infinite values (or values beyond float32 range), got {given[row, col].item()!r} at [{row}, {col}]"
        )
    if z.size and np.abs(z).max() > MAX_ABS_LATENT:
        row, col = (int(i) for i in np.argwhere(np.abs(z) > MAX_ABS_LATENT)[0])
        raise InvalidArgumentError(
            f"{name} has values beyond +-{MAX_ABS_LATENT:g}, got {given[row, col].item()!r} at [{row}, {col}]; latents must lie within that range"
        )
    return z


def class_mean_directions(latents: np.ndarray, labels: np.ndarray, names: list[str] | tuple[str, ...]) -> dict[str, np.ndarray]:
    """For each class: mean latent of that class minus mean latent of all other images.

    Adding the vector to an image's latent moves it, on average, from "not this class" to
    "this class"; delta 1.0 is the full distance between the two group means.
    """
    out = {}
    for k, name in enumerate(names):
        inside = labels == k
        if inside.any() and (~inside).any():
            out[name] = (latents[inside].mean(0) - latents[~inside].mean(0)).astype(np.float32)
    return out
