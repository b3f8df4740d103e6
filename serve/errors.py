"""The service's errors: one JSON shape, {"error": code, "detail": one line}, for every
refusal, and the status each SDK error answers with."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

import vaesdk
from vaesdk.base.errors import (
    BundleError, CancelledError, DeviceUnavailableError, InferenceError, InvalidArgumentError, ModelNotFoundError, VaesdkError,
)  # fmt: skip


class ApiError(Exception):
    def __init__(self, status: int, error: str, detail: str, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.status, self.error, self.detail, self.headers = status, error, detail, headers


class BodyTooLarge(Exception):
    pass


def error_response(status: int, error: str, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail}, status_code=status, headers=headers)


def status_of(e: VaesdkError) -> tuple[int, str]:
    if isinstance(e, ModelNotFoundError):
        return 404, "not_found"
    if isinstance(e, InvalidArgumentError):
        return 422, "invalid_argument"
    if isinstance(e, vaesdk.InvalidImageError):
        return 422, "invalid_image"
    if isinstance(e, (InferenceError, DeviceUnavailableError, BundleError)):
        return 500, "model_failure"
    return 500, "error"


def install(app: FastAPI) -> None:
    """Every error the app can meet, answered in the one shape."""

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, e: ApiError) -> JSONResponse:
        return error_response(e.status, e.error, e.detail, e.headers)

    @app.exception_handler(VaesdkError)
    async def _sdk_error(request: Request, e: VaesdkError) -> JSONResponse:
        status, error = status_of(e)
        return error_response(status, error, str(e).splitlines()[0] if str(e) else type(e).__name__)

    @app.exception_handler(BodyTooLarge)
    async def _too_large(request: Request, e: BodyTooLarge) -> JSONResponse:
        return error_response(413, "too_large", str(e))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, e: RequestValidationError) -> JSONResponse:
        first = e.errors()[0] if e.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return error_response(422, "invalid_argument", f"{where}: {first.get('msg', 'invalid request')}".strip(": "))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, e: StarletteHTTPException) -> JSONResponse:
        headers = dict(e.headers or {})
        if e.status_code == 405 and "allow" not in {k.lower() for k in headers}:
            headers["Allow"] = "GET, HEAD"  # the page's static files (RFC 9110: a 405 names the allowed methods)
        detail = str(e.detail)
        if e.status_code == 405:
            detail = f"{request.method} is not allowed on {request.url.path[:80]}; allowed: {headers.get('Allow') or headers.get('allow')}"
        return error_response(e.status_code, "http_error", detail, headers)

    @app.exception_handler(CancelledError)
    async def _cancelled(request: Request, e: CancelledError) -> JSONResponse:
        return error_response(499, "client_closed_request", str(e))

    @app.exception_handler(Exception)
    async def _internal(request: Request, e: Exception) -> JSONResponse:
        # A bug, not the client's fault: one line, never a traceback.
        return error_response(500, "internal_error", f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}")
