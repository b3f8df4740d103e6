"""Where bundles come from: named models shipped inside the package, or a user's path.

The bundled models live in `vaesdk/models/<name>/` (package data). The list is read once,
lazily; an unknown name lists the known ones.
"""

from __future__ import annotations

import functools
import os
from importlib import resources
from pathlib import Path

from .format import MANIFEST
from ..base.errors import InvalidArgumentError, ModelNotFoundError
from ..base.fileio import checked_path
from ..requirements import missing_part

DEFAULT_MODEL = "fashion-mnist"


@functools.lru_cache(maxsize=1)
def bundled_models() -> dict[str, Path]:
    try:
        root = Path(str(resources.files("vaesdk.models")))
    except ModuleNotFoundError as e:
        if e.name != "vaesdk.models":
            raise
        raise ModelNotFoundError(missing_part("models")) from None
    # A hidden folder is no model: `vae export` writes its bundle as .NAME.XXXX.partial and
    # renames it into place only when it is complete.
    return {p.name: p for p in sorted(root.iterdir()) if not p.name.startswith(".") and (p / MANIFEST).is_file()}


def list_models() -> list[str]:
    """Names of the bundled models."""
    return list(bundled_models())


def resolve(name_or_path: str | os.PathLike | None = None) -> Path:
    """A bundled model's name, a bundle folder, or its manifest.json -> the bundle folder.

    A bundled model's name is looked up first; a value with a path separator, starting
    with '.', or naming something that exists (and is not a bundled name) is a path. Where
    the bundled models are missing (Python started in a source checkout), a bare name is a
    path only where a bundle is.
    """
    if name_or_path is None:
        name_or_path = DEFAULT_MODEL
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise InvalidArgumentError(f"model must be a bundled model name or a bundle folder path, got {name_or_path!r}")
    text = os.fspath(name_or_path)
    if isinstance(text, bytes):
        raise InvalidArgumentError(f"model must be a name or a path given as str, got bytes {text!r:.80}")
    try:
        bundled = bundled_models()
    except ModelNotFoundError:  # a source folder imported in place of the package: paths still work
        checked_path(text, ModelNotFoundError, "bundle path")
        # A bare name is a path only where a bundle is: a dataset folder named like a bundled
        # model ('fashion-mnist') says nothing about why the bundled models are missing.
        explicit = isinstance(name_or_path, os.PathLike) or os.sep in text or text.startswith(".")
        if not (explicit or (Path(text) / MANIFEST).is_file() or (Path(text).name == MANIFEST and Path(text).is_file())):
            raise
        bundled = {}
    if text not in bundled:
        # A path no filesystem could hold would raise OSError or ValueError below.
        checked_path(text, ModelNotFoundError, "bundle path")
    # A bare bundled name wins over a same-named folder in the working directory (the
    # dataset folder is often called fashion-mnist too); paths say so with a separator.
    is_path = isinstance(name_or_path, os.PathLike) or os.sep in text or text.startswith(".") or (
        text not in bundled and Path(text).exists()
    )
    if not is_path:
        if text in bundled:
            return bundled[text]
        known = ", ".join(bundled) or "(none installed)"
        raise ModelNotFoundError(f"unknown model {text!r}; bundled models: {known}; or pass a path to a bundle folder")
    path = Path(text)
    if path.name == MANIFEST and path.is_file():
        path = path.parent
    if path.is_dir():
        return path
    raise ModelNotFoundError(
        f"no bundle at {text}: expected a folder holding {MANIFEST}, encoder.onnx and decoder.onnx"
        + (f"; bundled models: {', '.join(bundled)}" if bundled else "")
    )
