"""What every command shares: loading the model, reading inputs, writing outputs, progress.

Commands read their inputs in batches, keep going past a bad file, and report the bad
files at the end with a non-zero exit, so one broken image never costs the good outputs.
"""

from __future__ import annotations

import json
import secrets
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import typer

import vaesdk
from vaesdk.errors import InvalidArgumentError, InvalidImageError, OutputError
from vaesdk.fileio import write_atomic
from vaesdk.images import encode_png, iter_image_files, load_image

STDIO = "-"


def load_model(model: str | None, device: str, batch_size: int | None = None) -> vaesdk.Model:
    kwargs = {"batch_size": batch_size} if batch_size else {}
    return vaesdk.load(model, device=device, **kwargs)


def choose_seed(seed: int | None, quiet: bool = False) -> int:
    """The given seed, or a fresh one that is printed so the run can be repeated."""
    if seed is None:
        seed = secrets.randbits(31)
        if not quiet:
            note(f"seed {seed} (pass --seed {seed} to repeat this run)")
    elif seed < 0:
        raise InvalidArgumentError(f"--seed must be >= 0, got {seed}")
    return seed


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


def fresh_path(path: Path) -> Path:
    """`path`, or `stem-1.png`, `stem-2.png`, ... : the first that does not exist yet."""
    if not path.exists() and not path.is_symlink():
        return path
    for i in range(1, 100_000):
        candidate = path.with_name(f"{path.stem}-{i}{path.suffix}")
        if not candidate.exists() and not candidate.is_symlink():
            return candidate
    raise OutputError(f"no free file name like {path}; pass --out")


def output_path(out: Path | None, default: str, force: bool) -> Path | str:
    """An explicit --out is used as given (refused if it exists, unless --force); without
    one, a fresh name is chosen so that nothing is ever overwritten by default."""
    if out is None:
        return fresh_path(Path(default))
    if str(out) == STDIO:
        return STDIO
    if out.suffix.lower() != ".png":
        raise InvalidArgumentError(f"--out {out} must end in .png (or be '-' for stdout)")
    return out


def write_png(target: Path | str, image: np.ndarray, force: bool) -> str:
    """Write one image (uint8 [H, W, C]) to a path (atomically) or to stdout ('-')."""
    data = encode_png(image)
    if target == STDIO:
        if sys.stdout.isatty():
            raise OutputError("refusing to write PNG bytes to a terminal; redirect stdout or pass --out FILE")
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return STDIO
    write_atomic(target, data, overwrite=force)
    return str(target)


def enlarge(image: np.ndarray, scale: int) -> np.ndarray:
    return image.repeat(scale, axis=0).repeat(scale, axis=1) if scale > 1 else image


# ---- inputs ---------------------------------------------------------------------------------


@dataclass
class Inputs:
    """The files a command was given (folders expanded), and what went wrong with any."""

    paths: list[str]
    failures: list[tuple[str, str]] = field(default_factory=list)

    def fail(self, name: str, message: str) -> None:
        self.failures.append((name, message))

    def batches(self, model: vaesdk.Model, batch_size: int) -> Iterator[tuple[list[str], np.ndarray]]:
        """Yield (names, uint8 [B, H, W, C]) of readable images; unreadable ones are recorded."""
        h, _, c = model.image_shape
        names: list[str] = []
        arrays: list[np.ndarray] = []
        for name in self.paths:
            try:
                arrays.append(load_image(read_source(name), h, c))
                names.append(name)
            except InvalidImageError as e:
                self.fail(name, str(e))
                continue
            if len(arrays) == batch_size:
                yield names, np.stack(arrays)
                names, arrays = [], []
        if arrays:
            yield names, np.stack(arrays)

    def finish(self, done: int) -> None:
        """Report the bad inputs; exit non-zero when there were any."""
        for name, message in self.failures:
            typer.echo(f"vae: error: {name}: {message}", err=True)
        if self.failures:
            note(f"{done} image(s) done, {len(self.failures)} failed")
            raise typer.Exit(InvalidImageError.exit_code)


def read_source(name: str) -> str | bytes:
    """A path as given, or the bytes of stdin for '-'."""
    return sys.stdin.buffer.read() if name == STDIO else name


def gather_inputs(items: Sequence[str]) -> Inputs:
    if not items:
        raise InvalidArgumentError("no input images given; pass image files, folders, or '-' for stdin")
    if items.count(STDIO) > 1:
        raise InvalidArgumentError("'-' (stdin) can be given only once")
    paths = [STDIO if s == STDIO else str(p) for s in items for p in ([s] if s == STDIO else iter_image_files([s]))]
    return Inputs(paths)


def output_for(input_name: str, out: Path | None, out_dir: Path | None, suffix: str, single: bool) -> Path | str:
    """Where the result for one input goes: --out for a single input, else --out-dir (or the
    current folder) with the input's name plus `suffix`."""
    if out is not None:
        if not single:
            raise InvalidArgumentError("--out takes one input image; with several, use --out-dir")
        return output_path(out, "", True)
    stem = "stdin" if input_name == STDIO else Path(input_name).stem
    folder = out_dir if out_dir is not None else Path(".")
    return folder / f"{stem}.{suffix}.png"


def place(target: Path | str, explicit: bool, force: bool) -> Path | str:
    """Default names never overwrite (a fresh name is chosen); explicit ones need --force."""
    if target == STDIO or explicit:
        return target
    return target if force else fresh_path(Path(target))


@contextmanager
def progress(total: int, label: str, enabled: bool = True) -> Iterator[Any]:
    """A progress bar on stderr when it is a terminal; otherwise silent."""
    if not enabled or not sys.stderr.isatty():
        yield lambda n=1: None
        return
    try:
        from rich.progress import Progress
    except ImportError:  # pragma: no cover - rich comes with typer
        yield lambda n=1: None
        return
    with Progress(transient=True, console=_stderr_console()) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n=1: bar.advance(task, n)


def _stderr_console() -> Any:
    from rich.console import Console

    return Console(stderr=True)
