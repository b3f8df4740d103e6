"""numpy's BLAS held to one thread while the SDK does its own linear algebra.

The SDK's numpy products are small: a prior's factors (a few hundred dimensions at most), the
densities of a batch of latents, the low-rank pixel likelihood. OpenBLAS splits such a product
over every core and then waits for all of them; where the cores are busy (a server beside other
work, or onnxruntime's pool in the same process) the thread it waits for may not run for
milliseconds. Inverting one 128x128 factor took 40 ms on two threads and 0.4 ms on one while
another process kept one of two cores busy, and loading the emoji bundle (eleven such
inversions) went from 0.1 s to between 0.8 and 6.6 s (docs/performance.md).

Inside `one_blas_thread()` the BLAS libraries numpy loaded (threadpoolctl finds them: OpenBLAS,
MKL, BLIS) run on one thread. BLAS has no per-thread setting, so the limit is process-wide: the
first of overlapping calls (from any thread) sets it, the last to leave restores what was there
before, and another thread's products in that window run on one thread too.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_lock = threading.Lock()
_controller: Any = None
_holders = 0
_limiter: Any = None


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """Run the block with numpy's BLAS on one thread (see the module's text)."""
    global _controller, _holders, _limiter
    with _lock:
        if _holders == 0:
            if _controller is None:
                from threadpoolctl import ThreadpoolController  # scans the loaded libraries once: about 1 ms

                _controller = ThreadpoolController()
            _limiter = _controller.limit(limits=1, user_api="blas")
        _holders += 1
    try:
        yield
    finally:
        with _lock:
            _holders -= 1
            if _holders == 0:
                _limiter.restore_original_limits()
                _limiter = None
