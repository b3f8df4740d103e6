"""Latent priors: the prior kinds, each with its draws from given noise, its log-density, a
description and its reading and writing, and `PriorSet`, the priors of one bundle with the
format's naming and default rule.

The kinds (docs/bundle-format.md, "Priors and their draws"):
- `standard`, N(0, I): the model's own prior (flat VAE latents only), stored nowhere;
- `gaussian`, N(mean, L L^T) fitted to encoded images (the aggregate, one per class): stored
  in the manifest, `latent.gaussians.NAME` = {mean, cholesky};
- `mixture`, a Gaussian mixture fitted to the training latents: stored in a prior file named
  by `latent.mixtures.NAME` = {file, sha256, bytes, ...}.
`KINDS` lists the stored ones, in the format's order of names; nothing else in vaesdk names a
kind. A new kind is a class with the `Prior` methods and a `PriorKind` entry here, and its
entry in the format.

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
truncation limits how far inside its component a draw may fall. Every kind's `sample` takes
its noise from `rng`, which may be any source with numpy's `random` and `standard_normal`
(the conformance vectors replay given numbers through one).

`PriorSet` holds everything a bundle's facts decide about its priors, with no onnxruntime
session: their names in order, the default, draws, log-densities and the errors for a prior a
model does not have (docs/bundle-format.md, "Names").
"""

from __future__ import annotations

import io
import math
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import numpy as np

from ..base.errors import BundleError, InvalidArgumentError, UnsupportedOperationError
from .latent import check_prior_factors, prior_sample
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


class Prior(Protocol):
    """What every prior kind gives: latents [n, D] drawn from given noise, their log-density,
    and a description in words."""

    kind: ClassVar[str]

    @property
    def dim(self) -> int: ...

    def sample(self, n: int, rng: np.random.Generator, temperature: float = 1.0, truncation: float | None = None) -> np.ndarray: ...

    def log_prob(self, z: np.ndarray) -> np.ndarray: ...

    def describe(self) -> str: ...


@dataclass(frozen=True)
class StandardNormal:
    """N(0, I), a VAE's own prior over flat latents of `dim` dimensions."""

    kind: ClassVar[str] = STANDARD_PRIOR
    dim: int

    def sample(self, n: int, rng: np.random.Generator, temperature: float = 1.0, truncation: float | None = None) -> np.ndarray:
        """z = temperature * eps, eps ~ N(0, I) truncated as in `prior_sample`: float32 [n, D]."""
        return prior_sample(n, self.dim, rng, temperature, truncation)

    def log_prob(self, z: np.ndarray) -> np.ndarray:
        return gaussian_log_prob(z)

    def describe(self) -> str:
        return "N(0, I), the model's own prior"


@dataclass(frozen=True)
class LatentGaussian:
    """N(mean, L L^T) over latents, fitted to encoded images; L is lower-triangular."""

    kind: ClassVar[str] = "gaussian"
    mean: np.ndarray  # [D]
    cholesky: np.ndarray  # [D, D]

    @property
    def dim(self) -> int:
        return len(self.mean)

    def sample(
        self, n: int, rng: np.random.Generator, temperature: float = 1.0, truncation: float | None = None
    ) -> np.ndarray:
        """z = mean + temperature * L eps, eps ~ N(0, I) truncated as in `prior_sample`."""
        eps = prior_sample(n, len(self.mean), rng, temperature, truncation)
        return (self.mean + eps.astype(np.float64) @ self.cholesky.T).astype(np.float32)

    def log_prob(self, z: np.ndarray) -> np.ndarray:
        """log N(z; mean, L L^T) of latents [N, D], float64 [N]."""
        inverse = self.__dict__.get("_inverse")
        if inverse is None:
            inverse = np.linalg.inv(self.cholesky)
            object.__setattr__(self, "_inverse", inverse)  # a cache on a frozen instance
        y = (np.asarray(z, np.float64) - self.mean) @ inverse.T  # L^-1 (z - mean), row by row
        log_det = np.log(np.diagonal(self.cholesky)).sum()  # half of log|Sigma|
        return -0.5 * np.sum(y * y, -1) - log_det - 0.5 * self.dim * math.log(2 * math.pi)

    def describe(self) -> str:
        return "a Gaussian with a full covariance"

    def to_manifest(self) -> dict:
        rows, cols = np.tril_indices(len(self.mean))
        return {"mean": [float(x) for x in self.mean], "cholesky": [float(x) for x in self.cholesky[rows, cols]]}

    @classmethod
    def from_manifest(cls, entry: dict, label: str = "a latent Gaussian") -> LatentGaussian:
        mean = np.asarray(entry["mean"], np.float64)
        chol = np.zeros((len(mean), len(mean)))
        chol[np.tril_indices(len(mean))] = entry["cholesky"]
        gaussian = cls(mean, chol)
        object.__setattr__(gaussian, "_inverse", check_prior_factors(mean, chol, label))  # log_prob's, computed by the check
        return gaussian


def fit_gaussian(mean: np.ndarray, logvar: np.ndarray | None = None) -> LatentGaussian:
    """The Gaussian with the first two moments of the aggregate posterior
    (1/N) sum_i q(z|x_i): mean E[mu], covariance Cov(mu) + E[diag sigma^2].
    For a plain autoencoder (no logvar) it is fitted to the codes themselves."""
    mu = np.asarray(mean, np.float64)
    if len(mu) < 2:
        raise InvalidArgumentError("fitting a latent Gaussian needs at least two encoded images")
    cov = np.cov(mu.T).reshape(mu.shape[1], mu.shape[1])
    if logvar is not None:
        cov += np.diag(np.exp(np.asarray(logvar, np.float64)).mean(0))
    # A tiny ridge keeps the factorisation defined when few images span fewer dimensions.
    cov += 1e-6 * np.eye(len(cov)) * max(1.0, float(np.trace(cov)) / len(cov))
    return LatentGaussian(mu.mean(0), np.linalg.cholesky(cov))



@dataclass(frozen=True)
class GaussianMixture:
    """A mixture of Gaussians over the latents: full covariances by their Cholesky factors
    [K, D, D], or diagonal ones by their standard deviations [K, D] (`diagonal`)."""

    kind: ClassVar[str] = "mixture"
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

    def describe(self) -> str:
        covariances = "diagonal" if self.diagonal else "full-covariance"
        return f"a mixture of {self.components} {covariances} Gaussian{'s' if self.components > 1 else ''}"

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


# ---- the kinds a bundle stores --------------------------------------------------------------

Check = Callable[[Mapping[str, Any], int, str, Callable[..., Any], Callable[[str, str], Exception]], None]


@dataclass(frozen=True)
class PriorKind:
    """A kind of stored prior and how a bundle stores it. The manifest's object `latent.<key>`
    maps prior names to entries. A kind `in_file` keeps its numbers in a prior file the entry
    names (`file`, `sha256`, `bytes`: read, checked and digested as the graphs are); the others
    keep them in the entry itself."""

    name: str
    key: str
    in_file: bool
    read: Callable[[Mapping[str, Any], bytes | None, int, str], Prior]  # (entry, the file's bytes or None, D, label)
    write: Callable[[Any], tuple[dict[str, Any], bytes | None]]  # a prior -> (the entry's numbers, the file's bytes or None)
    # The format's checks of an inline entry: (entry, D, where, vector, fail), where vector(value,
    # length, where) checks a list of finite numbers and fail(where, problem) makes the error.
    check: Check | None = None
    # Its density may be the anomaly score's latent part: it models all the training latents
    # (a Gaussian of one class does not).
    anomaly_density: bool = False


def _check_gaussian_entry(entry: Mapping[str, Any], dim: int, where: str, vector: Callable[..., Any], fail: Callable[[str, str], Exception]) -> None:
    vector(entry.get("mean"), dim, f"{where}.mean")
    chol = vector(entry.get("cholesky"), dim * (dim + 1) // 2, f"{where}.cholesky (lower triangle, row by row)")
    if min(chol[i * (i + 1) // 2 + i] for i in range(dim)) <= 0:
        raise fail(f"{where}.cholesky", "must have a positive diagonal")


MIXTURE = PriorKind(
    "mixture", "mixtures", in_file=True,
    read=lambda entry, data, dim, label: GaussianMixture.from_npz(data or b"", dim, label),
    write=lambda prior: ({"components": prior.components}, prior.to_npz()),
    anomaly_density=True,
)  # fmt: skip
GAUSSIAN = PriorKind(
    "gaussian", "gaussians", in_file=False,
    read=lambda entry, data, dim, label: LatentGaussian.from_manifest(entry, label),
    write=lambda prior: (prior.to_manifest(), None),
    check=_check_gaussian_entry,
)  # fmt: skip
# The stored kinds, in the format's order of names: after 'standard', the mixtures, then the
# Gaussians, each group sorted by name.
KINDS: tuple[PriorKind, ...] = (MIXTURE, GAUSSIAN)
KIND_OF: dict[str, PriorKind] = {k.name: k for k in KINDS}


def anomaly_densities(latent: Mapping[str, Any]) -> tuple[list[str], str]:
    """The stored priors of a manifest's `latent` object whose density may be the anomaly
    score's latent part (beside 'standard'), sorted, and their kinds in words ('mixture')."""
    names = sorted(name for kind, name, _ in prior_entries(latent) if kind.anomaly_density)
    return names, " or ".join(k.name for k in KINDS if k.anomaly_density)


def prior_entries(latent: Mapping[str, Any]) -> list[tuple[PriorKind, str, Mapping[str, Any]]]:
    """(kind, name, entry) of every stored prior of a manifest's `latent` object, in the
    format's order of names."""
    return [(kind, name, entries[name]) for kind in KINDS for entries in [latent.get(kind.key) or {}] for name in sorted(entries)]


def prior_files(latent: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """The entries of the priors kept in files (name -> {file, sha256, bytes, ...})."""
    return {name: entry for kind, name, entry in prior_entries(latent) if kind.in_file}


def read_priors(latent: Mapping[str, Any], files: Mapping[str, bytes], dim: int, label: Callable[[PriorKind, str, Mapping[str, Any]], str]) -> dict[str, Prior]:
    """Every stored prior of a manifest's `latent` object, read and checked, by name in the
    format's order; `files` holds the bytes of the priors kept in files, by prior name;
    `label(kind, name, entry)` names a prior in errors."""
    return {name: kind.read(entry, files.get(name) if kind.in_file else None, dim, label(kind, name, entry)) for kind, name, entry in prior_entries(latent)}


def stored(prior: Prior) -> tuple[PriorKind, dict[str, Any], bytes | None]:
    """A fitted prior as a bundle stores it: its kind, its entry's numbers and its file's bytes
    (None for a kind kept in the manifest). A file entry's `file`, `sha256` and `bytes` are
    the writer's to add."""
    kind = KIND_OF[prior.kind]
    entry, data = kind.write(prior)
    return kind, entry, data


Draw = Callable[[int, np.random.Generator, float, "float | None"], np.ndarray]


@dataclass(frozen=True)
class PriorSet:
    """The priors of one bundle. `model` names the model in error messages; `kind` is the
    model's ('vae' has N(0, I), 'ae' has none); `fitted` maps the stored priors' names to the
    priors; `named_default` is the manifest's `latent.default_prior` (None when it names none)."""

    model: str
    kind: str
    dim: int
    fitted: Mapping[str, Prior] = field(default_factory=dict)
    named_default: str | None = None

    @property
    def names(self) -> list[str]:
        """Names `sample` accepts as `prior`, in the format's order: 'standard' (the model's
        N(0, I), VAEs only), then the stored priors by kind in the order of KINDS, each kind's
        sorted by name."""
        order = {k.name: i for i, k in enumerate(KINDS)}
        stored_names = sorted(self.fitted, key=lambda name: (order[self.fitted[name].kind], name))
        return ([STANDARD_PRIOR] if self.kind == "vae" else []) + stored_names

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
        when its kind models all the training latents (a mixture), else the model's N(0, I)
        ('standard')."""
        default = self.default
        return default if default in self.fitted and KIND_OF[self.fitted[default].kind].anomaly_density else STANDARD_PRIOR

    def check_anomaly_prior(self, prior: str) -> str:
        """`prior` when its density may be the anomaly score's latent part; else raises."""
        usable = sorted(n for n, p in self.fitted.items() if KIND_OF[p.kind].anomaly_density)
        if not isinstance(prior, str) or (prior != STANDARD_PRIOR and prior not in usable):
            kinds = " or ".join(k.name for k in KINDS if k.anomaly_density)
            raise InvalidArgumentError(f"the anomaly score's latent part needs 'standard' or a {kinds} of this bundle, got {prior!r:.80} (yours: {usable})")
        return prior

    def prior(self, name: str | None) -> Prior:
        """The prior of a name (None: the default); raises for a name this model does not have."""
        if name is None:
            name = self.default
        if name is None:
            raise UnsupportedOperationError(f"{self.model!r} is a plain autoencoder with no fitted priors, so it cannot sample")
        if name in self.fitted:
            return self.fitted[name]
        if name == STANDARD_PRIOR:
            if self.kind != "vae":
                names = self.names
                fitted = f"; sample from a fitted Gaussian instead: prior={names[0]!r}" if names else ""
                raise UnsupportedOperationError(f"{self.model!r} is a plain autoencoder and has no prior N(0, I){fitted}")
            return StandardNormal(self.dim)
        raise InvalidArgumentError(f"unknown prior {name!r}; this model has: {', '.join(self.names) or 'none'}")

    def draw(self, prior: str | None) -> Draw:
        """The function drawing (n, rng, temperature, truncation) -> z [n, D] for a prior name
        (None: the default); raises for a name this model does not have."""
        return self.prior(prior).sample

    def resolve(self, value: object) -> str:
        """A checked prior name: `value`, or the default when it is None."""
        if value is None:
            value = self.default
            if value is None:
                self.prior(None)  # raises: a plain autoencoder with no fitted prior
        if not isinstance(value, str):
            raise InvalidArgumentError(f"prior must be a name, one of: {', '.join(self.names) or 'none'}; got {value!r:.80}")
        self.prior(value)  # raises for unknown names and for 'standard' on an ae
        return value

    def log_density(self, z: np.ndarray, prior: str) -> np.ndarray:
        """log density of latents [N, D] under a prior of this bundle, float64 [N]."""
        return self.prior(prior).log_prob(z)

    def describe(self) -> dict[str, str]:
        """Each prior's name -> its description in words, in the format's order."""
        return {name: self.prior(name).describe() for name in self.names}
