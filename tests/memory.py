"""How much a process grew while it did something: the peak of its resident set, three ways.

`getrusage`'s ru_maxrss is the high-water mark since the process began, and Linux carries it
across exec: a process forked from a large one (a test process that has run many tests)
starts with its parent's size as its mark, so a smaller new peak reads as no growth at all.
/proc's VmHWM has the same flaw. A thread sampling /proc/self/statm every millisecond sees the
current resident set from the start of the measurement. Each is a lower bound of the true
growth, so the largest of them is reported.

`Growth.measurable()` allocates and touches 64 MiB and says whether any of the three saw it:
a test that bounds memory from above skips, saying so, on a machine where none can (rather
than passing because 0 is below every bound).

Subprocess scripts use it with `sys.path.insert(0, TESTS)` and `from memory import Growth`.
"""

from __future__ import annotations

import os
import re
import resource
import threading
import time
from pathlib import Path

TESTS = str(Path(__file__).resolve().parent)
UNMEASURABLE = "this machine reports no growth of a process's resident set (ru_maxrss, VmHWM and /proc/self/statm all unchanged by 64 MiB)"
_PAGE = os.sysconf("SC_PAGE_SIZE")


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


def _hwm_bytes() -> int:
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return 0
    found = re.search(r"^VmHWM:\s+(\d+) kB", text, re.M)
    return int(found.group(1)) * 1024 if found else 0


def _maxrss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


class Growth:
    """`with Growth() as g: work()`, then `g.mib`: how far the process grew above its start."""

    def __init__(self, interval: float = 0.001):
        self.interval = interval
        self.mib = 0.0

    def __enter__(self) -> "Growth":
        self._start = (_rss_bytes(), _hwm_bytes(), _maxrss_bytes())
        self._peak = self._start[0]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._peak = max(self._peak, _rss_bytes())
            time.sleep(self.interval)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._peak = max(self._peak, _rss_bytes())
        rss, hwm, maxrss = self._start
        grown = max(self._peak - rss, _hwm_bytes() - hwm, _maxrss_bytes() - maxrss, 0)
        self.mib = grown / 2**20

    @staticmethod
    def measurable() -> bool:
        import numpy as np

        with Growth() as g:
            block = np.ones(64 * 2**20, np.uint8)
            block[:: _PAGE] = 2
            time.sleep(0.01)
        del block
        return g.mib >= 48



def run_child(args: list[str], interval: float = 0.001, timeout: float = 120, **popen) -> tuple[int, float]:
    """Runs a child to its end; its exit code and its peak resident set (MiB), sampled from
    /proc/PID/statm while it runs (0 where /proc does not say). Not wait4's ru_maxrss: that
    starts at this process's own size (see above)."""
    import subprocess

    # Popen returns once the child has exec'd: every sample is the command's own memory.
    process = subprocess.Popen(args, **popen)
    peak, deadline = 0, time.monotonic() + timeout
    statm = f"/proc/{process.pid}/statm"
    while process.poll() is None:
        if time.monotonic() > deadline:
            process.kill()
            process.wait()
            raise TimeoutError(f"{args} ran past {timeout} s")
        try:
            with open(statm) as f:
                peak = max(peak, int(f.read().split()[1]) * _PAGE)
        except (OSError, ValueError, IndexError):
            pass
        time.sleep(interval)
    return process.returncode, peak / 2**20
