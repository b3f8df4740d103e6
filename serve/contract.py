"""The service's OpenAPI contract: request bodies, answers and errors, written where FastAPI
reads them, from the served bundles' facts, the server's limits and the SDK's own bounds.

The routes parse requests themselves and let the SDK's `validate` judge the values (so the
messages are the SDK's); these declarations describe exactly what that accepts. The server
routes `/v1/models/{name}/...` for every served model, but one request schema cannot say what
each of several models accepts (latent size, priors, directions, a plain autoencoder among
VAEs, spatial latents beside flat ones): the document writes each of those paths out once per
served model (`/v1/models/fashion-mnist/decode`), each with that model's own exact schemas and
only the operations that model has (`operations_of`, `Contract.per_model_paths`).

A model with spatial latents [C, h, w] (the autoencoders of latent diffusion) takes images at
their own size: its decode takes latents with their shape, its encode answers them with their
shape, and it has `embed` (per-channel means, [C] per image) instead of `sample` and `score`,
which the SDK refuses for it.
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
from vaesdk.frontend import JOB_SEED_MAX, MAX_ABS_LATENT, MAX_IMAGE_SIDE, MAX_TEMPERATURE, SEED_MIN

PNG = "image/png"
JSON = "application/json"
# edit's |delta|: the SDK refuses a delta that pushes a latent past +-MAX_ABS_LATENT, which
# depends on the image; within 1000 prior standard deviations no encoded image gets there.
MAX_EDIT_DELTA = 1000.0
DEFAULT_N = 16  # sample's n when the request gives none (at most the server's max_n)
PRECISION_HEADER = "X-Vaesdk-Precision"  # a spatial decode's precision per image, in order

# The computing routes of /v1 each kind of model has. A model with spatial latents has no
# sample (no prior of latents of one size) and no score (a deterministic decoder: no
# likelihood): the SDK refuses both, and the route answers that refusal (422). It has embed:
# pooled features [C], where a flat model's features are its encode means.
FLAT_OPERATIONS = ("sample", "decode", "reconstruct", "edit", "encode", "score")
SPATIAL_OPERATIONS = ("decode", "reconstruct", "edit", "encode", "embed")
# A direction given as numbers: one per latent channel, each below 100 in size, so that any
# edit within +-MAX_EDIT_DELTA stays within the SDK's latent bound.
CHANNEL_NUMBER = r"-?[0-9]{1,2}(\.[0-9]{1,6})?"


def _regex_literal(text: str) -> str:
    """`text` as a regular expression that matches it alone, in the syntax JSON Schema, Python
    and pydantic share (re.escape also escapes '-', which ECMA-262's unicode mode refuses)."""
    return re.sub(r"([.^$*+?()\[\]{}|\\/])", r"\\\1", text)


def operations_of(model: vaesdk.Model) -> tuple[str, ...]:
    """The computing routes of /v1 (`/v1/models/NAME/<operation>`) that `model` has."""
    return SPATIAL_OPERATIONS if model.geometry.spatial else FLAT_OPERATIONS


def summary(model: vaesdk.Model) -> str:
    """One served model in a few words, for the document's descriptions."""
    g = model.geometry
    if not g.spatial:
        return (
            f"{model.name}: {model.kind}, {g.height}x{g.width}x{g.channels} images, latent_dim {model.latent_dim}, "
            f"default prior {model.default_prior}, priors {', '.join(model.priors) or 'none'}"
        )
    size = f"{g.height}x{g.width}x{g.channels}" if g.fixed_size else f"any size (sides multiples of {g.multiple}) x{g.channels}"
    return f"{model.name}: {model.kind}, {size} images, spatial latents [{g.latent_channels}, H/{g.factor}, W/{g.factor}]"


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


class SpatialEncodeItem(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    shape: list[int] = Field(description="[C, h, w]: this image's latent (h = H/f, w = W/f).")
    mean: list[float] = Field(description="The posterior mean, C*h*w numbers, row-major (channel, then row, then column).")
    logvar: Optional[list[float]] = Field(description="The posterior log-variance, as mean; null for a plain autoencoder.")


class SpatialEncodeResults(BaseModel):
    model_config = ConfigDict(extra="forbid")
    results: list[Union[SpatialEncodeItem, ItemError]] = Field(description="One entry per upload, in upload order.")


class SpatialDecodeJson(BaseModel):
    model_config = ConfigDict(extra="forbid")
    images: list[str] = Field(description="One base64 PNG per latent, h*f x w*f.")
    precision: list[str] = Field(description="The precision each image was decoded in: fp32, fp16, or 'fp32 (fp16 was not finite)'.")


class EmbedItem(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    features: list[float] = Field(description="The latent's per-channel means over its pixels, [C]: comparable across image sizes.")


class EmbedResults(BaseModel):
    model_config = ConfigDict(extra="forbid")
    results: list[Union[EmbedItem, ItemError]] = Field(description="One entry per upload, in upload order.")


SPATIAL_ANSWERS = (SpatialEncodeResults, SpatialDecodeJson, EmbedResults)  # in the document when a spatial model is served


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
        # The declarations of one model with spatial latents (for_model) take its own shapes.
        self.spatial = served is not None and models[0].geometry.spatial
        flat = [m for m in models if not m.geometry.spatial]
        # What any served model accepts; the SDK refuses, per model, what that model lacks.
        self.latent_dim = max((m.latent_dim for m in flat), default=1)
        self.same_dim = len({m.latent_dim for m in flat}) <= 1
        self.priors = list(dict.fromkeys(p for m in models for p in m.priors))
        self.directions = list(dict.fromkeys(d for m in models for d in m.describe()["directions"]))
        self.any_vae = any(m.kind == "vae" for m in models)
        self.files = sorted({f for m in models for f in m.describe()["files"].values()})
        self.per_model = "; ".join(summary(m) for m in models)

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
        if self.spatial:
            return self.spatial_decode_model()
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

    def spatial_decode_model(self) -> type[BaseModel]:
        """The decode request of a model with spatial latents: latents [N, C, h, w] as their
        shape and N*C*h*w numbers, row-major; the images are h*f x w*f."""
        m = self.models[0]
        g, lim = m.geometry, self.limits
        f, c = g.factor or 1, g.latent_channels
        if g.fixed_size:
            h, w = g.latent_size(*g.image_shape[:2])
            sides: tuple[Any, Any] = (Literal[h], Literal[w])  # type: ignore[valid-type]
        else:
            side = Annotated[int, Field(ge=1, le=MAX_IMAGE_SIDE // f)]
            sides = (side, side)
        shape = tuple[Annotated[int, Field(ge=1, le=lim.max_latents)], Literal[c], sides[0], sides[1]]  # type: ignore[valid-type]
        precisions = ("fp32", "fp16") if m.manifest.fp16_decoder is not None else ("fp32",)
        number = Field(ge=-MAX_ABS_LATENT, le=MAX_ABS_LATENT)
        size = f"{g.height}x{g.width}" if g.fixed_size else f"h*{f} x w*{f}, sides multiples of {g.multiple}, at most {lim.max_image_pixels} pixels"
        return create_model(
            f"{self.title}DecodeRequest",
            __config__=ConfigDict(extra="forbid"),
            shape=(shape, Field(..., description=f"[N, C, h, w] of the latents: N up to {lim.max_latents}, C = {c}; the images are {size}.")),
            latents=(list[Annotated[float, number]], Field(..., min_length=1, description="N*C*h*w numbers, row-major (latent, channel, row, column), as encode answers them.")),
            precision=(
                Optional[Literal[precisions]],  # type: ignore[valid-type]
                Field(None, description="The decoder's precision: " + " or ".join(precisions) + "; omitted: fp16 on CUDA with a float16 decoder, else fp32."),
            ),
        )

    def json_body(self, model: type[BaseModel]) -> dict[str, Any]:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        required = bool(schema.get("required"))
        text = "A JSON object." if required else "A JSON object; every field is optional (an empty body is {})."
        return {"requestBody": {"required": required, "content": {JSON: {"schema": schema}}, "description": text}}

    def multipart(self, fields: dict[str, dict[str, Any]], extra: dict[str, Any] | None = None) -> dict[str, Any]:
        lim = self.limits
        g = self.models[0].geometry
        taken = "Converted to each model's size and mode."
        if self.spatial and not g.fixed_size:
            taken = f"Taken at their own size, whose sides must be multiples of {g.multiple} (up to {MAX_IMAGE_SIDE}), and converted to the model's mode."
        image = {
            "type": "array", "minItems": 1, "maxItems": lim.max_images,
            "items": {"type": "string", "format": "binary", "contentMediaType": "application/octet-stream"},
            "description": f"Image files (PNG, JPEG, ...; at most {lim.max_images}, each at most {lim.max_image_pixels} pixels, "
                           f"the whole request at most {lim.max_body_bytes} bytes). {taken}",
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
        if self.spatial:
            return self.multipart(self.spatial_fields())
        return self.multipart({**self.random_fields(), "seed": self.seed_field(None)})

    def spatial_fields(self) -> dict[str, dict[str, Any]]:
        """reconstruct's fields for spatial latents: a deterministic decoder has no pixels to draw."""
        return {**{k: v for k, v in self.random_fields().items() if k != "sample_pixels"}, "seed": self.seed_field(None)}

    def spatial_edit_body(self) -> dict[str, Any]:
        """edit of spatial latents: a direction (a name, or one number per latent channel added
        to every latent pixel) and delta; no dim (a latent number is no factor of variation)."""
        m = self.models[0]
        c, names = m.geometry.latent_channels, m.describe()["directions"]
        vector = f"{CHANNEL_NUMBER}(,{CHANNEL_NUMBER}){{{c - 1}}}" if c > 1 else CHANNEL_NUMBER
        pattern = "^(" + "|".join([*map(_regex_literal, names), vector]) + ")$"
        example = ",".join(["0.5", *["0"] * (c - 2), "-0.5"][:c])
        known = f"a direction of the bundle ({', '.join(names)}), or " if names else ""
        fields: dict[str, Any] = {
            "direction": {"type": "string", "pattern": pattern,
                          "description": f"{known}{c} comma-separated numbers, each within +-100: an offset per latent channel, added to every latent pixel (e.g. {example})."},
            "delta": {"type": "number", "minimum": -MAX_EDIT_DELTA, "maximum": MAX_EDIT_DELTA, "default": 1.0, "description": "How far to move along the direction."},
            **self.spatial_fields(),
        }  # fmt: skip
        return self.multipart(fields, {"required": ["image", "direction"]})

    def edit_body(self) -> dict[str, Any]:
        if self.spatial:
            return self.spatial_edit_body()
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

    def embed_body(self) -> dict[str, Any]:
        return self.multipart({})

    def bodies(self) -> dict[str, dict[str, Any]]:
        """The request body of each computing route this contract's model has."""
        made = {
            "sample": lambda: self.json_body(self.sample_model()), "decode": lambda: self.json_body(self.decode_model()),
            "reconstruct": self.reconstruct_body, "edit": self.edit_body, "encode": self.encode_body, "score": self.score_body,
            "embed": self.embed_body,
        }  # fmt: skip
        return {op: made[op]() for op in operations_of(self.models[0])}

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

    # What a spatial model's routes do, where it differs from the routes' own (flat) descriptions.
    SPATIAL_DESCRIPTIONS = {
        "decode": "JSON {shape: [N, C, h, w], latents: [N*C*h*w numbers], precision} -> the PNG of one latent at h*f x w*f "
                  "(or JSON images), with the precision that ran in X-Vaesdk-Precision.",
        "reconstruct": "Multipart images of any size the model takes (+ optional sample_latent, seed) -> PNG at the image's size "
                       "for one image, JSON {results: [{name, png | error}]} for several.",
        "edit": "Multipart images + direction (a name, or one number per latent channel), delta (+ sample_latent, seed) -> PNG "
                "at the image's size for one image, JSON for several.",
        "encode": "Multipart images -> JSON {results: [{name, shape: [C, h, w], mean, logvar} | {name, error}]}, mean and logvar "
                  "C*h*w numbers each, row-major (logvar null for an autoencoder).",
    }  # fmt: skip

    def spatial_answers(self) -> dict[str, dict[str, Any]]:
        """The 200 answers of a spatial model's routes whose answers differ from a flat model's."""
        f = self.models[0].geometry.factor

        def ref(model: type[BaseModel]) -> dict[str, Any]:
            return {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}

        precision = {PRECISION_HEADER: {"schema": {"type": "string"}, "description": "The precision each image was decoded in, comma-separated, in order."}}
        return {
            "decode": {
                "description": f"One latent: its image, PNG, h*{f} x w*{f}. Send 'Accept: application/json', or several latents, for one PNG each.",
                "content": {PNG: {"schema": {"type": "string", "format": "binary"}}, JSON: ref(SpatialDecodeJson)}, "headers": precision,
            },
            "encode": {"description": "Each upload's latent with its shape, or the error that stopped it.", "content": {JSON: ref(SpatialEncodeResults)}},
            "embed": {"description": "Each upload's features [C], or the error that stopped it.", "content": {JSON: ref(EmbedResults)}},
        }  # fmt: skip

    def components(self) -> dict[str, Any]:
        """Schemas the per-model paths refer to that no route declares: the answers of models
        with spatial latents, when one is served."""
        if not any(m.geometry.spatial for m in self.models):
            return {}
        out: dict[str, Any] = {}
        for model in SPATIAL_ANSWERS:
            schema = model.model_json_schema(ref_template="#/components/schemas/{model}", mode="serialization")
            out.update(schema.pop("$defs", {}))
            out[model.__name__] = schema
        return out

    # ---- the document, one path per served model ----------------------------------------
    def for_model(self, model: vaesdk.Model) -> "Contract":
        """The declarations of one served model: its own latent size, priors, directions, kind."""
        return Contract([model], self.limits, self.token, served=self)

    def per_model_paths(self, paths: dict[str, Any]) -> dict[str, Any]:
        """`paths` (FastAPI's, with the routes' `{name}`) with every `/v1/models/{name}...` path
        written out once per served model, with that model's request schemas and files.

        Operation ids become `<model>_<operation>` (fashion_mnist_sample) and each model's
        operations share its tag, so a generated client groups them by model. A computing route
        a model does not have (`operations_of`) is left out of its paths."""
        out: dict[str, Any] = {}
        every = set(FLAT_OPERATIONS) | set(SPATIAL_OPERATIONS)
        for path, ops in paths.items():
            if "{name}" not in path:
                out[path] = ops
                continue
            for m in self.models:
                one = self.for_model(m)
                bodies = one.bodies()
                answers = one.spatial_answers() if one.spatial else {}
                written: dict[str, Any] = {}
                for method, op in ops.items():
                    kind = op["operationId"]
                    if kind in every and kind not in bodies:
                        continue
                    op = copy.deepcopy(op)
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
                    if kind in answers:
                        op["responses"]["200"] = answers[kind]
                    if one.spatial and kind in self.SPATIAL_DESCRIPTIONS:
                        op["description"] = self.SPATIAL_DESCRIPTIONS[kind]
                    answer = op["responses"].get("200", {}).get("content", {})
                    if PNG in answer:  # the answer without an Accept header first: generated clients expect it
                        op["responses"]["200"]["content"] = {PNG: answer[PNG], **answer}
                    if "file" not in path:  # the model is in the path: only a missing file is 404
                        op["responses"].pop("404", None)
                    written[method] = op
                if written:
                    out[path.replace("{name}", quote(m.name, safe=""))] = written
        return out
