"""The manifest's JSON Schema (vaesdk/manifest.schema.json): every bundle the project writes
validates against it, and the runtime's checks agree with it: what the schema refuses, the
runtime refuses; what the runtime accepts, the schema accepts (the runtime also makes the
cross-field checks a schema cannot, listed in docs/bundle-format.md)."""

from __future__ import annotations

import copy
import json
from importlib import resources
from pathlib import Path

import jsonschema
import pytest

from vaesdk.bundle.format import FORMAT_VERSION, MANIFEST, validate_manifest
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
    assert schema["properties"]["format_version"]["enum"][-1] == FORMAT_VERSION
    assert f"manifest-v{FORMAT_VERSION}" in schema["$id"]


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
    ("format_version", 3),
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


@pytest.mark.parametrize("path,value", RUNTIME_ONLY, ids=[p for p, _ in RUNTIME_ONLY])
def test_runtime_is_stricter_only_where_documented(schema, path, value):
    bad = _set(bundled_manifest(), path, value)
    assert schema_accepts(schema, bad) and not runtime_accepts(bad)
    doc = (ROOT / "docs" / "bundle-format.md").read_text()
    assert path.split(".")[-1] in doc


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
