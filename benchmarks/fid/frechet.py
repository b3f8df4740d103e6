"""Fréchet distance between generated images and Fashion-MNIST's test images, in the
penultimate features of an independent classifier (classifier.onnx, made by
train_classifier.py). Lower is better; 0 means the two feature distributions have the same
mean and covariance.

    python benchmarks/fid/frechet.py [--model NAME_OR_PATH] [--n 10000] [--json out.json]

Reports, for every prior of the bundle, the distance of 10,000 decoded samples (decoder
means, and pixel draws from p(x|z)), and the distance of the test images' own
reconstructions: the ceiling the decoder allows from perfect latents.
Also the mean absolute difference between neighbouring pixels (grey levels), a simple
measure of sharpness (too low: blur) and of independent pixel noise (too high).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort

import vaesdk
from vaesdk.datasets import DEFAULT_FASHION_MNIST_DIR, load_fashion_mnist

CLASSIFIER = Path(__file__).parent / "classifier.onnx"


class FeatureExtractor:
    def __init__(self, path: Path = CLASSIFIER):
        self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def __call__(self, images: np.ndarray, batch: int = 1000) -> np.ndarray:
        """uint8 [N, 28, 28, 1] -> float64 features [N, 128]."""
        out = []
        for i in range(0, len(images), batch):
            x = images[i : i + batch].transpose(0, 3, 1, 2).astype(np.float32) / 255.0
            out.append(self.session.run(["features"], {"x": x})[0])
        return np.concatenate(out).astype(np.float64)


def _sqrtm_psd(a: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((a + a.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(f1: np.ndarray, f2: np.ndarray) -> float:
    """|mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2), symmetric square roots throughout."""
    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    r1 = _sqrtm_psd(s1)
    cross = _sqrtm_psd(r1 @ s2 @ r1)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(cross))


def neighbour_difference(images: np.ndarray) -> float:
    """Mean absolute difference between horizontally and vertically adjacent pixels, grey levels."""
    x = images.astype(np.float64)
    return float((np.abs(np.diff(x, axis=1)).mean() + np.abs(np.diff(x, axis=2)).mean()) / 2)


def measure(model: vaesdk.Model, n: int = 10_000, seed: int = 0) -> dict:
    test = load_fashion_mnist(DEFAULT_FASHION_MNIST_DIR, "test").images
    features = FeatureExtractor()
    reference = features(test)
    out = {
        "n": n,
        "seed": seed,
        "test_images": {"neighbour_difference": neighbour_difference(test)},
        "reconstructions": {},
        "priors": {},
    }
    recon = model.reconstruct(test)
    out["reconstructions"] = {"frechet": frechet_distance(features(recon), reference), "neighbour_difference": neighbour_difference(recon)}
    priors = [p for p in model.priors if p in ("standard", "aggregate") or p in model.manifest.mixtures]
    for prior in priors:
        entry = {}
        for pixels in (False, True) if model.kind == "vae" else (False,):
            images = model.sample(n, seed=seed, prior=prior, sample_pixels=pixels)
            key = "pixel_samples" if pixels else "means"
            entry[key] = {"frechet": frechet_distance(features(images), reference), "neighbour_difference": neighbour_difference(images)}
        out["priors"][prior] = entry
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    model = vaesdk.load(args.model, device="cpu") if args.model else vaesdk.load(device="cpu")
    result = measure(model, args.n)
    print(f"{model.name}: reconstructions FD {result['reconstructions']['frechet']:.2f}")
    for prior, entry in result["priors"].items():
        for key, v in entry.items():
            print(f"  prior {prior:<10} {key:<13} FD {v['frechet']:7.2f}  neighbour difference {v['neighbour_difference']:.1f}")
    print(f"  test images neighbour difference {result['test_images']['neighbour_difference']:.1f}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
