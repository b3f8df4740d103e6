"""Editing a bundle in place: its manifest validated and rewritten atomically, under a lock on
the folder; the model files and their checksums are never touched."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..base.errors import InvalidArgumentError
from ..base.fileio import write_atomic
from .format import MANIFEST, NAME_RE, Manifest, manifest_json, validate_manifest
from .reading import read_manifest


def write_manifest(bundle_dir: str | os.PathLike, data: dict[str, Any], overwrite: bool = True) -> Path:
    """Validate and atomically write manifest.json; checksums of the model files are untouched."""
    validate_manifest(data)
    return write_atomic(Path(bundle_dir) / MANIFEST, manifest_json(data).encode("utf-8"), overwrite=overwrite)


# ---- rewriting the manifest -----------------------------------------------------------------


@contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    """An advisory lock on the bundle folder, held while its manifest is rewritten and while a
    rebuilt bundle takes the folder's place (POSIX; elsewhere only the caller's in-process lock
    applies)."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    while True:
        fd = os.open(folder, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            # A rebuilt bundle may have taken the folder's place while this waited (the lock
            # was on the folder moved aside): lock the folder now at this path instead.
            held, now = os.fstat(fd), os.stat(folder)
        except BaseException:
            os.close(fd)
            raise
        if (held.st_dev, held.st_ino) == (now.st_dev, now.st_ino):
            break
        os.close(fd)
    try:
        yield
    finally:
        os.close(fd)


def add_direction(
    bundle_dir: str | os.PathLike, name: str, vector: Any, *, description: str = "", overwrite: bool = False
) -> Manifest:
    """Store a named latent direction in the bundle's manifest (rewritten atomically; the model
    files and their checksums are untouched) and return the new manifest."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise InvalidArgumentError(f"direction name {name!r:.80} must be 1-64 letters, digits, '_', '.' or '-'")
    if not isinstance(description, str):
        raise InvalidArgumentError(f"description must be a string, got {type(description).__name__}")
    bundle_dir = Path(bundle_dir)
    with folder_lock(bundle_dir):
        # Re-read under the lock, so directions added meanwhile by another Model or process
        # are kept, and a manifest changed on disk is validated again.
        data = json.loads(json.dumps(read_manifest(bundle_dir).data))
        directions = data.setdefault("directions", {})
        if name in directions and not overwrite:
            raise InvalidArgumentError(
                f"direction {name!r} already exists; pass overwrite=True to replace it",
                cli_message=f"direction {name!r} already exists; pass --force to replace it",
            )
        directions[name] = {
            "vector": [float(x) for x in vector],
            "description": description or "mean latent of the 'to' images minus that of the 'from' images",
            "source": "user",
        }
        write_manifest(bundle_dir, data)
        return read_manifest(bundle_dir)


def set_anomaly(bundle_dir: str | os.PathLike, entry: dict[str, Any]) -> Manifest:
    """Store the manifest's `anomaly` entry (a calibration, vaesdk.maths.anomaly), replacing
    any, and return the new manifest; rewritten atomically under the folder's lock."""
    bundle_dir = Path(bundle_dir)
    with folder_lock(bundle_dir):
        data = json.loads(json.dumps(read_manifest(bundle_dir).data))
        data["anomaly"] = entry
        write_manifest(bundle_dir, data)
        return read_manifest(bundle_dir)
