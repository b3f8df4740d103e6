"""The `vae` app: joins the command groups and turns vaesdk errors into one-line messages
and exit codes. The exit codes are vaesdk.base.errors.EXIT_CODES (each error class's
`exit_code` and the command line's own), which `vae --help` lists. `--debug` (or
VAESDK_DEBUG=1) shows the traceback instead.
"""

from __future__ import annotations

import io
import os
import signal
import sys
import warnings
from typing import Annotated, Any

import typer
import typer.core
from typer.core import TyperGroup

# Newer typer releases carry their own copy of click; older ones use click itself.
click = getattr(typer.core, "_click", None) or __import__("click")
# Ctrl-D at a prompt: click's Abort, which typer's own copy of click may not define.
ABORT = getattr(click.exceptions, "Abort", None) or getattr(typer, "Abort", None) or type("NeverRaised", (Exception,), {})

from vaesdk.base.errors import EXIT_BROKEN_PIPE, EXIT_CODES, EXIT_INTERRUPTED, EXIT_SUCCESS, EXIT_TERMINATED, OutputError, VaesdkError

from . import analyze, directions, edit, generate, manage, serve, train, triton

_state = {"debug": False}


def _debug_from_env() -> bool:
    return os.environ.get("VAESDK_DEBUG", "") not in ("", "0")


class VaeGroup(TyperGroup):
    """Catches errors around every subcommand, so CliRunner and the console script behave alike."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        # Usage errors (a bad option value, a missing argument) become one line like every
        # other error, instead of click's framed block.
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except click.exceptions.NoArgsIsHelpError as e:
            typer.echo(e.ctx.get_help() if e.ctx is not None else e.format_message())
            code = EXIT_SUCCESS
        except click.exceptions.ClickException as e:
            where = f"; see `{e.ctx.command_path} -h`" if getattr(e, "ctx", None) is not None else ""
            message = " ".join(e.format_message().split()).rstrip(".")
            typer.echo(f"vae: error: {message}{where}", err=True)
            code = e.exit_code
        except ABORT:
            typer.echo("vae: aborted", err=True)
            code = VaesdkError.exit_code
        if not standalone_mode:
            return code
        # What stdout still holds is part of the output: written, or the run failed.
        failed = _flush_stdout(report=not code)
        sys.exit(failed if failed is not None and not code else code if isinstance(code, int) else EXIT_SUCCESS)

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except VaesdkError as e:
            if _state["debug"]:
                raise
            typer.echo(f"vae: error: {e.cli_message}", err=True)
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt as e:
            if _state["debug"]:
                raise
            typer.echo("vae: interrupted; files already written are complete, nothing partial was left", err=True)
            raise typer.Exit(EXIT_TERMINATED if isinstance(e, Terminated) else EXIT_INTERRUPTED) from None
        except (typer.Exit, typer.Abort):
            raise
        except BrokenPipeError:
            # The reader went away (`vae ... | head`): not an error worth a message.
            _silence_stdout()
            raise typer.Exit(EXIT_BROKEN_PIPE) from None
        except Exception as e:
            if _state["debug"] or type(e).__module__.startswith(("click", "typer")):
                raise
            # A bug, not a bad input: still one line, with the way to the traceback.
            typer.echo(f"vae: internal error: {type(e).__name__}: {e} (rerun as `vae --debug ...` for the traceback)", err=True)
            raise typer.Exit(VaesdkError.exit_code) from None


def _silence_stdout() -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # no real file descriptor (e.g. under a test runner)
        pass
    finally:
        os.close(devnull)


# The exit codes under the command list of `vae --help`, from their one home.
EXIT_CODES_HELP = "Exit codes: " + "; ".join(f"{code} {meaning}" for code, meaning in EXIT_CODES.items()) + "."

app = typer.Typer(
    cls=VaeGroup,
    name="vae",
    help="Variational autoencoders in production: sample, edit, encode and score images with an exported model bundle.",
    epilog=EXIT_CODES_HELP,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        from vaesdk import __version__

        typer.echo(f"vae (vaesdk) {__version__}")
        raise typer.Exit(EXIT_SUCCESS)


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks instead of one-line errors.")] = False,
    version: Annotated[
        bool, typer.Option("--version", help="Print the version and exit.", callback=_print_version, is_eager=True)
    ] = False,
) -> None:
    # Set on every invocation, so one debug run does not leak into the next in the same process.
    _state["debug"] = debug or _debug_from_env()


for module in (generate, edit, analyze, manage, serve, train, triton):
    app.add_typer(module.app)
app.add_typer(directions.app, name="directions")


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so every cleanup (temporary bundle folders, partial
    files) runs before the process ends; Python's default for SIGTERM skips them all."""


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated()


class _CheckedWriter(io.BufferedWriter):
    """stdout's bytes, buffered whatever PYTHONUNBUFFERED says (a raw file loses the rest of a
    partial write on a full disk without a word), with every failure to write one
    OutputError naming stdout; a reader that went away stays a BrokenPipeError."""

    def write(self, b: Any) -> int:
        try:
            return super().write(b)
        except BrokenPipeError:
            raise
        except OSError as e:
            raise OutputError(f"cannot write to stdout: {e.strerror or e}; the output is incomplete") from None

    def flush(self) -> None:
        try:
            super().flush()
        except BrokenPipeError:
            raise
        except OSError as e:
            raise OutputError(f"cannot write to stdout: {e.strerror or e}; the output is incomplete") from None


def _check_stdout() -> None:
    """Put stdout behind _CheckedWriter when it is a real file, keeping its text settings;
    unbuffered runs (PYTHONUNBUFFERED) flush at each line and each binary write."""
    stream = sys.stdout
    buffer = getattr(stream, "buffer", None)
    raw = getattr(buffer, "raw", buffer)
    if not isinstance(raw, io.FileIO):
        return
    unbuffered = not isinstance(buffer, io.BufferedWriter)
    writer = _CheckedWriter(raw)
    sys.stdout = io.TextIOWrapper(writer, encoding=stream.encoding, errors=stream.errors,
                                  line_buffering=unbuffered or stream.line_buffering, write_through=True)  # fmt: skip


def _flush_stdout(report: bool = True) -> int | None:
    """Flush stdout before exiting: None when all was written, else the exit code of the
    one-line error that was printed (when `report`: a run that failed already said why)."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except OSError as e:
        if report:
            typer.echo(f"vae: error: {e if isinstance(e, OutputError) else f'cannot write to stdout: {e.strerror or e}'}", err=True)
        _silence_stdout()
        return OutputError.exit_code
    return None


def one_line_warning(message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
    """A library's warning as one line on stderr, without its source path and line."""
    text = " ".join(str(message).split())
    try:
        sys.stderr.write(f"vae: warning: {text}\n")
    except (OSError, ValueError):
        pass


def main() -> None:
    warnings.showwarning = one_line_warning
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _raise_terminated)
    _check_stdout()
    app(prog_name="vae")


if __name__ == "__main__":
    sys.exit(main())
