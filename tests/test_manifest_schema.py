"""The manifest's JSON Schema (vaesdk/manifest.schema.json): every bundle the project writes
validates against it, and the runtime's checks agree with it: what the schema refuses, the
runtime refuses; what the runtime accepts, the schema accepts (the runtime also makes the
cross-field checks a schema cannot, listed in docs/bundle-format.md). Version-3 manifests
(free and non-square sizes, spatial latents, the pixel range) are crafted here, as an
autoencoder of latent diffusion and two smaller models would write them."""

from __future__ import annotations

import copy
import hashlib
import json
import re
import shutil
import subprocess
from importlib import resources
from pathlib import Path

import jsonschema
import pytest

from vaesdk.bundle.format import FORMAT_VERSION, MANIFEST, io_contract, validate_manifest, version_for
from vaesdk.bundle.geometry import Geometry
from vaesdk.base.errors import BundleError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def schema() -> dict:
    text = resources.files("vaesdk").joinpath("manifest.schema.json").read_text()
    data = json.loads(text)
    jsonschema.Draft202012Validator.check_schema(data)
    return data


def schema_accepts(schema: dict, manifest: dict) -> bool:
    return jsonschema.Draft202012Validator(schema).is_valid(manifest)


def runtime_accepts(manifest: dict) -> bool:
    try:
        validate_manifest(manifest)
        return True
    except BundleError:
        return False


def bundled_manifest() -> dict:
    return json.loads((ROOT / "models" / "fashion-mnist" / MANIFEST).read_text())


def test_schema_is_versioned_with_the_format(schema):
    assert schema["properties"]["format_version"]["enum"] == list(range(1, FORMAT_VERSION + 1))
    assert schema["$id"].endswith(f"/manifest-v{FORMAT_VERSION}.json")


def test_every_bundle_the_project_writes_validates(schema, tiny_vae_bundle, tiny_ae_bundle):
    for folder in [*(ROOT / "models").iterdir(), tiny_vae_bundle, tiny_ae_bundle]:
        if not (folder / MANIFEST).is_file():
            continue
        manifest = json.loads((folder / MANIFEST).read_text())
        errors = [e.message for e in jsonschema.Draft202012Validator(schema).iter_errors(manifest)]
        assert not errors, f"{folder}: {errors[:3]}"
        assert runtime_accepts(manifest)


def _set(manifest: dict, path: str, value) -> dict:
    out = copy.deepcopy(manifest)
    *parents, last = path.split(".")
    node = out
    for key in parents:
        node = node[key]
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value
    return out


_DELETE = object()

REFUSED = [
    ("format", "onnx-bundle"),
    ("format_version", FORMAT_VERSION + 1),
    ("format_version", 0),
    ("format_version", "1"),
    ("format_version", True),
    ("name", ""),
    ("name", "bad name"),
    ("name", "x" * 65),
    ("name", "name\n"),
    ("name", _DELETE),
    ("kind", "gan"),
    ("image", _DELETE),
    ("image.height", 0),
    ("image.height", 5000),
    ("image.channels", 2),
    ("latent.dim", 0),
    ("latent.dim", "32"),
    ("latent.kl_per_dim", "many"),
    ("latent.kl_per_dim", [1.0, "x"] * 16),
    ("latent.gaussians", [1]),
    ("latent.gaussians.standard", {"mean": [0.0] * 32, "cholesky": [1.0] * 528}),
    ("latent.gaussians.aggregate", {"mean": [0.0] * 32}),
    ("latent.default_prior", 3),
    ("likelihood", None),
    ("likelihood", {"type": "poisson"}),
    ("encoder.file", "../encoder.onnx"),
    ("encoder.file", "encoder.bin"),
    ("encoder.sha256", "ABC"),
    ("encoder.bytes", 0),
    ("encoder.bytes", 2**40),
    ("decoder.inputs", "z"),
    ("decoder", _DELETE),
    ("directions", [1, 2]),
    ("directions.bag", {"description": "no vector"}),
    ("directions.bag.vector", "up"),
    ("metrics", [1]),
    ("training", "long"),
    ("description", 7),
    # A version-2 manifest with keys of version 3.
    ("image.range", [0, 1]),
    ("image.range", [-1, 1]),
    ("image.multiple", 4),
    ("latent.channels", 4),
    ("latent.factor", 4),
    ("latent.scaling_factor", 0.18215),
    ("latent.channel_mean", None),
    ("encoder.inputs", [{"name": "x", "dtype": "float32", "shape": ["N", 1, "H", "W"]}]),
]


@pytest.mark.parametrize("path,value", REFUSED, ids=[f"{p}={v!r:.20}" for p, v in REFUSED])
def test_schema_and_runtime_both_refuse(schema, path, value):
    bad = _set(bundled_manifest(), path, value)
    assert not schema_accepts(schema, bad), "the schema accepts it"
    assert not runtime_accepts(bad), "the runtime accepts it"


# Checks that need two fields at once, or JSON number kinds a schema does not separate: only
# the runtime makes them (docs/bundle-format.md lists them).
RUNTIME_ONLY = [
    ("image.height", 28.0),
    ("image.width", 32),
    ("latent.kl_per_dim", [1.0] * 31),
    ("latent.gaussians.aggregate.cholesky", [0.0] * 528),
    ("decoder.file", "encoder.onnx"),
    ("decoder.outputs", [{"name": "mean", "dtype": "float32", "shape": ["N", 1, 32, 32]}]),
    ("directions.bag.vector", [0.0] * 3),
]


def checks_beyond_the_schema() -> str:
    """The section of docs/bundle-format.md that lists the runtime's checks beyond the schema."""
    doc = (ROOT / "docs" / "bundle-format.md").read_text()
    return doc.split("### What a reader checks beyond the schema", 1)[1].split("\n#", 1)[0]


@pytest.mark.parametrize("path,value", RUNTIME_ONLY, ids=[p for p, _ in RUNTIME_ONLY])
def test_runtime_is_stricter_only_where_documented(schema, path, value):
    bad = _set(bundled_manifest(), path, value)
    assert schema_accepts(schema, bad) and not runtime_accepts(bad)
    assert path.split(".")[-1] in checks_beyond_the_schema()


ACCEPTED = [
    ("latent.priors", {"mixture": {"kind": "mixture", "weights": [1.0]}}),
    ("latent.default_prior", "aggregate"),
    ("latent.active_dims", 30),
    ("decoder.covariance", {"kind": "lowrank", "rank": 4}),
    ("training.schedule", {"kl_warmup_epochs": 5}),
    ("some_future_key", {"anything": [1, "two"]}),
    ("directions", None),
    ("latent.gaussians", None),
    ("latent.kl_per_dim", None),
    # A reader takes any version it knows; a writer uses the lowest one (version_for).
    ("format_version", 3),
]


@pytest.mark.parametrize("path,value", ACCEPTED, ids=[p for p, _ in ACCEPTED])
def test_both_accept_known_later_and_unknown_keys(schema, path, value):
    good = _set(bundled_manifest(), path, value)
    assert schema_accepts(schema, good) and runtime_accepts(good)


def test_a_plain_autoencoder_has_no_likelihood(schema, tiny_ae_bundle):
    manifest = json.loads((tiny_ae_bundle / MANIFEST).read_text())
    assert manifest["kind"] == "ae"
    bad = _set(manifest, "likelihood", {"type": "discretized_gaussian"})
    assert not schema_accepts(schema, bad) and not runtime_accepts(bad)


def _walk(node, path="#"):
    if isinstance(node, dict):
        yield path, node
        for k, v in node.items():
            yield from _walk(v, f"{path}/{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk(v, f"{path}/{i}")


def test_schema_patterns_end_at_the_true_end_and_types_are_single(schema):
    """Python's re lets `$` match before a trailing newline and ajv's strict mode refuses union
    types, so the schema uses neither (docs/bundle-format.md, "The schema"); ajv's own verdicts
    are checked by tests/test_conformance_web.py."""
    patterns = [(p, n["pattern"]) for p, n in _walk(schema) if isinstance(n.get("pattern"), str)]
    assert len(patterns) >= 5
    for where, pattern in patterns:
        assert pattern.startswith("^") and pattern.endswith(r"(?![\s\S])") and "$" not in pattern, where
    unions = [p for p, n in _walk(schema) if isinstance(n.get("type"), list)]
    assert not unions, unions


@pytest.mark.parametrize("path", ["encoder.sha256", "name", "latent.mixtures.mixture.sha256", "latent.mixtures.mixture.file"])
def test_a_trailing_newline_is_refused_by_schema_and_runtime(schema, path):
    manifest = bundled_manifest()
    node = manifest
    for key in path.split(".")[:-1]:
        node = node[key]
    bad = _set(manifest, path, node[path.split(".")[-1]] + "\n")
    assert not schema_accepts(schema, bad) and not runtime_accepts(bad)


# ---- version 3 ------------------------------------------------------------------------------


def _tensor(name: str, shape: list) -> dict:
    return {"name": name, "dtype": "float32", "shape": shape}


def _graph(file: str, size: int, inputs: list, outputs: list) -> dict:
    return {"file": file, "sha256": hashlib.sha256(file.encode()).hexdigest(), "bytes": size, "inputs": inputs, "outputs": outputs}


# The autoencoder of a latent-diffusion model: RGB images of any size whose sides are multiples of
# 8, in [-1, 1]; latents [4, H/8, W/8], scaled by 0.18215 for the diffusion model; a deterministic
# decoder (mean only).
LATENT_DIFFUSION = {
    "format": "vaesdk-bundle",
    "format_version": 3,
    "name": "sd-vae",
    "description": "the autoencoder of a latent-diffusion model",
    "kind": "vae",
    "image": {"multiple": 8, "channels": 3, "range": [-1, 1], "color_mode": "RGB", "dtype": "uint8", "value_range": [0, 255]},
    "latent": {"channels": 4, "factor": 8, "scaling_factor": 0.18215},
    "likelihood": {"type": "none"},
    "encoder": _graph("encoder.onnx", 136_000_000, [_tensor("x", ["N", 3, "H", "W"])],
                      [_tensor("mean", ["N", 4, "h", "w"]), _tensor("logvar", ["N", 4, "h", "w"])]),  # fmt: skip
    "decoder": _graph("decoder.onnx", 198_000_000, [_tensor("z", ["N", 4, "h", "w"])], [_tensor("mean", ["N", 3, "H", "W"])]),
}

# A fixed, non-square size with flat latents: 48 x 64 RGB images, 32 latent dimensions, a
# diagonal discretized Gaussian decoder.
NON_SQUARE = {
    "format": "vaesdk-bundle",
    "format_version": 3,
    "name": "wide",
    "kind": "vae",
    "image": {"height": 48, "width": 64, "channels": 3},
    "latent": {"dim": 32, "prior": "standard_normal"},
    "likelihood": {"type": "discretized_gaussian", "bins": 256},
    "encoder": _graph("encoder.onnx", 4096, [_tensor("x", ["N", 3, 48, 64])], [_tensor("mean", ["N", 32]), _tensor("logvar", ["N", 32])]),
    "decoder": _graph("decoder.onnx", 4096, [_tensor("z", ["N", 32])], [_tensor("mean", ["N", 3, 48, 64]), _tensor("logvar", ["N", 3, 48, 64])]),
}

# A fixed size with spatial latents: a plain autoencoder of 32 x 64 grayscale images, latents
# [2, 4, 8] (factor 8), so priors have dimension 2*4*8 = 64 and directions 2 numbers.
SPATIAL_FIXED = {
    "format": "vaesdk-bundle",
    "format_version": 3,
    "name": "strips",
    "kind": "ae",
    "image": {"height": 32, "width": 64, "channels": 1},
    "latent": {"channels": 2, "factor": 8},
    "likelihood": None,
    "encoder": _graph("encoder.onnx", 4096, [_tensor("x", ["N", 1, 32, 64])], [_tensor("mean", ["N", 2, 4, 8])]),
    "decoder": _graph("decoder.onnx", 4096, [_tensor("z", ["N", 2, 4, 8])], [_tensor("mean", ["N", 1, 32, 64])]),
}

EXAMPLES = {"latent-diffusion": LATENT_DIFFUSION, "non-square": NON_SQUARE, "spatial-fixed": SPATIAL_FIXED}


def _example(name: str, changes: dict) -> dict:
    out = bundled_manifest() if name == "fashion-mnist" else copy.deepcopy(EXAMPLES[name])
    for path, value in changes.items():
        out = _set(out, path, value)
    return out


def _identity_cholesky(dim: int) -> list[float]:
    """The lower triangle of I, row by row."""
    return [1.0 if j == i else 0.0 for i in range(dim) for j in range(i + 1)]


def _gaussian(dim: int) -> dict:
    return {"aggregate": {"mean": [0.0] * dim, "cholesky": _identity_cholesky(dim)}}


@pytest.mark.parametrize("name", EXAMPLES)
def test_the_version_3_examples_are_valid_and_need_version_3(schema, name):
    manifest = _example(name, {})
    errors = [e.message for e in jsonschema.Draft202012Validator(schema).iter_errors(manifest)]
    assert not errors, errors[:3]
    validated = validate_manifest(manifest)
    geometry = validated.geometry
    assert version_for(geometry) == 3
    # Their graphs are the contract of their geometry, as the format defines it (the one Gaussian
    # decoder among them has a logvar output; a deterministic one has the mean only).
    decoder_logvar = (manifest["likelihood"] or {}).get("type") == "discretized_gaussian"
    contract = io_contract(manifest["kind"], geometry, 0, decoder_logvar)
    for role in ("encoder", "decoder"):
        assert manifest[role]["inputs"] == contract[role]["inputs"] and manifest[role]["outputs"] == contract[role]["outputs"]


def test_the_latent_diffusion_example_reads_as_its_geometry():
    g = validate_manifest(_example("latent-diffusion", {})).geometry
    assert g == Geometry(channels=3, height=None, width=None, latent_channels=4, factor=8, multiple=8, pixel_range=(-1.0, 1.0), scaling_factor=0.18215)
    assert g.latent_shape(512, 768) == (4, 64, 96)
    assert version_for(validate_manifest(bundled_manifest()).geometry) == 2


V3_ACCEPTED = [
    ("latent-diffusion", {"latent.shift_factor": 0.1159, "latent.scaling_factor": 0.3611}),
    ("latent-diffusion", {"latent.channel_mean": [0.1, -0.2, 0.3, 0.0], "latent.channel_std": [1.0, 0.5, 2.0, 0.9]}),
    ("latent-diffusion", {"latent.channel_mean": None, "latent.channel_std": None}),
    ("latent-diffusion", {"latent.kl_per_dim": None, "anomaly": None}),
    ("latent-diffusion", {"latent.gaussians": None, "latent.mixtures": {}}),
    ("latent-diffusion", {"latent.mixtures": None}),
    ("non-square", {"latent.mixtures": None, "latent.gaussians": None}),
    ("latent-diffusion", {"image.range": [-1.0, 1.0]}),
    ("latent-diffusion", {"image.multiple": 64}),
    ("latent-diffusion", {"directions": {"warmer": {"vector": [0.2, 0.0, -0.1, 0.0], "source": "user"}}}),
    ("latent-diffusion", {"kind": "ae", "likelihood": None, "encoder.outputs": [_tensor("mean", ["N", 4, "h", "w"])]}),
    ("non-square", {"image.range": [0, 1]}),
    ("non-square", {"latent.kl_per_dim": [0.5] * 32, "directions": {"up": {"vector": [0.0] * 32}}}),
    ("spatial-fixed", {"latent.gaussians": _gaussian(64), "latent.default_prior": "aggregate"}),
    ("spatial-fixed", {"directions": {"brighter": {"vector": [1.0, -0.5]}}}),
    ("spatial-fixed", {"image.range": [-1, 1], "latent.scaling_factor": 0.5, "latent.shift_factor": -0.25}),
]


def _ids(cases) -> list[str]:
    return [f"{name}:{','.join(f'{p}={v!r:.16}' for p, v in changes.items())}" for name, changes, *_ in cases]


@pytest.mark.parametrize("name,changes", V3_ACCEPTED, ids=_ids(V3_ACCEPTED))
def test_both_accept_version_3_manifests(schema, name, changes):
    good = _example(name, changes)
    assert schema_accepts(schema, good), [e.message for e in jsonschema.Draft202012Validator(schema).iter_errors(good)][:3]
    validate_manifest(good)


_ANOMALY = {"score": "pixel-plus-latent/2"}
_MIXTURE = {"mixture": {"file": "prior-mixture.npz", "sha256": "0" * 64, "bytes": 1024}}

# (example, changes, a part of the runtime's message: it refuses for the reason under test)
V3_REFUSED = [
    # a free size
    ("latent-diffusion", {"image.multiple": 0}, "image.multiple must be in 1..64"),
    ("latent-diffusion", {"image.multiple": 128}, "image.multiple must be in 1..64"),
    ("latent-diffusion", {"image.multiple": "8"}, "image.multiple must be an integer"),
    ("latent-diffusion", {"image.multiple": _DELETE}, "image.multiple is missing"),
    ("latent-diffusion", {"image.height": 512}, "image.width is missing"),
    ("latent-diffusion", {"image.height": 512, "image.width": 512}, "image.multiple is for a free size"),
    ("latent-diffusion", {"encoder.inputs": [_tensor("x", ["N", 3, "height", "width"])]}, "encoder.inputs must be"),
    # a fixed size, not square
    ("non-square", {"image.width": 5000}, "image must be of height and width in 1..4096"),
    ("non-square", {"image.width": _DELETE}, "image.width is missing"),
    ("non-square", {"image.multiple": 16}, "image.multiple is for a free size"),
    # the range
    ("latent-diffusion", {"image.range": [0, 255]}, "image.range must be"),
    ("latent-diffusion", {"image.range": [1, -1]}, "image.range must be"),
    ("latent-diffusion", {"image.range": [-1, 1, 0]}, "image.range must be"),
    ("latent-diffusion", {"image.range": [True, 1]}, "image.range must be"),
    ("latent-diffusion", {"image.range": "[-1, 1]"}, "image.range must be"),
    ("latent-diffusion", {"image.range": None}, "image.range must be"),
    ("non-square", {"image.range": [-0.5, 0.5]}, "image.range must be"),
    ("non-square", {"image.range": [-1, 1]}, "image.range must be [0, 1] with flat latents"),
    # the factor and the channels
    ("latent-diffusion", {"latent.factor": 0}, "latent.factor must be in 1..64"),
    ("latent-diffusion", {"latent.factor": 128}, "latent.factor must be in 1..64"),
    ("latent-diffusion", {"latent.factor": "8"}, "latent.factor must be an integer"),
    ("spatial-fixed", {"latent.factor": True}, "latent.factor must be an integer"),
    ("latent-diffusion", {"latent.factor": _DELETE}, "latent.factor is missing"),
    ("latent-diffusion", {"latent.channels": 0}, "latent.channels must be in 1..1024"),
    ("latent-diffusion", {"latent.channels": 2048}, "latent.channels must be in 1..1024"),
    ("latent-diffusion", {"latent.dim": 4}, "latent.dim is for flat latents"),
    # latent-diffusion scaling and channel statistics
    ("latent-diffusion", {"latent.scaling_factor": 0}, "latent.scaling_factor must be a finite number above 0"),
    ("latent-diffusion", {"latent.scaling_factor": -0.18215}, "latent.scaling_factor must be a finite number above 0"),
    ("latent-diffusion", {"latent.scaling_factor": None}, "latent.scaling_factor must be"),
    ("latent-diffusion", {"latent.shift_factor": "0.1159"}, "latent.shift_factor must be"),
    ("latent-diffusion", {"latent.channel_std": [1.0, 0.0, 1.0, 1.0]}, "latent.channel_std must hold numbers above 0"),
    ("latent-diffusion", {"latent.channel_mean": "zero"}, "latent.channel_mean must be a list of 4 numbers"),
    # a free size with flat latents; flat latents with spatial keys
    ("latent-diffusion", {"latent": {"dim": 64}}, "needs spatial latents"),
    ("non-square", {"latent.scaling_factor": 0.5}, "latent.scaling_factor is for spatial latents"),
    ("non-square", {"latent.channel_mean": None}, "latent.channel_mean is for spatial latents"),
    ("non-square", {"latent.factor": 8}, "latent.dim is for flat latents"),
    # spatial latents: a deterministic decoder, no anomaly section, no KL per dimension
    ("latent-diffusion", {"likelihood": {"type": "discretized_gaussian"}}, "must be 'none' with spatial latents"),
    ("latent-diffusion", {"likelihood": {"type": "bernoulli"}}, "must be 'none' with spatial latents"),
    ("latent-diffusion", {"likelihood": None}, "likelihood must be"),
    ("latent-diffusion", {"anomaly": _ANOMALY}, "anomaly is not defined for spatial latents"),
    ("spatial-fixed", {"anomaly": _ANOMALY}, "anomaly is not defined for spatial latents"),
    ("latent-diffusion", {"latent.kl_per_dim": [0.1] * 4}, "latent.kl_per_dim is for flat latents"),
    ("spatial-fixed", {"likelihood": {"type": "none"}}, "likelihood must be null"),
    # priors: only at a fixed size
    ("latent-diffusion", {"latent.gaussians": _gaussian(4)}, "holds priors"),
    ("latent-diffusion", {"latent.mixtures": _MIXTURE}, "holds priors"),
    # version 1 and 2 manifests with version-3 keys
    ("latent-diffusion", {"format_version": 2}, "image.height is missing"),
    ("latent-diffusion", {"format_version": 1}, "image.height is missing"),
    ("spatial-fixed", {"format_version": 2, "image.width": 32}, "need format version 3"),
    ("fashion-mnist", {"image.range": [0, 1]}, "is a format version 3 key"),
    ("fashion-mnist", {"image.height": _DELETE, "image.width": _DELETE, "image.multiple": 4}, "image.height is missing"),
    ("fashion-mnist", {"latent.channels": 4, "latent.factor": 7}, "need format version 3"),
    ("fashion-mnist", {"latent.shift_factor": 0.0}, "latent.shift_factor is for spatial latents"),
]


@pytest.mark.parametrize("name,changes,message", V3_REFUSED, ids=_ids(V3_REFUSED))
def test_both_refuse_bad_version_3_manifests(schema, name, changes, message):
    bad = _example(name, changes)
    assert not schema_accepts(schema, bad), "the schema accepts it"
    with pytest.raises(BundleError, match=re.escape(message)):
        validate_manifest(bad)


# Version 3's checks that compare numbers across fields, or integer spellings: the runtime's
# alone, each listed in docs/bundle-format.md (the last item is a word the list must hold).
V3_RUNTIME_ONLY = [
    ("spatial-fixed", {"latent.factor": 3}, "must divide the image's height and width", "factor"),
    ("latent-diffusion", {"image.multiple": 4}, "must be a multiple of latent.factor", "multiple"),
    ("latent-diffusion", {"image.multiple": 8.0}, "image.multiple must be an integer", "multiple"),
    ("spatial-fixed", {"latent.factor": 8.0}, "latent.factor must be an integer", "factor"),
    ("latent-diffusion", {"latent.channel_mean": [0.0] * 3}, "latent.channel_mean must be a list of 4 numbers", "channel_mean"),
    ("latent-diffusion", {"latent.channel_std": [1.0] * 5}, "latent.channel_std must be a list of 4 numbers", "channel_std"),
    ("latent-diffusion", {"directions": {"bag": {"vector": [0.0] * 64}}}, "directions.bag.vector must be a list of 4 numbers", "vector"),
    ("spatial-fixed", {"latent.gaussians": _gaussian(2)}, "latent.gaussians.aggregate.mean must be a list of 64 numbers", "mean"),
    ("latent-diffusion", {"decoder.outputs": [_tensor("mean", ["N", 3, 512, 512])]}, "decoder.outputs must be", "outputs"),
    ("latent-diffusion", {"encoder.inputs": [_tensor("x", ["N", 3, "W", "H"])]}, "encoder.inputs must be", "inputs"),
    ("spatial-fixed", {"encoder.outputs": [_tensor("mean", ["N", 2, "h", "w"])]}, "encoder.outputs must be", "outputs"),
    ("non-square", {"format_version": 2}, "must be square", "square"),
]


@pytest.mark.parametrize("name,changes,message,documented", V3_RUNTIME_ONLY, ids=_ids(V3_RUNTIME_ONLY))
def test_runtime_is_stricter_on_version_3_only_where_documented(schema, name, changes, message, documented):
    bad = _example(name, changes)
    assert schema_accepts(schema, bad)
    with pytest.raises(BundleError, match=re.escape(message)):
        validate_manifest(bad)
    assert documented in checks_beyond_the_schema()


@pytest.mark.web
def test_ajv_in_strict_mode_gives_jsonschemas_verdicts_on_the_version_3_cases(schema, tmp_path):
    """The page's schema validator (ajv, strict mode, as conformance/run-vae-js.mjs uses it)
    compiles the schema and agrees with Python's jsonschema on every crafted manifest here."""
    ajv = ROOT / "conformance" / "node_modules" / "ajv"
    assert shutil.which("node") and ajv.is_dir(), "needs node and `npm ci` in conformance/ (./scripts/test runs it)"
    cases = [_example(name, changes) for name, changes, *_ in [*V3_ACCEPTED, *V3_REFUSED, *V3_RUNTIME_ONLY]]
    cases += [_example(name, {}) for name in EXAMPLES]
    cases += [_set(bundled_manifest(), p, v) for p, v in [*REFUSED, *RUNTIME_ONLY, *ACCEPTED]]
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    script = (
        'import { readFileSync } from "node:fs"; import { createRequire } from "node:module";'
        f"const require = createRequire({json.dumps(str(ROOT / 'conformance' / 'package.json'))});"
        'const Ajv2020 = require("ajv/dist/2020").default;'
        "const check = new Ajv2020({ strict: true, allErrors: true }).compile(JSON.parse(readFileSync(process.argv[1], 'utf8')));"
        "console.log(JSON.stringify(JSON.parse(readFileSync(process.argv[2], 'utf8')).map((m) => check(m))));"
    )
    done = subprocess.run(
        ["node", "--input-type=module", "-e", script, str(ROOT / "vaesdk" / "manifest.schema.json"), str(tmp_path / "cases.json")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout) == [schema_accepts(schema, m) for m in cases]
