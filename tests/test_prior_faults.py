"""Priors are checked when a bundle loads: finite values, means within the latent bound and
well-conditioned covariance factors, or one line naming the file, instead of a LinAlgError
at `score` or a blamed argument at `sample` later (vaesdk.maths.latent.check_prior_factors)."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest

import vaesdk
from vaesdk.maths.latent import MAX_PRIOR_CONDITION, check_prior_factors
from vaesdk.maths.priors import GaussianMixture


def _with_mixture(source, dest, mutate):
    shutil.copytree(source, dest)
    manifest = json.loads((dest / "manifest.json").read_text())
    name, entry = next(iter(manifest["latent"]["mixtures"].items()))
    path = dest / entry["file"]
    arrays = dict(np.load(path))
    mutate(arrays)
    data = GaussianMixture(arrays["weights"], arrays["means"], arrays["cholesky"]).to_npz()
    path.write_bytes(data)
    entry.update(sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))
    (dest / "manifest.json").write_text(json.dumps(manifest))
    return dest


def _refused(bundle) -> str:
    with pytest.raises(vaesdk.BundleError) as info:
        vaesdk.load(bundle, device="cpu")
    message = str(info.value)
    assert "\n" not in message and "prior-mixture.npz" in message
    return message


def test_a_near_singular_cholesky_factor_is_refused_at_load(tiny_lowrank_bundle, tmp_path):
    def squash(a):
        a["cholesky"][0, 3, 3] = 1e-12

    message = _refused(_with_mixture(tiny_lowrank_bundle, tmp_path / "b", squash))
    assert "near-singular" in message and f"{MAX_PRIOR_CONDITION:g}" in message


def test_means_of_1e300_are_refused_at_load(tiny_lowrank_bundle, tmp_path):
    def blow_up(a):
        a["means"][1, 0] = 1e300

    assert "a mean reaches 1e+300, beyond the latent bound" in _refused(_with_mixture(tiny_lowrank_bundle, tmp_path / "b", blow_up))


def test_the_bundled_priors_pass_and_give_the_same_densities(tiny_lowrank_bundle, tmp_path):
    model = vaesdk.load(_with_mixture(tiny_lowrank_bundle, tmp_path / "same", lambda a: None), device="cpu")
    reference = vaesdk.load(tiny_lowrank_bundle, device="cpu")
    images = reference.sample(4, seed=1)
    assert np.array_equal(model.sample(4, seed=1), images)
    assert np.array_equal(model.score(images, seed=0).anomaly, reference.score(images, seed=0).anomaly)


def test_the_check_itself():
    eye = np.eye(3)[None]
    assert np.allclose(check_prior_factors(np.zeros((1, 3)), 2 * eye, "p"), 0.5 * eye)
    with pytest.raises(vaesdk.BundleError, match="finite"):
        check_prior_factors(np.full((1, 3), np.nan), eye, "p")
    ill = eye.copy()
    ill[0, 2, 2] = 1e-9
    with pytest.raises(vaesdk.BundleError, match="near-singular"):
        check_prior_factors(np.zeros((1, 3)), ill, "p")
