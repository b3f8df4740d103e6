"""One image operation over many inputs, one result per input: the call behind `vae
reconstruct`, `vae edit` and the server's image routes.

    for r in vaesdk.map_images(model, "edit", ["shirts/", "shoe.png"], dim=3, delta=2.0, seed=0):
        print(r.name, r.output.shape if r.ok else r.error)

The arguments are checked once, before any input is read. Inputs are read in the model's
batches (unreadable ones become per-input errors in their place), and every batch draws
from the same random streams, seeded once, so an output depends on the seed and its
position among the readable inputs, never on the batch size or the number of reading threads.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..base.errors import InvalidArgumentError, VaesdkError
from ..imaging.inputs import InputBatch, read_inputs

IMAGE_OPERATIONS = ("reconstruct", "edit")


@dataclass(frozen=True)
class ImageResult:
    """One input's outcome: `image` (the input as the model read it, uint8 [H, W, C]) and
    `output` (uint8 [H, W, C]), or the `error` that stopped it."""

    name: str
    image: np.ndarray | None = None
    output: np.ndarray | None = None
    error: VaesdkError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def map_images(
    model: Any,
    operation: str,
    sources: Iterable[Any],
    *,
    seed: Any = None,
    batch_size: int | None = None,
    workers: int | None = None,
    max_pixels: int | None = None,
    **options: Any,
) -> Iterator[ImageResult]:
    """Run `operation` ('reconstruct' or 'edit', with its `options` as for the Model method)
    on every input of `sources` (as for `read_inputs`), yielding one ImageResult per input in
    input order. `max_pixels` lowers the per-image size limit (a server's upload limit);
    `batch_size` defaults to the model's. Bad arguments raise now, at the call."""
    if operation not in IMAGE_OPERATIONS:
        raise InvalidArgumentError(f"operation must be one of {', '.join(IMAGE_OPERATIONS)}, got {operation!r:.80}")
    # The arguments checked once, here; every batch then runs without checking them again,
    # drawing from one set of streams, each batch where the last one stopped.
    run = model.prepare(operation, seed=seed, **options)
    batches = read_inputs(sources, model, model.batch_size if batch_size is None else batch_size, workers=workers, max_pixels=max_pixels)
    return _results(batches, run)


def _results(batches: Iterator[InputBatch], run: Any) -> Iterator[ImageResult]:
    for batch in batches:
        images = batch.images if len(batch) else None
        outputs = iter(zip(images, run(images))) if images is not None else iter(())
        for item in batch.items:
            if item.ok:
                image, output = next(outputs)
                yield ImageResult(item.name, image=image, output=output)
            else:
                yield ImageResult(item.name, error=item.error)
