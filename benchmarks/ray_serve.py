"""Throughput and latency of the Ray Serve deployment (serve/ray_serve.py) for decode requests
over the Open Inference Protocol, with 1 and 2 replicas, batching on and off, beside `vae serve`
answering the same protocol in one process, on 127.0.0.1.

    python benchmarks/ray_serve.py                        # 3 rounds x 5 cells, 960 requests per cell
    python benchmarks/ray_serve.py --rounds 1 --requests 200 --no-baseline

Each request decodes --latents latents (64 fixed requests, drawn once) and is answered as JSON;
--clients closed-loop clients (keep-alive, asyncio, in this process) send --requests requests in
all per cell and round, after a warm-up of two requests each. Every answer is checked against
the SDK's bytes for that request alone (`Model.decode` in this process), so a figure never
counts a wrong answer. Cells: each number of --replicas with batching on (--max-batch-size) and
off (max_batch_size 1), and `vae serve -m MODEL` with its defaults (2 workers; --no-baseline
leaves it out). Rounds visit the cells in turn (a fresh deployment each time), so the
machine's other load falls on all of them. The figures are medians over rounds, with the
rounds' range of requests/s; "vs. batching off" is the median of the rounds' ratios of
batching on to off with as many replicas. Ray runs locally with --cpus CPUs (default: this
machine's), one per replica; Ray Serve's HTTP proxy, the clients and this driver share the
same cores. Results go to stdout (a markdown table) and, as JSON, to
benchmarks/ray-serve-results.json. Where /proc can be read (Linux), each cell also counts the
CPU time per request of Ray Serve's HTTP proxy, of the replicas (or of `vae serve`) and of this
process (the clients), warm-up included: what a request costs besides waiting.

Every loop here is bounded in count and in time; only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Iterator

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "ray-serve-results.json"
APP = "vaesdk-bench"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers separated by commas, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers separated by commas, got {text!r}")
    return values


def decode_bodies(model: Any, input_name: str, latents: int, count: int, seed: int) -> tuple[list[bytes], list[np.ndarray]]:
    """`count` protocol request bodies of `latents` latents each, and the SDK's answer to each alone."""
    rng = np.random.default_rng(seed)
    bodies, expected = [], []
    for _ in range(count):
        z = rng.standard_normal((latents, model.latent_dim)).astype(np.float32)
        tensor = {"name": input_name, "shape": list(z.shape), "datatype": "FP32", "data": z.ravel().tolist()}
        bodies.append(json.dumps({"inputs": [tensor]}).encode())
        expected.append(model.decode(z))
    return bodies, expected


def answer_images(body: bytes) -> np.ndarray:
    """The uint8 images of a decode answer (its one output)."""
    (out,) = json.loads(body)["outputs"]
    return np.asarray(out["data"], dtype=np.uint8).reshape(out["shape"])


async def run_cell(url: str, bodies: list[bytes], expected: list[np.ndarray], clients: int, requests: int, timeout_s: float) -> dict[str, Any]:
    """`requests` requests from `clients` keep-alive clients; latencies, throughput, batch sizes, replicas."""
    latencies: list[float] = []
    batches: list[int] = []
    replicas: Counter[str] = Counter()
    wrong: list[str] = []
    next_index = iter(range(requests))
    deadline = time.perf_counter() + timeout_s

    warm: list[int] = []
    all_warm, start = asyncio.Event(), asyncio.Event()

    async def client(c: httpx.AsyncClient) -> None:
        for _ in range(2):  # warm-up: connections open, each replica's first batches done
            r = await c.post(url, content=bodies[0], headers={"Content-Type": "application/json"})
            r.raise_for_status()
        warm.append(1)
        if len(warm) == clients:
            all_warm.set()
        await start.wait()
        for i in next_index:  # shared: each client takes the next request number until all are sent
            if time.perf_counter() > deadline:
                raise TimeoutError(f"the cell took longer than {timeout_s} s")
            t = time.perf_counter()
            r = await c.post(url, content=bodies[i % len(bodies)], headers={"Content-Type": "application/json"})
            latencies.append(time.perf_counter() - t)
            if r.status_code != 200:
                wrong.append(f"status {r.status_code}: {r.text[:200]}")
                continue
            if not np.array_equal(answer_images(r.content), expected[i % len(bodies)]):
                wrong.append(f"request {i}: not the SDK's bytes")
            batches.append(int(r.headers.get("x-vaesdk-batch", 0)))
            replicas[r.headers.get("x-vaesdk-replica", "?")] += 1

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=60, limits=limits) as c:
        tasks = [asyncio.ensure_future(client(c)) for _ in range(clients)]
        warmed = asyncio.ensure_future(all_warm.wait())
        await asyncio.wait([warmed, *tasks], timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        if not all_warm.is_set():
            warmed.cancel()
            failed = [t.exception() for t in tasks if t.done() and t.exception() is not None]
            for t in tasks:
                t.cancel()
            raise failed[0] if failed else TimeoutError(f"the clients did not warm up within {timeout_s} s")
        t0 = time.perf_counter()
        start.set()
        await asyncio.gather(*tasks)
        wall = time.perf_counter() - t0
    if wrong:
        raise AssertionError(f"{len(wrong)} wrong answers, e.g. {wrong[0]}")
    ordered = sorted(latencies)
    return {
        "requests": len(ordered),
        "requests_per_s": len(ordered) / wall,
        "p50_ms": 1e3 * ordered[len(ordered) // 2],
        "p99_ms": 1e3 * ordered[int(0.99 * (len(ordered) - 1))],
        "mean_batch": round(statistics.fmean(batches), 2) if all(batches) else None,  # None: no batch header (vae serve)
        "replica_shares": sorted(replicas.values(), reverse=True),
    }


VAE_SERVE = "vae serve"
# Processes whose CPU time a cell counts, by a piece of their command line (Linux /proc).
PROCESSES = {"proxy": "ray::ProxyActor", "replicas": "ray::ServeReplica", VAE_SERVE: "-m vaesdk serve"}


def cpu_seconds() -> dict[str, float]:
    """CPU seconds (user + system) so far of each kind of PROCESSES, and of this process (the
    clients and the driver); {} where /proc cannot be read."""
    totals = {"clients": time.process_time()}
    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return {}
    tick = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        for kind, piece in PROCESSES.items():
            if piece in command:
                totals[kind] = totals.get(kind, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return totals


@contextmanager
def vae_serve(model: str, port: int) -> Iterator[str]:
    """`vae serve -m MODEL` with its defaults (2 workers) on 127.0.0.1: the same protocol computed
    in one process, without Ray and without batching."""
    proc = subprocess.Popen([sys.executable, "-m", "vaesdk", "serve", "-m", model, "--port", str(port), "--device", "cpu"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(f"{base}/v2/health/ready", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            raise TimeoutError("vae serve did not start within 60 s")
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="fashion-mnist")
    parser.add_argument("--latents", type=int, default=8, help="latents per request (default %(default)s)")
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients (default %(default)s)")
    parser.add_argument("--requests", type=int, default=960, help="requests per cell and round (default %(default)s)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--replicas", type=int_list, default=[1, 2], help="numbers of replicas, e.g. 1,2 (default 1,2)")
    parser.add_argument("--max-batch-size", type=int, default=16, help="with batching on (default %(default)s)")
    parser.add_argument("--batch-wait-timeout-s", type=float, default=0.002, help="(default %(default)s)")
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 1, help="Ray's CPUs (default: this machine's, %(default)s)")
    parser.add_argument("--no-baseline", action="store_true", help="leave out the vae serve cell")
    parser.add_argument("--cell-timeout", type=float, default=600.0, help="seconds one cell may take (default %(default)s)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    if max(args.replicas) > args.cpus:
        parser.error(f"--replicas {max(args.replicas)} needs {max(args.replicas)} CPUs, but --cpus is {args.cpus}; lower --replicas or raise --cpus")

    import ray
    from ray import serve

    import vaesdk
    from vaesdk.serve.ray_serve import RayServeOptions, application

    model = vaesdk.load(args.model, device="cpu")
    cells: list[tuple[str, int, bool]] = [("ray", replicas, batching) for replicas in args.replicas for batching in (True, False)]
    if not args.no_baseline:
        cells.append((VAE_SERVE, 1, False))
    runs: dict[tuple[str, int, bool], list[dict[str, Any]]] = {cell: [] for cell in cells}
    bodies: list[bytes] = []
    expected: list[np.ndarray] = []
    ray_port, baseline_port = free_port(), free_port()
    ray.init(num_cpus=args.cpus, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False, logging_level="ERROR")
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": ray_port}, logging_config={"log_level": "WARNING"})
        with ExitStack() as stack:
            baseline = None if args.no_baseline else stack.enter_context(vae_serve(args.model, baseline_port))
            for round_ in range(args.rounds):
                for cell in cells:
                    server, replicas, batching = cell
                    if server == "ray":
                        options = RayServeOptions(
                            bundles=(args.model,), num_replicas=replicas, max_batch_size=args.max_batch_size if batching else 1,
                            batch_wait_timeout_s=args.batch_wait_timeout_s, max_ongoing_requests=2 * args.max_batch_size,
                        )  # fmt: skip
                        serve.run(application(options), name=APP, route_prefix="/")
                    base = f"http://127.0.0.1:{ray_port}" if server == "ray" else baseline
                    url = f"{base}/v2/models/{args.model}.decode"
                    if not bodies:
                        (tensor,) = httpx.get(url, timeout=60).json()["inputs"]
                        bodies, expected = decode_bodies(model, tensor["name"], args.latents, 64, seed=0)
                    before = cpu_seconds()
                    result = asyncio.run(run_cell(f"{url}/infer", bodies, expected, args.clients, args.requests, args.cell_timeout))
                    after = cpu_seconds()
                    # Per answered request, warm-up included (2 requests per client): the processes that exist at the end.
                    result["cpu_ms_per_request"] = {
                        kind: round(1e3 * (after[kind] - before.get(kind, 0.0)) / (result["requests"] + 2 * args.clients), 1) for kind in after
                    }
                    runs[cell].append(result)
                    print(f"round {round_ + 1}: {label(cell)}: {result['requests_per_s']:.0f} requests/s, p50 {result['p50_ms']:.0f} ms, "
                          f"p99 {result['p99_ms']:.0f} ms, mean batch {result['mean_batch']}, per replica {result['replica_shares']}, "
                          f"CPU ms per request {result['cpu_ms_per_request']}", file=sys.stderr)  # fmt: skip
                    if server == "ray":
                        serve.delete(APP)
    finally:
        serve.shutdown()
        ray.shutdown()

    rows = []
    for (server, replicas, batching), results in runs.items():
        row: dict[str, Any] = {"server": server, "replicas": replicas if server == "ray" else None, "batching": batching,
                               "max_batch_size": (args.max_batch_size if batching else 1) if server == "ray" else None}  # fmt: skip
        for key in ("requests_per_s", "p50_ms", "p99_ms"):
            row[key] = round(statistics.median(r[key] for r in results), 2)
        row["mean_batch"] = round(statistics.median(r["mean_batch"] for r in results), 2) if server == "ray" else None
        kinds = {k for r in results for k in r["cpu_ms_per_request"]}
        row["cpu_ms_per_request"] = {k: round(statistics.median(r["cpu_ms_per_request"].get(k, 0.0) for r in results), 1) for k in sorted(kinds)}
        row["rounds"] = results
        rows.append(row)
    # Batching on against off with as many replicas: the median of the rounds' ratios (the two
    # cells of a round ran one after the other, under much the same load).
    unbatched = {r["replicas"]: r["rounds"] for r in rows if r["server"] == "ray" and not r["batching"]}
    for r in rows:
        ratios = [a["requests_per_s"] / b["requests_per_s"] for a, b in zip(r["rounds"], unbatched[r["replicas"]])] if r["server"] == "ray" else []
        r["vs_batching_off"] = round(statistics.median(ratios), 2) if ratios else None
        r["requests_per_s_range"] = [round(min(x["requests_per_s"] for x in r["rounds"]), 1), round(max(x["requests_per_s"] for x in r["rounds"]), 1)]
    date = time.strftime("%Y-%m-%d")
    print(f"{date}, {platform.machine()}, {os.cpu_count()} cores, Ray {ray.__version__} with {args.cpus} CPUs; {args.model} decode, "
          f"{args.latents} latents per request (JSON), {args.clients} clients, {args.requests} requests per cell, medians of {args.rounds} rounds")  # fmt: skip
    print("| server | requests/s (rounds' range) | p50 ms | p99 ms | requests per SDK call | vs. batching off | CPU ms per request: server, clients |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for r in rows:
        cell = (r["server"], r["replicas"] or 1, r["batching"])
        batch = f"{r['mean_batch']:.1f}" if r["mean_batch"] is not None else "1"
        ratio = f"{r['vs_batching_off']:.2f}x" if r["vs_batching_off"] is not None else ""
        low, high = r["requests_per_s_range"]
        cpu = r["cpu_ms_per_request"]
        server = " + ".join(f"{k} {cpu[k]:.1f}" for k in ("proxy", "replicas") if k in cpu) if r["server"] == "ray" else f"{cpu.get(VAE_SERVE, 0):.1f}"
        used = f"{server}; {cpu['clients']:.1f}" if "clients" in cpu else "n/a"
        print(f"| {label(cell)} | {r['requests_per_s']:.0f} ({low:.0f}-{high:.0f}) | {r['p50_ms']:.0f} | {r['p99_ms']:.0f} | {batch} | {ratio} | {used} |")
    record = {
        "date": date, "machine": platform.machine(), "cores": os.cpu_count(), "ray": ray.__version__, "command": " ".join(["python", *sys.argv]),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}, "rows": rows,
    }  # fmt: skip
    args.out.write_text(json.dumps(record, indent=2) + "\n")


def label(cell: tuple[str, int, bool]) -> str:
    server, replicas, batching = cell
    if server != "ray":
        return f"{server} (2 workers, no Ray)"
    return f"Ray Serve, {replicas} replica{'s' if replicas > 1 else ''}, batching {'on' if batching else 'off'}"


if __name__ == "__main__":
    main()
