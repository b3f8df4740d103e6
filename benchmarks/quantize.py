"""Would an int8 model be worth shipping? Quantise the bundled graphs and measure.

    python benchmarks/quantize.py [--model fashion-mnist]

Static int8 quantisation (QDQ, per-channel weights) of the convolutions and matrix products,
calibrated on 512 training images (encoder) and their latents (decoder). Prints, against
the float32 graphs in the same run: median latency at batch 1 and 256, and the error of the
decoded images (mean and max absolute difference in 8-bit levels) and of the encoder means.
Nothing is written into the bundle; the result decides whether a variant is worth adding.
The bound a variant must meet: reconstructions within 1 level of 255 on average and 8 at most.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

import vaesdk
from vaesdk.evaluation.datasets import load_fashion_mnist


class Feed(CalibrationDataReader):
    def __init__(self, name: str, batches: list[np.ndarray]):
        self.items = iter([{name: b} for b in batches])

    def get_next(self):
        return next(self.items, None)


def median_ms(session: ort.InferenceSession, feed: dict, repeats: int = 30) -> float:
    session.run(None, feed)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="fashion-mnist")
    args = parser.parse_args()
    model = vaesdk.load(args.model, device="cpu")
    train = load_fashion_mnist(split="train").images[:512]
    test = load_fashion_mnist(split="test").images[:1024]
    x_cal = train.transpose(0, 3, 1, 2).astype(np.float32) / 255
    z_cal = model.embed(train)
    x_test = test.transpose(0, 3, 1, 2).astype(np.float32) / 255
    z_test = model.embed(test)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    with tempfile.TemporaryDirectory() as tmp:
        for role, name, cal, probe in (("encoder", "x", x_cal, x_test), ("decoder", "z", z_cal, z_test)):
            src = model.path / f"{role}.onnx"
            pre = Path(tmp) / f"{role}.pre.onnx"
            q = Path(tmp) / f"{role}.int8.onnx"
            quant_pre_process(str(src), str(pre))
            quantize_static(
                str(pre), str(q), Feed(name, [cal[i : i + 64] for i in range(0, len(cal), 64)]),
                quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            )  # fmt: skip
            f32 = ort.InferenceSession(str(src), opts, providers=["CPUExecutionProvider"])
            i8 = ort.InferenceSession(str(q), opts, providers=["CPUExecutionProvider"])
            a, b = f32.run(None, {name: probe})[0], i8.run(None, {name: probe})[0]
            if role == "decoder":
                a8, b8 = (np.rint(np.clip(v, 0, 1) * 255) for v in (a, b))
                err = f"image error: mean {np.abs(a8 - b8).mean():.2f}, max {np.abs(a8 - b8).max():.0f} levels of 255"
            else:
                # What a user sees: reconstructions through the float32 decoder.
                ra, rb = (model.decode(v[:, : model.latent_dim]).astype(np.int16) for v in (a, b))
                err = (
                    f"encoder-mean error: mean {np.abs(a - b).mean():.4f}, max {np.abs(a - b).max():.3f} (prior std = 1); "
                    f"reconstruction error: mean {np.abs(ra - rb).mean():.2f}, max {np.abs(ra - rb).max()} levels of 255"
                )
            print(f"{role}: {src.stat().st_size / 1e6:.2f} MB -> {q.stat().st_size / 1e6:.2f} MB; {err}")
            for batch in (1, 256):
                feed = {name: probe[:batch]}
                fa, fb = median_ms(f32, feed), median_ms(i8, feed)
                print(f"  batch {batch:>3}: float32 {fa:8.3f} ms, int8 {fb:8.3f} ms ({fa / fb:.2f}x)")


if __name__ == "__main__":
    main()
