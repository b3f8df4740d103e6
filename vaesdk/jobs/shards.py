"""Resumable jobs: results written in numbered shards, each atomically, with an index.

    result = vaesdk.run_job(model, "embed", ["images/"], job_dir="job/")   # interrupted? run it again

A job folder holds `job.json` (the model, the options and a digest of the input list) and
`shard-00000.npz`, `shard-00001.npz`, ...: each shard the results of `shard_size`
consecutive inputs (whole seed blocks, `vaesdk.jobs.blocks`), written with
`vaesdk.base.fileio.write_atomic`, so a shard file is complete or absent. Running the same job
again skips the shards already written and computes only the others; the joined result
is the same, byte for byte, as an uninterrupted run or `vaesdk.run_job`. A run with other
inputs, options, model or shard size in the same folder is refused rather than mixed in.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from ..runtime.arguments import DEFAULT_IW_SAMPLES
from ..base.errors import InvalidArgumentError, OutputError, VaesdkError
from ..base.fileio import checked_path, write_atomic
from ..imaging.inputs import expand_sources
from .blocks import (
    SEED_BLOCK, BlockResult, JobOptions, JobResult, blocks_of, check_job, error_from_record, error_record,
    iter_blocks, join_blocks,
)  # fmt: skip

JOB_FORMAT = "vaesdk-job"
JOB_FORMAT_VERSION = 2
INDEX = "job.json"
DEFAULT_SHARD_SIZE = 16 * SEED_BLOCK
MAX_SHARD_SIZE = 4096 * SEED_BLOCK

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
    _open_index(folder, _index(model, options, named, shard_blocks, n_shards))
    compute = runner(named, options) if runner is not None else _local(model, options, named, workers)
    for shard in range(n_shards):
        path = folder / shard_name(shard)
        first, stop = shard * shard_blocks, min((shard + 1) * shard_blocks, blocks_of(named))
        if path.exists():
            if progress is not None:
                progress(min(stop * SEED_BLOCK, len(named)) - first * SEED_BLOCK)
            continue
        blocks = []
        for b in compute(first, stop):
            blocks.append(b)
            if progress is not None:
                progress(len(b.names) + len(b.errors))
        write_atomic(path, blocks_to_bytes(blocks))
    return join_blocks(model, options, (b for shard in range(n_shards) for b in read_shard(folder / shard_name(shard))))


def _local(model: Any, options: JobOptions, named: list[tuple[str, Any]], workers: int | None) -> BlockRunner:
    return lambda first, stop: iter_blocks(model, options, named, first=first, stop=stop, workers=workers)


def _shard_blocks(shard_size: int) -> int:
    if (
        isinstance(shard_size, bool) or not isinstance(shard_size, (int, np.integer))
        or not SEED_BLOCK <= shard_size <= MAX_SHARD_SIZE or shard_size % SEED_BLOCK
    ):  # fmt: skip
        raise InvalidArgumentError(
            f"shard_size must be a multiple of {SEED_BLOCK} (the seed block) in {SEED_BLOCK}..{MAX_SHARD_SIZE}, got {shard_size!r:.80}"
        )
    return int(shard_size) // SEED_BLOCK


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
        "seed_block": SEED_BLOCK,
        "shard_size": shard_blocks * SEED_BLOCK,
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
        ("seed_block", "seed block"), ("shard_size", "shard size"),
    ):  # fmt: skip
        if old.get(key) != index[key]:
            raise InvalidArgumentError(
                f"job folder {folder} belongs to another job: {what} there {_short(old.get(key))}, now {_short(index[key])}; "
                "rerun with the same inputs and options to resume, or give a new job folder"
            )
    # A run killed while writing leaves write_atomic's temporary file; the shard itself is
    # absent and will be computed again.
    for stale in folder.glob(".shard-*.tmp"):
        stale.unlink(missing_ok=True)


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 120 else text[:100] + "..."


# ---- shard files ----------------------------------------------------------------------------


def blocks_to_bytes(blocks: list[BlockResult]) -> bytes:
    """Blocks as one .npz (no pickles): each block's names, columns and errors. Ray
    workers send their results in the same form."""
    arrays: dict[str, np.ndarray] = {}
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
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise OutputError(f"{label} is damaged ({e}); delete it and run the job again to recompute it") from None


def read_shard(path: Path) -> list[BlockResult]:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise OutputError(f"cannot read {path}: {e.strerror or e}") from None
    return blocks_from_bytes(data, str(path))
