"""The worker pool: requests computed side by side, with a bounded wait list."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Awaitable, Callable

from vaesdk.base.errors import CancelledError
from vaesdk.frontend import cancellable

from .errors import ApiError


class Pool:
    """A fixed set of worker threads with a bounded wait list: overload is refused at once
    (503) rather than held in memory. Work whose client has gone, or that ran past its
    timeout, is cancelled: a queued job never starts, a running one stops at its next
    batch (session.cancellable), and its slot is free again.

    Stopping (`drain`): new work is refused (503), and work still outstanding when the grace
    period ends is cancelled and answered 503, so every request gets a JSON answer before the
    server closes its connections, and no worker computes for a client that is gone."""

    def __init__(self, workers: int, queue: int):
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="vae-serve")
        self._slots = threading.BoundedSemaphore(workers + queue)
        self.capacity = workers + queue
        self._busy = 0
        self.cancelled = 0  # jobs stopped part-way because their client left or their time ran out
        self.finished = 0  # answers computed
        self.aborted = 0  # requests answered 503 because the server stopped before their work was done
        self.refused_stopping = 0  # requests refused because the server was stopping
        self._lock = threading.Lock()
        self._outstanding: dict[int, tuple[threading.Event, Future, asyncio.AbstractEventLoop, asyncio.Future]] = {}
        self._draining = False
        self._timer: threading.Timer | None = None

    @property
    def busy(self) -> int:
        """Requests holding a slot now (computing or waiting for a worker)."""
        return self._busy

    def _release(self, _: Any) -> None:
        with self._lock:
            self._busy -= 1
        self._slots.release()

    async def run(self, fn: Callable[[], Any], timeout: float, gone: Callable[[], Awaitable[Any]] | None = None) -> Any:
        """fn() in a worker; `gone` (when given) returns once the client has disconnected."""
        if self._draining:
            with self._lock:
                self.refused_stopping += 1
            raise ApiError(503, "shutting_down", "the server is stopping; retry on another instance", {"Retry-After": "1"})
        if not self._slots.acquire(blocking=False):
            raise ApiError(503, "overloaded", f"all {self.capacity} request slots are busy; retry shortly", {"Retry-After": "1"})
        with self._lock:
            self._busy += 1
        stop = threading.Event()

        def work() -> Any:
            with cancellable(stop):
                try:
                    return fn()
                except CancelledError:
                    with self._lock:
                        self.cancelled += 1
                    raise

        future: Future = self._executor.submit(work)
        # Released when the work ends or is cancelled before it starts.
        future.add_done_callback(self._release)
        result = asyncio.wrap_future(future)
        result.add_done_callback(lambda f: f.cancelled() or f.exception())  # read once: never "never retrieved"
        loop = asyncio.get_running_loop()
        aborted = loop.create_future()
        waiters: set[asyncio.Future] = {result, aborted}
        watcher = asyncio.ensure_future(gone()) if gone is not None else None
        if watcher is not None:
            waiters.add(watcher)
        key = id(future)
        with self._lock:
            self._outstanding[key] = (stop, future, loop, aborted)
        try:
            done, _ = await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            # The server cancelled the request (its connection closed at shutdown): so is the work.
            stop.set()
            future.cancel()
            raise
        finally:
            with self._lock:
                self._outstanding.pop(key, None)
            if watcher is not None:
                watcher.cancel()
            if not aborted.done():
                aborted.cancel()
        if result in done and not result.cancelled():
            with self._lock:
                self.finished += 1
            return result.result()
        stop.set()
        future.cancel()
        if aborted in done or result.cancelled():  # abort_outstanding cancelled it (queued) or ended the wait
            with self._lock:
                self.aborted += 1
            raise ApiError(503, "shutting_down", "the server stopped before this request's work was done; retry on another instance", {"Retry-After": "1"})
        if watcher is not None and watcher in done:
            raise ApiError(499, "client_closed_request", "the client disconnected before the answer was ready")
        raise ApiError(504, "timeout", f"the request took longer than the {timeout:g} s limit")

    def drain(self, within: float) -> int:
        """Refuse new work from now on; cancel what is still outstanding after `within` seconds
        (answered 503). Returns the requests outstanding now."""
        with self._lock:
            self._draining = True
            outstanding = len(self._outstanding)
        if self._timer is None:
            self._timer = threading.Timer(max(0.0, within), self.abort_outstanding)
            self._timer.daemon = True
            self._timer.start()
        return outstanding

    def abort_outstanding(self) -> None:
        with self._lock:
            entries = list(self._outstanding.values())
        for stop, future, loop, aborted in entries:
            stop.set()
            future.cancel()
            try:
                loop.call_soon_threadsafe(lambda f=aborted: f.done() or f.set_result(None))
            except RuntimeError:  # its loop has closed: nobody waits for the answer
                pass

    def shutdown(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self.abort_outstanding()
        self._executor.shutdown(wait=True, cancel_futures=True)
