"""The Open Inference Protocol (KServe v2, Triton's HTTP/REST API) over the served bundles.

Each served bundle NAME is up to four protocol models, one per SDK operation (`KINDS`):

    NAME.decode  latents FP32 [-1, D]                 -> images UINT8 [-1, H, W, C]
    NAME.encode  images UINT8 [-1, H, W, C]           -> mean FP32 [-1, D] (and logvar, a VAE)
    NAME.sample  n INT64 [1], seed INT64 [1] optional -> images, latents FP32 [-1, D], seed INT64 [1]
    NAME.score   images UINT8 [-1, H, W, C]           -> elbo_bpd, iw_bpd, anomaly, p_value FP64 [-1]

A bundle with spatial latents (the autoencoders of latent diffusion) takes images at their own
size: its shapes come from its geometry, with -1 for the sides that vary per request, and it has
decode and encode only (the SDK refuses sampling and scores for it):

    NAME.decode  latents FP32 [-1, C, -1, -1]         -> images UINT8 [-1, -1, -1, C] (h*f x w*f)
    NAME.encode  images UINT8 [-1, -1, -1, C]         -> mean FP32 [-1, C, -1, -1] (and logvar, a VAE)

An answer holds the SDK's own bytes for the same inputs and seed. The codec (`parse_infer`,
`Operation.validate`, `infer_response`) reads and writes JSON tensors and the binary tensor data
extension; `router` serves the protocol with the caller's `run`, so each front end (`vae
serve`'s worker pool, a Ray Serve deployment) brings only the way it computes. Errors answer
{"error": "<one line>"}: 400 for a bad request, 404 for an unknown model or version, and the
status of a refusal from `run` (503 overloaded, 504 too slow) with its headers.
"""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Optional

import numpy as np
from fastapi import APIRouter, Depends, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, create_model
from starlette.concurrency import run_in_threadpool

import vaesdk
from vaesdk import DEFAULT_IW_SAMPLES, frontend
from vaesdk.base.errors import CancelledError, InvalidArgumentError, InvalidImageError, ModelNotFoundError, VaesdkError
from vaesdk.frontend import MAX_IMAGE_SIDE, Geometry

from .contract import operation_prefix
from .errors import ApiError, BodyTooLarge
from .settings import Limits

VERSION = "1"  # a bundle is served as it is: one version per protocol model
EXTENSIONS = ["binary_tensor_data", "model_repository"]
HEADER = "Inference-Header-Content-Length"
DATATYPES = {"UINT8": np.dtype("<u1"), "INT32": np.dtype("<i4"), "INT64": np.dtype("<i8"), "FP32": np.dtype("<f4"), "FP64": np.dtype("<f8")}
MAX_TENSORS, MAX_RANK, MAX_ID = 16, 8, 256
# Seeds stop at the largest integer every JSON reader keeps exact (RFC 8259, section 6): above
# it a validator comparing numbers as doubles and one comparing integers exactly disagree.
MAX_SEED = 2**53 - 1
REQUEST_FIELDS = ("id", "model_name", "inputs", "outputs", "parameters")


class ProtocolError(Exception):
    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, dict(headers or {})


def bad(message: str) -> ProtocolError:
    return ProtocolError(400, message)


# ---- the request, as sent -------------------------------------------------------------------


@dataclass
class TensorData:
    """One input as the request gives it: JSON `data` (flat or nested) or its binary bytes."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: list | None = None
    binary: memoryview | None = None


@dataclass
class InferRequest:
    inputs: list[TensorData]
    outputs: dict[str, bool | None] | None = None  # requested output -> its binary_data (None: the request's default)
    parameters: dict[str, Any] = field(default_factory=dict)
    binary_output: bool = False  # parameters.binary_data_output
    id: str | None = None
    model_name: str | None = None


def _object(value: Any, what: str, keys: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise bad(f"{what} must be a JSON object, got {type(value).__name__}")
    unknown = [k for k in value if k not in keys]
    if unknown:
        raise bad(f"unknown field {unknown[0][:40]!r} in {what}; its fields: {', '.join(keys)}")
    return value


def _list(value: Any, what: str, maximum: int) -> list:
    if not isinstance(value, list) or not value or len(value) > maximum:
        raise bad(f"{what} must be a list of 1 to {maximum} entries")
    return value


def _name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value or len(value) > 128:
        raise bad(f"{what} must be a name (a string of 1 to 128 characters), got {value!r:.60}")
    return value


def _whole(v: Any) -> bool:
    return type(v) is int or (type(v) is float and v.is_integer())


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def parse_infer(body: bytes, headers: Mapping[str, str], max_json_bytes: int | None = None) -> InferRequest:
    """An inference request's body (JSON, or with `Inference-Header-Content-Length`, a JSON
    header followed by the binary data of the inputs that give `binary_data_size`). A JSON
    part over `max_json_bytes` is refused (413) before it is parsed."""
    length = next((v for k, v in headers.items() if k.lower() == HEADER.lower()), None)
    size = len(body)
    if length is not None:
        if not length.isdigit() or not 0 < int(length) <= size:
            raise bad(f"{HEADER} is {length[:40]!r}; it must be the byte length of the JSON header, 1..{size} for this body")
        size = int(length)
    if max_json_bytes is not None and size > max_json_bytes:
        raise ProtocolError(413, f"the request's JSON is {size} bytes; this server's limit is {max_json_bytes}: send large tensors as binary data ({HEADER})")
    try:
        head = json.loads(body[:size], parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as e:
        hint = "" if length is not None else f", with any binary data after a JSON header of {HEADER} bytes"
        raise bad(f"the inference request is not valid JSON ({str(e).splitlines()[0][:120]}); send a JSON object with inputs{hint}") from None
    head = _object(head, "the inference request", REQUEST_FIELDS)
    if "id" in head and (not isinstance(head["id"], str) or len(head["id"]) > MAX_ID):
        raise bad(f"id must be a string of at most {MAX_ID} characters")
    if "model_name" in head:
        _name(head["model_name"], "model_name")
    parameters = head.get("parameters", {})
    if not isinstance(parameters, dict):
        raise bad(f"parameters must be a JSON object, got {type(parameters).__name__}")
    parameters = dict(parameters)
    binary_output = parameters.pop("binary_data_output", False)
    if type(binary_output) is not bool:
        raise bad(f"parameter binary_data_output must be true or false, got {binary_output!r:.40}")
    rest, inputs = memoryview(body)[size:], []
    for i, given in enumerate(_list(head.get("inputs"), "inputs", MAX_TENSORS)):
        given = _object(given, f"inputs[{i}]", ("name", "shape", "datatype", "data", "parameters"))
        name = _name(given.get("name"), f"inputs[{i}].name")
        if any(t.name == name for t in inputs):
            raise bad(f"input {name!r} is given twice; give each input once")
        shape = given.get("shape")
        if not isinstance(shape, list) or len(shape) > MAX_RANK or not all(_whole(d) and d >= 0 for d in shape):
            raise bad(f"input {name!r}: shape must be a list of at most {MAX_RANK} non-negative integers, got {str(shape)[:60]}")
        datatype = given.get("datatype")
        if not isinstance(datatype, str):
            raise bad(f"input {name!r}: datatype must be a string such as FP32 or UINT8, got {datatype!r:.40}")
        tensor = TensorData(name, datatype, tuple(int(d) for d in shape))
        binary = "binary_data_size" in _object(given.get("parameters", {}), f"input {name!r}'s parameters", ("binary_data_size",))
        binary_size = given.get("parameters", {}).get("binary_data_size")
        if binary == ("data" in given):
            raise bad(f"input {name!r} needs exactly one of data (JSON) or parameters.binary_data_size (binary data after the JSON)")
        if not binary:
            if not isinstance(given["data"], list):
                raise bad(f"input {name!r}: data must be a list of values (flat, row-major, or nested as the shape)")
            tensor.data = given["data"]
        elif length is None:
            raise bad(f"input {name!r} gives binary_data_size but the request has no {HEADER} header; send it, the JSON header's byte length")
        elif not (type(binary_size) is int and 0 <= binary_size <= len(rest)):
            raise bad(f"input {name!r}: binary_data_size {binary_size!r:.40} is not a byte count within the {len(rest)} bytes after the JSON header")
        else:
            tensor.binary, rest = rest[:binary_size], rest[binary_size:]
        inputs.append(tensor)
    if len(rest):
        raise bad(f"{len(rest)} bytes follow the inputs' binary data; the binary_data_size of the inputs must add up to the bytes after the JSON header")
    outputs = None
    if "outputs" in head:
        if not isinstance(head["outputs"], list) or len(head["outputs"]) > MAX_TENSORS:
            raise bad(f"outputs must be a list of at most {MAX_TENSORS} entries")
        outputs = {} if head["outputs"] else None  # [] asks for every output, as no list does
        for i, wanted in enumerate(head["outputs"]):
            wanted = _object(wanted, f"outputs[{i}]", ("name", "parameters"))
            name = _name(wanted.get("name"), f"outputs[{i}].name")
            flag = _object(wanted.get("parameters", {}), f"output {name!r}'s parameters", ("binary_data",)).get("binary_data", None)
            if "binary_data" in wanted.get("parameters", {}) and type(flag) is not bool:
                raise bad(f"output {name!r}: binary_data must be true or false, got {json.dumps(flag)[:40]}")
            if name in outputs:
                raise bad(f"output {name!r} is asked twice; ask each output once")
            outputs[name] = flag
    return InferRequest(inputs, outputs, parameters, binary_output, head.get("id"), head.get("model_name"))


# ---- protocol models ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Tensor:
    """An input or output: `shape` with -1 for the batch dimension (1 to `rows` rows of `unit`),
    values within minimum..maximum (default: the datatype's range). A further -1 is a side that
    varies per request, 1 to `side` (a spatial model's image and latent sides). The first
    datatype is the one the metadata states; an input takes the others too."""

    name: str
    datatypes: tuple[str, ...]
    shape: tuple[int, ...]
    rows: int = 1
    unit: str = ""
    minimum: float | None = None
    maximum: float | None = None
    optional: bool = False
    side: int = 0

    @property
    def sides(self) -> list[int]:
        """The axes, after the batch axis, whose size varies per request."""
        return [i for i, d in enumerate(self.shape) if d == -1][1:]

    def bounds(self, datatype: str) -> tuple[float, float]:
        dt = DATATYPES[datatype]
        info = np.iinfo(dt) if dt.kind in "iu" else np.finfo(dt)
        lo, hi = int(info.min) if dt.kind in "iu" else float(info.min), int(info.max) if dt.kind in "iu" else float(info.max)
        return max(lo, self.minimum if self.minimum is not None else lo), min(hi, self.maximum if self.maximum is not None else hi)

    def metadata(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatypes[0], "shape": list(self.shape)}

    def read(self, given: TensorData) -> np.ndarray:
        """`given` as an array of its datatype, checked against this tensor's shape and bounds."""
        name, shape, dt = given.name, given.shape, DATATYPES[given.datatype]
        if len(shape) != len(self.shape) or any(d != g for d, g in zip(self.shape, shape) if d != -1):
            raise bad(f"input {name!r} has shape {list(shape)}; it must be {list(self.shape)}" + (" (-1: any number of rows)" if -1 in self.shape else ""))
        rows = shape[self.shape.index(-1)] if -1 in self.shape else 1
        if not 1 <= rows <= self.rows:
            raise bad(f"input {name!r} has {rows} rows; this server takes 1 to {self.rows} {self.unit} per request")
        if not all(1 <= shape[i] <= self.side for i in self.sides):
            raise bad(f"input {name!r} has shape {list(shape)}; its sides (each -1 of {list(self.shape)} but the first) must be 1 to {self.side}")
        count, lo, hi = math.prod(shape), *self.bounds(given.datatype)
        if given.binary is not None:
            if len(given.binary) != count * dt.itemsize:
                raise bad(f"input {name!r}: binary_data_size is {len(given.binary)} bytes; {given.datatype} of shape {list(shape)} takes {count * dt.itemsize}")
            values = np.frombuffer(given.binary, dt)
        else:
            flat = _flatten(given.data, shape, name)
            whole = dt.kind in "iu"
            odd = next((v for v in flat if not (_whole(v) if whole else type(v) in (int, float))), flat)
            if odd is not flat:
                raise bad(f"input {name!r} holds {json.dumps(odd)[:40]}; {given.datatype} data must be {'whole numbers' if whole else 'numbers'}")
            try:
                values = np.array([int(v) for v in flat] if whole else flat, object if whole else np.float64)
            except OverflowError:
                raise bad(f"input {name!r} holds a number beyond the {given.datatype} range") from None
        if dt.kind == "f" and not np.isfinite(values).all():
            raise bad(f"input {name!r} holds NaN or an infinite number; send finite numbers")
        low, high = values.min(), values.max()
        if low < lo or high > hi:
            raise bad(f"input {name!r} holds {low if low < lo else high}; its values must lie within {lo:g}..{hi:g}")
        return values.astype(dt).reshape(shape)


def _flatten(data: list, shape: tuple[int, ...], name: str) -> list:
    count = math.prod(shape)
    if not any(isinstance(v, list) for v in data[:1]):
        if len(data) != count:
            raise bad(f"input {name!r} has shape {list(shape)} ({count} values) but its data holds {len(data)}; send {count} values, row-major")
        return data
    level = [data]
    for d in shape:
        if not all(isinstance(item, list) and len(item) == d for item in level):
            raise bad(f"input {name!r}: nested data must follow its shape {list(shape)}; or send {count} values in one flat list")
        level = [v for item in level for v in item]
    return level


class Operation:
    """One protocol model: one SDK operation of one bundle. Subclasses (`KINDS`) state its
    tensors and parameters (JSON Schema), add the SDK's own checks and make the SDK call."""

    kind: ClassVar[str]

    def __init__(self, model: vaesdk.Model, limits: Limits):
        self.model, self.limits, self.name = model, limits, f"{model.name}.{self.kind}"
        self.inputs, self.outputs, self.parameters = self.tensors()

    @classmethod
    def serves(cls, model: vaesdk.Model) -> bool:
        return True

    def tensors(self) -> tuple[list[Tensor], list[Tensor], dict[str, dict[str, Any]]]:
        raise NotImplementedError

    def check(self, inputs: dict[str, np.ndarray], parameters: dict[str, Any]) -> None:
        """The SDK's checks of the arguments, before any work is queued."""

    def row_wise(self, parameters: dict[str, Any]) -> bool:
        """Whether the answer is row for row of the inputs, with nothing drawn at random: then
        requests may be joined along axis 0 into one call (a batching front end's question)."""
        return False

    def run(self, inputs: dict[str, np.ndarray], parameters: dict[str, Any]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def metadata(self) -> dict[str, Any]:
        return {"name": self.name, "versions": [VERSION], "platform": "vaesdk", "inputs": [t.metadata() for t in self.inputs],
                "outputs": [t.metadata() for t in self.outputs]}  # fmt: skip

    def validate(self, request: InferRequest) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """The request's inputs as arrays and its parameters, checked against this model."""
        if request.model_name is not None and request.model_name != self.name:
            raise bad(f"model_name {request.model_name[:80]!r} does not match the model {self.name!r} of the URL")
        specs, arrays = {t.name: t for t in self.inputs}, {}
        for given in request.inputs:
            if given.name not in specs:
                raise bad(f"unknown input {given.name!r} for {self.name}; its inputs: {', '.join(specs)}")
            spec = specs[given.name]
            if given.datatype not in spec.datatypes:
                raise bad(f"input {given.name!r} is {given.datatype[:20]}; {self.name} takes it as {' or '.join(spec.datatypes)}")
            arrays[given.name] = spec.read(given)
        missing = [t.name for t in self.inputs if not t.optional and t.name not in arrays]
        if missing:
            raise bad(f"{self.name} needs the input(s) {', '.join(missing)}; see GET /v2/models/{self.name}")
        answers = [t.name for t in self.outputs]
        unknown = [o for o in request.outputs or () if o not in answers]
        if unknown:
            raise bad(f"unknown output {unknown[0]!r} for {self.name}; its outputs: {', '.join(answers)}")
        unknown = [p for p in request.parameters if p not in self.parameters]
        if unknown:
            raise bad(f"unknown parameter {unknown[0][:40]!r} for {self.name}; its parameters: {', '.join(['binary_data_output', *self.parameters])}")
        parameters = {k: _parameter(k, request.parameters[k], s) if k in request.parameters else s["default"]
                      for k, s in self.parameters.items() if k in request.parameters or "default" in s}  # fmt: skip
        self.check(arrays, parameters)
        return arrays, parameters


def _parameter(name: str, value: Any, schema: dict[str, Any]) -> Any:
    kind = schema["type"]
    ok = {"integer": _whole, "number": lambda v: type(v) in (int, float) and abs(v) < math.inf, "string": lambda v: type(v) is str,
          "boolean": lambda v: type(v) is bool}[kind](value)  # fmt: skip
    value = int(value) if ok and kind == "integer" else value
    lo, hi, above = schema.get("minimum"), schema.get("maximum"), schema.get("exclusiveMinimum")
    if ok and kind in ("integer", "number"):
        ok = (lo is None or value >= lo) and (hi is None or value <= hi) and (above is None or value > above)
    if not ok or value not in schema.get("enum", [value]):
        what = {"integer": "an integer", "number": "a number", "string": "a string", "boolean": "true or false"}[kind]
        if "enum" in schema:
            what = "one of " + ", ".join(map(str, schema["enum"]))[:200]
        elif lo is not None or hi is not None:
            what += f" in {lo if lo is not None else '-inf'}..{hi if hi is not None else 'inf'}"
        elif above is not None:
            what += f" > {above}"
        raise bad(f"parameter {name}={json.dumps(value)[:40]} is refused; it must be {what}")
    return value


def _shapes(g: Geometry) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(image [H, W, C], latent [D] or [C, h, w]) of a model, without the batch axis; -1 for a
    side that varies (a model that takes images at their own size)."""
    image, latent = ([-1 if isinstance(d, str) else d for d in shape[1:]] for shape in g.graph_shapes())
    return (image[1], image[2], image[0]), tuple(latent)


def _images(model: vaesdk.Model, limits: Limits) -> Tensor:
    return Tensor("images", ("UINT8",), (-1, *_shapes(model.geometry)[0]), limits.max_images, "images", side=MAX_IMAGE_SIDE)


def _check_size(model: vaesdk.Model, limits: Limits, height: int, width: int) -> None:
    """Refuse images of height x width that the model does not take (the SDK's words) or that
    are over this server's pixel limit."""
    model.geometry.check_size(height, width)
    if height * width > limits.max_image_pixels:
        raise bad(f"images of {height}x{width} ({height * width} pixels) are over this server's limit of {limits.max_image_pixels} pixels per image")


class Decode(Operation):
    kind = "decode"

    def tensors(self) -> Any:
        m, bound = self.model, frontend.MAX_ABS_LATENT
        g = m.geometry
        image, latent = _shapes(g)
        latents = Tensor("latents", ("FP32",), (-1, *latent), self.limits.max_latents, "latents", -bound, bound, side=MAX_IMAGE_SIDE // (g.factor or 1))
        parameters = {}
        if g.spatial:
            precisions = ["fp32", "fp16"] if m.manifest.fp16_decoder is not None else ["fp32"]
            parameters["precision"] = {"type": "string", "enum": precisions,
                                       "description": "The decoder's precision; omitted: fp16 on CUDA with a float16 decoder, else fp32."}  # fmt: skip
        return [latents], [Tensor("images", ("UINT8",), (-1, *image))], parameters

    def check(self, inputs: dict[str, np.ndarray], parameters: dict[str, Any]) -> None:
        g = self.model.geometry
        if g.spatial:
            _check_size(self.model, self.limits, *g.image_size_of_latent(inputs["latents"].shape[1:]))

    def row_wise(self, parameters: dict[str, Any]) -> bool:
        return True

    def run(self, inputs: dict[str, np.ndarray], parameters: dict[str, Any]) -> dict[str, np.ndarray]:
        return {"images": self.model.decode(inputs["latents"], **parameters)}


class Encode(Operation):
    kind = "encode"

    def tensors(self) -> Any:
        latent = _shapes(self.model.geometry)[1]
        mean = Tensor("mean", ("FP32",), (-1, *latent))
        logvar = [Tensor("logvar", ("FP32",), (-1, *latent))] if self.model.kind == "vae" else []
        return [_images(self.model, self.limits)], [mean, *logvar], {}

    def check(self, inputs: dict[str, np.ndarray], parameters: dict[str, Any]) -> None:
        if self.model.geometry.spatial:
            _check_size(self.model, self.limits, *inputs["images"].shape[1:3])

    def row_wise(self, parameters: dict[str, Any]) -> bool:
        return True

    def run(self, inputs: dict[str, np.ndarray], parameters: dict[str, Any]) -> dict[str, np.ndarray]:
        posterior = self.model.encode(inputs["images"])
        return {"mean": posterior.mean, **({"logvar": posterior.logvar} if posterior.logvar is not None else {})}


class Sample(Operation):
    kind = "sample"

    @classmethod
    def serves(cls, model: vaesdk.Model) -> bool:
        return _can(model, "sample")

    def tensors(self) -> Any:
        m, ints = self.model, ("INT64", "INT32")
        n = Tensor("n", ints, (1,), minimum=1, maximum=self.limits.max_n)
        seed = Tensor("seed", ints, (1,), minimum=frontend.SEED_MIN, maximum=MAX_SEED, optional=True)
        image, latent = _shapes(m.geometry)
        outputs = [Tensor("images", ("UINT8",), (-1, *image)), Tensor("latents", ("FP32",), (-1, *latent)), Tensor("seed", ("INT64",), (1,))]
        parameters = {
            "prior": {"type": "string", "enum": m.priors, "description": f"A prior of the model; default {m.default_prior}."},
            "temperature": {"type": "number", "minimum": 0, "maximum": frontend.MAX_TEMPERATURE, "default": 1.0, "description": "Scale of the prior's spread."},
            "truncation": {"type": "number", "exclusiveMinimum": 0, "maximum": frontend.MAX_ABS_LATENT, "description": "Redraw latents beyond this many prior standard deviations."},
        }  # fmt: skip
        return [n, seed], outputs, parameters

    def check(self, inputs: dict[str, np.ndarray], parameters: dict[str, Any]) -> None:
        self.model.validate("sample", n=int(inputs["n"][0]), **parameters)

    def run(self, inputs: dict[str, np.ndarray], parameters: dict[str, Any]) -> dict[str, np.ndarray]:
        seed = int(inputs["seed"][0]) if "seed" in inputs else frontend.fresh_seed()
        images, z = self.model.prepare("sample", n=int(inputs["n"][0]), seed=seed, return_latents=True, **parameters)()
        return {"images": images, "latents": z, "seed": np.array([seed], np.int64)}


class Score(Operation):
    kind = "score"
    COLUMNS = ("elbo_bpd", "iw_bpd", "anomaly", "p_value")  # vaesdk.run_job's score columns

    @classmethod
    def serves(cls, model: vaesdk.Model) -> bool:
        return _can(model, "score")

    def tensors(self) -> Any:
        parameters = {
            "k": {"type": "integer", "minimum": 1, "maximum": self.limits.max_k, "default": DEFAULT_IW_SAMPLES, "description": "Importance samples, as `vae score --k`."},
            "seed": {"type": "integer", "minimum": frontend.SEED_MIN, "maximum": min(MAX_SEED, frontend.JOB_SEED_MAX), "default": 0, "description": "Seed, as `vae score --seed`."},
        }  # fmt: skip
        return [_images(self.model, self.limits)], [Tensor(c, ("FP64",), (-1,)) for c in self.COLUMNS], parameters

    def check(self, inputs: dict[str, np.ndarray], parameters: dict[str, Any]) -> None:
        self.model.validate("score", **parameters)

    def run(self, inputs: dict[str, np.ndarray], parameters: dict[str, Any]) -> dict[str, np.ndarray]:
        # The batch job `vae score` and the /v1 score route run: the same figures for the same images, k and seed.
        result = vaesdk.run_job(self.model, "score", list(inputs["images"]), workers=1, **parameters)
        if result.errors:
            raise InvalidImageError(str(result.errors[0][1]))
        return {c: result.columns[c] for c in self.COLUMNS}


def _can(model: vaesdk.Model, operation: str) -> bool:
    try:
        model.validate(operation)
    except VaesdkError:
        return False
    return True


KINDS: tuple[type[Operation], ...] = (Decode, Encode, Sample, Score)


def operations(models: dict[str, vaesdk.Model], limits: Limits | None = None) -> dict[str, Operation]:
    """The protocol models of `models` (by bundle name), by protocol model name."""
    return {op.name: op for m in models.values() for kind in KINDS if kind.serves(m) for op in [kind(m, limits or Limits())]}


# ---- the answer ---------------------------------------------------------------------------------


def infer_response(op: Operation, request: InferRequest, outputs: dict[str, np.ndarray]) -> Response:
    """`outputs` as the protocol's answer: JSON, or a JSON header and then the binary data of
    the outputs asked for as binary (application/octet-stream, with Inference-Header-Content-Length)."""
    wanted = request.outputs or {t.name: None for t in op.outputs if t.name in outputs}
    specs = {t.name: t for t in op.outputs}
    entries, blobs = [], []
    for name, flag in wanted.items():
        spec = specs[name]
        array = np.ascontiguousarray(outputs[name], DATATYPES[spec.datatypes[0]])
        entry: dict[str, Any] = {"name": name, "datatype": spec.datatypes[0], "shape": list(array.shape)}
        if request.binary_output if flag is None else flag:
            blobs.append(array.tobytes())
            entry["parameters"] = {"binary_data_size": array.nbytes}
        elif array.dtype.kind == "f" and not np.isfinite(array).all():
            raise bad(f"output {name!r} holds NaN for this model, which JSON cannot carry; ask for it with parameters.binary_data true")
        else:
            entry["data"] = array.ravel().tolist()
        entries.append(entry)
    head = {"model_name": op.name, "model_version": VERSION, **({"id": request.id} if request.id is not None else {}), "outputs": entries}
    text = json.dumps(head, separators=(",", ":")).encode()
    if not blobs:
        return Response(text, media_type="application/json")
    return Response(b"".join([text, *blobs]), media_type="application/octet-stream", headers={HEADER: str(len(text))})


def error_response(status: int, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    line = (str(message).splitlines() or [""])[0][:300]
    return JSONResponse({"error": line}, status_code=status, headers=dict(headers or {}))


def _protocol_error(e: Exception) -> tuple[int, str, Mapping[str, str] | None]:
    if isinstance(e, ProtocolError):
        return e.status, e.message, e.headers
    if isinstance(e, ApiError):  # a token's 401, the pool's 503 (with Retry-After) and 504
        return e.status, e.detail, e.headers
    if isinstance(e, BodyTooLarge):
        return 413, str(e), None
    if isinstance(e, RequestValidationError):
        first = e.errors()[0] if e.errors() else {}
        return 400, f"{'.'.join(map(str, first.get('loc', ())))}: {first.get('msg', 'invalid request')}", None
    if isinstance(e, VaesdkError):
        status = 400 if isinstance(e, (InvalidArgumentError, InvalidImageError)) else 404 if isinstance(e, ModelNotFoundError) else 499 if isinstance(e, CancelledError) else 500
        return status, str(e) or type(e).__name__, None
    return 500, f"internal error: {type(e).__name__}: {str(e)[:200]}", None


class _ProtocolRoute(APIRoute):
    """A route whose every error, from its dependencies to `run`, answers in the protocol's form."""

    def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
        handler = super().get_route_handler()

        async def answer(request: Request) -> Response:
            try:
                return await handler(request)
            except Exception as e:
                return error_response(*_protocol_error(e))

        return answer


# ---- the routes and their OpenAPI declarations --------------------------------------------------


class ErrorAnswer(BaseModel):
    """A protocol error: one line naming the bad value and the fix. (Refusals from the service's
    outer layers, such as the body size limit, also carry `detail`.)"""

    model_config = ConfigDict(extra="allow")
    error: str


# The answers' models, for the document.
TensorMetadata = create_model("TensorMetadata", name=(str, ...), datatype=(str, ...), shape=(list[int], ...))
ModelMetadata = create_model(
    "ModelMetadata", name=(str, ...), versions=(list[str], ...), platform=(str, ...), inputs=(list[TensorMetadata], ...), outputs=(list[TensorMetadata], ...)
)  # fmt: skip
ServerMetadata = create_model("ServerMetadata", name=(str, ...), version=(str, ...), extensions=(list[str], ...))
Live, Ready = create_model("Live", live=(bool, ...)), create_model("Ready", ready=(bool, ...))
ModelReady = create_model("ModelReady", name=(str, ...), ready=(bool, ...))
RepositoryEntry = create_model("RepositoryEntry", name=(str, ...), version=(str, ...), state=(str, ...))


ERRORS = {
    400: "A bad request: the error names the value and the fix.", 401: "No valid token: send 'Authorization: Bearer TOKEN'.",
    403: "A request from a web page of another origin (--cors-origin allows one).", 404: "Unknown model or version; GET /v2/models/... lists none, POST /v2/repository/index lists them all.",
    408: "The request did not arrive in time.", 413: "The body is over this server's limit.", 500: "The model failed on this input.",
    503: "Every worker and queue place is busy; retry after Retry-After seconds.", 504: "The request took longer than this server's time limit.",
}  # fmt: skip


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    headers = {401: {"WWW-Authenticate": {"schema": {"type": "string"}, "description": "Bearer"}},
               503: {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait before retrying."}}}  # fmt: skip
    return {s: {"model": ErrorAnswer, "description": ERRORS[s], **({"headers": headers[s]} if s in headers else {})} for s in statuses}


def _tensor_schema(t: Tensor) -> dict[str, Any]:
    """An input as JSON Schema: each datatype and row count with its exact shape and data
    length (flat, row-major; the server also reads data nested as the shape)."""
    branches = []
    for datatype in t.datatypes:
        lo, hi = t.bounds(datatype)
        item = {"type": "integer" if DATATYPES[datatype].kind in "iu" else "number", "minimum": lo, "maximum": hi}
        if t.sides:
            # Sides that vary: each dimension within its range; the data's length follows the shape.
            batch = t.shape.index(-1)
            dims = [{"minimum": 1, "maximum": t.rows} if i == batch else {"minimum": 1, "maximum": t.side} if d == -1 else {"const": d} for i, d in enumerate(t.shape)]
            sizes = [{"properties": {"shape": {"prefixItems": dims, "minItems": len(dims), "maxItems": len(dims)}, "data": {"minItems": 1}}}]
        else:
            shapes = [[rows if d == -1 else d for d in t.shape] for rows in (range(1, t.rows + 1) if -1 in t.shape else [1])]
            # The shape's dimensions as consts one by one: client generators take scalar consts only.
            sizes = [{"properties": {"shape": {"prefixItems": [{"const": d} for d in s], "minItems": len(s), "maxItems": len(s)},
                                     "data": {"minItems": math.prod(s), "maxItems": math.prod(s)}}} for s in shapes]  # fmt: skip
        pick = {"datatype": {"const": datatype}} if len(t.datatypes) > 1 else {}
        branches.append({"properties": {**pick, "data": {"items": item}}, "anyOf": sizes})
    return {
        "type": "object", "additionalProperties": False, "required": ["name", "datatype", "shape", "data"],
        "properties": {"name": {"const": t.name}, "datatype": {"enum": list(t.datatypes)} if len(t.datatypes) > 1 else {"const": t.datatypes[0]}, "shape": {"type": "array", "items": {"type": "integer"}},
                       "data": {"type": "array", "items": {"type": "number"}}, "parameters": {"type": "object", "additionalProperties": False}},
        **({"anyOf": branches} if len(branches) > 1 else {"allOf": branches}),
    }  # fmt: skip


def _each_once(schemas: list[dict[str, Any]], required: list[bool]) -> dict[str, Any]:
    """An array holding each of `schemas` at most once (the required ones exactly once), in any order."""
    if len(schemas) == 1:
        return {"type": "array", "minItems": int(required[0]), "maxItems": 1, "items": schemas[0]}
    return {
        "type": "array", "minItems": sum(required), "maxItems": len(schemas), "items": {"anyOf": schemas},
        "allOf": [{"contains": s, "minContains": int(r), "maxContains": 1} for s, r in zip(schemas, required)],
    }  # fmt: skip


def _request_schema(op: Operation) -> dict[str, Any]:
    binary = {"type": "object", "additionalProperties": False, "properties": {"binary_data": {"type": "boolean"}}}
    outputs = [{"type": "object", "additionalProperties": False, "required": ["name"], "properties": {"name": {"const": t.name}, "parameters": binary}} for t in op.outputs]
    flags = {"binary_data_output": {"type": "boolean", "description": "Answer every output not named in outputs as binary data."}}
    return {
        "type": "object", "additionalProperties": False, "required": ["inputs"],
        "properties": {
            "id": {"type": "string", "maxLength": MAX_ID}, "model_name": {"type": "string", "enum": [op.name]},
            "inputs": _each_once([_tensor_schema(t) for t in op.inputs], [not t.optional for t in op.inputs]),
            "outputs": {**_each_once(outputs, [False] * len(outputs)), "minItems": 0},
            "parameters": {"type": "object", "additionalProperties": False, "properties": {**flags, **op.parameters}},
        },
    }  # fmt: skip


def _answer_schema(op: Operation) -> dict[str, Any]:
    output = {
        "type": "object", "additionalProperties": False, "required": ["name", "datatype", "shape"],
        "properties": {
            "name": {"enum": [t.name for t in op.outputs]}, "datatype": {"enum": sorted({t.datatypes[0] for t in op.outputs})},
            "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}}, "data": {"type": "array", "items": {"type": "number"}},
            "parameters": {"type": "object", "additionalProperties": False, "required": ["binary_data_size"], "properties": {"binary_data_size": {"type": "integer", "minimum": 0}}},
        },
    }  # fmt: skip
    return {
        "type": "object", "additionalProperties": False, "required": ["model_name", "model_version", "outputs"],
        "properties": {"model_name": {"const": op.name}, "model_version": {"const": VERSION}, "id": {"type": "string"}, "outputs": {"type": "array", "items": output}},
    }  # fmt: skip


Run = Callable[[Request, Operation, dict[str, np.ndarray], dict[str, Any]], Awaitable[dict[str, np.ndarray]]]


def router(ops: dict[str, Operation], run: Run, authorize: Optional[Callable[[Request], None]] = None) -> APIRouter:
    """The protocol's routes over `ops`, computing with `run`; `authorize` (when given) guards
    every route but the health checks, and its refusals answer in the protocol's form."""
    api = APIRouter(route_class=_ProtocolRoute, tags=["inference protocol"])
    guard, token = ([Depends(authorize)], (401,)) if authorize is not None else ([], ())
    listed = ", ".join(ops)
    model_param = PathParam(description=f"A protocol model: {listed}.", json_schema_extra={"enum": list(ops)})
    version_param = PathParam(description=f"The model's version: {VERSION}.", json_schema_extra={"enum": [VERSION]})

    def op_of(model: str, version: str | None = None) -> Operation:
        if model not in ops:
            raise ProtocolError(404, f"unknown model {model[:80]!r}; models: {listed}")
        if version is not None and version != VERSION:
            raise ProtocolError(404, f"model {model!r} has no version {version[:20]!r}; its versions: {VERSION}")
        return ops[model]

    @api.get("/v2/health/live", operation_id="oip_server_live", response_model=Live)
    async def live() -> dict[str, bool]:
        """Whether the server is up (no token needed)."""
        return {"live": True}

    @api.get("/v2/health/ready", operation_id="oip_server_ready", response_model=Ready)
    async def ready() -> dict[str, bool]:
        """Whether every model is ready: they are loaded before the server starts (no token needed)."""
        return {"ready": True}

    @api.get("/v2", operation_id="oip_server_metadata", response_model=ServerMetadata, dependencies=guard, responses=_errors(*token))
    async def server_metadata() -> dict[str, Any]:
        """The server's name, version and protocol extensions."""
        return {"name": "vaesdk", "version": vaesdk.__version__, "extensions": EXTENSIONS}

    @api.get("/v2/models/{model}", operation_id="oip_model_metadata", response_model=ModelMetadata, dependencies=guard, responses=_errors(*token, 404))
    async def model_metadata(model: str = model_param) -> dict[str, Any]:
        """A protocol model's inputs and outputs (datatype, shape; -1: any number of rows)."""
        return op_of(model).metadata()

    @api.get("/v2/models/{model}/versions/{version}", operation_id="oip_model_version_metadata", response_model=ModelMetadata, dependencies=guard, responses=_errors(*token, 404))
    async def model_version_metadata(model: str = model_param, version: str = version_param) -> dict[str, Any]:
        """A protocol model's metadata, for its one version."""
        return op_of(model, version).metadata()

    @api.get("/v2/models/{model}/ready", operation_id="oip_model_ready", response_model=ModelReady, dependencies=guard, responses=_errors(*token, 404))
    async def model_ready(model: str = model_param) -> dict[str, Any]:
        """Whether a protocol model is ready: 200 if it is served."""
        return {"name": op_of(model).name, "ready": True}

    @api.get("/v2/models/{model}/versions/{version}/ready", operation_id="oip_model_version_ready", response_model=ModelReady, dependencies=guard, responses=_errors(*token, 404))
    async def model_version_ready(model: str = model_param, version: str = version_param) -> dict[str, Any]:
        """Whether a protocol model's version is ready."""
        return {"name": op_of(model, version).name, "ready": True}

    index_body = {"type": "object", "additionalProperties": False, "properties": {"ready": {"type": "boolean", "description": "Only ready models (all are)."}}}

    @api.post(
        "/v2/repository/index", operation_id="oip_repository_index", response_model=list[RepositoryEntry], dependencies=guard,
        openapi_extra={"requestBody": {"required": False, "content": {"application/json": {"schema": index_body}}}}, responses=_errors(*token, 400, 403, 408, 413),
    )  # fmt: skip
    async def repository_index(request: Request) -> list[dict[str, str]]:
        """Every protocol model of the repository (the model repository extension's index)."""
        body = await request.body()
        if body.strip():
            try:
                given = await run_in_threadpool(json.loads, body)
            except (ValueError, RecursionError):
                raise bad("the index request is not valid JSON; send {} or {\"ready\": true}, or no body") from None
            if type(_object(given, "the index request", ("ready",)).get("ready", True)) is not bool:
                raise bad("ready must be true or false")
        return [{"name": name, "version": VERSION, "state": "READY"} for name in ops]

    async def infer(request: Request, op: Operation) -> Response:
        body = await request.body()

        def read() -> tuple[InferRequest, dict[str, np.ndarray], dict[str, Any]]:
            parsed = parse_infer(body, request.headers, op.limits.max_json_bytes)
            return parsed, *op.validate(parsed)

        # Off the event loop: a large JSON body must not hold up the server's other requests.
        parsed, inputs, parameters = await run_in_threadpool(read)
        outputs = await run(request, op, inputs, parameters)
        return await run_in_threadpool(infer_response, op, parsed, outputs)

    def handlers(op: Operation) -> tuple[Callable[..., Awaitable[Response]], Callable[..., Awaitable[Response]]]:
        async def infer_model(request: Request) -> Response:
            return await infer(request, op)

        async def infer_version(request: Request, version: str = version_param) -> Response:
            return await infer(request, op_of(op.name, version))

        return infer_model, infer_version

    for op in ops.values():
        answer = {"description": "The outputs: JSON, or with any output asked as binary data, application/octet-stream: a JSON header of "
                                 "Inference-Header-Content-Length bytes followed by those outputs' bytes, little-endian, row-major.",
                  "content": {"application/json": {"schema": _answer_schema(op)}, "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
                  "headers": {HEADER: {"schema": {"type": "integer"}, "description": "With binary outputs: the JSON header's byte length."}}}  # fmt: skip
        inputs = "; ".join(f"{t.name} {' or '.join(t.datatypes)} {list(t.shape)}{' (optional)' if t.optional else ''}" for t in op.inputs)
        text = (f"Inputs: {inputs}. Outputs: {', '.join(t.name for t in op.outputs)}. The body is JSON; with the binary tensor data extension, "
                f"a JSON header of {HEADER} bytes followed by the binary inputs (parameters.binary_data_size each).")  # fmt: skip
        declared = {"openapi_extra": {"requestBody": {"required": True, "content": {"application/json": {"schema": _request_schema(op)}}}},
                    "responses": {200: answer, **_errors(*token, 400, 403, 408, 413, 500, 503, 504)}, "response_class": Response,
                    "dependencies": guard, "methods": ["POST"], "description": text}  # fmt: skip

        infer_model, infer_version = handlers(op)
        prefix = operation_prefix(op.name)
        api.add_api_route(f"/v2/models/{op.name}/infer", infer_model, operation_id=f"oip_{prefix}_infer", summary=f"Infer {op.name}", **declared)
        declared["responses"] = {**declared["responses"], **_errors(404)}
        api.add_api_route(f"/v2/models/{op.name}/versions/{{version}}/infer", infer_version, operation_id=f"oip_{prefix}_version_infer", summary=f"Infer {op.name}, one version", **declared)

    # Any other model name: 404 in the protocol's form (the served ones matched above).
    @api.post("/v2/models/{model}/infer", include_in_schema=False, dependencies=guard)
    async def infer_unknown(request: Request, model: str) -> Response:
        return await infer(request, op_of(model))

    @api.post("/v2/models/{model}/versions/{version}/infer", include_in_schema=False, dependencies=guard)
    async def infer_unknown_version(request: Request, model: str, version: str) -> Response:
        return await infer(request, op_of(model, version))

    return api
