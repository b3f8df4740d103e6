"""A client that disconnects frees what its request held: mid-upload (no task left), while
queued (its queue place, at once: the job never runs), while its answer is computed (its
worker, at the next batch: the job is stopped, not finished). Real sockets on 127.0.0.1,
`vae serve`'s app and protocol in a thread."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import httpx

from test_serve_deadlines import BOUND_S, serving, wait_for

ROOT = Path(__file__).resolve().parents[1]
SHIRT = (ROOT / "docs" / "images" / "inputs" / "shirt.png").read_bytes()
SCORE = "/v1/models/fashion-mnist/score"


def multipart(fields: dict[str, str], images: int) -> tuple[bytes, str]:
    boundary = "vaesdkboundary"
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode() for k, v in fields.items()]
    for i in range(images):
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{i}.png"\r\n'
                     "Content-Type: image/png\r\n\r\n".encode() + SHIRT + b"\r\n")  # fmt: skip
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def slow_score(port: int) -> socket.socket:
    """A score request that computes for many batches (8 images x k=1000), sent whole; the
    socket is returned without reading the answer."""
    body, ctype = multipart({"k": "1000", "seed": "0"}, 8)
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(f"POST {SCORE} HTTP/1.1\r\nHost: x\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
    return s


def app_with(model, workers: int, queue: int):
    from vaesdk.serve import Limits, ServeConfig, create_app

    return create_app([model], ServeConfig(limits=Limits(workers=workers, queue=queue, max_k=1000)))


def test_disconnect_mid_upload_leaves_no_task_and_no_slot(bundled_model):
    app = app_with(bundled_model, 1, 0)
    pool = app.state.pool
    with serving(app) as (server, port):
        body, ctype = multipart({}, 1)
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(f"POST {SCORE} HTTP/1.1\r\nHost: x\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body[:100])
        wait_for(lambda: server.server_state.tasks)  # the app is reading the upload
        s.close()
        wait_for(lambda: not server.server_state.tasks and not server.server_state.connections)
        assert pool.busy == 0
        r = httpx.post(f"http://127.0.0.1:{port}{SCORE}", files={"image": ("a.png", SHIRT)}, timeout=BOUND_S)
        assert r.status_code == 200  # the only slot is free


def test_disconnect_while_queued_frees_the_queue_place_and_the_job_never_runs(bundled_model):
    app = app_with(bundled_model, 1, 1)
    pool = app.state.pool
    with serving(app) as (server, port):
        computing = slow_score(port)
        wait_for(lambda: pool.busy == 1)
        queued = slow_score(port)
        wait_for(lambda: pool.busy == 2)
        # Full: a third request is refused.
        r = httpx.post(f"http://127.0.0.1:{port}{SCORE}", files={"image": ("a.png", SHIRT)}, timeout=BOUND_S)
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        queued.close()
        wait_for(lambda: pool.busy == 1)  # its queue place is back while the first still computes
        assert pool.cancelled == 0  # it never started, so nothing had to be stopped
        computing.close()
        wait_for(lambda: pool.busy == 0)
        assert pool.cancelled == 1


def test_disconnect_while_computing_stops_the_job_and_frees_the_worker(bundled_model):
    app = app_with(bundled_model, 1, 0)
    pool = app.state.pool
    with serving(app) as (server, port):
        s = slow_score(port)
        wait_for(lambda: pool.busy == 1)
        time.sleep(0.5)  # computing
        s.close()
        wait_for(lambda: pool.busy == 0)
        assert pool.cancelled == 1  # stopped part-way, not run to its end
        r = httpx.post(f"http://127.0.0.1:{port}{SCORE}", files={"image": ("a.png", SHIRT)}, timeout=BOUND_S)
        assert r.status_code == 200
