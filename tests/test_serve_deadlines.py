"""`vae serve`'s request deadlines and connection cap (serve/deadlines.py), with real sockets
on 127.0.0.1: headers and bodies that do not arrive in time are answered 408 and closed, with
one log line; bodies that keep moving and long answers are not cut; over the cap, the request
that has been arriving longest makes room."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from webserver import free_port

BOUND_S = 30  # every wait below gives up after this long


@contextmanager
def serving(app: Any, **deadlines: Any) -> Iterator[tuple[Any, int]]:
    """`app` under uvicorn exactly as `vae serve` runs it (serve.run.uvicorn_config), in a thread."""
    import uvicorn

    from vaesdk.serve import Deadlines, ServeConfig
    from vaesdk.serve.run import uvicorn_config

    port = free_port()
    server = uvicorn.Server(uvicorn_config(app, "127.0.0.1", port, ServeConfig(deadlines=Deadlines(**deadlines))))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    start = time.monotonic()
    while not server.started:
        assert thread.is_alive() and time.monotonic() - start < BOUND_S, "the test server did not start"
        time.sleep(0.02)
    try:
        yield server, port
    finally:
        server.should_exit = True
        thread.join(timeout=BOUND_S)


def read_until_closed(s: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (bounded)."""
    s.settimeout(BOUND_S)
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            return data
        data += chunk


async def slow_app(scope: dict, receive: Any, send: Any) -> None:
    """Reads the whole body, then answers in 6 chunks 0.5 s apart: 3 s of response."""
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    for i in range(6):
        await asyncio.sleep(0.5)
        await send({"type": "http.response.body", "body": f"{i}:{len(body)};".encode(), "more_body": True})
    await send({"type": "http.response.body", "body": b"end"})


FAST = dict(header_timeout_s=1.0, body_timeout_s=1.5, body_min_rate=0)


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def test_headers_that_never_finish_get_408_and_one_log_line():
    log = Lines()
    with serving(slow_app, **FAST) as (server, port):
        logging.getLogger("uvicorn.error").addHandler(log)  # set up by uvicorn at start; it does not propagate
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
            answer = read_until_closed(s)
        assert answer.startswith(b"HTTP/1.1 408 ") and b"connection: close" in answer
        body = json.loads(answer.split(b"\r\n\r\n", 1)[1])
        assert body["error"] == "request_timeout" and "headers" in body["detail"] and "--header-timeout" in body["detail"]
        with socket.create_connection(("127.0.0.1", port)) as s:  # silent: closed, nothing sent
            assert read_until_closed(s) == b""
        wait_for(lambda: not server.server_state.connections)
    logging.getLogger("uvicorn.error").removeHandler(log)
    lines = [line for line in log.lines if "closed 127.0.0.1" in line]
    assert len(lines) == 2 and "(408)" in lines[0] and "(408)" not in lines[1], lines


def test_a_stalled_body_gets_408_and_the_app_sees_the_disconnect():
    seen: list[dict] = []

    async def app(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        while True:
            message = await receive()
            if message["type"] == "http.disconnect" or not message.get("more_body"):
                seen.append(message)
                return

    with serving(app, **FAST) as (server, port):
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\nhello")
            answer = read_until_closed(s)
        assert answer.startswith(b"HTTP/1.1 408 ") and b"body" in answer and b"--body-timeout" in answer
        wait_for(lambda: seen and not server.server_state.tasks and not server.server_state.connections)
    assert seen[0]["type"] == "http.disconnect"


def test_a_body_that_keeps_moving_is_not_cut_and_long_answers_are_not_cut():
    # Each 100 bytes received extend the 1 s body deadline by 1 s: wide margins on a busy machine.
    with serving(slow_app, header_timeout_s=1.0, body_timeout_s=1.0, body_min_rate=100) as (server, port):
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3000\r\nConnection: close\r\n\r\n")
            for _ in range(3):  # 3 s of body: past the 1 s deadline, within its extension
                s.sendall(b"x" * 1000)
                time.sleep(1.0)
            answer = read_until_closed(s)
        # The answer itself takes 3 s, past both deadlines: sent whole.
        assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"0\r\n\r\n"), answer[-200:]
        assert b"5:3000;" in answer and b"end" in answer


def test_keep_alive_requests_each_get_their_own_header_deadline():
    with serving(slow_app, header_timeout_s=1.0, body_timeout_s=1.0, body_min_rate=0) as (server, port):
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=BOUND_S) as client:
            for _ in range(2):  # the first answer takes 3 s, longer than the header deadline; the next still works
                r = client.get("/")
                assert r.status_code == 200 and r.text.endswith("end")
            wait_for(lambda: server.server_state.total_requests == 2)  # counted just after the answer is sent
            assert len(server.server_state.connections) == 1


def test_over_the_cap_the_longest_arriving_request_makes_room(bundled_model):
    from vaesdk.serve import create_app

    with serving(create_app([bundled_model]), header_timeout_s=60, body_timeout_s=60, max_connections=5) as (server, port):
        hanging = []
        for _ in range(5):
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            hanging.append(s)
            time.sleep(0.05)  # a definite order: the first is the oldest
        r = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=BOUND_S)
        assert r.status_code == 200
        first = read_until_closed(hanging[0])
        assert first.startswith(b"HTTP/1.1 408 ") and b"--max-connections 5" in first
        for s in hanging[1:]:  # the others are still held
            s.setblocking(False)
            with pytest.raises(BlockingIOError):
                s.recv(1)
        for s in hanging:
            s.close()


def test_over_the_cap_with_nothing_arriving_the_new_connection_is_refused():
    with serving(slow_app, header_timeout_s=60, body_timeout_s=60, max_connections=1) as (server, port):
        with socket.create_connection(("127.0.0.1", port)) as busy:
            busy.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # complete: computing its 3 s answer
            wait_for(lambda: server.server_state.tasks)
            with socket.create_connection(("127.0.0.1", port)) as late:
                assert read_until_closed(late) == b""
            assert read_until_closed(busy).endswith(b"0\r\n\r\n")  # the busy one is answered in full


def test_vae_serve_option_defaults_are_the_services_own():
    """`vae serve --help` shows the defaults of vaesdk.serve.settings, read from there."""
    import typer.main

    from vaesdk.cli.main import app
    from vaesdk.serve import Deadlines, Limits
    from vaesdk.serve.settings import HOST, PORT

    shown = {p.name: p.default for p in typer.main.get_command(app).commands["serve"].params}
    lim, d = Limits(), Deadlines()
    assert (shown["host"], shown["port"]) == (HOST, PORT)
    assert (shown["workers"], shown["queue"], shown["timeout"]) == (lim.workers, lim.queue, lim.timeout_s)
    assert shown["max_upload_mb"] * 1024 * 1024 == lim.max_body_bytes
    assert (shown["max_pixels"], shown["max_images"], shown["max_n"], shown["max_k"]) == (lim.max_image_pixels, lim.max_images, lim.max_n, lim.max_k)
    assert (shown["header_timeout"], shown["body_timeout"], shown["body_min_rate"], shown["max_connections"]) == (
        d.header_timeout_s, d.body_timeout_s, d.body_min_rate, d.max_connections,
    )  # fmt: skip


def test_max_connections_beyond_the_open_file_limit_is_refused_naming_the_fix(monkeypatch):
    import resource

    from vaesdk.base.errors import InvalidArgumentError
    from vaesdk.serve.run import ensure_fds

    monkeypatch.setattr(resource, "getrlimit", lambda _: (1024, 2048))
    with pytest.raises(InvalidArgumentError, match=r"--max-connections 5000 .*2048.*--max-connections 1984"):
        ensure_fds(5000)


def wait_for(condition: Any) -> None:
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < BOUND_S, "the condition did not come true"
        time.sleep(0.02)
