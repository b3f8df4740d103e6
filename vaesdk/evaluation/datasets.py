"""Labelled image sets for evaluation and training, read with numpy only.

Fashion-MNIST comes from the standard IDX `.gz` files (Debian's `dataset-fashion-mnist`
installs them under /usr/share/datasets/fashion-mnist); an image folder is read with the
runtime's own image policy, one class per sub-folder.
"""

from __future__ import annotations

import gzip
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..base.errors import InvalidArgumentError
from ..imaging.images import IMAGE_SUFFIXES, image_files, load_image

DEFAULT_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = (
    "t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle-boot",
)  # fmt: skip

_IDX_FILES = {
    ("train", "images"): "train-images-idx3-ubyte.gz",
    ("train", "labels"): "train-labels-idx1-ubyte.gz",
    ("test", "images"): "t10k-images-idx3-ubyte.gz",
    ("test", "labels"): "t10k-labels-idx1-ubyte.gz",
}
MAX_IDX_BYTES = 1 << 31


@dataclass
class ImageSet:
    """images: uint8 [N, H, W, C]; labels: int64 [N] or None; class_names index the labels."""

    images: np.ndarray
    labels: np.ndarray | None = None
    class_names: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.images)

    def head(self, n: int) -> ImageSet:
        return ImageSet(self.images[:n], None if self.labels is None else self.labels[:n], self.class_names)


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file of unsigned bytes (gzip-compressed if it ends in .gz)."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read(MAX_IDX_BYTES + 1)
    except (OSError, EOFError) as e:
        raise InvalidArgumentError(f"cannot read {path}: {e}") from None
    if len(data) > MAX_IDX_BYTES or len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise InvalidArgumentError(f"{path} is not an IDX file (bad magic number or size)")
    if data[2] != 0x08:
        raise InvalidArgumentError(f"{path}: IDX type code {data[2]:#x} is not supported (only unsigned bytes)")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise InvalidArgumentError(f"{path}: truncated IDX header")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    body = np.frombuffer(data, dtype=np.uint8, offset=header)
    if body.size != int(np.prod(shape)):
        raise InvalidArgumentError(f"{path}: header declares shape {shape} but holds {body.size} values (truncated file?)")
    return body.reshape(shape)


def load_fashion_mnist(data_dir: str | Path = DEFAULT_FASHION_MNIST_DIR, split: str = "train") -> ImageSet:
    """The `train` (60,000) or `test` (10,000) split: uint8 [N, 28, 28, 1] with labels."""
    if split not in ("train", "test"):
        raise InvalidArgumentError(f"split must be 'train' or 'test', got {split!r}")
    data_dir = Path(data_dir)
    paths = {kind: data_dir / _IDX_FILES[(split, kind)] for kind in ("images", "labels")}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise InvalidArgumentError(
            f"Fashion-MNIST files not found: {', '.join(missing)}. "
            "Install them with `apt-get install dataset-fashion-mnist`, or pass --data-dir to a folder holding the IDX .gz files"
        )
    images = read_idx(paths["images"])
    labels = read_idx(paths["labels"]).astype(np.int64)
    if images.ndim != 3 or len(images) != len(labels):
        raise InvalidArgumentError(f"{data_dir}: {images.shape} images do not match {len(labels)} labels")
    return ImageSet(images[:, :, :, None].copy(), labels, FASHION_MNIST_CLASSES)


def list_image_folder(folder: str | Path) -> tuple[list[Path], np.ndarray | None, tuple[str, ...]]:
    """(files in sorted order, labels or None, class names) of an image folder, without
    decoding anything. When every file sits in a sub-folder, each sub-folder is a class."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InvalidArgumentError(f"image folder {folder} does not exist or is not a directory")
    files = [Path(p) for p in image_files(folder)]
    if not files:
        raise InvalidArgumentError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) found under {folder}")
    if all(p.parent != folder for p in files):
        classes = tuple(sorted({p.parent.relative_to(folder).as_posix() for p in files}))
        index = {name: i for i, name in enumerate(classes)}
        labels = np.array([index[p.parent.relative_to(folder).as_posix()] for p in files], dtype=np.int64)
        return files, labels, classes
    return files, None, ()


def load_image_folder(folder: str | Path, image_size: int | tuple[int, int], channels: int) -> ImageSet:
    """Every image file below `folder`, converted by the runtime's image policy. When every
    file sits in a sub-folder, each sub-folder is a class and the set is labelled."""
    files, labels, classes = list_image_folder(folder)
    images = np.stack([load_image(p, image_size, channels) for p in files])
    return ImageSet(images, labels, classes)


def load_dataset(source: str, split: str, image_size: int, channels: int, data_dir: str | Path | None = None) -> ImageSet:
    """`fashion-mnist` (with an optional IDX folder) or the path of a labelled image folder."""
    if source == "fashion-mnist":
        return load_fashion_mnist(data_dir or DEFAULT_FASHION_MNIST_DIR, split)
    return load_image_folder(source, image_size, channels)


# ---- a training run's data and its split ---------------------------------------------------
# One home for the split: training (`vaesdk.training.data`), export's calibration and metrics,
# and the tests all take a run's training and validation images from these functions.


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(training indices, validation indices) of a seeded random split of n items; the same
    seed always gives the same split, whether the images are in memory or read lazily."""
    n_val = max(1, int(round(n * val_fraction)))
    if n_val >= n:
        raise InvalidArgumentError(f"{n} images are too few to hold out {n_val} for validation")
    order = np.random.default_rng(seed).permutation(n)
    return order[n_val:], order[:n_val]


def split_train_val(data: ImageSet, val_fraction: float, seed: int) -> tuple[ImageSet, ImageSet]:
    """A seeded random split; the same seed always gives the same split."""
    train_idx, val_idx = split_indices(len(data), val_fraction, seed)

    def take(idx: np.ndarray) -> ImageSet:
        labels = None if data.labels is None else data.labels[idx]
        return ImageSet(data.images[idx], labels, data.class_names)

    return take(train_idx), take(val_idx)


def fashion_mnist_train(data_dir: str | Path, image_size: int, channels: int, limit: int) -> ImageSet:
    """Fashion-MNIST's training images (the first `limit` when set), for a 28x28 grey model."""
    if (image_size, channels) != (28, 1):
        raise InvalidArgumentError(f"Fashion-MNIST is 28x28 grayscale; set image_size=28, channels=1 (got {image_size}, {channels})")
    data = load_fashion_mnist(data_dir, "train")
    return data.head(limit) if limit else data


def training_images(dataset: str, data_dir: str | Path, image_size: int, channels: int, limit: int) -> ImageSet:
    """All of a training run's images in memory: Fashion-MNIST's training split or an image
    folder ('folder'), the first `limit` when set."""
    if dataset == "fashion-mnist":
        return fashion_mnist_train(data_dir, image_size, channels, limit)
    data = load_image_folder(data_dir, image_size, channels)
    return data.head(limit) if limit else data


def training_split(
    dataset: str, data_dir: str | Path, image_size: int, channels: int, limit: int, val_fraction: float, seed: int
) -> tuple[ImageSet, ImageSet]:
    """A training run's (training, validation) images, reproduced from its settings: the
    same data, limit, fraction and seed give the same split as the run itself used."""
    return split_train_val(training_images(dataset, data_dir, image_size, channels, limit), val_fraction, seed)
