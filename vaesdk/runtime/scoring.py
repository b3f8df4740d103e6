"""Scores of images under a model: the -ELBO and importance-weighted bounds in bits/dim, and
the anomaly score with its p-value (its maths in `vaesdk.maths.anomaly`). A `Scorer` holds
what scoring needs, the bundle's facts and the decoder's session, and never the `Model`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from ..maths import latent as L
from ..maths import likelihood
from ..maths.anomaly import Calibration, Parts, colour_spread, combine, complexity_bpd, flag_unusual, latent_part
from .session import Graph
from .spec import ModelSpec


@dataclass(frozen=True)
class Scores:
    """Per-image scores, float64 [N].

    elbo_bpd: -ELBO; iw_bpd: -(importance-weighted bound with `k` samples), always <= elbo_bpd
    up to Monte-Carlo noise, and closer to the true negative log-likelihood. Both are in
    bits/dim (positive, lower is better) and depend on `seed` and the image only: each image draws
    from streams of its own (`vaesdk.maths.latent.ImageNoise`), so it scores the same alone, in
    any batch and at any place in it.
    anomaly: how unusual each image is for the model (higher = more unusual; see
    `vaesdk.maths.anomaly`): how rare its parts are, together, among held-out images (the
    bundle's calibration); pixel + latent for a bundle without one.
    anomaly_pixel: -log p(x|z) for the first of the k posterior draws minus a lossless
    compressor's bits/dim; anomaly_latent: -log density of the posterior mean under the fitted
    prior, bits/dim; anomaly_complexity: that compressor's bits/dim; anomaly_colour: the largest
    spread between the image's channels at any pixel (0 for grey); anomaly_decoder_logvar: the
    mean log-variance of p(x|z) at the first draw (None for a decoder without a variance
    output). The anomaly's distribution is the same for every k; like the bounds, it depends on
    the seed and the image only.
    p_value: the fraction of held-out in-distribution images scoring at least as high (small =
    unusual), from the bundle's calibration; None when the bundle has no calibration.
    bounds: False for a model without a pixel likelihood (a deterministic decoder): elbo_bpd
    and iw_bpd are NaN, and anomaly_pixel measures the reconstruction under a reference
    Gaussian (sigma 0.1, vaesdk.maths.pixels.REFERENCE_SIGMA) instead of the model's likelihood.
    """

    elbo_bpd: np.ndarray
    iw_bpd: np.ndarray
    k: int
    anomaly: np.ndarray
    p_value: np.ndarray | None = None
    anomaly_pixel: np.ndarray | None = None
    anomaly_latent: np.ndarray | None = None
    bounds: bool = True
    anomaly_complexity: np.ndarray | None = None
    anomaly_colour: np.ndarray | None = None
    anomaly_decoder_logvar: np.ndarray | None = None

    def flagged(self, p_below: float) -> np.ndarray:
        """bool [N]: images whose p_value is below `p_below` (raises when uncalibrated)."""
        return flag_unusual(self.p_value, p_below)


def _chunks(n: int, size: int) -> Iterator[slice]:
    for i in range(0, n, size):
        yield slice(i, min(i + size, n))


class Scorer:
    """The scoring half of a `Model`: its spec, its decoder session and its batch size."""

    def __init__(self, spec: ModelSpec, decoder: Graph, batch_size: int):
        self.spec, self.decoder, self.batch_size = spec, decoder, batch_size

    def score(
        self,
        batch: np.ndarray,
        encode: Callable[[np.ndarray], L.Posterior],
        k: int,
        seed: int | np.random.Generator | L.GivenNoise | None,
        calibration: Calibration | None,
    ) -> Scores:
        """Scores of checked uint8 images [N, H, W, C]; `encode` gives their posteriors. Each
        image draws from streams of its own (`latent.ImageNoise`): its scores do not depend on
        the other images of the call."""
        # The compressors release the GIL: they run beside the networks, not after them.
        pool = ThreadPoolExecutor(max_workers=1)
        complexity = pool.submit(complexity_bpd, batch)
        pool.shutdown(wait=False)  # the task still runs; its thread ends with it
        noise = seed if isinstance(seed, L.GivenNoise) else L.ImageNoise(seed, batch)
        post = encode(batch)
        dequantized = self.spec.manifest.likelihood_type == "dequantized_gaussian"
        dims = int(np.prod(self.spec.image_shape))
        elbo, iw, log_px1 = np.empty(len(batch)), np.empty(len(batch)), np.empty(len(batch))
        pixels = self.spec.pixels
        decoder_logvar = np.empty(len(batch)) if pixels is not None and "logvar" in pixels.outputs else None
        per_call = max(1, self.batch_size // k)
        for sl in _chunks(len(batch), per_call):
            m, lv = post.mean[sl], post.logvar[sl]
            eps = noise.normals(sl, k, self.spec.latent_dim)
            z = (m[:, None, :] + np.exp(0.5 * lv)[:, None, :] * eps).astype(np.float32)
            uniforms = (lambda shape, sl=sl: noise.uniforms(sl, shape)) if dequantized else None
            log_px = self.log_px(batch[sl], z, uniforms, None if decoder_logvar is None else decoder_logvar[sl])
            elbo[sl], iw[sl] = likelihood.bounds_from_samples(log_px, z, m, lv)
            # The anomaly score uses the first draw only, so its distribution (and so the
            # calibration) is the same for every k.
            log_px1[sl] = log_px[:, 0]
        compressed = complexity.result()
        pixel = likelihood.nats_to_bpd(log_px1, dims) - compressed
        prior = calibration.prior if calibration is not None else self.spec.prior_set.anomaly_prior
        latent = latent_part(self.spec.prior_set, post.mean, prior, dims)
        parts = Parts(pixel, latent, compressed, colour_spread(batch), decoder_logvar)
        unusual = combine(parts, calibration)
        p_value = calibration.p_values(unusual) if calibration is not None else None
        if pixels is not None and not pixels.kind.bounds:  # no likelihood: no bounds to report
            elbo = iw = np.full(len(batch), np.nan)
        return Scores(
            likelihood.nats_to_bpd(elbo, dims), likelihood.nats_to_bpd(iw, dims), k, unusual, p_value, pixel, latent,
            bounds=pixels is None or pixels.kind.bounds, anomaly_complexity=compressed, anomaly_colour=parts.colour,
            anomaly_decoder_logvar=decoder_logvar,
        )

    def log_px(
        self, images: np.ndarray, z: np.ndarray, uniforms: Callable[[tuple[int, ...]], np.ndarray] | None = None,
        first_logvar: np.ndarray | None = None,
    ) -> np.ndarray:  # fmt: skip
        """log p(x|z) summed over pixels, [N, K], for images [N, H, W, C] and z [N, K, D]:
        the exact discretized likelihood, or its dequantized lower bound (`uniforms(shape)`
        gives, for per-image `shape` [K, C, H, W], one uniform per image, sample and value:
        [N, K, C, H, W]). `first_logvar` (float64 [N], for a decoder with a `logvar` output)
        receives the mean of that output over each image's values at its first draw."""
        n, k, d = z.shape
        pixels = self.spec.pixels
        assert pixels is not None  # scoring needs a vae
        res = self.decoder.run(z.reshape(n * k, d), pixels.outputs)
        target = images.transpose(0, 3, 1, 2)[:, None]  # [N, 1, C, H, W]
        res = [r.reshape(n, k, *r.shape[1:]) for r in res]
        if first_logvar is not None:
            first_logvar[...] = res[pixels.outputs.index("logvar")][:, 0].reshape(n, -1).mean(axis=1, dtype=np.float64)
        noise = uniforms((k, *res[0].shape[2:])) if uniforms is not None else None
        return pixels.log_prob(target, res, noise)
