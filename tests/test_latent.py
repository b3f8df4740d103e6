"""Latent maths: paths, prior draws, seeds, validation, directions."""

import numpy as np
import pytest

from vaesdk.maths import latent as L
from vaesdk.base.errors import InvalidArgumentError


def test_slerp_hits_both_ends_and_interpolates_the_norm(rng):
    a, b = rng.standard_normal(16).astype(np.float32), 3 * rng.standard_normal(16).astype(np.float32)
    path = L.slerp(a, b, np.linspace(0, 1, 9))
    np.testing.assert_allclose(path[0], a, atol=1e-5)
    np.testing.assert_allclose(path[-1], b, atol=1e-5)
    norms = np.linalg.norm(path, axis=1)
    np.testing.assert_allclose(norms, np.linspace(np.linalg.norm(a), np.linalg.norm(b), 9), rtol=1e-5)


def test_slerp_moves_at_constant_angular_speed(rng):
    a, b = rng.standard_normal(8), rng.standard_normal(8)
    path = L.slerp(a, b, np.linspace(0, 1, 5)).astype(np.float64)
    unit = path / np.linalg.norm(path, axis=1, keepdims=True)
    angles = np.arccos(np.clip(np.sum(unit[1:] * unit[:-1], axis=1), -1, 1))
    np.testing.assert_allclose(angles, angles[0], rtol=1e-4)


def test_slerp_of_parallel_or_zero_vectors_falls_back_to_a_line():
    a = np.ones(4, np.float32)
    np.testing.assert_allclose(L.slerp(a, 2 * a, np.array([0.5]))[0], 1.5 * a, rtol=1e-6)
    np.testing.assert_allclose(L.slerp(np.zeros(4), a, np.array([0.25]))[0], 0.25 * a, rtol=1e-6)


def test_slerp_follows_the_arc_at_small_angles_and_for_unit_vectors():
    # 0.5 rad between two unit vectors: the midpoint lies on the unit circle, at 0.25 rad
    # from each end (a straight line would cut inside, to norm cos(0.25)).
    a, b = np.array([1.0, 0.0]), np.array([np.cos(0.5), np.sin(0.5)])
    mid = L.slerp(a, b, np.array([0.5]))[0]
    np.testing.assert_allclose(mid, [np.cos(0.25), np.sin(0.25)], rtol=1e-6)
    quarter = L.slerp(np.array([1.0, 0.0]), np.array([0.0, 1.0]), np.array([0.5]))[0]
    np.testing.assert_allclose(quarter, [np.sqrt(0.5), np.sqrt(0.5)], rtol=1e-6)


def test_slerp_of_antiparallel_or_rounded_parallel_vectors_stays_finite(rng):
    a = rng.standard_normal(64)
    np.testing.assert_allclose(L.slerp(a, -a, np.array([0.25]))[0], 0.5 * a, rtol=1e-5)
    for scale in (1.0, 3.0, 1e-3, 7.1):  # dot / (|a| |b|) can round to just above 1 or below -1
        for sign in (1.0, -1.0):
            assert np.isfinite(L.slerp(a, sign * scale * a, np.linspace(0, 1, 5))).all()


def test_lerp_is_a_straight_line(rng):
    a, b = rng.standard_normal(5), rng.standard_normal(5)
    np.testing.assert_allclose(L.lerp(a, b, np.array([0.5]))[0], (a + b) / 2, rtol=1e-6)


@pytest.mark.parametrize("path", [L.lerp, L.slerp])
def test_paths_are_float32_latents_of_shape_steps_by_dim(rng, path):
    # The decoder takes float32; a float64 path would be converted on every call, or refused.
    a, b = rng.standard_normal(6).astype(np.float32), rng.standard_normal(6).astype(np.float32)
    out = path(a, b, np.linspace(0, 1, 4))
    assert out.dtype == np.float32 and out.shape == (4, 6)


def test_prior_draws_default_to_temperature_1_and_name_bad_arguments():
    z = L.prior_sample(20_000, 4, np.random.default_rng(5))
    assert abs(z.std() - 1.0) < 5 * np.sqrt(0.5 / z.size)  # 5 standard errors of a sample sd
    with pytest.raises(InvalidArgumentError, match=r"^temperature must be a finite number >= 0, got -1"):
        L.prior_sample(3, 4, np.random.default_rng(0), temperature=-1)
    with pytest.raises(InvalidArgumentError, match=r"^truncation must be a finite number > 0, got 0"):
        L.prior_sample(3, 4, np.random.default_rng(0), truncation=0)


def test_truncation_far_below_practical_values_still_bounds_every_component():
    # Redrawing rarely lands within 1e-4 of zero; after its last try the draw is clipped.
    z = L.prior_sample(200, 4, np.random.default_rng(0), temperature=2.0, truncation=1e-4)
    assert np.abs(z).max() <= 2e-4 and (z > 0).any() and (z < 0).any()


def test_random_streams_are_refused_where_one_stream_is_drawn():
    streams = L.RandomStreams.from_seed(1)
    with pytest.raises(InvalidArgumentError) as info:
        L.rng_from(streams)
    assert str(info.value) == "this operation draws from one stream; pass an int seed or a numpy Generator"
    with pytest.raises(InvalidArgumentError) as info:
        L.split_rng(streams, 3)
    assert str(info.value) == "RandomStreams carries exactly two streams (latent, pixels)"


def test_latent_checks_name_z_by_default():
    with pytest.raises(InvalidArgumentError, match=r"^z must have shape \[N, 4\] for this model, got \(2, 3\)$"):
        L.check_latents(np.zeros((2, 3), np.float32), 4)
    with pytest.raises(InvalidArgumentError, match=r"^z must be an array of shape \[N, 4\]$"):
        L.check_latents([[1.0, 2.0], [3.0]], 4)


def test_prior_draws_follow_temperature_and_truncation():
    z = L.prior_sample(20_000, 8, np.random.default_rng(0), temperature=0.5)
    assert z.dtype == np.float32 and z.shape == (20_000, 8)
    assert z.std() == pytest.approx(0.5, rel=0.02)
    t = L.prior_sample(5_000, 8, np.random.default_rng(0), temperature=2.0, truncation=1.0)
    assert np.abs(t).max() <= 2.0 + 1e-6
    assert np.abs(t).max() > 1.9  # truncated, not squashed


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -1.0, "hot"])
def test_prior_rejects_bad_temperature(bad):
    with pytest.raises(InvalidArgumentError, match="temperature"):
        L.prior_sample(2, 3, np.random.default_rng(0), temperature=bad)


@pytest.mark.parametrize("bad", [0.0, -2.0, float("nan")])
def test_prior_rejects_bad_truncation(bad):
    with pytest.raises(InvalidArgumentError, match="truncation"):
        L.prior_sample(2, 3, np.random.default_rng(0), truncation=bad)


def test_seeds_are_reproducible_and_streams_independent():
    a1, b1 = L.split_rng(7, 2)
    a2, b2 = L.split_rng(7, 2)
    assert np.array_equal(a1.standard_normal(5), a2.standard_normal(5))
    b1.standard_normal(1000)  # drawing more from one stream ...
    assert np.array_equal(a1.standard_normal(5), a2.standard_normal(5))  # ... never shifts the other
    assert not np.array_equal(L.split_rng(7, 2)[0].standard_normal(5), L.split_rng(8, 2)[0].standard_normal(5))


@pytest.mark.parametrize("seed", [0, 7, 2**40, np.uint32(5)])
def test_split_streams_are_the_seed_sequences_spawned_children(seed):
    """split_rng builds SeedSequence(seed).spawn(n) children directly; the streams (and so
    every seeded output) are those of the spawned children, and latent_stream is the first."""
    spawned = [np.random.default_rng(s).standard_normal(8) for s in np.random.SeedSequence(seed).spawn(3)]
    for got, want in zip(L.split_rng(seed, 3), spawned):
        assert np.array_equal(got.standard_normal(8), want)
    assert np.array_equal(L.latent_stream(seed).standard_normal(8), spawned[0])


def test_latent_stream_of_a_generator_spawns_as_split_rng_does():
    used, reference = np.random.default_rng(3), np.random.default_rng(3)
    first = L.latent_stream(used)
    expected = L.split_rng(reference, 2)[0]
    assert np.array_equal(first.standard_normal(4), expected.standard_normal(4))
    assert np.array_equal(used.spawn(1)[0].standard_normal(4), reference.spawn(1)[0].standard_normal(4))


def test_unseeded_streams_are_fresh_and_distinct():
    a, b = L.split_rng(None, 2)
    c, _ = L.split_rng(None, 2)
    draws = [g.standard_normal(4) for g in (a, b, c)]
    assert not np.array_equal(draws[0], draws[1]) and not np.array_equal(draws[0], draws[2])


@pytest.mark.parametrize("bad", [-1, 1.5, "7", True])
def test_bad_seeds_are_refused(bad):
    with pytest.raises(InvalidArgumentError, match="seed"):
        L.rng_from(bad)


def test_check_latents_validates_shape_dtype_and_values():
    assert L.check_latents(np.zeros(4), 4).shape == (1, 4)
    assert L.check_latents(np.zeros((2, 4), np.float64), 4).dtype == np.float32
    given = np.zeros((2, 4), np.float32)
    assert not np.shares_memory(L.check_latents(given, 4), given)  # the caller's array stays theirs
    for bad, match in [
        (np.zeros((2, 5)), "shape"),
        (np.zeros((0, 4)), "empty"),
        (np.array([[np.nan, 0, 0, 0]]), "NaN"),
        (np.array([[1e39, 0, 0, 0]]), "NaN or infinite"),
        (np.array([[0, 0, 0, np.inf]], np.float32), "NaN or infinite"),
        (np.array([[0, 2e6, 0, 0]], np.float32), "beyond"),
        (np.array([[True, False, True, False]]), "real numbers"),
        (np.array([[1j, 0, 0, 0]]), "real numbers"),
        (np.array([["a", "b", "c", "d"]]), "real numbers"),
    ]:
        with pytest.raises(InvalidArgumentError, match=match):
            L.check_latents(bad, 4)


def test_posterior_sample_and_kl():
    post = L.Posterior(np.zeros((3, 2), np.float32), np.zeros((3, 2), np.float32))
    np.testing.assert_allclose(post.kl(), 0.0)  # q == prior
    draws = np.stack([post.sample(np.random.default_rng(i)) for i in range(2000)])
    assert draws.std() == pytest.approx(1.0, rel=0.05)
    ae = L.Posterior(np.ones((1, 2), np.float32))
    assert np.array_equal(ae.sample(np.random.default_rng(0)), ae.mean)
    with pytest.raises(InvalidArgumentError) as info:
        ae.kl()
    assert str(info.value) == "a plain autoencoder has no posterior variance, so no KL"


def test_class_mean_directions_point_from_the_rest_to_the_class():
    latents = np.array([[0.0, 0.0], [0.0, 0.0], [2.0, 4.0]], np.float32)
    labels = np.array([0, 0, 1])
    dirs = L.class_mean_directions(latents, labels, ["a", "b"])
    np.testing.assert_allclose(dirs["b"], [2.0, 4.0])
    np.testing.assert_allclose(dirs["a"], [-2.0, -4.0])


def test_class_mean_directions_skip_classes_with_no_images_or_only_images():
    latents = np.array([[1.0, 0.0], [3.0, 2.0]], np.float32)
    assert L.class_mean_directions(latents, np.array([0, 0]), ["all", "none"]) == {}
    dirs = L.class_mean_directions(latents, np.array([0, 1]), ["a", "b", "absent"])
    assert sorted(dirs) == ["a", "b"] and all(d.dtype == np.float32 for d in dirs.values())


def test_numbers_beyond_float_range_are_refused_in_one_line():
    with pytest.raises(InvalidArgumentError, match=r"^temperature must be a number, got 1000000000"):
        L.check_finite_positive("temperature", 10**400)
    with pytest.raises(InvalidArgumentError, match=r"^z must hold real numbers"):
        L.check_latents([[10**400] * 4], 4)
