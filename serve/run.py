"""Running the app with uvicorn: loopback by default, graceful shutdown on SIGTERM."""

from __future__ import annotations

import resource
import signal
import threading
from typing import Any, Callable

import vaesdk

from vaesdk.base.errors import InvalidArgumentError

from .app import create_app
from .deadlines import protocol_class
from .settings import GRACEFUL_SHUTDOWN_S, HOST, PORT, ServeConfig

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
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
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
    ensure_fds(config.deadlines.max_connections)
    app = create_app(models, config)
    server = uvicorn.Server(uvicorn_config(app, host, port, config))
    names = ", ".join(m.name for m in models)
    shown = f"[{host}]" if ":" in host else host
    log(f"serving {names} on http://{shown}:{port} (API docs at /docs, the page at /){'; token required' if config.token else ''}")
    # uvicorn stops gracefully on SIGTERM, then raises the signal again for the handler it
    # found: a handler that only notes it makes the stop a clean exit (status 0).
    stopped: list[int] = []
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, lambda sig, frame: stopped.append(sig)) if main else None
    try:
        server.run()
    finally:
        app.app.state.pool.shutdown()
        if main:
            signal.signal(signal.SIGTERM, previous)
    if stopped:
        log("stopped on SIGTERM; requests in flight were finished")
