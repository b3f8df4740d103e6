"""Training data as uint8 tensors [N, C, H, W], read through the runtime's dataset code so
training and inference see pixels converted by one and the same policy."""

from __future__ import annotations

import numpy as np

from vaesdk.datasets import ImageSet, load_fashion_mnist, load_image_folder
from vaesdk.errors import InvalidArgumentError

__all__ = ["ImageSet", "load_fashion_mnist", "load_image_folder", "split_train_val", "to_nchw"]


def to_nchw(images: np.ndarray) -> np.ndarray:
    """uint8 [N, H, W, C] -> contiguous uint8 [N, C, H, W], the layout torch convolutions take."""
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2))


def split_train_val(data: ImageSet, val_fraction: float, seed: int) -> tuple[ImageSet, ImageSet]:
    """A seeded random split; the same seed always gives the same split."""
    n = len(data)
    n_val = max(1, int(round(n * val_fraction)))
    if n_val >= n:
        raise InvalidArgumentError(f"{n} images are too few to hold out {n_val} for validation")
    order = np.random.default_rng(seed).permutation(n)

    def take(idx: np.ndarray) -> ImageSet:
        labels = None if data.labels is None else data.labels[idx]
        return ImageSet(data.images[idx], labels, data.class_names)

    return take(order[n_val:]), take(order[:n_val])
