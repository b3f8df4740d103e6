"""`vae serve`: the HTTP service (the `serve` extra)."""

from __future__ import annotations

import os
from typing import Annotated, Optional

import typer

from vaesdk import frontend
from vaesdk.base.errors import InvalidArgumentError, MissingDependencyError, install_hint
from vaesdk.serve.settings import GRACEFUL_SHUTDOWN_S, HOST, PORT, Deadlines, Limits, ServeConfig, bundled_names

from .common import load_model, note

app = typer.Typer()

TOKEN_ENV = "VAESDK_TOKEN"


# The service's defaults, read from their home (vaesdk.serve.settings imports no server package).
LIMITS, DEADLINES = Limits(), Deadlines()
MIB = 1024 * 1024


@app.command()
def serve(
    model: Annotated[
        Optional[list[str]], typer.Option("--model", "-m", help="Bundled model name or bundle folder; repeat to serve several.", show_default="every bundled model")
    ] = None,
    host: Annotated[str, typer.Option(help="Address to bind; the default answers this machine only.")] = HOST,
    port: Annotated[int, typer.Option(min=0, max=65535, help="TCP port.")] = PORT,
    token: Annotated[
        Optional[str], typer.Option(help=f"Require 'Authorization: Bearer TOKEN' on /v1/* and /v2/* but its health checks (or set {TOKEN_ENV}).", show_default=False)
    ] = None,
    workers: Annotated[int, typer.Option(min=1, max=256, help="Requests computed at once.")] = LIMITS.workers,
    queue: Annotated[int, typer.Option(min=0, max=4096, help="Requests waiting for a worker; beyond that, 503 with Retry-After.")] = LIMITS.queue,
    timeout: Annotated[float, typer.Option(min=0.1, help="Seconds a request may take, waiting included; beyond that, 504.")] = LIMITS.timeout_s,
    max_upload_mb: Annotated[float, typer.Option(min=0.001, help="Largest request body, MiB.")] = LIMITS.max_body_bytes / MIB,
    max_pixels: Annotated[int, typer.Option(min=1, help="Largest uploaded image, pixels.")] = LIMITS.max_image_pixels,
    max_images: Annotated[int, typer.Option(min=1, help="Uploads per request.")] = LIMITS.max_images,
    max_n: Annotated[int, typer.Option(min=1, max=frontend.MAX_SAMPLES, help="Samples (and latents to decode) per request.")] = LIMITS.max_n,
    max_k: Annotated[int, typer.Option(min=1, max=frontend.MAX_IW_SAMPLES, help="Importance samples per score request.")] = LIMITS.max_k,
    cors_origin: Annotated[
        Optional[list[str]], typer.Option("--cors-origin", help="Allow browser pages from this origin (repeatable); CORS is off without it.")
    ] = None,
    header_timeout: Annotated[
        float, typer.Option(min=0.1, help="Seconds a request's headers may take to arrive; then 408 and the connection is closed.")
    ] = DEADLINES.header_timeout_s,
    body_timeout: Annotated[
        float, typer.Option(min=0.1, help="Seconds a request's body may take to arrive (plus 1 s per --body-min-rate bytes); then 408.")
    ] = DEADLINES.body_timeout_s,
    body_min_rate: Annotated[
        int, typer.Option(min=0, help="Each this many bytes of body received extend its deadline by 1 s; 0: a fixed --body-timeout.")
    ] = DEADLINES.body_min_rate,
    max_connections: Annotated[
        int, typer.Option(min=1, max=1_000_000, help="Open connections; over it, the request that has been arriving longest is closed.")
    ] = DEADLINES.max_connections,
    allowed_host: Annotated[
        Optional[list[str]],
        typer.Option("--allowed-host", help="A name the Host header may carry (repeatable; * for any).", show_default="the loopback names when --host is loopback, else any"),
    ] = None,
    grace_period: Annotated[
        float, typer.Option(min=1.0, help="Seconds requests in flight get to finish on SIGTERM or Ctrl-C; then each unfinished one answers 503.")
    ] = GRACEFUL_SHUTDOWN_S,
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")] = "auto",
) -> None:
    """Serve models over HTTP: routes under /v1, the Open Inference Protocol under /v2, the page at /."""
    try:
        from vaesdk.serve import serve as run_server
    except ImportError as e:
        raise MissingDependencyError(
            f"{e.name or 'a server dependency'} is not installed; `vae serve` needs the serve extra: "
            f"{install_hint('serve')}"
        ) from None
    token = token or os.environ.get(TOKEN_ENV) or None
    if token is not None and len(token) < 8:
        raise InvalidArgumentError("--token must be at least 8 characters")
    limits = Limits(
        max_body_bytes=int(max_upload_mb * MIB), max_image_pixels=max_pixels, max_images=max_images,
        max_n=max_n, max_latents=max_n, max_k=max_k, workers=workers, queue=queue, timeout_s=timeout,
    )  # fmt: skip
    models = [load_model(name, device) for name in (model or bundled_names())]
    deadlines = Deadlines(header_timeout_s=header_timeout, body_timeout_s=body_timeout, body_min_rate=body_min_rate, max_connections=max_connections)
    config = ServeConfig(
        limits=limits, token=token, cors_origins=list(cors_origin or []), deadlines=deadlines,
        allowed_hosts=list(allowed_host) if allowed_host else None, grace_s=grace_period,
    )  # fmt: skip
    run_server(models, host=host, port=port, config=config, log=note)
