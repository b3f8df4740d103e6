"""`vae serve` stopped with more work queued than its grace period allows: every request gets
a JSON answer (its result, or 503 when its work could not be done in time), no worker goes on
computing for clients that are gone, the process exits soon after the grace period, and its
log says what happened."""

from __future__ import annotations

import re
import signal
import threading
import time
from pathlib import Path

import httpx

from webserver import vae_serve_process

GRACE_S = 3
REQUESTS = 20


def test_sigterm_with_more_queued_work_than_the_grace_period(tmp_path):
    log = tmp_path / "serve.log"
    shirt = (Path(__file__).parents[1] / "docs" / "images" / "inputs" / "shirt.png").read_bytes()
    files = [("image", (f"{i}.png", shirt)) for i in range(8)]
    answers: list[tuple[int, str, dict] | str] = []
    lock = threading.Lock()

    def request(base: str) -> None:
        try:
            r = httpx.post(f"{base}/v1/models/fashion-mnist/score", files=files, data={"k": "1000"}, timeout=120)
            media = r.headers.get("content-type", "")
            answer: tuple[int, str, dict] | str = (r.status_code, media, r.json() if media == "application/json" else {"text": r.text[:200]})
        except httpx.TransportError as e:
            answer = f"closed: {type(e).__name__}"
        with lock:
            answers.append(answer)

    args = ("--device", "cpu", "-m", "fashion-mnist", "--workers", "1", "--grace-period", str(GRACE_S))
    with log.open("w+") as stderr, vae_serve_process(*args, stderr=stderr) as (proc, base):
        clients = [threading.Thread(target=request, args=(base,)) for _ in range(REQUESTS)]
        for c in clients:
            c.start()
        time.sleep(1.5)  # all sent: one computing (8 x 1000 decodes, seconds), the rest queued
        assert not answers, answers
        signalled = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=GRACE_S + 60)
        exited_after = time.monotonic() - signalled
        for c in clients:
            c.join(timeout=60)
    text = log.read_text()

    assert code == 0, text
    assert len(answers) == REQUESTS
    statuses = sorted(a[0] for a in answers if isinstance(a, tuple))
    assert [a for a in answers if isinstance(a, str)] == [], answers  # none closed without an answer
    assert all(a[1] == "application/json" for a in answers), answers  # no text/plain 500
    assert set(statuses) <= {200, 503}, statuses
    refused = [a[2] for a in answers if a[0] == 503]
    assert refused and all(body["error"] == "shutting_down" for body in refused), refused
    # Out well before the queued work (20 x seconds) could have run: the grace period and a few seconds.
    assert exited_after < GRACE_S + 10, exited_after
    # The log: one line at the signal, one at the end, whose counts are the answers' own.
    assert "Traceback" not in text and "ERROR" not in text, text
    assert f"stopping on SIGTERM: {REQUESTS} request(s) in flight get up to {GRACE_S} s" in text, text
    stopped = re.search(r"stopped [\d.]+ s after the signal: (\d+) request\(s\) answered while stopping, (\d+) answered 503", text)
    assert stopped, text
    assert (int(stopped[1]), int(stopped[2])) == (statuses.count(200), statuses.count(503)), (stopped[0], statuses)
