"""Training data, read through the runtime's dataset code so training and inference see
pixels converted by one and the same policy.

Two shapes of data:
- `ImageSet` (uint8 [N, H, W, C] in memory): Fashion-MNIST (47 MB) and export's evaluation sets.
- `torch.utils.data.Dataset`s of uint8 [C, H, W] tensors for the training loop: `ArrayImages`
  over an in-memory array, `FolderImages` decoding each file only when asked for it, so a
  folder of any size trains in bounded memory with `DataLoader` workers doing the decoding.
`GlobalBatchSampler` gives every process its strided share of each seeded global batch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from vaesdk.evaluation.datasets import (
    ImageSet, fashion_mnist_train, list_image_folder, load_fashion_mnist, load_image_folder, split_indices, split_train_val,
)  # fmt: skip
from vaesdk.base.errors import InvalidArgumentError
from vaesdk.imaging.images import load_image

__all__ = [
    "ArrayImages", "FolderImages", "GlobalBatchSampler", "ImageSet", "StackImages", "TrainingData", "load_fashion_mnist",
    "load_image_folder", "open_training_data", "split_indices", "split_train_val", "to_nchw",
]  # fmt: skip


def to_nchw(images: np.ndarray) -> np.ndarray:
    """uint8 [N, H, W, C] -> contiguous uint8 [N, C, H, W], the layout torch convolutions take."""
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2))


class ArrayImages(Dataset):
    """Rows of an in-memory uint8 [N, H, W, C] array as uint8 [C, H, W] tensors."""

    def __init__(self, images: np.ndarray):
        self.images = torch.from_numpy(to_nchw(images))

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.images.shape[1:])

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.images[i]

    def __getitems__(self, indices: Sequence[int]) -> torch.Tensor:
        # One gather for the whole batch instead of a Python-level stack of rows.
        return self.images[torch.as_tensor(indices, dtype=torch.long)]


class FolderImages(Dataset):
    """Image files decoded one at a time, on demand, by the runtime's image policy
    (`vaesdk.imaging.images.load_image`): only the file list lives in memory."""

    def __init__(self, files: Sequence[Path], image_size: int, channels: int):
        self.files = list(files)
        self.image_size, self.channels = image_size, channels

    @property
    def image_shape(self) -> tuple[int, ...]:
        return (self.channels, self.image_size, self.image_size)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.from_numpy(load_image(self.files[i], self.image_size, self.channels).transpose(2, 0, 1).copy())


class StackImages:
    """collate_fn: a batch of [C, H, W] tensors -> uint8 [n, C, H, W]; an empty share (the
    last global batch can be smaller than the number of processes) -> [0, C, H, W]."""

    def __init__(self, image_shape: tuple[int, ...]):
        self.image_shape = image_shape

    def __call__(self, batch: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
        if isinstance(batch, torch.Tensor):
            return batch
        if not batch:
            return torch.empty((0, *self.image_shape), dtype=torch.uint8)
        return torch.stack(batch)


class GlobalBatchSampler(Sampler[list[int]]):
    """Batches of indices for one process out of `world_size`.

    The global order is a permutation seeded by (seed, epoch) (or 0..n-1 when seed is None);
    it is cut into global batches of `batch_size`, and process `rank` takes rows rank,
    rank + world_size, ... of each. So the global batch, the order of the data and the number
    of steps are the same for any number of processes (the role of DistributedSampler, which
    shards the epoch instead and so changes what a step sees with the process count).
    """

    def __init__(self, n: int, batch_size: int, rank: int = 0, world_size: int = 1, seed: int | None = None):
        self.n, self.batch_size, self.rank, self.world_size, self.seed = n, batch_size, rank, world_size, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def global_order(self) -> torch.Tensor:
        if self.seed is None:
            return torch.arange(self.n)
        # Seeded per epoch, so a resumed run sees the same order it would have.
        return torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 100_003 + self.epoch))

    def global_batch_sizes(self) -> list[int]:
        return [min(self.batch_size, self.n - i) for i in range(0, self.n, self.batch_size)]

    def __len__(self) -> int:
        return -(-self.n // self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        order = self.global_order()
        for i in range(0, self.n, self.batch_size):
            yield order[i : i + self.batch_size][self.rank :: self.world_size].tolist()


@dataclass
class TrainingData:
    train: Dataset
    val: Dataset
    class_names: tuple[str, ...]

    @property
    def image_shape(self) -> tuple[int, ...]:
        return self.train.image_shape


def open_training_data(dataset: str, data_dir: str, image_size: int, channels: int, limit: int, val_fraction: float, seed: int) -> TrainingData:
    """The run's seeded training/validation split as Datasets. Fashion-MNIST stays in memory;
    an image folder is listed (sorted, first `limit` files) and decoded lazily. The split is
    the same `split_indices` that export's `split_train_val` uses, so both see the same images."""
    if dataset == "fashion-mnist":
        data = fashion_mnist_train(data_dir, image_size, channels, limit)
        train, val = split_train_val(data, val_fraction, seed)
        return TrainingData(ArrayImages(train.images), ArrayImages(val.images), data.class_names)
    files, _, classes = list_image_folder(data_dir)
    if limit:
        files = files[:limit]
    train_idx, val_idx = split_indices(len(files), val_fraction, seed)
    pick = lambda idx: FolderImages([files[i] for i in idx], image_size, channels)  # noqa: E731
    return TrainingData(pick(train_idx), pick(val_idx), classes)
