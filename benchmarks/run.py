"""The benchmark suite: vaesdk against bare onnxruntime and PyTorch eager, same weights, same run.

    python benchmarks/run.py                 # full suite, table on stdout, JSON to benchmarks/results.json
    python benchmarks/run.py --quick         # fewer repeats, for a smoke run

Every figure is the median of repeated measurements, with the spread (p95 for latencies,
min..max for process-level figures). Throughput and latency come from the same timed calls.
PyTorch runs the checkpoint the bundle was exported from (checkpoints/<model>/).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CHECKPOINTS = ROOT / "checkpoints"
BATCHES = (1, 16, 256, 1024)


# ---- timing helpers -------------------------------------------------------------------------


def time_calls(fn, repeats: int, min_seconds: float) -> list[float]:
    """Run fn() at least `repeats` times and at least `min_seconds` in all; return each duration."""
    fn()  # warm-up: first-call allocations and kernel choices are measured separately
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < repeats or time.perf_counter() - start < min_seconds:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if len(times) >= 50 * repeats:
            break
    return times


def summarize(times: list[float], batch: int) -> dict:
    ordered = sorted(times)
    median = statistics.median(ordered)
    return {
        "median_ms": 1e3 * median,
        "p95_ms": 1e3 * ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))],
        "images_per_s": batch / median,
        "calls": len(times),
    }


# ---- the three ways to run the same weights -------------------------------------------------


def make_runners(bundle: Path, checkpoint: Path, threads: int | None):
    import onnxruntime as ort
    import torch

    import vaesdk
    from vaesdk.training.train import load_model

    model = vaesdk.load(bundle, device="cpu", threads=threads, batch_size=4096)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        opts.intra_op_num_threads = threads
    bare = {
        role: ort.InferenceSession(str(bundle / f"{role}.onnx"), sess_options=opts, providers=["CPUExecutionProvider"])
        for role in ("encoder", "decoder")
    }
    torch_model, _ = load_model(checkpoint)
    if threads:
        torch.set_num_threads(threads)
    return model, bare, torch_model


def workloads(model, bare, torch_model, batch: int, rng: np.random.Generator):
    """name -> {runner: callable}; each callable does the whole job a user asks for."""
    import torch

    h, w, c = model.image_shape
    images = rng.integers(0, 256, (batch, h, w, c), dtype=np.uint8)
    z = rng.standard_normal((batch, model.latent_dim), dtype=np.float32)
    x = images.transpose(0, 3, 1, 2).astype(np.float32) / 255.0
    x_t = torch.from_numpy(x)
    z_t = torch.from_numpy(z)

    def torch_decode():
        with torch.inference_mode():
            mean, _ = torch_model.decoder(z_t)
            return (mean.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()

    def torch_encode():
        with torch.inference_mode():
            return torch_model.encoder(torch.from_numpy(images.transpose(0, 3, 1, 2).astype(np.float32) / 255.0))[0].numpy()

    def torch_sample():
        with torch.inference_mode():
            zz = torch.randn(batch, model.latent_dim)
            mean, _ = torch_model.decoder(zz)
            return (mean.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()

    return {
        "encode": {
            "vaesdk": lambda: model.encode(images),
            "onnxruntime": lambda: bare["encoder"].run(None, {"x": x}),
            "torch": torch_encode,
        },
        "decode": {
            "vaesdk": lambda: model.decode(z),
            "onnxruntime": lambda: bare["decoder"].run(["mean"], {"z": z}),
            "torch": torch_decode,
        },
        "sample": {
            "vaesdk": lambda: model.sample(batch, seed=0),
            "onnxruntime": lambda: bare["decoder"].run(["mean"], {"z": rng.standard_normal((batch, model.latent_dim), dtype=np.float32)}),
            "torch": torch_sample,
        },
    }
    # Note: the bare onnxruntime rows time only session.run on ready float32 input; vaesdk's
    # rows include reading uint8 images, the layout change, and rounding back to uint8.


def bench_calls(bundle: Path, checkpoint: Path, repeats: int, min_seconds: float, threads: int | None) -> list[dict]:
    model, bare, torch_model = make_runners(bundle, checkpoint, threads)
    rng = np.random.default_rng(0)
    rows = []
    for batch in BATCHES:
        for op, runners in workloads(model, bare, torch_model, batch, rng).items():
            for runner, fn in runners.items():
                s = summarize(time_calls(fn, repeats if batch < 256 else max(5, repeats // 4), min_seconds), batch)
                rows.append({"op": op, "batch": batch, "runner": runner, **s})
                print(f"  {op:<7} batch {batch:>5}  {runner:<12} {s['median_ms']:9.3f} ms  p95 {s['p95_ms']:9.3f} ms", file=sys.stderr)
    return rows


# ---- fresh processes: cold start and memory ---------------------------------------------------


def run_process(args: list[str], cwd: str) -> tuple[float, int]:
    """Wall seconds and peak resident memory (MiB) of one fresh process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(args, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    err = proc.stderr.read().decode() if proc.stderr else ""
    proc.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(args)} failed: {err}")
    return wall, usage.ru_maxrss // 1024


TORCH_DECODE = """
import sys, torch
sys.path.insert(0, {root!r})
from vaesdk.training.train import load_model
model, _ = load_model({checkpoint!r})
with torch.inference_mode():
    mean, _ = model.decoder(torch.randn(16, model.config.latent_dim))
"""


def bench_processes(bundle: Path, checkpoint: Path, repeats: int) -> dict:
    vae = str(Path(sys.executable).with_name("vae"))
    commands = {
        "vae sample --n 16": [vae, "sample", "--n", "16", "--seed", "0", "-m", str(bundle), "-o", "s.png", "--force"],
        "python -c 'import torch'": [sys.executable, "-c", "import torch"],
        "torch: load checkpoint, decode 16": [
            sys.executable, "-c", TORCH_DECODE.format(root=str(ROOT), checkpoint=str(checkpoint)),
        ],  # fmt: skip
        "python -c 'import vaesdk'": [sys.executable, "-c", "import vaesdk"],
    }
    out = {}
    with tempfile.TemporaryDirectory() as cwd:
        for name, args in commands.items():
            run_process(args, cwd)  # warm the file cache, as a user's second run would be
            walls, rss = [], []
            for _ in range(repeats):
                w, r = run_process(args, cwd)
                walls.append(w)
                rss.append(r)
            out[name] = {
                "median_s": statistics.median(walls),
                "min_s": min(walls),
                "max_s": max(walls),
                "peak_rss_mib": statistics.median(rss),
                "runs": repeats,
            }
            print(f"  {name:<36} {out[name]['median_s']:.3f} s  ({min(walls):.3f}..{max(walls):.3f}), {out[name]['peak_rss_mib']} MiB", file=sys.stderr)
    return out


def bench_startup(bundle: Path, repeats: int) -> dict:
    """Session creation and the first call, in-process, each from a cold model object."""
    import vaesdk
    from vaesdk.bundle import read_bundle
    from vaesdk.model import Model

    verify, create, first = [], [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        b = read_bundle(bundle)
        t1 = time.perf_counter()
        m = Model(b, device="cpu")
        t2 = time.perf_counter()
        m.sample(16, seed=0)
        t3 = time.perf_counter()
        verify.append(t1 - t0)
        create.append(t2 - t1)
        first.append(t3 - t2)
    second = statistics.median(time_calls(lambda: m.sample(16, seed=0), 20, 0.2))
    del vaesdk
    return {
        "read_and_verify_bundle_ms": 1e3 * statistics.median(verify),
        "create_sessions_ms": 1e3 * statistics.median(create),
        "first_sample16_ms": 1e3 * statistics.median(first),
        "steady_sample16_ms": 1e3 * second,
    }


# ---- installed size ---------------------------------------------------------------------------


def dist_size(name: str) -> int:
    try:
        dist = metadata.distribution(name)
    except metadata.PackageNotFoundError:
        return 0
    total = 0
    for f in dist.files or []:
        p = Path(dist.locate_file(f))
        if p.is_file():
            total += p.stat().st_size
    return total


def requirement_closure(name: str, seen: set[str] | None = None) -> set[str]:
    """A distribution and everything it requires (ignoring extras and markers that do not apply)."""
    from packaging.requirements import Requirement

    seen = set() if seen is None else seen
    key = name.lower().replace("_", "-")
    if key in seen:
        return seen
    try:
        dist = metadata.distribution(key)
    except metadata.PackageNotFoundError:
        return seen
    seen.add(key)
    for req in dist.requires or []:
        r = Requirement(req)
        if r.marker is None or r.marker.evaluate({"extra": ""}):
            requirement_closure(r.name, seen)
    return seen


def bench_sizes() -> dict:
    runtime = set().union(*(requirement_closure(n) for n in ("numpy", "onnxruntime", "pillow", "typer")))
    torch_deps = requirement_closure("torch")
    return {
        "runtime_packages": sorted(runtime),
        "runtime_mib": sum(map(dist_size, runtime)) / 2**20,
        "torch_packages": sorted(torch_deps),
        "torch_mib": sum(map(dist_size, torch_deps)) / 2**20,
    }


# ---- report -----------------------------------------------------------------------------------


def machine() -> dict:
    import onnxruntime
    import torch

    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "date": time.strftime("%Y-%m-%d"),
    }


def table(result: dict) -> str:
    lines = ["| op | batch | vaesdk ms (p95) | bare ORT ms | torch ms | vaesdk img/s | SDK overhead | speed-up vs torch |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    rows = {(r["op"], r["batch"], r["runner"]): r for r in result["calls"]}
    for op in ("encode", "decode", "sample"):
        for batch in BATCHES:
            v, o, t = (rows[(op, batch, k)] for k in ("vaesdk", "onnxruntime", "torch"))
            lines.append(
                f"| {op} | {batch} | {v['median_ms']:.3f} ({v['p95_ms']:.3f}) | {o['median_ms']:.3f} | {t['median_ms']:.3f} | "
                f"{v['images_per_s']:,.0f} | {100 * (v['median_ms'] / o['median_ms'] - 1):+.1f}% | {t['median_ms'] / v['median_ms']:.2f}x |"
            )
    lines += ["", "| fresh process | median s (min..max) | peak RSS MiB |", "|---|---:|---:|"]
    for name, p in result["processes"].items():
        lines.append(f"| `{name}` | {p['median_s']:.3f} ({p['min_s']:.3f}..{p['max_s']:.3f}) | {p['peak_rss_mib']} |")
    s = result["startup"]
    lines += [
        "",
        f"In-process start: read + verify bundle {s['read_and_verify_bundle_ms']:.1f} ms, create sessions {s['create_sessions_ms']:.1f} ms, "
        f"first `sample(16)` {s['first_sample16_ms']:.1f} ms, later calls {s['steady_sample16_ms']:.1f} ms.",
        f"Installed size: runtime dependencies {result['sizes']['runtime_mib']:.0f} MiB "
        f"({len(result['sizes']['runtime_packages'])} distributions) vs torch {result['sizes']['torch_mib']:.0f} MiB "
        f"({result['sizes']['runtime_mib'] / result['sizes']['torch_mib']:.2f}x).",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="fashion-mnist", help="bundled model name (its checkpoint must be in checkpoints/)")
    parser.add_argument("--quick", action="store_true", help="fewer repeats (a smoke run, not for reporting)")
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads for both runtimes (default: each one's own)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results.json")
    args = parser.parse_args()

    import vaesdk

    bundle = vaesdk.load(args.model, device="cpu").path
    checkpoint = CHECKPOINTS / args.model
    repeats, min_seconds = (5, 0.1) if args.quick else (30, 1.0)
    print("timing calls ...", file=sys.stderr)
    result = {"machine": machine(), "model": args.model, "threads": args.threads}
    result["calls"] = bench_calls(bundle, checkpoint, repeats, min_seconds, args.threads)
    print("timing fresh processes ...", file=sys.stderr)
    result["processes"] = bench_processes(bundle, checkpoint, 3 if args.quick else 10)
    result["startup"] = bench_startup(bundle, 3 if args.quick else 10)
    result["sizes"] = bench_sizes()
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    m = result["machine"]
    print(f"{args.model} on {m['cores']} cores ({m['cpu']}), onnxruntime {m['onnxruntime']}, torch {m['torch']}, {m['date']}\n")
    print(table(result))
    print(f"\nJSON: {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
