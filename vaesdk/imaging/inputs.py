"""Reading many inputs in batches, with one result per input: an image or the error that
stopped it. The CLI, the server and users' own code skip bad files the same way.

    for batch in vaesdk.read_inputs(["shirts/", "shoe.png", b"...png bytes..."], model):
        results = model.reconstruct(batch.images) if len(batch) else []
        for name, error in batch.errors: ...

Images are decoded by a small thread pool (Pillow releases the GIL while it decodes) a
bounded number of chunks ahead of the consumer, so the model runs while the next images
are read, memory stays bounded, and the results come in input order: they are the same
for any number of workers.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..base.checks import positive_int
from ..base.errors import InvalidArgumentError, InvalidImageError, VaesdkError
from ..base.fileio import checked_path
from .images import IMAGE_SUFFIXES, Size, image_files, load_image, pixel_limit

DEFAULT_INPUT_BATCH = 256
MAX_INPUT_BATCH = 1 << 20
MAX_WORKERS = 256
# Inputs per task handed to a worker: one task per small image would cost more in
# scheduling than in decoding (a 28x28 PNG decodes in tens of microseconds).
READ_TASK_SIZE = 32
# Chunks decoded ahead of the consumer, per worker: enough to hide a slow file, few
# enough that memory stays a few hundred images whatever the folder's size.
AHEAD_PER_WORKER = 4


def default_workers() -> int:
    """Decoding threads when none are asked for: one per core the process may use."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, min(cores, 32))


@dataclass(frozen=True)
class InputItem:
    """One input: `image` (uint8 [H, W, C]) when it could be read, else `error`."""

    name: str
    image: np.ndarray | None = None
    error: VaesdkError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class InputBatch:
    """Up to `batch_size` readable images, with the unreadable inputs met on the way, in order."""

    items: list[InputItem] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        """Names of the readable inputs, in the order of `images`."""
        return [i.name for i in self.items if i.ok]

    @property
    def images(self) -> np.ndarray | list[np.ndarray]:
        """uint8 [B, H, W, C] of the readable inputs (B may be 0); a list of [H, W, C] when
        their sizes differ (a model that takes images at their own size)."""
        good = [i.image for i in self.items if i.ok]
        if not good:
            return np.zeros((0, 0, 0, 0), np.uint8)
        return np.stack(good) if len({g.shape for g in good}) == 1 else good

    @property
    def errors(self) -> list[tuple[str, VaesdkError]]:
        return [(i.name, i.error) for i in self.items if not i.ok]

    def __len__(self) -> int:
        """How many readable images the batch holds."""
        return sum(1 for i in self.items if i.ok)


def expand_sources(sources: Iterable[Any], skipped: list[str] | None = None) -> list[tuple[str, Any]]:
    """(name, source) pairs: folders become the image files they hold (sorted, recursive);
    bytes and other in-memory inputs are named 'input N'. A folder without images, or a path
    no filesystem could hold, becomes an error entry rather than stopping the rest.
    `skipped`, when given, receives the files in the folders that are not images."""
    if isinstance(sources, (str, os.PathLike, bytes, bytearray, memoryview, np.ndarray)):
        sources = [sources]
    if isinstance(sources, dict) or not hasattr(sources, "__iter__"):
        raise InvalidArgumentError(f"sources must be a list of paths, folders, bytes or images, got {type(sources).__name__}")
    out: list[tuple[str, Any]] = []
    for i, source in enumerate(sources):
        if isinstance(source, tuple) and len(source) == 2 and isinstance(source[0], str):
            out.append(source)  # an already named input, e.g. an upload with its file name
            continue
        if not isinstance(source, (str, os.PathLike)):
            out.append((f"input {i}", source))
            continue
        try:
            path = checked_path(source, InvalidImageError, "image path")
            is_dir = path.is_dir()
        except InvalidImageError as e:
            out.append((str(source)[:200], e))
            continue
        except OSError as e:
            out.append((str(source), InvalidImageError(f"cannot read {source}: {e.strerror or e}")))
            continue
        if not is_dir:
            out.append((str(path), path))
            continue
        found = image_files(path, skipped)
        if not found:
            out.append((str(path), InvalidImageError(f"folder {path} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")))
        out.extend((q, q) for q in found)
    return out


def read_inputs(
    sources: Iterable[Any],
    image_shape: tuple[int, int, int] | Any,
    batch_size: int = DEFAULT_INPUT_BATCH,
    *,
    workers: int | None = None,
    max_pixels: int | None = None,
) -> Iterator[InputBatch]:
    """Read `sources` (paths, folders, bytes, file objects, PIL images, arrays, or
    (name, source) pairs) into the model's format, `batch_size` readable images at a time.

    `image_shape` is (H, W, C) or a loaded model (images at their own size, checked against
    its geometry, for a model that takes any size). Every input gives an InputItem: its image,
    or the InvalidImageError that says what is wrong with it, so one broken file never stops
    the others. Only arguments that make the whole call meaningless raise. `workers`
    decoding threads (default: one per core; 1 decodes in the calling thread) read ahead
    of the consumer; the batches are the same for any number of workers. `max_pixels`
    lowers the per-image size limit (checked from each header before decoding).
    """
    _shape(image_shape)
    batch_size = positive_int("batch_size", batch_size, MAX_INPUT_BATCH)
    workers = check_workers(workers)
    # Expanded now, not at the first next(): a bad argument fails at the call.
    named = expand_sources(sources)
    return _batches(read_items(named, image_shape, workers=workers, max_pixels=max_pixels), int(batch_size))


def read_items(
    named: list[tuple[str, Any]], image_shape: tuple[int, int, int] | Any, *, workers: int | None = None, max_pixels: int | None = None
) -> Iterator[InputItem]:
    """One InputItem per (name, source) pair of `expand_sources`, in order, decoded by
    `workers` threads a bounded number of chunks ahead of the consumer."""
    shape = _shape(image_shape)
    workers = check_workers(workers)
    limit = pixel_limit(max_pixels)
    chunks = (named[i : i + READ_TASK_SIZE] for i in range(0, len(named), READ_TASK_SIZE))
    if workers == 1:
        return (item for chunk in chunks for item in _decode_chunk(chunk, shape, limit))
    return _read_ahead(chunks, shape, limit, workers)


def check_workers(workers: int | None) -> int:
    if workers is None:
        return default_workers()
    return positive_int("workers", workers, MAX_WORKERS, hint="(or None for one per core)")


@dataclass(frozen=True)
class _Shape:
    """How inputs are read: fitted to `size` (a side, or (H, W)), or at their own size
    (None) and checked by `check` (height, width)."""

    size: Size
    channels: int
    check: Callable[[int, int], None] | None = None


def _shape(image_shape: tuple[int, int, int] | Any) -> _Shape:
    geometry = getattr(image_shape, "geometry", None)
    if geometry is not None and not geometry.fixed_size:
        return _Shape(None, geometry.channels, geometry.check_size)
    if hasattr(image_shape, "image_shape"):
        image_shape = image_shape.image_shape
    try:
        h, w, c = (int(x) for x in image_shape)
    except (TypeError, ValueError, OverflowError):  # OverflowError: an infinite side
        raise InvalidArgumentError(f"image_shape must be (H, W, C) or a vaesdk.Model, got {image_shape!r:.80}") from None
    return _Shape(h if h == w else (h, w), c)


def _decode_chunk(chunk: list[tuple[str, Any]], shape: _Shape, max_pixels: int) -> list[InputItem]:
    items = []
    for name, source in chunk:
        if isinstance(source, VaesdkError):
            items.append(InputItem(name, error=source))
            continue
        try:
            image = load_image(source, shape.size, shape.channels, name, max_pixels=max_pixels)
            if shape.check is not None:
                try:
                    shape.check(image.shape[0], image.shape[1])
                except InvalidArgumentError as e:
                    raise InvalidImageError(f"{name}: {e}") from None
            items.append(InputItem(name, image=image))
        except VaesdkError as e:
            items.append(InputItem(name, error=e))
    return items


def _read_ahead(chunks: Iterator[list[tuple[str, Any]]], shape: _Shape, max_pixels: int, workers: int) -> Iterator[InputItem]:
    # A window of futures consumed in submission order: ordered output, bounded memory.
    pool = ThreadPoolExecutor(workers, thread_name_prefix="vaesdk-read")
    pending: deque = deque()
    try:
        for chunk in chunks:
            pending.append(pool.submit(_decode_chunk, chunk, shape, max_pixels))
            if len(pending) >= workers * AHEAD_PER_WORKER:
                yield from pending.popleft().result()
        while pending:
            yield from pending.popleft().result()
    finally:
        # Reached also when the consumer stops early: drop the work nobody will read.
        pool.shutdown(wait=True, cancel_futures=True)


def _batches(items: Iterator[InputItem], batch_size: int) -> Iterator[InputBatch]:
    batch: list[InputItem] = []
    good = 0
    for item in items:
        batch.append(item)
        if item.ok:
            good += 1
            if good == batch_size:
                yield InputBatch(batch)
                batch, good = [], 0
    if batch:
        yield InputBatch(batch)

