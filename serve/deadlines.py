"""Request deadlines and a connection cap that slow clients cannot starve, inside uvicorn's
HTTP/1.1 protocol (h11).

Why here: uvicorn's only timeout is keep-alive (the idle time between requests), and ASGI
middleware runs only once a request's headers are parsed, so neither can see a client that
never finishes its headers or trickles its body. The protocol object sees every byte as it
arrives, so it can time each phase of a request:

- headers: from the connection's first byte (or its opening, for a silent connection; or the
  first byte of the next request on a kept-alive connection) until the blank line that ends
  them: `header_timeout_s`;
- body: from the end of the headers until the last byte of the body: `body_timeout_s`,
  extended by one second for every `body_min_rate` bytes received, so a long upload that
  keeps moving is never cut (Apache's mod_reqtimeout model);
- the response is never timed here: once the request has arrived, only the app's own
  request timeout (504) applies, so long or streaming answers are not cut.

On expiry the connection is closed, with a 408 JSON answer when the request has begun and
no answer has started, and one log line. Closing it sets the request's ASGI `disconnect`,
so the app's work for it stops waiting and frees its pool slot (serve/app.py).

The cap: at most `max_connections` open connections. A connection over the cap closes the
connection that has been arriving (headers or body still incomplete) the longest; only when
none is arriving is the new connection itself refused. So connections that are still
arriving never take places from requests that have arrived, whatever their number.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

from .settings import Deadlines

logger = logging.getLogger("uvicorn.error")


def _answer_408(detail: str) -> bytes:
    body = json.dumps({"error": "request_timeout", "detail": detail}).encode()
    head = (
        "HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


def protocol_class(deadlines: Deadlines) -> type[H11Protocol]:
    """An H11Protocol subclass enforcing `deadlines`; each call makes a class with its own
    registry of arriving connections (one per server)."""

    class DeadlineProtocol(_DeadlineProtocol):
        pass

    DeadlineProtocol.deadlines = deadlines
    DeadlineProtocol.arriving = {}
    return DeadlineProtocol


class _DeadlineProtocol(H11Protocol):
    deadlines: Deadlines
    arriving: dict[_DeadlineProtocol, float]  # connection -> when its current phase began (monotonic)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._phase: str | None = None  # "headers", "body" or None (idle, or the request has arrived)
        self._timer: Any = None
        self._phase_start = 0.0
        self._phase_bytes = 0
        self._seen_cycle: Any = None

    # ---- phases ---------------------------------------------------------------------------
    def _begin(self, phase: str, seconds: float) -> None:
        self._cancel_timer()
        self._phase, self._phase_start, self._phase_bytes = phase, time.monotonic(), 0
        self.arriving[self] = self._phase_start
        self._timer = self.loop.call_later(seconds, self._expired)

    def _end_phase(self) -> None:
        self._cancel_timer()
        self._phase = None
        self.arriving.pop(self, None)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _body_deadline(self) -> float:
        d = self.deadlines
        extra = self._phase_bytes / d.body_min_rate if d.body_min_rate > 0 else 0.0
        return self._phase_start + d.body_timeout_s + extra

    def _expired(self) -> None:
        self._timer = None
        if self._phase == "body":
            deadline = self._body_deadline()
            if time.monotonic() < deadline:  # the body kept moving: its deadline moved with it
                self._timer = self.loop.call_later(deadline - time.monotonic(), self._expired)
                return
            what = f"request body not complete within {self.deadlines.body_timeout_s:g} s (--body-timeout)"
        else:
            what = f"request headers not complete within {self.deadlines.header_timeout_s:g} s (--header-timeout)"
        begun = self._phase == "body" or self._phase_bytes > 0
        self.expire(what, answer=begun)

    def expire(self, why: str, answer: bool) -> None:
        phase = self._phase
        self._end_phase()
        if self.transport is None or self.transport.is_closing():
            return
        cycle = self.cycle if phase == "body" else None
        answered = answer and not (cycle is not None and cycle.response_started)
        if answered:
            self.transport.write(_answer_408(why))
        if cycle is not None and not cycle.response_complete:
            # The app sees http.disconnect and stops; anything it still sends is dropped.
            cycle.disconnected = True
            cycle.message_event.set()
        client = "%s:%d" % self.client if self.client else "a client"
        logger.warning("closed %s: %s%s", client, why, " (408)" if answered else "")
        self.transport.close()

    # ---- uvicorn's protocol interface -----------------------------------------------------
    def connection_made(self, transport: Any) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._begin("headers", self.deadlines.header_timeout_s)
        if len(self.connections) > self.deadlines.max_connections:
            others = [(t, c) for c, t in self.arriving.items() if c is not self]
            if others:
                _, oldest = min(others, key=lambda tc: tc[0])
                oldest.expire(f"the oldest unfinished request, closed to make room (--max-connections {self.deadlines.max_connections})", answer=True)
            else:
                self.expire(f"refused: {self.deadlines.max_connections} connections are busy (--max-connections)", answer=False)

    def data_received(self, data: bytes) -> None:
        if self._phase is None and (self.cycle is None or self.cycle.response_complete):
            # The next request on a kept-alive connection begins (its idle time was keep-alive's).
            self._begin("headers", self.deadlines.header_timeout_s)
        self._phase_bytes += len(data)
        super().data_received(data)
        cycle = self.cycle
        if cycle is not None and cycle is not self._seen_cycle:  # a new request's headers are complete
            self._seen_cycle = cycle
            if cycle.more_body:
                self._begin("body", self.deadlines.body_timeout_s)
                self._phase_bytes = len(cycle.body)  # body bytes that came with the headers count too
            else:
                self._end_phase()
        elif self._phase == "body" and cycle is not None and not cycle.more_body:
            self._end_phase()

    def connection_lost(self, exc: Exception | None) -> None:
        self._end_phase()
        super().connection_lost(exc)
