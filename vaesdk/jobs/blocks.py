"""Batch jobs over many inputs: embed or score a folder, block by block.

A job cuts its inputs (after `expand_sources`, unreadable ones included) into blocks of
BLOCK_SIZE positions, each one model call. A score draws from streams of each image's own
(`vaesdk.maths.latent.ImageNoise`), so an image's results depend only on the seed and the image:
not on its block, the batch size, the number of decoding threads, how blocks are grouped into
shards, whether a run was resumed, or which Ray worker ran it. Every way of running a job (`run_in_process`,
`vaesdk.jobs.shards.run_sharded`, `vaesdk.jobs.ray.run_job`, all reached through `vaesdk.run_job`)
joins the same blocks into the same `JobResult`, byte for byte.

    result = vaesdk.run_job(model, "score", ["images/"], k=1, seed=0)
    result.names, result.columns["iw_bpd"], result.errors
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..maths.anomaly import SCORE as ANOMALY_SCORE
from ..maths.anomaly import check_flag, read_calibration
from ..runtime.arguments import DEFAULT_IW_SAMPLES, MAX_IW_SAMPLES, positive_int
from ..base.checks import check_job_seed
from ..base.errors import InvalidArgumentError, InvalidImageError, VaesdkError
from ..imaging.inputs import InputItem, expand_sources, read_items

# Inputs per block: small enough that a Ray task or a shard holds a few of them, large
# enough that one model call per block runs at full batch speed.
BLOCK_SIZE = 256
JOB_OPERATIONS = ("embed", "score")


@dataclass(frozen=True)
class JobOptions:
    """What a job computes: `operation` ('embed' or 'score'), with --logvar for embed and
    k and seed for score. Part of a sharded job's index, so a resume with other options is refused."""

    operation: str
    k: int = DEFAULT_IW_SAMPLES
    seed: int = 0
    logvar: bool = False

    def __post_init__(self) -> None:
        if self.operation not in JOB_OPERATIONS:
            raise InvalidArgumentError(f"operation must be one of {', '.join(JOB_OPERATIONS)}, got {self.operation!r:.80}")
        positive_int("k", self.k, MAX_IW_SAMPLES)
        check_job_seed(self.seed)
        if not isinstance(self.logvar, bool):
            raise InvalidArgumentError(f"logvar must be True or False, got {self.logvar!r:.80}")

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"operation": self.operation}
        if self.operation == "embed":
            out["logvar"] = self.logvar
        else:
            out.update(k=int(self.k), seed=int(self.seed))
        return out


@dataclass(frozen=True)
class BlockResult:
    """One block's results: `names` of its readable inputs, `columns` (name -> array with
    one row per readable input), and `errors` (name, error) for the others, in input order;
    `error_positions` holds each error's position among the block's inputs."""

    block: int
    names: list[str]
    columns: dict[str, np.ndarray]
    errors: list[tuple[str, VaesdkError]] = field(default_factory=list)
    error_positions: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if len(self.error_positions) != len(self.errors):
            raise ValueError(f"{len(self.errors)} errors but {len(self.error_positions)} error positions")


@dataclass(frozen=True)
class JobResult:
    """A whole job: the blocks joined in order. `error_positions` holds each error's
    position among all the job's inputs."""

    names: list[str]
    columns: dict[str, np.ndarray]
    errors: list[tuple[str, VaesdkError]]
    error_positions: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.names)

    def in_input_order(self) -> list[tuple[str, int | VaesdkError]]:
        """Every input in input order: (name, row of its results in `columns`) if it was
        read, else (name, error). Names alone cannot say this when two inputs share one."""
        failed = dict(zip(self.error_positions, self.errors))
        out: list[tuple[str, int | VaesdkError]] = []
        row = 0
        for position in range(len(self.names) + len(self.errors)):
            if position in failed:
                out.append(failed[position])
            else:
                out.append((self.names[row], row))
                row += 1
        return out


def columns_of(model: Any, options: JobOptions) -> list[str]:
    """The result columns of `options.operation` on `model`, in output order."""
    if options.operation == "embed":
        return ["mean", "logvar"] if options.logvar else ["mean"]
    return ["elbo_bpd", "iw_bpd", "anomaly", "p_value"]


def check_job(model: Any, options: JobOptions) -> None:
    """Refuse, before any image is read, a job the model cannot do."""
    if options.operation == "score":
        model.require_vae("scoring likelihoods")
    elif options.logvar and model.geometry.spatial:
        raise InvalidArgumentError(f"logvar: {model.name!r} embeds an image as per-channel means of its spatial latent, which have no variance")
    elif options.logvar and model.kind != "vae":
        raise InvalidArgumentError(f"logvar needs a VAE; {model.name!r} is a plain autoencoder with no posterior variance")


def run_block(model: Any, options: JobOptions, block: int, items: list[InputItem]) -> BlockResult:
    """Compute one block from its InputItems (readable or not), in one model call."""
    good = [i for i in items if i.ok]
    names = [i.name for i in good]
    errors = [(i.name, i.error) for i in items if not i.ok]
    error_positions = [p for p, i in enumerate(items) if not i.ok]
    columns: dict[str, np.ndarray]
    if not good:
        columns = _empty_columns(model, options)
    elif options.operation == "embed" and model.geometry.spatial:
        columns = {"mean": model.embed([i.image for i in good])}  # per-channel means, comparable across sizes
    elif options.operation == "embed":
        post = model.encode(np.stack([i.image for i in good]))
        columns = {"mean": post.mean}
        if options.logvar:
            columns["logvar"] = post.logvar
    else:
        # Each image draws from streams of its own: a job's scores are Model.score's, whatever the blocks.
        s = model.score(np.stack([i.image for i in good]), k=options.k, seed=options.seed)
        p = s.p_value if s.p_value is not None else np.full(len(good), np.nan)
        columns = {"elbo_bpd": s.elbo_bpd, "iw_bpd": s.iw_bpd, "anomaly": s.anomaly, "p_value": np.asarray(p, np.float64)}
    return BlockResult(block, names, columns, errors, error_positions)


def _empty_columns(model: Any, options: JobOptions) -> dict[str, np.ndarray]:
    if options.operation == "embed":
        return {c: np.zeros((0, model.feature_dim), np.float32) for c in columns_of(model, options)}
    return {c: np.zeros(0, np.float64) for c in columns_of(model, options)}


def blocks_of(named: list[tuple[str, Any]]) -> int:
    """How many blocks a job over `named` inputs has."""
    return math.ceil(len(named) / BLOCK_SIZE)


def iter_blocks(
    model: Any,
    options: JobOptions,
    named: list[tuple[str, Any]],
    *,
    first: int = 0,
    stop: int | None = None,
    workers: int | None = None,
    max_pixels: int | None = None,
) -> Iterator[BlockResult]:
    """BlockResults of blocks first..stop-1 of `named`, in order; images are decoded by
    `workers` threads while the model runs on the previous block."""
    stop = blocks_of(named) if stop is None else stop
    part = named[first * BLOCK_SIZE : stop * BLOCK_SIZE]
    items = read_items(part, model, workers=workers, max_pixels=max_pixels)
    block, current = first, []
    for item in items:
        current.append(item)
        if len(current) == BLOCK_SIZE:
            yield run_block(model, options, block, current)
            block, current = block + 1, []
    if current:
        yield run_block(model, options, block, current)


def join_blocks(model: Any, options: JobOptions, blocks: Iterable[BlockResult]) -> JobResult:
    """Blocks (in order) -> one JobResult."""
    names: list[str] = []
    errors: list[tuple[str, VaesdkError]] = []
    error_positions: list[int] = []
    parts: dict[str, list[np.ndarray]] = {c: [] for c in columns_of(model, options)}
    for b in blocks:
        names += b.names
        errors += b.errors
        error_positions += [b.block * BLOCK_SIZE + p for p in b.error_positions]
        for c, acc in parts.items():
            acc.append(b.columns[c])
    columns = {c: np.concatenate(acc) if acc else _empty_columns(model, options)[c] for c, acc in parts.items()}
    return JobResult(names, columns, errors, error_positions)


def run_in_process(
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
) -> JobResult:
    """Embed or score every input of `sources` (paths, folders, bytes, ... as for
    `read_inputs`) in this process. `progress(n)` is called with each block's input count;
    `max_pixels` lowers the per-image size limit."""
    options = JobOptions(operation, k=k, seed=seed, logvar=logvar)
    check_job(model, options)
    named = expand_sources(sources)
    blocks = iter_blocks(model, options, named, workers=workers, max_pixels=max_pixels)
    return join_blocks(model, options, _counted(blocks, progress))


def _counted(blocks: Iterator[BlockResult], progress: Callable[[int], None] | None) -> Iterator[BlockResult]:
    for b in blocks:
        if progress is not None:
            progress(len(b.names) + len(b.errors))
        yield b


def score_report(model: Any, result: JobResult, *, k: int, seed: int, flag_p_below: float | None = None) -> dict[str, Any]:
    """A score job as plain data (what `vae score --json` prints): the model, k, seed, the
    calibration, and one record per readable input with file, elbo_bpd, iw_bpd (None for a
    model without a pixel likelihood), anomaly, p_value (None without a calibration) and, with `flag_p_below`, unusual (p_value below it)."""
    calibration = read_calibration(model.manifest.data)
    if flag_p_below is not None:
        check_flag(model, flag_p_below)
    c = result.columns
    records = []
    for i, name in enumerate(result.names):
        p_value = None if calibration is None else float(c["p_value"][i])
        # NaN bounds: a model without a pixel likelihood has none (null, not a number).
        elbo, iw = (float(c[f][i]) if np.isfinite(c[f][i]) else None for f in ("elbo_bpd", "iw_bpd"))
        record = {"file": name, "elbo_bpd": elbo, "iw_bpd": iw, "anomaly": float(c["anomaly"][i]), "p_value": p_value}
        if flag_p_below is not None:
            record["unusual"] = bool(p_value < flag_p_below)
        records.append(record)
    return {
        "model": model.name, "k": k, "seed": seed,
        "units": "bounds in bits/dim, lower is better; anomaly: higher is more unusual; p_value: small is unusual",
        "anomaly_score": ANOMALY_SCORE,
        "calibration": None if calibration is None else {"n": calibration.n, "source": calibration.source},
        **({"flag_p_below": flag_p_below} if flag_p_below is not None else {}),
        "scores": records,
    }  # fmt: skip


def error_record(name: str, error: VaesdkError) -> dict[str, str]:
    """A per-input error as plain data (for shard files and Ray, which carry no exceptions)."""
    return {"name": name, "message": str(error), "cli_message": error.cli_message}


def error_from_record(record: dict[str, str]) -> tuple[str, VaesdkError]:
    return record["name"], InvalidImageError(record["message"], cli_message=record["cli_message"])
