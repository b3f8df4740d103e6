"""Servers on the loopback address for the serve and web tests: `vae serve`'s app in a
thread, and a plain static file server."""

from __future__ import annotations

import functools
import http.server
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_app(app: Any) -> Iterator[str]:
    """Serve an ASGI app with uvicorn on 127.0.0.1; yields its base URL."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


class _Quiet(http.server.SimpleHTTPRequestHandler):
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map, ".mjs": "text/javascript", ".wasm": "application/wasm"}

    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def static_files(folder: Path) -> Iterator[str]:
    """A plain static file server over `folder` on 127.0.0.1; yields its base URL."""
    handler = functools.partial(_Quiet, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def vae_serve_process(*args: str, stderr: Any = None) -> Iterator[tuple[Any, str]]:
    """`vae serve --port P ARGS` in its own process on 127.0.0.1; yields (process, base URL)
    once /healthz answers. A server that exits or does not answer within five minutes fails
    with its own stderr."""
    import subprocess
    import sys
    import tempfile

    import httpx

    port = free_port()
    log = stderr if stderr is not None else tempfile.TemporaryFile(mode="w+")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # its log lines reach the file as written
    proc = subprocess.Popen([sys.executable, "-m", "vaesdk.cli.main", "serve", "--port", str(port), *args], stderr=log, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        # Generous: on a loaded 2-core machine the imports and the model load alone can take a minute.
        deadline = time.monotonic() + 300
        with httpx.Client(base_url=base, timeout=5) as client:
            while True:
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    raise RuntimeError(f"vae serve did not start (exit {proc.poll()}): {log.read()[-2000:]}")
                try:
                    if client.get("/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.1)
        yield proc, base
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
