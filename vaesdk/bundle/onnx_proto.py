"""A small reader of the ONNX protobuf wire format: graph inputs/outputs, opsets, and every
tensor that asks for external data.

The runtime checks a model file before onnxruntime sees it, without depending on the
`onnx` package. It walks every place a tensor can hide (initializers, sparse initializers,
node attributes, nested graphs of If/Loop/Scan, model-local functions), so a file that
points its weights at another file is caught wherever it does so.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..base.errors import BundleError

ELEM_TYPES = {1: "float32", 2: "uint8", 3: "int8", 5: "int16", 6: "int32", 7: "int64", 9: "bool", 10: "float16", 11: "float64", 16: "bfloat16"}
MAX_DEPTH = 64

# Field numbers from onnx.proto3.
_MODEL_IR_VERSION, _MODEL_PRODUCER_NAME, _MODEL_PRODUCER_VERSION, _MODEL_GRAPH, _MODEL_OPSET, _MODEL_FUNCTIONS = 1, 2, 3, 7, 8, 25
_GRAPH_NODE, _GRAPH_INITIALIZER, _GRAPH_INPUT, _GRAPH_OUTPUT, _GRAPH_SPARSE_INIT = 1, 5, 11, 12, 15
_NODE_ATTRIBUTE, _NODE_OP_TYPE, _NODE_DOMAIN = 5, 4, 7
_TENSOR_DIMS, _TENSOR_DATA_TYPE, _TENSOR_INT64_DATA, _TENSOR_RAW_DATA = 1, 2, 7, 9
_INT64 = 7
MAX_SHAPE_CONSTANT = 16  # elements: int64 tensors up to this size are kept as possible shapes
SIZED_OPS = {"Expand": (1,), "Tile": (1,), "ConstantOfShape": (0,), "Resize": (3,)}
_ATTR_TENSOR, _ATTR_GRAPH, _ATTR_TENSORS, _ATTR_GRAPHS, _ATTR_SPARSE, _ATTR_SPARSES = 5, 6, 10, 11, 22, 23
_FUNCTION_NODE, _FUNCTION_ATTRIBUTE_PROTO = 7, 11
_TENSOR_NAME, _TENSOR_EXTERNAL_DATA, _TENSOR_DATA_LOCATION = 8, 13, 14
_SPARSE_VALUES, _SPARSE_INDICES = 1, 2


@dataclass(frozen=True)
class TensorSpec:
    """A graph input or output: name, element type, and shape (int, or str for a symbolic dim)."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]


@dataclass
class ModelInfo:
    ir_version: int = 0
    producer: str = ""
    opsets: dict[str, int] = field(default_factory=dict)
    inputs: list[TensorSpec] = field(default_factory=list)
    outputs: list[TensorSpec] = field(default_factory=list)
    initializer_names: set[str] = field(default_factory=set)
    external_tensors: list[str] = field(default_factory=list)
    # Every operator the model runs, as "op" (the default domain) or "domain:op", in the
    # main graph, nested graphs and model-local functions; and the names of those functions.
    operators: set[str] = field(default_factory=set)
    functions: list[str] = field(default_factory=list)
    # (op, input names) of the nodes whose output size an input decides (Expand, Tile, ...).
    sized_nodes: list[tuple[str, list[str]]] = field(default_factory=list)
    # Small int64 tensors by name (initializers and Constant nodes): the shapes those inputs hold.
    int_constants: dict[str, list[int]] = field(default_factory=dict)


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ValueError("truncated or overlong varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _spans(buf: memoryview):
    """Yield (field_number, value, start, end) for one message; value is int or memoryview
    (bytes), buf[start:end] the whole field with its key."""
    pos, end = 0, len(buf)
    while pos < end:
        start = pos
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 2:
            length, pos = _varint(buf, pos)
            if pos + length > end:
                raise ValueError("length-delimited field runs past the end of its message")
            value, pos = buf[pos : pos + length], pos + length
        elif wire == 1:
            value, pos = int.from_bytes(buf[pos : pos + 8], "little"), pos + 8
        elif wire == 5:
            value, pos = int.from_bytes(buf[pos : pos + 4], "little"), pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        if pos > end:
            raise ValueError("field runs past the end of its message")
        yield number, value, start, pos


def _fields(buf: memoryview):
    """Yield (field_number, value) for one message; value is int or memoryview (bytes)."""
    for number, value, _, _ in _spans(buf):
        yield number, value


def _text(v) -> str:
    # A number where a string belongs is malformed; bytes(<int>) would allocate that many bytes.
    if not isinstance(v, memoryview):
        raise ValueError("a string field holds a number")
    return bytes(v).decode("utf-8", errors="replace")


def _int(v) -> int:
    if not isinstance(v, int):
        raise ValueError("a number field holds bytes")
    return v


def _check_tensor(buf: memoryview, info: ModelInfo, where: str) -> None:
    name, external = "", False
    for num, v in _fields(buf):
        if num == _TENSOR_NAME and isinstance(v, memoryview):
            name = _text(v)
        elif num == _TENSOR_DATA_LOCATION and v == 1:
            external = True
        elif num == _TENSOR_EXTERNAL_DATA:
            external = True
    if external:
        info.external_tensors.append(f"{where}:{name or '<unnamed>'}")


def _check_sparse(buf: memoryview, info: ModelInfo, where: str) -> None:
    for num, v in _fields(buf):
        if num in (_SPARSE_VALUES, _SPARSE_INDICES) and isinstance(v, memoryview):
            _check_tensor(v, info, where)


def _int64_values(buf: memoryview) -> tuple[str, list[int]] | None:
    """(name, values) of a small int64 TensorProto, else None."""
    name, dtype, values, raw = "", 0, [], None
    for num, v in _fields(buf):
        if num == _TENSOR_NAME and isinstance(v, memoryview):
            name = _text(v)
        elif num == _TENSOR_DATA_TYPE and isinstance(v, int):
            dtype = v
        elif num == _TENSOR_INT64_DATA:
            if isinstance(v, int):
                values.append(v)
            else:  # packed
                pos = 0
                while pos < len(v) and len(values) <= MAX_SHAPE_CONSTANT:
                    value, pos = _varint(v, pos)
                    values.append(value)
        elif num == _TENSOR_RAW_DATA and isinstance(v, memoryview):
            raw = v
    if dtype != _INT64:
        return None
    if raw is not None:
        if len(raw) > 8 * MAX_SHAPE_CONSTANT or len(raw) % 8:
            return None
        values = [int.from_bytes(raw[i : i + 8], "little", signed=True) for i in range(0, len(raw), 8)]
    if len(values) > MAX_SHAPE_CONSTANT:
        return None
    return name, [v - (1 << 64) if v >= 1 << 63 else v for v in values]


def _walk_nodes(nodes: list[memoryview], info: ModelInfo, depth: int) -> None:
    for node in nodes:
        op, domain, inputs, outputs = "", "", [], []
        for num, v in _fields(node):
            if num == _NODE_OP_TYPE:
                op = _text(v)
            elif num == _NODE_DOMAIN:
                domain = _text(v)
            elif num == _NODE_INPUT:
                inputs.append(_text(v))
            elif num == _NODE_OUTPUT:
                outputs.append(_text(v))
        name = op if domain in ("", "ai.onnx") else f"{domain}:{op}"
        info.operators.add(name)
        attrs = [a for num, a in _fields(node) if num == _NODE_ATTRIBUTE and isinstance(a, memoryview)]
        if name in SIZED_OPS:
            info.sized_nodes.append((name, inputs))
        if name == "Constant" and outputs:
            for attr in attrs:
                for anum, v in _fields(attr):
                    if anum == _ATTR_TENSOR and isinstance(v, memoryview):
                        found = _int64_values(v)
                        if found is not None:
                            info.int_constants[outputs[0]] = found[1]
        _walk_attributes(attrs, info, depth)


def _walk_attributes(attrs: list[memoryview], info: ModelInfo, depth: int) -> None:
    for attr in attrs:
        for anum, v in _fields(attr):
            if not isinstance(v, memoryview):
                continue
            if anum in (_ATTR_TENSOR, _ATTR_TENSORS):
                _check_tensor(v, info, "attribute")
            elif anum in (_ATTR_SPARSE, _ATTR_SPARSES):
                _check_sparse(v, info, "attribute")
            elif anum in (_ATTR_GRAPH, _ATTR_GRAPHS):
                _walk_graph(v, info, depth + 1, top=False)


def _value_info(buf: memoryview) -> TensorSpec:
    name, dtype, shape = "", "unknown", []
    for num, v in _fields(buf):
        if num == 1:
            name = _text(v)
        elif num == 2 and isinstance(v, memoryview):  # TypeProto
            for tnum, tv in _fields(v):
                if tnum != 1 or not isinstance(tv, memoryview):  # tensor_type only
                    continue
                for snum, sv in _fields(tv):
                    if snum == 1:
                        dtype = ELEM_TYPES.get(_int(sv), f"type{sv}")
                    elif snum == 2 and isinstance(sv, memoryview):
                        for dnum, dim in _fields(sv):
                            if dnum != 1 or not isinstance(dim, memoryview):
                                continue
                            value: int | str = "?"
                            for knum, kv in _fields(dim):
                                if knum == 1:
                                    value = _int(kv)
                                elif knum == 2:
                                    value = _text(kv)
                            shape.append(value)
    return TensorSpec(name, dtype, tuple(shape))


def _walk_graph(buf: memoryview, info: ModelInfo, depth: int, top: bool) -> None:
    if depth > MAX_DEPTH:
        raise ValueError(f"graphs nested deeper than {MAX_DEPTH}")
    nodes = []
    for num, v in _fields(buf):
        if not isinstance(v, memoryview):
            continue
        if num == _GRAPH_NODE:
            nodes.append(v)
        elif num == _GRAPH_INITIALIZER:
            _check_tensor(v, info, "initializer")
            found = _int64_values(v)
            if found is not None and found[0]:
                info.int_constants[found[0]] = found[1]
            if top:
                for tnum, tv in _fields(v):
                    if tnum == _TENSOR_NAME:
                        info.initializer_names.add(_text(tv))
        elif num == _GRAPH_SPARSE_INIT:
            _check_sparse(v, info, "sparse initializer")
        elif top and num == _GRAPH_INPUT:
            info.inputs.append(_value_info(v))
        elif top and num == _GRAPH_OUTPUT:
            info.outputs.append(_value_info(v))
    _walk_nodes(nodes, info, depth)


def inspect_model(data: bytes, label: str = "model") -> ModelInfo:
    """Parse an ONNX ModelProto. Raises BundleError if the bytes are not a well-formed model."""
    info = ModelInfo()
    buf = memoryview(data)
    saw_graph = False
    try:
        for num, v in _fields(buf):
            if num == _MODEL_IR_VERSION and isinstance(v, int):
                info.ir_version = v
            elif num in (_MODEL_PRODUCER_NAME, _MODEL_PRODUCER_VERSION) and isinstance(v, memoryview):
                info.producer = (info.producer + " " + _text(v)).strip()
            elif num == _MODEL_OPSET and isinstance(v, memoryview):
                domain, version = "", 0
                for onum, ov in _fields(v):
                    if onum == 1:
                        domain = _text(ov)
                    elif onum == 2:
                        version = _int(ov)
                info.opsets[domain or "ai.onnx"] = version
            elif num == _MODEL_GRAPH and isinstance(v, memoryview):
                saw_graph = True
                _walk_graph(v, info, 0, top=True)
            elif num == _MODEL_FUNCTIONS and isinstance(v, memoryview):
                info.functions.append(next((_text(fv) for fnum, fv in _fields(v) if fnum == 1), "<unnamed>"))
                _walk_nodes([fv for fnum, fv in _fields(v) if fnum == _FUNCTION_NODE and isinstance(fv, memoryview)], info, 1)
                # Default values of the function's attributes can hold tensors too.
                _walk_attributes([fv for fnum, fv in _fields(v) if fnum == _FUNCTION_ATTRIBUTE_PROTO and isinstance(fv, memoryview)], info, 1)
    except (ValueError, IndexError) as e:
        raise BundleError(f"{label} is not a valid ONNX model ({e})") from None
    if not saw_graph or info.ir_version == 0:
        raise BundleError(f"{label} is not a valid ONNX model (no graph or IR version)")
    info.inputs = [t for t in info.inputs if t.name not in info.initializer_names]
    return info


# NodeProto and GraphProto fields the cut reads; value_info (13) is shape annotation only.
_NODE_INPUT, _NODE_OUTPUT = 1, 2
_GRAPH_VALUE_INFO = 13


def _encode_varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _length_delimited(number: int, payload: bytes) -> bytes:
    return _encode_varint(number << 3 | 2) + _encode_varint(len(payload)) + payload


def _raw_fields(buf: memoryview):
    """Yield (field_number, value, raw bytes of the whole field) for one message, so a
    message can be rebuilt from the fields it keeps."""
    for number, value, start, end in _spans(buf):
        yield number, value, buf[start:end]


def keep_outputs(data: bytes, outputs: list[str]) -> bytes:
    """The model cut down to what computes `outputs`: every node, initializer and graph output
    that none of them depends on is dropped, so onnxruntime (which runs every node of a graph,
    whatever outputs a call asks for) does only that work. A graph with subgraphs (If, Loop,
    Scan), whose bodies may read outer names, is returned whole."""
    buf = memoryview(data)
    graph_field = next(((v, raw) for num, v, raw in _raw_fields(buf) if num == _MODEL_GRAPH), None)
    if graph_field is None:
        return data
    graph = graph_field[0]
    nodes = []  # (inputs, outputs) of each node, in graph order
    for num, v, _ in _raw_fields(graph):
        if num != _GRAPH_NODE:
            continue
        ins, outs = [], []
        for nnum, nv in _fields(v):
            if nnum == _NODE_INPUT:
                ins.append(_text(nv))
            elif nnum == _NODE_OUTPUT:
                outs.append(_text(nv))
            elif nnum == _NODE_ATTRIBUTE and any(anum in (_ATTR_GRAPH, _ATTR_GRAPHS) for anum, _ in _fields(nv)):
                return data
        nodes.append((ins, outs))
    needed = set(outputs)
    kept = set()
    for i in reversed(range(len(nodes))):  # ONNX lists nodes in topological order
        ins, outs = nodes[i]
        if needed.intersection(outs):
            kept.add(i)
            needed.update(name for name in ins if name)
    if len(kept) == len(nodes):
        return data
    parts, node_index = [], -1
    for num, v, raw in _raw_fields(graph):
        if num == _GRAPH_NODE:
            node_index += 1
            if node_index not in kept:
                continue
        elif num in (_GRAPH_INITIALIZER, _GRAPH_VALUE_INFO, _GRAPH_OUTPUT):
            name = next((_text(fv) for fnum, fv in _fields(v) if fnum == (_TENSOR_NAME if num == _GRAPH_INITIALIZER else 1)), "")
            if name not in (set(outputs) if num == _GRAPH_OUTPUT else needed):
                continue
        parts.append(bytes(raw))
    new_graph = b"".join(parts)
    out = []
    for num, _, raw in _raw_fields(buf):
        out.append(_length_delimited(_MODEL_GRAPH, new_graph) if num == _MODEL_GRAPH else bytes(raw))
    return b"".join(out)
