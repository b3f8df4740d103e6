"""`vaesdk.run_job`: embed or score many inputs with one call, run in this process, in
resumable shards (`job_dir`) or on a Ray cluster (`ray`). Every way gives the same
`JobResult`, byte for byte (`vaesdk.jobs.blocks` explains why), so a front end only passes on
what it was asked for.

    result = vaesdk.run_job(model, "score", ["images/"], k=1, seed=0)
    result = vaesdk.run_job(model, "embed", ["images/"], job_dir="job/")      # rerun to resume
    result = vaesdk.run_job(model, "embed", ["/shared/images/"], ray="auto")  # the ray extra
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

from ..runtime.arguments import DEFAULT_IW_SAMPLES
from ..base.errors import InvalidArgumentError
from .blocks import JobResult, run_in_process
from .shards import DEFAULT_SHARD_SIZE, run_sharded


def run_job(
    model: Any,
    operation: str,
    sources: Iterable[Any],
    *,
    k: int = DEFAULT_IW_SAMPLES,
    seed: int = 0,
    logvar: bool = False,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
    max_pixels: int | None = None,
    job_dir: str | os.PathLike | None = None,
    shard_size: int = DEFAULT_SHARD_SIZE,
    ray: str | None = None,
) -> JobResult:
    """Embed or score every input of `sources` (paths, folders, bytes, ... as for
    `read_inputs`): 'embed' gives columns mean (and logvar), 'score' elbo_bpd, iw_bpd,
    anomaly and p_value, one row per readable input, with the unreadable ones in `errors`.

    `job_dir`: write the results in shards there and skip those an earlier run wrote.
    `ray`: run on Ray ('auto' or a cluster address; image paths only). `workers`: decoding
    threads here, Ray workers there. `progress(n)` is called as inputs are done.
    `max_pixels` lowers the per-image size limit (in this process only)."""
    options = dict(k=k, seed=seed, logvar=logvar, workers=workers, progress=progress)
    if max_pixels is not None and (job_dir is not None or ray is not None):
        raise InvalidArgumentError("max_pixels applies to a job run in this process; leave it out with job_dir or ray")
    if ray is not None:
        from .ray import run_job as run_on_ray  # imports ray only when asked for

        return run_on_ray(model, operation, sources, address=ray, job_dir=job_dir, shard_size=shard_size, **options)
    if job_dir is not None:
        return run_sharded(model, operation, sources, job_dir, shard_size=shard_size, **options)
    return run_in_process(model, operation, sources, max_pixels=max_pixels, **options)
