"""The protobuf reader that inspects ONNX files before onnxruntime sees them
(vaesdk.bundle.onnx_proto): external data wherever it hides, nesting limits, malformed input.
"""

from __future__ import annotations

import pytest

# Needs onnx (the train extra): marked, and skipped at collection where it is absent.
pytestmark = pytest.mark.train
pytest.importorskip("onnx")

import numpy as np
import onnx
import onnxruntime
from crafted import (
    IR_VERSION,
    LATENT,
    OPSET,
    PIXELS,
    WEIGHT_SOURCES,
    crafted_decoder,
    crafted_encoder,
    float_tensor,
    load_error,
    make_external,
    nested_if_model,
    pb_bytes,
    pb_int,
    pb_model,
    swap_model,
)
from onnx import TensorProto

import vaesdk
import vaesdk.bundle.format
import vaesdk.bundle.registry
import vaesdk.runtime.session
from vaesdk.bundle.reading import read_bundle
from vaesdk.base.errors import BundleError
from vaesdk.bundle.onnx_proto import MAX_DEPTH, TensorSpec, inspect_model

# ---- external data -----------------------------------------------------------------------


@pytest.mark.parametrize("source", WEIGHT_SOURCES)
def test_crafted_encoders_without_external_data_load(bundle_copy, source):
    # The control for the external-data tests: the same models with inline weights pass
    # every check and run, so only the external-data check can refuse their twins below.
    data = crafted_encoder(source)
    assert inspect_model(data).external_tensors == []
    swap_model(bundle_copy, "encoder", data)
    if source in ("if", "function"):  # control flow and local functions are refused, by the operator check
        with pytest.raises(BundleError, match="uses operator If|defines model-local functions"):
            vaesdk.load(bundle_copy, device="cpu")
        return
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



# ---- the protobuf reader -----------------------------------------------------------------


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


# ---- cutting a graph to the outputs a call needs ----------------------------------------


def _node_count(data: bytes) -> int:
    return len(onnx.load_from_string(data).graph.node)


def test_keep_outputs_gives_the_same_mean_with_fewer_nodes():
    from vaesdk.bundle.onnx_proto import keep_outputs
    from vaesdk.bundle.registry import resolve

    data = (resolve("fashion-mnist") / "decoder.onnx").read_bytes()
    cut = keep_outputs(data, ["mean"])
    assert [t.name for t in inspect_model(cut).outputs] == ["mean"]
    assert _node_count(cut) < _node_count(data)
    onnx.checker.check_model(onnx.load_from_string(cut), full_check=True)
    z = np.random.default_rng(0).standard_normal((5, 64), dtype=np.float32)
    run = lambda d: onnxruntime.InferenceSession(d, providers=["CPUExecutionProvider"]).run(["mean"], {"z": z})[0]  # noqa: E731
    assert np.array_equal(run(cut), run(data))


def test_keep_outputs_drops_the_weights_only_other_outputs_use():
    from vaesdk.bundle.onnx_proto import keep_outputs

    x = onnx.helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    outs = [onnx.helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 4]) for n in ("a", "b")]
    wa, wb = float_tensor("wa", (4, 4)), float_tensor("wb", (4, 4), seed=1)
    nodes = [onnx.helper.make_node("MatMul", ["x", "wa"], ["a"]), onnx.helper.make_node("MatMul", ["x", "wb"], ["b"])]
    graph = onnx.helper.make_graph(nodes, "g", [x], outs, [wa, wb])
    data = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", OPSET)], ir_version=IR_VERSION).SerializeToString()
    cut = onnx.load_from_string(keep_outputs(data, ["a"]))
    assert [n.output[0] for n in cut.graph.node] == ["a"]
    assert [t.name for t in cut.graph.initializer] == ["wa"]
    assert [o.name for o in cut.graph.output] == ["a"]
    assert keep_outputs(data, ["a", "b"]) is data  # nothing to drop: the same bytes


def test_keep_outputs_leaves_graphs_with_subgraphs_whole():
    from vaesdk.bundle.onnx_proto import keep_outputs

    data = nested_if_model(2, float_tensor("c", (1,)))
    assert keep_outputs(data, ["nothing"]) is data
