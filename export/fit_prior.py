"""Fit the bundle's latent prior: a Gaussian mixture on the encoded training images, with the
number of components chosen by the log-likelihood of held-out latents. Full covariances up to
FULL_COVARIANCE_MAX_DIM latent dimensions; beyond, diagonal ones, whose fit and file grow with
the dimension rather than its square (a 4,096-latent model's 40 components: 2.6 MB)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn.mixture import GaussianMixture as SkMixture

from vaesdk.maths.priors import GaussianMixture

COMPONENTS = (1, 5, 10, 20, 40)
MAX_FIT_POINTS = 10_000  # EM costs points x components x dim^2 per iteration; enough points for 100 components in 64 dimensions
REG_COVAR = 1e-4  # keeps every component's covariance positive definite
FULL_COVARIANCE_MAX_DIM = 256


def covariance_for(dim: int) -> str:
    """The mixture's covariance type for a latent dimension: 'full' or 'diagonal'."""
    return "full" if dim <= FULL_COVARIANCE_MAX_DIM else "diagonal"


def fit_mixture(
    train: np.ndarray,
    held_out: np.ndarray,
    *,
    candidates: tuple[int, ...] = COMPONENTS,
    seed: int = 0,
    log: Callable[[str], None] = lambda s: None,
    covariance: str | None = None,
) -> tuple[GaussianMixture, dict[str, Any]]:
    """The candidate with the highest mean log-likelihood of `held_out` latents [M, D],
    fitted to (at most MAX_FIT_POINTS of) `train` latents [N, D]; and a record of the choice."""
    rng = np.random.default_rng(seed)
    points = train if len(train) <= MAX_FIT_POINTS else train[rng.choice(len(train), MAX_FIT_POINTS, replace=False)]
    points = points.astype(np.float64)
    covariance = covariance or covariance_for(points.shape[1])
    results, best = [], None
    for k in candidates:
        if k > len(points) // 2:
            continue
        t0 = time.perf_counter()
        sk = SkMixture(k, covariance_type="full" if covariance == "full" else "diag", reg_covar=REG_COVAR, max_iter=100, random_state=seed).fit(points)
        score = float(sk.score(held_out.astype(np.float64)))
        results.append({"components": k, "held_out_log_likelihood": score, "fit_seconds": round(time.perf_counter() - t0, 1)})
        log(f"prior: {k}-component mixture, held-out log-likelihood {score:.2f} nats per latent")
        if best is None or score > best[0]:
            best = (score, sk)
    if best is None:
        raise ValueError(f"too few latents ({len(points)}) to fit a mixture")
    sk = best[1]
    factors = np.linalg.cholesky(sk.covariances_) if covariance == "full" else np.sqrt(sk.covariances_)
    mixture = GaussianMixture(sk.weights_ / sk.weights_.sum(), sk.means_, factors)
    record = {
        "components": mixture.components,
        "covariance": covariance,
        "fit_points": len(points),
        "held_out_points": len(held_out),
        "selection": "highest mean log-likelihood of held-out latents",
        "candidates": results,
        "reg_covar": REG_COVAR,
        "seed": seed,
    }
    return mixture, record


def mixture_from_sklearn(sk: SkMixture, covariance: str) -> GaussianMixture:
    """The bundle's mixture of a fitted sklearn GaussianMixture ('full' or 'diagonal')."""
    factors = np.linalg.cholesky(sk.covariances_) if covariance == "full" else np.sqrt(sk.covariances_)
    return GaussianMixture(sk.weights_ / sk.weights_.sum(), sk.means_, factors)


def cluster_latents(points: np.ndarray, components: int, *, seed: int = 0, max_iter: int = 100) -> np.ndarray:
    """k-means cluster labels, int [N], of latents [N, D] (k-means++ start, one run): the
    assignment `cluster_mixture` turns into a mixture. EM with thousands of full-covariance
    components costs points x components x dim^2 per iteration; k-means costs points x
    components x dim, which is what lets a mixture grow to thousands of components."""
    from sklearn.cluster import KMeans

    km = KMeans(components, n_init=1, max_iter=max_iter, random_state=seed).fit(np.asarray(points, np.float64))
    return km.labels_.astype(np.int64)


def cluster_mixture(
    points: np.ndarray,
    labels: np.ndarray,
    *,
    covariance: str = "full",
    shrinkage: float = 16.0,
    posterior_variance: np.ndarray | None = None,
) -> GaussianMixture:
    """One component per cluster of `labels` [N] over latents `points` [N, D]: weight the
    cluster's share of the points, mean its mean, covariance its scatter shrunk towards the
    pooled within-cluster covariance S0 with the weight of `shrinkage` pseudo-points,
        Sigma_k = (sum_i (z_i - m_k)(z_i - m_k)^T + shrinkage * S0) / (n_k + shrinkage),
    (a cluster of a few points in many dimensions has a singular scatter of its own), plus
    REG_COVAR. With `posterior_variance` [N, D] (the encoder's exp(logvar) of each point) the
    cluster's mean posterior variance is added to the diagonal: each component then matches
    the first two moments of its cluster's part of the aggregate posterior, sum_i q(z|x_i)/N,
    rather than of the posterior means alone. `covariance`: 'full' or 'diagonal'."""
    points = np.asarray(points, np.float64)
    names, labels = np.unique(labels, return_inverse=True)  # drops empty clusters
    k, dim = len(names), points.shape[1]
    counts = np.bincount(labels, minlength=k).astype(np.float64)
    means = np.zeros((k, dim))
    np.add.at(means, labels, points)
    means /= counts[:, None]
    centred = points - means[labels]
    if covariance == "full":
        scatter = np.zeros((k, dim, dim))
        for j in range(k):  # one [n_k, D]^T [n_k, D] product per cluster
            c = centred[labels == j]
            scatter[j] = c.T @ c
        pooled = scatter.sum(0) / len(points)
        cov = (scatter + shrinkage * pooled) / (counts + shrinkage)[:, None, None]
    else:
        scatter = np.zeros((k, dim))
        np.add.at(scatter, labels, centred**2)
        pooled = scatter.sum(0) / len(points)
        cov = (scatter + shrinkage * pooled) / (counts + shrinkage)[:, None]
    extra = np.full((k, dim), REG_COVAR)
    if posterior_variance is not None:
        summed = np.zeros((k, dim))
        np.add.at(summed, labels, np.asarray(posterior_variance, np.float64))
        extra += summed / counts[:, None]
    if covariance == "full":
        cov[:, np.arange(dim), np.arange(dim)] += extra
        factors = np.linalg.cholesky(cov)
    else:
        factors = np.sqrt(cov + extra)
    return GaussianMixture(counts / counts.sum(), means, factors)
