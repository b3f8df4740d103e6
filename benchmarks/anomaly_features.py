"""How the anomaly score's parts are combined: the choice behind `density-of-parts/3`.

    python benchmarks/anomaly_features.py --model emoji [--data data/emoji] [--n 500] [--out FILE]
    python benchmarks/anomaly_features.py --model fashion-mnist

For a bundled model: the raw parts (pixel, latent under the calibration's prior, complexity,
colour) of its held-out validation images (the calibration images) and of every
out-of-distribution set of `vaesdk.evaluation.ood_sets` (plus black, white and uniform-noise
images), then, for each way of combining them:
  - calibration: the fraction of held-out images below p = 0.01 and 0.05 when each tenth is
    scored by a calibration fitted to the other nine tenths (10 folds, seeded);
  - for each set: the AUROC against the held-out images and the fractions flagged at p < 0.01
    and 0.05 under the calibration fitted to all held-out images.
Candidates: the earlier standardised sum of pixel and latent; the largest standardised part
(complexity on both sides); the Mahalanobis distance of the features; the kernel density
(`FeatureDensity`, Scott's bandwidth, leave-one-out calibration scores) of the grey features,
of the grey features with log(1 + largest channel spread) (what colour models without a decoder
variance use), and with log(1 + mean channel spread) instead; and the same density with the
decoder's mean log-variance in place of the pixel part, alone and with the largest channel
spread (what colour models with a decoder variance use). Results are printed and written to --out.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

import vaesdk
from vaesdk.evaluation.datasets import load_fashion_mnist, load_image_folder, split_indices
from vaesdk.evaluation.ood_sets import default_sets
from vaesdk.maths import anomaly as A


def held_out_images(model: vaesdk.Model, data: str | None) -> np.ndarray:
    split = model.manifest.data["training"]["dataset"]["split"]
    h, _, c = model.image_shape
    images = load_fashion_mnist(split="train").images if data is None else load_image_folder(data, h, c).images
    _, val = split_indices(len(images), split["val_fraction"], split["seed"])
    return images[np.sort(val)]


def features(parts: A.Parts, mean_spread: np.ndarray) -> dict[str, np.ndarray]:
    f = {name: parts.features((name,))[:, 0] for name in A.FEATURES}
    f["log_mean_spread"] = np.log1p(mean_spread)
    return f


class Standardised:
    """Standardised parts (sd 1 on the held-out images), summed or maximised; `two_sided` parts count |z|."""

    def __init__(self, names: list[str], how: str, two_sided: tuple[str, ...] = ()):
        self.names, self.how, self.two_sided = names, how, two_sided

    def fit(self, f: dict[str, np.ndarray]) -> Standardised:
        self.stats = {n: (f[n].mean(), f[n].std()) for n in self.names}
        return self

    def score(self, f: dict[str, np.ndarray], leave_out: bool = False) -> np.ndarray:
        z = [(f[n] - self.stats[n][0]) / self.stats[n][1] for n in self.names]
        z = np.stack([np.abs(v) if n in self.two_sided else v for n, v in zip(self.names, z)])
        return z.sum(0) if self.how == "sum" else z.max(0)


class Mahalanobis:
    def __init__(self, names: list[str]):
        self.names = names

    def fit(self, f: dict[str, np.ndarray]) -> Mahalanobis:
        x = np.stack([f[n] for n in self.names], 1)
        self.mean, self.precision = x.mean(0), np.linalg.inv(np.cov(x.T))
        return self

    def score(self, f: dict[str, np.ndarray], leave_out: bool = False) -> np.ndarray:
        x = np.stack([f[n] for n in self.names], 1) - self.mean
        return np.einsum("ni,ij,nj->n", x, self.precision, x)


class Density:
    def __init__(self, names: list[str]):
        self.names = tuple(names)

    def fit(self, f: dict[str, np.ndarray]) -> Density:
        values = np.stack([f[n] for n in self.names], 1)
        self.density = A.FeatureDensity.fit(self.names, values, np.arange(len(values)))
        return self

    def score(self, f: dict[str, np.ndarray], leave_out: bool = False) -> np.ndarray:
        values = np.stack([f[n] for n in self.names], 1)
        return self.density.anomaly(values, leave_out=np.arange(len(values)) if leave_out else None)


GREY = ["pixel", "latent", "complexity", "log_complexity"]
CANDIDATES = {
    "pixel + latent, standardised (pixel-plus-latent/2)": lambda: Standardised(["pixel", "latent"], "sum"),
    "largest standardised part, complexity both sides": lambda: Standardised(["pixel", "latent", "log_complexity"], "max", ("log_complexity",)),
    "Mahalanobis distance of the grey features": lambda: Mahalanobis(GREY),
    "kernel density of the grey features": lambda: Density(GREY),
    "kernel density, grey features + log largest channel spread": lambda: Density([*GREY, "log_colour"]),
    "kernel density, grey features + log mean channel spread": lambda: Density([*GREY, "log_mean_spread"]),
    "kernel density, decoder log-variance in place of pixel": lambda: Density(["decoder_logvar", *GREY[1:]]),
    "kernel density, decoder log-variance in place of pixel + log largest channel spread": lambda: Density(["decoder_logvar", *GREY[1:], "log_colour"]),
}


def p_values(calibration_scores: np.ndarray, scores: np.ndarray) -> np.ndarray:
    cal = np.sort(calibration_scores)
    at_least = len(cal) - np.searchsorted(cal, scores, side="left")
    return (1.0 + at_least) / (len(cal) + 1.0)


def measure(make, held: dict[str, np.ndarray], sets: dict[str, dict[str, np.ndarray]]) -> dict:
    n = len(held["pixel"])
    order = np.random.default_rng(A.CALIBRATION_SEED).permutation(n)
    cross = np.empty(n)
    for fold in np.array_split(order, 10):
        rest = np.setdiff1d(order, fold)
        fitted = make().fit({k: v[rest] for k, v in held.items()})
        cross[fold] = p_values(fitted.score({k: v[rest] for k, v in held.items()}, leave_out=True), fitted.score({k: v[fold] for k, v in held.items()}))
    fitted = make().fit(held)
    inside = fitted.score(held, leave_out=True)
    out = {"calibration": {"p<0.01": float(np.mean(cross < 0.01)), "p<0.05": float(np.mean(cross < 0.05))}, "sets": {}}
    for name, f in sets.items():
        s = fitted.score(f)
        p = p_values(inside, s)
        out["sets"][name] = {"auroc": A.auroc(inside, s), "p<0.01": float(np.mean(p < 0.01)), "p<0.05": float(np.mean(p < 0.05))}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="fashion-mnist")
    ap.add_argument("--data", default=None, help="image folder of a colour model's data (e.g. data/emoji)")
    ap.add_argument("--n", type=int, default=500, help="images per synthetic set")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    t0 = time.perf_counter()
    model = vaesdk.load(args.model, device="cpu")
    calibration = model.spec.calibration
    prior = calibration.prior if calibration is not None else model.spec.prior_set.anomaly_prior
    held_images = held_out_images(model, args.data)
    h, w, c = model.image_shape
    sets, _ = default_sets(held_images, args.n, own_data=args.model if args.data is None else None)
    sets.update({"black": np.zeros((50, h, w, c), np.uint8), "white": np.full((50, h, w, c), 255, np.uint8)})

    def parts_of(images: np.ndarray) -> dict[str, np.ndarray]:
        spread = (images.max(-1).astype(np.int16) - images.min(-1)).reshape(len(images), -1).mean(1)
        return features(A.raw_parts(model, images, prior), spread)

    held = parts_of(held_images)
    scored = {name: parts_of(x) for name, x in sets.items()}
    results = {"model": args.model, "held_out_images": len(held_images), "prior": prior, "candidates": {}}
    for name, make in CANDIDATES.items():
        if "channel spread" in name and c == 1:
            continue
        r = measure(make, held, scored)
        results["candidates"][name] = r
        cells = " ".join(f"{k}:{100 * v['p<0.01']:.0f}/{v['auroc']:.3f}" for k, v in r["sets"].items())
        print(f"{name}\n  calibration {100 * r['calibration']['p<0.01']:.1f}% / {100 * r['calibration']['p<0.05']:.1f}%  {cells}", flush=True)
    results["seconds"] = round(time.perf_counter() - t0, 1)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
