"""What cutting the decoder to its mean saves: onnxruntime's `session.run` of the whole
decoder graph (mean, log-variance and covariance factor) against the graph cut to `mean`
(`vaesdk.bundle.onnx_proto.keep_outputs`, what `Model.decode` runs), both asked for `mean` only.

    python benchmarks/decode_cut.py [--models emoji fashion-mnist] [--batches 1 16 256] [--repeats 7]

Both sessions get the same thread settings and run alternately, so machine load affects them
alike; each figure is the median of `--repeats` timed rounds of enough calls to fill about
0.2 s. Prints milliseconds per call and the ratio whole / cut.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import numpy as np
import onnxruntime as ort

import vaesdk
from vaesdk.bundle.onnx_proto import keep_outputs
from vaesdk.bundle.registry import resolve


def session(data: bytes, threads: int) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])


def per_call(s: ort.InferenceSession, z: np.ndarray, calls: int) -> float:
    t = time.perf_counter()
    for _ in range(calls):
        s.run(["mean"], {"z": z})
    return (time.perf_counter() - t) / calls * 1e3


def measure(model: str, batches: list[int], repeats: int, threads: int) -> list[dict]:
    data = (resolve(model) / "decoder.onnx").read_bytes()
    whole, cut = session(data, threads), session(keep_outputs(data, ["mean"]), threads)
    dim = vaesdk.load(model, device="cpu").latent_dim
    rows = []
    for b in batches:
        z = np.random.default_rng(0).standard_normal((b, dim), dtype=np.float32)
        first = per_call(whole, z, 2)
        calls = max(2, int(200 / max(first, 0.01)))
        times: dict[str, list[float]] = {"whole": [], "cut": []}
        for _ in range(repeats):
            times["whole"].append(per_call(whole, z, calls))
            times["cut"].append(per_call(cut, z, calls))
        w, c = statistics.median(times["whole"]), statistics.median(times["cut"])
        rows.append({"model": model, "batch": b, "whole_ms": w, "cut_ms": c, "ratio": w / c})
        print(f"{model:<14} batch {b:>5}: whole graph {w:9.3f} ms, cut to mean {c:9.3f} ms, whole/cut {w / c:.2f}x", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=vaesdk.list_models())
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 16, 256])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads (0 = onnxruntime's default)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    rows = [r for m in args.models for r in measure(m, args.batches, args.repeats, args.threads)]
    if args.json:
        record = {"date": time.strftime("%Y-%m-%d"), "machine": platform.machine(), "onnxruntime": ort.__version__, "rows": rows}
        with open(args.json, "w") as f:
            json.dump(record, f, indent=1)


if __name__ == "__main__":
    main()
