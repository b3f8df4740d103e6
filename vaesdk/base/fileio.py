"""Atomic file writing: readers see the old file or the complete new one, never a part."""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from pathlib import Path

from .errors import OutputError


def write_atomic(path: str | os.PathLike, data: bytes, overwrite: bool = False) -> Path:
    """Write `data` to `path` so that readers see either the old file or the whole new one.

    The bytes go to a temporary file in the same directory, are fsynced and renamed over the
    target. A symlink at `path` is refused (it could point anywhere); an existing file is
    refused unless `overwrite`. On any failure the temporary file is removed.
    """
    path = checked_path(path, OutputError, "output path")
    if not isinstance(overwrite, bool):
        raise OutputError(f"overwrite must be True or False, got {overwrite!r:.80}")
    if path.is_symlink():
        raise OutputError(f"{path} is a symbolic link; refusing to write through it (choose another output path)")
    if path.exists():
        if path.is_dir():
            raise OutputError(f"{path} is a directory; give a file name")
        if not overwrite:
            raise _exists(path)
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot create directory {parent}: {e.strerror or e}") from None
    tmp = None
    try:
        # The name is known before the file exists (tempfile.mkstemp returns it only after
        # creating the file, so an interruption in between left the file behind): whatever
        # interrupts from here on, the handler below removes what was created.
        for _ in range(100):
            tmp = str(parent / f".{path.name}.{os.urandom(4).hex()}.tmp")
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
                break
            except FileExistsError:  # someone else's file: not ours to remove
                tmp = None
                continue
            except OSError as e:
                tmp = None
                raise OutputError(f"cannot write in {parent}: {e.strerror or e}") from None
        else:
            tmp = None
            raise OutputError(f"cannot write in {parent}: no free temporary name")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~UMASK)
        if overwrite:
            os.replace(tmp, path)
        else:
            _link_new(tmp, path)
        fsync_dir(parent)
    except BaseException as e:
        if tmp is None:
            raise
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(e, FileExistsError):
            raise _exists(path) from None
        if isinstance(e, OSError):
            raise OutputError(f"cannot write {path}: {e.strerror or e}") from None
        raise
    return path


def _exists(path: Path) -> OutputError:
    return OutputError(
        f"{path} already exists; pass overwrite=True to replace it, or choose another path",
        cli_message=f"{path} already exists; pass --force to replace it, or choose another path",
    )


_NO_HARD_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK, errno.EXDEV}


def swap_folder(tmp: Path, out: Path, replace: bool) -> None:
    """Rename the finished folder `tmp` to `out`, durably. With `replace`, what is at `out` is
    moved aside first and removed only once the new folder is in place (and put back if the
    rename fails); without it, the rename succeeds over nothing or an empty folder only
    (OSError otherwise, with errno ENOTEMPTY or EEXIST)."""
    aside = None
    if replace and (out.exists() or out.is_symlink()):
        aside = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
        os.replace(out, aside / out.name)
    try:
        os.rename(tmp, out)
    except OSError:
        if aside is not None:
            os.replace(aside / out.name, out)
            shutil.rmtree(aside, ignore_errors=True)
        raise
    fsync_dir(out.parent)
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)


def fsync_dir(folder: Path) -> None:
    """Make the rename itself durable; not every platform or filesystem allows it."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _link_new(tmp: str, path: Path) -> None:
    """Move tmp to path only if path does not exist, atomically (no check-then-write race)."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise
    except OSError as e:
        if e.errno not in _NO_HARD_LINKS:
            raise
        # Filesystems without hard links (FAT, some network mounts): a checked rename.
        if path.exists() or path.is_symlink():
            raise FileExistsError(path) from None
        os.replace(tmp, path)
        return
    os.unlink(tmp)


def _read_umask() -> int:
    # os.umask can only be read by setting it; do that once, at import, not per write.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


UMASK = _read_umask()


# Limits of the usual filesystems; os.pathconf would need the path to exist already.
NAME_MAX = 255
PATH_MAX = 4096


def checked_path(value: str | os.PathLike, error: type[Exception], what: str) -> Path:
    """`value` as a Path, or `error` naming it when no filesystem could hold it: a NUL byte,
    a name over NAME_MAX bytes, or a path over PATH_MAX bytes (the OS would raise ValueError
    or OSError later, far from the argument that caused it)."""
    if not isinstance(value, (str, os.PathLike)):
        raise error(f"{what} must be a path (a string or os.PathLike), got {type(value).__name__}")
    try:
        text = os.fspath(value)
    except TypeError:
        raise error(f"{what} must be a path, got {value!r:.80}") from None
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    shown = text if len(text) <= 80 else text[:60] + "..." + text[-12:]
    if "\0" in text:
        raise error(f"{what} {shown!r} contains a NUL byte; give a real file path")
    if not text:
        raise error(f"{what} is empty; give a file path")
    encoded = os.fsencode(text)
    if len(encoded) > PATH_MAX:
        raise error(f"{what} {shown!r} is {len(encoded)} bytes long; paths are limited to {PATH_MAX}")
    longest = max((len(part) for part in encoded.split(b"/")), default=0)
    if longest > NAME_MAX:
        raise error(f"{what} {shown!r} has a name of {longest} bytes; file names are limited to {NAME_MAX}")
    return Path(text)
