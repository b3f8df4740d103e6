"""The FastAPI app of `vae serve`: routes that parse a request, make one SDK call in a bounded
worker pool, and answer PNG or JSON.

Safe by default: the models are fixed when the app is made (a request can only name one of
them, never a path), request bodies, images, sample counts and batches are capped (413/422
naming the limit), a full pool answers 503 at once instead of queueing without bound, a
request that runs too long answers 504, and every error is JSON {"error", "detail"}.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import Any, Awaitable, Callable

import numpy as np
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.concurrency import run_in_threadpool
from starlette.routing import Match, Mount

import vaesdk
from vaesdk import DEFAULT_IW_SAMPLES, encode_png, frontend, make_grid
from vaesdk.base.errors import (
    BundleError, CancelledError, DeviceUnavailableError, InferenceError, InvalidArgumentError, ModelNotFoundError, VaesdkError,
)  # fmt: skip
from vaesdk.frontend import cancellable

from . import contract
from .settings import ServeConfig

PNG = "image/png"
DOCS_ASSETS = "/docs-assets"  # Swagger UI's files (web/docs-vendor/, pinned by web/copy-vendor.mjs)
INTEGER_FIELDS = {"n", "seed", "ncols"}  # the JSON bodies' integer fields (serve/contract.py)


class ApiError(Exception):
    def __init__(self, status: int, error: str, detail: str, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.status, self.error, self.detail, self.headers = status, error, detail, headers


class BodyTooLarge(Exception):
    pass


def _error_response(status: int, error: str, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail}, status_code=status, headers=headers)


def _status_of(e: VaesdkError) -> tuple[int, str]:
    if isinstance(e, ModelNotFoundError):
        return 404, "not_found"
    if isinstance(e, InvalidArgumentError):
        return 422, "invalid_argument"
    if isinstance(e, vaesdk.InvalidImageError):
        return 422, "invalid_image"
    if isinstance(e, (InferenceError, DeviceUnavailableError, BundleError)):
        return 500, "model_failure"
    return 500, "error"


class Pool:
    """A fixed set of worker threads with a bounded wait list: overload is refused at once
    (503) rather than held in memory. Work whose client has gone, or that ran past its
    timeout, is cancelled: a queued job never starts, a running one stops at its next
    batch (session.cancellable), and its slot is free again."""

    def __init__(self, workers: int, queue: int):
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="vae-serve")
        self._slots = threading.BoundedSemaphore(workers + queue)
        self.capacity = workers + queue
        self._busy = 0
        self.cancelled = 0  # jobs stopped part-way because their client left or their time ran out
        self._lock = threading.Lock()

    @property
    def busy(self) -> int:
        """Requests holding a slot now (computing or waiting for a worker)."""
        return self._busy

    def _release(self, _: Any) -> None:
        with self._lock:
            self._busy -= 1
        self._slots.release()

    async def run(self, fn: Callable[[], Any], timeout: float, gone: Callable[[], Awaitable[Any]] | None = None) -> Any:
        """fn() in a worker; `gone` (when given) returns once the client has disconnected."""
        if not self._slots.acquire(blocking=False):
            raise ApiError(503, "overloaded", f"all {self.capacity} request slots are busy; retry shortly", {"Retry-After": "1"})
        with self._lock:
            self._busy += 1
        stop = threading.Event()

        def work() -> Any:
            with cancellable(stop):
                try:
                    return fn()
                except CancelledError:
                    with self._lock:
                        self.cancelled += 1
                    raise

        future: Future = self._executor.submit(work)
        # Released when the work ends or is cancelled before it starts.
        future.add_done_callback(self._release)
        result = asyncio.wrap_future(future)
        result.add_done_callback(lambda f: f.cancelled() or f.exception())  # read once: never "never retrieved"
        waiters: set[asyncio.Future] = {result}
        watcher = asyncio.ensure_future(gone()) if gone is not None else None
        if watcher is not None:
            waiters.add(watcher)
        try:
            done, _ = await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if watcher is not None:
                watcher.cancel()
        if result in done:
            return result.result()
        stop.set()
        future.cancel()
        if watcher is not None and watcher in done:
            raise ApiError(499, "client_closed_request", "the client disconnected before the answer was ready")
        raise ApiError(504, "timeout", f"the request took longer than the {timeout:g} s limit")

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True)


class _LimitBody:
    """ASGI wrapper: refuse a body over the limit from its Content-Length, and stop reading
    one that grows past it (chunked uploads)."""

    def __init__(self, app: Any, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for key, value in scope.get("headers", []):
            if key == b"content-length" and value.isdigit() and int(value) > self.limit:
                response = _error_response(413, "too_large", f"the request body is {int(value)} bytes; the limit is {self.limit}")
                return await response(scope, receive, send)
        seen = 0

        async def limited() -> dict:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise BodyTooLarge(f"the request body exceeds the limit of {self.limit} bytes")
            return message

        await self.app(scope, limited, send)


class _SameOrigin:
    """Refuse requests that change or compute something (POST and the like) sent by a web page
    of another origin, unless --cors-origin allows that origin: browsers send them without
    asking first (text/plain and multipart are "simple" requests), so any page the user opens
    could otherwise make a local service compute. Requests without an Origin header (curl,
    scripts, clients) and the server's own page pass."""

    SAFE = {"GET", "HEAD", "OPTIONS"}

    def __init__(self, app: Any, allowed: list[str]):
        self.app, self.allowed = app, {o.rstrip("/") for o in allowed}

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "http" and scope.get("method", "GET") not in self.SAFE:
            headers = dict(scope.get("headers", []))
            origin = headers.get(b"origin", b"").decode("latin-1").rstrip("/")
            host = headers.get(b"host", b"").decode("latin-1")
            if origin and origin not in self.allowed and origin.split("://", 1)[-1] != host:
                response = _error_response(
                    403, "cross_origin", f"a request from the web page origin {origin[:100]} is refused; allow it with --cors-origin {origin[:100]}"
                )
                return await response(scope, receive, send)
        await self.app(scope, receive, send)


class _Page(Mount):
    """The browser page at /, for every path that is not the API's: a path of the API with
    another method still answers 405 with Allow (a mount at / would take it first)."""

    def __init__(self, app: Any, api_paths: list[str]):
        super().__init__("/", app=app, name="page")
        self._api = {p.split("{", 1)[0].rstrip("/") for p in api_paths}

    def matches(self, scope: dict) -> tuple[Match, dict]:
        path = scope.get("path", "")
        if path.startswith("/v1/") or path.rstrip("/") in self._api:
            return Match.NONE, {}
        return super().matches(scope)


def _web_dir(config: ServeConfig) -> Path:
    if config.web_dir is not None:
        return config.web_dir
    return Path(str(resources.files("vaesdk.web")))


def create_app(models: list[vaesdk.Model], config: ServeConfig | None = None) -> Any:
    """The ASGI app serving `models` (loaded bundles, fixed for the app's life)."""
    config = config or ServeConfig()
    limits = config.limits
    by_name: dict[str, vaesdk.Model] = {}
    for m in models:
        if m.name in by_name:
            raise InvalidArgumentError(f"two bundles are named {m.name!r}; serve each name once")
        by_name[m.name] = m
    if not by_name:
        raise InvalidArgumentError("no models to serve")
    pool = Pool(limits.workers, limits.queue)
    doc = contract.Contract(list(by_name.values()), limits, token=config.token is not None)
    descriptions = {name: {k: v for k, v in m.describe().items() if k != "path"} for name, m in by_name.items()}

    app = FastAPI(
        title="vaesdk",
        version=vaesdk.__version__,
        description=(
            "Sample, encode, edit, decode and score images with exported VAE bundles. Every error is JSON "
            "{error, detail}; a method a path does not have answers 405 with Allow. "
            + ("Routes under /v1 need 'Authorization: Bearer TOKEN'." if config.token else "")
        ).strip(),
        # /docs is served below from the installed Swagger UI files; FastAPI's own pages load
        # theirs from a CDN (blank without internet). ReDoc has no vendored copy: off.
        docs_url=None,
        redoc_url=None,
    )
    app.state.pool = pool

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, e: ApiError) -> JSONResponse:
        return _error_response(e.status, e.error, e.detail, e.headers)

    @app.exception_handler(VaesdkError)
    async def _sdk_error(request: Request, e: VaesdkError) -> JSONResponse:
        status, error = _status_of(e)
        return _error_response(status, error, str(e).splitlines()[0] if str(e) else type(e).__name__)

    @app.exception_handler(BodyTooLarge)
    async def _too_large(request: Request, e: BodyTooLarge) -> JSONResponse:
        return _error_response(413, "too_large", str(e))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, e: RequestValidationError) -> JSONResponse:
        first = e.errors()[0] if e.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return _error_response(422, "invalid_argument", f"{where}: {first.get('msg', 'invalid request')}".strip(": "))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, e: StarletteHTTPException) -> JSONResponse:
        headers = dict(e.headers or {})
        if e.status_code == 405 and "allow" not in {k.lower() for k in headers}:
            headers["Allow"] = "GET, HEAD"  # the page's static files (RFC 9110: a 405 names the allowed methods)
        detail = str(e.detail)
        if e.status_code == 405:
            detail = f"{request.method} is not allowed on {request.url.path[:80]}; allowed: {headers.get('Allow') or headers.get('allow')}"
        return _error_response(e.status_code, "http_error", detail, headers)

    @app.exception_handler(CancelledError)
    async def _cancelled(request: Request, e: CancelledError) -> JSONResponse:
        return _error_response(499, "client_closed_request", str(e))

    @app.exception_handler(Exception)
    async def _internal(request: Request, e: Exception) -> JSONResponse:
        # A bug, not the client's fault: one line, never a traceback.
        return _error_response(500, "internal_error", f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}")

    def authorize(request: Request) -> None:
        if config.token is None:
            return
        given = request.headers.get("authorization", "")
        scheme, _, value = given.partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(value.encode(), config.token.encode()):
            raise ApiError(401, "unauthorized", "a valid token is required: send 'Authorization: Bearer TOKEN'", {"WWW-Authenticate": "Bearer"})

    def model_of(name: str) -> vaesdk.Model:
        if name not in by_name:
            raise ApiError(404, "not_found", f"unknown model {name[:80]!r}; served models: {', '.join(by_name)}")
        return by_name[name]

    async def compute(request: Request, fn: Callable[[], Any]) -> Any:
        async def gone() -> None:
            # The body has been read: the next ASGI message is the client's disconnect.
            while (await request.receive())["type"] != "http.disconnect":
                pass

        return await pool.run(fn, limits.timeout_s, gone)

    def wants_json(request: Request) -> bool:
        return "application/json" in request.headers.get("accept", "")

    async def json_body(request: Request) -> dict[str, Any]:
        raw = await request.body()
        if not raw:
            return {}
        media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if media != "application/json" and not media.endswith("+json"):
            # Browsers send text/plain (and forms) across sites without asking first: a JSON
            # route takes JSON only.
            raise ApiError(415, "unsupported_media_type", f"the body is {media or 'of no media type'}; send it as Content-Type: application/json")
        try:
            # Off the event loop: a large body must not hold up the server's other requests.
            body = await run_in_threadpool(json.loads, raw)
        except (ValueError, RecursionError):
            raise ApiError(422, "invalid_argument", "the request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise ApiError(422, "invalid_argument", "the request body must be a JSON object")
        # JSON has one number type: 6.0 is the integer 6 (JSON Schema agrees), for the SDK too.
        return {k: int(v) if k in INTEGER_FIELDS and isinstance(v, float) and v.is_integer() else v for k, v in body.items()}

    sample_body, decode_body = doc.sample_model(), doc.decode_model()
    sample_fields, decode_fields = set(sample_body.model_fields), set(decode_body.model_fields)

    def known_fields(body: dict[str, Any], known: set[str]) -> None:
        unknown = set(body) - known
        if unknown:
            # A bounded answer: a few names, not every key of a hostile body.
            shown = ", ".join(k[:40] for k in sorted(unknown)[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
            raise ApiError(422, "invalid_argument", f"unknown field(s) {shown}; fields: {', '.join(sorted(known))}")

    def limit(name: str, value: Any, maximum: int, what: str) -> None:
        if isinstance(value, int) and not isinstance(value, bool) and value > maximum:
            raise ApiError(413, "too_large", f"{name}={value} is over this server's limit of {maximum} {what}")

    forms = {"reconstruct": doc.reconstruct_body(), "edit": doc.edit_body(), "encode": doc.encode_body(), "score": doc.score_body()}
    form_fields = {route: set(contract.form_properties(extra)) - {"image"} for route, extra in forms.items()}

    async def uploads(request: Request, route: str) -> tuple[list[tuple[str, bytes]], dict[str, str]]:
        """(name, bytes) of each file uploaded as `image`, and the route's other form fields."""
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise ApiError(422, "invalid_argument", "send the images as multipart/form-data file fields (e.g. curl -F image=@shirt.png)")
        try:
            form = await request.form(max_files=limits.max_images, max_fields=64, max_part_size=limits.max_body_bytes)
        except BodyTooLarge:
            raise
        except StarletteHTTPException as e:
            # Each parse error says what it is; only too many parts is about the limits.
            detail = " ".join(str(e.detail).split())[:200]
            if "many" in detail.lower():
                raise ApiError(413, "too_large", f"the multipart body is refused: {detail} (at most {limits.max_images} images and 64 fields)") from None
            raise ApiError(422, "invalid_upload", f"the multipart body cannot be read: {detail}; send multipart/form-data with image file fields") from None
        files, fields, unknown = [], {}, []
        try:
            for key, value in form.multi_items():
                if hasattr(value, "read") and key == "image":
                    files.append((value.filename or key, await value.read()))
                elif key == "image":
                    raise ApiError(422, "invalid_argument", "image must be a file upload (e.g. curl -F image=@shirt.png), not a text field")
                elif hasattr(value, "read") or key not in form_fields[route]:
                    unknown.append(key)
                elif key in fields:
                    raise ApiError(422, "invalid_argument", f"form field {key} is given more than once; give it once")
                else:
                    fields[key] = value
        finally:
            await form.close()
        if unknown:
            known = ", ".join(["image", *sorted(form_fields[route])])
            raise ApiError(422, "invalid_argument", f"unknown form field(s) {', '.join(repr(k[:40]) for k in unknown[:5])}; fields: {known}")
        if not files:
            raise ApiError(422, "invalid_argument", "no image uploaded; send one or more multipart file fields")
        if len(files) > limits.max_images:
            raise ApiError(413, "too_large", f"{len(files)} images uploaded; the limit is {limits.max_images} per request")
        return files, fields

    def form_value(fields: dict[str, str], key: str, kind: type, default: Any) -> Any:
        if key not in fields:
            return default
        text = fields[key]
        try:
            if kind is bool:
                if text.lower() not in ("true", "false"):
                    raise ValueError
                return text.lower() == "true"
            if kind is int:  # "3" or "3.0" (JSON Schema's integers include 3.0), not "3.5"
                value = float(text) if not text.lstrip("-").isdigit() else int(text)
                if isinstance(value, float) and not value.is_integer():
                    raise ValueError
                return int(value)
            return kind(text)
        except (ValueError, OverflowError):
            what = {int: "an integer", float: "a number", bool: "true or false"}.get(kind, kind.__name__)
            raise ApiError(422, "invalid_argument", f"form field {key}={text[:40]!r} must be {what}") from None

    def png_response(image: np.ndarray, headers: dict[str, str] | None = None) -> Response:
        return Response(encode_png(image), media_type=PNG, headers=headers)

    def b64png(image: np.ndarray) -> str:
        return base64.b64encode(encode_png(image)).decode("ascii")

    def per_image(files: list[tuple[str, bytes]], model: vaesdk.Model, operation: str, **options: Any) -> Callable[[], list[dict[str, Any]]]:
        """`operation` on every upload, its arguments checked now (a bad one answers 422
        before the request takes a pool slot); the work, run in a worker, gives each upload's
        result or the error that stopped it, in upload order."""
        # Decoded in that worker (workers=1): the server's pool already runs requests side by side.
        results = vaesdk.map_images(model, operation, files, workers=1, max_pixels=limits.max_image_pixels, **options)
        return lambda: [{"name": r.name, "result": r.output} if r.ok else {"name": r.name, "error": str(r.error).splitlines()[0]} for r in results]

    def image_answer(request: Request, entries: list[dict[str, Any]], headers: dict[str, str] | None = None) -> Response:
        if len(entries) == 1 and not wants_json(request):
            if "error" in entries[0]:
                raise ApiError(422, "invalid_image", entries[0]["error"])
            return png_response(entries[0]["result"], headers)
        body = [{"name": e["name"], **({"error": e["error"]} if "error" in e else {"png": b64png(e["result"])})} for e in entries]
        return JSONResponse({"results": body}, headers=headers)

    def seed_of(value: Any) -> int:
        return frontend.fresh_seed() if value is None else value

    v1 = [Depends(authorize)]

    @app.get("/healthz", tags=["service"], operation_id="healthz", response_model=contract.Health)
    async def healthz() -> dict[str, str]:
        """Whether the service is up: {status: "ok"}, with no token needed."""
        return {"status": "ok"}

    @app.get("/v1/models", tags=["models"], operation_id="list_models", dependencies=v1, response_model=contract.ModelList, responses=doc.errors(401))
    async def list_models() -> dict[str, Any]:
        """The served models' descriptions (as `Model.describe()`)."""
        return {"models": list(descriptions.values())}

    @app.get("/v1/models/{name}", tags=["models"], operation_id="describe_model", dependencies=v1, response_model=dict[str, Any], responses=doc.errors(401, 404))
    async def describe(name: str = doc.name_param()) -> dict[str, Any]:
        """One served model's description (as `Model.describe()`, without its path)."""
        model_of(name)
        return descriptions[name]

    bundle_files = {
        200: {"description": "The file's bytes.", "content": {"application/json": {"schema": {"type": "object"}}, "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}
    }

    @app.get("/v1/models/{name}/files/{file}", tags=["models"], operation_id="bundle_file", dependencies=v1, response_class=Response, responses={**bundle_files, **doc.errors(401, 404)})
    async def bundle_file(name: str = doc.name_param(), file: str = doc.file_param()) -> Response:
        """The bundle's own files (manifest.json, encoder.onnx, decoder.onnx, the mixture priors' .npz), for the page."""
        model = model_of(name)
        files = descriptions[name]["files"]
        if file not in files.values():
            raise ApiError(404, "not_found", f"no file {file[:80]!r} in bundle {name!r}; files: {', '.join(files.values())}")
        return FileResponse(model.path / file, media_type="application/json" if file.endswith(".json") else "application/octet-stream")

    @app.post(
        "/v1/models/{name}/sample", operation_id="sample", tags=["generate"], dependencies=v1, response_class=JSONResponse,
        openapi_extra=doc.json_body(sample_body),
        responses={**doc.image_answer(contract.SampleJson, "A PNG grid of the samples.", "each image and its latent.", seeded=True), **doc.errors(401, 403, 404, 408, 413, 415, 422, 500, 503, 504)},
    )  # fmt: skip
    async def sample(request: Request, name: str = doc.name_param()) -> Response:
        """JSON {n, seed, prior, temperature, truncation, ncols} -> a PNG grid (or JSON with
        the images and their latents when the request accepts application/json)."""
        model = model_of(name)
        body = await json_body(request)
        known_fields(body, sample_fields)
        n = body.get("n", doc.default_n)
        limit("n", n, limits.max_n, "images")
        seed = seed_of(body.get("seed"))
        # Checked here, once: a bad value answers 422 before the request takes a pool slot.
        draw = model.prepare(
            "sample", n=n, seed=seed, prior=body.get("prior"),
            temperature=body.get("temperature", 1.0), truncation=body.get("truncation"), return_latents=True,
        )  # fmt: skip
        ncols = body.get("ncols")
        if ncols is not None:
            limit("ncols", ncols, limits.max_n, "columns")
        as_json = wants_json(request)

        def run() -> Any:
            images, z = draw()
            return (images, z) if as_json else make_grid(images, ncols=ncols)

        result = await compute(request, run)
        headers = {"X-Vaesdk-Seed": str(seed)}
        if not as_json:
            return png_response(result, headers)
        images, z = result
        return JSONResponse({"seed": seed, "latents": z.tolist(), "images": [b64png(im) for im in images]}, headers=headers)

    @app.post(
        "/v1/models/{name}/decode", operation_id="decode", tags=["generate"], dependencies=v1, response_class=JSONResponse,
        openapi_extra=doc.json_body(decode_body),
        responses={**doc.image_answer(contract.DecodeJson, "A PNG grid of the decoded images.", "one PNG per latent.", seeded=False), **doc.errors(401, 403, 404, 408, 413, 415, 422, 500, 503, 504)},
    )  # fmt: skip
    async def decode(request: Request, name: str = doc.name_param()) -> Response:
        """JSON {latents: [[...], ...], ncols} -> a PNG grid (or JSON images)."""
        model = model_of(name)
        body = await json_body(request)
        known_fields(body, decode_fields)
        latents = body.get("latents")
        if not isinstance(latents, list) or not latents:
            raise ApiError(422, "invalid_argument", f"latents must be a non-empty list of lists of {model.latent_dim} numbers")
        limit("latents", len(latents), limits.max_latents, "latents")
        if not all(isinstance(row, list) and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in row) for row in latents):
            raise ApiError(422, "invalid_argument", f"latents must be a list of lists of {model.latent_dim} numbers")
        z = np.asarray(latents, dtype=np.float64) if len({len(r) for r in latents}) == 1 else None
        if z is None:
            raise ApiError(422, "invalid_argument", f"latents rows must all have {model.latent_dim} numbers")
        ncols = body.get("ncols")
        if ncols is not None:
            limit("ncols", ncols, limits.max_latents, "columns")
        if wants_json(request):
            images = await compute(request, lambda: model.decode(z))
            return JSONResponse({"images": [b64png(im) for im in images]})
        # One pool slot and one timeout for the whole request.
        return png_response(await compute(request, lambda: make_grid(model.decode(z), ncols=ncols)))

    @app.post(
        "/v1/models/{name}/reconstruct", operation_id="reconstruct", tags=["images"], dependencies=v1, response_class=JSONResponse, openapi_extra=forms["reconstruct"],
        responses={**doc.image_answer(contract.ImageResults, "One upload: its reconstruction, PNG.", "several uploads: one entry each.", seeded=True), **doc.errors(401, 403, 404, 408, 413, 422, 500, 503, 504)},
    )  # fmt: skip
    async def reconstruct(request: Request, name: str = doc.name_param()) -> Response:
        """Multipart images (+ optional sample_latent, sample_pixels, seed) -> PNG for one
        image, JSON {results: [{name, png | error}]} for several."""
        model = model_of(name)
        files, fields = await uploads(request, "reconstruct")
        seed = seed_of(form_value(fields, "seed", int, None))
        work = per_image(
            files, model, "reconstruct", sample_latent=form_value(fields, "sample_latent", bool, False),
            sample_pixels=form_value(fields, "sample_pixels", bool, False), seed=seed,
        )  # fmt: skip
        entries = await compute(request, work)
        return image_answer(request, entries, {"X-Vaesdk-Seed": str(seed)})

    @app.post(
        "/v1/models/{name}/edit", operation_id="edit", tags=["images"], dependencies=v1, response_class=JSONResponse, openapi_extra=forms["edit"],
        responses={**doc.image_answer(contract.ImageResults, "One upload: the edited image, PNG.", "several uploads: one entry each.", seeded=True), **doc.errors(401, 403, 404, 408, 413, 422, 500, 503, 504)},
    )  # fmt: skip
    async def edit(request: Request, name: str = doc.name_param()) -> Response:
        """Multipart images + dim or direction, delta (+ sample_latent, sample_pixels, seed)
        -> PNG for one image, JSON for several."""
        model = model_of(name)
        files, fields = await uploads(request, "edit")
        seed = seed_of(form_value(fields, "seed", int, None))
        dim, direction = form_value(fields, "dim", int, None), fields.get("direction")
        delta = form_value(fields, "delta", float, 1.0)
        if isinstance(delta, float) and abs(delta) > contract.MAX_EDIT_DELTA:
            raise ApiError(422, "invalid_argument", f"delta={delta:g} is outside this server's range of +-{contract.MAX_EDIT_DELTA:g} prior standard deviations")
        work = per_image(
            files, model, "edit", dim=dim, direction=direction, delta=delta, sample_latent=form_value(fields, "sample_latent", bool, False),
            sample_pixels=form_value(fields, "sample_pixels", bool, False), seed=seed,
        )  # fmt: skip
        entries = await compute(request, work)
        return image_answer(request, entries, {"X-Vaesdk-Seed": str(seed)})

    def job_results(result: vaesdk.JobResult, record: Callable[[int], dict[str, Any]]) -> list[dict[str, Any]]:
        """One entry per upload, in upload order: its record, or the error that stopped it."""
        return [
            {"name": name, **({"error": str(x).splitlines()[0]} if isinstance(x, VaesdkError) else record(x))}
            for name, x in result.in_input_order()
        ]

    @app.post(
        "/v1/models/{name}/encode", operation_id="encode", tags=["images"], dependencies=v1, response_model=contract.EncodeResults, openapi_extra=forms["encode"],
        responses=doc.errors(401, 403, 404, 408, 413, 422, 500, 503, 504),
    )  # fmt: skip
    async def encode(request: Request, name: str = doc.name_param()) -> JSONResponse:
        """Multipart images -> JSON {results: [{name, mean, logvar} | {name, error}]} (logvar null for an autoencoder)."""
        model = model_of(name)
        files, _ = await uploads(request, "encode")
        logvar = model.kind == "vae"
        result = await compute(request, lambda: vaesdk.run_job(model, "embed", files, logvar=logvar, workers=1, max_pixels=limits.max_image_pixels))
        c = result.columns

        def record(row: int) -> dict[str, Any]:
            return {"mean": c["mean"][row].tolist(), "logvar": c["logvar"][row].tolist() if logvar else None}

        return JSONResponse({"results": job_results(result, record)})

    @app.post(
        "/v1/models/{name}/score", operation_id="score", tags=["images"], dependencies=v1, response_model=contract.ScoreResults, openapi_extra=forms["score"],
        responses=doc.errors(401, 403, 404, 408, 413, 422, 500, 503, 504),
    )  # fmt: skip
    async def score(request: Request, name: str = doc.name_param()) -> JSONResponse:
        """Multipart images (+ k, seed) -> JSON per-image -ELBO and -IW bound in bits/dim, anomaly
        score and p-value: the same figures as `vae score` on the same files, with the same
        default k (vaesdk.DEFAULT_IW_SAMPLES)."""
        model = model_of(name)
        files, fields = await uploads(request, "score")
        k = form_value(fields, "k", int, DEFAULT_IW_SAMPLES)
        limit("k", k, limits.max_k, "importance samples")
        seed = form_value(fields, "seed", int, 0)
        model.validate("score", k=k, seed=seed)
        result = await compute(request, lambda: vaesdk.run_job(model, "score", files, k=k, seed=seed, workers=1, max_pixels=limits.max_image_pixels))
        report = frontend.score_report(model, result, k=k, seed=seed)
        scores = report.pop("scores")

        def record(row: int) -> dict[str, Any]:
            return {key: value for key, value in scores[row].items() if key != "file"}

        return JSONResponse({**report, "results": job_results(result, record)})

    def openapi() -> dict[str, Any]:
        # FastAPI adds its own 422 model to every route with parameters; these routes declare
        # the errors they really answer (ErrorBody), and the GET routes answer no 422.
        if app.openapi_schema is None:
            schema = FastAPI.openapi(app)
            for ops in schema["paths"].values():
                for op in ops.values():
                    r422 = op["responses"].get("422", {})
                    if "HTTPValidationError" in json.dumps(r422):
                        del op["responses"]["422"]
            for unused in ("HTTPValidationError", "ValidationError"):
                schema.get("components", {}).get("schemas", {}).pop(unused, None)
            schema["paths"] = doc.per_model_paths(schema["paths"])
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    docs_assets = Path(str(resources.files("vaesdk.web"))) / "docs-vendor"

    @app.get("/docs", include_in_schema=False)
    async def docs() -> Response:
        from fastapi.openapi.docs import get_swagger_ui_html

        return get_swagger_ui_html(
            openapi_url="/openapi.json", title="vaesdk - API docs", swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css", swagger_favicon_url=f"{DOCS_ASSETS}/favicon-32x32.png",
            oauth2_redirect_url=None,
        )  # fmt: skip

    from fastapi.staticfiles import StaticFiles

    # Installed with the package (setup.py refuses a build without them).
    app.mount(DOCS_ASSETS, StaticFiles(directory=docs_assets, check_dir=False), name="docs-assets")

    web = _web_dir(config)
    if (web / "index.html").is_file():
        from fastapi.staticfiles import StaticFiles

        app.router.routes.append(_Page(StaticFiles(directory=web, html=True), [r.path for r in app.routes if hasattr(r, "methods")]))

    if config.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=config.cors_origins, allow_methods=["GET", "POST"], allow_headers=["Authorization", "Content-Type"])
    app.add_middleware(_SameOrigin, allowed=config.cors_origins)
    return _LimitBody(app, limits.max_body_bytes)
