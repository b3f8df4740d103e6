"""Running the app with uvicorn: loopback by default, graceful shutdown on SIGTERM."""

from __future__ import annotations

import signal
import threading
from typing import Any, Callable

import vaesdk

from .app import ServeConfig, create_app

# In-flight requests get this long to finish after SIGTERM/Ctrl-C; new ones are refused.
GRACEFUL_SHUTDOWN_S = 30


def serve(
    models: list[vaesdk.Model],
    host: str = "127.0.0.1",
    port: int = 8000,
    config: ServeConfig | None = None,
    log: Callable[[str], Any] = print,
) -> None:
    import uvicorn

    config = config or ServeConfig()
    app = create_app(models, config)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
            timeout_keep_alive=5,
            limit_concurrency=config.limits.workers + config.limits.queue + 64,
            log_level="warning",
            access_log=False,
            server_header=False,
        )
    )
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
