"""Benchmark of `vae serve`: requests/s and p50/p99 latency for sample and encode, at several
client concurrencies, against the same SDK call made directly in one process (the floor).

    python benchmarks/serve.py                # table on stdout, JSON to benchmarks/serve-results.json
    python benchmarks/serve.py --quick        # shorter rounds

The server runs in its own process on 127.0.0.1 with its defaults (2 workers); clients are
threads with keep-alive connections. Each (operation, concurrency) cell runs `--rounds`
times in turn with the others; figures are medians over rounds.
"""

from __future__ import annotations

import argparse
import json
import platform
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np

import vaesdk
from vaesdk.imaging.images import encode_png, make_grid

ROOT = Path(__file__).resolve().parent.parent
SHIRT = (ROOT / "docs" / "images" / "inputs" / "shirt.png").read_bytes()
OPERATIONS = {
    "sample n=1": lambda c: c.post("/v1/models/fashion-mnist/sample", json={"n": 1, "seed": 0}),
    "sample n=16": lambda c: c.post("/v1/models/fashion-mnist/sample", json={"n": 16, "seed": 0}),
    "encode 1 image": lambda c: c.post("/v1/models/fashion-mnist/encode", files={"image": ("shirt.png", SHIRT)}),
}


def direct_calls(model: vaesdk.Model) -> dict:
    """The same work without HTTP: the SDK call plus the PNG/JSON the route produces."""
    return {
        "sample n=1": lambda: encode_png(make_grid(model.sample(1, seed=0))),
        "sample n=16": lambda: encode_png(make_grid(model.sample(16, seed=0))),
        "encode 1 image": lambda: json.dumps(model.encode(SHIRT).mean.tolist()),
    }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run_cell(base: str, op, clients: int, seconds: float) -> dict:
    latencies: list[float] = []
    failures = 0
    lock = threading.Lock()
    start = time.perf_counter()

    def loop() -> None:
        nonlocal failures
        with httpx.Client(base_url=base, timeout=60) as client:
            op(client)  # connection set up outside the timing
            while time.perf_counter() - start < seconds:
                t0 = time.perf_counter()
                ok = op(client).status_code == 200
                dt = time.perf_counter() - t0
                with lock:
                    latencies.append(dt)
                    failures += not ok

    threads = [threading.Thread(target=loop) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    return {
        "requests_per_s": len(latencies) / elapsed,
        "p50_ms": 1e3 * percentile(latencies, 0.5),
        "p99_ms": 1e3 * percentile(latencies, 0.99),
        "requests": len(latencies),
        "failures": failures,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 s cells, 2 rounds")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0, help="length of one cell")
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "serve-results.json")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.seconds = 2, 2.0
    levels = [int(x) for x in args.concurrency.split(",")]

    model = vaesdk.load(device="cpu")
    direct = {}
    for name, fn in direct_calls(model).items():
        fn()
        times = []
        for _ in range(200):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        direct[name] = 1e3 * statistics.median(times)

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "vaesdk.cli.main", "serve", "--port", str(port), "--device", "cpu", "--queue", "256"],
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, timeout=5) as probe:
            deadline = time.monotonic() + 120
            while True:
                if proc.poll() is not None:
                    raise SystemExit(f"vae serve exited with {proc.returncode} before answering")
                if time.monotonic() > deadline:
                    raise SystemExit("vae serve did not answer /healthz within 120 s")
                try:
                    if probe.get("/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.1)
        cells: dict[tuple[str, int], list[dict]] = {}
        for _ in range(args.rounds):
            for name, op in OPERATIONS.items():
                for clients in levels:
                    cells.setdefault((name, clients), []).append(run_cell(base, op, clients, args.seconds))
    finally:
        proc.terminate()
        proc.wait(timeout=60)

    rows = []
    for (name, clients), runs in cells.items():
        rows.append({
            "operation": name,
            "clients": clients,
            **{k: statistics.median(r[k] for r in runs) for k in ("requests_per_s", "p50_ms", "p99_ms")},
            "requests": sum(r["requests"] for r in runs),
            "failures": sum(r["failures"] for r in runs),
            "direct_sdk_ms": direct[name],
        })  # fmt: skip
    print(f"vae serve on 127.0.0.1, 2 workers; {platform.machine()}, {args.rounds} rounds of {args.seconds:g} s; medians over rounds")
    print("| operation | clients | requests/s | p50 ms | p99 ms | direct SDK call ms | requests (failures) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['operation']} | {r['clients']} | {r['requests_per_s']:.1f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
            f"{r['direct_sdk_ms']:.2f} | {r['requests']} ({r['failures']}) |"
        )
    args.out.write_text(json.dumps({"machine": platform.machine(), "python": platform.python_version(), "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
