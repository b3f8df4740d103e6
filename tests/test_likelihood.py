"""The discretized-Gaussian likelihood and the bounds, in numpy, against references (the torch
twin used in training is held to it in test_training_likelihood.py)."""

import math

import numpy as np
import pytest

from vaesdk.maths import likelihood as L


def reference_log_ndtr(x: float) -> float:
    # math.erfc is exact to double precision; it underflows only below x ~ -38.
    return math.log(0.5 * math.erfc(-x / math.sqrt(2.0)))


def test_log_ndtr_matches_math_erfc_across_the_range():
    xs = np.linspace(-37.0, 8.0, 4501)
    got = L.log_ndtr(xs)
    want = np.array([reference_log_ndtr(x) for x in xs])
    rel = np.abs(got - want) / np.maximum(np.abs(want), 1e-12)
    # exp(log) relative accuracy 1.2e-7 (the erfc fit) in the lower tail; absolute near 0.
    assert np.all((rel < 2e-7) | (np.abs(got - want) < 1e-9))


def test_log_ndtr_stays_finite_in_the_far_tail():
    got = L.log_ndtr(np.array([-1e3, -200.0, 50.0, 1e6]))
    assert np.all(np.isfinite(got))
    # log Phi(x) ~ -x^2/2 - log(-x) - log sqrt(2 pi) for x -> -inf
    asymptote = -0.5 * 200.0**2 - math.log(200.0) - 0.5 * math.log(2 * math.pi)
    assert got[1] == pytest.approx(asymptote, rel=1e-6)
    assert got[2] == 0.0 or abs(got[2]) < 1e-300


@pytest.mark.parametrize("logvar", [-14.0, -8.0, -3.0, 0.0, 2.0])
@pytest.mark.parametrize("mean", [-0.3, 0.0, 0.37, 1.0, 1.4])
def test_masses_of_all_256_values_sum_to_one(mean, logvar):
    k = np.arange(256)
    total = np.exp(L.discretized_gaussian_log_prob(k, mean, logvar)).sum()
    # The edge bins come from the erfc fit (relative accuracy 1.2e-7), the inner ones may not.
    assert total == pytest.approx(1.0, abs=2e-7)


def test_narrow_gaussian_puts_its_mass_on_the_nearest_value():
    lp = L.discretized_gaussian_log_prob(np.array([100, 101, 0, 255]), 100 / 255, -20.0)
    assert lp[0] > -1e-6  # probability ~1
    assert lp[1] < -50 and np.isfinite(lp[1])
    assert lp[2] < -1e4 and np.isfinite(lp[2])  # deep tail, still finite


def test_edge_bins_are_open_ended():
    # A mean far below 0 puts all mass on value 0; far above 1 on value 255.
    assert L.discretized_gaussian_log_prob(np.array([0]), -5.0, -2.0)[0] == pytest.approx(0.0, abs=1e-12)
    assert L.discretized_gaussian_log_prob(np.array([255]), 6.0, -2.0)[0] == pytest.approx(0.0, abs=1e-12)


def test_importance_weighted_bound_is_tighter_than_the_elbo():
    rng = np.random.default_rng(1)
    n, k, d = 50, 200, 4
    mean, logvar = rng.normal(size=(n, d)), rng.normal(-1.0, 0.3, size=(n, d))
    z = mean[:, None] + np.exp(0.5 * logvar)[:, None] * rng.standard_normal((n, k, d))
    log_px = -0.5 * ((z - 1.0) ** 2).sum(-1) - 10.0  # any likelihood works for the inequality
    elbo, iw = L.bounds_from_samples(log_px, z, mean, logvar)
    assert np.all(iw >= elbo - 0.05)
    assert np.mean(iw - elbo) > 0


def test_importance_weighted_bound_recovers_an_exact_marginal():
    # Linear-Gaussian model: p(z) = N(0, 1), p(x|z) = N(z, s^2), so p(x) = N(0, 1 + s^2),
    # and the exact posterior as proposal makes every weight equal to p(x).
    s2, x = 0.25, 0.8
    post_var = s2 / (1 + s2)
    post_mean = x / (1 + s2)
    rng = np.random.default_rng(2)
    z = post_mean + math.sqrt(post_var) * rng.standard_normal((1, 64, 1))
    log_px_given_z = (-0.5 * ((x - z[..., 0]) ** 2 / s2 + math.log(2 * math.pi * s2)))
    _, iw = L.bounds_from_samples(log_px_given_z, z, np.array([[post_mean]]), np.array([[math.log(post_var)]]))
    exact = -0.5 * (x**2 / (1 + s2) + math.log(2 * math.pi * (1 + s2)))
    assert iw[0] == pytest.approx(exact, abs=1e-9)


def test_bits_per_dim_conversion():
    assert L.nats_to_bpd(np.array([-784 * math.log(2)]), 784)[0] == pytest.approx(1.0)


@pytest.mark.parametrize("rank", [0, 3])
def test_dequantized_bound_is_the_gaussian_density_of_the_dequantized_pixels(rank):
    """Value k with noise u in [0, 1) is the point (k + u - 1/2) / 255 of its bin (centred on
    k / 255); its density under N(mean, diag(var) + W W^T), dense and by scipy, less log 255
    per pixel (the bin's width)."""
    from scipy.stats import multivariate_normal

    rng = np.random.default_rng(rank)
    shape = (2, 1, 3, 4)  # two images of 1 x 3 x 4 pixels
    images = rng.integers(0, 256, shape).astype(np.uint8)
    noise = rng.random(shape)
    mean = rng.random(shape)
    logvar = rng.uniform(-7.0, -2.0, shape)
    factor = 0.05 * rng.standard_normal((2, rank, 1, 3, 4)) if rank else None
    got = L.dequantized_log_prob(images, noise, mean, logvar, factor)
    for i in range(2):
        y = (images[i].astype(np.float64) + noise[i] - 0.5) / 255.0
        w = factor[i].reshape(rank, -1) if rank else np.zeros((0, 12))
        cov = np.diag(np.exp(logvar[i].ravel())) + w.T @ w
        want = multivariate_normal(mean[i].ravel(), cov).logpdf(y.ravel()) - 12 * math.log(255.0)
        assert got[i] == pytest.approx(want, rel=1e-9, abs=1e-9)
    centred = L.dequantized_log_prob(images, np.full(shape, 0.5), images / 255.0, logvar, None)
    assert centred == pytest.approx(-0.5 * (logvar.reshape(2, -1).sum(1) + 12 * math.log(2 * math.pi)) - 12 * math.log(255.0))


@pytest.mark.parametrize("mid", [-4.0, -1.5, 0.0, 0.7, 2.0, 4.0])
@pytest.mark.parametrize("reach", [0.049, 0.01])
def test_narrow_bin_series_is_exact_where_it_is_used(mid, reach):
    """Inside its range, half * (1 + |mid|) < NARROW, the series matches the CDF difference
    computed on the tail side (erfc of two values of the same sign: no cancellation) to 1e-10:
    its h^4 term alone is worth up to about 1e-7 there."""
    half = reach / (1.0 + abs(mid))
    assert half * (1.0 + abs(mid)) < L.NARROW
    m = abs(mid)  # the mass is symmetric in mid
    upper, lower = (m - half) / math.sqrt(2.0), (m + half) / math.sqrt(2.0)
    if m - half > 0:
        want = math.log(0.5 * (math.erfc(upper) - math.erfc(lower)))
    else:
        want = math.log(0.5 * (math.erf(lower) - math.erf(upper)))
    got = float(L.log_narrow_bin(np.array(mid), np.array(half)))
    assert got == pytest.approx(want, rel=1e-10, abs=1e-10)


@pytest.mark.parametrize("logvar", [-2.0, -6.0, -9.0])
def test_discretized_masses_are_the_gaussian_cdf_over_each_values_bin(logvar):
    """P(k) = Phi((k/255 + 1/510 - mean) / sd) - Phi((k/255 - 1/510 - mean) / sd), the edge
    bins open-ended, with sd = exp(logvar / 2): checked value by value against math.erf."""
    mean, sd = 0.4, math.exp(0.5 * logvar)
    cdf = lambda v: 0.5 * math.erfc(-(v - mean) / (sd * math.sqrt(2.0)))  # noqa: E731
    k = np.array([0, 1, 60, 101, 102, 103, 160, 254, 255])
    got = L.discretized_gaussian_log_prob(k, mean, logvar)
    for value, lp in zip(k, got):
        hi = 1.0 if value == 255 else cdf(value / 255.0 + 0.5 / 255.0)
        lo = 0.0 if value == 0 else cdf(value / 255.0 - 0.5 / 255.0)
        if hi - lo < 1e-250:
            continue  # far outside the Gaussian: no float64 reference
        assert lp == pytest.approx(math.log(hi - lo), rel=1e-6, abs=1e-6), int(value)


@pytest.mark.parametrize("logvar", [10.0, 30.0, 60.0])
def test_broad_gaussians_give_each_inner_value_its_density_times_the_bin(logvar):
    """With sd far above a bin, P(k) = density at k/255 times 1/255 to well under 1e-9; the
    plain CDF difference cancels (off by 6e-6 nats at logvar 10, 0.8 nats at 60), so these
    values need the narrow-bin series."""
    mean, sd = 0.3, math.exp(0.5 * logvar)
    k = np.array([1, 77, 128, 254])
    got = L.discretized_gaussian_log_prob(k, mean, logvar)
    z = (k / 255.0 - mean) / sd
    want = -0.5 * z * z - 0.5 * math.log(2 * math.pi) - math.log(sd) - math.log(255.0)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)


@pytest.mark.parametrize("lower,upper", [(5.0, 5.5), (8.0, 12.0), (20.0, 20.01), (30.0, 37.0), (0.4, 3.0), (-0.2, 0.9)])
def test_log_diff_ndtr_is_as_exact_as_log_ndtr_in_either_tail(lower, upper):
    """Far out on either side the two CDF values are both about 0 or both about 1; computed on
    the tail side the difference keeps the erfc fit's accuracy (about 1e-7 in the log)."""
    want = math.log(0.5 * (math.erfc(lower / math.sqrt(2.0)) - math.erfc(upper / math.sqrt(2.0))))
    right = float(L.log_diff_ndtr(np.array(upper), np.array(lower)))
    left = float(L.log_diff_ndtr(np.array(-lower), np.array(-upper)))
    assert right == pytest.approx(want, rel=0, abs=1e-6) and left == pytest.approx(want, rel=0, abs=1e-6)


def test_log_diff_ndtr_beyond_where_one_minus_phi_underflows():
    """Past x = 38.5, 1 - Phi(x) underflows, so Phi(45) - Phi(40) is 0 unless computed as
    Phi(-40) - Phi(-45); scipy's log_ndtr is the reference there."""
    from scipy.special import log_ndtr

    want = log_ndtr(-40.0) + math.log1p(-math.exp(log_ndtr(-45.0) - log_ndtr(-40.0)))
    assert float(L.log_diff_ndtr(np.array(45.0), np.array(40.0))) == pytest.approx(want, rel=0, abs=1e-6)
    assert float(L.log_diff_ndtr(np.array(-40.0), np.array(-45.0))) == pytest.approx(want, rel=0, abs=1e-6)


def test_gaussian_log_prob_is_the_diagonal_normal_log_density(rng):
    from scipy.stats import multivariate_normal

    z, mean, logvar = rng.standard_normal((5, 3)), rng.standard_normal(3), rng.uniform(-2, 1, 3)
    want = multivariate_normal(mean, np.diag(np.exp(logvar))).logpdf(z)
    np.testing.assert_allclose(L.gaussian_log_prob(z, mean, logvar), want, rtol=1e-12)
    np.testing.assert_allclose(L.gaussian_log_prob(z), multivariate_normal(np.zeros(3)).logpdf(z), rtol=1e-12)


def test_logsumexp_keeps_every_other_axis_even_of_size_one():
    a = np.log(np.array([[[1.0, 2.0, 5.0]]]))  # shape (1, 1, 3)
    out = L.logsumexp(a, axis=2)
    assert out.shape == (1, 1)
    assert out[0, 0] == pytest.approx(math.log(8.0))
    assert L.logsumexp(np.full((2, 3), -np.inf), axis=1).tolist() == [-np.inf, -np.inf]


def test_kl_to_standard_normal_of_known_gaussians():
    # KL(N(m, s^2) || N(0, 1)) = (m^2 + s^2 - 1) / 2 - log s
    mean = np.array([0.0, 1.0, -2.0, 0.5])
    logvar = np.array([0.0, 0.0, math.log(4.0), math.log(0.25)])
    want = [0.0, 0.5, (4 + 4 - 1) / 2 - math.log(2.0), (0.25 + 0.25 - 1) / 2 - math.log(0.5)]
    np.testing.assert_allclose(L.kl_to_standard_normal(mean, logvar), want, rtol=1e-12, atol=1e-15)
