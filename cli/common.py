"""What every command shares: loading the model, reading inputs, writing outputs, progress.

Commands read their inputs in batches, keep going past a bad file, and report the bad
files at the end with a non-zero exit, so one broken image never costs the good outputs.
"""

from __future__ import annotations

import json
import os
import sys
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import typer

import vaesdk
from vaesdk import InvalidArgumentError, InvalidImageError, OutputError, encode_png
from vaesdk.frontend import IMAGE_SUFFIXES, expand_sources, fresh_seed, read_stream, write_atomic

STDIO = "-"


def load_model(model: str | None, device: str, batch_size: int | None = None) -> vaesdk.Model:
    kwargs = {"batch_size": batch_size} if batch_size else {}
    return vaesdk.load(model, device=device, **kwargs)


def choose_seed(seed: int | None, quiet: bool = False) -> int:
    """The given seed (checked by --seed's own range, SeedOpt), or a fresh one that is
    printed so the run can be repeated."""
    if seed is None:
        seed = fresh_seed()
        if not quiet:
            announce_seed(seed)
    return seed


def announce_seed(seed: int) -> None:
    note(f"seed {seed} (pass --seed {seed} to repeat this run)")


def note(message: str) -> None:
    """Human-readable status goes to stderr, so stdout stays clean for data and pipes."""
    typer.echo(message, err=True)


def emit_json(payload: Any) -> None:
    typer.echo(json.dumps(payload, indent=2, allow_nan=False, default=_jsonable))


def _jsonable(x: Any) -> Any:
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


# ---- outputs --------------------------------------------------------------------------------


class Outputs:
    """Where one run's files go, and the writing of them.

    An explicit path (--out) is used as given: refused if it exists unless --force. A default
    name never overwrites a file without --force (a free name like stem-1.png is taken
    instead), and no run writes the same path twice.
    """

    def __init__(self, force: bool, background: int = 0):
        self.force = force
        self.written: set[Path] = set()
        # Writing a file is mostly waiting for the disk (write_atomic fsyncs), so with
        # `background` threads the next batch runs through the model meanwhile.
        self._pool = ThreadPoolExecutor(background, thread_name_prefix="vae-write") if background else None
        self._pending: deque[Future] = deque()

    def __enter__(self) -> Outputs:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is None:
            self.close()
        elif self._pool is not None:  # already failing: stop the writes, keep that error
            self._pool.shutdown(wait=True, cancel_futures=True)

    def close(self) -> None:
        """Wait for the files still being written; raise the first failure."""
        if self._pool is None:
            return
        try:
            while self._pending:
                self._pending.popleft().result()
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def explicit(self, out: Path) -> Path | str:
        if str(out) == STDIO:
            return STDIO
        if out.suffix.lower() != ".png":
            raise InvalidArgumentError(f"--out {out} must end in .png (or be '-' for stdout)")
        return out

    def default(self, path: Path) -> Path:
        if self.force and path not in self.written:
            return path
        if not _taken(path, self.written):
            return path
        for i in range(1, 100_000):
            candidate = path.with_name(f"{path.stem}-{i}{path.suffix}")
            if not _taken(candidate, self.written):
                return candidate
        raise OutputError(f"no free file name like {path}; pass --out")

    def write_png(self, target: Path | str, image: np.ndarray) -> str:
        """Write one image (uint8 [H, W, C]) to a path (atomically) or to stdout ('-')."""
        if target == STDIO:
            if sys.stdout.isatty():
                raise OutputError("refusing to write PNG bytes to a terminal; redirect stdout or pass --out FILE")
            sys.stdout.buffer.write(encode_png(image))
            sys.stdout.buffer.flush()
            return STDIO
        if target in self.written:
            raise OutputError(f"{target} would be written twice in one run; give distinct outputs")
        if self._pool is None:
            _write_png(target, image, self.force)
        else:
            # A bounded number of writes in flight: memory stays a few batches' worth.
            while len(self._pending) >= MAX_PENDING_WRITES:
                self._pending.popleft().result()
            self._pending.append(self._pool.submit(_write_png, target, image, self.force))
        self.written.add(Path(target))
        return str(target)


MAX_PENDING_WRITES = 512


def _write_png(target: Path, image: np.ndarray, force: bool) -> None:
    write_atomic(target, encode_png(image), overwrite=force)


def output_names(names: list[str], folder: Path, suffix: str) -> list[Path]:
    """Each input's output file in `folder`, fixed by the input list alone: STEM.SUFFIX.png,
    and STEM.SUFFIX-1.png, -2, ... for later inputs with the same stem; stdin is 'stdin'."""
    seen: dict[str, int] = {}
    out = []
    for name in names:
        stem = "stdin" if name == STDIO else Path(name).stem
        count = seen.get(stem, 0)
        seen[stem] = count + 1
        out.append(folder / (f"{stem}.{suffix}.png" if count == 0 else f"{stem}.{suffix}-{count}.png"))
    return out


@contextmanager
def folder_writer(folder: Path | None) -> Iterator[None]:
    """Hold `folder` (created if needed) for this run: a second run writing into it is refused
    with one line, so two runs never race for the same names. None: nothing to hold."""
    if folder is None:
        yield
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder, os.O_RDONLY)
    except OSError as e:
        raise OutputError(f"cannot use the output folder {folder}: {e.strerror or e}") from None
    try:
        try:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:  # not POSIX: no lock between processes
            pass
        except OSError:
            raise OutputError(f"another vae run is writing into {folder}; wait for it to end or give another --out-dir") from None
        yield
    finally:
        os.close(fd)


def _taken(path: Path, written: set[Path]) -> bool:
    return path in written or path.exists() or path.is_symlink()


def enlarge(image: np.ndarray, scale: int) -> np.ndarray:
    return image.repeat(scale, axis=0).repeat(scale, axis=1) if scale > 1 else image


# ---- inputs ---------------------------------------------------------------------------------


def read_source(name: str) -> str | bytes:
    """A path as given, or the bytes of stdin for '-' (counted as they are read: one read
    past the image file limit stops it)."""
    return read_stream(sys.stdin.buffer, "stdin") if name == STDIO else name


@dataclass
class Inputs:
    """The inputs a command was given (folders expanded, '-' read from stdin), and what went
    wrong with any. Reading and skipping are the SDK's (`vaesdk.read_inputs`); this only
    reports."""

    named: list[tuple[str, Any]]
    failures: list[str] = field(default_factory=list)

    @property
    def paths(self) -> list[str]:
        return [name for name, _ in self.named]

    def batches(self, model: vaesdk.Model, batch_size: int, workers: int | None = None) -> Iterator[tuple[list[str], np.ndarray]]:
        """Yield (names, uint8 [B, H, W, C]) of readable images, decoded by `workers` threads
        while the caller runs the model; unreadable ones are recorded."""
        for batch in vaesdk.read_inputs(self.named, model, batch_size, workers=workers):
            self.failures += [e.cli_message for _, e in batch.errors]  # each message names its input
            if len(batch):
                yield batch.names, batch.images

    def failed(self, errors: list[tuple[str, Any]]) -> None:
        """Record the unreadable inputs of an SDK job result."""
        self.failures += [e.cli_message for _, e in errors]

    def finish(self, done: int) -> None:
        """Report the bad inputs; exit non-zero when there were any."""
        for message in self.failures:
            typer.echo(f"vae: error: {message}", err=True)
        if self.failures:
            note(f"{done} image(s) done, {len(self.failures)} failed")
            raise typer.Exit(InvalidImageError.exit_code)


def gather_inputs(items: Sequence[str]) -> Inputs:
    if not items:
        raise InvalidArgumentError("no input images given; pass image files, folders, or '-' for stdin")
    if list(items).count(STDIO) > 1:
        raise InvalidArgumentError("'-' (stdin) can be given only once")
    skipped: list[str] = []
    inputs = Inputs(expand_sources([(STDIO, read_source(STDIO)) if s == STDIO else s for s in items], skipped))
    if skipped:
        shown = ", ".join(skipped[:3]) + (", ..." if len(skipped) > 3 else "")
        note(f"skipped {len(skipped)} file(s) in the folders that are not images ({shown}); images end in {', '.join(sorted(IMAGE_SUFFIXES))}")
    return inputs


@contextmanager
def progress(total: int, label: str, enabled: bool = True, lines: bool = False) -> Iterator[Callable[..., None]]:
    """A progress bar on stderr when it is a terminal, otherwise silent, or with `lines`
    one line on stderr per step or per 10 seconds (long runs in logs and pipelines). Yields
    `update(advance=1, completed=None, total=None, description=None)`."""
    if enabled and lines and not sys.stderr.isatty():
        yield _progress_lines(total, label)
        return
    if not enabled or not sys.stderr.isatty():
        yield lambda *args, **kwargs: None
        return
    from rich.console import Console
    from rich.progress import Progress

    with Progress(transient=True, console=Console(stderr=True)) as bar:
        task = bar.add_task(label, total=total)

        def update(advance: int = 1, completed: int | None = None, total: int | None = None, description: str | None = None) -> None:
            if completed is not None:
                bar.update(task, completed=completed, total=total or bar.tasks[0].total, description=description or label)
            else:
                bar.advance(task, advance)

        yield update


def _progress_lines(total: int, label: str) -> Callable[..., None]:
    import time

    state = {"done": 0, "total": total, "task": label, "last": 0.0, "start": time.monotonic()}

    def update(advance: int = 1, completed: int | None = None, total: int | None = None, description: str | None = None) -> None:
        now = time.monotonic()
        task = description or label
        state["done"] = completed if completed is not None else state["done"] + advance
        state["total"] = total or state["total"]
        if task != state["task"] or now - state["last"] >= 10.0 or state["done"] >= state["total"]:
            typer.echo(f"{task}: {state['done']}/{state['total']} ({now - state['start']:.0f} s)", err=True)
            state["task"], state["last"] = task, now

    return update
