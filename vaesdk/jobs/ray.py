"""Batch jobs on a Ray cluster (the `ray` extra: pip install '.[ray]' in a checkout).

    result = vaesdk.jobs.ray.run_job(model, "embed", ["/shared/images/"], address="auto")

The job's inputs are cut into the blocks of `vaesdk.jobs.blocks`; each block becomes one row
of a `ray.data` dataset, and `BlockWorker`, a callable class for
`ray.data.Dataset.map_batches`, loads the bundle once per worker (actor) and computes the
blocks it is given. The driver puts the blocks back in order, so the result is the one
`vaesdk.run_job` gives in a single process, byte for byte. Image paths and the bundle are
read by the workers: on a cluster of several machines they must be on storage every node
sees at the same path (a bundled model name works when vaesdk is installed on every node).

Importing vaesdk never imports ray; this module imports it when a job starts.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from ..runtime.arguments import DEFAULT_IW_SAMPLES
from ..base.errors import InvalidArgumentError, MissingDependencyError, VaesdkError, install_hint
from ..imaging.inputs import expand_sources, read_items
from .blocks import (
    BLOCK_SIZE, BlockResult, JobOptions, JobResult, blocks_of, check_job, error_from_record, error_record, join_blocks, run_block,
)  # fmt: skip
from .shards import DEFAULT_SHARD_SIZE, blocks_from_bytes, blocks_to_bytes, run_sharded


def require_ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401  (the dataset API is what the jobs use)
    except ImportError:
        raise MissingDependencyError(
            f"ray is not installed; running jobs on Ray needs the ray extra: {install_hint('ray')}"
        ) from None
    return ray


def connect(address: str = "auto", **init_kwargs: Any) -> None:
    """Join a Ray cluster: 'auto' joins the one this machine belongs to (RAY_ADDRESS, or a
    cluster started here with `ray start`) or else starts a local one; an address such as
    'ray://head:10001' or 'head:6379' joins that one. Does nothing when already connected."""
    ray = require_ray()
    if ray.is_initialized():
        return
    if not isinstance(address, str) or not address.strip():
        raise InvalidArgumentError(f"Ray address must be 'auto' or an address like head:6379 or ray://head:10001, got {address!r:.80}")
    if address.startswith("ray://"):
        kwargs = dict(init_kwargs)  # Ray Client: the cluster's own settings apply
    else:
        kwargs = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.WARNING, **init_kwargs}
    try:
        ray.init(address=None if address == "auto" else address, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise InvalidArgumentError(f"cannot join the Ray cluster at {address!r} ({' '.join(str(e).split())[:200]}); check the address, or pass auto") from None


class BlockWorker:
    """For `ray.data.Dataset.map_batches` (with `fn_constructor_kwargs`): the bundle is
    loaded once per worker. Each input row is one block, {"block": b, "inputs": JSON
    of [name, path or null, error or null] per input}; each output row is {"block": b,
    "result": the block's results as .npz bytes (`vaesdk.jobs.shards.blocks_from_bytes`)}."""

    def __init__(
        self, model: str, operation: str, *, k: int = DEFAULT_IW_SAMPLES, seed: int = 0, logvar: bool = False,
        device: str = "cpu", threads: int | None = 1, batch_size: int = 256,
    ):  # fmt: skip
        from ..runtime.loader import load

        # One onnxruntime thread per worker by default: Ray runs one worker per CPU.
        self.model = load(model, device=device, threads=threads, batch_size=batch_size)
        self.options = JobOptions(operation, k=k, seed=seed, logvar=logvar)
        check_job(self.model, self.options)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        payloads = []
        for block, inputs in zip(batch["block"], batch["inputs"]):
            named = [(name, error_from_record(err)[1] if err else path) for name, path, err in json.loads(str(inputs))]
            items = list(read_items(named, self.model, workers=1))
            payloads.append(blocks_to_bytes([run_block(self.model, self.options, int(block), items)]))
        return {"block": np.asarray(batch["block"], np.int64), "result": np.array(payloads, dtype=object)}


def block_rows(named: list[tuple[str, Any]], first: int, stop: int) -> list[dict[str, Any]]:
    """The dataset rows of blocks first..stop-1: only paths travel, never image bytes."""
    rows = []
    for b in range(first, stop):
        inputs = []
        for name, source in named[b * BLOCK_SIZE : (b + 1) * BLOCK_SIZE]:
            if isinstance(source, VaesdkError):
                inputs.append([name, None, error_record(name, source)])
            else:
                inputs.append([name, str(Path(source).absolute()), None])
        rows.append({"block": b, "inputs": json.dumps(inputs)})
    return rows


def run_job(
    model: Any,
    operation: str,
    sources: Iterable[Any],
    *,
    address: str = "auto",
    k: int = DEFAULT_IW_SAMPLES,
    seed: int = 0,
    logvar: bool = False,
    job_dir: str | os.PathLike | None = None,
    shard_size: int = DEFAULT_SHARD_SIZE,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> JobResult:
    """Embed or score `sources` (image files and folders) on Ray; the same result as
    `vaesdk.run_job`. With `job_dir`, shards are written as with `vaesdk.jobs.shards.run_sharded` and a
    rerun resumes. `workers`: Ray workers (default: one per CPU of the cluster)."""
    options = JobOptions(operation, k=k, seed=seed, logvar=logvar)
    check_job(model, options)
    named = _path_sources(sources)
    connect(address)
    runner = _runner(model, options, named, workers, progress if job_dir is None else None)
    if job_dir is not None:
        return run_sharded(
            model, operation, named, job_dir, shard_size=shard_size, k=k, seed=seed, logvar=logvar, progress=progress,
            runner=lambda _named, _options: runner,
        )  # fmt: skip
    return join_blocks(model, options, runner(0, blocks_of(named)))


def _path_sources(sources: Iterable[Any]) -> list[tuple[str, Any]]:
    named = expand_sources(sources)
    for name, source in named:
        if not isinstance(source, (str, os.PathLike, VaesdkError)):
            raise InvalidArgumentError(
                f"input {name!r:.80} is held in memory; Ray workers read images by path, so give files or folders (not stdin or bytes)"
            )
    return named


def _model_ref(model: Any) -> str:
    """What a worker passes to vaesdk.load: the bundled name when it is one, else the path."""
    from ..bundle.registry import list_models, resolve

    if model.name in list_models() and resolve(model.name) == model.path:
        return model.name
    return str(Path(model.path).absolute())


def _runner(
    model: Any, options: JobOptions, named: list[tuple[str, Any]], workers: int | None, progress: Callable[[int], None] | None
) -> Callable[[int, int], list[BlockResult]]:
    ray = require_ray()
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    if workers is None:
        workers = max(1, int(ray.cluster_resources().get("CPU", 1)))
    elif isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise InvalidArgumentError(f"Ray workers must be a positive integer, got {workers!r:.80}")
    kwargs = dict(model=_model_ref(model), operation=options.operation, k=options.k, seed=options.seed,
                  logvar=options.logvar, batch_size=model.batch_size)  # fmt: skip

    def run(first: int, stop: int) -> list[BlockResult]:
        if stop <= first:
            return []
        rows = block_rows(named, first, stop)
        ds = ray.data.from_items(rows, override_num_blocks=len(rows))
        pool = ray.data.ActorPoolStrategy(size=min(workers, len(rows)))
        out = ds.map_batches(BlockWorker, fn_constructor_kwargs=kwargs, batch_size=1, compute=pool, num_cpus=1)
        blocks = []
        for row in out.iter_rows():
            got = blocks_from_bytes(row["result"], f"block {row['block']} from Ray")
            blocks += got
            if progress is not None:
                progress(sum(len(b.names) + len(b.errors) for b in got))
        blocks.sort(key=lambda b: b.block)
        if [b.block for b in blocks] != list(range(first, stop)):
            raise VaesdkError(f"Ray returned blocks {[b.block for b in blocks][:10]} for blocks {first}..{stop - 1}; run the job again")
        return blocks

    return run
