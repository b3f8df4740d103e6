"""The covariance figure of docs/cli.md: for the same latents, the decoder's means, pixels drawn
with the diagonal part of the covariance only (independent pixels), and pixels drawn from the
full low-rank-plus-diagonal covariance. Writes docs/images/covariance.png and prints the
neighbour-difference statistic of each row (and of real test images) over 10,000 samples.

    python docs/make_covariance_figure.py [--model NAME_OR_PATH] [--out PNG] [--stats]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import vaesdk
from vaesdk.evaluation.datasets import DEFAULT_FASHION_MNIST_DIR, load_fashion_mnist

OUT = Path(__file__).parent / "images" / "covariance.png"


def neighbour_difference(images: np.ndarray) -> float:
    x = images.astype(np.float64)
    return float((np.abs(np.diff(x, axis=1)).mean() + np.abs(np.diff(x, axis=2)).mean()) / 2)


def rows(model: vaesdk.Model, n: int, seed: int) -> dict[str, np.ndarray]:
    z = model.sample_latents(n, seed=seed)
    mean, logvar = model.decode_params(z)
    rng = np.random.default_rng(seed + 1)
    diagonal = mean + np.exp(0.5 * logvar) * rng.standard_normal(mean.shape)
    return {
        "decoder means": model.decode(z),
        "diagonal draws": np.rint(np.clip(diagonal, 0, 1) * 255).astype(np.uint8),
        "full-covariance draws": model.decode(z, sample_pixels=True, seed=seed + 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--stats", action="store_true", help="also print the neighbour differences over 10,000 samples")
    args = parser.parse_args()
    model = vaesdk.load(args.model, device="cpu") if args.model else vaesdk.load(device="cpu")
    picture = rows(model, 8, seed=0)
    grid = vaesdk.make_grid(np.stack(list(picture.values())), scale=3)
    vaesdk.save_png(args.out, grid, overwrite=True)
    print(f"wrote {args.out}: rows {', '.join(picture)}")
    if not args.stats:
        return
    test = load_fashion_mnist(DEFAULT_FASHION_MNIST_DIR, "test").images
    print(f"neighbour difference, test images: {neighbour_difference(test):.1f}")
    for name, images in rows(model, 10_000, seed=0).items():
        print(f"neighbour difference, {name}: {neighbour_difference(images):.1f}")


if __name__ == "__main__":
    main()
