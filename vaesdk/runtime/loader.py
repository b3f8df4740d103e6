"""`vaesdk.load`: a bundled model by name, or a bundle folder by path, as a ready Model."""

from __future__ import annotations

import os

from ..bundle.reading import read_bundle
from .model import DEFAULT_BATCH, Model
from .spatial import SpatialModel
from ..bundle.registry import resolve


def load(
    name_or_path: str | os.PathLike | None = None,
    device: str = "auto",
    *,
    threads: int | None = None,
    batch_size: int = DEFAULT_BATCH,
    verify: bool = True,
) -> Model | SpatialModel:
    """Load a bundled model by name (default 'fashion-mnist') or a bundle folder by path: a
    `Model`, or a `SpatialModel` for a bundle with spatial latents [C, h, w].

    device: 'auto' (CUDA when its provider really runs, else CPU), 'cuda', 'cuda:N' or 'cpu'.
    verify=False skips only the size and sha256 checks of the model files; never use it on
    bundles from sources you do not trust.
    """
    bundle = read_bundle(resolve(name_or_path), verify=verify)
    cls = SpatialModel if bundle.manifest.geometry.spatial else Model
    return cls(bundle, device, threads=threads, batch_size=batch_size)
