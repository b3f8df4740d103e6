"""Resumable jobs: results written in numbered shards, each atomically, with an index.

    result = vaesdk.run_job(model, "embed", ["images/"], job_dir="job/")   # interrupted? run it again

A job folder holds `job.json` (the model, the options and a digest of the input list) and
`shard-00000.npz`, `shard-00001.npz`, ...: each shard the results of `shard_size`
consecutive inputs (whole blocks, `vaesdk.jobs.blocks`), written with
`vaesdk.base.fileio.write_atomic`, so a shard file is complete or absent. Running the same job
again skips the shards already written and computes only the others; the joined result
is the same, byte for byte, as an uninterrupted run or `vaesdk.run_job`. A run with other
inputs, options, model or shard size in the same folder is refused rather than mixed in.

One run at a time holds a folder: `.lock` is locked (flock) for the whole run and names its
holder, so a second run is refused with one line, and the lock of a killed run is released
with its process. Each shard records its position (shard, first and last block) and
the sha256 of its inputs' names and bytes; a resume reads each shard and checks both, and a
shard that is damaged, moved or whose inputs changed is computed again. Temporary files
left by a killed run (`.*.tmp`) are removed by the next run.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import socket
import time
import zipfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from ..runtime.arguments import DEFAULT_IW_SAMPLES
from ..base.errors import InvalidArgumentError, OutputError, VaesdkError
from ..base.fileio import checked_path, write_atomic
from ..imaging.inputs import expand_sources
from .blocks import (
    BLOCK_SIZE, BlockResult, JobOptions, JobResult, blocks_of, check_job, error_from_record, error_record,
    iter_blocks, join_blocks,
)  # fmt: skip

JOB_FORMAT = "vaesdk-job"
JOB_FORMAT_VERSION = 4  # 3: shards record their position and their inputs' digest; 4: per-image score streams
INDEX = "job.json"
LOCK = ".lock"
DEFAULT_SHARD_SIZE = 16 * BLOCK_SIZE
MAX_SHARD_SIZE = 4096 * BLOCK_SIZE

# Computes blocks first..stop-1 of the job's inputs, yielding them in order (this process,
# or a Ray cluster: vaesdk.jobs.ray).
BlockRunner = Callable[[int, int], Iterable[BlockResult]]


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.npz"


def run_sharded(
    model: Any,
    operation: str,
    sources: Iterable[Any],
    job_dir: str | os.PathLike,
    *,
    shard_size: int = DEFAULT_SHARD_SIZE,
    k: int = DEFAULT_IW_SAMPLES,
    seed: int = 0,
    logvar: bool = False,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
    runner: Callable[[list[tuple[str, Any]], JobOptions], BlockRunner] | None = None,
) -> JobResult:
    """Embed or score every input, writing each shard to `job_dir` as it completes and
    skipping shards an earlier run of the same job wrote. Returns the whole job's result.
    `progress(n)` is called with the number of inputs each finished block (or skipped
    shard) covers. `runner` replaces this process's computation (vaesdk.jobs.ray uses it)."""
    options = JobOptions(operation, k=k, seed=seed, logvar=logvar)
    check_job(model, options)
    shard_blocks = _shard_blocks(shard_size)
    folder = checked_path(job_dir, OutputError, "job folder")
    named = expand_sources(sources)
    for name, source in named:
        if not isinstance(source, (str, os.PathLike, VaesdkError)):
            # A resume can check a file list, not the content of bytes or arrays.
            raise InvalidArgumentError(f"input {name!r:.80} is held in memory; a resumable job takes image files and folders (not stdin or bytes)")
    n_shards = math.ceil(blocks_of(named) / shard_blocks)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"job folder {folder} is a file; give a folder (new or of the same job)")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot create job folder {folder}: {e.strerror or e}") from None
    with _job_lock(folder):
        _open_index(folder, _index(model, options, named, shard_blocks, n_shards))
        compute = runner(named, options) if runner is not None else _local(model, options, named, workers)
        shards: list[list[BlockResult]] = []
        for shard in range(n_shards):
            path = folder / shard_name(shard)
            first, stop = shard * shard_blocks, min((shard + 1) * shard_blocks, blocks_of(named))
            header = {"shard": shard, "first_block": first, "stop_block": stop,
                      "inputs_sha256": _inputs_digest(named[first * BLOCK_SIZE : stop * BLOCK_SIZE])}  # fmt: skip
            kept = _kept_shard(path, header)
            if kept is not None:
                shards.append(kept)
                if progress is not None:
                    progress(min(stop * BLOCK_SIZE, len(named)) - first * BLOCK_SIZE)
                continue
            blocks = []
            for b in compute(first, stop):
                blocks.append(b)
                if progress is not None:
                    progress(len(b.names) + len(b.errors))
            write_atomic(path, blocks_to_bytes(blocks, header), overwrite=True)
            shards.append(blocks)
        return join_blocks(model, options, (b for blocks in shards for b in blocks))


@contextmanager
def _job_lock(folder: Path) -> Iterator[None]:
    """Hold the job folder for this run: a second run is refused with one line naming the
    holder; the kernel releases the lock of a run that was killed."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock between processes
        yield
        return
    path = folder / LOCK
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
    except OSError as e:
        raise OutputError(f"cannot open {path}: {e.strerror or e}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 400, 0).decode("utf-8", "replace").strip() or "another run"
            raise OutputError(
                f"job folder {folder} is in use by {holder}; wait for that run to end, or give another --job-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}".encode(), 0)
        yield
    finally:
        os.close(fd)


def _inputs_digest(named: list[tuple[str, Any]]) -> str:
    """sha256 over each input's name and bytes (an input that cannot be read: its name and
    the fact), so a shard whose inputs changed since it was written is not kept."""
    digest = hashlib.sha256()
    for name, source in named:
        digest.update(name.encode("utf-8", "surrogateescape") + b"\0")
        if isinstance(source, (str, os.PathLike)):
            try:
                with open(source, "rb") as f:
                    while chunk := f.read(1 << 20):
                        digest.update(chunk)
            except OSError:
                digest.update(b"\1unreadable")
        else:
            digest.update(b"\2error")
    return digest.hexdigest()


def _kept_shard(path: Path, header: dict[str, Any]) -> list[BlockResult] | None:
    """The blocks of the shard at `path` when it is whole and is this position's shard of
    these inputs; None when it must be computed (absent, damaged, moved, inputs changed)."""
    if not path.exists():
        return None
    try:
        data = path.read_bytes()
        if _shard_header(data) != header:
            return None
        return blocks_from_bytes(data, str(path))
    except (OSError, OutputError):
        return None


def _shard_header(data: bytes) -> Any:
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            return json.loads(str(z["shard"])) if "shard" in z.files else None
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile):
        return None


def _local(model: Any, options: JobOptions, named: list[tuple[str, Any]], workers: int | None) -> BlockRunner:
    return lambda first, stop: iter_blocks(model, options, named, first=first, stop=stop, workers=workers)


def _shard_blocks(shard_size: int) -> int:
    if (
        isinstance(shard_size, bool) or not isinstance(shard_size, (int, np.integer))
        or not BLOCK_SIZE <= shard_size <= MAX_SHARD_SIZE or shard_size % BLOCK_SIZE
    ):  # fmt: skip
        raise InvalidArgumentError(
            f"shard_size must be a multiple of {BLOCK_SIZE} (the block size) in {BLOCK_SIZE}..{MAX_SHARD_SIZE}, got {shard_size!r:.80}"
        )
    return int(shard_size) // BLOCK_SIZE


# ---- the index ------------------------------------------------------------------------------


def _index(model: Any, options: JobOptions, named: list[tuple[str, Any]], shard_blocks: int, n_shards: int) -> dict[str, Any]:
    names = hashlib.sha256()
    for name, _ in named:
        names.update(name.encode("utf-8", "surrogateescape") + b"\0")
    return {
        "format": JOB_FORMAT,
        "format_version": JOB_FORMAT_VERSION,
        "model": {"name": model.name, "sha256": model_digest(model)},
        "options": options.as_dict(),
        "inputs": {"count": len(named), "names_sha256": names.hexdigest()},
        "block_size": BLOCK_SIZE,
        "shard_size": shard_blocks * BLOCK_SIZE,
        "shards": n_shards,
    }


def model_digest(model: Any) -> str:
    """What decides a job's numbers: the graphs, the likelihood, the calibration; named
    directions are left out, since adding one changes no embedding or score."""
    manifest = {k: v for k, v in model.manifest.data.items() if k != "directions"}
    return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()


def _open_index(folder: Path, index: dict[str, Any]) -> None:
    path = folder / INDEX
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"job folder {folder} is a file; give a folder (new or of the same job)")
    if not path.exists():
        if folder.exists() and any(folder.glob("shard-*.npz")):
            raise OutputError(f"job folder {folder} holds shards but no {INDEX}; give an empty or new folder")
        write_atomic(path, (json.dumps(index, indent=2) + "\n").encode())
        return
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise OutputError(f"cannot read {path} ({e}); give a new job folder") from None
    if not isinstance(old, dict) or old.get("format") != JOB_FORMAT:
        raise OutputError(f"{path} is not a vaesdk job index; give a new job folder")
    for key, what in (
        ("format_version", "job format"), ("model", "model"), ("options", "options"), ("inputs", "inputs"),
        ("block_size", "block size"), ("shard_size", "shard size"),
    ):  # fmt: skip
        if old.get(key) != index[key]:
            raise InvalidArgumentError(
                f"job folder {folder} belongs to another job: {what} there {_short(old.get(key))}, now {_short(index[key])}; "
                "rerun with the same inputs and options to resume, or give a new job folder"
            )
    # A run killed while writing leaves write_atomic's temporary files (of a shard, the index,
    # or anything else); what they were writing is absent and will be written again. Only
    # the lock's holder gets here, so no other run is writing them.
    for stale in folder.glob(".*.tmp"):
        stale.unlink(missing_ok=True)


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 120 else text[:100] + "..."


# ---- shard files ----------------------------------------------------------------------------


def blocks_to_bytes(blocks: list[BlockResult], header: dict[str, Any] | None = None) -> bytes:
    """Blocks as one .npz (no pickles): each block's names, columns and errors, and for a
    shard its `header` (position and inputs' digest). Ray workers send their results in the
    same form."""
    arrays: dict[str, np.ndarray] = {}
    if header is not None:
        arrays["shard"] = np.array(json.dumps(header, sort_keys=True))
    meta = []
    for i, b in enumerate(blocks):
        meta.append({"block": b.block, "columns": list(b.columns), "errors": [error_record(n, e) for n, e in b.errors],
                     "error_positions": b.error_positions})  # fmt: skip
        arrays[f"b{i}.names"] = np.array(b.names, dtype=np.str_)
        for c, a in b.columns.items():
            arrays[f"b{i}.{c}"] = a
    arrays["meta"] = np.array(json.dumps(meta))
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def blocks_from_bytes(data: bytes, label: str = "shard") -> list[BlockResult]:
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            return [
                BlockResult(
                    m["block"], [str(n) for n in z[f"b{i}.names"]], {c: z[f"b{i}.{c}"] for c in m["columns"]},
                    [error_from_record(r) for r in m["errors"]], [int(p) for p in m["error_positions"]],
                )  # fmt: skip
                for i, m in enumerate(meta)
            ]
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as e:
        raise OutputError(f"{label} is damaged ({e}); delete it and run the job again to recompute it") from None


def read_shard(path: Path) -> list[BlockResult]:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise OutputError(f"cannot read {path}: {e.strerror or e}") from None
    return blocks_from_bytes(data, str(path))
