"""Write the conformance vectors of the bundle format, version 2, into conformance/v2/.

    python conformance/make_vectors.py        # from the repository root, in the dev environment

Every expected figure comes from the Python runtime (vaesdk) run on the committed bundles in
tests/data and models/; every verdict is written here by hand and checked against the runtime
before anything is written, so the script stops when the two disagree. A change to any vector
is a change to the format: it goes with a changelog entry in docs/bundle-format.md.
docs/bundle-format.md ("Conformance vectors") describes the files.
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
from vectors import ROOT, VERSION, ReplayGenerator, materialize  # noqa: E402

import vaesdk  # noqa: E402
from vaesdk.bundle import format as bundle_format  # noqa: E402
from vaesdk.bundle import reading as bundle_reading  # noqa: E402
from vaesdk.maths import anomaly  # noqa: E402
from vaesdk.base.errors import BundleError  # noqa: E402
from vaesdk.maths.latent import GivenNoise, ImageNoise, Posterior  # noqa: E402
from vaesdk.runtime.model import means_to_uint8  # noqa: E402

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


class Writer:
    def __init__(self, root: Path):
        self.root = root
        self.index: dict[str, Any] = {
            "format_version": VERSION,
            "about": "Conformance vectors of the vaesdk bundle format; see docs/bundle-format.md, 'Conformance vectors'.",
            "tolerances": TOLERANCES,
            "bundles": {},
            "manifests": [],
            "bundle_cases": [],
            "pixels": [],
            "decode": [],
            "encode": [],
            "prior_draws": [],
            "posterior_draws": [],
            "pixel_draws": [],
            "scores": [],
        }

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
    bad("version-newer", set_path(v2, "format_version", 3), "version", "newer than this vaesdk understands")
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
    bad("gaussian-named-standard", set_path(v2, "latent.gaussians.standard", v2["latent"]["gaussians"]["aggregate"]), "manifest", "has a bad name 'standard'")
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
    bad("anomaly-prior-unknown", set_path(v2, "anomaly", {"score": anomaly.SCORE, "calibration": cal}), "manifest", "anomaly.calibration.prior")
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
            mixture = prior in model._mixtures
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


def main() -> None:
    if ROOT.exists():
        shutil.rmtree(ROOT)
    ROOT.mkdir(parents=True)
    w = Writer(ROOT)
    for name, path in BUNDLES.items():
        w.index["bundles"][name] = {"path": Path("..", "..", path.relative_to(REPO)).as_posix(),
                                    "manifest_sha256": hashlib.sha256((path / "manifest.json").read_bytes()).hexdigest()}  # fmt: skip
    base = {k: slim(json.loads((BUNDLES[k] / "manifest.json").read_text())) for k in ("tiny-vae", "tiny-ae", "tiny-lowrank")}
    validator = jsonschema.Draft202012Validator(SCHEMA)
    for case in manifest_cases(base):
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
    for case in bundle_cases(w):
        w.index["bundle_cases"].append(case)
        check_bundle_case(w, case)
        if "message" in case:
            case["python_message"] = case.pop("message")
    pixel_cases(w)
    models = {name: vaesdk.load(path, device="cpu", threads=1) for name, path in BUNDLES.items()}
    model_cases(w, models)
    (ROOT / "index.json").write_text(json.dumps(w.index, indent=1) + "\n")
    files = [p for p in ROOT.rglob("*") if p.is_file()]
    counts = {k: len(v) for k, v in w.index.items() if isinstance(v, list)}
    print(f"{ROOT}: {sum(counts.values())} vectors {counts}, {len(files)} files, {sum(p.stat().st_size for p in files) / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
