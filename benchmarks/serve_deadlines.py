"""What the request deadlines cost: `vae serve`'s app under uvicorn's own h11 protocol and
under serve/deadlines.py's subclass of it, same settings otherwise, on 127.0.0.1.

    python benchmarks/serve_deadlines.py              # 3 rounds x 5 s per cell
    python benchmarks/serve_deadlines.py --rounds 1 --seconds 2

Cells: /healthz (the protocol's share is largest there) and sample n=1, each at 8 and 32
keep-alive clients, plus a new connection per request for /healthz (where the per-connection
timer and the arriving-connection registry are paid each time). Figures are medians over
rounds; rounds alternate the two protocols so the machine's other load falls on both.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from soak import free_port  # noqa: E402

SERVER = """
import sys, uvicorn, vaesdk
from vaesdk.serve import ServeConfig, create_app
from vaesdk.serve.run import uvicorn_config
config = ServeConfig()
u = uvicorn_config(create_app([vaesdk.load(device="cpu")], config), "127.0.0.1", int(sys.argv[1]), config)
if sys.argv[2] == "h11":
    u.http = "h11"
uvicorn.Server(u).run()
"""

CELLS = {
    "healthz, keep-alive": (lambda c: c.get("/healthz"), True),
    "sample n=1, keep-alive": (lambda c: c.post("/v1/models/fashion-mnist/sample", json={"n": 1, "seed": 0}), True),
    "healthz, new connection each": (lambda c: c.get("/healthz"), False),
}


def run_cell(base: str, op, keep_alive: bool, clients: int, seconds: float) -> dict:
    latencies: list[float] = []
    lock = threading.Lock()
    stop_at = time.perf_counter() + seconds
    limits = httpx.Limits(max_keepalive_connections=1 if keep_alive else 0)

    def loop() -> None:
        with httpx.Client(base_url=base, timeout=60, limits=limits) as client:
            for _ in range(1_000_000):
                if time.perf_counter() > stop_at:
                    return
                t = time.perf_counter()
                assert op(client).status_code == 200
                with lock:
                    latencies.append(time.perf_counter() - t)

    threads = [threading.Thread(target=loop) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ordered = sorted(latencies)
    return {"requests_per_s": len(ordered) / seconds, "p50_ms": 1e3 * ordered[len(ordered) // 2], "p99_ms": 1e3 * ordered[int(0.99 * (len(ordered) - 1))]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "serve-deadlines-results.json")
    args = parser.parse_args()
    servers = {}
    try:
        for protocol in ("h11", "deadlines"):
            port = free_port()
            servers[protocol] = (subprocess.Popen([sys.executable, "-c", SERVER, str(port), protocol], stderr=subprocess.DEVNULL), f"http://127.0.0.1:{port}")
        for protocol, (proc, base) in servers.items():
            for _ in range(3000):
                try:
                    if httpx.get(f"{base}/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.1)
        cells: dict[tuple[str, int, str], list[dict]] = {}
        for _ in range(args.rounds):
            for name, (op, keep_alive) in CELLS.items():
                for clients in (8, 32):
                    for protocol, (_, base) in servers.items():
                        cells.setdefault((name, clients, protocol), []).append(run_cell(base, op, keep_alive, clients, args.seconds))
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(timeout=60)
    rows = [
        {"cell": name, "clients": clients, "protocol": protocol, **{k: round(statistics.median(r[k] for r in runs), 2) for k in runs[0]}}
        for (name, clients, protocol), runs in cells.items()
    ]
    print(f"{time.strftime('%Y-%m-%d')}, {platform.machine()}, {args.rounds} rounds of {args.seconds:g} s, medians over rounds")
    print("| request | clients | protocol | requests/s | p50 ms | p99 ms |")
    print("|---|---:|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['cell']} | {r['clients']} | {r['protocol']} | {r['requests_per_s']:.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} |")
    args.out.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "machine": platform.machine(), "command": " ".join(sys.argv), "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
