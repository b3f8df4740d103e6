"""ONNX models and bundles built inside tests: helpers shared by the bundle, ONNX-reader,
session and distribution tests.

Models are written with `onnx.helper` (or, for malformed ones, the protobuf wire format by
hand); bundles are copies of the committed tiny bundles with a model swapped in and the
manifest's checksums fixed up, so only the protection under test can refuse them.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.external_data_helper import set_external_data

import vaesdk
from vaesdk.bundle.format import MANIFEST
from vaesdk.base.errors import BundleError

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



def _affine_gaussian_graph(name: str, x: str, x_shape: list, w: np.ndarray, b: np.ndarray, logvar: np.ndarray,
                           out_shape: list) -> bytes:  # fmt: skip
    """mean = reshape(flatten(x) @ w + b), logvar = reshape(flatten(x) @ 0 + logvar): a Gaussian
    whose mean is affine in the input and whose log-variance is fixed, known exactly."""
    nodes = [
        helper.make_node("Flatten", [x], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "W"], ["wx"]),
        helper.make_node("Add", ["wx", "b"], ["mean_flat"]),
        helper.make_node("MatMul", ["flat", "zero"], ["zx"]),
        helper.make_node("Add", ["zx", "lv"], ["logvar_flat"]),
        helper.make_node("Reshape", ["mean_flat", "shape"], ["mean"]),
        helper.make_node("Reshape", ["logvar_flat", "shape"], ["logvar"]),
    ]
    inits = [
        numpy_helper.from_array(np.asarray(w, np.float32), "W"),
        numpy_helper.from_array(np.asarray(b, np.float32).ravel(), "b"),
        numpy_helper.from_array(np.zeros_like(np.asarray(w, np.float32)), "zero"),
        numpy_helper.from_array(np.asarray(logvar, np.float32).ravel(), "lv"),
        numpy_helper.from_array(np.array([-1, *out_shape[1:]], np.int64), "shape"),
    ]
    graph = helper.make_graph(nodes, name, [vi(x, x_shape)], [vi("mean", out_shape), vi("logvar", out_shape)], inits)
    return make_model(graph)


def affine_encoder(w: np.ndarray, b: np.ndarray, logvar: np.ndarray) -> bytes:
    """q(z|x) = N(flatten(x) @ w + b, diag(exp(logvar))) for x [N, 1, 28, 28] in [0, 1];
    w [784, D], b and logvar [D]."""
    return _affine_gaussian_graph("affine_encoder", "x", ["N", 1, 28, 28], w, b, logvar, ["N", w.shape[1]])


def affine_decoder(w: np.ndarray, b: np.ndarray, logvar: np.ndarray) -> bytes:
    """p(x|z) per pixel = N(z @ w + b, exp(logvar)) for z [N, D]; w [D, 784], b and logvar
    [784] in [0, 1] pixel units (row-major over 28 x 28)."""
    return _affine_gaussian_graph("affine_decoder", "z", ["N", w.shape[0]], w, b, logvar, ["N", 1, 28, 28])


def bundle_with(source: Path, dest: Path, **models: bytes) -> Path:
    """A copy of the bundle `source` at `dest` with models swapped in by role
    (encoder=..., decoder=...), checksums fixed up."""
    shutil.copytree(source, dest)
    for role, data in models.items():
        swap_model(dest, role, data)
    return dest
