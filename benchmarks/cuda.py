"""vaesdk on a GPU, in one run: the SDK, bare onnxruntime with IO binding (float32 and a float16
decoder), and PyTorch eager on the same weights, at batch 1 to 1024, for every bundled model.

    python benchmarks/cuda.py                        # on a machine with onnxruntime-gpu and torch with CUDA
    python benchmarks/cuda.py --device cpu --quick   # the same steps on the CPU: a rehearsal, not for reporting

For each model it reports, medians of repeated calls timed with the device synchronised:
- `vaesdk`: `Model.decode(z)` and `Model.sample(n)` (uint8 images back in host memory);
- `iobinding-fp32`: the decoder cut to its mean, input and output bound in device memory, no
  host copies (the floor for these files on this device);
- `iobinding-fp16`: the same graph converted to float16 inside (float32 inputs and outputs), with
  its error against float32 (largest absolute difference in [0, 1] pixel units, and the share of
  8-bit pixels that differ) on the same latents;
- `torch`: the checkpoint's decoder in PyTorch eager on the same device, `inference_mode` (all
  of its heads: a module cannot be cut to its mean the way the ONNX graph is);
- cold start: a fresh process that loads the model on the device and samples one image.

It needs this checkout installed with the `train` extra (`pip install -e '.[train]'`: torch, onnx,
`vaesdk.training`) and the bundled checkpoints (checkpoints/<model>/). On a short GPU loan,
`--seconds 1` keeps the whole run to a few minutes. The JSON is rewritten after each model.
It exits with status 2 and says why when the device's onnxruntime or torch build is missing.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
BATCHES = (1, 16, 256, 1024)


def fail(message: str) -> None:
    print(f"benchmarks/cuda.py: {message}", file=sys.stderr)
    raise SystemExit(2)


def timed(fn, sync, seconds: float, min_calls: int) -> dict:
    """Median and p95 of fn() (each call followed by sync()), after one warm-up call."""
    fn()
    sync()
    times: list[float] = []
    end = time.perf_counter() + seconds
    while len(times) < min_calls or time.perf_counter() < end:
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    times.sort()
    return {"median_ms": 1e3 * statistics.median(times), "p95_ms": 1e3 * times[int(0.95 * (len(times) - 1))], "calls": len(times)}


def onnxruntime_side(name: str, device: str, batches: tuple[int, ...], seconds: float) -> dict:
    import onnxruntime as ort
    from onnxruntime.transformers.float16 import convert_float_to_float16
    import onnx

    import vaesdk
    from vaesdk.bundle.onnx_proto import keep_outputs
    from vaesdk.runtime.session import _options

    model = vaesdk.load(name, device=device, batch_size=max(batches))
    provider = "CUDAExecutionProvider" if device == "cuda" else "CPUExecutionProvider"
    where = ("cuda", 0) if device == "cuda" else ("cpu", 0)
    cut = keep_outputs((model.path / "decoder.onnx").read_bytes(), ["mean"])
    half = convert_float_to_float16(onnx.load_from_string(cut), keep_io_types=True).SerializeToString()
    sessions = {kind: ort.InferenceSession(graph, sess_options=_options(None, False), providers=[provider])
                for kind, graph in (("fp32", cut), ("fp16", half))}  # fmt: skip
    for kind, session in sessions.items():  # onnxruntime falls back to the CPU silently
        if session.get_providers()[0] != provider:
            fail(f"the {kind} decoder of {name} runs on {session.get_providers()[0]}, not {provider}")
    z_name = sessions["fp32"].get_inputs()[0].name
    out: dict = {"providers": model.providers, "calls": {}}
    for batch in batches:
        z = np.random.default_rng(batch).standard_normal((batch, model.latent_dim), dtype=np.float32)
        row: dict = {}
        row["vaesdk decode"] = timed(lambda: model.decode(z), lambda: None, seconds, 5)
        row["vaesdk sample"] = timed(lambda: model.sample(batch, seed=0), lambda: None, seconds, 5)
        means = {}
        for kind, session in sessions.items():
            z_dev = ort.OrtValue.ortvalue_from_numpy(z, *where)
            shape = [batch, *model.image_shape[2:], *model.image_shape[:2]]
            y_dev = ort.OrtValue.ortvalue_from_shape_and_type(shape, np.float32, *where)
            binding = session.io_binding()
            binding.bind_ortvalue_input(z_name, z_dev)
            binding.bind_ortvalue_output("mean", y_dev)
            row[f"iobinding-{kind}"] = timed(lambda: session.run_with_iobinding(binding), binding.synchronize_outputs, seconds, 5)
            means[kind] = y_dev.numpy()
        to8 = lambda x: np.rint(np.clip(x, 0, 1) * 255).astype(np.uint8)  # noqa: E731
        row["fp16 error"] = {
            "max_abs": float(np.abs(means["fp16"] - means["fp32"]).max()),
            "uint8_pixels_differing": float(np.mean(to8(means["fp16"]) != to8(means["fp32"]))),
        }
        out["calls"][batch] = row
        print(f"  {name} b{batch}: " + ", ".join(f"{k} {v['median_ms']:.3f} ms" for k, v in row.items() if "median_ms" in v), flush=True)
    return out


def torch_side(name: str, device: str, batches: tuple[int, ...], seconds: float) -> dict:
    import torch

    from vaesdk.training.train import load_checkpoint

    module, meta = load_checkpoint(ROOT / "checkpoints" / name)
    module = module.to(device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    out = {}
    for batch in batches:
        z = torch.randn(batch, meta["config"]["model"]["latent_dim"], device=device)

        def decode():
            with torch.inference_mode():
                module.decoder(z)

        out[batch] = {"torch decode": timed(decode, sync, seconds, 5)}
    return out


def cold_start(name: str, device: str, runs: int) -> dict:
    # preload_dlls: onnxruntime-gpu finds the CUDA and cuDNN libraries of the pip packages
    # itself, as it does in this process, where torch has loaded them already.
    code = (
        "import time; t=time.perf_counter(); import onnxruntime; getattr(onnxruntime, 'preload_dlls', lambda: None)(); "
        f"import vaesdk; m=vaesdk.load({name!r}, device={device!r}); m.sample(1, seed=0); print(time.perf_counter()-t)"
    )
    seconds = []
    for _ in range(runs):
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        if done.returncode:
            fail(f"the cold-start process for {name} failed: {done.stderr.strip()[-500:]}")
        seconds.append(float(done.stdout.strip().splitlines()[-1]))
    return {"median_s": statistics.median(seconds), "min_s": min(seconds), "max_s": max(seconds), "runs": runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--model", action="append", help="bundled model (default: every one)")
    parser.add_argument("--batches", default=",".join(map(str, BATCHES)))
    parser.add_argument("--seconds", type=float, default=2.0, help="timed seconds per measurement")
    parser.add_argument("--quick", action="store_true", help="batches 1,16, 0.2 s each, one cold start")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "cuda-results.json")
    args = parser.parse_args()
    import onnxruntime as ort

    import vaesdk

    if args.device == "cuda" and "CUDAExecutionProvider" not in ort.get_available_providers():
        fail(f"this onnxruntime ({ort.__version__}) has no CUDA provider ({', '.join(ort.get_available_providers())}); "
             "pip uninstall onnxruntime && pip install onnxruntime-gpu")  # fmt: skip
    batches = (1, 16) if args.quick else tuple(int(b) for b in args.batches.split(","))
    seconds = 0.2 if args.quick else args.seconds
    result = {"device": args.device, "machine": {"cpu": platform.machine(), "onnxruntime": ort.__version__}, "models": {}}
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            fail(f"torch {torch.__version__} sees no CUDA device; install a CUDA build of torch or run with --device cpu")
        result["machine"].update(gpu=torch.cuda.get_device_name(0), torch=torch.__version__)
    for name in args.model or vaesdk.list_models():
        entry = onnxruntime_side(name, args.device, batches, seconds)
        for batch, row in torch_side(name, args.device, batches, seconds).items():
            entry["calls"][batch].update(row)
        entry["cold_start"] = cold_start(name, args.device, 1 if args.quick else 5)
        result["models"][name] = entry
        print(f"  {name}: cold start {entry['cold_start']['median_s']:.2f} s", flush=True)
        args.out.write_text(json.dumps(result, indent=1))  # what is measured survives a later failure
    print(table(result))
    print(f"JSON: {args.out}")


def table(result: dict) -> str:
    lines = [
        f"vaesdk on {result['device']} ({result['machine']})",
        "| model | batch | vaesdk decode ms | IO-bound fp32 ms | IO-bound fp16 ms | torch eager ms | decode vs torch | fp16 max error | fp16 8-bit pixels differing |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, entry in result["models"].items():
        for batch, row in entry["calls"].items():
            ms = {k: v["median_ms"] for k, v in row.items() if "median_ms" in v}
            err = row["fp16 error"]
            lines.append(
                f"| {name} | {batch} | {ms['vaesdk decode']:.3f} | {ms['iobinding-fp32']:.3f} | {ms['iobinding-fp16']:.3f} | "
                f"{ms['torch decode']:.3f} | {ms['torch decode'] / ms['vaesdk decode']:.2f}x | {err['max_abs']:.1e} | {err['uint8_pixels_differing']:.2%} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
