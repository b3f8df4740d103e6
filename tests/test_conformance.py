"""The Python runtime passes every conformance vector of conformance/v2/ and conformance/v3/
(the bundle format's test suite for any implementation; docs/bundle-format.md, "Conformance
vectors", and conformance/README.md), and the manifest schema gives each manifest vector the
verdict the vector records."""

from __future__ import annotations

import hashlib
import json
import re
import sys
from functools import cache
from pathlib import Path

import jsonschema
import numpy as np
import pytest

import vaesdk
from vaesdk.maths import anomaly, tiles
from vaesdk.bundle import format, reading
from vaesdk.bundle.format import FORMAT_VERSION
from vaesdk.bundle.geometry import Geometry
from vaesdk.base.errors import BundleError, InvalidArgumentError, UnsupportedOperationError
from vaesdk.maths.latent import GivenNoise, ImageNoise, Posterior
from vaesdk.runtime.model import means_to_uint8

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "conformance"))
from vectors import ROOTS, VERSIONS, ReplayGenerator, array, bundle_path, load_index, materialize  # noqa: E402

ROOT, ROOT3 = ROOTS[2], ROOTS[3]
INDEX, INDEX3 = load_index(ROOT), load_index(ROOT3)
TOL, TOL3 = INDEX["tolerances"], INDEX3["tolerances"]


def ids(section: str, index: dict = INDEX) -> list[str]:
    return [c["id"] for c in index[section]]


def cases(section: str, index: dict = INDEX):
    return pytest.mark.parametrize("case", index[section], ids=ids(section, index))


def cases3(section: str):
    return cases(section, INDEX3)


@cache
def model(name: str, version: int = 2) -> vaesdk.Model:
    root, index = (ROOT, INDEX) if version == 2 else (ROOT3, INDEX3)
    return vaesdk.load(bundle_path(root, index, name), device="cpu", threads=1)


def a(name: str) -> np.ndarray:
    return array(ROOT, name)


def a3(name: str) -> np.ndarray:
    return array(ROOT3, name)


def assert_pixels(got: np.ndarray, want: np.ndarray, reference: np.ndarray) -> None:
    """uint8 images equal, except where the reference value (float, [0, 1] units, same layout)
    lies within the tolerance of a half level: there either neighbour passes."""
    assert got.shape == want.shape and got.dtype == np.uint8
    levels = reference.astype(np.float64) * 255
    near = np.abs(levels - np.floor(levels) - 0.5) <= TOL["pixel_boundary"]["grey_levels"]
    off = (got != want) & ~(near & (np.abs(got.astype(int) - want.astype(int)) == 1))
    assert not off.any(), f"{int(off.sum())} pixels differ, e.g. at {np.argwhere(off)[0].tolist()}"


@pytest.mark.parametrize("version", VERSIONS)
def test_the_vectors_are_for_their_format_version_and_bundles(version):
    root = ROOTS[version]
    index = load_index(root)
    # v2/ holds versions 1 and 2; each later folder the version that added its rules, the
    # newest being the runtime's.
    assert index["format_version"] == version and max(VERSIONS) == FORMAT_VERSION
    for name, entry in index["bundles"].items():
        digest = hashlib.sha256((bundle_path(root, index, name) / "manifest.json").read_bytes()).hexdigest()
        assert digest == entry["manifest_sha256"], f"{name} changed since the vectors were made: run conformance/make_vectors.py"
    total = sum(len(v) for v in index.values() if isinstance(v, list))
    size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
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
        names = (["standard"] if manifest.kind == "vae" else []) + sorted(manifest.data["latent"].get("mixtures") or {}) + sorted(manifest.data["latent"].get("gaussians") or {})
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


# ---- conformance/v3/: what format version 3 added -------------------------------------------


def geometry_record(g: Geometry) -> dict:
    image, latent = g.graph_shapes()
    dim = g.latent_dim if (g.fixed_size or not g.spatial) else None
    return {"image": image, "latent": latent, "range": list(g.pixel_range), "multiple": g.multiple, "factor": g.factor,
            "latent_dim": dim, "scaling_factor": g.scaling_factor, "shift_factor": g.shift_factor}  # fmt: skip


@cases3("manifests")
def test_v3_manifest(case):
    raw = (ROOT3 / case["file"]).read_bytes()
    try:
        manifest = format.validate_manifest(reading.parse_manifest_text(raw))
        verdict, message = "valid", ""
    except BundleError as e:
        verdict, message = "invalid", str(e)
    assert verdict == case["verdict"], message
    assert case.get("python_message", "") in message
    if verdict == "valid":
        g = manifest.geometry
        assert geometry_record(g) == case["geometry"]
        own = manifest.kind == "vae" and not g.spatial  # N(0, I) is the prior of flat VAE latents only
        names = (["standard"] if own else []) + sorted(manifest.data["latent"].get("mixtures") or {}) + sorted(manifest.data["latent"].get("gaussians") or {})
        assert names == case["priors"]
        assert (manifest.default_prior or ("standard" if own else (names[0] if names else None))) == case["default_prior"]


@cases3("manifests")
def test_v3_schema_verdict(case, validator):
    raw = (ROOT3 / case["file"]).read_bytes()
    assert validator.is_valid(reading.parse_manifest_text(raw)) == case["schema_valid"]


@cases3("bundle_cases")
def test_v3_bundle(case, tmp_path):
    folder = materialize(ROOT3, INDEX3, case, tmp_path / "bundle")
    try:
        vaesdk.load(folder, device="cpu", threads=1)
        verdict, message = "valid", ""
    except BundleError as e:
        verdict, message = "invalid", str(e)
    assert verdict == case["verdict"], message
    assert case.get("python_message", "") in message


def unit_geometry(channels: int, pixel_range: list[float]) -> Geometry:
    return Geometry(channels, None, None, 1, factor=1, pixel_range=tuple(pixel_range))


@cases3("pixels_in")
def test_v3_pixels_in(case):
    images = a3(case["images"])
    x = unit_geometry(images.shape[3], case["range"]).to_model_units(images)
    np.testing.assert_array_equal(x, a3(case["expected"]))  # exact
    assert x.dtype == np.float32


@cases3("pixels_out")
def test_v3_pixels_out(case):
    mean = a3(case["mean"])
    unit = unit_geometry(mean.shape[1], case["range"]).to_unit_range(mean.copy())
    out = np.empty((mean.shape[0], *mean.shape[2:], mean.shape[1]), np.uint8)
    if "error" in case:
        with pytest.raises(BundleError, match="NaN or infinite"):
            means_to_uint8(unit, out, "vectors")
        return
    means_to_uint8(unit, out, "vectors")
    np.testing.assert_array_equal(out, a3(case["expected"]))  # exact


@cases3("latent_scaling")
def test_v3_latent_scaling(case):
    g = Geometry(4, None, None, 4, factor=8, multiple=8, scaling_factor=case["scaling_factor"], shift_factor=case["shift_factor"])
    np.testing.assert_array_equal(g.to_diffusion(a3(case["z"])), a3(case["to_diffusion"]))  # exact: float32 operations
    np.testing.assert_array_equal(g.from_diffusion(a3(case["z_diffusion"])), a3(case["from_diffusion"]))


@cases3("tiles")
def test_v3_tiles(case):
    h, w, tile, overlap = case["height"], case["width"], case["tile"], case["overlap"]
    if "error" in case:
        with pytest.raises(ValueError, match="never advances"):
            tiles.plan(h, w, tile, overlap)
        return
    assert [tiles.starts(h, tile, overlap), tiles.starts(w, tile, overlap)] == [case["starts_y"], case["starts_x"]]
    assert [[t.y, t.x, t.h, t.w] for t in tiles.plan(h, w, tile, overlap)] == case["tiles"]
    num, den = case["num"], case["den"]
    count = iter(range(1, 1 << 20))

    def constant(x: np.ndarray) -> list[np.ndarray]:  # tile k of the plan outputs k + 1
        return [np.full((1, 1, x.shape[2] * num // den, x.shape[3] * num // den), next(count), np.float32)]

    (out,) = tiles.run_tiled(np.zeros((1, 1, h, w), np.float32), constant, tile, overlap, num, den)
    np.testing.assert_allclose(out[0, 0], a3(case["expected"]), rtol=TOL3["blend"]["rtol"], atol=TOL3["blend"]["atol"])


def spatial_case(case) -> tuple:
    m = model(case["bundle"], 3)
    options = {"tile": True, "tile_size": case["tile_size"]} if "tile_size" in case else {"tile": False}
    return m, options


@cases3("decode")
def test_v3_decode(case):
    m, options = spatial_case(case)
    z, mean = a3(case["z"]), a3(case["mean"])
    (got,) = m._decoder.run(z, ["mean"])
    np.testing.assert_allclose(got, mean, atol=TOL3["encoder_mean"]["atol"])
    images = m.decode(z, **options)
    assert images.shape[1:3] == (case["height"], case["width"])
    assert_pixels(images, a3(case["expected"]), m.geometry.to_unit_range(mean).transpose(0, 2, 3, 1))


@cases3("tiled_decode")
def test_v3_tiled_decode(case):
    m, options = spatial_case(case)
    f = m.geometry.factor
    assert (case["tile"], case["overlap"]) == (case["tile_size"] // f, case["tile_size"] // f // 4)
    z, mean = a3(case["z"]), a3(case["mean"])
    (got,) = tiles.run_tiled(z, lambda t: [m._decoder.run(t, ["mean"])[0]], case["tile"], case["overlap"], f, 1)
    np.testing.assert_allclose(got, mean, atol=TOL3["encoder_mean"]["atol"])
    assert_pixels(m.decode(z, **options), a3(case["expected"]), m.geometry.to_unit_range(mean).transpose(0, 2, 3, 1))


@cases3("encode")
def test_v3_encode(case):
    m, options = spatial_case(case)
    post = m.encode(a3(case["images"]), **options)
    np.testing.assert_allclose(post.mean, a3(case["mean"]), atol=TOL3["encoder_mean"]["atol"])
    if "logvar" in case:
        np.testing.assert_allclose(post.logvar, a3(case["logvar"]), atol=TOL3["encoder_mean"]["atol"])
    else:
        assert post.logvar is None


@cases3("tiled_encode")
def test_v3_tiled_encode(case):
    m, _ = spatial_case(case)
    f = m.geometry.factor
    assert (case["tile"], case["overlap"]) == (case["tile_size"], case["tile_size"] // 4 // f * f)
    test_v3_encode(case)


@cases3("posterior_draws")
def test_v3_posterior_draw_from_given_noise(case):
    z = Posterior(a3(case["mean"]), a3(case["logvar"])).sample(ReplayGenerator(normals=a3(case["eps"])))
    assert_latents(z, a3(case["expected"]))


@cases3("refusals")
def test_v3_refusal(case):
    m = model(case["bundle"], 3)
    error = UnsupportedOperationError if case["category"] == "unsupported" else InvalidArgumentError
    with pytest.raises(error) as refused:
        if case["operation"] == "sample":
            m.sample(1, seed=0)
        elif case["operation"] == "decode":
            m.decode(np.zeros(case["shape"], np.float32), tile=True if "tile_size" in case else None, tile_size=case.get("tile_size"))
        else:
            m.encode(np.zeros(case["shape"], np.uint8))
    assert isinstance(refused.value, UnsupportedOperationError) == (case["category"] == "unsupported")
    assert "\n" not in str(refused.value)


def test_the_pages_geometry_bounds_are_the_sdks():
    """web/vae.js states the format's bounds on sizes (the vectors reach only some of them)."""
    from vaesdk.bundle import geometry

    page = (REPO / "web" / "vae.js").read_text(encoding="utf-8")
    for name in ("MAX_IMAGE_SIDE", "MAX_LATENT_DIM", "MAX_LATENT_CHANNELS", "MAX_FACTOR"):
        assert re.findall(rf"const {name} = (\d+);", page) == [str(getattr(geometry, name))], name
    assert re.findall(r"const MAX_MODEL_BYTES = (\d+) \* (\d+) \* (\d+);", page) == [("512", "1024", "1024")]
    assert format.MAX_MODEL_BYTES == 512 * 1024 * 1024
