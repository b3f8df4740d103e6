"""The service's OpenAPI contract: request bodies, answers and errors, written where FastAPI
reads them, from the served bundles' facts, the server's limits and the SDK's own bounds.

The routes parse requests themselves and let the SDK's `validate` judge the values (so the
messages are the SDK's); these declarations describe exactly what that accepts. The server
routes `/v1/models/{name}/...` for every served model, but one request schema cannot say what
each of several models accepts (latent size, priors, directions, a plain autoencoder among
VAEs): the document writes each of those paths out once per served model
(`/v1/models/fashion-mnist/decode`), each with that model's own exact schemas
(`Contract.per_model_paths`).
"""

from __future__ import annotations

import copy
import re
from typing import Annotated, Any, Literal, Optional, Union
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field, create_model

import vaesdk
from vaesdk import DEFAULT_IW_SAMPLES
from vaesdk.base.errors import InvalidArgumentError
from vaesdk.frontend import JOB_SEED_MAX, MAX_ABS_LATENT, MAX_TEMPERATURE, SEED_MIN

PNG = "image/png"
JSON = "application/json"
# edit's |delta|: the SDK refuses a delta that pushes a latent past +-MAX_ABS_LATENT, which
# depends on the image; within 1000 prior standard deviations no encoded image gets there.
MAX_EDIT_DELTA = 1000.0
DEFAULT_N = 16  # sample's n when the request gives none (at most the server's max_n)


class ErrorBody(BaseModel):
    """Every error the service answers: a short code and a one-line detail naming the value and the fix."""

    model_config = ConfigDict(extra="forbid")
    error: str = Field(examples=["invalid_argument"])
    detail: str = Field(examples=["n must be in 1..100000, got 0"])


class Health(BaseModel):
    model_config = ConfigDict(extra="forbid")
    status: Literal["ok"]


class ModelList(BaseModel):
    models: list[dict[str, Any]] = Field(description="Each served model's `Model.describe()`, without its path.")


class SampleJson(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seed: int
    latents: list[list[float]] = Field(description="The drawn latents, [n, latent_dim].")
    images: list[str] = Field(description="One base64 PNG per sample.")


class DecodeJson(BaseModel):
    model_config = ConfigDict(extra="forbid")
    images: list[str] = Field(description="One base64 PNG per latent.")


class ItemError(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(description="The upload's file name.")
    error: str = Field(description="Why this upload was not processed; the others still were.")


class ImageItem(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    png: str = Field(description="The result, base64 PNG.")


class ImageResults(BaseModel):
    model_config = ConfigDict(extra="forbid")
    results: list[Union[ImageItem, ItemError]] = Field(description="One entry per upload, in upload order.")


class EncodeItem(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    mean: list[float]
    logvar: Optional[list[float]] = Field(description="null for a plain autoencoder.")


class EncodeResults(BaseModel):
    model_config = ConfigDict(extra="forbid")
    results: list[Union[EncodeItem, ItemError]]


class ScoreItem(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    elbo_bpd: Optional[float] = Field(description="-ELBO, bits/dim; null for a model without a pixel likelihood.")
    iw_bpd: Optional[float] = Field(description="-(importance-weighted bound with k samples), bits/dim; null for a model without a pixel likelihood.")
    anomaly: float = Field(description="Anomaly score; higher is more unusual.")
    p_value: Optional[float] = Field(description="From the bundle's calibration; null without one.")


class ScoreResults(BaseModel):
    """`vae score --json`'s report (model, k, seed, units, calibration, ...) with one entry per upload."""

    model_config = ConfigDict(extra="allow")
    model: str
    k: int
    seed: int
    results: list[Union[ScoreItem, ItemError]]


def operation_prefix(name: str) -> str:
    """A model name as an identifier for operation ids and schema titles: fashion-mnist -> fashion_mnist."""
    return re.sub(r"[^0-9A-Za-z]+", "_", name).strip("_").lower() or "model"


def form_properties(extra: dict[str, Any]) -> dict[str, Any]:
    """The fields of a multipart request body declared by Contract.multipart."""
    return extra["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]


class Contract:
    """Declarations for one app: its models, limits and token."""

    def __init__(self, models: list[vaesdk.Model], limits: Any, token: bool, served: "Contract | None" = None):
        self.models, self.limits, self.token = models, limits, token
        # The contract of every served model: the server reads a form's fields from it.
        self.served = served or self
        self.names = [m.name for m in models]
        self.title = "" if served is None else "".join(w.capitalize() for w in operation_prefix(models[0].name).split("_"))
        prefixes: dict[str, str] = {}
        for name in self.names:  # refused when the app is made, not when the document is first read
            prefix = operation_prefix(name)
            if prefix in prefixes:
                raise InvalidArgumentError(
                    f"models {prefixes[prefix]!r} and {name!r} would share the operation ids {prefix}_*; serve one of them, or rename a bundle folder"
                )
            prefixes[prefix] = name
        self.default_n = min(DEFAULT_N, limits.max_n)
        # What any served model accepts; the SDK refuses, per model, what that model lacks.
        self.latent_dim = max(m.latent_dim for m in models)
        self.same_dim = len({m.latent_dim for m in models}) == 1
        self.priors = list(dict.fromkeys(p for m in models for p in m.priors))
        self.directions = list(dict.fromkeys(d for m in models for d in m.describe()["directions"]))
        self.any_vae = any(m.kind == "vae" for m in models)
        self.files = sorted({f for m in models for f in m.describe()["files"].values()})
        self.per_model = "; ".join(
            f"{m.name}: {m.kind}, {m.describe()['image']['height']}x{m.describe()['image']['width']}x"
            f"{m.describe()['image']['channels']} images, latent_dim {m.latent_dim}, default prior {m.default_prior}, "
            f"priors {', '.join(m.priors) or 'none'}"
            for m in models
        )

    # ---- parameters ---------------------------------------------------------------------
    def name_param(self) -> Any:
        from fastapi import Path

        return Path(description=f"A served model: {self.per_model}.", json_schema_extra={"enum": self.names})

    def file_param(self) -> Any:
        from fastapi import Path

        return Path(description="A file of the bundle, as listed in its description's `files`.", json_schema_extra={"enum": self.files})

    # ---- request bodies -----------------------------------------------------------------
    def sample_model(self, choices: bool = True) -> type[BaseModel]:
        """The sample request; with choices=False, `prior` is any string (the server parses with
        that model and lets the SDK refuse a prior in its own words)."""
        lim = self.limits
        prior: Any = Literal[tuple(self.priors)] if self.priors and choices else str  # type: ignore[valid-type]
        return create_model(
            f"{self.title}SampleRequest",
            __config__=ConfigDict(extra="forbid"),
            n=(int, Field(self.default_n, ge=1, le=lim.max_n, description=f"Images to draw (this server's limit: {lim.max_n}).")),
            seed=(Optional[int], Field(None, ge=SEED_MIN, description="Seed; omitted: one is drawn and returned in X-Vaesdk-Seed.")),
            prior=(Optional[prior], Field(None, description="A prior of the model; omitted: the model's default prior.")),
            temperature=(float, Field(1.0, ge=0, le=MAX_TEMPERATURE, description="Scale of the prior's spread (1 = its own).")),
            truncation=(Optional[float], Field(None, gt=0, description="Redraw latents beyond this many prior standard deviations.")),
            ncols=(Optional[int], Field(None, ge=1, le=lim.max_n, description="Grid columns for the PNG answer.")),
        )

    def decode_model(self) -> type[BaseModel]:
        lim = self.limits
        row_len = {"min_length": self.latent_dim, "max_length": self.latent_dim} if self.same_dim else {"min_length": 1}
        number = Field(ge=-MAX_ABS_LATENT, le=MAX_ABS_LATENT)
        return create_model(
            f"{self.title}DecodeRequest",
            __config__=ConfigDict(extra="forbid"),
            latents=(
                list[Annotated[list[Annotated[float, number]], Field(**row_len)]],
                Field(..., min_length=1, max_length=lim.max_latents, description="Latents to decode, each a row of the model's latent_dim numbers."),
            ),
            ncols=(Optional[int], Field(None, ge=1, le=lim.max_latents, description="Grid columns for the PNG answer.")),
        )

    def json_body(self, model: type[BaseModel]) -> dict[str, Any]:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        required = bool(schema.get("required"))
        text = "A JSON object." if required else "A JSON object; every field is optional (an empty body is {})."
        return {"requestBody": {"required": required, "content": {JSON: {"schema": schema}}, "description": text}}

    def multipart(self, fields: dict[str, dict[str, Any]], extra: dict[str, Any] | None = None) -> dict[str, Any]:
        lim = self.limits
        image = {
            "type": "array", "minItems": 1, "maxItems": lim.max_images,
            "items": {"type": "string", "format": "binary", "contentMediaType": "application/octet-stream"},
            "description": f"Image files (PNG, JPEG, ...; at most {lim.max_images}, each at most {lim.max_image_pixels} pixels, "
                           f"the whole request at most {lim.max_body_bytes} bytes). Converted to each model's size and mode.",
        }  # fmt: skip
        schema = {"type": "object", "properties": {"image": image, **fields}, "required": ["image"], "additionalProperties": False, **(extra or {})}
        return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}}}

    def seed_field(self, default: int | None, maximum: int | None = None) -> dict[str, Any]:
        text = "Seed" + ("; omitted: one is drawn and returned in X-Vaesdk-Seed." if default is None else ".")
        return {"type": "integer", "minimum": SEED_MIN, **({"maximum": maximum} if maximum is not None else {}), **({"default": default} if default is not None else {}), "description": text}

    def random_fields(self) -> dict[str, dict[str, Any]]:
        out = {"sample_pixels": {"type": "boolean", "default": False, "description": "Draw pixels from p(x|z) instead of its mean."}}
        if self.any_vae:
            vaes = [m.name for m in self.models if m.kind == "vae"]
            only = "" if len(vaes) == len(self.models) else f" (VAEs only: {', '.join(vaes)})"
            out["sample_latent"] = {"type": "boolean", "default": False, "description": f"Draw z from q(z|x) instead of its mean{only}."}
        elif self.served.any_vae:
            # The server reads this field for every model; a plain autoencoder refuses true.
            out["sample_latent"] = {"type": "boolean", "enum": [False], "default": False, "description": "A plain autoencoder has no q(z|x) to draw from: false only."}
        return out

    def reconstruct_body(self) -> dict[str, Any]:
        return self.multipart({**self.random_fields(), "seed": self.seed_field(None)})

    def edit_body(self) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "dim": {"type": "integer", "minimum": 0, "maximum": self.latent_dim - 1, "description": "The latent dimension to move (or give direction)."},
            "delta": {"type": "number", "minimum": -MAX_EDIT_DELTA, "maximum": MAX_EDIT_DELTA, "default": 1.0, "description": "How far to move, in prior standard deviations."},
            **self.random_fields(), "seed": self.seed_field(None),
        }  # fmt: skip
        if not self.directions:
            return self.multipart(fields, {"required": ["image", "dim"]})
        fields["direction"] = {"type": "string", "enum": self.directions, "description": "A direction of the bundle (or give dim)."}
        # Exactly one of dim and direction.
        # Exactly one of dim and direction: each branch lists its own fields and no others.
        both = {"image": {}, **{k: {} for k in fields}}
        only = [
            {"properties": {k: v for k, v in both.items() if k != other}, "required": ["image", one], "additionalProperties": False}
            for one, other in (("dim", "direction"), ("direction", "dim"))
        ]
        return self.multipart(fields, {"anyOf": only})  # disjoint branches: anyOf is oneOf here

    def encode_body(self) -> dict[str, Any]:
        return self.multipart({})

    def score_body(self) -> dict[str, Any]:
        k = {"type": "integer", "minimum": 1, "maximum": self.limits.max_k, "default": DEFAULT_IW_SAMPLES,
             "description": f"Importance samples, as `vae score --k` and Model.score (default {DEFAULT_IW_SAMPLES}: the anomaly score needs no more)."}  # fmt: skip
        # Scores run as a batch job (vaesdk.run_job), whose seeds are bounded.
        return self.multipart({"k": k, "seed": self.seed_field(0, JOB_SEED_MAX)})

    # ---- answers --------------------------------------------------------------------------
    def errors(self, *statuses: int) -> dict[int | str, dict[str, Any]]:
        text = {
            401: "No valid token: send 'Authorization: Bearer TOKEN'.",
            403: "A request from another origin (a web page the user opened), which this server does not allow (--cors-origin).",
            415: "A JSON route given a body of another media type: send Content-Type: application/json.",
            404: "Unknown model (the detail lists the served ones) or file.",
            408: "The request did not arrive within the header or body deadline; the connection is closed.",
            413: "Over a limit of this server (body size, images, n, latents, k); the detail names it.",
            422: "An invalid value; the detail names it and the valid ones.",
            500: "The model failed on this input (an onnxruntime failure); one line, never a traceback.",
            503: "Every worker and queue place is busy; retry after Retry-After seconds.",
            504: "The request took longer than this server's time limit.",
        }
        headers = {
            401: {"WWW-Authenticate": {"schema": {"type": "string"}, "description": "Bearer"}},
            503: {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait before retrying."}},
        }
        out: dict[int | str, dict[str, Any]] = {}
        for status in statuses:
            if status == 401 and not self.token:
                continue
            out[status] = {"model": ErrorBody, "description": text[status], **({"headers": headers[status]} if status in headers else {})}
        return out

    def image_answer(self, json_model: type[BaseModel], one: str, several: str, seeded: bool) -> dict[int | str, dict[str, Any]]:
        seed = {"X-Vaesdk-Seed": {"schema": {"type": "integer"}, "description": "The seed used (to repeat the request)."}}
        return {
            200: {
                "description": f"{one} Send 'Accept: application/json' for {several}",
                "model": json_model,
                "content": {PNG: {"schema": {"type": "string", "format": "binary"}}},
                **({"headers": seed} if seeded else {}),
            }
        }

    # ---- the document, one path per served model ----------------------------------------
    def for_model(self, model: vaesdk.Model) -> "Contract":
        """The declarations of one served model: its own latent size, priors, directions, kind."""
        return Contract([model], self.limits, self.token, served=self)

    def per_model_paths(self, paths: dict[str, Any]) -> dict[str, Any]:
        """`paths` (FastAPI's, with the routes' `{name}`) with every `/v1/models/{name}...` path
        written out once per served model, with that model's request schemas and files.

        Operation ids become `<model>_<operation>` (fashion_mnist_sample) and each model's
        operations share its tag, so a generated client groups them by model."""
        out: dict[str, Any] = {}
        for path, ops in paths.items():
            if "{name}" not in path:
                out[path] = ops
                continue
            for m in self.models:
                one = self.for_model(m)
                bodies = {
                    "sample": one.json_body(one.sample_model()), "decode": one.json_body(one.decode_model()),
                    "reconstruct": one.reconstruct_body(), "edit": one.edit_body(), "encode": one.encode_body(), "score": one.score_body(),
                }  # fmt: skip
                written: dict[str, Any] = {}
                for method, op in ops.items():
                    op = copy.deepcopy(op)
                    kind = op["operationId"]
                    op["operationId"] = f"{operation_prefix(m.name)}_{kind}"
                    op["tags"] = [m.name]
                    params = [p for p in op.get("parameters", []) if p["name"] != "name"]
                    for p in params:
                        if p["name"] == "file":
                            p["schema"]["enum"] = list(m.describe()["files"].values())
                    if params:
                        op["parameters"] = params
                    else:
                        op.pop("parameters", None)
                    if kind in bodies:
                        op["requestBody"] = bodies[kind]["requestBody"]
                    answer = op["responses"].get("200", {}).get("content", {})
                    if PNG in answer:  # the answer without an Accept header first: generated clients expect it
                        op["responses"]["200"]["content"] = {PNG: answer[PNG], **answer}
                    if "file" not in path:  # the model is in the path: only a missing file is 404
                        op["responses"].pop("404", None)
                    written[method] = op
                out[path.replace("{name}", quote(m.name, safe=""))] = written
        return out
