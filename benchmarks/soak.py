"""Soak of `vae serve` on 127.0.0.1: polite clients on mixed routes for a long run, with one
hostile client's slow-HTTP mix (half-open requests and stalled uploads) for part of it.

    python benchmarks/soak.py                       # 32 clients, 10 minutes, the hostile mix from 2 to 6 min
    python benchmarks/soak.py --minutes 2 --hostile-at 0.5
    python benchmarks/soak.py --hostile-only        # the hostile-mix check alone (about a minute)

Success: no answer other than the expected one (the SDK's bytes, or the documented refusal;
a 503 counts only with Retry-After), and the server's RSS and open file descriptors at the
end within 10 % of their values after warm-up. The figures go to stdout and, as JSON, to
benchmarks/soak-results.json. tests/test_serve_soak.py runs a short version of the same code,
and tests/test_serve_hostile.py the hostile-mix check.

Every loop here is bounded in count and in time; only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import select
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
INPUTS = ROOT / "docs" / "images" / "inputs"
NAME = "fashion-mnist"
API = f"/v1/models/{NAME}"


# ---- the server -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def server_process(*args: str, log: Any = None, start_s: float = 300) -> Iterator[tuple[subprocess.Popen, str]]:
    """`vae serve --port P ARGS` on 127.0.0.1; yields (process, base URL) once /healthz answers."""
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "vaesdk.cli.main", "serve", "--port", str(port), "--device", "cpu", *args],
        stderr=log if log is not None else subprocess.DEVNULL, env=env,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + start_s
        with httpx.Client(base_url=base, timeout=5) as probe:
            while True:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"vae serve did not start (exit {proc.poll()})")
                try:
                    if probe.get("/healthz").status_code == 200:
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


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


# ---- the hostile client -----------------------------------------------------------------------


class Attack:
    """One client's slow-HTTP mix: `half_open` connections that send part of a request's
    headers and never finish them, and `stalled` uploads that send complete headers
    declaring a 1,000,000-byte body and then 5 bytes of it. Nothing is ever sent again."""

    def __init__(self, port: int, half_open: int = 300, stalled: int = 100):
        self.port, self.half_open, self.stalled = port, half_open, stalled
        self.sockets: list[socket.socket] = []
        self.refused = 0  # connections the server would not even accept

    def open(self, within_s: float = 20.0) -> None:
        start = time.monotonic()
        for i in range(self.half_open + self.stalled):
            if time.monotonic() - start > within_s:
                break
            try:
                s = socket.create_connection(("127.0.0.1", self.port), timeout=5)
                if i < self.half_open:
                    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
                else:
                    s.sendall(
                        f"POST {API}/encode HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                        "Content-Length: 1000000\r\n\r\n--b\r\n".encode()
                    )
                self.sockets.append(s)
            except OSError:
                self.refused += 1

    def held(self) -> int:
        """How many of the attack's connections the server still holds open."""
        held = 0
        for s in self.sockets:
            if s.fileno() < 0:
                continue
            if _closed_by_server(s):
                s.close()
            else:
                held += 1
        return held

    @property
    def total(self) -> int:
        return self.half_open + self.stalled

    def close(self) -> None:
        for s in self.sockets:
            s.close()


def _closed_by_server(s: socket.socket) -> bool:
    for _ in range(64):  # a 408 answer and then the end: a few reads at most
        readable, _, _ = select.select([s], [], [], 0)
        if not readable:
            return False
        try:
            if not s.recv(65536):
                return True
        except OSError:
            return True
    return False


# ---- the polite clients -----------------------------------------------------------------------


def png(name: str) -> bytes:
    return (INPUTS / f"{name}.png").read_bytes()


def expectations(model: Any) -> dict[str, Any]:
    """What the SDK answers for each request the polite clients send."""
    from vaesdk.imaging.images import encode_png, make_grid

    shirt, bag = png("shirt"), png("bag")
    z = np.random.default_rng(1).standard_normal((2, model.latent_dim)).astype(np.float32)
    return {
        "shirt": shirt, "bag": bag, "z": z.tolist(),
        "sample": {s: encode_png(make_grid(model.sample(4, seed=s))) for s in range(4)},
        "edit": {d: encode_png(model.edit(shirt, dim=d, delta=2.0)[0]) for d in (3, 9)},
        "reconstruct": encode_png(model.reconstruct(bag)[0]),
        "encode": model.encode(shirt).mean[0].tolist(),
        "decode": encode_png(make_grid(model.decode(z))),
        "score": float(model.score(bag, k=1, seed=0).anomaly[0]),
    }  # fmt: skip


ROUTES = ["healthz", "sample", "sample", "encode", "edit", "reconstruct", "decode", "score", "models"]


def one_request(client: httpx.Client, kind: str, rnd: random.Random, x: dict[str, Any]) -> tuple[int, bool]:
    """Send one request of `kind`; (status, the answer is the SDK's). A 503 is an answer only
    with Retry-After (the documented overload refusal)."""
    if kind == "healthz":
        r = client.get("/healthz")
        ok = r.status_code == 200 and r.json() == {"status": "ok"}
    elif kind == "models":
        r = client.get("/v1/models")
        ok = r.status_code == 200 and NAME in [m["name"] for m in r.json()["models"]]
    elif kind == "sample":
        seed = rnd.randrange(4)
        r = client.post(f"{API}/sample", json={"n": 4, "seed": seed})
        ok = r.status_code == 200 and r.content == x["sample"][seed]
    elif kind == "encode":
        r = client.post(f"{API}/encode", files={"image": ("shirt.png", x["shirt"])})
        ok = r.status_code == 200 and r.json()["results"][0]["mean"] == x["encode"]
    elif kind == "edit":
        dim = rnd.choice([3, 9])
        r = client.post(f"{API}/edit", files={"image": ("shirt.png", x["shirt"])}, data={"dim": str(dim), "delta": "2"})
        ok = r.status_code == 200 and r.content == x["edit"][dim]
    elif kind == "reconstruct":
        r = client.post(f"{API}/reconstruct", files={"image": ("bag.png", x["bag"])})
        ok = r.status_code == 200 and r.content == x["reconstruct"]
    elif kind == "decode":
        r = client.post(f"{API}/decode", json={"latents": x["z"]})
        ok = r.status_code == 200 and r.content == x["decode"]
    else:
        r = client.post(f"{API}/score", files={"image": ("bag.png", x["bag"])}, data={"seed": "0"})
        ok = r.status_code == 200 and r.json()["results"][0]["anomaly"] == x["score"]
    if r.status_code == 503 and r.headers.get("retry-after"):
        ok = True
    return r.status_code, ok


@dataclass
class Tally:
    statuses: Counter = field(default_factory=Counter)
    wrong: Counter = field(default_factory=Counter)
    lost: Counter = field(default_factory=Counter)
    seconds: list[float] = field(default_factory=list)  # each answer's latency
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, kind: str, status: int, ok: bool, seconds: float) -> None:
        with self.lock:
            self.statuses[status] += 1
            self.seconds.append(seconds)
            if not ok:
                self.wrong[f"{kind} {status}"] += 1

    @property
    def requests(self) -> int:
        return sum(self.statuses.values()) + sum(self.lost.values())


def polite_clients(base: str, x: dict[str, Any], clients: int, seconds: float, max_requests: int, tally: Tally) -> list[threading.Thread]:
    """`clients` threads, each a keep-alive client sending random routes back to back until
    `seconds` have passed or it has sent `max_requests`."""
    stop_at = time.monotonic() + seconds

    def loop(i: int) -> None:
        rnd = random.Random(i)
        with httpx.Client(base_url=base, timeout=60) as client:
            for _ in range(max_requests):
                if time.monotonic() > stop_at:
                    return
                kind = rnd.choice(ROUTES)
                t = time.monotonic()
                try:
                    status, ok = one_request(client, kind, rnd, x)
                    tally.add(kind, status, ok, time.monotonic() - t)
                except httpx.HTTPError as e:
                    with tally.lock:
                        tally.lost[f"{kind} {type(e).__name__}"] += 1

    threads = [threading.Thread(target=loop, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    return threads


# ---- the hostile-mix check --------------------------------------------------------------------


def hostile_check(base: str, x: dict[str, Any], seconds: float = 45.0, every_s: float = 0.25, half_open: int = 300, stalled: int = 100) -> dict[str, Any]:
    """The hostile mix from one client while one polite client sends healthz, sample and
    encode every `every_s` seconds for `seconds`; then how many attacking connections the
    server still holds."""
    port = int(base.rsplit(":", 1)[1])
    attack = Attack(port, half_open, stalled)
    start = time.monotonic()
    attack.open()
    opened = len(attack.sockets)
    statuses: Counter = Counter()
    kinds = ["healthz", "sample", "encode"]
    rnd = random.Random(0)
    with httpx.Client(base_url=base, timeout=30) as client:
        for i in range(int(seconds / every_s) + 1):
            if time.monotonic() - start > seconds:
                break
            t = time.monotonic()
            try:
                status, ok = one_request(client, kinds[i % 3], rnd, x)
                statuses["200 (the SDK's answer)" if status == 200 and ok else str(status)] += 1
            except httpx.HTTPError as e:
                statuses[type(e).__name__] += 1
            time.sleep(max(0.0, every_s - (time.monotonic() - t)))
    time.sleep(max(0.0, seconds - (time.monotonic() - start)))
    held = attack.held()
    attack.close()
    sent = sum(statuses.values())
    good = statuses["200 (the SDK's answer)"]
    return {
        "attacking_connections": attack.total, "opened": opened, "refused_at_connect": attack.refused,
        "polite_requests": sent, "polite_ok": good, "polite_ok_share": good / sent if sent else 0.0,
        "polite_statuses": dict(statuses), "held_after_s": round(time.monotonic() - start, 1),
        "held": held, "held_share": held / attack.total,
    }  # fmt: skip


# ---- the soak ---------------------------------------------------------------------------------


def soak(base: str, pid: int, x: dict[str, Any], clients: int, seconds: float, warmup_s: float, hostile_at_s: float | None,
         max_requests: int = 1_000_000) -> dict[str, Any]:  # fmt: skip
    """Polite clients for `seconds`; the hostile mix (held until its deadlines close it)
    starting at `hostile_at_s`; RSS and fds after warm-up and at the end (after the clients
    have finished and the server has closed their connections)."""
    tally = Tally()
    start = time.monotonic()
    threads = polite_clients(base, x, clients, seconds, max_requests, tally)
    time.sleep(warmup_s)
    warm = {"rss_mib": rss_mib(pid), "fds": open_fds(pid), "at_s": round(time.monotonic() - start, 1)}
    hostile: dict[str, Any] | None = None
    if hostile_at_s is not None:
        time.sleep(max(0.0, hostile_at_s - (time.monotonic() - start)))
        hostile = hostile_check(base, x)
    for t in threads:
        t.join(timeout=max(1.0, seconds - (time.monotonic() - start)) + 120)
    stuck = sum(t.is_alive() for t in threads)
    elapsed = time.monotonic() - start
    # The clients' connections were still open at warm-up; compare like with like: open the
    # same number again, idle, before counting.
    time.sleep(1.0)
    with _idle_connections(base, clients):
        end = {"rss_mib": rss_mib(pid), "fds": open_fds(pid), "at_s": round(time.monotonic() - start, 1)}
    errors = sum(tally.wrong.values()) + sum(tally.lost.values())
    latencies = sorted(tally.seconds) or [0.0]
    return {
        "clients": clients, "seconds": round(elapsed, 1), "requests": tally.requests, "requests_per_s": round(tally.requests / elapsed, 1),
        "statuses": {str(k): v for k, v in sorted(tally.statuses.items())}, "errors": errors,
        "wrong": dict(tally.wrong), "lost": dict(tally.lost), "stuck_clients": stuck,
        "p50_ms": round(1e3 * latencies[len(latencies) // 2], 1), "p99_ms": round(1e3 * latencies[int(0.99 * (len(latencies) - 1))], 1),
        "warm": warm, "end": end,
        "rss_change": end["rss_mib"] / warm["rss_mib"] - 1, "fd_change": end["fds"] / warm["fds"] - 1,
        "hostile": hostile,
    }  # fmt: skip


@contextmanager
def _idle_connections(base: str, n: int) -> Iterator[None]:
    port = int(base.rsplit(":", 1)[1])
    socks = []
    try:
        for _ in range(n):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            s.recv(4096)
            socks.append(s)
        time.sleep(0.2)
        yield
    finally:
        for s in socks:
            s.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--warmup", type=float, default=30.0, help="seconds before the reference RSS/fd reading")
    parser.add_argument("--hostile-at", type=float, default=2.0, help="minutes in when the hostile mix starts (it lasts 45 s + its deadlines)")
    parser.add_argument("--no-hostile", action="store_true")
    parser.add_argument("--hostile-only", action="store_true", help="only the hostile-mix check, one polite client")
    parser.add_argument("--serve-args", default="", help="extra `vae serve` options, e.g. '--queue 32'")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "soak-results.json")
    args = parser.parse_args()

    import vaesdk

    x = expectations(vaesdk.load(device="cpu"))
    command = " ".join(sys.argv)
    with server_process(*args.serve_args.split()) as (proc, base):
        if args.hostile_only:
            result: dict[str, Any] = {"hostile": hostile_check(base, x)}
        else:
            hostile_at = None if args.no_hostile else 60 * args.hostile_at
            result = soak(base, proc.pid, x, args.clients, 60 * args.minutes, args.warmup, hostile_at)
    result = {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "command": command, **result}
    print(json.dumps(result, indent=2))
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
