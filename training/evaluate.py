"""Likelihood bounds computed by the training code (torch, float64), given the posterior noise.

The runtime's `Model.score` computes the same bounds from the ONNX graphs; passing both the
same noise makes the two directly comparable (tests hold them within 1e-3 bits/dim).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .likelihood import discretized_gaussian_log_prob
from .model import VAE


@torch.no_grad()
def bounds_bpd(model: VAE, images: np.ndarray, eps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """-ELBO and -IW bound in bits/dim per image.

    images: uint8 [N, H, W, C]; eps: standard normal draws [N, K, D] (z = mean + std * eps).
    """
    model = model.eval().double()
    x_uint8 = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
    mean, logvar = model.encoder(x_uint8.double() / 255.0)
    e = torch.from_numpy(eps.astype(np.float64))
    n, k, d = e.shape
    z = mean[:, None] + torch.exp(0.5 * logvar)[:, None] * e
    px_mean, px_logvar = model.decoder(z.reshape(n * k, d))
    target = x_uint8[:, None].expand(n, k, *x_uint8.shape[1:])
    log_px = discretized_gaussian_log_prob(target, px_mean.view(n, k, *px_mean.shape[1:]), px_logvar.view(n, k, *px_mean.shape[1:]))
    log_px = log_px.flatten(2).sum(-1)  # [N, K]
    kl = 0.5 * (mean**2 + logvar.exp() - 1.0 - logvar).sum(-1)
    elbo = log_px.mean(1) - kl
    log_prior = -0.5 * (z**2 + math.log(2 * math.pi)).sum(-1)
    log_q = -0.5 * ((z - mean[:, None]) ** 2 / logvar.exp()[:, None] + logvar[:, None] + math.log(2 * math.pi)).sum(-1)
    iw = torch.logsumexp(log_px + log_prior - log_q, dim=1) - math.log(k)
    dims = images[0].size * math.log(2)
    model.float()
    return (-elbo / dims).numpy(), (-iw / dims).numpy()
