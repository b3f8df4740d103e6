"""Latent priors: a model's N(0, I), the Gaussian mixtures and Gaussians fitted after training,
and `PriorSet`, the priors of one bundle with the format's naming and default rule.

A VAE's encoder does not fill its prior N(0, I) evenly (the "prior hole"), so draws from
N(0, I) often land where no training image encodes and decode to blurry mixtures. A
mixture fitted to the encoded training images samples where the decoder was trained.

The mixture is stored as an .npz file beside the ONNX graphs, covered by the manifest's sha256
and size like them, and read by the container rules of docs/bundle-format.md ("The prior
file"; `read_prior_arrays`), never unpickled:
  weights   float64 [K]        non-negative, summing to 1
  means     float64 [K, D]
  cholesky  float64 [K, D, D]  lower-triangular factors L_k of the covariances L_k L_k^T

Draws: a component k from `weights`, then z = means[k] + temperature * L_k eps with
eps ~ N(0, I) truncated to |eps_i| <= truncation as in `latent.prior_sample`. So temperature
scales each component's spread around its mean (not the spacing of the components), and
truncation limits how far inside its component a draw may fall.

`PriorSet` holds everything a bundle's facts decide about its priors, with no onnxruntime
session: their names in order, the default, draws, log-densities and the errors for a prior a
model does not have (docs/bundle-format.md, "Names").
"""

from __future__ import annotations

import io
import math
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..base.errors import BundleError, InvalidArgumentError, UnsupportedOperationError
from .latent import LatentGaussian, check_prior_factors, prior_sample
from .likelihood import gaussian_log_prob

STANDARD_PRIOR = "standard"  # the model's own prior N(0, I); fitted Gaussians and mixtures take other names

MAX_COMPONENTS = 4096
ARRAYS = ("weights", "means", "cholesky")
NPY_ENTRIES = tuple(f"{k}.npy" for k in ARRAYS)
# A diagonal mixture stores each component's standard deviations, [K, D], in place of a
# Cholesky factor [K, D, D]: what holds a mixture of thousands of latent dimensions.
DIAGONAL_ENTRIES = ("weights.npy", "means.npy", "scales.npy")


def read_prior_arrays(data: bytes, label: str) -> dict[str, np.ndarray]:
    """The three arrays of a prior file, read by the container rules of docs/bundle-format.md
    ("The prior file"): a zip holding exactly weights.npy, means.npy and cholesky.npy (or
    scales.npy, for a diagonal mixture), stored
    uncompressed, each a .npy of format 1.0 or 2.0 holding little-endian float64 in C order
    and nothing after its data. Anything else raises BundleError naming `label`."""
    fix = "re-export the bundle (numpy.savez writes this layout)"
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            infos = zf.infolist()
            names = sorted(i.filename for i in infos)
            if names != sorted(NPY_ENTRIES) and names != sorted(DIAGONAL_ENTRIES):
                raise BundleError(
                    f"{label} holds the entries {names}; a prior file holds exactly {list(NPY_ENTRIES)} "
                    f"(scales.npy in place of cholesky.npy for a diagonal mixture): {fix}"
                )
            arrays = {}
            for info in infos:
                if info.compress_type != zipfile.ZIP_STORED:
                    raise BundleError(f"{label}: {info.filename} is compressed (zip method {info.compress_type}); prior files store entries uncompressed: {fix}")
                with zf.open(info) as f:
                    arrays[info.filename[: -len(".npy")]] = _read_npy(f.read(), f"{label}: {info.filename}", fix)
    except (ValueError, OSError, RuntimeError, zipfile.BadZipFile, EOFError) as e:  # RuntimeError: an encrypted entry
        raise BundleError(f"{label} is not a valid .npz prior file ({e}); {fix}") from None
    return arrays


def _read_npy(blob: bytes, label: str, fix: str) -> np.ndarray:
    f = io.BytesIO(blob)
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(f)
    elif version == (2, 0):
        shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(f)
    else:
        raise BundleError(f"{label} is a .npy of format {version[0]}.{version[1]}; prior files use format 1.0 or 2.0: {fix}")
    if dtype.str != "<f8" or fortran_order:
        order = "Fortran" if fortran_order else "C"
        raise BundleError(f"{label} holds {dtype.str} in {order} order; prior files hold little-endian float64 ('<f8') in C order: {fix}")
    body = blob[f.tell():]
    count = math.prod(shape)
    if len(body) != 8 * count:
        raise BundleError(f"{label} has {len(body)} data bytes for shape {list(shape)}; expected {8 * count}: {fix}")
    return np.frombuffer(body, "<f8").reshape(shape).astype(np.float64)


@dataclass(frozen=True)
class GaussianMixture:
    """A mixture of Gaussians over the latents: full covariances by their Cholesky factors
    [K, D, D], or diagonal ones by their standard deviations [K, D] (`diagonal`)."""

    weights: np.ndarray  # [K]
    means: np.ndarray  # [K, D]
    cholesky: np.ndarray  # [K, D, D], or the standard deviations [K, D] of a diagonal mixture

    @property
    def diagonal(self) -> bool:
        return self.cholesky.ndim == 2

    @property
    def components(self) -> int:
        return len(self.weights)

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def sample(
        self, n: int, rng: np.random.Generator, temperature: float = 1.0, truncation: float | None = None
    ) -> np.ndarray:
        """n latents, float32 [n, D]: components first, then the noise, from the same stream."""
        comp = self._choose(n, rng)
        eps = prior_sample(n, self.dim, rng, temperature, truncation).astype(np.float64)
        if self.diagonal:
            z = self.means[comp] + self.cholesky[comp] * eps
        else:
            z = self.means[comp] + np.einsum("nij,nj->ni", self.cholesky[comp], eps)
        return z.astype(np.float32)

    LOG_PROB_BLOCK = 1 << 23  # float64 values of one [K, rows, D] block: 64 MiB, whatever K and N

    def log_prob(self, z: np.ndarray) -> np.ndarray:
        """log density of each latent under the mixture, float64 [N] for z [N, D], in blocks of
        rows whose [K, rows, D] differences fit LOG_PROB_BLOCK (a mixture of thousands of
        components would otherwise hold gigabytes for a large batch)."""
        z = np.asarray(z, np.float64)
        rows = max(1, self.LOG_PROB_BLOCK // (self.components * self.dim))
        if len(z) <= rows:
            return self._log_prob(z)
        return np.concatenate([self._log_prob(z[i : i + rows]) for i in range(0, len(z), rows)])

    def _log_prob(self, z: np.ndarray) -> np.ndarray:
        diff = z[None, :, :] - self.means[:, None, :]  # [K, N, D]
        if self.diagonal:
            y = diff * self._inverse_cholesky()[:, None, :]
            log_det = np.log(self.cholesky).sum(1)
        else:
            # y = L_k^-1 (z - mean_k): the Mahalanobis distance is |y|^2. One [N, D] x [D, D]
            # product per component (a batched solve per point and component is 50x slower).
            y = diff @ np.swapaxes(self._inverse_cholesky(), 1, 2)
            log_det = np.log(np.diagonal(self.cholesky, axis1=1, axis2=2)).sum(1)  # half of log|Sigma_k|
        comp = (-0.5 * np.sum(y * y, -1)).T - log_det - 0.5 * self.dim * math.log(2 * math.pi)  # [N, K]
        with np.errstate(divide="ignore"):
            comp = comp + np.log(self.weights)
        m = comp.max(1, keepdims=True)
        return (m[:, 0] + np.log(np.exp(comp - m).sum(1))).astype(np.float64)

    def _choose(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """The draws and values of `rng.choice(components, size=n, p=weights)`: one uniform per
        latent looked up in the weights' cumulative sum. Generator.choice rebuilds and checks
        that sum on every call, which was half the cost of drawing one latent; the cdf is
        computed here once, as choice computes it (tests/test_priors.py holds the two equal)."""
        cdf = self.__dict__.get("_cdf")
        if cdf is None:
            cdf = self.weights.cumsum()
            cdf /= cdf[-1]
            object.__setattr__(self, "_cdf", cdf)  # a cache on a frozen instance
        return cdf.searchsorted(rng.random(n), side="right")

    def _inverse_cholesky(self) -> np.ndarray:
        inverse = self.__dict__.get("_inverse")
        if inverse is None:
            inverse = 1.0 / self.cholesky if self.diagonal else np.linalg.inv(self.cholesky)
            object.__setattr__(self, "_inverse", inverse)  # a cache on a frozen instance
        return inverse

    def to_npz(self) -> bytes:
        buf = io.BytesIO()
        factors = {"scales": self.cholesky} if self.diagonal else {"cholesky": self.cholesky}
        np.savez(buf, weights=self.weights, means=self.means, **factors)
        return buf.getvalue()

    @classmethod
    def from_npz(cls, data: bytes, dim: int, label: str) -> GaussianMixture:
        """Read and validate a stored mixture; raise BundleError naming `label` on any fault."""
        arrays = read_prior_arrays(data, label)
        diagonal = "scales" in arrays
        w, mu, chol = arrays["weights"], arrays["means"], arrays["scales" if diagonal else "cholesky"]
        k = len(w) if w.ndim == 1 else -1
        if not 1 <= k <= MAX_COMPONENTS or mu.shape != (k, dim) or chol.shape != ((k, dim) if diagonal else (k, dim, dim)):
            factor = f"scales {chol.shape}" if diagonal else f"cholesky {chol.shape}"
            want = f"[K, {dim}]" if diagonal else f"[K, {dim}, {dim}]"
            raise BundleError(
                f"{label} has shapes weights {w.shape}, means {mu.shape}, {factor}; "
                f"expected [K], [K, {dim}], {want} with 1 <= K <= {MAX_COMPONENTS}"
            )
        for name, a in arrays.items():
            if not np.isfinite(a).all():
                raise BundleError(f"{label}: {name} must hold finite floating-point numbers")
        if (w < 0).any() or abs(w.sum() - 1.0) > 1e-6:
            negative = f"; got weights[{int(np.argmin(w))}] = {w.min():g}" if (w < 0).any() else ""
            raise BundleError(f"{label}: weights must be non-negative and sum to 1 (sum {w.sum():.6g}){negative}")
        if diagonal:
            if (chol <= 0).any():
                k, i = (int(j) for j in np.argwhere(chol <= 0)[0])
                raise BundleError(f"{label}: scales must be positive standard deviations, got scales[{k}, {i}] = {chol[k, i]:g}")
            inverse = check_prior_factors(mu, chol, label)
            mixture = cls(w / w.sum(), mu, chol)
            object.__setattr__(mixture, "_inverse", inverse)
            return mixture
        diag = np.diagonal(chol, axis1=1, axis2=2)
        upper = np.triu(chol, 1)
        if (diag <= 0).any() or np.abs(upper).max(initial=0.0) > 0:
            if (diag <= 0).any():
                k, i = (int(j) for j in np.argwhere(diag <= 0)[0])
                where = f"cholesky[{k}, {i}, {i}] = {chol[k, i, i]:g}"
            else:
                k, i, j = (int(j) for j in np.argwhere(upper != 0)[0])
                where = f"cholesky[{k}, {i}, {j}] = {chol[k, i, j]:g} above the diagonal"
            raise BundleError(f"{label}: cholesky must be lower-triangular with a positive diagonal, got {where}")
        inverse = check_prior_factors(mu, chol, label)
        mixture = cls(w / w.sum(), mu, chol)
        object.__setattr__(mixture, "_inverse", inverse)  # the cache _inverse_cholesky fills
        return mixture


Draw = Callable[[int, np.random.Generator, float, "float | None"], np.ndarray]


@dataclass(frozen=True)
class PriorSet:
    """The priors of one bundle. `model` names the model in error messages; `named_default`
    is the manifest's `latent.default_prior` (None when it names none)."""

    model: str
    kind: str
    dim: int
    mixtures: dict[str, GaussianMixture] = field(default_factory=dict)
    gaussians: dict[str, LatentGaussian] = field(default_factory=dict)
    named_default: str | None = None

    @property
    def names(self) -> list[str]:
        """Names `sample` accepts as `prior`, in the format's order: 'standard' (the model's
        N(0, I), VAEs only), then the mixtures, then the fitted Gaussians, each group sorted."""
        return ([STANDARD_PRIOR] if self.kind == "vae" else []) + sorted(self.mixtures) + sorted(self.gaussians)

    @property
    def default(self) -> str | None:
        """The prior drawn from when none is named: the bundle's choice when it names one (its
        fitted mixture), else the model's own N(0, I) ('standard'), else (a plain autoencoder,
        which has no prior of its own) its first fitted prior, else None: it cannot sample."""
        if self.named_default:
            return self.named_default
        if self.kind == "vae":
            return STANDARD_PRIOR
        names = self.names
        return names[0] if names else None

    @property
    def anomaly_prior(self) -> str:
        """The prior whose density gives the anomaly score's latent part: the default prior
        when it is a fitted mixture, else the model's N(0, I) ('standard')."""
        default = self.default
        return default if default in self.mixtures else STANDARD_PRIOR

    def draw(self, prior: str | None) -> Draw:
        """The function drawing (n, rng, temperature, truncation) -> z [n, D] for a prior name
        (None: the default); raises for a name this model does not have."""
        if prior is None:
            prior = self.default
        if prior is None:
            raise UnsupportedOperationError(f"{self.model!r} is a plain autoencoder with no fitted priors, so it cannot sample")
        if prior in self.mixtures:
            return self.mixtures[prior].sample
        if prior == STANDARD_PRIOR:
            if self.kind != "vae":
                names = self.names
                fitted = f"; sample from a fitted Gaussian instead: prior={names[0]!r}" if names else ""
                raise UnsupportedOperationError(f"{self.model!r} is a plain autoencoder and has no prior N(0, I){fitted}")
            dim = self.dim
            return lambda n, rng, t, trunc: prior_sample(n, dim, rng, t, trunc)
        if prior not in self.gaussians:
            raise InvalidArgumentError(f"unknown prior {prior!r}; this model has: {', '.join(self.names) or 'none'}")
        return self.gaussians[prior].sample

    def resolve(self, value: object) -> str:
        """A checked prior name: `value`, or the default when it is None."""
        if value is None:
            value = self.default
            if value is None:
                self.draw(None)  # raises: a plain autoencoder with no fitted prior
        if not isinstance(value, str):
            raise InvalidArgumentError(f"prior must be a name, one of: {', '.join(self.names) or 'none'}; got {value!r:.80}")
        self.draw(value)  # raises for unknown names and for 'standard' on an ae
        return value

    def log_density(self, z: np.ndarray, prior: str) -> np.ndarray:
        """log density of latents [N, D] under a mixture prior or N(0, I) ('standard'), float64 [N]."""
        if prior in self.mixtures:
            return self.mixtures[prior].log_prob(z)
        return gaussian_log_prob(z)
