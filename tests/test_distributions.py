"""Every random path draws from the distribution it promises.

Draws are checked against the stated distribution with tests/stats.py: mean and covariance
within 5 standard errors of the sample size, and a Kolmogorov-Smirnov test on whitened draws.
Parameters are deliberately far from the easy case (log-variances far from 0, several
dimensions, correlations, temperature and truncation != 1), where a variance used for a
standard deviation or a forgotten factor cannot hide.

Model-level paths run on a bundle whose encoder and decoder are affine Gaussians built here
(tests/crafted.py), so their distributions are known exactly: q(z|x) = N(W x + b, diag(exp(lv)))
and p(x|z) per pixel N(z W + b, exp(lv)), rounded to the 256 levels and clipped.
"""

from __future__ import annotations

import pytest

# Needs onnx (the train extra): marked, and skipped at collection where it is absent.
pytestmark = pytest.mark.train
pytest.importorskip("onnx")

import numpy as np
from crafted import LATENT, PIXELS, affine_decoder, affine_encoder, bundle_with
from scipy import stats as st
from stats import (
    assert_discrete_pmf,
    assert_gaussian,
    assert_ks,
    assert_ks_normal,
    discretized_gaussian_pit,
    discretized_gaussian_pmf,
    whiten,
)

import vaesdk
from vaesdk.maths.latent import Posterior, RandomStreams, prior_sample
from vaesdk.maths.priors import LatentGaussian, fit_gaussian

N = 20_000
MEAN = np.array([-3.0, 0.5, 2.0, 10.0, 0.0])
LOGVAR = np.array([-4.0, -1.0, 1.5, 3.0, 0.7])


def random_cholesky(d: int, seed: int) -> np.ndarray:
    """A lower-triangular factor with strong correlations and scales from 0.2 to 3."""
    r = np.random.default_rng(seed)
    a = r.normal(size=(d, d)) * np.linspace(0.2, 3.0, d)[:, None]
    return np.linalg.cholesky(a @ a.T + 0.05 * np.eye(d))


def truncated_variance(c: float) -> float:
    return float(st.truncnorm(-c, c).var())


# ---- q(z|x): Posterior.sample ----------------------------------------------------------------


def test_posterior_draws_of_one_image_follow_its_gaussian():
    post = Posterior(np.tile(MEAN, (N, 1)).astype(np.float32), np.tile(LOGVAR, (N, 1)).astype(np.float32))
    z = post.sample(np.random.default_rng(0))
    assert z.dtype == np.float32 and z.shape == (N, len(MEAN))
    cov = np.diag(np.exp(LOGVAR))
    assert_gaussian(z, MEAN, cov)
    assert_ks_normal(whiten(z, MEAN, cov), "whitened q(z|x) draws")


def test_posterior_draws_of_a_batch_use_each_rows_own_parameters():
    r = np.random.default_rng(1)
    mean = r.uniform(-5, 5, (N, 6)).astype(np.float32)
    logvar = r.uniform(-6, 3, (N, 6)).astype(np.float32)
    z = Posterior(mean, logvar).sample(np.random.default_rng(2))
    standardised = (z.astype(np.float64) - mean) / np.exp(0.5 * logvar.astype(np.float64))
    assert_gaussian(standardised, np.zeros(6), np.eye(6))
    assert_ks_normal(standardised)
    np.testing.assert_array_equal(Posterior(mean).sample(np.random.default_rng(2)), mean)  # an autoencoder: the code itself


# ---- N(0, I): prior_sample --------------------------------------------------------------------


@pytest.mark.parametrize("temperature", [1.0, 0.35, 2.5])
def test_prior_draws_are_standard_normal_scaled_by_temperature(temperature):
    z = prior_sample(N, 5, np.random.default_rng(3), temperature=temperature)
    assert z.dtype == np.float32 and z.shape == (N, 5)
    assert_gaussian(z, np.zeros(5), temperature**2 * np.eye(5))
    assert_ks_normal(z / temperature, f"prior draws / temperature {temperature}")


@pytest.mark.parametrize("truncation, temperature", [(1.3, 1.8), (0.5, 0.6), (2.5, 1.0)])
def test_truncated_prior_draws_follow_the_truncated_normal(truncation, temperature):
    z = prior_sample(N, 4, np.random.default_rng(4), temperature=temperature, truncation=truncation)
    assert np.abs(z).max() <= np.float32(truncation) * np.float32(temperature)  # truncation really truncates
    assert np.abs(z).max() > 0.95 * truncation * temperature  # and only there: the range is used up to the bound
    # Components stay independent with the truncated normal's variance. (The Gaussian
    # standard errors over-estimate the spread of a truncated variable's sample variance:
    # the bound stays conservative.)
    assert_gaussian(z, np.zeros(4), temperature**2 * truncated_variance(truncation) * np.eye(4))
    assert_ks(z / temperature, st.truncnorm(-truncation, truncation).cdf, f"prior truncated at {truncation}")


def test_prior_temperature_zero_gives_the_mode():
    assert not prior_sample(10, 3, np.random.default_rng(0), temperature=0.0).any()


# ---- fitted Gaussians: LatentGaussian.sample -------------------------------------------------


@pytest.mark.parametrize("temperature", [1.0, 0.6])
def test_latent_gaussian_draws_have_its_mean_and_covariance(temperature):
    chol = random_cholesky(6, seed=5)
    mean = np.array([1.0, -2.0, 0.3, 4.0, -0.7, 0.0])
    z = LatentGaussian(mean, chol).sample(N, np.random.default_rng(6), temperature=temperature)
    assert z.dtype == np.float32 and z.shape == (N, 6)
    assert_gaussian(z, mean, temperature**2 * chol @ chol.T)
    assert_ks_normal(whiten(z, mean, temperature * chol, cholesky=True), "whitened fitted-Gaussian draws")


def test_truncated_latent_gaussian_truncates_the_whitened_draws():
    chol = random_cholesky(5, seed=7)
    mean = np.linspace(-1, 1, 5)
    c, t = 1.2, 0.8
    z = LatentGaussian(mean, chol).sample(N, np.random.default_rng(8), temperature=t, truncation=c)
    eps = whiten(z, mean, t * chol, cholesky=True)
    assert np.abs(eps).max() <= c * (1 + 1e-5)
    assert_ks(eps, st.truncnorm(-c, c).cdf, "whitened truncated fitted-Gaussian draws")
    assert_gaussian(z, mean, t**2 * truncated_variance(c) * chol @ chol.T)


def test_latent_gaussian_survives_the_manifest_round_trip():
    g = LatentGaussian(np.arange(4.0), random_cholesky(4, seed=9))
    back = LatentGaussian.from_manifest(g.to_manifest())
    np.testing.assert_allclose(back.mean, g.mean)
    np.testing.assert_allclose(back.cholesky, g.cholesky)


def test_fit_gaussian_has_the_aggregate_posteriors_moments():
    """The aggregate posterior (1/N) sum_i N(mu_i, diag sigma_i^2): draws from it, made the
    long way (pick an image, draw from its posterior), have the fitted Gaussian's moments."""
    r = np.random.default_rng(10)
    mu = r.normal(size=(400, 4)) @ random_cholesky(4, seed=11).T + np.array([1.0, 0.0, -2.0, 0.5])
    logvar = r.uniform(-3, 1, (400, 4))
    g = fit_gaussian(mu, logvar)
    pick = r.integers(0, 400, N)
    draws = Posterior(mu[pick], logvar[pick]).sample(r)
    assert_gaussian(draws, g.mean, g.cholesky @ g.cholesky.T)
    codes = fit_gaussian(mu)  # an autoencoder: the codes' own mean and covariance
    np.testing.assert_allclose(codes.mean, mu.mean(0))
    np.testing.assert_allclose(codes.cholesky @ codes.cholesky.T, np.cov(mu.T), rtol=1e-4)


# ---- through the model ------------------------------------------------------------------------


ENC_W = np.random.default_rng(20).normal(0, 0.2, (PIXELS, LATENT))
ENC_B = np.linspace(-2, 2, LATENT)
ENC_LOGVAR = np.linspace(-5, 2.5, LATENT)
# Pixel means from below 0 to above 1 (the clipped edge bins), spreads from a fraction of a
# level (a point mass) to a quarter of the range.
DEC_B = np.linspace(-0.08, 1.08, PIXELS).reshape(28, 28).T.ravel()
DEC_LOGVAR = np.log(np.geomspace(0.2 / 255, 0.25, PIXELS) ** 2)
DEC_W = np.zeros((LATENT, PIXELS))
DEC_W[0] = np.linspace(-0.3, 0.3, PIXELS)  # the mean moves with z_0


@pytest.fixture(scope="module")
def affine(tiny_vae_bundle, tmp_path_factory) -> vaesdk.Model:
    path = bundle_with(
        tiny_vae_bundle,
        tmp_path_factory.mktemp("affine") / "affine",
        encoder=affine_encoder(ENC_W, ENC_B, ENC_LOGVAR),
        decoder=affine_decoder(DEC_W, DEC_B, DEC_LOGVAR),
    )
    return vaesdk.load(path, device="cpu")


def test_model_latent_draws_follow_q_z_given_x(affine, fashion_test):
    image = fashion_test.images[7]
    mean = (image.reshape(-1).astype(np.float64) / 255) @ ENC_W + ENC_B
    post = affine.encode(image)
    np.testing.assert_allclose(post.mean[0], mean, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(post.logvar[0], ENC_LOGVAR, rtol=1e-6)
    z = affine.embed(np.repeat(image[None], N, 0), sample_latent=True, seed=0)
    cov = np.diag(np.exp(ENC_LOGVAR))
    assert_gaussian(z, mean, cov)
    assert_ks_normal(whiten(z, mean, cov), "whitened embed(sample_latent=True)")


def test_model_prior_draws_with_temperature_and_truncation(affine):
    z = affine.sample_latents(N, seed=1, temperature=0.7)
    assert_gaussian(z, np.zeros(LATENT), 0.49 * np.eye(LATENT))
    assert_ks_normal(z / 0.7)
    z = affine.sample_latents(N, seed=2, temperature=1.5, truncation=0.8)
    assert np.abs(z).max() <= np.float32(0.8) * np.float32(1.5)
    assert_ks(z / 1.5, st.truncnorm(-0.8, 0.8).cdf, "sample_latents truncated")


def test_model_fitted_prior_draws_use_the_manifests_gaussian(affine):
    entry = affine.manifest.data["latent"]["gaussians"]["aggregate"]
    g = LatentGaussian.from_manifest(entry)
    z = affine.sample_latents(N, seed=3, prior="aggregate", temperature=1.3)
    assert_gaussian(z, g.mean, 1.69 * g.cholesky @ g.cholesky.T)
    assert_ks_normal(whiten(z, g.mean, 1.3 * g.cholesky, cholesky=True))


def _expected_means(z: np.ndarray) -> np.ndarray:
    """The decoder's mean in float32 as onnxruntime computes it, [N, 784]."""
    return (z.astype(np.float32) @ DEC_W.astype(np.float32) + DEC_B.astype(np.float32)).astype(np.float32)


def test_decoded_means_are_rounded_to_the_nearest_level(affine):
    z = np.zeros((64, LATENT), np.float32)
    z[:, 0] = np.linspace(-3, 3, 64)
    got = affine.decode(z).reshape(64, PIXELS)
    x = _expected_means(z).astype(np.float64) * 255
    want = np.rint(np.clip(x, 0, 255))
    near_half = np.abs(x - np.floor(x) - 0.5) < 1e-3  # float32 rounding may go either way there
    assert near_half.mean() < 0.01
    np.testing.assert_array_equal(got[~near_half], want[~near_half])
    assert (x[~near_half] - np.floor(x[~near_half]) > 0.5).sum() > 1000  # plenty of pixels that round up


def test_decoded_pixel_draws_follow_the_discretized_gaussian(affine):
    z = np.zeros((4000, LATENT), np.float32)
    draws = affine.decode(z, sample_pixels=True, seed=4).reshape(4000, PIXELS)
    pmf = discretized_gaussian_pmf(DEC_B, np.exp(0.5 * DEC_LOGVAR))
    assert_discrete_pmf(draws, pmf, np.random.default_rng(5), "pixel draws")


def test_pixel_draws_follow_each_images_own_mean(affine):
    """Rows decoded from different latents draw around their own means. Randomised PIT per
    pixel: with lo, hi the edges of the drawn level's bin (open at 0 and 255), the value
    Phi(lo) + U (Phi(hi) - Phi(lo)) is exactly uniform when the level was drawn correctly
    (`stats.discretized_gaussian_pit`)."""
    n = 2000
    z = np.zeros((n, LATENT), np.float32)
    z[:, 0] = np.random.default_rng(6).uniform(-3, 3, n)
    k = affine.decode(z, sample_pixels=True, seed=RandomStreams.from_seed(7)).reshape(n, PIXELS).astype(np.float64)
    mean = _expected_means(z).astype(np.float64)
    u = discretized_gaussian_pit(k, mean, np.exp(0.5 * DEC_LOGVAR), np.random.default_rng(8))
    assert_ks(u, st.uniform.cdf, "pixel draws of distinct latents (randomised PIT)")
