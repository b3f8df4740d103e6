"""Likelihood bounds computed by the training code (torch, float64), given the posterior noise.

The runtime's `Model.score` computes the same bounds from the ONNX graphs; passing both the
same noise makes the two directly comparable (tests hold them within 1e-3 bits/dim).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .likelihood import dequantized_log_prob, discretized_gaussian_log_prob
from .model import VAE, DiagonalGaussian


@torch.no_grad()
def bounds_bpd(model: VAE, images: np.ndarray, eps: np.ndarray, noise: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """-ELBO and -IW bound in bits/dim per image.

    images: uint8 [N, H, W, C]; eps: standard normal draws [N, K, D] (z = mean + std * eps);
    noise: U(0, 1) dequantization draws [N, K, C, H, W], needed by a dequantized likelihood.
    """
    model = model.eval().double()
    x_uint8 = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
    q = model.posterior(x_uint8.double() / 255.0)
    prior = DiagonalGaussian(torch.zeros_like(q.mean), torch.zeros_like(q.logvar))
    e = torch.from_numpy(eps.astype(np.float64))
    n, k, d = e.shape
    z = q.mean[:, None] + q.std[:, None] * e
    px_mean, px_logvar, *factor = model.decoder(z.reshape(n * k, d))
    target = x_uint8[:, None].expand(n, k, *x_uint8.shape[1:])
    if model.config.likelihood == "discretized":
        log_px = discretized_gaussian_log_prob(target, px_mean.view(n, k, *px_mean.shape[1:]), px_logvar.view(n, k, *px_mean.shape[1:]))
        log_px = log_px.flatten(2).sum(-1)  # [N, K]
    else:
        flat = target.reshape(n * k, *target.shape[2:])
        u = torch.from_numpy(np.asarray(noise, np.float64)).reshape(flat.shape)
        log_px = dequantized_log_prob(flat, u, px_mean, px_logvar, factor[0] if factor else None).view(n, k)
    elbo = log_px.mean(1) - q.kl()
    z_first = z.transpose(0, 1)  # [K, N, D]: log_prob reduces the last axis against [N, D]
    log_w = log_px + (prior.log_prob(z_first) - q.log_prob(z_first)).T
    iw = torch.logsumexp(log_w, dim=1) - math.log(k)
    dims = images[0].size * math.log(2)
    model.float()
    return (-elbo / dims).numpy(), (-iw / dims).numpy()
