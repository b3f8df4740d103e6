"""Reading requests: bodies parsed by the request models the OpenAPI document declares
(serve/contract.py), so the document's limits are the ones enforced, once. A refusal names the
field, the bad value and the fix: 413 for a value over one of this server's limits, 422 for
anything else. What a value means for a model (is this prior one of its priors?) the SDK's
own checks judge, in the SDK's words."""

from __future__ import annotations

import json
import math
from typing import Any, Literal, Optional, get_origin

import numpy as np
from fastapi import Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

import vaesdk

from . import contract
from .errors import ApiError, BodyTooLarge

# The fields bounded by this server's limits (Limits), and what they count: over the limit is 413.
LIMITED = {"n": "images", "ncols": "columns", "latents": "latents", "k": "importance samples", "shape[0]": "latents"}
MAX_FIELDS = 64  # multipart fields per request, files included
SHOWN = 5  # unknown names an error lists: a bounded answer to a hostile body


def wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "")


async def json_object(request: Request, max_bytes: int) -> dict[str, Any]:
    """The body as a JSON object ({} when empty), at most `max_bytes`, parsed off the event loop."""
    raw = await request.body()
    if not raw:
        return {}
    if len(raw) > max_bytes:
        raise ApiError(413, "too_large", f"the JSON body is {len(raw)} bytes; this server's limit for JSON bodies is {max_bytes}")
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media != "application/json" and not media.endswith("+json"):
        # Browsers send text/plain (and forms) across sites without asking first: a JSON route
        # takes JSON only.
        raise ApiError(415, "unsupported_media_type", f"the body is {media or 'of no media type'}; send it as Content-Type: application/json")
    try:
        # Off the event loop: a large body must not hold up the server's other requests.
        body = await run_in_threadpool(json.loads, raw)
    except (ValueError, RecursionError):
        raise ApiError(422, "invalid_argument", "the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(422, "invalid_argument", "the request body must be a JSON object")
    return body


def unknown_fields(unknown: list[str], fields: list[str]) -> ApiError:
    """A bounded answer to unknown fields: a few names, not every key of a hostile body."""
    more = f" and {len(unknown) - SHOWN} more" if len(unknown) > SHOWN else ""
    names = ", ".join(repr(k[:40]) for k in unknown[:SHOWN])
    return ApiError(422, "invalid_argument", f"unknown field(s) {names}{more}; fields: {', '.join(fields)}")


def _place(loc: tuple[Any, ...]) -> str:
    head, *rest = [str(p) for p in loc if p != "body"] or ["body"]
    return head + "".join(f"[{p}]" for p in rest)


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _range(model: type[BaseModel] | None, field: Any) -> str:
    """A field's declared bounds as lo..hi ("" where the model declares none)."""
    info = model.model_fields.get(str(field)) if model is not None else None
    bounds = {b: getattr(m, b) for m in (info.metadata if info else []) for b in ("ge", "gt", "le", "lt") if getattr(m, b, None) is not None}
    lo, hi = bounds.get("ge", bounds.get("gt")), bounds.get("le", bounds.get("lt"))
    return f"{lo:g}..{hi:g}" if lo is not None and hi is not None else ""


def refusal(e: ValidationError, fields: list[str], latent_dim: int, model: type[BaseModel] | None = None) -> ApiError:
    """One ApiError for a request model's ValidationError: its unknown fields (a few named),
    or its first error, in words that name the value and what is valid."""
    errors = e.errors()
    unknown = [_place(x["loc"]) for x in errors if x["type"] == "extra_forbidden"]
    if unknown:
        return unknown_fields(unknown, fields)
    x = errors[0]
    loc = tuple(p for p in x["loc"] if p != "body")
    where, kind, value, ctx = _place(loc), x["type"], x.get("input"), x.get("ctx", {})
    if where in LIMITED and kind in ("less_than_equal", "too_long"):
        limit = ctx.get("le", ctx.get("max_length"))
        given = len(value) if kind == "too_long" else value
        return ApiError(413, "too_large", f"{where}={given} is over this server's limit of {limit} {LIMITED[where]}")
    if loc[:1] == ("latents",) and len(loc) == 2 and kind in ("too_short", "too_long"):
        return ApiError(422, "invalid_argument", f"latents must have shape [n, {latent_dim}] (the model's latent_dim); row {loc[1]} has {len(value)} numbers")
    if loc[:1] == ("latents",) and kind in ("float_type", "float_parsing", "list_type"):
        return ApiError(422, "invalid_argument", f"latents must be a list of rows of {latent_dim} numbers; {where}={_shown(value)} is not")
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return ApiError(422, "invalid_argument", f"{where}={_shown(value)} must be an integer")
    if kind in ("float_type", "float_parsing", "finite_number"):
        return ApiError(422, "invalid_argument", f"{where}={_shown(value)} must be a finite number")
    if kind in ("bool_type", "bool_parsing"):
        return ApiError(422, "invalid_argument", f"{where}={_shown(value)} must be true or false")
    if kind == "literal_error" and len(loc) > 1:  # an entry of a list (a spatial latent's shape)
        return ApiError(422, "invalid_argument", f"{where}={_shown(value)} is refused; valid: {ctx.get('expected', '')}")
    if kind == "literal_error":
        return ApiError(422, "invalid_argument", f"unknown {where} {_shown(value)}; valid: {ctx.get('expected', '')}")
    if kind == "string_pattern_mismatch":
        info = model.model_fields.get(str(loc[0])) if model is not None and loc else None
        takes = info.description if info is not None and info.description else f"a string matching {ctx.get('pattern', '')}"
        return ApiError(422, "invalid_argument", f"{where}={_shown(value)} is refused; it takes {takes}")
    if kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
        bounds = _range(model, loc[0]) if len(loc) == 1 else ""
        return ApiError(422, "invalid_argument", f"{where}={_shown(value)} is out of range: " + (f"it must be in {bounds}" if bounds else x["msg"].lower()))
    return ApiError(422, "invalid_argument", f"{where}: {x['msg']} (got {_shown(value)})")


def _whole(v: Any) -> Any:
    return int(v) if isinstance(v, float) and v.is_integer() else v


def _integers(body: dict[str, Any], model: type[BaseModel]) -> dict[str, Any]:
    """JSON has one number type: 6.0 is the integer 6 (JSON Schema agrees), for the SDK too;
    and one array type: a list is the value of a tuple field (a spatial latent's shape)."""
    ints = {name for name, f in model.model_fields.items() if f.annotation in (int, Optional[int])}
    tuples = {name for name, f in model.model_fields.items() if get_origin(f.annotation) is tuple}
    out = {}
    for k, v in body.items():
        if k in ints:
            v = _whole(v)
        elif k in tuples and isinstance(v, list):
            v = tuple(_whole(x) for x in v)
        out[k] = v
    return out


def parse(model: type[BaseModel], body: dict[str, Any], latent_dim: int) -> Any:
    """`body` through `model`, strictly (no strings for numbers, no numbers for flags)."""
    if len(body) > len(model.model_fields):
        # Unknown keys, refused before validation: a body with a million of them costs the
        # model a million error records.
        raise unknown_fields([k for k in body if k not in model.model_fields], sorted(model.model_fields))  # in body order
    try:
        return model.model_validate(_integers(body, model), strict=True)
    except ValidationError as e:
        raise refusal(e, sorted(model.model_fields), latent_dim, model) from None


def spatial_latents(body: Any, model: vaesdk.Model, max_pixels: int) -> np.ndarray:
    """A spatial decode request's latents as float32 [N, C, h, w]: their count checked against
    their shape, and the images they decode to against this server's pixel limit (413)."""
    shape = list(body.shape)
    count = math.prod(shape)
    if len(body.latents) != count:
        raise ApiError(422, "invalid_argument", f"latents holds {len(body.latents)} numbers but shape {shape} takes {count}; send N*C*h*w numbers, row-major")
    height, width = model.geometry.image_size_of_latent(tuple(shape[1:]))
    if height * width > max_pixels:
        raise ApiError(413, "too_large", f"latents of shape {shape} decode to {height}x{width} images ({height * width} pixels); this server's limit is {max_pixels} pixels per image")
    return np.asarray(body.latents, np.float32).reshape(shape)


def direction_of(text: str | None, model: vaesdk.Model) -> str | np.ndarray | None:
    """A spatial edit's direction field (held to its pattern by the form): a name of the
    model's directions, or comma-separated numbers as a per-channel vector; None when it is
    not given (the SDK refuses an edit without a direction in its own words)."""
    if text is None or text in model.directions:
        return text
    return np.array([float(v) for v in text.split(",")], np.float32)


# ---- multipart forms -------------------------------------------------------------------------


def form_model(name: str, extra: dict[str, Any]) -> type[BaseModel]:
    """A request model for a multipart route's text fields, made from the document's schema of
    that form (Contract.multipart): the same bounds, defaults and choices."""
    fields: dict[str, Any] = {}
    for key, schema in contract.form_properties(extra).items():
        if key == "image":
            continue
        kind: Any = {"integer": int, "number": float, "boolean": bool, "string": str}[schema["type"]]
        if "enum" in schema and kind is not bool:  # a flag's meaning for a model is the SDK's to judge
            kind = Literal[tuple(schema["enum"])]  # type: ignore[valid-type]
        bounds = {b: schema[s] for s, b in (("minimum", "ge"), ("maximum", "le"), ("pattern", "pattern")) if s in schema}
        fields[key] = (Optional[kind], Field(schema.get("default"), description=schema.get("description"), **bounds))
    return create_model(name, __config__=ConfigDict(extra="forbid"), **fields)


def _form_value(text: str, model: type[BaseModel], key: str) -> Any:
    """A form field's text as its declared type, before the model checks it (strictly)."""
    annotation = repr(model.model_fields[key].annotation) if key in model.model_fields else ""
    try:
        if "bool" in annotation:
            return {"true": True, "false": False}[text.lower()]
        if "int" in annotation:  # "3" or "3.0" (JSON Schema's integers include 3.0), not "3.5"
            value = int(text) if text.lstrip("-").isdigit() else float(text)
            return int(value) if isinstance(value, float) and value.is_integer() else value
        if "float" in annotation:
            return float(text)
    except (KeyError, ValueError, OverflowError):
        pass
    return text


async def uploads(request: Request, model: type[BaseModel], max_images: int, max_body_bytes: int) -> tuple[list[tuple[str, bytes]], Any]:
    """(name, bytes) of each file uploaded as `image`, and the form's other fields parsed by
    `model`."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise ApiError(422, "invalid_argument", "send the images as multipart/form-data file fields (e.g. curl -F image=@shirt.png)")
    try:
        form = await request.form(max_files=max_images, max_fields=MAX_FIELDS, max_part_size=max_body_bytes)
    except BodyTooLarge:
        raise
    except StarletteHTTPException as e:
        # Each parse error says what it is; only too many parts is about the limits.
        detail = " ".join(str(e.detail).split())[:200]
        if "many" in detail.lower():
            raise ApiError(413, "too_large", f"the multipart body is refused: {detail} (at most {max_images} images and {MAX_FIELDS} fields)") from None
        raise ApiError(422, "invalid_upload", f"the multipart body cannot be read: {detail}; send multipart/form-data with image file fields") from None
    files, fields, unknown = [], {}, []
    try:
        for key, value in form.multi_items():
            if hasattr(value, "read") and key == "image":
                files.append((value.filename or key, await value.read()))
            elif key == "image":
                raise ApiError(422, "invalid_argument", "image must be a file upload (e.g. curl -F image=@shirt.png), not a text field")
            elif hasattr(value, "read") or key not in model.model_fields:
                unknown.append(key)
            elif key in fields:
                raise ApiError(422, "invalid_argument", f"form field {key} is given more than once; give it once")
            else:
                fields[key] = _form_value(value, model, key)
    finally:
        await form.close()
    if unknown:
        raise unknown_fields(unknown, ["image", *sorted(model.model_fields)])
    if not files:
        raise ApiError(422, "invalid_argument", "no image uploaded; send one or more multipart file fields")
    if len(files) > max_images:
        raise ApiError(413, "too_large", f"{len(files)} images uploaded; the limit is {max_images} per request")
    try:
        return files, model.model_validate(fields, strict=True)
    except ValidationError as e:
        raise refusal(e, ["image", *sorted(model.model_fields)], 0, model) from None


class RequestModels:
    """Each served model's request models, made once from the document's declarations."""

    def __init__(self, doc: contract.Contract, models: dict[str, vaesdk.Model]):
        self.json: dict[tuple[str, str], type[BaseModel]] = {}
        self.forms: dict[tuple[str, str], type[BaseModel]] = {}
        for name, m in models.items():
            one = doc.for_model(m)
            for route, extra in one.bodies().items():
                if route == "sample":
                    self.json[name, route] = one.sample_model(choices=False)
                elif route == "decode":
                    self.json[name, route] = one.decode_model()
                else:
                    self.forms[name, route] = form_model(f"{one.title}{route.capitalize()}Form", extra)
