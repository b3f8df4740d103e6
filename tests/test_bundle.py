"""Reading and verifying bundles (vaesdk.bundle.format): the manifest schema, checksums, the files
themselves, the graphs' input/output contract, and loading that never executes code.

Every bad input is built inside its test from the committed tiny bundles or crafted with
`onnx.helper`. Where a protection is tested, the bad input is otherwise acceptable (checksums
fixed up, graph contract met), so only that protection can stop it.
"""

from __future__ import annotations

import pytest

# Needs onnx (the train extra): marked, and skipped at collection where it is absent.
pytestmark = pytest.mark.train
pytest.importorskip("onnx")

import hashlib
import json
import os
import shutil
import threading
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from crafted import (
    LATENT,
    crafted_decoder,
    crafted_encoder,
    del_path,
    load_error,
    pb_bytes,
    read_manifest_json,
    rewrite_manifest,
    set_path,
    swap_model,
    vi,
)
from onnx import TensorProto

import vaesdk
import vaesdk.bundle.format
import vaesdk.bundle.reading
import vaesdk.bundle.registry
import vaesdk.runtime.session
from vaesdk.bundle.format import MANIFEST, io_contract, validate_manifest
from vaesdk.bundle.geometry import Geometry
from vaesdk.bundle.reading import read_bundle
from vaesdk.base.errors import BundleError
from vaesdk.bundle.onnx_proto import inspect_model

# ---- good bundles ------------------------------------------------------------------------


@pytest.mark.parametrize("fixture, kind", [("tiny_vae_bundle", "vae"), ("tiny_ae_bundle", "ae")])
def test_tiny_bundles_load_and_match_their_manifest(request, fixture, kind):
    path = request.getfixturevalue(fixture)
    manifest = read_manifest_json(path)
    model = vaesdk.load(path, device="cpu")
    assert model.kind == manifest["kind"] == kind
    assert model.latent_dim == manifest["latent"]["dim"] == LATENT
    image = manifest["image"]
    assert model.image_shape == (image["height"], image["width"], image["channels"]) == (28, 28, 1)
    assert model.device == "cpu"
    bundle = read_bundle(path)
    for role in ("encoder", "decoder"):
        assert hashlib.sha256(bundle.models[role]).hexdigest() == manifest[role]["sha256"]
        assert len(bundle.models[role]) == manifest[role]["bytes"]



# ---- manifest schema ---------------------------------------------------------------------


def test_manifest_that_is_not_json_is_refused(bundle_copy):
    (bundle_copy / MANIFEST).write_text('{"format": "vaesdk-bundle", ')
    assert "not valid JSON" in load_error(bundle_copy)


def test_manifest_that_is_not_utf8_is_refused(bundle_copy):
    (bundle_copy / MANIFEST).write_bytes(b'{"name": "\xff\xfe"}')
    assert "not valid JSON" in load_error(bundle_copy)


def test_manifest_top_level_must_be_an_object(bundle_copy):
    (bundle_copy / MANIFEST).write_text(json.dumps([read_manifest_json(bundle_copy)]))
    assert "top level must be a JSON object" in load_error(bundle_copy)


def test_manifest_with_wrong_format_is_refused(bundle_copy):
    rewrite_manifest(bundle_copy, lambda m: set_path(m, "format", "onnx-folder"))
    message = load_error(bundle_copy)
    assert "format" in message and "'vaesdk-bundle'" in message and "'onnx-folder'" in message


def test_manifest_from_a_newer_format_version_says_upgrade(bundle_copy):
    rewrite_manifest(bundle_copy, lambda m: set_path(m, "format_version", vaesdk.bundle.format.FORMAT_VERSION + 1))
    message = load_error(bundle_copy)
    assert f"format_version {vaesdk.bundle.format.FORMAT_VERSION + 1}" in message and "upgrade vaesdk" in message


def test_manifest_format_version_zero_is_refused(bundle_copy):
    rewrite_manifest(bundle_copy, lambda m: set_path(m, "format_version", 0))
    message = load_error(bundle_copy)
    assert "format_version" in message and "got 0" in message


@pytest.mark.parametrize(
    "field",
    [
        "format_version", "name", "kind", "image", "latent", "encoder", "decoder",
        "encoder.file", "encoder.sha256", "encoder.bytes", "decoder.outputs",
        "image.height", "image.channels", "latent.dim",
    ],
)
def test_manifest_missing_required_field_is_named(bundle_copy, field):
    rewrite_manifest(bundle_copy, lambda m: del_path(m, field))
    message = load_error(bundle_copy)
    assert "invalid manifest" in message and f"{field} is missing" in message


@pytest.mark.parametrize(
    "field, value, expected",
    [
        ("latent.dim", "8", "latent.dim must be an integer, got str"),
        ("latent.dim", True, "latent.dim must be an integer, got True"),
        ("latent.dim", 8.0, "latent.dim must be an integer, got float"),
        ("latent.dim", 0, "latent.dim must be in 1.."),
        ("format_version", True, "format_version must be an integer, got True"),
        ("image.height", -28, "image must be square with a side in 1..4096, got -28x28"),
        ("image.channels", 2, "image.channels must be 1 or 3"),
        ("kind", "gan", "kind must be 'vae' or 'ae', got 'gan'"),
        ("name", 7, "name must be a string"),
        ("name", "my model!", "name must match"),
        ("encoder", "encoder.onnx", "encoder must be an object"),
        ("encoder.sha256", "AB" * 32, "encoder.sha256 must be 64 lowercase hex digits"),
        ("decoder.bytes", -1, "decoder.bytes must be in 1.."),
        ("likelihood", None, "likelihood must be"),
        ("metrics", [1, 2], "metrics must be an object"),
        ("directions", [], "directions must be an object"),
    ],
)
def test_manifest_wrong_types_and_values_are_named(bundle_copy, field, value, expected):
    rewrite_manifest(bundle_copy, lambda m: set_path(m, field, value))
    assert expected in load_error(bundle_copy)


@pytest.mark.parametrize("fname", ["../x.onnx", "sub/encoder.onnx", "/etc/passwd", "ABSOLUTE", "..", "encoder.onnx\n"])
def test_manifest_model_file_must_be_a_plain_name(bundle_copy, tmp_path, fname):
    # Put a valid copy of the encoder wherever the name points, so without the name check the
    # bundle would load from outside its folder.
    encoder = (bundle_copy / "encoder.onnx").read_bytes()
    if fname == "ABSOLUTE":
        fname = str(tmp_path / "outside" / "encoder.onnx")
    target = Path(fname) if os.path.isabs(fname) else bundle_copy / fname
    if fname != "/etc/passwd" and fname != "..":
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(encoder)
    rewrite_manifest(bundle_copy, lambda m: set_path(m, "encoder.file", fname))
    assert "encoder.file must be a plain file name ending in .onnx" in load_error(bundle_copy)


def test_manifest_names_with_a_trailing_newline_are_refused(bundle_copy):
    rewrite_manifest(bundle_copy, lambda m: set_path(m, "name", "tiny-vae\n"))
    assert "name must match" in load_error(bundle_copy)
    rewrite_manifest(bundle_copy, lambda m: set_path(m, "name", "tiny-vae"))
    rewrite_manifest(bundle_copy, lambda m: m["directions"].update({"shoe\n": m["directions"]["t-shirt"]}))
    assert "directions has a bad name 'shoe\\n'" in load_error(bundle_copy)


def test_manifest_direction_vector_of_wrong_length_is_refused(bundle_copy):
    rewrite_manifest(bundle_copy, lambda m: m["directions"]["sandal"]["vector"].pop())
    assert f"directions.sandal.vector must be a list of {LATENT} numbers" in load_error(bundle_copy)


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
def test_manifest_with_nan_or_infinity_anywhere_is_not_json(bundle_copy, token):
    """JSON has no NaN or Infinity; Python's json module reads them, JavaScript's refuses
    them, so the format refuses them in every field (docs/bundle-format.md)."""
    data = read_manifest_json(bundle_copy)
    data.setdefault("metrics", {})["elbo_bpd"] = "@TOKEN@"
    (bundle_copy / MANIFEST).write_text(json.dumps(data, allow_nan=False).replace('"@TOKEN@"', token))
    assert f"{token.lstrip('-')} is not a JSON number; write finite numbers only (or null)" in load_error(bundle_copy)


@pytest.mark.parametrize("token", ["1" + "0" * 400, '"0.5"', "true", "null"])
def test_manifest_direction_vector_must_hold_finite_numbers(bundle_copy, token):
    data = read_manifest_json(bundle_copy)
    data["directions"]["sandal"]["vector"][3] = "@TOKEN@"
    text = json.dumps(data, allow_nan=False).replace('"@TOKEN@"', token)
    assert f", {token}," in text
    (bundle_copy / MANIFEST).write_text(text)
    message = load_error(bundle_copy)
    assert "directions.sandal.vector must hold finite numbers" in message
    assert len(message) < 300  # a 401-digit number is not echoed whole


def test_a_vector_whose_sum_overflows_still_holds_finite_numbers():
    """The vector check's fast path (a finite sum) hands doubtful lists to the number-by-number
    check: finite numbers whose sum overflows pass; one infinity, NaN, bool or huge int does not."""
    from vaesdk.bundle import format as F

    assert F._vector([1e308, 1e308, -5], 3, "v") == [1e308, 1e308, -5]
    assert F._vector([1, 2.5, 10**300], 3, "v") == [1, 2.5, 10**300]  # an int a float can hold
    for bad in ([1.0, float("inf"), 0.0], [float("nan"), 1.0, 2.0], [1.0, True, 2.0], [1.0, 10**400, 2.0], [10**400, -(10**400), 1.0]):
        with pytest.raises(BundleError, match="v must hold finite numbers"):
            F._vector(bad, 3, "v")


def test_manifest_kl_per_dim_with_nan_is_refused(bundle_copy):
    data = read_manifest_json(bundle_copy)
    data["latent"]["kl_per_dim"] = [float("nan")] * LATENT
    with pytest.raises(BundleError, match="latent.kl_per_dim must hold finite numbers"):
        validate_manifest(data)  # a manifest built in Python, before it is written


def test_manifest_with_oversized_integer_or_deep_nesting_is_a_bundle_error(bundle_copy):
    text = (bundle_copy / MANIFEST).read_text()
    (bundle_copy / MANIFEST).write_text(text.replace('"dim": 8', '"dim": ' + "9" * 5000, 1))
    message = load_error(bundle_copy)
    assert "not valid JSON" in message or "latent.dim" in message
    (bundle_copy / MANIFEST).write_text('{"format": "vaesdk-bundle", "x": ' + "[" * 100_000 + "]" * 100_000 + "}")
    assert "not valid JSON" in load_error(bundle_copy)


def test_manifest_decoder_declaration_must_match_kind(bundle_copy):
    # A vae whose decoder is declared with the ae's single output.
    rewrite_manifest(bundle_copy, lambda m: m["decoder"]["outputs"].pop())
    message = load_error(bundle_copy)
    assert "decoder.outputs must be" in message and "logvar" in message


def test_manifest_kind_ae_with_vae_io_declaration_is_refused(bundle_copy):
    def to_ae(m):
        m["kind"], m["likelihood"] = "ae", None

    rewrite_manifest(bundle_copy, to_ae)
    assert "encoder.outputs must be" in load_error(bundle_copy)


def test_manifest_declared_shape_must_match_latent_dim(bundle_copy):
    rewrite_manifest(bundle_copy, lambda m: set_path(m, "decoder.inputs", [{"name": "z", "dtype": "float32", "shape": ["N", 9]}]))
    assert "decoder.inputs must be" in load_error(bundle_copy)


def test_manifest_encoder_and_decoder_files_must_differ(bundle_copy):
    rewrite_manifest(bundle_copy, lambda m: set_path(m, "decoder.file", "encoder.onnx"))
    assert "decoder.file must differ from encoder.file" in load_error(bundle_copy)



# ---- checksums ---------------------------------------------------------------------------


def _flip_a_weight_byte(data: bytes) -> bytes:
    """Change one byte inside the largest initializer's raw data: still a valid model."""
    model = onnx.load_from_string(data)
    raw = max((t.raw_data for t in model.graph.initializer), key=len)
    at = data.find(raw) + len(raw) // 2
    assert at > len(raw) // 2
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]


def test_changed_byte_in_model_fails_checksum_and_loads_only_with_verify_false(bundle_copy):
    path = bundle_copy / "encoder.onnx"
    tampered = _flip_a_weight_byte(path.read_bytes())
    inspect_model(tampered)  # still a well-formed model
    path.write_bytes(tampered)
    message = load_error(bundle_copy)
    assert "sha256" in message and "modified" in message and "encoder.onnx" in message
    model = vaesdk.load(bundle_copy, device="cpu", verify=False)
    assert model.latent_dim == LATENT
    assert read_bundle(bundle_copy, verify=False).models["encoder"] == tampered
    assert read_bundle(bundle_copy, verify=False).models["encoder"] == tampered


def test_appended_bytes_fail_checksum(bundle_copy):
    path = bundle_copy / "decoder.onnx"
    appended = path.read_bytes() + pb_bytes(6, b"appended doc_string")  # a valid extra field
    path.write_bytes(appended)
    message = load_error(bundle_copy)
    # The size no longer matches the manifest, which is caught before hashing.
    assert "bytes" in message and "modified" in message and "decoder.onnx" in message
    assert read_bundle(bundle_copy, verify=False).models["decoder"] == appended


def test_verify_false_still_refuses_a_file_that_is_not_onnx(bundle_copy):
    (bundle_copy / "encoder.onnx").write_bytes(b"MZ\x90\x00 this is not an onnx model \x00\xff" * 50)
    with pytest.raises(BundleError, match="not a valid ONNX model"):
        read_bundle(bundle_copy, verify=False)
    assert "not a valid ONNX model" in load_error(bundle_copy, verify=False)


def test_verify_false_still_refuses_external_data(bundle_copy):
    (bundle_copy / "encoder.onnx").write_bytes(crafted_encoder(external="../../etc/passwd"))
    assert "external" in load_error(bundle_copy, verify=False)



# ---- files -------------------------------------------------------------------------------


def test_model_file_that_is_a_symlink_is_refused(bundle_copy, tmp_path):
    elsewhere = tmp_path / "elsewhere.onnx"
    shutil.copyfile(bundle_copy / "encoder.onnx", elsewhere)  # same bytes: the checksum matches
    (bundle_copy / "encoder.onnx").unlink()
    (bundle_copy / "encoder.onnx").symlink_to(elsewhere)
    message = load_error(bundle_copy)
    assert "symbolic link" in message and "encoder" in message


def test_manifest_that_is_a_symlink_is_refused(bundle_copy, tmp_path):
    elsewhere = tmp_path / "manifest-elsewhere.json"
    shutil.copyfile(bundle_copy / MANIFEST, elsewhere)
    (bundle_copy / MANIFEST).unlink()
    (bundle_copy / MANIFEST).symlink_to(elsewhere)
    message = load_error(bundle_copy)
    assert "symbolic link" in message and "manifest" in message


@pytest.mark.parametrize("name", ["manifest.json", "encoder.onnx", "decoder.onnx"])
def test_missing_file_is_named(bundle_copy, name):
    (bundle_copy / name).unlink()
    message = load_error(bundle_copy)
    assert name in message and "is missing" in message


def test_model_larger_than_the_cap_is_refused_before_reading(bundle_copy, monkeypatch):
    cap = 4096
    monkeypatch.setattr(vaesdk.bundle.reading, "MAX_MODEL_BYTES", cap)
    # The manifest claims a size within the cap; the file on disk is larger.
    rewrite_manifest(bundle_copy, lambda m: (m["encoder"].update(bytes=cap), m["decoder"].update(bytes=cap)))
    size = (bundle_copy / "encoder.onnx").stat().st_size
    assert size > cap
    message = load_error(bundle_copy)
    assert f"is {size} bytes; the limit is {cap}" in message  # the fstat check, not "grew past ... while being read"


def test_model_over_the_real_cap_is_not_read(bundle_copy):
    # A sparse file one byte over 512 MiB: refused from its size alone, nothing is read.
    os.truncate(bundle_copy / "decoder.onnx", vaesdk.bundle.format.MAX_MODEL_BYTES + 1)
    message = load_error(bundle_copy)
    assert f"is {vaesdk.bundle.format.MAX_MODEL_BYTES + 1} bytes; the limit is {vaesdk.bundle.format.MAX_MODEL_BYTES}" in message


def test_manifest_declaring_a_model_over_the_cap_is_refused(bundle_copy):
    rewrite_manifest(bundle_copy, lambda m: m["encoder"].update(bytes=vaesdk.bundle.format.MAX_MODEL_BYTES + 1))
    assert "encoder.bytes must be in 1.." in load_error(bundle_copy)


def test_directory_in_place_of_model_is_refused(bundle_copy):
    (bundle_copy / "decoder.onnx").unlink()
    (bundle_copy / "decoder.onnx").mkdir()
    message = load_error(bundle_copy)
    assert "decoder.onnx" in message and "not a regular file" in message


def test_named_pipe_in_place_of_model_is_refused_without_hanging(bundle_copy):
    fifo = bundle_copy / "decoder.onnx"
    fifo.unlink()
    os.mkfifo(fifo)
    outcome: list[BaseException | None] = []

    def attempt():
        try:
            read_bundle(bundle_copy)
            outcome.append(None)
        except BaseException as e:  # noqa: BLE001 - handed to the test thread
            outcome.append(e)

    worker = threading.Thread(target=attempt, daemon=True)
    worker.start()
    worker.join(20)
    if worker.is_alive():  # blocked opening the pipe: let it go, then fail
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        worker.join(5)
        pytest.fail("read_bundle blocked opening a named pipe")
    assert isinstance(outcome[0], BundleError), outcome
    assert "not a regular file" in str(outcome[0])


def test_bundle_path_that_is_a_file_is_refused(bundle_copy):
    with pytest.raises(BundleError, match="is not a directory"):
        read_bundle(bundle_copy / "encoder.onnx")



# ---- the graph contract ------------------------------------------------------------------


def test_encoder_in_the_decoders_place_is_refused(bundle_copy):
    swap_model(bundle_copy, "decoder", (bundle_copy / "encoder.onnx").read_bytes())
    message = load_error(bundle_copy)
    assert "contract" in message and "encoder in the decoder's place" in message and "decoder.onnx" in message


def test_crafted_decoder_with_the_right_latent_dim_loads(bundle_copy):
    swap_model(bundle_copy, "decoder", crafted_decoder(LATENT))
    assert vaesdk.load(bundle_copy, device="cpu").decode(np.zeros((1, LATENT), np.float32)).shape == (1, 28, 28, 1)


def test_decoder_with_another_latent_dim_is_refused(bundle_copy):
    swap_model(bundle_copy, "decoder", crafted_decoder(9))
    message = load_error(bundle_copy)
    assert "decoder.onnx input 'z' has shape ['N', 9]" in message and "['N', 8]" in message


def test_manifest_saying_latent_dim_9_over_the_tiny_ae_models_is_refused(tiny_ae_bundle, tmp_path):
    bundle = tmp_path / "ae"
    shutil.copytree(tiny_ae_bundle, bundle)

    def to_dim_9(m):
        m["latent"]["dim"] = 9
        m["latent"].pop("kl_per_dim", None)
        m["latent"].pop("gaussians", None)
        m.pop("directions", None)
        for role, sides in io_contract("ae", Geometry(1, 28, 28, 9)).items():
            m[role].update(sides)

    rewrite_manifest(bundle, to_dim_9)
    vaesdk.bundle.format.validate_manifest(read_manifest_json(bundle))  # the manifest itself is consistent
    message = load_error(bundle)
    assert "has shape ['N', 8]; the contract needs ['N', 9]" in message


def test_float16_input_is_refused(bundle_copy):
    swap_model(bundle_copy, "encoder", crafted_encoder(input_dtype=TensorProto.FLOAT16))
    message = load_error(bundle_copy)
    assert "input 'x' is float16; the contract needs float32" in message


def test_extra_graph_input_is_refused(bundle_copy):
    model = onnx.load_from_string(crafted_encoder())
    model.graph.input.append(vi("seed", [1]))
    swap_model(bundle_copy, "encoder", model.SerializeToString())
    assert "has inputs ['x', 'seed']" in load_error(bundle_copy)


@pytest.mark.parametrize("garbage", ["random", "truncated", "json", "zeros"])
def test_garbage_in_place_of_a_model_is_a_bundle_error(bundle_copy, garbage):
    real = (bundle_copy / "encoder.onnx").read_bytes()
    data = {
        "random": np.random.default_rng(7).bytes(4096),
        "truncated": real[: len(real) // 2],
        "json": (bundle_copy / MANIFEST).read_bytes(),
        "zeros": bytes(1000),
    }[garbage]
    swap_model(bundle_copy, "encoder", data)
    message = load_error(bundle_copy)
    assert "encoder.onnx" in message and "not a valid ONNX model" in message



# ---- loading never executes code ----------------------------------------------------------


def _string_leaves(node: Any, path: tuple = ()) -> list[tuple]:
    if isinstance(node, dict):
        return [p for k, v in node.items() for p in _string_leaves(v, path + (k,))]
    if isinstance(node, list):
        return [p for i, v in enumerate(node) for p in _string_leaves(v, path + (i,))]
    return [path] if isinstance(node, str) else []


def _set_leaf(data: Any, path: tuple, value: Any) -> None:
    for key in path[:-1]:
        data = data[key]
    data[path[-1]] = value


def test_manifest_strings_are_data_never_code(bundle_copy, tmp_path):
    marker = tmp_path / "pwned"
    payloads = [
        f"__import__('os').system('touch {marker}')",
        f"{{{{__import__('os').system('touch {marker}')}}}}",
        f"$(touch {marker})",
        f"`touch {marker}`",
    ]
    original = read_manifest_json(bundle_copy)
    leaves = _string_leaves(original)
    assert len(leaves) > 20
    accepted, refused = [], []
    for payload in payloads:
        for leaf in leaves:
            data = json.loads(json.dumps(original))
            _set_leaf(data, leaf, payload)
            (bundle_copy / MANIFEST).write_text(json.dumps(data))
            try:
                read_bundle(bundle_copy)
                accepted.append(leaf)
            except BundleError:
                refused.append(leaf)
        assert not marker.exists()
    # The checked fields refuse it; free text is kept as plain data.
    for leaf in [("format",), ("name",), ("kind",), ("encoder", "file"), ("encoder", "sha256"), ("decoder", "outputs", 0, "dtype")]:
        assert leaf in refused
    assert ("description",) in accepted and ("training", "command") in accepted

    # Every string at once: refused as data.
    everything = json.loads(json.dumps(original))
    for leaf in leaves:
        _set_leaf(everything, leaf, payloads[0])
    (bundle_copy / MANIFEST).write_text(json.dumps(everything))
    assert "format" in load_error(bundle_copy)

    # Every string the schema leaves free: loads, and the strings come back verbatim.
    free = json.loads(json.dumps(original))
    for leaf in set(accepted):
        _set_leaf(free, leaf, payloads[0])
    (bundle_copy / MANIFEST).write_text(json.dumps(free))
    model = vaesdk.load(bundle_copy, device="cpu")
    assert model.manifest.data["description"] == payloads[0]
    assert model.manifest.data["training"]["command"] == payloads[0]
    model.sample(2, seed=0)
    assert not marker.exists()


def _gaussian_mutation(field, value):
    def mutate(d):
        d["latent"]["gaussians"]["aggregate"][field] = value

    return mutate


@pytest.mark.parametrize(
    "mutate,needle",
    [
        (_gaussian_mutation("mean", [0.0] * 3), "latent.gaussians.aggregate.mean"),
        (_gaussian_mutation("cholesky", [1.0] * 10), "cholesky"),
        (_gaussian_mutation("cholesky", [0.0] * 36), "positive diagonal"),
        (lambda d: d["latent"]["gaussians"].__setitem__("standard", d["latent"]["gaussians"]["aggregate"]), "bad or repeated prior name 'standard'"),
    ],
)
def test_fitted_gaussians_are_validated(bundle_copy, mutate, needle):
    rewrite_manifest(bundle_copy, mutate)
    assert needle in load_error(bundle_copy)
