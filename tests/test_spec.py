"""The session-free layer under `Model`: a bundle's description (`vaesdk.runtime.spec`), its priors
(`vaesdk.maths.priors.PriorSet`), argument checks over the description and the anomaly calibration
fit over score parts, all without an onnxruntime session."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

import vaesdk
from vaesdk.runtime import arguments
from vaesdk.maths.anomaly import COLOUR_FEATURES, COLOUR_VARIANCE_FEATURES, GREY_FEATURES, MAX_POINTS, MIN_CALIBRATION, Parts, combine, fit_calibration
from vaesdk.bundle.reading import read_bundle, read_manifest
from vaesdk.bundle.editing import write_manifest
from vaesdk.base.errors import InvalidArgumentError, UnsupportedOperationError
from vaesdk.maths.priors import STANDARD_PRIOR, LatentGaussian, PriorSet
from vaesdk.runtime.spec import ModelSpec


@pytest.fixture(scope="module")
def vae_spec(tiny_vae_bundle) -> ModelSpec:
    return ModelSpec.from_bundle(read_bundle(tiny_vae_bundle))


@pytest.fixture(scope="module")
def ae_spec(tiny_ae_bundle) -> ModelSpec:
    return ModelSpec.from_bundle(read_bundle(tiny_ae_bundle))


def test_a_spec_is_built_without_sessions_and_agrees_with_the_model(tiny_vae_bundle, vae_spec):
    model = vaesdk.load(tiny_vae_bundle, device="cpu")
    assert (vae_spec.name, vae_spec.kind, vae_spec.latent_dim, vae_spec.image_shape) == (
        model.name, model.kind, model.latent_dim, model.image_shape,
    )  # fmt: skip
    assert vae_spec.prior_set.names == model.priors and vae_spec.prior_set.default == model.default_prior
    assert vae_spec.dims_by_usage() == model.dims_by_usage()
    assert vae_spec.describe(model.device, model.providers) == model.describe()


def test_arguments_are_checked_against_the_spec(vae_spec, ae_spec):
    assert arguments.validate(vae_spec, "edit", {"dim": 1})["dim"] == 1
    with pytest.raises(InvalidArgumentError, match=rf"^latent dimension {ae_spec.latent_dim} is out of range; this model has dimensions 0\.\.{ae_spec.latent_dim - 1}$"):
        arguments.validate(ae_spec, "edit", {"dim": ae_spec.latent_dim})
    with pytest.raises(UnsupportedOperationError, match="'tiny-ae' is a plain autoencoder"):
        arguments.validate(ae_spec, "reconstruct", {"sample_pixels": True})


def test_validate_sample_without_a_prior_takes_the_default_as_sample_does(tiny_ae_bundle, bundled_model):
    ae = vaesdk.load(tiny_ae_bundle, device="cpu")
    assert ae.validate("sample", n=2)["prior"] == ae.default_prior == "aggregate"
    assert ae.validate("traverse")["prior"] == "aggregate"
    assert ae.sample(2, seed=0).shape[0] == 2
    # A bundle whose default is its fitted mixture: the check answers what `sample` draws from.
    assert bundled_model.validate("sample", n=2)["prior"] == bundled_model.default_prior == "mixture"


def test_every_score_entry_point_defaults_to_the_one_default_k(vae_spec):
    import inspect

    from vaesdk.jobs.blocks import JobOptions
    from vaesdk.jobs.shards import run_sharded

    assert arguments.validate(vae_spec, "score", {})["k"] == arguments.DEFAULT_IW_SAMPLES == vaesdk.DEFAULT_IW_SAMPLES == 1
    for call in (vaesdk.Model.score, vaesdk.run_job, run_sharded):
        assert inspect.signature(call).parameters["k"].default == arguments.DEFAULT_IW_SAMPLES, call
    assert JobOptions("score").k == arguments.DEFAULT_IW_SAMPLES


def test_a_manifest_change_keeps_the_priors_and_updates_the_directions(bundle_copy):
    model = vaesdk.load(bundle_copy, device="cpu")
    prior_set = model.spec.prior_set
    assert "up" not in model.spec.directions
    model.add_direction("up", np.zeros((2, 28, 28, 1), np.uint8), np.full((2, 28, 28, 1), 255, np.uint8))
    assert "up" in model.spec.directions and model.spec.prior_set is prior_set
    np.testing.assert_array_equal(model.spec.direction_vector("up"), model.directions["up"])


# ---- the prior set -------------------------------------------------------------------------


def _gaussian(dim: int, shift: float) -> LatentGaussian:
    return LatentGaussian(np.full(dim, shift), np.eye(dim))


def test_prior_names_and_the_one_default_rule():
    g = {"b": _gaussian(2, 1.0), "a": _gaussian(2, -1.0)}
    assert PriorSet("m", "vae", 2, g).names == [STANDARD_PRIOR, "a", "b"]
    assert PriorSet("m", "vae", 2, g).default == STANDARD_PRIOR
    assert PriorSet("m", "vae", 2, g, named_default="b").default == "b"
    assert PriorSet("m", "ae", 2, g).names == ["a", "b"]
    assert PriorSet("m", "ae", 2, g).default == "a"
    assert PriorSet("m", "ae", 2).default is None


def test_prior_draws_and_refusals():
    g = {"a": _gaussian(2, 5.0)}
    vae, ae = PriorSet("m", "vae", 2, g), PriorSet("m", "ae", 2, g)
    z = ae.draw(None)(2000, np.random.default_rng(0), 1.0, None)
    assert z.shape == (2000, 2) and abs(z.mean() - 5.0) < 0.1
    assert abs(vae.draw(None)(2000, np.random.default_rng(0), 1.0, None).mean()) < 0.1
    with pytest.raises(InvalidArgumentError, match=r"^unknown prior 'nope'; this model has: standard, a$"):
        vae.resolve("nope")
    with pytest.raises(UnsupportedOperationError, match=r"^'m' is a plain autoencoder and has no prior N\(0, I\); sample from a fitted Gaussian instead: prior='a'$"):
        ae.resolve(STANDARD_PRIOR)
    with pytest.raises(UnsupportedOperationError, match="no fitted priors, so it cannot sample"):
        PriorSet("m", "ae", 2).resolve(None)
    with pytest.raises(InvalidArgumentError, match=r"^prior must be a name, one of: standard, a; got 3$"):
        vae.resolve(3)
    assert ae.resolve(None) == "a" and vae.resolve(None) == STANDARD_PRIOR


def test_log_density_is_the_mixtures_or_the_standard_normal(bundled_model):
    prior_set = bundled_model.spec.prior_set
    z = np.random.default_rng(0).normal(size=(5, bundled_model.latent_dim))
    np.testing.assert_allclose(prior_set.log_density(z, "mixture"), prior_set.fitted["mixture"].log_prob(z))
    standard = -0.5 * (z**2).sum(1) - 0.5 * z.shape[1] * np.log(2 * np.pi)
    np.testing.assert_allclose(prior_set.log_density(z, STANDARD_PRIOR), standard)
    assert prior_set.anomaly_prior == "mixture"
    assert PriorSet("m", "vae", 2, {"a": _gaussian(2, 0.0)}, named_default="a").anomaly_prior == STANDARD_PRIOR


# ---- the calibration fit -------------------------------------------------------------------


def _parts(rng, n, colour=None):
    return Parts(rng.normal(3.0, 2.0, n), rng.normal(-1.0, 0.5, n), rng.uniform(0.5, 3.0, n), np.zeros(n) if colour is None else colour)


def _kernel_score(points, bandwidth, x):
    """-log of the mean Gaussian kernel value, written out pair by pair."""
    return -np.log(np.mean([np.exp(-np.sum((x - p) ** 2) / (2 * bandwidth**2)) for p in points]))


def test_the_calibration_fit_is_a_kernel_density_of_the_standardised_features_with_its_quantiles():
    rng = np.random.default_rng(0)
    parts = _parts(rng, 500)
    entry = fit_calibration(parts, "mixture", "held-out test", colour=False)
    cal = entry["calibration"]
    assert cal["n"] == 500 and cal["prior"] == "mixture" and cal["source"] == "held-out test"
    density = cal["density"]
    assert density["features"] == list(GREY_FEATURES)
    values = np.stack([parts.pixel, parts.latent, parts.complexity, np.log(parts.complexity + 1e-3)], axis=1)
    np.testing.assert_allclose(density["center"], values.mean(0)) and np.testing.assert_allclose(density["scale"], values.std(0))
    points = (values - values.mean(0)) / values.std(0)
    np.testing.assert_allclose(density["points"], points)
    assert density["bandwidth"] == pytest.approx(500 ** (-1 / 8))
    # Each calibration image's own score leaves its own point out.
    own = [_kernel_score(np.delete(points, i, 0), density["bandwidth"], points[i]) for i in range(500)]
    assert len(cal["quantiles"]) == 500
    np.testing.assert_allclose(cal["quantiles"], np.sort(own), rtol=1e-9)
    with pytest.raises(InvalidArgumentError, match="all score the same"):
        fit_calibration(Parts(*(np.ones(MIN_CALIBRATION) for _ in range(4))), "standard", colour=False)
    bad = _parts(rng, 500)
    bad.pixel[-1] = np.nan
    with pytest.raises(InvalidArgumentError, match="non-finite"):
        fit_calibration(bad, "standard", colour=False)


def test_a_colour_model_adds_the_colour_feature_and_a_large_calibration_keeps_max_points():
    rng = np.random.default_rng(1)
    n = MAX_POINTS + 500
    entry = fit_calibration(_parts(rng, n, colour=rng.uniform(0, 255, n)), "standard", colour=True)
    density = entry["calibration"]["density"]
    assert density["features"] == list(COLOUR_FEATURES) and len(density["points"]) == MAX_POINTS
    assert entry["calibration"]["n"] == n and len(entry["calibration"]["quantiles"]) == 1001
    # A calibration where every image is grey keeps the colour feature, scaled by 1: a
    # colourful image is then far from every point.
    grey = fit_calibration(_parts(rng, 300), "standard", colour=True)["calibration"]["density"]
    assert grey["scale"][-1] == 1.0 and grey["center"][-1] == 0.0


def test_a_colour_model_with_a_decoder_variance_uses_it_in_place_of_the_pixel_part():
    rng = np.random.default_rng(2)
    n = 400
    base = _parts(rng, n, colour=rng.uniform(0, 255, n))
    parts = Parts(base.pixel, base.latent, base.complexity, base.colour, rng.normal(-6.0, 0.3, n))
    density = fit_calibration(parts, "standard", colour=True)["calibration"]["density"]
    assert density["features"] == list(COLOUR_VARIANCE_FEATURES) and density["features"][0] == "decoder_logvar"
    np.testing.assert_allclose(density["center"][0], parts.decoder_logvar.mean())
    # A grey model keeps the pixel part; an explicit feature list is taken as it is.
    assert fit_calibration(parts, "standard", colour=False)["calibration"]["density"]["features"] == list(GREY_FEATURES)
    assert fit_calibration(parts, "standard", colour=True, features=COLOUR_FEATURES)["calibration"]["density"]["features"] == list(COLOUR_FEATURES)


def test_the_decoder_variance_part_is_the_mean_decoder_logvar_at_the_first_draw(tiny_vae_bundle, fashion_test):
    """Scores.anomaly_decoder_logvar, written out: the posterior's first draw for each image
    from its own stream, the decoder's `logvar` output there, averaged over the image's values."""
    import onnxruntime as ort

    from vaesdk.maths.latent import ImageNoise

    model = vaesdk.load(tiny_vae_bundle, device="cpu")
    images = fashion_test.images[:6]
    got = model.score(images, k=3, seed=7).anomaly_decoder_logvar
    post = model.encode(images)
    eps = ImageNoise(7, images).normals(slice(0, len(images)), 3, model.latent_dim)[:, 0]
    z1 = (post.mean + np.exp(0.5 * post.logvar) * eps).astype(np.float32)
    session = ort.InferenceSession(str(tiny_vae_bundle / "decoder.onnx"), providers=["CPUExecutionProvider"])
    (logvar,) = session.run(["logvar"], {session.get_inputs()[0].name: z1})
    np.testing.assert_allclose(got, logvar.reshape(len(images), -1).astype(np.float64).mean(1), rtol=1e-6)


def test_calibrating_a_bundle_fits_its_uncalibrated_score_parts(tiny_vae_bundle, tmp_path, fashion_test):
    from vaesdk.maths.anomaly import CALIBRATION_SEED, calibrate_anomaly

    model = vaesdk.load(tiny_vae_bundle, device="cpu")
    images = fashion_test.images[:MIN_CALIBRATION]
    entry = calibrate_anomaly(model, images, "test images")
    raw = model.score(images, k=1, seed=CALIBRATION_SEED, calibrated=False)
    assert entry == fit_calibration(Parts.of(raw), model.spec.prior_set.anomaly_prior, "test images", colour=False)
    # Written into a copy, the calibration scores the same parts.
    copy = tmp_path / "calibrated"
    shutil.copytree(tiny_vae_bundle, copy)
    data = read_manifest(copy).data
    data["anomaly"] = entry
    write_manifest(copy, data)
    calibrated = vaesdk.load(copy, device="cpu")
    s = calibrated.score(images[:8], k=1, seed=3)
    np.testing.assert_allclose(s.anomaly, combine(Parts.of(s), calibrated.spec.calibration), rtol=1e-12)
    assert s.p_value is not None and calibrated.score(images[:8], k=1, seed=3, calibrated=False).p_value is None


def test_calibration_can_take_the_latent_part_from_another_prior_of_the_bundle(fashion_test):
    from vaesdk.maths.anomaly import CALIBRATION_SEED, calibrate_anomaly, latent_part

    model = vaesdk.load("fashion-mnist", device="cpu")
    images = fashion_test.images[:MIN_CALIBRATION]
    assert model.spec.prior_set.anomaly_prior == "mixture"
    entry = calibrate_anomaly(model, images, "test images", prior="standard")
    assert entry["calibration"]["prior"] == "standard"
    raw = Parts.of(model.score(images, k=1, seed=CALIBRATION_SEED, calibrated=False))
    standard = latent_part(model.spec.prior_set, model.encode(images).mean, "standard", 784)
    want = fit_calibration(Parts(raw.pixel, standard, raw.complexity, raw.colour), "standard", "test images", colour=False)
    assert entry == want
    with pytest.raises(InvalidArgumentError, match="'nope'"):
        calibrate_anomaly(model, images, prior="nope")


def test_calibration_images_scored_as_new_use_the_calibrations_prior(tmp_path, fashion_test):
    from vaesdk.maths.anomaly import scores_as_new

    images = fashion_test.images[:MIN_CALIBRATION]
    copy = tmp_path / "calibrated"
    shutil.copytree(vaesdk.load("fashion-mnist").path, copy)
    data = read_manifest(copy).data
    data.pop("anomaly")
    write_manifest(copy, data)
    model = vaesdk.load(copy, device="cpu")
    from vaesdk.maths.anomaly import calibrate_anomaly

    data["anomaly"] = calibrate_anomaly(model, images, "test images", prior="standard")
    write_manifest(copy, data)
    model = vaesdk.load(copy, device="cpu")
    scores, p = scores_as_new(model, images, model.spec.calibration)
    # Each image without its own point is rarer than with it, under the same (standard) prior.
    inside = model.score(images, k=1, seed=0).anomaly
    assert (scores > inside).all() and p.shape == (MIN_CALIBRATION,)
