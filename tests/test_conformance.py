"""The Python runtime passes every conformance vector of conformance/v2/ (the bundle format's
test suite for any implementation; docs/bundle-format.md, "Conformance vectors"), and the
manifest schema gives each manifest vector the verdict the vector records."""

from __future__ import annotations

import hashlib
import json
import sys
from functools import cache
from pathlib import Path

import jsonschema
import numpy as np
import pytest

import vaesdk
from vaesdk.maths import anomaly
from vaesdk.bundle import format, reading
from vaesdk.bundle.format import FORMAT_VERSION
from vaesdk.base.errors import BundleError
from vaesdk.maths.latent import GivenNoise, ImageNoise, Posterior
from vaesdk.runtime.model import means_to_uint8

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "conformance"))
from vectors import ROOT, ReplayGenerator, array, bundle_path, load_index, materialize  # noqa: E402

INDEX = load_index()
TOL = INDEX["tolerances"]


def ids(section: str) -> list[str]:
    return [c["id"] for c in INDEX[section]]


def cases(section: str):
    return pytest.mark.parametrize("case", INDEX[section], ids=ids(section))


@cache
def model(name: str) -> vaesdk.Model:
    return vaesdk.load(bundle_path(ROOT, INDEX, name), device="cpu", threads=1)


def a(name: str) -> np.ndarray:
    return array(ROOT, name)


def assert_pixels(got: np.ndarray, want: np.ndarray, reference: np.ndarray) -> None:
    """uint8 images equal, except where the reference value (float, [0, 1] units, same layout)
    lies within the tolerance of a half level: there either neighbour passes."""
    assert got.shape == want.shape and got.dtype == np.uint8
    levels = reference.astype(np.float64) * 255
    near = np.abs(levels - np.floor(levels) - 0.5) <= TOL["pixel_boundary"]["grey_levels"]
    off = (got != want) & ~(near & (np.abs(got.astype(int) - want.astype(int)) == 1))
    assert not off.any(), f"{int(off.sum())} pixels differ, e.g. at {np.argwhere(off)[0].tolist()}"


def test_the_vectors_are_for_this_format_version_and_bundles():
    assert INDEX["format_version"] == FORMAT_VERSION
    for name, entry in INDEX["bundles"].items():
        digest = hashlib.sha256((bundle_path(ROOT, INDEX, name) / "manifest.json").read_bytes()).hexdigest()
        assert digest == entry["manifest_sha256"], f"{name} changed since the vectors were made: run conformance/make_vectors.py"
    total = sum(len(v) for v in INDEX.values() if isinstance(v, list))
    size = sum(p.stat().st_size for p in ROOT.rglob("*") if p.is_file())
    assert total > 100 and size < 4 << 20


@cases("manifests")
def test_manifest(case):
    raw = (ROOT / case["file"]).read_bytes()
    try:
        manifest = format.validate_manifest(reading.parse_manifest_text(raw))
        verdict, message = "valid", ""
    except BundleError as e:
        verdict, message = "invalid", str(e)
    assert verdict == case["verdict"], message
    assert case.get("python_message", "") in message
    if verdict == "valid":  # prior names and the default, as Model.priors and Model.default_prior give them
        names = (["standard"] if manifest.kind == "vae" else []) + sorted(manifest.mixtures) + sorted(manifest.data["latent"].get("gaussians") or {})
        assert names == case["priors"]
        default = manifest.default_prior or ("standard" if manifest.kind == "vae" else names[0])
        assert default == case["default_prior"]


@pytest.fixture(scope="module")
def validator():
    schema = json.loads((REPO / "vaesdk" / "manifest.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@cases("manifests")
def test_schema_verdict(case, validator):
    raw = (ROOT / case["file"]).read_bytes()
    if case["schema_valid"] is None:  # not the format's JSON: refused before any schema
        with pytest.raises(BundleError):
            reading.parse_manifest_text(raw)
        return
    assert validator.is_valid(reading.parse_manifest_text(raw)) == case["schema_valid"]


@cases("bundle_cases")
def test_bundle(case, tmp_path):
    folder = materialize(ROOT, INDEX, case, tmp_path / "bundle")
    try:
        vaesdk.load(folder, device="cpu", threads=1)
        verdict, message = "valid", ""
    except BundleError as e:
        verdict, message = "invalid", str(e)
    assert verdict == case["verdict"], message
    assert case.get("python_message", "") in message


@cases("pixels")
def test_pixel_conversion(case):
    mean = a(case["mean"])
    out = np.empty((mean.shape[0], *mean.shape[2:], mean.shape[1]), np.uint8)
    if "error" in case:
        with pytest.raises(BundleError, match="NaN or infinite"):
            means_to_uint8(mean.copy(), out, "vectors")
        return
    means_to_uint8(mean.copy(), out, "vectors")
    np.testing.assert_array_equal(out, a(case["expected"]))  # exact: no onnxruntime involved


@cases("decode")
def test_decode(case):
    m = model(case["bundle"])
    mean, _ = m.decode_params(a(case["z"]))
    np.testing.assert_allclose(mean, a(case["mean"]).transpose(0, 2, 3, 1), atol=TOL["encoder_mean"]["atol"])
    assert_pixels(m.decode(a(case["z"])), a(case["expected"]), a(case["mean"]).transpose(0, 2, 3, 1))


@cases("encode")
def test_encode(case):
    post = model(case["bundle"]).encode(a(case["images"]))
    np.testing.assert_allclose(post.mean, a(case["mean"]), atol=TOL["encoder_mean"]["atol"])
    if "logvar" in case:
        np.testing.assert_allclose(post.logvar, a(case["logvar"]), atol=TOL["encoder_mean"]["atol"])
    else:
        assert post.logvar is None


def assert_latents(got: np.ndarray, want: np.ndarray) -> None:
    assert got.shape == want.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=TOL["latent"]["rtol"], atol=TOL["latent"]["atol"])


@cases("prior_draws")
def test_prior_draw_from_given_noise(case):
    m = model(case["bundle"])
    replay = ReplayGenerator(normals=a(case["normals"]), uniforms=a(case["uniforms"]) if "uniforms" in case else ())
    z = m.sample_latents(case["n"], seed=replay, temperature=case["temperature"], truncation=case["truncation"], prior=case["prior"])
    assert_latents(z, a(case["expected"]))
    assert replay.normals_used == case["normals_used"]
    assert replay.uniforms_used == (case["n"] if "uniforms" in case else 0)
    # The public call with numpy's seed draws exactly this noise.
    seeded = m.sample_latents(case["n"], seed=case["numpy_seed"], temperature=case["temperature"],
                              truncation=case["truncation"], prior=case["prior"])  # fmt: skip
    assert_latents(seeded, a(case["expected"]))


@cases("posterior_draws")
def test_posterior_draw_from_given_noise(case):
    z = Posterior(a(case["mean"]), a(case["logvar"])).sample(ReplayGenerator(normals=a(case["eps"])))
    assert_latents(z, a(case["expected"]))


@cases("pixel_draws")
def test_pixel_draw_from_given_noise(case):
    m = model(case["bundle"])
    assert m.manifest.covariance_rank == case["rank"]
    reference = a(case["x"]).transpose(0, 2, 3, 1)  # the draw before rounding, for the half-level tolerance
    gaussian = "eps" in case  # Gaussians draw from normals; Bernoulli and continuous Bernoulli from uniforms
    replay = ReplayGenerator(normals=a(case["eps"])) if gaussian else ReplayGenerator(uniforms=a(case["uniforms"]))
    assert_pixels(m.decode(a(case["z"]), sample_pixels=True, seed=replay), a(case["expected"]), reference)
    assert (replay.normals_used if gaussian else replay.uniforms_used) == a(case["eps" if gaussian else "uniforms"]).size
    assert m.spec.pixels.name == case["likelihood"]
    seeded = m.decode(a(case["z"]), sample_pixels=True, seed=case["numpy_seed"])
    assert_pixels(seeded, a(case["expected"]), reference)


@cases("scores")
def test_scores_from_given_noise(case):
    m = model(case["bundle"])
    images = a(case["images"])
    np.testing.assert_array_equal(anomaly.complexity_bpd(images), a(case["complexity_bpd"]))
    uniforms = a(case["dequantization_noise"]) if "dequantization_noise" in case else None
    # The seed's per-image streams give the vectors' numbers (the format's rule) ...
    noise = ImageNoise(case["numpy_seed"], images)
    np.testing.assert_array_equal(noise.normals(slice(None), case["k"], m.latent_dim), a(case["eps"]))
    if uniforms is not None:
        np.testing.assert_array_equal(noise.uniforms(slice(None), uniforms.shape[1:]), uniforms)
    # ... and scores from the given numbers, and from the seed, are the expected figures.
    given = m._scorer.score(images, m.encode, case["k"], GivenNoise(a(case["eps"]), uniforms), m.spec.calibration)
    for scores in (given, m.score(images, k=case["k"], seed=case["numpy_seed"])):
        for field, name in case["expected"].items():
            np.testing.assert_allclose(getattr(scores, field), a(name), rtol=TOL["score"]["rtol"], atol=TOL["score"]["atol"], err_msg=field)
