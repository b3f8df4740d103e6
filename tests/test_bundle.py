"""Loading model bundles safely: vaesdk.bundle, vaesdk.onnx_proto, vaesdk.registry, vaesdk.session.

Every bad input is built inside its test from the tiny real bundles (conftest) or crafted with
`onnx.helper`. Where a protection is tested, the bad input is otherwise acceptable (checksums
fixed up, graph contract met), so only that protection can stop it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
from pathlib import Path
from typing import Any, Callable

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.external_data_helper import set_external_data

import vaesdk
import vaesdk.bundle
import vaesdk.registry
import vaesdk.session
from vaesdk.bundle import MANIFEST, io_contract, read_bundle
from vaesdk.errors import BundleError, DeviceUnavailableError, InvalidArgumentError, ModelNotFoundError
from vaesdk.onnx_proto import MAX_DEPTH, TensorSpec, inspect_model

OPSET = 18
IR_VERSION = 10
LATENT = 8  # the tiny bundles' latent size
PIXELS = 28 * 28

# ---- helpers --------------------------------------------------------------------------------


def read_manifest_json(bundle: Path) -> dict[str, Any]:
    return json.loads((bundle / MANIFEST).read_text())


def rewrite_manifest(bundle: Path, mutate: Callable[[dict[str, Any]], Any]) -> None:
    """Apply `mutate` to the parsed manifest in place (its return value is ignored) and write
    it back as plain JSON (NaN/Infinity become JSON's literal tokens)."""
    data = read_manifest_json(bundle)
    mutate(data)
    (bundle / MANIFEST).write_text(json.dumps(data))


def swap_model(bundle: Path, role: str, data: bytes) -> None:
    """Put `data` in place of the role's model file and make the manifest's sha256/bytes match,
    so the checksum cannot be what refuses it."""
    (bundle / read_manifest_json(bundle)[role]["file"]).write_bytes(data)

    def fix(m: dict[str, Any]) -> None:
        m[role]["sha256"] = hashlib.sha256(data).hexdigest()
        m[role]["bytes"] = len(data)

    rewrite_manifest(bundle, fix)


def set_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    for key in parents:
        data = data[key]
    data[last] = value


def del_path(data: dict[str, Any], dotted: str) -> None:
    *parents, last = dotted.split(".")
    for key in parents:
        data = data[key]
    del data[last]


def load_error(path: Path, **kwargs: Any) -> str:
    """vaesdk.load must refuse the bundle with a BundleError; its message."""
    with pytest.raises(BundleError) as e:
        vaesdk.load(path, device="cpu", **kwargs)
    return str(e.value)


def make_external(tensor: TensorProto, location: str) -> TensorProto:
    """Turn a tensor holding raw_data into one that points at an external file."""
    set_external_data(tensor, location=location, offset=0, length=len(tensor.raw_data))
    tensor.ClearField("raw_data")
    assert tensor.data_location == TensorProto.EXTERNAL
    return tensor


def float_tensor(name: str, shape: tuple[int, ...], seed: int = 0) -> TensorProto:
    return numpy_helper.from_array(np.random.default_rng(seed).normal(0, 0.01, shape).astype(np.float32), name)


def vi(name: str, shape: list | None, dtype: int = TensorProto.FLOAT) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, dtype, shape)


def make_model(graph: onnx.GraphProto, functions: list[onnx.FunctionProto] = ()) -> bytes:
    opsets = [helper.make_opsetid("", OPSET)] + ([helper.make_opsetid("local", 1)] if functions else [])
    model = helper.make_model(graph, opset_imports=opsets, ir_version=IR_VERSION, functions=list(functions))
    return model.SerializeToString()


WEIGHT_SOURCES = ("initializer", "constant", "if", "function", "sparse")


def crafted_encoder(
    source: str = "initializer", external: str | None = None, input_dtype: int = TensorProto.FLOAT, latent: int = LATENT
) -> bytes:
    """An encoder meeting the tiny VAE's contract: x [N,1,28,28] -> mean, logvar [N, latent].

    Its weight W [784, latent] comes from `source`: a graph initializer, a Constant node's
    attribute, an If node's subgraph initializer, a model-local function's attribute default,
    or a sparse initializer. With `external`, that tensor's data lives at that location.
    """
    w = float_tensor("W", (PIXELS, latent))
    if external:
        make_external(w, external)
    nodes, inits, sparse, functions = [], [], [], []
    if source == "initializer":
        inits.append(w)
    elif source == "constant":
        w.name = ""
        nodes.append(helper.make_node("Constant", [], ["W"], value=w))
    elif source == "if":
        inits.append(numpy_helper.from_array(np.array(True), "cond"))
        w.name = "W_then"
        then_g = helper.make_graph([helper.make_node("Identity", ["W_then"], ["W_out"])], "then", [], [vi("W_out", None)], [w])
        else_w = float_tensor("", (PIXELS, latent), seed=1)
        else_g = helper.make_graph([helper.make_node("Constant", [], ["W_else"], value=else_w)], "else", [], [vi("W_else", None)])
        nodes.append(helper.make_node("If", ["cond"], ["W"], then_branch=then_g, else_branch=else_g))
    elif source == "function":
        w.name = ""
        const = helper.make_node("Constant", [], ["out"])
        attr = const.attribute.add()
        attr.name, attr.ref_attr_name, attr.type = "value", "weights", onnx.AttributeProto.TENSOR
        functions.append(
            helper.make_function(
                "local", "Weights", [], ["out"], [const], [helper.make_opsetid("", OPSET)],
                attribute_protos=[helper.make_attribute("weights", w)],
            )
        )
        nodes.append(helper.make_node("Weights", [], ["W"], domain="local"))
    elif source == "sparse":
        values = numpy_helper.from_array(np.full(2, 0.5, np.float32), "W")
        if external:
            make_external(values, external)
        indices = numpy_helper.from_array(np.array([0, 5], np.int64), "")
        sparse.append(helper.make_sparse_tensor(values, indices, [PIXELS, latent]))
    else:
        raise AssertionError(source)
    x_float = "x"
    if input_dtype != TensorProto.FLOAT:
        nodes.append(helper.make_node("Cast", ["x"], ["x_float"], to=TensorProto.FLOAT))
        x_float = "x_float"
    nodes += [
        helper.make_node("Flatten", [x_float], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "W"], ["mean"]),
        helper.make_node("Identity", ["mean"], ["logvar"]),
    ]
    graph = helper.make_graph(
        nodes,
        "crafted_encoder",
        [vi("x", ["N", 1, 28, 28], input_dtype)],
        [vi("mean", ["N", latent]), vi("logvar", ["N", latent])],
        inits,
        sparse_initializer=sparse,
    )
    return make_model(graph, functions)


def crafted_decoder(latent: int = LATENT) -> bytes:
    """A decoder z [N, latent] -> mean, logvar [N, 1, 28, 28]."""
    nodes = [
        helper.make_node("MatMul", ["z", "W"], ["flat"]),
        helper.make_node("Reshape", ["flat", "shape"], ["mean"]),
        helper.make_node("Identity", ["mean"], ["logvar"]),
    ]
    inits = [float_tensor("W", (latent, PIXELS)), numpy_helper.from_array(np.array([-1, 1, 28, 28], np.int64), "shape")]
    graph = helper.make_graph(
        nodes, "crafted_decoder", [vi("z", ["N", latent])], [vi("mean", ["N", 1, 28, 28]), vi("logvar", ["N", 1, 28, 28])], inits
    )
    return make_model(graph)


def nested_if_model(levels: int, innermost: TensorProto) -> bytes:
    """A model whose graph nests `levels` If nodes, each in the previous one's then_branch;
    the innermost graph holds a Constant with `innermost`. Built in place: helper.make_graph
    copies its nodes, and protobuf refuses to copy messages nested this deep."""
    graph = helper.make_graph([], "g0", [vi("c", [], TensorProto.BOOL)], [vi("v", None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION)
    graph = model.graph
    for i in range(levels):
        node = helper.make_node("If", ["c"], ["v"])
        node.attribute.append(
            helper.make_attribute(
                "else_branch",
                helper.make_graph(
                    [helper.make_node("Constant", [], ["v"], value=numpy_helper.from_array(np.zeros(1, np.float32)))],
                    f"else{i}", [], [vi("v", None)],
                ),
            )
        )
        graph.node.append(node)
        then = graph.node[-1].attribute.add()
        then.name, then.type = "then_branch", onnx.AttributeProto.GRAPH
        graph = then.g
        graph.name = f"then{i}"
        graph.output.append(vi("v", None))
    graph.node.append(helper.make_node("Constant", [], ["v"], value=innermost))
    return model.SerializeToString()


# Hand-written protobuf wire format, for malformed models onnx itself would not write.
def pb_varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def pb_int(num: int, value: int) -> bytes:
    return pb_varint(num << 3) + pb_varint(value)


def pb_bytes(num: int, payload: bytes) -> bytes:
    return pb_varint(num << 3 | 2) + pb_varint(len(payload)) + payload


def pb_model(graph: bytes, opset: bytes = pb_int(2, OPSET)) -> bytes:
    """ModelProto: ir_version (1), opset_import (8), graph (7)."""
    return pb_int(1, IR_VERSION) + pb_bytes(8, opset) + pb_bytes(7, graph)


# ---- 1. good bundles ------------------------------------------------------------------------


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


# ---- 2. manifest schema ---------------------------------------------------------------------


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
    rewrite_manifest(bundle_copy, lambda m: set_path(m, "format_version", vaesdk.bundle.FORMAT_VERSION + 1))
    message = load_error(bundle_copy)
    assert f"format_version {vaesdk.bundle.FORMAT_VERSION + 1}" in message and "upgrade vaesdk" in message


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


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity", "1" + "0" * 400, '"0.5"', "true", "null"])
def test_manifest_direction_vector_must_hold_finite_numbers(bundle_copy, token):
    data = read_manifest_json(bundle_copy)
    data["directions"]["sandal"]["vector"][3] = "@TOKEN@"
    text = json.dumps(data, allow_nan=False).replace('"@TOKEN@"', token)
    assert f", {token}," in text
    (bundle_copy / MANIFEST).write_text(text)
    message = load_error(bundle_copy)
    assert "directions.sandal.vector must hold finite numbers" in message
    assert len(message) < 300  # a 401-digit number is not echoed whole


def test_manifest_kl_per_dim_with_nan_is_refused(bundle_copy):
    rewrite_manifest(bundle_copy, lambda m: set_path(m, "latent.kl_per_dim", [float("nan")] * LATENT))
    assert "NaN" in (bundle_copy / MANIFEST).read_text()
    assert "latent.kl_per_dim must hold finite numbers" in load_error(bundle_copy)


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


# ---- 3. checksums ---------------------------------------------------------------------------


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


# ---- 4. files -------------------------------------------------------------------------------


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
    monkeypatch.setattr(vaesdk.bundle, "MAX_MODEL_BYTES", cap)
    # The manifest claims a size within the cap; the file on disk is larger.
    rewrite_manifest(bundle_copy, lambda m: (m["encoder"].update(bytes=cap), m["decoder"].update(bytes=cap)))
    size = (bundle_copy / "encoder.onnx").stat().st_size
    assert size > cap
    message = load_error(bundle_copy)
    assert f"is {size} bytes; the limit is {cap}" in message  # the fstat check, not "grew past ... while being read"


def test_model_over_the_real_cap_is_not_read(bundle_copy):
    # A sparse file one byte over 512 MiB: refused from its size alone, nothing is read.
    os.truncate(bundle_copy / "decoder.onnx", vaesdk.bundle.MAX_MODEL_BYTES + 1)
    message = load_error(bundle_copy)
    assert f"is {vaesdk.bundle.MAX_MODEL_BYTES + 1} bytes; the limit is {vaesdk.bundle.MAX_MODEL_BYTES}" in message


def test_manifest_declaring_a_model_over_the_cap_is_refused(bundle_copy):
    rewrite_manifest(bundle_copy, lambda m: m["encoder"].update(bytes=vaesdk.bundle.MAX_MODEL_BYTES + 1))
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


# ---- 5. external data -----------------------------------------------------------------------


@pytest.mark.parametrize("source", WEIGHT_SOURCES)
def test_crafted_encoders_without_external_data_load(bundle_copy, source):
    # The control for the external-data tests: the same models with inline weights pass
    # every check and run, so only the external-data check can refuse their twins below.
    data = crafted_encoder(source)
    assert inspect_model(data).external_tensors == []
    swap_model(bundle_copy, "encoder", data)
    model = vaesdk.load(bundle_copy, device="cpu")
    assert read_bundle(bundle_copy).models["encoder"] == data
    post = model.encode(np.zeros((2, 28, 28, 1), np.uint8))
    assert np.asarray(post.mean).shape == (2, LATENT)


EXTERNAL_CASES = [
    ("initializer", "../../etc/passwd"),
    ("initializer", "/etc/passwd"),
    ("constant", "../../etc/passwd"),
    ("constant", "/etc/passwd"),
    ("if", "../../etc/passwd"),
    ("function", "../../etc/passwd"),
    ("sparse", "/etc/passwd"),
]


@pytest.mark.parametrize("source, location", EXTERNAL_CASES)
def test_inspect_model_lists_external_tensors(source, location):
    info = inspect_model(crafted_encoder(source, external=location))
    assert len(info.external_tensors) == 1, info.external_tensors
    assert info.external_tensors[0].split(":")[0] in ("initializer", "attribute", "sparse initializer")


@pytest.mark.parametrize("source, location", EXTERNAL_CASES)
def test_external_data_is_refused_before_onnxruntime_sees_the_model(bundle_copy, monkeypatch, source, location):
    data = crafted_encoder(source, external=location)
    swap_model(bundle_copy, "encoder", data)  # checksum and contract both fine
    sessions = []
    monkeypatch.setattr(onnxruntime, "InferenceSession", lambda *a, **k: sessions.append(a) or pytest.fail("session created"))
    message = load_error(bundle_copy)
    assert "external" in message and "encoder.onnx" in message
    assert sessions == []


def test_external_data_in_decoder_is_refused(bundle_copy):
    model = onnx.load_from_string(crafted_decoder())
    make_external(model.graph.initializer[0], "weights.bin")
    (bundle_copy / "weights.bin").write_bytes(b"\x00" * LATENT * PIXELS * 4)  # would even be found
    swap_model(bundle_copy, "decoder", model.SerializeToString())
    message = load_error(bundle_copy)
    assert "external" in message and "decoder.onnx" in message


# ---- 6. the graph contract ------------------------------------------------------------------


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
        for role, sides in io_contract("ae", 1, 28, 9).items():
            m[role].update(sides)

    rewrite_manifest(bundle, to_dim_9)
    vaesdk.bundle.validate_manifest(read_manifest_json(bundle))  # the manifest itself is consistent
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


# ---- 7. the protobuf reader -----------------------------------------------------------------


def test_inspect_model_reads_the_real_encoder(tiny_vae_bundle):
    info = inspect_model((tiny_vae_bundle / "encoder.onnx").read_bytes())
    assert len(info.inputs) == 1
    (x,) = info.inputs
    assert (x.name, x.dtype, x.shape[1:]) == ("x", "float32", (1, 28, 28))
    assert isinstance(x.shape[0], str)  # the symbolic batch axis
    assert [(t.name, t.dtype, t.shape[1:]) for t in info.outputs] == [("mean", "float32", (LATENT,)), ("logvar", "float32", (LATENT,))]
    assert info.external_tensors == []
    assert info.ir_version >= 7 and info.opsets.get("ai.onnx", 0) >= 13
    assert info.initializer_names  # the weights are inside the file


def test_inspect_model_reads_crafted_io():
    info = inspect_model(crafted_encoder(input_dtype=TensorProto.FLOAT16, latent=5))
    assert info.inputs == [TensorSpec("x", "float16", ("N", 1, 28, 28))]
    assert info.outputs == [TensorSpec("mean", "float32", ("N", 5)), TensorSpec("logvar", "float32", ("N", 5))]
    assert info.opsets == {"ai.onnx": OPSET} and info.ir_version == IR_VERSION


_GOOD_GRAPH = pb_bytes(12, pb_bytes(1, b"y"))  # a graph with one output named y
_VALID = pb_model(_GOOD_GRAPH)  # a readable model; the cases below append to it


def pb_input_x(dim: bytes) -> bytes:
    """ValueInfoProto x: float32 with one dimension (a TensorShapeProto.Dimension's fields)."""
    return pb_bytes(1, b"x") + pb_bytes(2, pb_bytes(1, pb_int(1, 1) + pb_bytes(2, pb_bytes(1, dim))))


_VI_X = pb_input_x(pb_int(1, 28))  # x: float32 [28]


def test_hand_written_protobuf_helpers_make_a_readable_model():
    # The control for the malformed cases: the same helpers write models the reader accepts,
    # also with an unknown field 15 appended (which the malformed cases then break).
    assert [t.name for t in inspect_model(_VALID).outputs] == ["y"]
    info = inspect_model(pb_model(pb_bytes(11, _VI_X) + _GOOD_GRAPH) + pb_int(15, 3) + pb_bytes(15, b"abc"))
    assert info.inputs == [TensorSpec("x", "float32", (28,))] and [t.name for t in info.outputs] == ["y"]
    assert info.opsets == {"ai.onnx": OPSET} and info.ir_version == IR_VERSION


@pytest.mark.parametrize(
    "data, problem",
    [
        pytest.param(b"", "no graph or IR version", id="empty"),
        pytest.param(pb_int(1, IR_VERSION), "no graph or IR version", id="no-graph"),
        pytest.param(pb_bytes(7, _GOOD_GRAPH), "no graph or IR version", id="no-ir-version"),
        pytest.param(_VALID + b"\x78\x80", "truncated or overlong varint", id="truncated-varint"),
        pytest.param(_VALID + b"\x78" + b"\xff" * 11 + b"\x01", "truncated or overlong varint", id="overlong-varint"),
        pytest.param(_VALID + b"\x7a\x10abc", "runs past the end", id="length-past-end"),
        pytest.param(pb_int(1, IR_VERSION) + pb_bytes(7, _GOOD_GRAPH + b"\x0a\x05ab"), "runs past the end", id="nested-length-past-end"),
        pytest.param(_VALID + b"\x79\x01\x02", "runs past the end", id="truncated-fixed64"),
        pytest.param(_VALID + b"\x7d\x01", "runs past the end", id="truncated-fixed32"),
        pytest.param(_VALID + b"\x7b", "wire type 3", id="wire-type-3-group-start"),
        pytest.param(_VALID + b"\x7c", "wire type 4", id="wire-type-4-group-end"),
        pytest.param(_VALID + b"\x7e", "wire type 6", id="wire-type-6"),
        # A number where the schema has bytes, and the reverse (bytes(2**62) would not end well):
        pytest.param(pb_model(pb_bytes(11, pb_int(1, 1 << 62)) + _GOOD_GRAPH), "string field holds a number", id="input-name-as-huge-number"),
        pytest.param(pb_model(_GOOD_GRAPH + pb_bytes(5, pb_int(8, 1 << 62))), "string field holds a number", id="initializer-name-as-number"),
        pytest.param(pb_model(_GOOD_GRAPH, opset=pb_int(1, 1 << 62)), "string field holds a number", id="opset-domain-as-number"),
        pytest.param(pb_model(_GOOD_GRAPH, opset=pb_bytes(2, b"18")), "number field holds bytes", id="opset-version-as-bytes"),
        pytest.param(
            pb_model(pb_bytes(11, pb_input_x(pb_bytes(1, b"28"))) + _GOOD_GRAPH),
            "number field holds bytes",
            id="dim-value-as-bytes",
        ),
    ],
)
def test_inspect_model_refuses_malformed_protobuf(data, problem):
    with pytest.raises(BundleError) as e:
        inspect_model(data, "crafted.onnx")
    assert "crafted.onnx is not a valid ONNX model" in str(e.value) and problem in str(e.value)


@pytest.mark.parametrize("marker", ["data_location", "external_data"])
def test_inspect_model_flags_either_external_marker_alone(marker):
    # set_external_data writes both markers; each one alone must be enough.
    model = onnx.load_from_string(crafted_encoder())
    tensor = model.graph.initializer[0]
    if marker == "data_location":
        tensor.data_location = TensorProto.EXTERNAL
    else:
        entry = tensor.external_data.add()
        entry.key, entry.value = "location", "/etc/passwd"
    tensor.ClearField("raw_data")
    assert inspect_model(model.SerializeToString()).external_tensors == ["initializer:W"]


def test_inspect_model_walks_nested_graphs_up_to_max_depth():
    hidden = make_external(float_tensor("", (4,)), "/etc/passwd")
    info = inspect_model(nested_if_model(MAX_DEPTH, hidden))
    assert info.external_tensors == ["attribute:<unnamed>"]


def test_inspect_model_refuses_graphs_nested_beyond_max_depth():
    data = nested_if_model(MAX_DEPTH + 1, float_tensor("", (4,)))
    with pytest.raises(BundleError, match=f"nested deeper than {MAX_DEPTH}"):
        inspect_model(data)


def test_inspect_model_survives_pathological_nesting():
    # 2,000 levels written by hand, past Python's recursion limit: refused, no RecursionError.
    graph = _GOOD_GRAPH
    for _ in range(2_000):
        if_node = pb_bytes(4, b"If") + pb_bytes(5, pb_bytes(1, b"then_branch") + pb_bytes(6, graph))
        graph = pb_bytes(1, if_node)
    with pytest.raises(BundleError, match="nested deeper"):
        inspect_model(pb_model(graph))


# ---- 8. the registry ------------------------------------------------------------------------


def test_list_models_returns_names():
    names = vaesdk.list_models()
    assert isinstance(names, list) and all(isinstance(n, str) for n in names)
    assert names == sorted(names)


def test_unknown_model_name_lists_the_known_ones():
    with pytest.raises(ModelNotFoundError) as e:
        vaesdk.load("no-such-model", device="cpu")
    message = str(e.value)
    assert "'no-such-model'" in message and "bundled models:" in message
    for name in vaesdk.list_models():
        assert name in message
    if not vaesdk.list_models():
        assert "(none installed)" in message


@pytest.mark.parametrize("as_str", [True, False])
def test_path_to_a_missing_folder_is_model_not_found(tmp_path, as_str):
    missing = tmp_path / "nowhere" / "bundle"
    with pytest.raises(ModelNotFoundError) as e:
        vaesdk.load(str(missing) if as_str else missing, device="cpu")
    assert f"no bundle at {missing}" in str(e.value)


def test_folder_without_a_manifest_is_a_bundle_error(tmp_path):
    with pytest.raises(BundleError) as e:
        vaesdk.load(tmp_path, device="cpu")
    assert not isinstance(e.value, ModelNotFoundError)
    assert "manifest" in str(e.value) and "is missing" in str(e.value)


def test_manifest_path_itself_resolves_to_its_bundle(tiny_vae_bundle):
    manifest = tiny_vae_bundle / MANIFEST
    assert vaesdk.registry.resolve(str(manifest)) == tiny_vae_bundle
    model = vaesdk.load(str(manifest), device="cpu")
    assert model.path == tiny_vae_bundle and model.latent_dim == LATENT


# ---- 9. sessions and devices ----------------------------------------------------------------


@pytest.fixture(scope="module")
def encoder_bytes(tiny_vae_bundle) -> bytes:
    return (tiny_vae_bundle / "encoder.onnx").read_bytes()


@pytest.mark.parametrize("device", ["tpu", "cuda:x", "cuda:", "CUDA", "gpu", "", "cpu\n", "cuda:0\n", "cuda:\u0663", None, 0])
def test_create_graph_rejects_unknown_devices(encoder_bytes, device):
    with pytest.raises(InvalidArgumentError) as e:
        vaesdk.session.create_graph(encoder_bytes, device=device)
    assert "device must be 'auto', 'cpu', 'cuda' or 'cuda:N'" in str(e.value) and repr(device) in str(e.value)


@pytest.mark.parametrize("threads", [-1, 1.5, True, "2"])
def test_create_graph_rejects_bad_thread_counts(encoder_bytes, threads):
    with pytest.raises(InvalidArgumentError, match="threads must be a non-negative integer"):
        vaesdk.session.create_graph(encoder_bytes, device="cpu", threads=threads)


def test_create_graph_cpu(encoder_bytes):
    graph = vaesdk.session.create_graph(encoder_bytes, device="cpu", threads=1)
    assert graph.device == "cpu" and graph.providers == ["CPUExecutionProvider"] and graph.input_name == "x"
    mean, logvar = graph.run(np.zeros((3, 1, 28, 28), np.float32))
    assert mean.shape == logvar.shape == (3, LATENT)


def test_create_graph_cuda_runs_on_cuda_or_says_how_to_get_it(encoder_bytes):
    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        with pytest.raises(DeviceUnavailableError) as e:
            vaesdk.session.create_graph(encoder_bytes, device="cuda")
        message = str(e.value)
        assert "'cuda'" in message and "onnxruntime-gpu" in message and "--device cpu" in message
    else:
        graph = vaesdk.session.create_graph(encoder_bytes, device="cuda")
        assert graph.device == "cuda"
        assert graph.session.get_providers()[0] == "CUDAExecutionProvider"


def test_load_with_cuda_runs_on_cuda_or_raises_device_unavailable(tiny_vae_bundle):
    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        with pytest.raises(DeviceUnavailableError, match="onnxruntime-gpu"):
            vaesdk.load(tiny_vae_bundle, device="cuda")
    else:
        assert vaesdk.load(tiny_vae_bundle, device="cuda").device == "cuda"


def test_create_graph_auto_uses_cuda_only_when_it_exists(encoder_bytes):
    graph = vaesdk.session.create_graph(encoder_bytes, device="auto")
    expected = "cuda" if "CUDAExecutionProvider" in onnxruntime.get_available_providers() else "cpu"
    assert graph.device == expected
    assert graph.session.get_providers()[0] == ("CUDAExecutionProvider" if expected == "cuda" else "CPUExecutionProvider")


@pytest.fixture
def cuda_that_silently_falls_back(monkeypatch) -> list:
    """onnxruntime claims CUDA, but every session it makes runs on the CPU only."""
    real = onnxruntime.InferenceSession
    requested: list = []

    class CpuOnlySession:
        def __init__(self, model, sess_options=None, providers=None, **kwargs):
            requested.append(list(providers))
            self._inner = real(model, sess_options=sess_options, providers=["CPUExecutionProvider"])

        def get_providers(self):
            return ["CPUExecutionProvider"]

        def __getattr__(self, name):
            return getattr(self._inner, name)

    monkeypatch.setattr(vaesdk.session, "available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(onnxruntime, "InferenceSession", CpuOnlySession)
    return requested


def test_silent_cuda_fallback_is_an_error_for_device_cuda(encoder_bytes, cuda_that_silently_falls_back):
    with pytest.raises(DeviceUnavailableError) as e:
        vaesdk.session.create_graph(encoder_bytes, device="cuda:0")
    assert "did not start" in str(e.value) and "--device cpu" in str(e.value)
    (attempt,) = cuda_that_silently_falls_back
    assert attempt[0][0] == "CUDAExecutionProvider" and attempt[0][1]["device_id"] == "0"


def test_silent_cuda_fallback_gives_cpu_for_device_auto(encoder_bytes, cuda_that_silently_falls_back):
    graph = vaesdk.session.create_graph(encoder_bytes, device="auto")
    assert graph.device == "cpu"
    assert cuda_that_silently_falls_back[0][0][0] == "CUDAExecutionProvider"
    assert cuda_that_silently_falls_back[-1] == ["CPUExecutionProvider"]
    assert graph.run(np.zeros((1, 1, 28, 28), np.float32))[0].shape == (1, LATENT)


def test_silent_cuda_fallback_through_load(tiny_vae_bundle, cuda_that_silently_falls_back):
    with pytest.raises(DeviceUnavailableError):
        vaesdk.load(tiny_vae_bundle, device="cuda")
    assert vaesdk.load(tiny_vae_bundle, device="auto").device == "cpu"


def test_onnxruntime_failure_is_a_bundle_error(bundle_copy):
    # Passes every static check, but onnxruntime cannot build it (an operator that does not exist).
    model = onnx.load_from_string(crafted_encoder())
    model.graph.node[-1].op_type = "NoSuchOperator"
    swap_model(bundle_copy, "encoder", model.SerializeToString())
    assert "onnxruntime could not load" in load_error(bundle_copy)


# ---- 10. loading never executes code ----------------------------------------------------------


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
        (lambda d: d["latent"]["gaussians"].__setitem__("standard", d["latent"]["gaussians"]["aggregate"]), "bad name"),
    ],
)
def test_fitted_gaussians_are_validated(bundle_copy, mutate, needle):
    rewrite_manifest(bundle_copy, mutate)
    assert needle in load_error(bundle_copy)
