"""Discretized-Gaussian log-likelihood of 8-bit pixels, the ELBO and the importance-weighted
bound, in numpy (float64).

Pixel value k in {0, ..., 255} sits at k/255 and owns the bin [k/255 - 1/510, k/255 + 1/510];
the bins of 0 and 255 are open-ended, so the masses of the 256 values sum to one and the
numbers are true discrete probabilities. The training code computes the same quantity in
torch (`vaesdk.training.likelihood`); tests hold the two within 1e-3 bits/dim.

All "bpd" figures are positive, lower is better: -bound / (number of pixels * ln 2).
"""

from __future__ import annotations

import math

import numpy as np

HALF_BIN = 0.5 / 255.0
LN2 = math.log(2.0)
LOG_2PI = math.log(2.0 * math.pi)

# Numerical Recipes' Chebyshev fit of erfc (fractional error < 1.2e-7 for all z >= 0),
# written as log erfc(z) = log t - z^2 + P(t) with t = 1 / (1 + z/2), so it stays exact in
# the far tail where erfc itself underflows.
_ERFC_COEFFS = (
    -1.26551223, 1.00002368, 0.37409196, 0.09678418, -0.18628806,
    0.27886807, -1.13520398, 1.48851587, -0.82215223, 0.17087277,
)  # fmt: skip


def _log_erfc_nonneg(z: np.ndarray) -> np.ndarray:
    """log erfc(z) for z >= 0."""
    t = 1.0 / (1.0 + 0.5 * z)
    poly = np.zeros_like(t)
    for c in reversed(_ERFC_COEFFS):
        poly = poly * t + c
    return np.log(t) - z * z + poly


def log_ndtr(x: np.ndarray) -> np.ndarray:
    """log Phi(x), the log of the standard normal CDF, accurate in both tails."""
    x = np.asarray(x, np.float64)
    z = np.abs(x) / math.sqrt(2.0)
    log_erfc = _log_erfc_nonneg(z)
    lower_tail = math.log(0.5) + log_erfc  # x < 0: Phi(x) = erfc(|x|/sqrt2) / 2
    upper_tail = np.log1p(-0.5 * np.exp(log_erfc))  # x >= 0: Phi(x) = 1 - erfc(x/sqrt2) / 2
    return np.where(x < 0, lower_tail, upper_tail)


def log_diff_ndtr(upper: np.ndarray, lower: np.ndarray) -> np.ndarray:
    """log(Phi(upper) - Phi(lower)) for upper > lower, on the side of zero where it keeps the
    erfc fit's accuracy. A short interval magnifies that 1.2e-7 error (by about 1 / its
    width), which is why `discretized_gaussian_log_prob` sends narrow bins to `log_narrow_bin`."""
    flip = (upper + lower) > 0
    hi = np.where(flip, -lower, upper)
    lo = np.where(flip, -upper, lower)
    log_hi = log_ndtr(hi)
    d = np.minimum(log_ndtr(lo) - log_hi, -1e-300)
    with np.errstate(divide="ignore"):
        log1mexp = np.where(d > -LN2, np.log(-np.expm1(d)), np.log1p(-np.exp(d)))
    return log_hi + log1mexp


def log_narrow_bin(mid: np.ndarray, half: np.ndarray) -> np.ndarray:
    """log(Phi(mid + half) - Phi(mid - half)) by its Taylor series in `half`.

    Exact to ~1e-12 when half * (1 + |mid|) < NARROW, where the CDF difference would lose
    digits to cancellation: 2h phi(m) (1 + h^2 (m^2 - 1) / 6 + h^4 (m^4 - 6 m^2 + 3) / 120).
    """
    h2, m2 = half * half, mid * mid
    series = h2 * (m2 - 1.0) / 6.0 + h2 * h2 * (m2 * m2 - 6.0 * m2 + 3.0) / 120.0
    return np.log(2.0 * half) - 0.5 * m2 - 0.5 * LOG_2PI + np.log1p(series)


NARROW = 0.05


def discretized_gaussian_log_prob(images: np.ndarray, mean: np.ndarray, logvar: np.ndarray) -> np.ndarray:
    """Per-pixel log P(pixel = k) in nats, float64, broadcasting images against mean/logvar."""
    k = np.asarray(images).astype(np.float64)
    x = k / 255.0
    mean = np.asarray(mean, np.float64)
    inv_std = np.exp(-0.5 * np.asarray(logvar, np.float64))
    upper = (x + HALF_BIN - mean) * inv_std
    lower = (x - HALF_BIN - mean) * inv_std
    mid, half = (x - mean) * inv_std, HALF_BIN * inv_std
    narrow = half * (1.0 + np.abs(mid)) < NARROW
    inner = np.where(
        narrow,
        log_narrow_bin(mid, np.minimum(half, NARROW)),
        log_diff_ndtr(np.where(k >= 255, 1.0, upper), np.where(k <= 0, -1.0, lower)),
    )
    return np.where(k <= 0, log_ndtr(upper), np.where(k >= 255, log_ndtr(-lower), inner))


def kl_to_standard_normal(mean: np.ndarray, logvar: np.ndarray) -> np.ndarray:
    """KL(N(mean, diag(exp(logvar))) || N(0, I)) per dimension, float64, same shape as mean."""
    m = np.asarray(mean, np.float64)
    lv = np.asarray(logvar, np.float64)
    return 0.5 * (m * m + np.exp(lv) - 1.0 - lv)


def gaussian_log_prob(z: np.ndarray, mean: np.ndarray | float = 0.0, logvar: np.ndarray | float = 0.0) -> np.ndarray:
    """log N(z; mean, diag(exp(logvar))) summed over the last axis, float64."""
    z = np.asarray(z, np.float64)
    mean = np.asarray(mean, np.float64)
    logvar = np.asarray(logvar, np.float64)
    return -0.5 * np.sum((z - mean) ** 2 * np.exp(-logvar) + logvar + LOG_2PI, axis=-1)


def logsumexp(a: np.ndarray, axis: int) -> np.ndarray:
    m = np.max(a, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore"):  # a slice of only -inf sums to 0: its log is -inf, as it should be
        return np.squeeze(m, axis) + np.log(np.sum(np.exp(a - m), axis=axis))


def bounds_from_samples(
    log_px_given_z: np.ndarray, z: np.ndarray, mean: np.ndarray, logvar: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The ELBO and the importance-weighted bound per image, in nats.

    log_px_given_z: [N, K] (summed over pixels) for z: [N, K, D] drawn from q(z|x) = N(mean, logvar), [N, D].
    ELBO = mean_k log p(x|z_k) - KL(q || p) (the KL in closed form);
    IW = log (1/K) sum_k p(x|z_k) p(z_k) / q(z_k|x), which tightens towards log p(x) as K grows.
    """
    m = np.asarray(mean, np.float64)
    lv = np.asarray(logvar, np.float64)
    elbo = log_px_given_z.mean(axis=1) - kl_to_standard_normal(m, lv).sum(-1)
    log_w = log_px_given_z + gaussian_log_prob(z) - gaussian_log_prob(z, m[:, None, :], lv[:, None, :])
    iw = logsumexp(log_w, axis=1) - math.log(log_px_given_z.shape[1])
    return elbo, iw


def nats_to_bpd(log_likelihood: np.ndarray, dims: int) -> np.ndarray:
    """A log-likelihood bound in nats per image -> positive bits per dimension."""
    return -np.asarray(log_likelihood) / (dims * LN2)


def dequantized_log_prob(
    images: np.ndarray, noise: np.ndarray, mean: np.ndarray, logvar: np.ndarray, factor: np.ndarray | None = None
) -> np.ndarray:
    """A lower bound on log P(image) in nats, float64, per image over the trailing C, H, W axes.

    p(x|z) = N(mean, diag(exp(logvar)) + W W^T) is a density over y = (k + u) / 255, the
    pixels dequantized by `noise` u ~ U(0, 1) - 1/2 in each value's bin. By Jensen,
    log P(k) >= E_u[log p(y)] - log 255 per pixel (edge bins, open-ended in the discrete
    model, only add mass). images, noise, mean, logvar: [..., C, H, W]; factor: [..., R, C, H, W].
    With a factor the density is evaluated by the Woodbury identity and the matrix
    determinant lemma, O(R^3 + R P) per image for P pixels.
    """
    y = (np.asarray(images, np.float64) + noise - 0.5) / 255.0
    lead = np.broadcast_shapes(y.shape, np.shape(mean))[:-3]
    n_pix = int(np.prod(y.shape[-3:]))
    e = (y - np.asarray(mean, np.float64)).reshape(*lead, n_pix)
    lv = np.asarray(logvar, np.float64).reshape(*lead, n_pix)
    inv_var = np.exp(-lv)
    scaled = e * inv_var
    quad = np.einsum("...p,...p->...", scaled, e)
    log_det = lv.sum(-1)
    if factor is not None:
        w = np.asarray(factor, np.float64).reshape(*lead, -1, n_pix)  # [..., R, P]
        rank = w.shape[-2]
        # matmul rather than einsum: batched BLAS, about twice as fast here.
        b = (w @ scaled[..., None])[..., 0]
        capacitance = (w * inv_var[..., None, :]) @ w.swapaxes(-1, -2)
        capacitance += np.eye(rank)
        chol = np.linalg.cholesky(capacitance)
        log_det = log_det + 2.0 * np.log(np.diagonal(chol, axis1=-2, axis2=-1)).sum(-1)
        quad = quad - np.einsum("...r,...r->...", b, np.linalg.solve(capacitance, b[..., None])[..., 0])
    return -0.5 * (quad + log_det + n_pix * LOG_2PI) - n_pix * math.log(255.0)
