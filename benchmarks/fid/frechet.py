"""Fréchet distance between a model's images and its data, in the penultimate features of an
independent classifier: classifier.onnx (Fashion-MNIST, made by train_classifier.py) for
28x28 grey models, emoji-classifier.onnx (made by train_emoji_classifier.py) for 64x64 colour
ones. Lower is better; 0 means the two feature distributions have the same mean and covariance.

    python benchmarks/fid/frechet.py [--model NAME_OR_PATH] [--data data/emoji] [--n 10000] [--json out.json] [--record]

--record writes the figures into the bundle's manifest (metrics.quality), beside the other
measurements of the model; the model files and their checksums are untouched.

Reference images: Fashion-MNIST's 10,000 test images, or every image of the `--data` folder.
Reports, for every prior of the bundle, the distance of n decoded samples (decoder means, and
pixel draws from p(x|z)); a category prior is compared with its own category's images. Also:
the distance of the reference images' own reconstructions (the ceiling the decoder allows
from perfect latents), the data against itself (two random halves: the floor an FD estimate
of this size reaches), the data blurred by a Gaussian of 1 and 2 pixels, and the mean absolute
difference between neighbouring pixels (grey levels: too low is blur, too high is noise).
The reconstruction MSE is on held-out images: Fashion-MNIST's test split, or the validation
split of the emoji model's training run (`split_indices`, seed 0, 1/12).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image, ImageFilter

import vaesdk
from vaesdk.evaluation.datasets import DEFAULT_FASHION_MNIST_DIR, ImageSet, load_fashion_mnist, load_image_folder

HERE = Path(__file__).parent
CLASSIFIERS = {(28, 28, 1): HERE / "classifier.onnx", (64, 64, 3): HERE / "emoji-classifier.onnx"}


class FeatureExtractor:
    def __init__(self, path: Path = CLASSIFIERS[(28, 28, 1)]):
        self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def __call__(self, images: np.ndarray, batch: int = 500) -> np.ndarray:
        """uint8 [N, H, W, C] -> float64 features [N, 128]."""
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


def blurred(images: np.ndarray, sigma: float) -> np.ndarray:
    out = np.empty_like(images)
    for i, img in enumerate(images):
        pil = Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img)
        out[i] = np.asarray(pil.filter(ImageFilter.GaussianBlur(sigma))).reshape(img.shape)
    return out


def reference_sets(model: vaesdk.Model, data: str | None) -> tuple[ImageSet, np.ndarray]:
    """(the reference images with labels, the held-out images for the reconstruction MSE)."""
    if data is None:
        test = load_fashion_mnist(DEFAULT_FASHION_MNIST_DIR, "test")
        return test, test.images
    from vaesdk.training.data import split_indices  # the run's split; needs the train extra

    h, _, c = model.image_shape
    folder = load_image_folder(data, h, c)
    _, val_idx = split_indices(len(folder), 1 / 12, 0)
    return folder, folder.images[np.sort(val_idx)]


def measure(model: vaesdk.Model, n: int = 10_000, seed: int = 0, data: str | None = None) -> dict:
    reference, held_out = reference_sets(model, data)
    ref = reference.images
    features = FeatureExtractor(CLASSIFIERS[model.image_shape])
    ref_features = features(ref)
    halves = np.random.default_rng(seed).permutation(len(ref))
    recon_held_out = model.reconstruct(held_out)
    out = {
        "n": n,
        "seed": seed,
        "reference_images": len(ref),
        "reference": {
            "neighbour_difference": neighbour_difference(ref),
            "halves": frechet_distance(ref_features[halves[: len(ref) // 2]], ref_features[halves[len(ref) // 2 :]]),
            "blur_1px": frechet_distance(features(blurred(ref, 1.0)), ref_features),
            "blur_2px": frechet_distance(features(blurred(ref, 2.0)), ref_features),
        },
        "reconstructions": {},
        "held_out_mse": float(np.mean((recon_held_out.astype(np.float64) - held_out) ** 2) / 255.0**2),
        "held_out_images": len(held_out),
        "priors": {},
    }
    recon = model.reconstruct(ref)
    out["reconstructions"] = {"frechet": frechet_distance(features(recon), ref_features), "neighbour_difference": neighbour_difference(recon)}
    classes = list(reference.class_names or ())
    for prior in model.priors:
        target = ref_features
        if prior in classes:  # a category's prior against that category's images
            target = ref_features[reference.labels == classes.index(prior)]
        entry = {"reference_images": len(target)}
        for pixels in (False, True) if model.kind == "vae" else (False,):
            images = model.sample(n, seed=seed, prior=prior, sample_pixels=pixels)
            key = "pixel_samples" if pixels else "means"
            entry[key] = {"frechet": frechet_distance(features(images), target), "neighbour_difference": neighbour_difference(images)}
        out["priors"][prior] = entry
    out["default_prior"] = model.default_prior
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--data", default=None, help="image folder of a colour model's data (e.g. data/emoji from scripts/emoji-data)")
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--record", action="store_true", help="write the figures into the bundle's manifest (metrics.quality)")
    args = parser.parse_args()
    model = vaesdk.load(args.model, device="cpu") if args.model else vaesdk.load(device="cpu")
    started = time.time()
    result = measure(model, args.n, data=args.data)
    result["machine"] = f"{platform.machine()}, {len(os.sched_getaffinity(0))} CPUs"
    result["date"] = time.strftime("%Y-%m-%d", time.gmtime(started))
    ref = result["reference"]
    print(f"{model.name}: {result['reference_images']} reference images; samples n={args.n}")
    print(f"  data halves (floor) FD {ref['halves']:.2f}; data blurred 1 px FD {ref['blur_1px']:.2f}, 2 px FD {ref['blur_2px']:.2f}")
    print(f"  reconstructions (ceiling) FD {result['reconstructions']['frechet']:.2f}; held-out MSE {result['held_out_mse']:.4f} on {result['held_out_images']} images")
    for prior, entry in result["priors"].items():
        for key, v in entry.items():
            if isinstance(v, dict):
                print(f"  prior {prior:<12} {key:<13} FD {v['frechet']:7.2f}  neighbour difference {v['neighbour_difference']:.1f}")
    print(f"  reference neighbour difference {ref['neighbour_difference']:.1f}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    if args.record:
        record(model, result, " ".join(["python", "benchmarks/fid/frechet.py", *sys.argv[1:]]))


def record(model: vaesdk.Model, result: dict, command: str) -> None:
    """Merge the figures into manifest.json's metrics.quality (validated, written atomically)."""
    from vaesdk.bundle.editing import write_manifest

    data = json.loads((model.path / "manifest.json").read_text(encoding="utf-8"))
    quality = {
        "measure": "Fréchet distance in the penultimate features of benchmarks/fid/" + CLASSIFIERS[model.image_shape].name,
        "command": command.replace(" --record", ""),
        **{k: v for k, v in result.items() if k not in ("seed",)},
    }
    data["metrics"] = {**(data.get("metrics") or {}), "quality": quality}
    write_manifest(model.path, data)
    print(f"recorded in {model.path / 'manifest.json'} (metrics.quality)")


if __name__ == "__main__":
    main()
