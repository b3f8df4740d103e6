"""The error hierarchy. Every error vaesdk raises on purpose is a `VaesdkError`.

Each subclass also derives from the closest built-in exception, so callers that already
catch `ValueError`, `LookupError` or `OSError` keep working.

The exit codes of the `vae` command live here too, once: each error class's `exit_code`,
and the command line's own codes (EXIT_CODES lists them all; `vae --help` shows it and
docs/cli.md's table is tested against it).
"""

from __future__ import annotations

from ..version import __version__


class VaesdkError(Exception):
    """Base class; the CLI turns these into one-line messages and exit codes."""

    exit_code = 1

    def __init__(self, message: str = "", *, cli_message: str | None = None):
        # One line, always: values shown in messages (array reprs, file names) may hold newlines.
        message = " ".join(str(message).split())
        super().__init__(message)
        # The same fault in command-line words (--force rather than overwrite=True).
        self.cli_message = " ".join(cli_message.split()) if cli_message else message


class InvalidArgumentError(VaesdkError, ValueError):
    """An argument is out of range or of the wrong kind (dimension, delta, n, steps, ...)."""

    exit_code = 2


class InvalidImageError(VaesdkError, ValueError):
    """An image could not be read or does not fit the model's input policy."""

    exit_code = 3


class BundleError(VaesdkError):
    """A model bundle is missing, malformed, tampered with, or breaks the ONNX contract."""

    exit_code = 4


class ModelNotFoundError(BundleError, LookupError):
    """No bundled model has that name and no bundle exists at that path."""


class UnsupportedOperationError(InvalidArgumentError):
    """The model cannot do this (e.g. prior sampling with a plain autoencoder)."""


class DeviceUnavailableError(VaesdkError, RuntimeError):
    """The requested execution device cannot be used."""

    exit_code = 5


class InferenceError(VaesdkError, RuntimeError):
    """onnxruntime failed while running a graph (e.g. out of GPU memory)."""

    exit_code = 8


class CancelledError(VaesdkError):
    """The caller stopped the work (`session.cancellable`): a server whose client left."""

    exit_code = 9


class OutputError(VaesdkError, OSError):
    """An output could not be written safely (exists, symlink, unwritable, disk full)."""

    exit_code = 6


class MissingDependencyError(VaesdkError, ImportError):
    """An optional dependency (the `train` extra) is not installed."""

    exit_code = 7


# The command line's own exit codes (no error class carries them).
EXIT_SUCCESS = 0
EXIT_INTERRUPTED = 130  # Ctrl-C: 128 + SIGINT
EXIT_BROKEN_PIPE = 141  # the reader of stdout went away: 128 + SIGPIPE
EXIT_TERMINATED = 143  # SIGTERM: 128 + SIGTERM

# Every exit code of `vae`, with what it means, in order.
EXIT_CODES: dict[int, str] = {
    EXIT_SUCCESS: "success",
    VaesdkError.exit_code: "internal error (a bug), or a prompt aborted",
    InvalidArgumentError.exit_code: "bad argument or usage mistake",
    InvalidImageError.exit_code: "bad image",
    BundleError.exit_code: "bad or unknown bundle",
    DeviceUnavailableError.exit_code: "device unavailable",
    OutputError.exit_code: "output not written",
    MissingDependencyError.exit_code: "missing optional dependency",
    InferenceError.exit_code: "inference failure",
    CancelledError.exit_code: "cancelled",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C)",
    EXIT_BROKEN_PIPE: "the reader of the output went away",
    EXIT_TERMINATED: "terminated (SIGTERM)",
}


def error_classes() -> list[type[VaesdkError]]:
    """VaesdkError and every subclass of it defined here, base classes first."""
    out: list[type[VaesdkError]] = [VaesdkError]
    for cls in out:
        out += [sub for sub in cls.__subclasses__() if sub.__module__ == __name__ and sub not in out]
    return out


def install_hint(extra: str) -> str:
    """How to install an optional extra, in one line: vaesdk is installed from its source
    checkout or its wheel (it is not on PyPI)."""
    return f"pip install '.[{extra}]' in a source checkout, or pip install 'vaesdk-{__version__}-py3-none-any.whl[{extra}]' with the wheel"


def require_train_extra(exc: ImportError) -> MissingDependencyError:
    """The error to raise when torch, onnx or safetensors is missing."""
    return MissingDependencyError(
        f"{exc.name or 'a training dependency'} is not installed; training and export need the train extra: "
        f"pip install 'torch==2.13.0', then {install_hint('train')}"
    )
