"""Discretized Gaussian likelihood of 8-bit pixels, in torch.

Pixel value k in {0, ..., 255} sits at k/255 in the model's [0, 1] units and owns the bin
[k/255 - 1/510, k/255 + 1/510]; the bins of 0 and 255 extend to -inf and +inf, so the 256
masses sum to one and log-likelihoods are true discrete probabilities.

`vaesdk.maths.likelihood` computes the same quantity in numpy; tests hold the two together.
"""

from __future__ import annotations

import math

import torch
from torch.special import log_ndtr

HALF_BIN = 0.5 / 255.0
LN2 = 0.6931471805599453
LOG_2PI = 1.8378770664093453
NARROW = 0.05  # bins with half-width * (1 + |mid|) below this (in sigmas) use the series


def log_diff_ndtr(upper: torch.Tensor, lower: torch.Tensor) -> torch.Tensor:
    """log(Phi(upper) - Phi(lower)) for upper > lower, stable in both tails.

    Evaluated on whichever side of zero the bin lies, where the CDF values are small and
    their logs accurate: Phi(b) - Phi(a) == Phi(-a) - Phi(-b).
    """
    flip = (upper + lower) > 0
    hi = torch.where(flip, -lower, upper)
    lo = torch.where(flip, -upper, lower)
    log_hi = log_ndtr(hi)
    d = log_ndtr(lo) - log_hi  # < 0
    # log(1 - e^d): expm1 is accurate near d = 0, log1p far from it. Each branch gets an input
    # clamped to its own side, so the branch not taken cannot put inf/NaN into the gradient.
    near = d > -LN2
    log1mexp = torch.where(
        near,
        torch.log(-torch.expm1(d.clamp(min=-LN2, max=-1e-30))),
        torch.log1p(-torch.exp(d.clamp(max=-LN2))),
    )
    return log_hi + log1mexp


def log_narrow_bin(mid: torch.Tensor, half: torch.Tensor) -> torch.Tensor:
    """log(Phi(mid + half) - Phi(mid - half)) by its Taylor series in `half`, used where the
    bin is narrow next to sigma and the CDF difference would lose digits to cancellation."""
    h2, m2 = half * half, mid * mid
    series = h2 * (m2 - 1.0) / 6.0 + h2 * h2 * (m2 * m2 - 6.0 * m2 + 3.0) / 120.0
    return torch.log(2.0 * half) - 0.5 * m2 - 0.5 * LOG_2PI + torch.log1p(series)


def discretized_gaussian_log_prob(images: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Per-pixel log P(pixel = k) in nats. images: integer tensor (0..255); mean, logvar same shape."""
    k = images.to(mean.dtype)
    x = k / 255.0
    inv_std = torch.exp(-0.5 * logvar)
    upper = (x + HALF_BIN - mean) * inv_std
    lower = (x - HALF_BIN - mean) * inv_std
    mid, half = (x - mean) * inv_std, HALF_BIN * inv_std
    narrow = half * (1.0 + mid.abs()) < NARROW
    # Open-ended edge bins: P(k=0) = Phi(upper), P(k=255) = 1 - Phi(lower) = Phi(-lower).
    wide = log_diff_ndtr(torch.where(k >= 255, torch.ones_like(upper), upper), torch.where(k <= 0, -torch.ones_like(lower), lower))
    inner = torch.where(narrow, log_narrow_bin(mid.clamp(-1 / NARROW, 1 / NARROW), half.clamp(max=NARROW)), wide)
    return torch.where(k <= 0, log_ndtr(upper), torch.where(k >= 255, log_ndtr(-lower), inner))


def dequantize(images: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """y = (k + u) / 255 with u = noise - 1/2 uniform in the bin: integer images -> float [0, 1] units."""
    return (images.to(noise.dtype) + noise - 0.5) / 255.0


def dequantized_log_prob(
    images: torch.Tensor, noise: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor, factor: torch.Tensor | None = None
) -> torch.Tensor:
    """A lower bound on log P(image) in nats per image, shape [N], for p(x|z) = N(mean, diag(exp(logvar)) + W W^T).

    By Jensen, log P(k) = log integral of p over k's bin >= E_u[log p((k + u) / 255)] - log 255
    per pixel (the edge bins, open-ended in the discrete model, only add mass). `noise` holds
    U(0, 1) draws shaped like the images; one draw gives an unbiased estimate of the bound.
    images, mean, logvar: [N, C, H, W]; factor: [N, R, C, H, W] or None (diagonal).
    """
    y = dequantize(images, noise).flatten(1)
    mu, var = mean.flatten(1), logvar.exp().flatten(1)
    log_jacobian = y.shape[1] * math.log(255.0)
    if factor is None:
        lp = -0.5 * (((y - mu) ** 2) / var + logvar.flatten(1) + LOG_2PI).sum(1)
        return lp - log_jacobian
    # Woodbury identity and matrix determinant lemma with the capacitance C = I + W^T D^-1 W
    # [N, R, R], in float64: narrow pixel variances make D^-1 W large, and float32 rounding
    # can then leave C numerically indefinite.
    e = (y - mu).double()
    w_scaled = factor.flatten(2).double() / var.double().sqrt()[:, None, :]  # [N, R, P] = W^T D^-1/2
    e_scaled = e / var.double().sqrt()
    rank = w_scaled.shape[1]
    cap = torch.eye(rank, dtype=torch.float64, device=e.device) + w_scaled @ w_scaled.transpose(1, 2)
    chol = torch.linalg.cholesky(cap)
    b = (w_scaled @ e_scaled[:, :, None])  # [N, R, 1]
    c = torch.linalg.solve_triangular(chol, b, upper=False)[..., 0]
    quad = (e_scaled**2).sum(1) - (c**2).sum(1)
    log_det = logvar.flatten(1).double().sum(1) + 2.0 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(1)
    lp = -0.5 * (quad + log_det + y.shape[1] * LOG_2PI)
    return (lp - log_jacobian).to(mean.dtype)
