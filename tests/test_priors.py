"""The prior kinds: the registry is the one list of them, every kind stores and reads back
what it drew from, and the fitted mixture prior's draws follow the stated distribution, its
file is checked like the model files, and it is the default sampler of bundles that carry one."""

from __future__ import annotations

import ast
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import vaesdk
from vaesdk.base.errors import BundleError, InvalidArgumentError
from vaesdk.maths.latent import prior_sample
from vaesdk.maths.priors import (
    GAUSSIAN,
    KINDS,
    MIXTURE,
    STANDARD_PRIOR,
    GaussianMixture,
    LatentGaussian,
    PriorSet,
    StandardNormal,
    fit_gaussian,
    read_priors,
    stored,
)

D = 3


def _mixture() -> GaussianMixture:
    """Three well-separated components with non-trivial, unequal covariances."""
    rng = np.random.default_rng(7)
    means = np.array([[-20.0, 0.0, 5.0], [0.0, 20.0, -5.0], [20.0, -10.0, 0.0]])
    chol = []
    for scale in (0.5, 1.5, 3.0):
        a = rng.normal(size=(D, D))
        cov = scale * (a @ a.T + D * np.eye(D))
        chol.append(np.linalg.cholesky(cov))
    return GaussianMixture(np.array([0.2, 0.5, 0.3]), means, np.array(chol))


def _assign(mix: GaussianMixture, z: np.ndarray) -> np.ndarray:
    return np.argmin(((z[:, None, :] - mix.means[None]) ** 2).sum(-1), axis=1)


@pytest.mark.parametrize("temperature", [1.0, 0.6])
def test_draws_match_weights_means_and_covariances(temperature):
    mix = _mixture()
    n = 60_000
    z = mix.sample(n, np.random.default_rng(0), temperature=temperature).astype(np.float64)
    comp = _assign(mix, z)
    for k in range(mix.components):
        p = mix.weights[k]
        count = np.sum(comp == k)
        assert abs(count - n * p) < 5 * np.sqrt(n * p * (1 - p)), (k, count)
        zk = z[comp == k]
        cov = temperature**2 * mix.cholesky[k] @ mix.cholesky[k].T
        # mean: 5 standard errors per coordinate
        se = np.sqrt(np.diag(cov) / len(zk))
        assert np.all(np.abs(zk.mean(0) - mix.means[k]) < 5 * se), (k, zk.mean(0), mix.means[k])
        # covariance: whitened draws have identity covariance; the sample variance of a
        # normal variable has standard error sqrt(2/n)
        white = np.linalg.solve(temperature * mix.cholesky[k], (zk - mix.means[k]).T).T
        emp = np.cov(white, rowvar=False)
        assert np.all(np.abs(emp - np.eye(D)) < 5 * np.sqrt(2.0 / len(zk))), (k, emp)


@pytest.mark.parametrize("weights", [[0.2, 0.5, 0.3], [1.0, 0.0, 0.0], [0.1] * 7 + [0.3], [1 / 3] * 3])
def test_component_draws_are_generator_choice_draws(weights):
    """The mixture picks components as numpy's Generator.choice(p=weights) does, draw for draw
    and leaving the stream in the same place, so seeds keep their meaning across versions."""
    # Components 1000 apart with unit covariances: a draw is its component's mean plus the prior
    # noise that follows the choice in the stream, so another component changes the draw.
    k = len(weights)
    means = np.repeat(1000.0 * np.arange(k)[:, None], D, axis=1)
    mix = GaussianMixture(np.array(weights), means, np.tile(np.eye(D), (k, 1, 1)))
    for seed, n in ((0, 1), (1, 7), (2, 1000)):
        ours, theirs = np.random.default_rng(seed), np.random.default_rng(seed)
        chosen = theirs.choice(k, size=n, p=mix.weights)
        want = (means[chosen] + prior_sample(n, D, theirs).astype(np.float64)).astype(np.float32)
        np.testing.assert_array_equal(mix.sample(n, ours), want)
        assert ours.random() == theirs.random()


def test_draws_pass_a_normality_test_after_whitening():
    stats = pytest.importorskip("scipy.stats")
    mix = _mixture()
    z = mix.sample(20_000, np.random.default_rng(1)).astype(np.float64)
    comp = _assign(mix, z)
    for k in range(mix.components):
        white = np.linalg.solve(mix.cholesky[k], (z[comp == k] - mix.means[k]).T).T
        for j in range(D):
            assert stats.kstest(white[:, j], "norm").pvalue > 1e-4


def test_truncation_bounds_each_whitened_component():
    mix = _mixture()
    z = mix.sample(5000, np.random.default_rng(2), temperature=0.8, truncation=1.5).astype(np.float64)
    comp = _assign(mix, z)
    for k in range(mix.components):
        white = np.linalg.solve(0.8 * mix.cholesky[k], (z[comp == k] - mix.means[k]).T).T
        assert np.abs(white).max() <= 1.5 + 1e-4
        assert np.abs(white).max() > 1.3  # the bound is reached, not far inside it


def test_log_prob_matches_the_density_formula():
    mix = _mixture()
    z = np.random.default_rng(3).normal(0, 15, (50, D))
    dens = np.zeros(len(z))
    for w, m, l in zip(mix.weights, mix.means, mix.cholesky):
        cov = l @ l.T
        diff = z - m
        quad = np.einsum("ni,ij,nj->n", diff, np.linalg.inv(cov), diff)
        dens += w * np.exp(-0.5 * quad) / np.sqrt((2 * np.pi) ** D * np.linalg.det(cov))
    with np.errstate(divide="ignore"):
        expected = np.log(dens)
    finite = np.isfinite(expected)
    assert finite.sum() > 25
    np.testing.assert_allclose(mix.log_prob(z)[finite], expected[finite], rtol=1e-9, atol=1e-9)


def test_npz_round_trip_and_refusals():
    mix = _mixture()
    back = GaussianMixture.from_npz(mix.to_npz(), D, "p.npz")
    for a, b in zip((mix.weights, mix.means, mix.cholesky), (back.weights, back.means, back.cholesky)):
        np.testing.assert_array_equal(a, b)

    def npz(**arrays) -> bytes:
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        return buf.getvalue()

    good = dict(weights=mix.weights, means=mix.means, cholesky=mix.cholesky)
    bad_cases = {
        "not an npz": b"garbage",
        "missing": npz(weights=mix.weights, means=mix.means),
        "shape": npz(**{**good, "means": mix.means[:, :2]}),
        "nan": npz(**{**good, "means": np.where(mix.means == 0, np.nan, mix.means)}),
        "weights": npz(**{**good, "weights": np.array([0.5, 0.5, 0.5])}),
        "upper": npz(**{**good, "cholesky": np.transpose(mix.cholesky, (0, 2, 1))}),
        "pickle": npz(**{**good, "weights": np.array([0.2, 0.5, 0.3], dtype=object)}),
    }
    for label, blob in bad_cases.items():
        with pytest.raises(BundleError, match="p.npz"):
            GaussianMixture.from_npz(blob, D, "p.npz")


def _npz(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def test_npz_edge_cases_that_are_valid_mixtures_are_read():
    """One component, and a component of weight zero, are still mixtures."""
    mix = _mixture()
    one = GaussianMixture.from_npz(_npz(weights=np.ones(1), means=mix.means[:1], cholesky=mix.cholesky[:1]), D, "p.npz")
    assert one.weights.tolist() == [1.0]
    zero = GaussianMixture.from_npz(_npz(weights=np.array([0.0, 0.4, 0.6]), means=mix.means, cholesky=mix.cholesky), D, "p.npz")
    assert zero.weights.tolist() == [0.0, 0.4, 0.6]


def test_npz_weights_are_normalised_and_the_component_limit_is_inclusive():
    from vaesdk.maths.priors import MAX_COMPONENTS

    mix = _mixture()
    off = GaussianMixture.from_npz(_npz(weights=mix.weights * (1 + 5e-7), means=mix.means, cholesky=mix.cholesky), D, "p.npz")
    assert abs(off.weights.sum() - 1.0) < 1e-15
    k = MAX_COMPONENTS
    many = dict(weights=np.full(k, 1.0 / k), means=np.zeros((k, D)), cholesky=np.broadcast_to(np.eye(D), (k, D, D)).copy())
    assert len(GaussianMixture.from_npz(_npz(**many), D, "p.npz").weights) == k


@pytest.mark.parametrize(
    "change,message",
    [
        ({"weights": np.array([[0.2, 0.5, 0.3]])}, "p.npz has shapes weights (1, 3), means (3, 3), cholesky (3, 3, 3); expected [K], [K, 3], [K, 3, 3] with 1 <= K <= "),
        ({"weights": np.array([-0.1, 0.6, 0.5])}, "p.npz: weights must be non-negative and sum to 1 (sum 1)"),
        ("zero-diagonal", "p.npz: cholesky must be lower-triangular with a positive diagonal"),
        ("small-upper", "p.npz: cholesky must be lower-triangular with a positive diagonal"),
    ],
    ids=["weights-2d", "negative-weight", "zero-diagonal", "small-upper-entry"],
)
def test_npz_refusals_name_the_file_and_the_fault(change, message):
    mix = _mixture()
    arrays = dict(weights=mix.weights, means=mix.means, cholesky=mix.cholesky.copy())
    if change == "zero-diagonal":
        arrays["cholesky"][1, 2, 2] = 0.0
    elif change == "small-upper":
        arrays["cholesky"][2, 0, 1] = 0.5
    else:
        arrays.update(change)
    with pytest.raises(BundleError) as info:
        GaussianMixture.from_npz(_npz(**arrays), D, "p.npz")
    assert str(info.value).startswith(message)


def test_bundle_default_prior_is_the_fitted_mixture(tiny_lowrank_bundle):
    model = vaesdk.load(tiny_lowrank_bundle, device="cpu")
    assert model.default_prior == "mixture"
    assert "mixture" in model.priors and "standard" in model.priors
    np.testing.assert_array_equal(model.sample(6, seed=3), model.sample(6, seed=3, prior="mixture"))
    assert not np.array_equal(model.sample(6, seed=3), model.sample(6, seed=3, prior="standard"))
    small = vaesdk.load(tiny_lowrank_bundle, device="cpu", batch_size=2)
    np.testing.assert_array_equal(small.sample(2000, seed=5), model.sample(2000, seed=5))


def test_tampered_prior_file_is_refused(tiny_lowrank_bundle, tmp_path):
    bundle = tmp_path / "b"
    shutil.copytree(tiny_lowrank_bundle, bundle)
    path = bundle / "prior-mixture.npz"
    blob = bytearray(path.read_bytes())
    blob[-5] ^= 1
    path.write_bytes(bytes(blob))
    with pytest.raises(BundleError, match="does not match its manifest"):
        vaesdk.load(bundle, device="cpu")


def test_manifest_default_prior_must_name_a_prior(tiny_lowrank_bundle, tmp_path):
    bundle = tmp_path / "b"
    shutil.copytree(tiny_lowrank_bundle, bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["latent"]["default_prior"] = "nonexistent"
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="default_prior"):
        vaesdk.load(bundle, device="cpu")


def test_log_prob_of_a_large_batch_runs_in_blocks_with_the_same_values(monkeypatch):
    rng = np.random.default_rng(3)
    k, d = 50, 6
    mixture = GaussianMixture(np.full(k, 1 / k), rng.normal(size=(k, d)), np.exp(rng.normal(0, 0.2, (k, d))))
    z = rng.normal(size=(1000, d))
    whole = mixture.log_prob(z)
    monkeypatch.setattr(GaussianMixture, "LOG_PROB_BLOCK", k * d * 7)  # blocks of 7 rows
    np.testing.assert_array_equal(mixture.log_prob(z), whole)
    np.testing.assert_array_equal(mixture.log_prob(z[:3]), whole[:3])


# ---- the registry of kinds -----------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]


def _gaussian() -> LatentGaussian:
    return LatentGaussian(np.array([1.0, -2.0, 0.5]), np.linalg.cholesky(np.array([[2.0, 0.3, 0.1], [0.3, 1.0, -0.2], [0.1, -0.2, 0.5]])))


def test_every_kind_is_read_back_as_it_was_stored_and_draws_the_same():
    for prior in (_mixture(), _gaussian(), GaussianMixture(np.array([0.5, 0.5]), np.zeros((2, D)), np.full((2, D), 0.5))):
        kind, entry, blob = stored(prior)
        assert kind in KINDS and kind.name == prior.kind
        assert (blob is not None) == kind.in_file
        latent = {kind.key: {"p": {**entry, "file": "prior-p.npz"} if kind.in_file else entry}}
        again = read_priors(latent, {"p": blob} if blob is not None else {}, D, lambda k, name, e: name)["p"]
        assert type(again) is type(prior) and again.describe() == prior.describe()
        z = prior.sample(50, np.random.default_rng(1), 0.8, 2.0)
        np.testing.assert_array_equal(again.sample(50, np.random.default_rng(1), 0.8, 2.0), z)
        np.testing.assert_allclose(again.log_prob(z), prior.log_prob(z), rtol=1e-12)


def test_every_kind_has_the_density_it_draws_from():
    """Each kind's log_prob against the Gaussian density written out from its covariance."""
    g = _gaussian()
    z = np.random.default_rng(2).normal(size=(7, D)) * 3
    cov = g.cholesky @ g.cholesky.T
    diff = z - g.mean
    want = -0.5 * np.einsum("ni,ij,nj->n", diff, np.linalg.inv(cov), diff) - 0.5 * np.linalg.slogdet(2 * np.pi * cov)[1]
    np.testing.assert_allclose(g.log_prob(z), want, rtol=1e-10)
    np.testing.assert_allclose(StandardNormal(D).log_prob(z), -0.5 * (z**2).sum(1) - 0.5 * D * np.log(2 * np.pi), rtol=1e-12)
    draws = g.sample(40_000, np.random.default_rng(3))
    np.testing.assert_allclose(np.cov(draws.T), cov, atol=0.05)


def test_names_follow_the_order_of_kinds_and_descriptions_name_the_kind():
    fitted = {"b": _gaussian(), "z-mix": _mixture(), "a": _gaussian(), "m": _mixture()}
    priors = PriorSet("model", "vae", D, fitted)
    assert [k.name for k in KINDS] == [MIXTURE.name, GAUSSIAN.name]
    assert priors.names == [STANDARD_PRIOR, "m", "z-mix", "a", "b"]
    assert priors.describe() == {
        STANDARD_PRIOR: "N(0, I), the model's own prior",
        "m": "a mixture of 3 full-covariance Gaussians",
        "z-mix": "a mixture of 3 full-covariance Gaussians",
        "a": "a Gaussian with a full covariance",
        "b": "a Gaussian with a full covariance",
    }
    # Only a kind that models all the training latents gives the anomaly score's latent part.
    assert PriorSet("model", "vae", D, fitted, named_default="m").anomaly_prior == "m"
    assert PriorSet("model", "vae", D, fitted, named_default="a").anomaly_prior == STANDARD_PRIOR
    with pytest.raises(vaesdk.InvalidArgumentError, match=r"needs 'standard' or a mixture of this bundle, got 'a' \(yours: \['m', 'z-mix'\]\)"):
        priors.check_anomaly_prior("a")


def test_no_module_but_the_registry_names_a_stored_kind():
    """The manifest keys of the stored kinds appear as strings only in vaesdk/maths/priors.py:
    everything else asks the registry (a new kind touches that module and the format)."""
    keys = {k.key for k in KINDS} | {k.name for k in KINDS}
    found = []
    for folder in ("vaesdk", "cli", "serve", "export"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path == ROOT / "vaesdk" / "maths" / "priors.py":
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant) and node.slice.value in keys:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} [{node.slice.value!r}]")
                if isinstance(node, ast.Call) and getattr(node.func, "attr", None) in ("get", "setdefault") and node.args:
                    arg = node.args[0]
                    if isinstance(arg, ast.Constant) and arg.value in keys:
                        found.append(f"{path.relative_to(ROOT)}:{node.lineno} .{node.func.attr}({arg.value!r})")
    assert found == []


# ---- fitted Gaussians -----------------------------------------------------------------------


def test_a_gaussian_fits_two_codes_and_stays_positive_definite(rng):
    # Two codes in four dimensions: the sample covariance has rank 1, so only the ridge
    # keeps the fitted covariance positive definite (and samplable).
    codes = rng.standard_normal((2, 4))
    g = fit_gaussian(codes)
    np.testing.assert_allclose(g.mean, codes.mean(0), rtol=1e-6)
    assert np.all(np.linalg.eigvalsh(g.cholesky @ g.cholesky.T) > 0)
    with pytest.raises(InvalidArgumentError) as info:
        fit_gaussian(codes[:1])
    assert str(info.value) == "fitting a latent Gaussian needs at least two encoded images"


def test_fitted_gaussian_matches_the_aggregate_posterior_moments(rng):
    a = rng.standard_normal((4000, 3)) @ np.array([[2.0, 0, 0], [1.0, 0.5, 0], [0, 0, 0.1]]) + [1.0, -2.0, 0.0]
    logvar = np.full((4000, 3), np.log(0.25))
    g = fit_gaussian(a, logvar)
    z = g.sample(200_000, np.random.default_rng(0)).astype(np.float64)
    np.testing.assert_allclose(z.mean(0), a.mean(0), atol=0.02)
    np.testing.assert_allclose(np.cov(z.T), np.cov(a.T) + 0.25 * np.eye(3), atol=0.05)
    again = LatentGaussian.from_manifest(g.to_manifest())
    np.testing.assert_allclose(again.cholesky, g.cholesky)
    assert np.abs(g.sample(100, np.random.default_rng(1), temperature=0.0) - g.mean).max() < 1e-5
