"""Write the conformance vectors of the bundle format into conformance/v2/ (versions 1 and 2)
and conformance/v3/ (what version 3 added: image geometry, the pixel range, spatial latents,
latent-diffusion units, tiles, the float16 decoder's entry).

    python conformance/make_vectors.py        # from the repository root, in the dev environment

Every expected figure comes from the Python runtime (vaesdk) run on the committed bundles in
tests/data and models/; every verdict is written here by hand and checked against the runtime
before anything is written, so the script stops when the two disagree. A change to any vector
is a change to the format: it goes with a changelog entry in docs/bundle-format.md.
docs/bundle-format.md ("Conformance vectors") and conformance/README.md describe the files.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from vectors import ROOTS, ReplayGenerator, materialize  # noqa: E402

import vaesdk  # noqa: E402
from vaesdk.bundle import format as bundle_format  # noqa: E402
from vaesdk.bundle import reading as bundle_reading  # noqa: E402
from vaesdk.bundle.geometry import PIXEL_RANGES, Geometry  # noqa: E402
from vaesdk.maths import anomaly, tiles  # noqa: E402
from vaesdk.maths.pixels import PixelLikelihood  # noqa: E402
from vaesdk.base.errors import BundleError, InvalidArgumentError, UnsupportedOperationError  # noqa: E402
from vaesdk.maths.latent import GivenNoise, ImageNoise, Posterior  # noqa: E402
from vaesdk.runtime.model import means_to_uint8  # noqa: E402
from vaesdk.maths.priors import GaussianMixture  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BUNDLES = {
    "tiny-vae": REPO / "tests" / "data" / "tiny-vae",
    "tiny-ae": REPO / "tests" / "data" / "tiny-ae",
    "tiny-lowrank": REPO / "tests" / "data" / "tiny-lowrank",
    "fashion-mnist": REPO / "models" / "fashion-mnist",
    # Imported models, one per likelihood kind only `vae export --from` makes.
    "tiny-bernoulli": REPO / "tests" / "data" / "tiny-bernoulli",
    "tiny-cbernoulli": REPO / "tests" / "data" / "tiny-cbernoulli",
    "tiny-fixed": REPO / "tests" / "data" / "tiny-fixed",
    "tiny-none": REPO / "tests" / "data" / "tiny-none",
}
TOLERANCES = {
    "latent": {"rtol": 1e-5, "atol": 1e-6, "about": "prior and posterior draws: |got - want| <= atol + rtol * |want|"},
    "encoder_mean": {"atol": 1e-4, "about": "encoder outputs of another onnxruntime build"},
    "pixel_boundary": {
        "grey_levels": 0.01,
        "about": "a uint8 pixel must equal the vector's, except where the vector's float value times 255 lies within "
        "this many grey levels of a half level (k + 0.5), where either neighbour is accepted",
    },
    "score": {"rtol": 1e-6, "atol": 1e-6, "about": "score figures, bits/dim and p-values"},
}
SCHEMA = json.loads((REPO / "vaesdk" / "manifest.schema.json").read_text())


SECTIONS = {
    2: ("manifests", "bundle_cases", "pixels", "decode", "encode", "prior_draws", "posterior_draws", "pixel_draws", "scores"),
    3: ("manifests", "bundle_cases", "pixels_in", "pixels_out", "latent_scaling", "tiles", "decode", "encode", "tiled_decode",
        "tiled_encode", "posterior_draws", "refusals"),
}  # fmt: skip
ABOUT = {
    2: "Conformance vectors of the vaesdk bundle format; see docs/bundle-format.md, 'Conformance vectors'.",
    3: "Conformance vectors of what version 3 of the vaesdk bundle format added (a reader of version 3 also passes v2/); "
       "see conformance/README.md and docs/bundle-format.md.",
}  # fmt: skip


class Writer:
    def __init__(self, version: int, tolerances: dict[str, Any]):
        self.root = ROOTS[version]
        self.index: dict[str, Any] = {"format_version": version, "about": ABOUT[version], "tolerances": tolerances, "bundles": {}}
        self.index.update({section: [] for section in SECTIONS[version]})

    def npy(self, name: str, a: np.ndarray) -> str:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        a = np.ascontiguousarray(a)
        assert a.dtype.str in ("<f4", "<f8", "|u1", "<i8"), a.dtype
        np.save(path, a, allow_pickle=False)
        return name

    def raw(self, name: str, data: bytes) -> str:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return name


def slim(manifest: dict[str, Any]) -> dict[str, Any]:
    """A manifest with fewer optional records, so that many variants stay small."""
    m = copy.deepcopy(manifest)
    for key in ("training", "parity", "metrics", "onnx", "anomaly"):
        m.pop(key, None)
    if m["latent"].get("gaussians"):
        m["latent"]["gaussians"] = {k: v for k, v in m["latent"]["gaussians"].items() if k in ("aggregate", "t-shirt")}
    if m.get("directions"):
        first = sorted(m["directions"])[0]
        m["directions"] = {first: m["directions"][first]}
    return m


def text(m: Any) -> bytes:
    return bundle_format.manifest_json(m).encode("utf-8")


def runtime_reads_text(raw: bytes) -> tuple[bool, str]:
    try:
        bundle_format.validate_manifest(bundle_reading.parse_manifest_text(raw))
        return True, ""
    except BundleError as e:
        return False, str(e)


def set_path(m: dict, path: str, value: Any) -> dict:
    m = copy.deepcopy(m)
    *parents, last = path.split(".")
    node = m
    for key in parents:
        node = node[key]
    if value is DELETE:
        del node[last]
    else:
        node[last] = value
    return m


DELETE = object()


def manifest_cases(base: dict[str, dict]) -> list[dict[str, Any]]:
    """(id, bytes, verdict, category, message) of each manifest vector."""
    v2, v1, ae = base["tiny-lowrank"], base["tiny-vae"], base["tiny-ae"]
    mix = v2["latent"]["mixtures"]["mixture"]
    cases: list[tuple[str, bytes, str, str | None, str]] = []

    def good(case_id: str, m: dict, priors: list[str], default: str) -> None:
        cases.append(dict(id=case_id, raw=text(m), verdict="valid", priors=priors, default_prior=default))

    def bad(case_id: str, raw: bytes | dict, category: str, message: str) -> None:
        cases.append(dict(id=case_id, raw=raw if isinstance(raw, bytes) else text(raw), verdict="invalid", category=category, message=message))

    good("v2-lowrank-mixture", v2, ["standard", "mixture", "aggregate", "t-shirt"], "mixture")
    good("v1-vae", v1, ["standard", "aggregate", "t-shirt"], "standard")
    good("v1-ae", ae, ["aggregate", "t-shirt"], "aggregate")
    ae_mix = set_path({**ae, "format_version": 2}, "latent.mixtures", {"zz-mix": mix})
    good("v2-ae-mixture-comes-first-without-default", ae_mix, ["zz-mix", "aggregate", "t-shirt"], "zz-mix")
    good("v2-default-prior-gaussian", set_path(v2, "latent.default_prior", "t-shirt"), ["standard", "mixture", "aggregate", "t-shirt"], "t-shirt")
    good("v2-no-default-prior", set_path(v2, "latent.default_prior", DELETE), ["standard", "mixture", "aggregate", "t-shirt"], "standard")
    later = set_path(set_path(v2, "some_future_key", {"anything": [1, "two"]}), "latent.priors", {"x": {"kind": "flow"}})
    good("v2-unknown-keys-ignored", later, ["standard", "mixture", "aggregate", "t-shirt"], "mixture")
    good("v2-nulls", set_path(set_path(set_path(v2, "directions", None), "latent.kl_per_dim", None), "metrics", None),
         ["standard", "mixture", "aggregate", "t-shirt"], "mixture")  # fmt: skip

    raw = text(v2)
    bad("json-byte-order-mark", b"\xef\xbb\xbf" + raw, "json", "byte-order mark")
    bad("json-duplicate-key-top", raw.replace(b'"kind": "vae",', b'"kind": "vae",\n  "kind": "ae",', 1), "json", "appears twice")
    bad("json-duplicate-key-nested", raw.replace(b'"height": 28,', b'"height": 28,\n    "height": 28,', 1), "json", "appears twice")
    bad("json-nan-in-metrics", raw[:-2] + b',\n  "metrics": {"elbo_bpd": NaN}\n}\n', "json", "NaN is not a JSON number")
    bad("json-infinity", raw.replace(b'"channels": 1', b'"channels": Infinity', 1), "json", "Infinity is not a JSON number")
    bad("json-invalid-utf8", raw.replace(b'"description": ""', b'"description": "\xff"', 1), "json", "not valid JSON")
    bad("json-trailing-text", raw + b"{}", "json", "not valid JSON")
    bad("json-not-an-object", b"[1, 2]\n", "manifest", "must be a JSON object")
    bad("version-newer", set_path(v2, "format_version", bundle_format.FORMAT_VERSION + 1), "version", "newer than this vaesdk understands")
    bad("version-zero", set_path(v2, "format_version", 0), "manifest", "format_version")
    bad("version-string", set_path(v2, "format_version", "2"), "manifest", "format_version must be an integer")
    bad("version-true", set_path(v2, "format_version", True), "manifest", "format_version must be an integer")
    bad("integer-spelled-with-fraction-version", raw.replace(b'"format_version": 2', b'"format_version": 2.0', 1), "manifest", "format_version must be an integer")
    bad("integer-spelled-with-fraction-height", raw.replace(b'"height": 28', b'"height": 28.0', 1), "manifest", "image.height must be an integer")
    bad("integer-spelled-with-exponent-dim", raw.replace(b'"dim": 8', b'"dim": 8e0', 1), "manifest", "latent.dim must be an integer")
    bad("integer-spelled-with-fraction-bytes", raw.replace(b'"bytes": %d' % v2["decoder"]["bytes"], b'"bytes": %d.0' % v2["decoder"]["bytes"], 1), "manifest", "decoder.bytes must be an integer")
    bad("integer-spelled-with-fraction-rank", raw.replace(b'"rank": 4', b'"rank": 4.0', 1), "manifest", "likelihood.rank must be an integer")
    shape = json.dumps(v2["decoder"]["outputs"][0]["shape"]).encode()
    bad("integer-spelled-with-fraction-shape", raw.replace(shape, shape.replace(b"28]", b"28.0]"), 1), "manifest", "encoder.inputs must be")
    bad("shape-true-for-one", raw.replace(shape, shape.replace(b'"N", 1,', b'"N", true,'), 1), "manifest", "encoder.inputs must be")
    bad("format-other", set_path(v2, "format", "onnx-bundle"), "manifest", "is this a vaesdk bundle?")
    bad("name-empty", set_path(v2, "name", ""), "manifest", "name must match")
    bad("name-trailing-newline", set_path(v2, "name", "tiny\n"), "manifest", "name must match")
    bad("name-65-characters", set_path(v2, "name", "x" * 65), "manifest", "name must match")
    bad("kind-other", set_path(v2, "kind", "gan"), "manifest", "kind must be")
    bad("image-not-square", set_path(v2, "image.width", 32), "manifest", "must be square")
    bad("image-channels-2", set_path(v2, "image.channels", 2), "manifest", "channels must be 1 or 3")
    bad("latent-dim-string", set_path(v2, "latent.dim", "8"), "manifest", "latent.dim must be an integer")
    bad("kl-per-dim-wrong-length", set_path(v2, "latent.kl_per_dim", [0.5] * 7), "manifest", "latent.kl_per_dim must be a list of 8 numbers")
    bad("gaussian-named-standard", set_path(v2, "latent.gaussians.standard", v2["latent"]["gaussians"]["aggregate"]), "manifest", "bad or repeated prior name 'standard'")
    bad("gaussian-cholesky-wrong-length", set_path(v2, "latent.gaussians.aggregate.cholesky", [1.0] * 35), "manifest", "cholesky (lower triangle, row by row) must be a list of 36")
    bad("gaussian-cholesky-zero-diagonal", set_path(v2, "latent.gaussians.aggregate.cholesky", [0.0] * 36), "manifest", "must have a positive diagonal")
    bad("mixture-named-like-a-gaussian", set_path(v2, "latent.mixtures.aggregate", mix), "manifest", "repeated prior name 'aggregate'")
    bad("mixture-named-standard", set_path(v2, "latent.mixtures.standard", mix), "manifest", "repeated prior name 'standard'")
    bad("mixture-named-standard-in-an-ae", set_path(ae_mix, "latent.mixtures.standard", mix), "manifest", "repeated prior name 'standard'")
    bad("mixture-file-trailing-newline", set_path(v2, "latent.mixtures.mixture.file", "prior-mixture.npz\n"), "manifest", "must be a plain file name ending in .npz")
    bad("mixture-sha256-trailing-newline", set_path(v2, "latent.mixtures.mixture.sha256", mix["sha256"] + "\n"), "manifest", "sha256 must be 64 lowercase hex digits")
    bad("mixture-file-is-the-encoder", set_path(v2, "latent.mixtures.mixture.file", "encoder.onnx"), "manifest", "must be a plain file name ending in .npz")
    bad("default-prior-unknown", set_path(v2, "latent.default_prior", "nope"), "manifest", "names no prior of this bundle")
    bad("default-prior-standard-in-an-ae", set_path(ae, "latent.default_prior", "standard"), "manifest", "names no prior of this bundle")
    bad("vae-without-likelihood", set_path(v2, "likelihood", DELETE), "manifest", "likelihood must be")
    bad("ae-with-likelihood", set_path(ae, "likelihood", {"type": "discretized_gaussian"}), "manifest", "must be null for a plain autoencoder")
    bad("lowrank-with-discretized", set_path(v2, "likelihood.type", "discretized_gaussian"), "manifest", "must be 'dequantized_gaussian' with a low-rank")
    bad("lowrank-rank-zero", set_path(v2, "likelihood.rank", 0), "manifest", "likelihood.rank must be in 1..256")
    bad("encoder-file-path", set_path(v2, "encoder.file", "../encoder.onnx"), "manifest", "must be a plain file name ending in .onnx")
    bad("encoder-sha256-trailing-newline", set_path(v2, "encoder.sha256", v2["encoder"]["sha256"] + "\n"), "manifest", "sha256 must be 64 lowercase hex digits")
    bad("encoder-sha256-uppercase", set_path(v2, "encoder.sha256", v2["encoder"]["sha256"].upper()), "manifest", "sha256 must be 64 lowercase hex digits")
    bad("encoder-bytes-zero", set_path(v2, "encoder.bytes", 0), "manifest", "encoder.bytes must be in")
    bad("decoder-file-is-the-encoder", set_path(v2, "decoder.file", "encoder.onnx"), "manifest", "must differ from encoder.file")
    bad("decoder-outputs-without-factor", set_path(v2, "decoder.outputs", v2["decoder"]["outputs"][:2]), "manifest", "decoder.outputs must be")
    bad("decoder-outputs-reordered", set_path(v2, "decoder.outputs", v2["decoder"]["outputs"][::-1]), "manifest", "decoder.outputs must be")
    bad("direction-wrong-length", set_path(v2, f"directions.{sorted(v2['directions'])[0]}.vector", [0.0] * 3), "manifest", "must be a list of 8 numbers")
    bad("metrics-not-an-object", set_path(v2, "metrics", [1]), "manifest", "metrics must be an object")
    cal = {"quantiles": [0.0, 1.0], "n": 100, "source": "x", "prior": "nope",
           "standardization": {"pixel": {"mean": 0.0, "sd": 1.0}, "latent": {"mean": 0.0, "sd": 1.0}}}  # fmt: skip
    bad("anomaly-prior-unknown", set_path(v2, "anomaly", {"score": anomaly.LEGACY_SCORE, "calibration": cal}), "manifest", "anomaly.calibration.prior")
    density = {"features": ["pixel", "latent"], "center": [0.0, 0.0], "scale": [1.0, 1.0], "bandwidth": 0.5, "points": [[0.0, 1.0], [1.0]]}
    cal = {"quantiles": [0.0, 1.0], "n": 100, "source": "x", "prior": "standard", "density": density}
    bad("anomaly-density-point-too-short", set_path(v2, "anomaly", {"score": anomaly.SCORE, "calibration": cal}), "manifest", "anomaly.calibration.density.points")
    return cases


def npz_bytes(arrays: dict[str, np.ndarray], compressed: bool = False, plain_zip: bool = False, order: str = "C") -> bytes:
    """A prior file as numpy.savez lays it out (stored entries with zip64 extra fields), with a
    fixed timestamp so that the vectors come out the same on every run; or a variant of it."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for k, a in arrays.items():
            one = io.BytesIO()
            np.save(one, np.asfortranarray(a) if order == "F" else a, allow_pickle=False)
            info = zipfile.ZipInfo(f"{k}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED if compressed else zipfile.ZIP_STORED
            with zf.open(info, "w", force_zip64=not plain_zip) as f:
                f.write(one.getvalue())
    return buf.getvalue()


def bundle_cases(w: Writer) -> list[dict[str, Any]]:
    base = "tiny-lowrank"
    manifest = json.loads((BUNDLES[base] / "manifest.json").read_text())
    with np.load(BUNDLES[base] / "prior-mixture.npz") as f:
        arrays = {k: f[k] for k in ("weights", "means", "cholesky")}
    cases = [
        dict(id="tiny-vae-as-committed", base="tiny-vae", overlay={}, verdict="valid"),
        dict(id="tiny-lowrank-as-committed", base=base, overlay={}, verdict="valid"),
        dict(id="encoder-replaced", base=base, overlay={"encoder.onnx": {"copy": "decoder.onnx"}}, verdict="invalid",
             category="integrity", message="the file was modified or replaced"),
        dict(id="decoder-missing", base=base, overlay={"decoder.onnx": None}, verdict="invalid", category="missing-file", message="is missing"),
        dict(id="prior-file-missing", base=base, overlay={"prior-mixture.npz": None}, verdict="invalid", category="missing-file", message="is missing"),
        dict(id="prior-file-replaced", base=base, overlay={"prior-mixture.npz": {"file": w.raw("bundles/prior-file-replaced.npz",
             npz_bytes({**arrays, "weights": arrays["weights"][::-1].copy()}))}}, verdict="invalid", category="integrity",
             message="the file was modified or replaced"),  # fmt: skip
    ]
    # The graphs swapped, with the manifest's checksums following them: the decoder's place
    # holds a graph with the encoder's inputs.
    swapped = copy.deepcopy(manifest)
    for key in ("sha256", "bytes"):
        swapped["encoder"][key], swapped["decoder"][key] = manifest["decoder"][key], manifest["encoder"][key]
    cases.append(dict(id="graphs-swapped", base=base, overlay={
        "manifest.json": {"file": w.raw("bundles/graphs-swapped/manifest.json", text(slim(swapped)))},
        "encoder.onnx": {"copy": "decoder.onnx"}, "decoder.onnx": {"copy": "encoder.onnx"}},
        verdict="invalid", category="graph", message="but the bundle contract needs"))  # fmt: skip

    # The decoder with its batch axis fixed at 1: it would load and then fail on any other batch.
    import onnx

    decoder = onnx.load_from_string((BUNDLES[base] / "decoder.onnx").read_bytes())
    for t in [*decoder.graph.input, *decoder.graph.output]:
        t.type.tensor_type.shape.dim[0].dim_value = 1
    fixed = decoder.SerializeToString()
    m = copy.deepcopy(manifest)
    m["decoder"].update(sha256=hashlib.sha256(fixed).hexdigest(), bytes=len(fixed))
    cases.append(dict(id="decoder-with-a-fixed-batch-size", base=base, overlay={
        "manifest.json": {"file": w.raw("bundles/decoder-with-a-fixed-batch-size/manifest.json", text(slim(m)))},
        "decoder.onnx": {"file": w.raw("bundles/decoder-with-a-fixed-batch-size/decoder.onnx", fixed)}},
        verdict="invalid", category="graph", message="a fixed batch size"))  # fmt: skip

    def prior_case(case_id: str, blob: bytes, verdict: str, message: str = "") -> None:
        m = copy.deepcopy(manifest)
        m["latent"]["mixtures"]["mixture"].update(sha256=hashlib.sha256(blob).hexdigest(), bytes=len(blob))
        overlay = {"manifest.json": {"file": w.raw(f"bundles/{case_id}/manifest.json", text(slim(m)))},
                   "prior-mixture.npz": {"file": w.raw(f"bundles/{case_id}/prior-mixture.npz", blob)}}  # fmt: skip
        case = dict(id=case_id, base=base, overlay=overlay, verdict=verdict)
        if verdict == "invalid":
            case.update(category="prior-file", message=message)
        cases.append(case)

    prior_case("prior-file-without-zip64-headers", npz_bytes(arrays, plain_zip=True), "valid")
    prior_case("prior-file-compressed", npz_bytes(arrays, compressed=True), "invalid", "is compressed")
    prior_case("prior-file-float32", npz_bytes({k: a.astype(np.float32) for k, a in arrays.items()}), "invalid", "little-endian float64")
    prior_case("prior-file-big-endian", npz_bytes({k: a.astype(">f8") for k, a in arrays.items()}), "invalid", "little-endian float64")
    prior_case("prior-file-fortran-order", npz_bytes(arrays, order="F"), "invalid", "in C order")
    prior_case("prior-file-extra-entry", npz_bytes({**arrays, "notes": np.zeros(1)}), "invalid", "holds exactly")
    prior_case("prior-file-without-means", npz_bytes({k: a for k, a in arrays.items() if k != "means"}), "invalid", "holds exactly")
    prior_case("prior-file-not-a-zip", b"not a zip archive", "invalid", "not a valid .npz prior file")
    prior_case("prior-file-upper-triangular", npz_bytes({**arrays, "cholesky": np.ascontiguousarray(np.swapaxes(arrays["cholesky"], 1, 2))}),
               "invalid", "lower-triangular with a positive diagonal")  # fmt: skip
    prior_case("prior-file-weights-not-summing-to-one", npz_bytes({**arrays, "weights": arrays["weights"] * 0.5}), "invalid", "sum to 1")
    prior_case("prior-file-wrong-dimension", npz_bytes({**arrays, "means": arrays["means"][:, :7].copy()}), "invalid", "expected [K], [K, 8]")
    return cases


def check_bundle_case(w: Writer, case: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = materialize(w.root, w.index, case, Path(tmp) / "b")
        try:
            vaesdk.load(folder, device="cpu")
            ok, message = True, ""
        except BundleError as e:
            ok, message = False, str(e)
    assert ok == (case["verdict"] == "valid"), (case["id"], message)
    assert case.get("message", "") in message, (case["id"], message)


def tie_values() -> np.ndarray:
    """Decoder means where the conversion's details decide the pixel: exact half levels under
    float32 multiplication (round half to even), values that float64 multiplication would
    round the other way, and values to clip."""
    f32, out = np.float32, []
    for k in (0, 1, 2, 3, 100, 101, 127, 128, 253, 254):
        x = f32((k + 0.5) / 255)
        below, above = [x], [x]
        for _ in range(3):
            below.append(np.nextafter(below[-1], f32(-2), dtype=np.float32))
            above.append(np.nextafter(above[-1], f32(2), dtype=np.float32))
        out += below[::-1] + above[1:]
    special = [-1.0, -0.0, 0.0, 1e-45, 0.5, 1.0, 1.0000001, 2.0, 1e30, -1e30, 0.99999994]
    values = np.array(out + special, np.float32)
    exact_ties = [v for v in values if f32(v) * f32(255) % 1 == 0.5]
    assert len(exact_ties) >= 5, "no exact half levels found"
    disagree = [v for v in values if 0 <= v <= 1 and np.rint(f32(v) * f32(255)) != np.rint(np.float64(v) * 255)]
    assert disagree, "no value where float64 multiplication rounds differently"
    return values


def to_pixels(mean_nchw: np.ndarray) -> np.ndarray:
    out = np.empty((mean_nchw.shape[0], *mean_nchw.shape[2:], mean_nchw.shape[1]), np.uint8)
    means_to_uint8(mean_nchw.copy(), out, "vectors")
    return out


def pixel_cases(w: Writer) -> None:
    values = tie_values()
    gray = np.resize(values, 2 * 1 * 8 * 12).reshape(2, 1, 8, 12)
    rgb = np.resize(values[::-1], 1 * 3 * 5 * 7).reshape(1, 3, 5, 7)
    for case_id, mean in (("gray-ties-and-clipping", gray), ("rgb-layout-hwc", rgb)):
        w.index["pixels"].append(dict(id=case_id, mean=w.npy(f"pixels/{case_id}-mean.npy", mean),
                                      expected=w.npy(f"pixels/{case_id}-uint8.npy", to_pixels(mean))))  # fmt: skip
    for case_id, bad in (("nan", np.nan), ("infinity", np.inf)):
        mean = gray[:1].copy()
        mean[0, 0, 3, 5] = bad
        try:
            to_pixels(mean)
            raise AssertionError(f"{case_id} was converted")
        except BundleError as e:
            assert "NaN or infinite" in str(e)
        w.index["pixels"].append(dict(id=case_id, mean=w.npy(f"pixels/{case_id}-mean.npy", mean), error="non-finite"))


def model_cases(w: Writer, models: dict[str, vaesdk.Model]) -> None:
    for name, model in models.items():
        d = model.latent_dim
        rng = np.random.default_rng(100 + len(name))
        z = rng.standard_normal((5, d)).astype(np.float32)
        z[3] *= 3.0
        z[4] = 0.0
        (mean,) = model._decoder.run(z, ["mean"])
        images = model.decode(z)
        w.index["decode"].append(dict(id=f"{name}-decode", bundle=name, z=w.npy(f"decode/{name}-z.npy", z),
                                      mean=w.npy(f"decode/{name}-mean.npy", mean), expected=w.npy(f"decode/{name}-uint8.npy", images)))  # fmt: skip
        noise = np.random.default_rng(7).integers(0, 256, (1, *model.image_shape), dtype=np.uint8)
        inputs = np.concatenate([images[:3], noise])
        post = model.encode(inputs)
        case = dict(id=f"{name}-encode", bundle=name, images=w.npy(f"encode/{name}-images.npy", inputs),
                    mean=w.npy(f"encode/{name}-mean.npy", post.mean))  # fmt: skip
        if post.logvar is not None:
            case["logvar"] = w.npy(f"encode/{name}-logvar.npy", post.logvar)
        w.index["encode"].append(case)
        if model.kind == "vae":
            seed = 11
            eps = np.random.default_rng(seed).standard_normal(post.mean.shape, dtype=np.float32)
            want = post.sample(ReplayGenerator(normals=eps))
            assert np.array_equal(want, model.embed(inputs, sample_latent=True, seed=seed))
            w.index["posterior_draws"].append(dict(
                id=f"{name}-posterior", bundle=name, mean=case["mean"], logvar=case["logvar"], numpy_seed=seed,
                eps=w.npy(f"posterior/{name}-eps.npy", eps), expected=w.npy(f"posterior/{name}-z.npy", want)))  # fmt: skip
            prior_draw_cases(w, name, model)
            pixel_draw_cases(w, name, model, z[:3])
            score_cases(w, name, model, inputs)


def prior_draw_cases(w: Writer, name: str, model: vaesdk.Model) -> None:
    priors = [p for p in model.priors if p in ("standard", "mixture", "aggregate", "t-shirt")]
    settings = [(1.0, None), (0.7, None), (1.0, 1.0), (0.5, 0.5), (0.0, None)]
    n, d = 5, model.latent_dim
    for prior in priors:
        for temperature, truncation in settings:
            seed = len(w.index["prior_draws"])
            want = model.sample_latents(n, seed=seed, temperature=temperature, truncation=truncation, prior=prior)
            rng = np.random.default_rng(seed)
            mixture = isinstance(model.spec.prior_set.prior(prior), GaussianMixture)  # a mixture's draw takes uniforms first
            uniforms = rng.random(n) if mixture else np.zeros(0)
            normals = rng.standard_normal(n * d * 40, dtype=np.float32)
            replay = ReplayGenerator(normals=normals, uniforms=uniforms)
            got = model._prior_draw(prior)(n, replay, temperature, truncation)
            assert np.array_equal(got, want), (name, prior)
            assert replay.uniforms_used == len(uniforms)
            case_id = f"{name}-{prior}-t{temperature:g}-" + (f"trunc{truncation:g}" if truncation else "untruncated")
            case = dict(id=case_id, bundle=name, prior=prior, n=n, temperature=temperature, truncation=truncation, numpy_seed=seed,
                        normals=w.npy(f"prior/{case_id}-normals.npy", normals[: replay.normals_used]), normals_used=replay.normals_used,
                        expected=w.npy(f"prior/{case_id}-z.npy", want))  # fmt: skip
            if mixture:
                case["uniforms"] = w.npy(f"prior/{case_id}-uniforms.npy", uniforms)
            w.index["prior_draws"].append(case)


def pixel_draw_cases(w: Writer, name: str, model: vaesdk.Model, z: np.ndarray) -> None:
    """Pixel draws from given noise: Gaussians take R + C*H*W normals per image, Bernoulli
    and continuous Bernoulli decoders C*H*W uniforms; a decoder without a likelihood has none."""
    pixels_kind = model.spec.pixels
    if not pixels_kind.kind.draws:
        return
    seed = 5
    rank, pixels = model.manifest.covariance_rank, int(np.prod(model.image_shape))
    gaussian = pixels_kind.name in ("discretized_gaussian", "dequantized_gaussian", "fixed_gaussian")
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal((len(z), rank + pixels), dtype=np.float32) if gaussian else rng.random((len(z), pixels), dtype=np.float32)
    replay = ReplayGenerator(normals=noise) if gaussian else ReplayGenerator(uniforms=noise)
    x = pixels_kind.draw(model._decoder.run(z, pixels_kind.outputs), replay)
    images = model.decode(z, sample_pixels=True, seed=seed)
    assert np.array_equal(images, to_pixels(x))
    case = dict(id=f"{name}-pixel-draw", bundle=name, rank=rank, likelihood=pixels_kind.name, numpy_seed=seed,
                z=w.npy(f"pixel-draws/{name}-z.npy", z), x=w.npy(f"pixel-draws/{name}-x.npy", x),
                expected=w.npy(f"pixel-draws/{name}-uint8.npy", images))  # fmt: skip
    case["eps" if gaussian else "uniforms"] = w.npy(f"pixel-draws/{name}-{'eps' if gaussian else 'uniforms'}.npy", noise)
    w.index["pixel_draws"].append(case)


def score_cases(w: Writer, name: str, model: vaesdk.Model, images: np.ndarray) -> None:
    seed, k = 3, 2
    # Each image's own streams (latent.ImageNoise, the format's rule), written out.
    streams = ImageNoise(seed, images)
    eps = streams.normals(slice(None), k, model.latent_dim)
    dequantized = model.manifest.likelihood_type == "dequantized_gaussian"
    noise = streams.uniforms(slice(None), (k, model.image_shape[2], *model.image_shape[:2])) if dequantized else None
    scores = model._scorer.score(images, model.encode, k, GivenNoise(eps, noise), model.spec.calibration)
    again = model.score(images, k=k, seed=seed)
    fields = ("elbo_bpd", "iw_bpd", "anomaly_pixel", "anomaly_latent", "anomaly", "p_value")
    expected = {f: getattr(scores, f) for f in fields if getattr(scores, f) is not None}
    for f, v in expected.items():
        np.testing.assert_allclose(getattr(again, f), v, rtol=1e-12, err_msg=f)
    case = dict(id=f"{name}-score", bundle=name, k=k, numpy_seed=seed, images=w.npy(f"scores/{name}-images.npy", images),
                eps=w.npy(f"scores/{name}-eps.npy", eps),
                complexity_bpd=w.npy(f"scores/{name}-complexity.npy", anomaly.complexity_bpd(images)),
                expected={f: w.npy(f"scores/{name}-{f}.npy", v.astype(np.float64)) for f, v in expected.items()})  # fmt: skip
    if noise is not None:
        case["dequantization_noise"] = w.npy(f"scores/{name}-noise.npy", noise)
    w.index["scores"].append(case)


# ---- version 3 ------------------------------------------------------------------------------

SPATIAL_BUNDLES = {
    # A tiny latent-diffusion autoencoder (diffusers' AutoencoderKL, `vae export --from diffusers`):
    # a free size, sides multiples of its factor f, the range [-1, 1], latents [C, H/f, W/f].
    "tiny-kl": REPO / "tests" / "data" / "tiny-kl",
}
TOLERANCES_V3 = {
    "encoder_mean": TOLERANCES["encoder_mean"] | {"about": "encoder and decoder outputs (model units) of another onnxruntime build"},
    "latent": TOLERANCES["latent"] | {"about": "posterior draws: |got - want| <= atol + rtol * |want|"},
    "pixel_boundary": TOLERANCES["pixel_boundary"] | {
        "about": "a uint8 pixel must equal the vector's, except where the vector's value in [0, 1] units times 255 lies within "
        "this many grey levels of a half level (k + 0.5), where either neighbour is accepted"},
    "blend": {"rtol": 1e-6, "atol": 1e-6, "about": "blended tile outputs; the weights, products, sums and the division are float32, "
              "summed in the plan's order, so a reader that follows the rule gets them exactly"},
}  # fmt: skip
SHAPE_KEYS = ("height", "width", "multiple", "range", "dim", "channels", "factor", "scaling_factor", "shift_factor", "channel_mean", "channel_std")


def reshaped(m: dict[str, Any], g: Geometry, version: int = 3) -> dict[str, Any]:
    """A manifest given the geometry g: its image and latent shape keys and its graphs' inputs
    and outputs, as an export of that geometry writes them."""
    m = copy.deepcopy(m)
    image = {k: v for k, v in m["image"].items() if k not in SHAPE_KEYS}
    latent = {k: v for k, v in m["latent"].items() if k not in SHAPE_KEYS}
    m["image"], m["latent"] = g.image_entry() | image, g.latent_entry() | latent
    m["image"]["channels"] = g.channels
    lik = m.get("likelihood")
    decoder_logvar = m["kind"] != "vae" or PixelLikelihood.from_manifest(lik).outputs[1:2] == ["logvar"]
    rank = int(lik.get("rank", 0)) if isinstance(lik, dict) and lik.get("covariance") == "lowrank" else 0
    contract = bundle_format.io_contract(m["kind"], g, rank, decoder_logvar)
    for role in bundle_format.ROLES:
        m[role]["inputs"], m[role]["outputs"] = contract[role]["inputs"], contract[role]["outputs"]
    m["format_version"] = version
    return m


def fp16_entry(data: bytes, file: str = "decoder-fp16.onnx") -> dict[str, Any]:
    return {"decoder": {"file": file, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}}


def geometry_record(g: Geometry) -> dict[str, Any]:
    """What a reader derives from a valid manifest's image and latent: the graphs' shapes, the
    pixel range, the size rule, the prior dimension (null at a free size) and the latent-diffusion
    units."""
    image, latent = g.graph_shapes()
    dim = g.latent_dim if (g.fixed_size or not g.spatial) else None
    return {"image": image, "latent": latent, "range": list(g.pixel_range), "multiple": g.multiple, "factor": g.factor,
            "latent_dim": dim, "scaling_factor": g.scaling_factor, "shift_factor": g.shift_factor}  # fmt: skip


def manifest_cases_v3(kl: dict[str, Any], flat: dict[str, Any]) -> list[dict[str, Any]]:
    """Manifests of version 3 (kl: the spatial bundle's; flat: a square bundle's with flat
    latents and Gaussians of D = 8), valid ones with their geometry, refusals with their category."""
    free = Geometry.from_manifest(kl)
    c, f = free.latent_channels, free.factor
    sd = dict(pixel_range=(-1.0, 1.0), scaling_factor=0.18215)
    flat_g = Geometry.from_manifest(flat)
    fixed = Geometry(3, 4 * f, 6 * f, c, factor=f, **sd)
    tiny = Geometry(3, 2 * f, f, c, factor=f, **sd)  # latents [C, 2, 1]: a prior of D = 2C dimensions
    d = tiny.latent_dim
    identity = [1.0 if j == i else 0.0 for i in range(d) for j in range(i + 1)]  # the lower triangle, row by row
    aggregate = flat["latent"]["gaussians"]["aggregate"]
    assert len(aggregate["mean"]) != fixed.latent_dim
    cases: list[dict[str, Any]] = []

    def good(case_id: str, m: dict, priors: list[str], default: str | None) -> None:
        g = bundle_format.validate_manifest(m).geometry
        cases.append(dict(id=case_id, raw=text(m), verdict="valid", priors=priors, default_prior=default, geometry=geometry_record(g)))

    def bad(case_id: str, raw: bytes | dict, message: str, category: str = "manifest") -> None:
        cases.append(dict(id=case_id, raw=raw if isinstance(raw, bytes) else text(raw), verdict="invalid", category=category, message=message))

    ae = reshaped(set_path(set_path(kl, "kind", "ae"), "likelihood", DELETE), free)
    non_square = reshaped(flat, Geometry(1, 28, 20, flat_g.latent_channels))
    fixed_kl = reshaped(kl, fixed)
    tiny_kl = set_path(reshaped(kl, tiny), "latent.gaussians", {"fitted": {"mean": [0.0] * d, "cholesky": identity}})
    flat3 = set_path(flat, "format_version", 3)
    fp16 = set_path(kl, "variants", {"fp16": fp16_entry(b"\0" * 4321)})
    stats = copy.deepcopy(kl)
    stats["latent"].update(scaling_factor=1.5305, shift_factor=0.0609, channel_mean=[0.1 * (i - 1) for i in range(c)],
                           channel_std=[0.25 * (i + 1) for i in range(c)])  # fmt: skip
    good("v3-free-size-spatial", kl, [], None)
    good("v3-free-size-spatial-ae", ae, [], None)
    good("v3-free-size-range-0-1", reshaped(kl, Geometry(3, None, None, c, factor=f, multiple=f)), [], None)
    good("v3-free-size-multiple-of-the-factor", reshaped(kl, Geometry(3, None, None, c, factor=f, multiple=4 * f, **sd)), [], None)
    good("v3-scaling-shift-and-channel-statistics", stats, [], None)
    good("v3-channel-statistics-null", set_path(set_path(kl, "latent.channel_mean", None), "latent.channel_std", None), [], None)
    good("v3-direction-per-channel", set_path(kl, "directions", {"brighter": {"vector": [0.5 * i - 1 for i in range(c)], "source": "user"}}), [], None)
    good("v3-fixed-non-square-spatial", fixed_kl, [], None)
    good("v3-fixed-spatial-with-a-gaussian", tiny_kl, ["fitted"], "fitted")
    good("v3-fixed-non-square-flat", non_square, ["standard", "aggregate", "t-shirt"], "standard")
    good("v3-square-flat", flat3, ["standard", "aggregate", "t-shirt"], "standard")
    good("v3-fp16-variant", fp16, [], None)
    good("v3-unknown-keys-ignored", set_path(set_path(kl, "some_future_key", [1, "two"]), "variants", {"int8": {"anything": 1}}), [], None)

    # the pixel range
    bad("range-0-255", set_path(kl, "image.range", [0, 255]), "image.range must be [0, 1] or [-1, 1]")
    bad("range-reversed", set_path(kl, "image.range", [1, -1]), "image.range must be [0, 1] or [-1, 1]")
    bad("range-one-number", set_path(kl, "image.range", [0]), "image.range must be [0, 1] or [-1, 1]")
    bad("range-strings", set_path(kl, "image.range", ["-1", "1"]), "image.range must be [0, 1] or [-1, 1]")
    bad("range-true-for-one", text(kl).replace(b'"range": [-1, 1]', b'"range": [-1, true]', 1), "image.range must be [0, 1] or [-1, 1]")
    bad("range-minus-one-one-with-flat-latents", reshaped(flat, Geometry(1, 28, 28, 8, pixel_range=(-1.0, 1.0))), "must be [0, 1] with flat latents")
    # sizes and the factor
    bad("factor-does-not-divide-the-multiple", set_path(kl, "image.multiple", f + 1), "image.multiple must be a multiple of latent.factor")
    bad("factor-does-not-divide-the-height", set_path(fixed_kl, "image.height", 4 * f + 1), "latent.factor must divide the image's height and width")
    bad("factor-zero", set_path(kl, "latent.factor", 0), "latent.factor must be in 1..64")
    bad("factor-65", set_path(kl, "latent.factor", 65), "latent.factor must be in 1..64")
    bad("multiple-zero", set_path(kl, "image.multiple", 0), "image.multiple must be in 1..64")
    bad("multiple-with-a-fixed-size", set_path(fixed_kl, "image.multiple", f), "image.multiple is for a free size")
    bad("width-without-height", set_path(fixed_kl, "image.height", DELETE), "image.height is missing")
    bad("width-4100", set_path(non_square, "image.width", 4100), "must be of height and width in 1..4096")
    bad("free-size-with-flat-latents", set_path(set_path(set_path(flat3, "image.multiple", 4), "image.height", DELETE), "image.width", DELETE),
        "needs spatial latents")  # fmt: skip
    bad("spatial-with-dim", set_path(kl, "latent.dim", 64), "latent.dim is for flat latents")
    bad("latent-channels-zero", set_path(kl, "latent.channels", 0), "latent.channels must be in 1..1024")
    bad("integer-spelled-with-fraction-multiple", text(kl).replace(b'"multiple": %d' % f, b'"multiple": %d.0' % f, 1), "image.multiple must be an integer")
    bad("integer-spelled-with-fraction-factor", text(kl).replace(b'"factor": %d' % f, b'"factor": %d.0' % f, 1), "latent.factor must be an integer")
    bad("integer-spelled-with-exponent-channels", text(kl).replace(b'"channels": %d,\n    "factor"' % c, b'"channels": %de0,\n    "factor"' % c, 1),
        "latent.channels must be an integer")  # fmt: skip
    # latent-diffusion units and statistics
    bad("scaling-factor-zero", set_path(kl, "latent.scaling_factor", 0), "latent.scaling_factor must be a finite number above 0")
    bad("scaling-factor-negative", set_path(kl, "latent.scaling_factor", -0.18215), "latent.scaling_factor must be a finite number above 0")
    bad("shift-factor-string", set_path(kl, "latent.shift_factor", "0.1"), "latent.shift_factor must be")
    bad("channel-std-zero", set_path(stats, "latent.channel_std", [1.0] * (c - 1) + [0.0]), "latent.channel_std must hold numbers above 0")
    bad("channel-mean-wrong-length", set_path(stats, "latent.channel_mean", [0.0] * (c + 1)), f"latent.channel_mean must be a list of {c} numbers")
    bad("flat-with-scaling-factor", set_path(flat3, "latent.scaling_factor", 0.18215), "latent.scaling_factor is for spatial latents")
    # what spatial latents have and have not
    bad("spatial-with-anomaly", set_path(kl, "anomaly", {"score": anomaly.SCORE}), "anomaly is not defined for spatial latents")
    bad("spatial-with-kl-per-dim", set_path(kl, "latent.kl_per_dim", [0.5] * c), "latent.kl_per_dim is for flat latents")
    bad("spatial-with-a-gaussian-likelihood", set_path(kl, "likelihood", {"type": "discretized_gaussian"}), "must be 'none' with spatial latents")
    bad("spatial-default-prior-standard", set_path(kl, "latent.default_prior", "standard"), "names no prior of this bundle")
    bad("free-size-with-a-gaussian", set_path(kl, "latent.gaussians", {"aggregate": aggregate}), "holds priors, which need latents of one shape")
    bad("free-size-with-a-mixture", set_path(kl, "latent.mixtures", {"mixture": {"file": "prior-mixture.npz", "sha256": "0" * 64, "bytes": 100}}),
        "holds priors, which need latents of one shape")  # fmt: skip
    bad("fixed-spatial-gaussian-wrong-length", set_path(fixed_kl, "latent.gaussians", {"aggregate": aggregate}), f"must be a list of {fixed.latent_dim} numbers")
    bad("direction-of-more-than-c-numbers", set_path(kl, "directions", {"x": {"vector": [0.0] * (c + 1)}}), f"must be a list of {c} numbers")
    # the graphs' shapes
    free_shapes = json.dumps(kl["encoder"]["inputs"][0]["shape"]).encode()
    bad("free-size-with-fixed-shapes", text(kl).replace(free_shapes, free_shapes.replace(b'"H", "W"', b"32, 32")), "encoder.inputs must be")
    bad("free-size-other-symbols", text(kl).replace(free_shapes, free_shapes.replace(b'"H", "W"', b'"height", "width"')), "encoder.inputs must be")
    bad("fixed-size-with-symbolic-shapes", set_path(fixed_kl, "encoder.inputs", kl["encoder"]["inputs"]), "encoder.inputs must be")
    no_stats = {**kl, "latent": {k: v for k, v in kl["latent"].items() if k not in ("channel_mean", "channel_std")}}
    bad("latent-channels-not-the-shapes", set_path(no_stats, "latent.channels", 2 * c), "for this kind, image and latent shape")
    # version 2 with version-3 keys
    v2 = set_path(flat, "format_version", 2)
    bad("v2-with-range", set_path(v2, "image.range", [0, 1]), "image.range is a format version 3 key")
    bad("v2-with-spatial-latents", reshaped(kl, Geometry(3, 4 * f, 4 * f, c, factor=f), version=2), "need format version 3")
    bad("v2-with-a-free-size", set_path(set_path(set_path(v2, "image.multiple", 4), "image.height", DELETE), "image.width", DELETE), "image.height is missing")
    bad("v2-with-fp16-variant", set_path(v2, "variants", {"fp16": fp16_entry(b"\0" * 4321)}), "variants.fp16 is a format version 3 key")
    # the float16 decoder's entry
    bad("fp16-not-an-object", set_path(kl, "variants", {"fp16": "decoder-fp16.onnx"}), "variants.fp16 must be an object")
    bad("fp16-without-decoder", set_path(kl, "variants", {"fp16": {}}), "variants.fp16.decoder is missing")
    bad("fp16-file-path", set_path(fp16, "variants.fp16.decoder.file", "../decoder-fp16.onnx"), "must be a plain file name ending in .onnx")
    bad("fp16-file-not-onnx", set_path(fp16, "variants.fp16.decoder.file", "decoder-fp16.bin"), "must be a plain file name ending in .onnx")
    bad("fp16-file-is-the-decoder", set_path(fp16, "variants.fp16.decoder.file", kl["decoder"]["file"]), "must differ from encoder.file and decoder.file")
    bad("fp16-file-is-the-encoder", set_path(fp16, "variants.fp16.decoder.file", kl["encoder"]["file"]), "must differ from encoder.file and decoder.file")
    bad("fp16-sha256-uppercase", set_path(fp16, "variants.fp16.decoder.sha256", "A" * 64), "variants.fp16.decoder.sha256 must be 64 lowercase hex digits")
    bad("fp16-bytes-zero", set_path(fp16, "variants.fp16.decoder.bytes", 0), "variants.fp16.decoder.bytes must be in")
    bad("fp16-bytes-string", set_path(fp16, "variants.fp16.decoder.bytes", "4321"), "variants.fp16.decoder.bytes must be an integer")
    assert text(fp16).count(b'"bytes": 4321\n') == 1
    bad("integer-spelled-with-fraction-fp16-bytes", text(fp16).replace(b'"bytes": 4321\n', b'"bytes": 4321.0\n'), "variants.fp16.decoder.bytes must be an integer")
    bad("variants-not-an-object", set_path(kl, "variants", [1]), "variants must be an object")
    return cases


def bundle_cases_v3(w: Writer) -> list[dict[str, Any]]:
    """Bundles of the spatial model: as committed, with a float16 decoder entry, and refusals.
    `variant: "fp16"` marks the cases only a reader that reads the float16 decoder refuses."""
    import onnx

    base = "tiny-kl"
    folder = SPATIAL_BUNDLES[base]
    manifest = json.loads((folder / "manifest.json").read_text())
    encoder, decoder = (folder / "encoder.onnx").read_bytes(), (folder / "decoder.onnx").read_bytes()
    cases: list[dict[str, Any]] = [dict(id="tiny-kl-as-committed", base=base, overlay={}, verdict="valid")]

    def case(case_id: str, m: dict, files: dict[str, Any], verdict: str, category: str | None = None, message: str = "", variant: str | None = None) -> None:
        overlay = {"manifest.json": {"file": w.raw(f"bundles/{case_id}/manifest.json", text(slim(m)))}}
        for name, source in files.items():
            overlay[name] = {"file": w.raw(f"bundles/{case_id}/{name}", source)} if isinstance(source, bytes) else source
        entry = dict(id=case_id, base=base, overlay=overlay, verdict=verdict)
        if variant:
            entry["variant"] = variant
        if verdict == "invalid":
            entry.update(category=category, message=message)
        cases.append(entry)

    with_fp16 = set_path(manifest, "variants", {"fp16": fp16_entry(decoder)})
    case("fp16-decoder", with_fp16, {"decoder-fp16.onnx": {"copy": "decoder.onnx"}}, "valid")
    case("fp16-decoder-missing", with_fp16, {"decoder-fp16.onnx": None}, "invalid", "missing-file", "is missing", "fp16")
    case("fp16-decoder-replaced", with_fp16, {"decoder-fp16.onnx": {"copy": "encoder.onnx"}}, "invalid", "integrity",
         "the file was modified or replaced", "fp16")  # fmt: skip
    case("fp16-decoder-is-an-encoder", set_path(manifest, "variants", {"fp16": fp16_entry(encoder)}), {"decoder-fp16.onnx": {"copy": "encoder.onnx"}},
         "invalid", "graph", "but the bundle contract needs", "fp16")  # fmt: skip

    def edited(graph: bytes, change: Any) -> bytes:
        model = onnx.load_from_string(graph)
        change(model.graph)
        return model.SerializeToString()

    def dims(tensors: Any, index: int, value: int | str) -> None:
        for t in tensors:
            d = t.type.tensor_type.shape.dim[index]
            if isinstance(value, int):
                d.dim_value = value
            else:
                d.dim_param = value

    f = manifest["latent"]["factor"]

    def fixed_sides(g: Any) -> None:
        dims(g.input, 2, 8), dims(g.input, 3, 8), dims(g.output, 2, 8 * f), dims(g.output, 3, 8 * f)

    sides = edited(decoder, fixed_sides)
    m = copy.deepcopy(manifest)
    m["decoder"].update(sha256=hashlib.sha256(sides).hexdigest(), bytes=len(sides))
    case("decoder-with-fixed-sides", m, {"decoder.onnx": sides}, "invalid", "graph", "the contract needs")
    channels = edited(encoder, lambda g: dims(g.input, 1, "C"))
    m = copy.deepcopy(manifest)
    m["encoder"].update(sha256=hashlib.sha256(channels).hexdigest(), bytes=len(channels))
    case("encoder-with-symbolic-channels", m, {"encoder.onnx": channels}, "invalid", "graph", "the contract needs")
    swapped = copy.deepcopy(manifest)
    for key in ("sha256", "bytes"):
        swapped["encoder"][key], swapped["decoder"][key] = manifest["decoder"][key], manifest["encoder"][key]
    case("graphs-swapped", swapped, {"encoder.onnx": {"copy": "decoder.onnx"}, "decoder.onnx": {"copy": "encoder.onnx"}},
         "invalid", "graph", "but the bundle contract needs")  # fmt: skip
    # A factor the graphs do not compute: every declared shape is symbolic, so only running a
    # graph shows it (vaesdk's load-time run; a reader without one, on its first encode).
    assert f % 2 == 0
    case("factor-not-the-graphs", set_path(manifest, "latent.factor", f // 2), {}, "invalid", "graph", "does not match its manifest")
    return cases


def signed_tie_values() -> np.ndarray:
    """Decoder means in the range [-1, 1] that land on or next to half levels once converted
    to [0, 1] units (float32(m + 1) * 0.5), with values to clip."""
    f32, out = np.float32, []
    for k in (0, 1, 2, 3, 100, 101, 127, 128, 253, 254):
        x = f32(2 * np.float64(f32((k + 0.5) / 255)) - 1)
        below, above = [x], [x]
        for _ in range(3):
            below.append(np.nextafter(below[-1], f32(-2), dtype=np.float32))
            above.append(np.nextafter(above[-1], f32(2), dtype=np.float32))
        out += below[::-1] + above[1:]
    special = [-3.0, -1.0000001, -1.0, -0.0, 0.0, 1e-45, 0.5, 1.0, 1.0000001, 3.0, 1e30, -1e30, 0.99999994, -0.99999994]
    values = np.array(out + special, np.float32)
    unit = Geometry(1, None, None, 1, factor=1, pixel_range=(-1.0, 1.0)).to_unit_range(values)
    assert sum(float(v) % 1 == 0.5 for v in unit * np.float32(255)) >= 5, "no exact half levels found"
    disagree = [v for v, u in zip(values, unit) if -1 <= v <= 1 and np.rint(u * np.float32(255)) != np.rint((np.float64(v) + 1) / 2 * 255)]
    assert disagree, "no value where float64 arithmetic rounds differently"
    return values


def pixel_cases_v3(w: Writer) -> None:
    """uint8 -> model units and back, in both ranges, channels last <-> channels first."""
    rng = np.random.default_rng(21)
    inputs = {"gray-all-values": np.arange(256, dtype=np.uint8).reshape(2, 8, 16, 1),
              "rgb-non-square": rng.integers(0, 256, (1, 5, 7, 3), dtype=np.uint8)}  # fmt: skip
    for lo, hi in PIXEL_RANGES:
        tag = f"range-{'minus-1' if lo else '0'}-1"
        for name, images in inputs.items():
            g = Geometry(images.shape[3], None, None, 1, factor=1, pixel_range=(lo, hi))
            w.index["pixels_in"].append(dict(id=f"{name}-{tag}", range=[lo, hi], images=w.npy(f"pixels-in/{name}-{tag}-uint8.npy", images),
                                             expected=w.npy(f"pixels-in/{name}-{tag}-x.npy", g.to_model_units(images))))  # fmt: skip
        values = signed_tie_values() if lo else tie_values()
        means = {"gray-ties-and-clipping": np.resize(values, 2 * 1 * 8 * 12).reshape(2, 1, 8, 12),
                 "rgb-non-square": np.resize(values[::-1], 1 * 3 * 5 * 7).reshape(1, 3, 5, 7)}  # fmt: skip
        for name, mean in means.items():
            g = Geometry(mean.shape[1], None, None, 1, factor=1, pixel_range=(lo, hi))
            w.index["pixels_out"].append(dict(id=f"{name}-{tag}", range=[lo, hi], mean=w.npy(f"pixels-out/{name}-{tag}-mean.npy", mean),
                                              expected=w.npy(f"pixels-out/{name}-{tag}-uint8.npy", to_pixels(g.to_unit_range(mean)))))  # fmt: skip
    g = Geometry(1, None, None, 1, factor=1, pixel_range=(-1.0, 1.0))
    for case_id, bad in (("nan-range-minus-1-1", np.nan), ("infinity-range-minus-1-1", -np.inf)):
        mean = np.resize(signed_tie_values(), 8 * 12).reshape(1, 1, 8, 12)
        mean[0, 0, 3, 5] = bad
        try:
            to_pixels(g.to_unit_range(mean))
            raise AssertionError(f"{case_id} was converted")
        except BundleError as e:
            assert "NaN or infinite" in str(e)
        w.index["pixels_out"].append(dict(id=case_id, range=[-1.0, 1.0], mean=w.npy(f"pixels-out/{case_id}-mean.npy", mean), error="non-finite"))


def latent_scaling_cases(w: Writer) -> None:
    """Latent-diffusion units: (z - shift) * scale and back, in float32."""
    rng = np.random.default_rng(31)
    for case_id, scale, shift in (("unscaled", 1.0, 0.0), ("sd", 0.18215, 0.0), ("sd3", 1.5305, 0.0609), ("flux", 0.3611, 0.1159)):
        g = Geometry(3, None, None, 4, factor=8, multiple=8, pixel_range=(-1.0, 1.0), scaling_factor=scale, shift_factor=shift)
        z = (rng.standard_normal((2, 4, 3, 5), dtype=np.float32) * np.float32(4)).astype(np.float32)
        zd = rng.standard_normal((2, 4, 3, 5), dtype=np.float32)
        w.index["latent_scaling"].append(dict(
            id=case_id, scaling_factor=scale, shift_factor=shift,
            z=w.npy(f"latent-scaling/{case_id}-z.npy", z), to_diffusion=w.npy(f"latent-scaling/{case_id}-to-diffusion.npy", g.to_diffusion(z)),
            z_diffusion=w.npy(f"latent-scaling/{case_id}-z-diffusion.npy", zd),
            from_diffusion=w.npy(f"latent-scaling/{case_id}-from-diffusion.npy", g.from_diffusion(zd))))  # fmt: skip


TILE_CASES = (
    # id, height, width, tile, overlap, num, den
    ("one-tile", 6, 10, 16, 4, 1, 1),
    ("square-2x2", 24, 24, 16, 8, 1, 1),
    ("non-square-one-axis", 12, 40, 16, 4, 1, 1),
    ("non-square-uneven", 37, 53, 16, 5, 1, 1),
    ("overlap-zero", 10, 10, 4, 0, 1, 1),
    ("decoder-scale", 9, 13, 4, 1, 4, 1),
    ("encoder-scale", 40, 56, 16, 4, 1, 4),
    ("never-advances", 10, 10, 4, 4, 1, 1),
)


def tile_cases(w: Writer) -> None:
    """The tile plan of an input of height x width, and the blend of per-tile constant
    outputs: tile k of the plan (row-major order) outputs k + 1 everywhere."""
    for case_id, h, wd, tile, overlap, num, den in TILE_CASES:
        case = dict(id=case_id, height=h, width=wd, tile=tile, overlap=overlap, num=num, den=den)
        try:
            plan = tiles.plan(h, wd, tile, overlap)
        except ValueError:
            case["error"] = "argument"
            w.index["tiles"].append(case)
            continue
        done: list[int] = []

        def run(x: np.ndarray) -> list[np.ndarray]:
            done.append(len(done))
            return [np.full((1, 1, x.shape[2] * num // den, x.shape[3] * num // den), np.float32(len(done)), np.float32)]

        (out,) = tiles.run_tiled(np.zeros((1, 1, h, wd), np.float32), run, tile, overlap, num, den)
        assert len(done) == len(plan)
        case.update(starts_y=tiles.starts(h, tile, overlap), starts_x=tiles.starts(wd, tile, overlap),
                    tiles=[[t.y, t.x, t.h, t.w] for t in plan], expected=w.npy(f"tiles/{case_id}-blend.npy", out[0, 0]))  # fmt: skip
        w.index["tiles"].append(case)


def spatial_model_cases(w: Writer, name: str, model: Any) -> None:
    """A spatial bundle's decoder and encoder at a non-square size, tiled, a posterior draw,
    and the refusals of operations it does not have."""
    g = model.geometry
    c, f = g.latent_channels, g.factor
    k = max(g.multiple, f) // f  # latent pixels per step of the image's sides
    rng = np.random.default_rng(300)
    z = rng.standard_normal((3, c, 5 * k, 9 * k), dtype=np.float32)
    z[1] *= 3.0
    z[2] = 0.0
    (mean,) = model._decoder.run(z, ["mean"])
    images = model.decode(z, tile=False)
    assert np.array_equal(images, to_pixels(g.to_unit_range(mean.copy())))
    h, wd = 5 * k * f, 9 * k * f
    w.index["decode"].append(dict(id=f"{name}-decode-non-square", bundle=name, height=h, width=wd, z=w.npy(f"decode/{name}-z.npy", z),
                                  mean=w.npy(f"decode/{name}-mean.npy", mean), expected=w.npy(f"decode/{name}-uint8.npy", images)))  # fmt: skip
    inputs = np.concatenate([images[:2], rng.integers(0, 256, (1, h, wd, g.channels), dtype=np.uint8)])
    post = model.encode(inputs, tile=False)
    case = dict(id=f"{name}-encode-non-square", bundle=name, height=h, width=wd, images=w.npy(f"encode/{name}-images.npy", inputs),
                mean=w.npy(f"encode/{name}-mean.npy", post.mean))  # fmt: skip
    if post.logvar is not None:
        case["logvar"] = w.npy(f"encode/{name}-logvar.npy", post.logvar)
    w.index["encode"].append(case)
    if post.logvar is not None:
        seed = 11
        eps = np.random.default_rng(seed).standard_normal(post.mean.shape, dtype=np.float32)
        want = post.sample(ReplayGenerator(normals=eps))
        assert np.array_equal(want, model.embed(inputs, pooled=False, sample_latent=True, seed=seed))
        w.index["posterior_draws"].append(dict(
            id=f"{name}-posterior", bundle=name, mean=case["mean"], logvar=case["logvar"], numpy_seed=seed,
            eps=w.npy(f"posterior/{name}-eps.npy", eps), expected=w.npy(f"posterior/{name}-z.npy", want)))  # fmt: skip

    # Tiled: a tile of `tile_size` image pixels is tile_size / f latent pixels overlapping by a
    # quarter of that (decode), or tile_size image pixels overlapping by a quarter rounded down
    # to a multiple of f (encode); vaesdk's `decode`/`encode(tile=True, tile_size=...)`.
    tile_size = 8 * k * f
    zt = rng.standard_normal((1, c, 12 * k, 18 * k), dtype=np.float32)
    lt = tile_size // f
    (blended,) = tiles.run_tiled(zt, lambda t: [model._decoder.run(t, ["mean"])[0]], lt, lt // 4, f, 1)
    tiled = model.decode(zt, tile=True, tile_size=tile_size)
    assert np.array_equal(tiled, to_pixels(g.to_unit_range(blended.copy())))
    assert not np.array_equal(tiled, model.decode(zt, tile=False)), "the tiles' seams change no pixel: pick a smaller tile"
    w.index["tiled_decode"].append(dict(id=f"{name}-tiled-decode", bundle=name, height=12 * k * f, width=18 * k * f, tile_size=tile_size,
                                        tile=lt, overlap=lt // 4, z=w.npy(f"tiled-decode/{name}-z.npy", zt),
                                        mean=w.npy(f"tiled-decode/{name}-mean.npy", blended),
                                        expected=w.npy(f"tiled-decode/{name}-uint8.npy", tiled)))  # fmt: skip
    overlap = (tile_size // 4) // f * f
    outputs = ["mean", "logvar"] if post.logvar is not None else ["mean"]
    x = tiled[:1]
    outs = tiles.run_tiled(g.to_model_units(x), lambda t: model._encoder.run(t, outputs), tile_size, overlap, 1, f)
    tiled_post = model.encode(x, tile=True, tile_size=tile_size)
    assert np.array_equal(tiled_post.mean, outs[0])
    case = dict(id=f"{name}-tiled-encode", bundle=name, height=x.shape[1], width=x.shape[2], tile_size=tile_size, tile=tile_size,
                overlap=overlap, images=w.npy(f"tiled-encode/{name}-images.npy", x), mean=w.npy(f"tiled-encode/{name}-mean.npy", outs[0]))  # fmt: skip
    if len(outs) > 1:
        case["logvar"] = w.npy(f"tiled-encode/{name}-logvar.npy", outs[1])
    w.index["tiled_encode"].append(case)

    # Refusals: "unsupported" (an operation the model does not have), "argument" (a bad input).
    refusals = [
        dict(id=f"{name}-sample", operation="sample", category="unsupported"),
        dict(id=f"{name}-decode-wrong-channels", operation="decode", shape=[1, c + 1, 5 * k, 9 * k], category="argument"),
        dict(id=f"{name}-decode-empty-side", operation="decode", shape=[1, c, 0, 9 * k], category="argument"),
        dict(id=f"{name}-decode-image-too-large", operation="decode", shape=[1, c, 4096 // f + k, k], category="argument"),
        dict(id=f"{name}-decode-tile-size-not-a-multiple", operation="decode", shape=[1, c, 12 * k, 18 * k], tile_size=tile_size + 2, category="argument"),
        dict(id=f"{name}-encode-side-not-a-multiple", operation="encode", shape=[1, h + 2, wd, g.channels], category="argument"),
    ]
    for r in refusals:
        try:
            run_refusal(model, r)
            raise AssertionError(f"{r['id']} was not refused")
        except InvalidArgumentError as e:
            assert isinstance(e, UnsupportedOperationError) == (r["category"] == "unsupported"), (r["id"], e)
        w.index["refusals"].append(dict(bundle=name, **r))


def run_refusal(model: Any, case: dict[str, Any]) -> Any:
    """The SDK call a refusal vector makes."""
    if case["operation"] == "sample":
        return model.sample(1, seed=0)
    if case["operation"] == "decode":
        tile = case.get("tile_size")
        return model.decode(np.zeros(case["shape"], np.float32), tile=True if tile else None, tile_size=tile)
    return model.encode(np.zeros(case["shape"], np.uint8))


def start(version: int, tolerances: dict[str, Any], bundles: dict[str, Path]) -> Writer:
    root = ROOTS[version]
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    w = Writer(version, tolerances)
    for name, path in bundles.items():
        w.index["bundles"][name] = {"path": Path("..", "..", path.relative_to(REPO)).as_posix(),
                                    "manifest_sha256": hashlib.sha256((path / "manifest.json").read_bytes()).hexdigest()}  # fmt: skip
    return w


def add_manifest_cases(w: Writer, cases: list[dict[str, Any]]) -> None:
    """Check each manifest case's verdict and message against the runtime, and its schema
    verdict; write its bytes."""
    validator = jsonschema.Draft202012Validator(SCHEMA)
    for case in cases:
        raw = case.pop("raw")
        ok, message = runtime_reads_text(raw)
        assert ok == (case["verdict"] == "valid") and case.get("message", "") in message, (case["id"], message)
        try:
            parsed, parses = bundle_reading.parse_manifest_text(raw), True
        except BundleError:
            parsed, parses = None, False
        assert parses == (case.get("category") != "json"), case["id"]
        case["schema_valid"] = validator.is_valid(parsed) if parses else None
        if case["verdict"] == "valid":
            assert case["schema_valid"], case["id"]
        case["file"] = w.raw(f"manifests/{case['id']}.json", raw)
        if "message" in case:
            case["python_message"] = case.pop("message")
        w.index["manifests"].append(case)


def add_bundle_cases(w: Writer, cases: list[dict[str, Any]]) -> None:
    for case in cases:
        w.index["bundle_cases"].append(case)
        check_bundle_case(w, case)
        if "message" in case:
            case["python_message"] = case.pop("message")


def finish(w: Writer) -> None:
    (w.root / "index.json").write_text(json.dumps(w.index, indent=1) + "\n")
    files = [p for p in w.root.rglob("*") if p.is_file()]
    counts = {k: len(v) for k, v in w.index.items() if isinstance(v, list)}
    print(f"{w.root}: {sum(counts.values())} vectors {counts}, {len(files)} files, {sum(p.stat().st_size for p in files) / 1024:.0f} KiB")


def write_v2() -> None:
    w = start(2, TOLERANCES, BUNDLES)
    base = {k: slim(json.loads((BUNDLES[k] / "manifest.json").read_text())) for k in ("tiny-vae", "tiny-ae", "tiny-lowrank")}
    add_manifest_cases(w, manifest_cases(base))
    add_bundle_cases(w, bundle_cases(w))
    pixel_cases(w)
    models = {name: vaesdk.load(path, device="cpu", threads=1) for name, path in BUNDLES.items()}
    model_cases(w, models)
    finish(w)


def write_v3() -> None:
    w = start(3, TOLERANCES_V3, SPATIAL_BUNDLES)
    kl = slim(json.loads((SPATIAL_BUNDLES["tiny-kl"] / "manifest.json").read_text()))
    flat = slim(json.loads((BUNDLES["tiny-vae"] / "manifest.json").read_text()))
    add_manifest_cases(w, manifest_cases_v3(kl, flat))
    add_bundle_cases(w, bundle_cases_v3(w))
    pixel_cases_v3(w)
    latent_scaling_cases(w)
    tile_cases(w)
    for name, path in SPATIAL_BUNDLES.items():
        spatial_model_cases(w, name, vaesdk.load(path, device="cpu", threads=1))
    finish(w)


def main() -> None:
    missing = [str(path.relative_to(REPO)) for path in (*BUNDLES.values(), *SPATIAL_BUNDLES.values()) if not (path / "manifest.json").is_file()]
    if missing:
        raise SystemExit(f"the vectors need the committed bundles; missing: {', '.join(missing)} (restore them from git)")
    write_v2()
    write_v3()


if __name__ == "__main__":
    main()
