"""Running the app with uvicorn: loopback by default, graceful shutdown on SIGTERM."""

from __future__ import annotations

import dataclasses
import resource
import signal
import threading
import time
from typing import Any, Callable

import vaesdk

from vaesdk.base.errors import InvalidArgumentError

from .app import create_app
from .deadlines import protocol_class
from .settings import HOST, LOOPBACK_NAMES, PORT, ServeConfig

# File descriptors the process needs besides its connections (models, logs, the page's files).
SPARE_FDS = 64


def uvicorn_config(app: Any, host: str, port: int, config: ServeConfig) -> Any:
    """uvicorn's settings for `app`: HTTP/1.1 through the deadline protocol (serve/deadlines.py).

    No `limit_concurrency`: uvicorn counts every open connection against it, so connections
    that never finish their headers would turn real requests away with 503. Work is bounded
    by the app's pool (workers + queue), connections by the deadlines' cap."""
    import uvicorn

    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=protocol_class(config.deadlines),
        timeout_graceful_shutdown=config.grace_s,
        timeout_keep_alive=5,
        log_level="warning",
        access_log=False,
        server_header=False,
    )


def ensure_fds(max_connections: int) -> None:
    """Raise the soft open-file limit to fit max_connections (up to the hard limit), or refuse."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = max_connections + SPARE_FDS
    if soft != resource.RLIM_INFINITY and soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            raise InvalidArgumentError(
                f"--max-connections {max_connections} needs {need} open files but this process may open {hard}; "
                f"use --max-connections {max(1, hard - SPARE_FDS)} or raise the limit (ulimit -n)"
            )
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))


def serve(
    models: list[vaesdk.Model],
    host: str = HOST,
    port: int = PORT,
    config: ServeConfig | None = None,
    log: Callable[[str], Any] = print,
) -> None:
    import uvicorn

    config = config or ServeConfig()
    if config.allowed_hosts is None and host.strip("[]") in LOOPBACK_NAMES:
        # A loopback service answers to its loopback names only (against DNS rebinding).
        config = dataclasses.replace(config, allowed_hosts=list(LOOPBACK_NAMES))
    ensure_fds(config.deadlines.max_connections)
    app = create_app(models, config)
    pool = app.state.pool
    stopping: list[float] = []  # when the signal came, and the answers computed until then

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            if not stopping:
                stopping.extend((time.monotonic(), pool.finished))
                # Answer what is outstanding before uvicorn's grace period ends and it closes
                # the connections: a second early, so the answers are written.
                waiting = pool.drain(config.grace_s - 1.0)
                log(f"stopping on {signal.Signals(sig).name}: {waiting} request(s) in flight get up to {config.grace_s:g} s; new ones are refused")
            super().handle_exit(sig, frame)

    server = Server(uvicorn_config(app, host, port, config))
    names = ", ".join(m.name for m in models)
    shown = f"[{host}]" if ":" in host else host
    log(f"serving {names} on http://{shown}:{port} (API docs at /docs, the page at /){'; token required' if config.token else ''}")
    # uvicorn stops gracefully on SIGTERM, then raises the signal again for the handler it
    # found: a handler that only notes it makes the stop a clean exit (status 0).
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, lambda sig, frame: None) if main else None
    try:
        server.run()
    finally:
        pool.shutdown()
        if main:
            signal.signal(signal.SIGTERM, previous)
    if stopping:
        began, finished_before = stopping
        log(
            f"stopped {time.monotonic() - began:.1f} s after the signal: {pool.finished - finished_before} request(s) answered "
            f"while stopping, {pool.aborted} answered 503 (their work was not done within the grace period), "
            f"{pool.refused_stopping} new one(s) refused, {pool.cancelled} computation(s) cancelled part-way"
        )
