"""Reading many inputs in batches, with one result per input: an image or the error that
stopped it. The CLI, the server and users' own code skip bad files the same way.

    for batch in vaesdk.read_inputs(["shirts/", "shoe.png", b"...png bytes..."], model):
        results = model.reconstruct(batch.images) if len(batch) else []
        for name, error in batch.errors: ...
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import InvalidArgumentError, InvalidImageError, VaesdkError
from .fileio import checked_path
from .images import IMAGE_SUFFIXES, to_model_array

DEFAULT_INPUT_BATCH = 256
MAX_INPUT_BATCH = 1 << 20


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
    def images(self) -> np.ndarray:
        """uint8 [B, H, W, C] of the readable inputs (B may be 0)."""
        good = [i.image for i in self.items if i.ok]
        return np.stack(good) if good else np.zeros((0, 0, 0, 0), np.uint8)

    @property
    def errors(self) -> list[tuple[str, VaesdkError]]:
        return [(i.name, i.error) for i in self.items if not i.ok]

    def __len__(self) -> int:
        """How many readable images the batch holds."""
        return sum(1 for i in self.items if i.ok)


def expand_sources(sources: Iterable[Any]) -> list[tuple[str, Any]]:
    """(name, source) pairs: folders become the image files they hold (sorted, recursive);
    bytes and other in-memory inputs are named 'input N'. A folder without images, or a path
    no filesystem could hold, becomes an error entry rather than stopping the rest."""
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
        found = sorted(q for q in path.rglob("*") if q.suffix.lower() in IMAGE_SUFFIXES and q.is_file())
        if not found:
            out.append((str(path), InvalidImageError(f"folder {path} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")))
        out.extend((str(q), q) for q in found)
    return out


def read_inputs(
    sources: Iterable[Any], image_shape: tuple[int, int, int] | Any, batch_size: int = DEFAULT_INPUT_BATCH
) -> Iterator[InputBatch]:
    """Read `sources` (paths, folders, bytes, file objects, PIL images, arrays, or
    (name, source) pairs) into the model's format, `batch_size` readable images at a time.

    `image_shape` is (H, W, C) or a loaded Model. Every input gives an InputItem: its image,
    or the InvalidImageError that says what is wrong with it, so one broken file never stops
    the others. Only arguments that make the whole call meaningless raise.
    """
    if hasattr(image_shape, "image_shape"):
        image_shape = image_shape.image_shape
    try:
        h, _, c = (int(x) for x in image_shape)
    except (TypeError, ValueError):
        raise InvalidArgumentError(f"image_shape must be (H, W, C) or a vaesdk.Model, got {image_shape!r:.80}") from None
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or not 1 <= batch_size <= MAX_INPUT_BATCH:
        raise InvalidArgumentError(f"batch_size must be an integer in 1..{MAX_INPUT_BATCH}, got {batch_size!r}")
    # Expanded now, not at the first next(): a bad argument fails at the call.
    named = expand_sources(sources)
    return _batches(named, h, c, int(batch_size))


def _batches(named: list[tuple[str, Any]], size: int, channels: int, batch_size: int) -> Iterator[InputBatch]:
    items: list[InputItem] = []
    good = 0
    for name, source in named:
        if isinstance(source, VaesdkError):
            items.append(InputItem(name, error=source))
            continue
        try:
            items.append(InputItem(name, image=to_model_array(source, size, channels, name)))
            good += 1
        except VaesdkError as e:
            items.append(InputItem(name, error=e))
        if good == batch_size:
            yield InputBatch(items)
            items, good = [], 0
    if items:
        yield InputBatch(items)

