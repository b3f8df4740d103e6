"""Encoder, decoder and the VAE / plain-autoencoder objectives.

Shapes use N for batch, C for image channels, H = W = image_size, D = latent_dim.
Pixels enter the encoder as float32 in [0, 1] (uint8 / 255); the decoder's mean lives
in the same units.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from .config import ModelConfig
from .likelihood import dequantized_log_prob, discretized_gaussian_log_prob

# The decoder's covariance factor is its raw output times this, so an untrained decoder
# starts with factors of a few grey levels rather than the whole pixel range.
FACTOR_SCALE = 0.1


class DiagonalGaussian:
    """N(mean, diag(exp(logvar))) over the last axes of `mean`."""

    def __init__(self, mean: torch.Tensor, logvar: torch.Tensor):
        self.mean = mean
        self.logvar = logvar
        self.std = torch.exp(0.5 * logvar)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        # Reparameterisation: the draw is a differentiable function of mean and std.
        eps = torch.randn(self.mean.shape, generator=generator, dtype=self.mean.dtype, device=self.mean.device)
        return self.mean + self.std * eps

    def mode(self) -> torch.Tensor:
        return self.mean

    def kl_per_dim(self) -> torch.Tensor:
        """KL(q || N(0, I)) per example and latent dimension: shape [N, D]."""
        return 0.5 * (self.mean.pow(2) + self.logvar.exp() - 1.0 - self.logvar)

    def kl(self) -> torch.Tensor:
        """KL(q || N(0, I)) per example, summed over all non-batch axes: shape [N]."""
        return self.kl_per_dim().flatten(1).sum(1)

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log q(z), summed over the latent axis: shape [..., N] for z of shape [..., N, D]."""
        terms = -0.5 * ((z - self.mean) ** 2 / self.logvar.exp() + self.logvar + math.log(2 * math.pi))
        return terms.sum(-1)


class ResBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.silu(self.conv1(F.silu(x))))


class Encoder(nn.Module):
    """[N, C, H, W] in [0, 1] -> (mean [N, D], logvar [N, D]); an autoencoder returns (code,)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        w = config.widths
        r = config.res_blocks
        self.conv_in = nn.Conv2d(config.channels, w[0], 3, padding=1)
        self.down_blocks = nn.ModuleList()
        for c_in, c_out in zip(w[:-1], w[1:]):
            self.down_blocks.append(
                nn.Sequential(*[ResBlock(c_in) for _ in range(r)], nn.SiLU(), nn.Conv2d(c_in, c_out, 4, stride=2, padding=1))
            )
        self.mid_block = nn.Sequential(*[ResBlock(w[-1]) for _ in range(r)])
        n_out = 2 * config.latent_dim if config.kind == "vae" else config.latent_dim
        self.conv_out = nn.Linear(w[-1] * config.bottom_size**2, n_out)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        # Centre the pixels so the first layer sees zero-mean input.
        h = self.conv_in(x * 2.0 - 1.0)
        for block in self.down_blocks:
            h = block(h)
        h = F.silu(self.mid_block(h))
        out = self.conv_out(h.flatten(1))
        if self.config.kind == "ae":
            return (out,)
        mean, logvar = out.chunk(2, dim=1)
        # Bounded so exp(logvar) can neither overflow nor vanish in float32.
        return mean, logvar.clamp(-30.0, 20.0)


def up_block(c_in: int, c_out: int, res_blocks: int, upsample: str) -> nn.Sequential:
    """Double the resolution: nearest-neighbour resize + 3x3 convolution, or a transposed convolution."""
    if upsample == "resize":
        up = [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c_in, c_out, 3, padding=1)]
    else:
        up = [nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1)]
    return nn.Sequential(nn.SiLU(), *up, *[ResBlock(c_out) for _ in range(res_blocks)])


class Decoder(nn.Module):
    """z [N, D] -> (mean [N, C, H, W] in (0, 1), logvar [N, C, H, W]) and, with a low-rank
    covariance, factor [N, R, C, H, W]; an autoencoder returns (mean,)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        w = config.widths
        r = config.res_blocks
        self.conv_in = nn.Linear(config.latent_dim, w[-1] * config.bottom_size**2)
        self.mid_block = nn.Sequential(*[ResBlock(w[-1]) for _ in range(r)])
        self.up_blocks = nn.ModuleList()
        for c_in, c_out in zip(w[:0:-1], w[-2::-1]):
            self.up_blocks.append(up_block(c_in, c_out, r, config.upsample))
        n_out = 2 * config.channels + config.factor_channels if config.kind == "vae" else config.channels
        self.conv_out = nn.Conv2d(w[0], n_out, 3, padding=1)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, ...]:
        c = self.config
        h = self.conv_in(z).view(-1, c.widths[-1], c.bottom_size, c.bottom_size)
        h = self.mid_block(h)
        for block in self.up_blocks:
            h = block(h)
        h = F.silu(h)
        if c.kind == "ae":
            return (torch.sigmoid(self.conv_out(h)),)
        # conv_out as two convolutions over the same weights, one for the mean's channels and
        # one for the rest: in the exported graph the mean then depends on its own channels
        # only, so a means-only decode (vaesdk cuts the graph to `mean`) skips the variance
        # and covariance factor, most of the last layer's work.
        weight, bias = self.conv_out.weight, self.conv_out.bias
        mean_logit = F.conv2d(h, weight[: c.channels], bias[: c.channels], padding=1)
        rest = F.conv2d(h, weight[c.channels :], bias[c.channels :], padding=1)
        logvar = c.logvar_min + (c.logvar_max - c.logvar_min) * torch.sigmoid(rest[:, : c.channels])
        if c.covariance == "diagonal":
            return torch.sigmoid(mean_logit), logvar
        factor = FACTOR_SCALE * rest[:, c.channels :].reshape(-1, c.rank, c.channels, c.image_size, c.image_size)
        return torch.sigmoid(mean_logit), logvar, factor


class VAE(nn.Module):
    """Encoder + decoder; `loss` is the negative ELBO (vae) or the L2 reconstruction loss (ae)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)

    def posterior(self, x: torch.Tensor) -> DiagonalGaussian:
        mean, logvar = self.encoder(x)
        return DiagonalGaussian(mean, logvar)

    def log_px(
        self,
        images: torch.Tensor,
        z: torch.Tensor,
        generator: torch.Generator | None = None,
        fixed_logvar: float | None = None,
        uniform: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(log p(x|z) in nats per image [N] under the configured likelihood, decoder mean).

        fixed_logvar replaces the decoder's variance by a constant (and drops the covariance
        factor): the variance warm-up against posterior collapse. `uniform` [N, C, H, W] in
        [0, 1) is the dequantization noise, drawn from `generator` when not given.
        """
        mean, logvar, *factor = self.decoder(z)
        if fixed_logvar is not None:
            logvar, factor = torch.full_like(logvar, fixed_logvar), []
        if self.config.likelihood == "discretized":
            return discretized_gaussian_log_prob(images, mean, logvar).flatten(1).sum(1), mean
        noise = uniform if uniform is not None else torch.rand(images.shape, generator=generator, dtype=mean.dtype, device=mean.device)
        return dequantized_log_prob(images, noise, mean, logvar, factor[0] if factor else None), mean

    def loss(
        self,
        images: torch.Tensor,
        generator: torch.Generator | None = None,
        *,
        kl_weight: float = 1.0,
        fixed_logvar: float | None = None,
        noise: tuple[torch.Tensor, torch.Tensor | None] | None = None,
    ) -> dict[str, torch.Tensor]:
        """images: uint8 [N, C, H, W]. Returns per-batch means; `loss` is what to minimise.

        VAE: `loss` = KL * kl_weight - log p(x|z) in nats per image (the negative ELBO at
        kl_weight 1); `bpd` = -ELBO in bits per dimension, always with weight 1.
        `kl_per_dim` [D] is the mean KL of each latent dimension.
        AE: `loss` = mean squared error per pixel in [0, 1] units.
        `noise` = (eps [N, D], uniform [N, C, H, W] or None) replaces the draws from `generator`:
        distributed training draws them per global batch, so an image gets the same noise
        whichever process holds it.
        """
        x = images.float() / 255.0
        if self.config.kind == "ae":
            (code,) = self.encoder(x)
            (recon,) = self.decoder(code)
            mse = F.mse_loss(recon, x)
            return {"loss": mse, "mse": mse.detach()}
        q = self.posterior(x)
        if noise is None:
            z, uniform = q.sample(generator), None
        else:
            z, uniform = q.mean + q.std * noise[0], noise[1]
        log_px, mean = self.log_px(images, z, generator, fixed_logvar, uniform)
        kl_per_dim = q.kl_per_dim()
        kl = kl_per_dim.sum(1)
        neg_elbo = kl - log_px
        dims = images[0].numel()
        return {
            "loss": (kl_weight * kl - log_px).mean(),
            "bpd": (neg_elbo.mean() / (dims * math.log(2))).detach(),
            "kl": kl.mean().detach(),
            "mse": F.mse_loss(mean, x).detach(),
            "kl_per_dim": kl_per_dim.mean(0).detach(),
        }
