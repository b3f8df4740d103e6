"""The benchmark suite: vaesdk against bare onnxruntime and PyTorch eager, same weights, same run.

    python benchmarks/run.py                 # every bundled model, table on stdout, JSON to benchmarks/results.json
    python benchmarks/run.py --quick         # fewer repeats, for a smoke run
    python benchmarks/run.py --model BUNDLE_DIR --checkpoint RUN_DIR   # any bundle and the run it was exported from
    python benchmarks/run.py --model fashion-mnist --model B --checkpoint checkpoints/fashion-mnist --checkpoint RUN_B

Every figure is the median of repeated measurements, with the spread (p95 for latencies,
min..max for process-level figures). Throughput and latency come from the same timed calls.
Each runner is timed alone in a fresh process, in alternating rounds. PyTorch runs the
checkpoint the bundle was exported from (checkpoints/<model>/, or --checkpoint).

Image size, channels, latent size, the graphs' input and output names and the operations
the model can do are read from the bundle's manifest, so any bundle runs.

Each round also measures this machine's peak float32 throughput through onnxruntime (a large
MatMul and a large Conv, in a fresh process), and the report gives decode at batch 256 as a
fraction of it, with the decoder's FLOPs counted from its ONNX graph.
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


def bundle_facts(bundle: Path) -> dict:
    """What the timed jobs need to know about a bundle, from its manifest.json alone (the torch
    runner reads it too, without importing vaesdk)."""
    m = json.loads((Path(bundle) / "manifest.json").read_text())
    return {
        "kind": m["kind"],
        "height": m["image"]["height"],
        "width": m["image"]["width"],
        "channels": m["image"]["channels"],
        "latent_dim": m["latent"]["dim"],
        "encoder_input": m["encoder"]["inputs"][0]["name"],
        "decoder_input": m["decoder"]["inputs"][0]["name"],
        "decoder_outputs": [o["name"] for o in m["decoder"]["outputs"]],
    }


def operations(facts: dict) -> tuple[str, ...]:
    """Prior sampling needs a VAE; a plain autoencoder encodes and decodes only."""
    return ("encode", "decode", "sample") if facts["kind"] == "vae" else ("encode", "decode")


def first(out):
    """The first output of a module (the mean), whether it returns a tuple or one tensor."""
    return out[0] if isinstance(out, (tuple, list)) else out


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


def runner_jobs(runner: str, bundle: Path, checkpoint: Path, threads: int | None, batch: int) -> dict:
    """op -> {label: callable doing the whole job a user asks for}, for one runner and batch.

    The "vaesdk" runner yields two callables per op, timed call by call in turn: the SDK
    method (uint8 images in and out), and a bare `session.run` on the session the SDK runs
    (for decode, the decoder cut to its mean), with ready float32 input (the floor any SDK on these files can reach); sharing the session
    keeps the pair's ratio free of thread-pool interference. For sample a third, "prior", is
    the default prior's draw alone as `sample` makes it (its latent stream seeded from the
    seed, then the latents drawn), without the argument checks, the decode and the
    conversion to uint8. The "torch" runner runs the
    checkpoint's modules eagerly with the same uint8 conversion. Each runner imports only
    its own libraries: vaesdk is timed without torch loaded.
    """
    rng = np.random.default_rng(0)
    facts = bundle_facts(bundle)
    h, w, c, d = facts["height"], facts["width"], facts["channels"], facts["latent_dim"]
    x_name, z_name, (mean_name, *_) = facts["encoder_input"], facts["decoder_input"], facts["decoder_outputs"]
    ops = operations(facts)
    images = rng.integers(0, 256, (batch, h, w, c), dtype=np.uint8)
    z = rng.standard_normal((batch, d), dtype=np.float32)
    x = images.transpose(0, 3, 1, 2).astype(np.float32) / 255.0
    if runner == "vaesdk":
        import vaesdk
        from vaesdk.maths.latent import latent_stream

        model = vaesdk.load(bundle, device="cpu", threads=threads, batch_size=4096)
        # The sessions the SDK's own calls run: decode and sample run the decoder cut to its mean.
        enc, dec = model._encoder.session, model._mean_decoder.session
        jobs = {
            "encode": {"vaesdk": lambda: model.encode(images), "onnxruntime": lambda: enc.run(None, {x_name: x})},
            "decode": {"vaesdk": lambda: model.decode(z), "onnxruntime": lambda: dec.run([mean_name], {z_name: z})},
            "sample": {
                "vaesdk": lambda: model.sample(batch, seed=0),
                "onnxruntime": lambda: dec.run([mean_name], {z_name: rng.standard_normal((batch, d), dtype=np.float32)}),
                # The prior's own draw as `sample` makes it: its latent stream seeded, then the
                # latents drawn (the arguments, already checked, are not checked again).
                "prior": lambda: list(model._prior_blocks(batch, latent_stream(0), 1.0, None)),
            },
        }
        return {op: jobs[op] for op in ops}
    import torch

    sys.path.insert(0, str(ROOT))
    from vaesdk.training.train import load_checkpoint

    if threads:
        torch.set_num_threads(threads)
    module, _ = load_checkpoint(checkpoint)
    z_t = torch.from_numpy(z)

    def to_uint8(mean):
        return (mean.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()

    def encode():
        with torch.inference_mode():
            return first(module.encoder(torch.from_numpy(images.transpose(0, 3, 1, 2).astype(np.float32) / 255.0))).numpy()

    def decode():
        with torch.inference_mode():
            return to_uint8(first(module.decoder(z_t)))

    def sample():
        with torch.inference_mode():
            return to_uint8(first(module.decoder(torch.randn(batch, d))))

    jobs = {"encode": {"torch": encode}, "decode": {"torch": decode}, "sample": {"torch": sample}}
    return {op: jobs[op] for op in ops}


def time_alternating(fns: dict, repeats: int, min_seconds: float) -> dict[str, list[float]]:
    """Time callables call by call in turn (a single one: plain repeats)."""
    for fn in fns.values():
        fn()  # warm-up: first-call allocations and kernel choices are measured separately
    times: dict[str, list[float]] = {k: [] for k in fns}
    start = time.perf_counter()
    while len(next(iter(times.values()))) < repeats or time.perf_counter() - start < min_seconds:
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
        if len(next(iter(times.values()))) >= 50 * repeats:
            break
    return times


def worker(runner: str, bundle: Path, checkpoint: Path, threads: int | None, repeats: int, min_seconds: float, batches: tuple[int, ...]) -> None:
    """One runner alone in this process: print {op: {batch: {label: [seconds, ...]}}} as JSON."""
    out: dict = {}
    for batch in batches:
        for op, fns in runner_jobs(runner, bundle, checkpoint, threads, batch).items():
            out.setdefault(op, {})[batch] = time_alternating(fns, repeats if batch < 256 else max(3, repeats // 4), min_seconds)
    print(json.dumps(out))


RUNNERS = ("vaesdk", "torch")


# ---- arithmetic: what the decoder costs, and what this machine can do -------------------------


def decoder_flops(bundle: Path) -> dict:
    """FLOPs per image of the graph `decode` runs (the decoder cut to its mean), counted from
    the shapes of its Conv, ConvTranspose, Gemm and MatMul nodes: a multiply-add is 2 FLOPs,
    biases and elementwise work are left out. Shapes are read from one run on one latent, with
    every such node's input and output made a graph output, so shapes computed at run time
    (resize scales, reshapes) are the real ones. Nodes computed from constants alone (a folded
    decoder's 2x2 kernels, derived from its 3x3 ones) are left out: onnxruntime computes them
    once, when it creates the session."""
    import onnx
    import onnxruntime as ort
    from onnx import helper

    from vaesdk.bundle.onnx_proto import keep_outputs

    raw = keep_outputs((Path(bundle) / "decoder.onnx").read_bytes(), ["mean"])
    model = onnx.load_from_string(raw)
    graph = model.graph
    weights = {t.name: tuple(t.dims) for t in graph.initializer}
    ops = ("Conv", "ConvTranspose", "Gemm", "MatMul")
    constant = set(weights) | {""}  # nodes are in topological order: a node of constants is a constant
    for n in graph.node:
        if all(name in constant for name in n.input):
            constant.update(n.output)
    nodes = [n for n in graph.node if n.op_type in ops and n.output[0] not in constant]
    feed_name, d = graph.input[0].name, bundle_facts(bundle)["latent_dim"]
    known = {feed_name: (1, d)}
    wanted = {name for n in nodes for name in (n.input[0], n.input[1], n.output[0])} - set(weights) - set(known)
    present = {o.name for o in graph.output}
    graph.output.extend(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None) for name in sorted(wanted - present))
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep every node's output
    session = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    values = session.run(names, {feed_name: np.zeros((1, d), np.float32)})
    shapes = {**known, **weights, **{k: v.shape for k, v in zip(names, values)}}
    by_op: dict[str, int] = {}
    for n in nodes:
        x, w, y = shapes[n.input[0]], shapes[n.input[1]], shapes[n.output[0]]
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        if n.op_type == "Conv":  # weight [C_out, C_in / groups, kh, kw]
            flops = 2 * int(np.prod(y)) * int(np.prod(w[1:]))
        elif n.op_type == "ConvTranspose":  # weight [C_in, C_out / groups, kh, kw]: each input value feeds a block
            flops = 2 * int(np.prod(x)) * int(np.prod(w[1:]))
        elif n.op_type == "Gemm":
            flops = 2 * int(np.prod(y)) * (x[0] if attrs.get("transA", 0) else x[1])
        else:
            flops = 2 * int(np.prod(y)) * x[-1]
        by_op[n.op_type] = by_op.get(n.op_type, 0) + flops
    return {"flops_per_image": sum(by_op.values()), "by_op": by_op, "nodes": len(nodes)}


PEAK_MATMUL = 1024  # square MatMul side: 2.1 GFLOP a call, far beyond any cache
PEAK_CONV = (16, 128, 32, 3)  # batch, channels in and out, side, kernel: 4.8 GFLOP a call


def peak_models() -> dict[str, tuple[bytes, dict, int]]:
    """One-node ONNX graphs large enough that onnxruntime's kernels run at full speed: name ->
    (model, feeds, FLOPs a call)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    s = PEAK_MATMUL
    a, b = rng.standard_normal((s, s), dtype=np.float32), rng.standard_normal((s, s), dtype=np.float32)
    matmul = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["y"])], "matmul",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [s, s])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [s, s])], [numpy_helper.from_array(b, "b")],
    )  # fmt: skip
    n, c, side, k = PEAK_CONV
    x = rng.standard_normal((n, c, side, side), dtype=np.float32)
    w = rng.standard_normal((c, c, k, k), dtype=np.float32) * 0.05
    conv = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], pads=[k // 2] * 4)], "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n, c, side, side])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [n, c, side, side])], [numpy_helper.from_array(w, "w")],
    )  # fmt: skip
    opset = [helper.make_opsetid("", 17)]
    return {
        "matmul": (helper.make_model(matmul, opset_imports=opset).SerializeToString(), {"a": a}, 2 * s**3),
        "conv": (helper.make_model(conv, opset_imports=opset).SerializeToString(), {"x": x}, 2 * n * c * side * side * c * k * k),
    }


def peak_worker(threads: int | None, repeats: int, min_seconds: float) -> None:
    """This machine's float32 throughput through onnxruntime (the SDK's session settings):
    print {name: [seconds, ...], "flops": {name: FLOPs a call}} as JSON."""
    import onnxruntime as ort

    out: dict = {"flops": {}}
    for name, (model, feeds, flops) in peak_models().items():
        opts = ort.SessionOptions()  # as vaesdk.runtime.session makes them
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads:
            opts.intra_op_num_threads = threads
        session = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
        out[name] = time_calls(lambda: session.run(None, feeds), max(3, repeats // 4), min_seconds)
        out["flops"][name] = flops
    print(json.dumps(out))


def bench_peak(threads: int | None, repeats: int, min_seconds: float) -> dict:
    """Peak GFLOP/s in a fresh process: the faster of a large MatMul and a large Conv."""
    args = [sys.executable, __file__, "--worker", "peak", "--repeats", str(repeats), "--min-seconds", str(min_seconds)]
    args += ["--threads", str(threads)] if threads else []  # fmt: skip
    result = json.loads(subprocess.run(args, capture_output=True, text=True, check=True).stdout)
    flops = result.pop("flops")
    return {name: {"gflops": flops[name] / statistics.median(t) / 1e9, "flops": flops[name], "calls": len(t)} for name, t in result.items()}


def bench_calls(
    bundle: Path, checkpoint: Path, repeats: int, min_seconds: float, threads: int | None, rounds: int, batches: tuple[int, ...],
    peaks: list[dict],
) -> list[dict]:  # fmt: skip
    """vaesdk and torch each in their own fresh process (so no other library's worker threads
    compete with them), in alternating rounds so that slow drift in the machine's load hits
    both alike. Each round also measures the machine's peak (appended to `peaks`), so the
    fraction of peak compares figures from the same stretch of time."""
    times: dict = {}
    for r in range(rounds):
        peaks.append(bench_peak(threads, repeats, min_seconds))
        for runner in RUNNERS:
            args = [sys.executable, __file__, "--worker", runner, "--bundle", str(bundle), "--checkpoint", str(checkpoint),
                    "--repeats", str(repeats), "--min-seconds", str(min_seconds), "--batches", ",".join(map(str, batches))]
            args += ["--threads", str(threads)] if threads else []  # fmt: skip
            result = json.loads(subprocess.run(args, capture_output=True, text=True, check=True).stdout)
            for op, per_batch in result.items():
                for batch, per_label in per_batch.items():
                    for label, t in per_label.items():
                        times.setdefault((op, int(batch), label), []).extend(t)
            print(f"  round {r + 1}/{rounds}: {runner} done", file=sys.stderr)
    return [{"op": op, "batch": b, "runner": run, **summarize(t, b)} for (op, b, run), t in sorted(times.items())]


# ---- fresh processes: cold start and memory ---------------------------------------------------


# Peak memory comes from a small launcher process: Linux carries a parent's peak RSS into a
# forked child, so children of this (large) benchmark process would all report its peak.
LAUNCHER = """
import os, sys, time
t0 = time.perf_counter()
pid = os.fork()
if pid == 0:
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # this launcher's stdout carries the figures only
    os.execvp(sys.argv[1], sys.argv[1:])
_, status, usage = os.wait4(pid, 0)
print(time.perf_counter() - t0, usage.ru_maxrss, os.waitstatus_to_exitcode(status))
"""


def run_process(args: list[str], cwd: str) -> tuple[float, int]:
    """Wall seconds and peak resident memory (MiB) of one fresh process."""
    out = subprocess.run([sys.executable, "-c", LAUNCHER, *args], cwd=cwd, capture_output=True, text=True, check=True)
    wall, rss_kib, code = out.stdout.split()
    if int(code) != 0:
        raise RuntimeError(f"{' '.join(args)} failed: {out.stderr}")
    return float(wall), int(rss_kib) // 1024


TORCH_DECODE = """
import sys, torch
sys.path.insert(0, {root!r})
from vaesdk.training.train import load_checkpoint
model, _ = load_checkpoint({checkpoint!r})
with torch.inference_mode():
    out = model.decoder(torch.randn(16, model.config.latent_dim))
mean = out[0] if isinstance(out, tuple) else out
"""


def compile_package() -> None:
    """Byte-compile vaesdk as `pip install` does, so that cold starts of a source checkout
    (PYTHONDONTWRITEBYTECODE may be set) measure what an installed package does."""
    import compileall

    import vaesdk

    for folder in ("vaesdk", "cli", "training", "export"):
        compileall.compile_dir(str(ROOT / folder), quiet=1)
    del vaesdk


def bench_processes(bundle: Path, checkpoint: Path, repeats: int) -> dict:
    vae = str(Path(sys.executable).with_name("vae"))
    # A plain autoencoder cannot sample: its cold start is `vae info` (load, verify, sessions).
    if bundle_facts(bundle)["kind"] == "vae":
        cold = ("vae sample --n 16", [vae, "sample", "--n", "16", "--seed", "0", "-m", str(bundle), "-o", "s.png", "--force"])
    else:
        cold = ("vae info", [vae, "info", "-m", str(bundle)])
    commands = {
        cold[0]: cold[1],
        "python -c 'import torch'": [sys.executable, "-c", "import torch"],
        "torch: load checkpoint, decode 16": [
            sys.executable, "-c", TORCH_DECODE.format(root=str(ROOT), checkpoint=str(checkpoint)),
        ],  # fmt: skip
        "python -c 'import vaesdk'": [sys.executable, "-c", "import vaesdk"],
    }
    out = {}
    with tempfile.TemporaryDirectory() as cwd:
        for args in commands.values():
            run_process(args, cwd)  # warm the file cache, as a user's second run would be
        walls: dict[str, list[float]] = {k: [] for k in commands}
        rss: dict[str, list[int]] = {k: [] for k in commands}
        for _ in range(repeats):  # round-robin, so load drift hits every command alike
            for name, args in commands.items():
                w, r = run_process(args, cwd)
                walls[name].append(w)
                rss[name].append(r)
        for name in commands:
            w = walls[name]
            out[name] = {
                "median_s": statistics.median(w),
                "min_s": min(w),
                "max_s": max(w),
                "peak_rss_mib": statistics.median(rss[name]),
                "runs": repeats,
            }
            print(f"  {name:<36} {out[name]['median_s']:.3f} s  ({min(w):.3f}..{max(w):.3f}), {out[name]['peak_rss_mib']} MiB", file=sys.stderr)
    return out


def bench_startup(bundle: Path, repeats: int) -> dict:
    """Session creation and the first call, in-process, each from a cold model object."""
    import vaesdk
    from vaesdk.bundle.reading import read_bundle
    from vaesdk.runtime.model import Model

    facts = bundle_facts(bundle)
    z16 = np.zeros((16, facts["latent_dim"]), np.float32)
    verify, create, first_call = [], [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        b = read_bundle(bundle)
        t1 = time.perf_counter()
        m = Model(b, device="cpu")
        job = (lambda m=m: m.sample(16, seed=0)) if facts["kind"] == "vae" else (lambda m=m: m.decode(z16))
        t2 = time.perf_counter()
        job()
        t3 = time.perf_counter()
        verify.append(t1 - t0)
        create.append(t2 - t1)
        first_call.append(t3 - t2)
    second = statistics.median(time_calls(job, 20, 0.2))
    del vaesdk
    return {
        "read_and_verify_bundle_ms": 1e3 * statistics.median(verify),
        "create_sessions_ms": 1e3 * statistics.median(create),
        "first_call": "sample(16)" if facts["kind"] == "vae" else "decode(16)",
        "first_sample16_ms": 1e3 * statistics.median(first_call),
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
    """Installed bytes of vaesdk's runtime dependencies, of torch (with what it requires), and
    of the same job done with torch: torch plus the numpy, Pillow and typer it would still need."""
    runtime = set().union(*(requirement_closure(n) for n in ("numpy", "onnxruntime", "pillow", "typer")))
    torch_deps = requirement_closure("torch")
    torch_stack = torch_deps.union(*(requirement_closure(n) for n in ("numpy", "pillow", "typer")))
    mib = {name: sum(map(dist_size, pkgs)) / 2**20 for name, pkgs in (("runtime", runtime), ("torch", torch_deps), ("torch_stack", torch_stack))}
    return {
        "runtime_packages": sorted(runtime),
        "runtime_mib": mib["runtime"],
        "torch_packages": sorted(torch_deps),
        "torch_mib": mib["torch"],
        "torch_stack_mib": mib["torch_stack"],
        "largest": {p: round(dist_size(p) / 2**20, 1) for p in sorted(runtime | torch_deps, key=dist_size, reverse=True)[:6]},
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


def calls_table(entry: dict, batches: list[int]) -> list[str]:
    lines = ["| op | batch | vaesdk ms (p95) | bare ORT ms | torch ms | vaesdk img/s | SDK overhead | speed-up vs torch |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    rows = {(r["op"], r["batch"], r["runner"]): r for r in entry["calls"]}
    for op in ("encode", "decode", "sample"):
        for batch in batches:
            if (op, batch, "vaesdk") not in rows:
                continue
            v, o, t = (rows[(op, batch, k)] for k in ("vaesdk", "onnxruntime", "torch"))
            lines.append(
                f"| {op} | {batch} | {v['median_ms']:.3f} ({v['p95_ms']:.3f}) | {o['median_ms']:.3f} | {t['median_ms']:.3f} | "
                f"{v['images_per_s']:,.0f} | {100 * (v['median_ms'] / o['median_ms'] - 1):+.1f}% | {t['median_ms'] / v['median_ms']:.2f}x |"
            )
    return lines


def ratios(entry: dict) -> dict:
    """{op: {batch: {"vs_torch": torch ms / vaesdk ms, "vs_bare": vaesdk ms / bare session.run ms}}},
    and for sample "vs_bare_and_prior": vaesdk ms / (bare session.run ms + the prior's draw ms)."""
    rows = {(r["op"], r["batch"], r["runner"]): r["median_ms"] for r in entry["calls"]}
    out: dict = {}
    for (op, batch, runner), ms in sorted(rows.items()):
        if runner == "vaesdk":
            bare = rows[(op, batch, "onnxruntime")]
            out.setdefault(op, {})[batch] = {"vs_torch": rows[(op, batch, "torch")] / ms, "vs_bare": ms / bare}
            if (op, batch, "prior") in rows:
                out[op][batch]["vs_bare_and_prior"] = ms / (bare + rows[(op, batch, "prior")])
    return out


def prior_table(result: dict) -> list[str]:
    """`sample` against the bare decoder run plus the prior's own draw, per model and batch."""
    lines = ["| model | batch | `sample` ms | bare run ms | prior's draw ms | `sample` / (bare + draw) |", "|---|---:|---:|---:|---:|---:|"]
    for entry in result["models"]:
        rows = {(r["op"], r["batch"], r["runner"]): r["median_ms"] for r in entry["calls"]}
        for batch in result["batches"]:
            if ("sample", batch, "prior") in rows:
                v, o, p = (rows[("sample", batch, k)] for k in ("vaesdk", "onnxruntime", "prior"))
                lines.append(f"| {entry['model']} | {batch} | {v:.3f} | {o:.3f} | {p:.3f} | {v / (o + p):.2f} |")
    return lines


def ratio_table(result: dict) -> list[str]:
    """Every model's decode and sample as one table: speed-up over PyTorch eager (>1 is faster)
    and time over a bare session.run (1.00 is no overhead)."""
    batches = result["batches"]
    head = " | ".join(f"b{b} vs torch | b{b} vs bare" for b in batches)
    lines = [f"| model | op | {head} |", "|---|---|" + "---:|" * (2 * len(batches))]
    for entry in result["models"]:
        for op in ("decode", "sample"):
            r = entry["ratios"].get(op)
            if r:
                r = {int(b): v for b, v in r.items()}  # a result read back from its JSON file has string keys
                cells = " | ".join(f"{r[b]['vs_torch']:.2f}x | {r[b]['vs_bare']:.2f}" for b in batches)
                lines.append(f"| {entry['model']} | {op} | {cells} |")
    return lines


def arithmetic(entry: dict, peak_gflops: float, batches: list[int]) -> dict:
    """Decode throughput in GFLOP/s at the largest batch timed up to 256, and its fraction of peak."""
    batch = max((b for b in batches if b <= 256), default=min(batches))
    ms = next(r["median_ms"] for r in entry["calls"] if (r["op"], r["batch"], r["runner"]) == ("decode", batch, "vaesdk"))
    gflops = entry["decoder"]["flops_per_image"] * batch / (ms / 1e3) / 1e9
    return {"batch": batch, "decode_gflops": gflops, "fraction_of_peak": gflops / peak_gflops}


def table(result: dict) -> str:
    p = result["peak"]
    lines = [
        f"Peak (onnxruntime, this run, median of {len(p['rounds'])} rounds): {p['gflops']:.1f} GFLOP/s "
        f"(MatMul {PEAK_MATMUL}x{PEAK_MATMUL}x{PEAK_MATMUL} {p['matmul_gflops']:.1f}, Conv {'x'.join(map(str, PEAK_CONV))} {p['conv_gflops']:.1f})",
        "",
        *ratio_table(result),
        "",
        *prior_table(result),
    ]
    for entry in result["models"]:
        a = entry["arithmetic"]
        lines += [
            "",
            f"### {entry['model']}",
            "",
            f"Decoder (cut to mean): {entry['decoder']['flops_per_image'] / 1e6:.1f} MFLOP per image; decode at batch {a['batch']}: "
            f"{a['decode_gflops']:.1f} GFLOP/s, {100 * a['fraction_of_peak']:.0f}% of peak.",
            "",
            *calls_table(entry, result["batches"]),
            "",
            "| fresh process | median s (min..max) | peak RSS MiB |",
            "|---|---:|---:|",
        ]
        for name, pr in entry["processes"].items():
            lines.append(f"| `{name}` | {pr['median_s']:.3f} ({pr['min_s']:.3f}..{pr['max_s']:.3f}) | {pr['peak_rss_mib']} |")
        st = entry["startup"]
        lines += [
            "",
            f"In-process start: read + verify bundle {st['read_and_verify_bundle_ms']:.1f} ms, create sessions {st['create_sessions_ms']:.1f} ms, "
            f"first `{st['first_call']}` {st['first_sample16_ms']:.1f} ms, later calls {st['steady_sample16_ms']:.1f} ms.",
        ]
    sizes = result["sizes"]
    lines += [
        "",
        f"Installed size: runtime dependencies {sizes['runtime_mib']:.0f} MiB "
        f"({len(sizes['runtime_packages'])} distributions) vs torch with its requirements {sizes['torch_mib']:.0f} MiB "
        f"({sizes['runtime_mib'] / sizes['torch_mib']:.2f}x), vs torch + numpy + Pillow + typer "
        f"{sizes['torch_stack_mib']:.0f} MiB ({sizes['runtime_mib'] / sizes['torch_stack_mib']:.2f}x).",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", help="bundled model name or bundle folder; repeat for several (default: every bundled model)")
    parser.add_argument("--checkpoint", type=Path, action="append", help="the training run each --model was exported from, in the same order (default: checkpoints/<model>/)")
    parser.add_argument("--batches", default=",".join(map(str, BATCHES)), help="batch sizes, comma-separated")
    parser.add_argument("--rounds", type=int, default=None, help="alternating rounds of the call timings (default 5; 1 with --quick)")
    parser.add_argument("--process-runs", type=int, default=None, help="fresh-process runs per command (default 10; 3 with --quick)")
    parser.add_argument("--quick", action="store_true", help="fewer repeats (a smoke run, not for reporting)")
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads for both runtimes (default: each one's own)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results.json")
    parser.add_argument("--worker", choices=(*RUNNERS, "peak"), help=argparse.SUPPRESS)
    parser.add_argument("--bundle", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=30, help=argparse.SUPPRESS)
    parser.add_argument("--min-seconds", type=float, default=1.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    try:
        batches = tuple(int(b) for b in args.batches.split(","))
    except ValueError:
        parser.error(f"--batches takes comma-separated integers, got {args.batches!r}")
    if args.worker == "peak":
        peak_worker(args.threads, args.repeats, args.min_seconds)
        return
    if args.worker:
        worker(args.worker, args.bundle, args.checkpoint[0] if args.checkpoint else None, args.threads, args.repeats, args.min_seconds, batches)
        return

    import vaesdk

    names = args.model or vaesdk.list_models()
    given = args.checkpoint or []
    if len(given) > len(names):
        parser.error(f"{len(given)} --checkpoint for {len(names)} --model; give one per model, in the same order")
    models = []
    for i, name in enumerate(names):
        model = vaesdk.load(name, device="cpu")
        checkpoint = given[i] if i < len(given) else CHECKPOINTS / model.name
        if not (checkpoint / "checkpoint.json").is_file():
            parser.error(f"no training checkpoint at {checkpoint} for the torch runner; pass --checkpoint RUN_DIR (the run {model.name} was exported from)")
        models.append((model.name, model.path, checkpoint))
        del model
    repeats, min_seconds, rounds = (5, 0.1, 1) if args.quick else (20, 0.5, 5)
    rounds = args.rounds or rounds
    process_runs = args.process_runs or (3 if args.quick else 10)
    compile_package()
    result = {"machine": machine(), "threads": args.threads, "rounds": rounds, "batches": list(batches)}
    result["command"] = " ".join(["python", "benchmarks/run.py", *sys.argv[1:]])
    result["models"], peaks = [], []
    for name, bundle, checkpoint in models:
        print(f"{name}: timing calls ...", file=sys.stderr)
        entry = {"model": name, "bundle": str(bundle), "checkpoint": str(checkpoint)}
        entry["calls"] = bench_calls(bundle, checkpoint, repeats, min_seconds, args.threads, rounds, batches, peaks)
        entry["ratios"] = ratios(entry)
        entry["decoder"] = decoder_flops(bundle)
        print(f"{name}: timing fresh processes ...", file=sys.stderr)
        entry["processes"] = bench_processes(bundle, checkpoint, process_runs)
        entry["startup"] = bench_startup(bundle, process_runs)
        result["models"].append(entry)
    per_op = {op: statistics.median(p[op]["gflops"] for p in peaks) for op in ("matmul", "conv")}
    result["peak"] = {"gflops": max(per_op.values()), "matmul_gflops": per_op["matmul"], "conv_gflops": per_op["conv"], "rounds": peaks}
    for entry in result["models"]:
        entry["arithmetic"] = arithmetic(entry, result["peak"]["gflops"], list(batches))
    result["sizes"] = bench_sizes()
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    m = result["machine"]
    print(f"{', '.join(e['model'] for e in result['models'])} on {m['cores']} cores ({m['cpu']}), onnxruntime {m['onnxruntime']}, torch {m['torch']}, {m['date']}\n")
    print(table(result))
    print(f"\nJSON: {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
