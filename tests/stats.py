"""Distribution checks for random draws, with bounds derived from the sample size.

Each check compares draws with the distribution a sampler promises. Bounds are 5 standard
errors (a false alarm about once in 1.7 million checks per statistic) and the distribution
tests reject at p < 1e-6, so a correct sampler passes for essentially any seed while a wrong
spread (variance for standard deviation, a missing temperature) or a shifted mean (floor for
rounding) fails by many standard errors at the sample sizes the tests use.

A new sampler needs only its promised mean and covariance (`assert_gaussian`), whitened
draws (`whiten` + `assert_ks_normal`), or its exact probability masses
(`assert_discrete_pmf`).
"""

from __future__ import annotations

import numpy as np
from scipy import stats

SIGMAS = 5.0
P_MIN = 1e-6


def assert_gaussian(draws: np.ndarray, mean: np.ndarray, cov: np.ndarray, sigmas: float = SIGMAS) -> None:
    """draws [n, d] have mean `mean` [d] and covariance `cov` [d, d] of a Gaussian.

    The sample mean's component i has standard error sqrt(cov_ii / n); for Gaussian draws the
    sample covariance's entry ij has variance (cov_ij^2 + cov_ii cov_jj) / n.
    """
    x = np.asarray(draws, np.float64)
    n, d = x.shape
    mean = np.broadcast_to(np.asarray(mean, np.float64), (d,))
    cov = np.asarray(cov, np.float64).reshape(d, d)
    var = np.diag(cov)
    mean_err = np.abs(x.mean(0) - mean) / np.sqrt(var / n)
    assert mean_err.max() < sigmas, f"sample mean off by {mean_err.max():.1f} standard errors (component {mean_err.argmax()})"
    emp = np.cov(x.T, bias=True).reshape(d, d)
    cov_se = np.sqrt((cov**2 + np.outer(var, var)) / n)
    cov_err = np.abs(emp - cov) / cov_se
    i, j = np.unravel_index(cov_err.argmax(), cov_err.shape)
    assert cov_err.max() < sigmas, (
        f"sample covariance [{i},{j}] = {emp[i, j]:.5g}, expected {cov[i, j]:.5g}: {cov_err.max():.1f} standard errors off"
    )


def whiten(draws: np.ndarray, mean: np.ndarray, cov_or_cholesky: np.ndarray, *, cholesky: bool = False) -> np.ndarray:
    """L^-1 (draws - mean) for cov = L L^T: iid N(0, 1) components when draws ~ N(mean, cov)."""
    x = np.asarray(draws, np.float64) - np.asarray(mean, np.float64)
    chol = np.asarray(cov_or_cholesky, np.float64) if cholesky else np.linalg.cholesky(np.asarray(cov_or_cholesky, np.float64))
    return np.linalg.solve(chol, x.T).T


def assert_ks(values: np.ndarray, cdf, what: str = "draws", p_min: float = P_MIN) -> None:
    """Kolmogorov-Smirnov: the values are iid from the continuous distribution `cdf`."""
    result = stats.kstest(np.ravel(values), cdf)
    assert result.pvalue > p_min, f"{what}: KS statistic {result.statistic:.4g}, p = {result.pvalue:.2g}"


def assert_ks_normal(values: np.ndarray, what: str = "whitened draws", p_min: float = P_MIN) -> None:
    """Every value is an independent N(0, 1) draw (whitened draws of a Gaussian)."""
    assert_ks(values, stats.norm.cdf, what, p_min)


def assert_within(estimate: float, expected: float, standard_error: float, what: str, sigmas: float = SIGMAS) -> None:
    off = abs(estimate - expected) / standard_error
    assert off < sigmas, f"{what}: {estimate:.6g}, expected {expected:.6g} ({off:.1f} standard errors off)"


def assert_discrete_pmf(draws: np.ndarray, pmf: np.ndarray, rng: np.random.Generator, what: str = "draws") -> None:
    """Integer draws [n, m] where column j should follow pmf[j] (over 0..K-1), [m, K].

    Checks each column's mean and variance against the pmf's (5 standard errors, from the
    pmf's own higher moments) and, over all columns together, the randomised probability
    integral transform: u = F(k - 1) + U * P(k) is exactly uniform on [0, 1] when k ~ P,
    so a KS test against the uniform distribution sees any error in the masses.
    """
    k = np.asarray(draws, np.int64)
    n = k.shape[0]
    pmf = np.asarray(pmf, np.float64)
    levels = np.arange(pmf.shape[1], dtype=np.float64)
    mu = pmf @ levels
    centred = levels[None, :] - mu[:, None]
    var = (pmf * centred**2).sum(1)
    m4 = (pmf * centred**4).sum(1)
    emp = k.astype(np.float64)
    mean_z = np.abs(emp.mean(0) - mu) / np.sqrt(np.maximum(var, 1e-300) / n)
    spread = var > 0
    assert mean_z[spread].max(initial=0) < SIGMAS, f"{what}: a column's mean is {mean_z[spread].max():.1f} standard errors off"
    assert np.array_equal(emp[:, ~spread], np.broadcast_to(mu[~spread], (n, int((~spread).sum())))), f"{what}: a point mass moved"
    var_z = np.abs(emp.var(0) - var) / np.sqrt(np.maximum(m4 - var**2, 1e-300) / n)
    assert var_z[spread].max(initial=0) < SIGMAS, f"{what}: a column's variance is {var_z[spread].max():.1f} standard errors off"
    cdf_below = np.concatenate([np.zeros((pmf.shape[0], 1)), np.cumsum(pmf, 1)[:, :-1]], 1)
    cols = np.broadcast_to(np.arange(k.shape[1]), k.shape)
    u = cdf_below[cols, k] + rng.random(k.shape) * pmf[cols, k]
    assert_ks(u[:, spread], stats.uniform.cdf, f"{what} (randomised PIT)")


def discretized_gaussian_pmf(mean: np.ndarray, std: np.ndarray, levels: int = 256) -> np.ndarray:
    """P(k) for k = 0..levels-1 of round(clip(N(mean, std^2) * (levels-1), 0, levels-1)):
    the bin of k is [(k - 0.5)/(levels-1), (k + 0.5)/(levels-1)], the edge bins open-ended.
    mean, std: [m] in [0, 1] units; returns [m, levels]. Computed with scipy, independently
    of vaesdk's own likelihood code."""
    mean = np.asarray(mean, np.float64).ravel()[:, None]
    std = np.asarray(std, np.float64).ravel()[:, None]
    edges = (np.arange(levels + 1) - 0.5) / (levels - 1)
    edges[0], edges[-1] = -np.inf, np.inf
    cdf = stats.norm.cdf((edges[None, :] - mean) / std)
    return np.diff(cdf, axis=1)


def discretized_gaussian_pit(k: np.ndarray, mean: np.ndarray, std: np.ndarray, rng: np.random.Generator, levels: int = 256) -> np.ndarray:
    """Randomised probability integral transform of levels k drawn from the rounded, clipped
    N(mean, std^2) (broadcasting; [0, 1] units, bins as in `discretized_gaussian_pmf`):
    Phi(lo) + U (Phi(hi) - Phi(lo)) over the drawn level's bin, exactly uniform on [0, 1]
    when every k was drawn from its own pixel's distribution."""
    k = np.asarray(k, np.float64)
    top = levels - 1
    mean = np.asarray(mean, np.float64)
    std = np.asarray(std, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        lo = np.where(k <= 0, -np.inf, ((k - 0.5) / top - mean) / std)
        hi = np.where(k >= top, np.inf, ((k + 0.5) / top - mean) / std)
    lo_cdf, hi_cdf = stats.norm.cdf(lo), stats.norm.cdf(hi)
    return lo_cdf + rng.random(np.broadcast(k, mean, std).shape) * (hi_cdf - lo_cdf)
