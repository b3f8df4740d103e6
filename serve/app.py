"""The FastAPI app of `vae serve`, assembled from its parts:

- served.py: the models (fixed when the app is made: a request can only name one of them,
  never a path), the token, the worker pool (pool.py);
- routes.py: the service's own routes (/healthz, /v1/...); oip.py: the Open Inference
  Protocol's (/v2/...); both compute in the same pool;
- requests.py: request bodies parsed by the models the OpenAPI document declares
  (contract.py), so the document's limits are the enforced ones;
- errors.py: every error as JSON {"error", "detail"} (the protocol's routes: {"error"});
- middleware.py: the body limit, the same-origin rule, the Host check, the page at /.

Safe by default: bodies, images, sample counts and batches are capped (413/422 naming the
limit), a full pool answers 503 at once instead of queueing without bound, a request that runs
too long answers 504.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles

import vaesdk

from . import errors, oip, routes
from .middleware import Page, add_guards
from .served import Served
from .settings import ServeConfig

DOCS_ASSETS = "/docs-assets"  # Swagger UI's files (web/docs-vendor/, pinned by web/copy-vendor.mjs)


def _web_dir(config: ServeConfig) -> Path:
    if config.web_dir is not None:
        return config.web_dir
    return Path(str(resources.files("vaesdk.web")))


def create_app(models: list[vaesdk.Model], config: ServeConfig | None = None) -> FastAPI:
    """The app serving `models` (loaded bundles, fixed for the app's life)."""
    config = config or ServeConfig()
    served = Served(models, config)
    app = FastAPI(
        title="vaesdk",
        version=vaesdk.__version__,
        description=(
            "Sample, encode, edit, decode and score images with exported VAE bundles, over this service's own "
            "routes (/v1) and the Open Inference Protocol (/v2). Every error is JSON {error, detail} ({error} "
            "under /v2); a method a path does not have answers 405 with Allow. "
            + ("Routes under /v1 and /v2 (but the /v2 health checks) need 'Authorization: Bearer TOKEN'." if config.token else "")
        ).strip(),
        # /docs is served below from the installed Swagger UI files; FastAPI's own pages load
        # theirs from a CDN (blank without internet). ReDoc has no vendored copy: off.
        docs_url=None,
        redoc_url=None,
    )
    app.state.served = served
    app.state.pool = served.pool
    errors.install(app)
    app.include_router(routes.router(served))

    # The Open Inference Protocol's routes (/v2/...): the same models, the same pool.
    async def run_operation(request: Request, op: oip.Operation, inputs: dict[str, np.ndarray], parameters: dict[str, Any]) -> dict[str, np.ndarray]:
        return await served.compute(request, lambda: op.run(inputs, parameters))

    authorize = served.authorize if config.token else None
    app.include_router(oip.router(oip.operations(served.models, served.limits), run_operation, authorize=authorize))

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
            schema["paths"] = served.doc.per_model_paths(schema["paths"])
            for key, value in served.doc.components().items():
                schema.setdefault("components", {}).setdefault("schemas", {}).setdefault(key, value)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    @app.get("/docs", include_in_schema=False)
    async def docs() -> Response:
        from fastapi.openapi.docs import get_swagger_ui_html

        return get_swagger_ui_html(
            openapi_url="/openapi.json", title="vaesdk - API docs", swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css", swagger_favicon_url=f"{DOCS_ASSETS}/favicon-32x32.png",
            oauth2_redirect_url=None,
        )  # fmt: skip

    # Installed with the package (setup.py refuses a build without them).
    docs_assets = Path(str(resources.files("vaesdk.web"))) / "docs-vendor"
    app.mount(DOCS_ASSETS, StaticFiles(directory=docs_assets, check_dir=False), name="docs-assets")

    web = _web_dir(config)
    if (web / "index.html").is_file():
        app.router.routes.append(Page(StaticFiles(directory=web, html=True), [r.path for r in app.routes if hasattr(r, "methods")]))

    # The last added runs first: the Host check, the body limit, the origin rule, CORS.
    if config.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=config.cors_origins, allow_methods=["GET", "POST"], allow_headers=["Authorization", "Content-Type"])
    add_guards(app, config.limits.max_body_bytes, config.cors_origins, config.allowed_hosts)
    return app
