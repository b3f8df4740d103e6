"""Fit the bundle's latent prior: candidate Gaussian mixtures on the encoded training images
(an EM mixture whose number of components the held-out likelihood picks, and k-means cluster
mixtures of up to thousands of components), and the rule that chooses the one to ship by the
quality of its samples and its held-out likelihood (`choose_prior`). EM fits full covariances
up to FULL_COVARIANCE_MAX_DIM latent dimensions; beyond, diagonal ones, whose fit and file grow
with the dimension rather than its square (a 4,096-latent model's 40 components: 2.6 MB)."""

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


# ---- the prior a bundle ships: candidates, measured by their samples and their likelihood --

BUDGET_BYTES = 10 * 1024 * 1024  # the largest prior file export writes
BUDGET_DRAW_16_MS = 1.0  # the slowest draw of 16 latents export accepts
CLUSTER_COMPONENTS = (100, 300, 1000, 3000)
SHRINKAGE = (1.0, 4.0, 16.0, 64.0)  # pseudo-points towards the pooled covariance, chosen by held-out likelihood
QUALITY_MARGIN = 0.02  # candidates within 2% of the best sample quality count as equally good (see docs/priors.md)


def stored_bytes(components: int, dim: int, covariance: str) -> int:
    """The prior file's size, near enough: its float64 arrays."""
    factor = dim * dim if covariance == "full" else dim
    return 8 * components * (1 + dim + factor)


def draw_16_ms(mixture: GaussianMixture, rounds: int = 7) -> float:
    """The median time of one draw of 16 latents, in ms."""
    rng = np.random.default_rng(0)
    mixture.sample(16, rng)
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        mixture.sample(16, rng)
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times))


def cluster_candidates(
    train: np.ndarray, train_variance: np.ndarray | None, held_out: np.ndarray, *, covariance: str | None = None,
    components: tuple[int, ...] = CLUSTER_COMPONENTS, seed: int = 0, log: Callable[[str], None] = lambda s: None,
) -> list[tuple[str, GaussianMixture, dict[str, Any]]]:  # fmt: skip
    """k-means cluster mixtures of the training latents (`cluster_mixture`), one per number of
    components that leaves at least two latents a cluster and whose file fits BUDGET_BYTES:
    full covariances where they fit, else diagonal ones (`covariance` forces one). With
    `train_variance` (the encoder's exp(logvar) per latent) each component matches its
    cluster's share of the aggregate posterior. The shrinkage is the one of the best held-out
    likelihood."""
    dim = train.shape[1]
    out = []
    for k in components:
        if k > len(train) // 2:
            continue
        kinds = (covariance,) if covariance else ("full", "diagonal")
        cov = next((c for c in kinds if stored_bytes(k, dim, c) <= BUDGET_BYTES), None)
        if cov is None:
            continue
        t0 = time.perf_counter()
        labels = cluster_latents(train, k, seed=seed)
        check = held_out[:1000]
        fits = {s: cluster_mixture(train, labels, covariance=cov, shrinkage=s, posterior_variance=train_variance) for s in SHRINKAGE}
        scores = {s: float(np.mean(m.log_prob(check))) for s, m in fits.items()}
        best = max(scores, key=scores.get)
        seconds = round(time.perf_counter() - t0, 1)
        log(f"prior: {k}-cluster mixture ({cov}), shrinkage {best:g}, {seconds} s")
        out.append((f"clusters-{k}-{cov}", fits[best], {"components": k, "covariance": cov, "shrinkage": best, "fit_seconds": seconds}))
    return out


def choose_prior(
    candidates: list[tuple[str, GaussianMixture, dict[str, Any]]], held_out: np.ndarray, quality: Callable[[GaussianMixture], float],
    *, log: Callable[[str], None] = lambda s: None,
) -> tuple[str, GaussianMixture, list[dict[str, Any]]]:  # fmt: skip
    """The candidate to ship, and every candidate's figures. Held-out likelihood alone does not
    pick the prior that samples best (a mixture fitted to posterior means is too narrow to
    sample from), and sample quality alone favours priors that memorise their training
    latents. So: among the candidates within the budgets (BUDGET_BYTES, BUDGET_DRAW_16_MS),
    those whose sample quality (`quality`: a distance of decoded samples to held-out data,
    lower is better) is within QUALITY_MARGIN of the best; of these, the one with the highest
    mean log-likelihood of `held_out` latents."""
    rows = []
    for name, mixture, record in candidates:
        row = {"candidate": name, **record, "bytes": len(mixture.to_npz()), "draw_16_ms": round(draw_16_ms(mixture), 3),
               "held_out_log_likelihood": round(float(np.mean(mixture.log_prob(held_out))), 3)}  # fmt: skip
        row["within_budget"] = row["bytes"] <= BUDGET_BYTES and row["draw_16_ms"] <= BUDGET_DRAW_16_MS
        row["sample_distance"] = round(float(quality(mixture)), 4) if row["within_budget"] else None
        log(f"prior: {name}: sample distance {row['sample_distance']}, held-out log-likelihood {row['held_out_log_likelihood']:.2f} nats")
        rows.append(row)
    eligible = [r for r in rows if r["within_budget"]]
    if not eligible:
        raise ValueError("no candidate prior fits the budgets")
    best = min(r["sample_distance"] for r in eligible)
    near = [r for r in eligible if r["sample_distance"] <= best * (1 + QUALITY_MARGIN)]
    chosen = max(near, key=lambda r: r["held_out_log_likelihood"])
    for r in rows:
        r["chosen"] = r is chosen
    return chosen["candidate"], next(m for n, m, _ in candidates if n == chosen["candidate"]), rows


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """The Fréchet distance between Gaussians fitted to feature sets a [N, F] and b [M, F]."""
    from scipy import linalg

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    ca, cb = np.atleast_2d(np.cov(a.T)), np.atleast_2d(np.cov(b.T))
    root = linalg.sqrtm(ca @ cb)
    return float(np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(ca + cb - 2 * np.real(root)))
