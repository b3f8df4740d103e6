"""The error hierarchy. Every error vaesdk raises on purpose is a `VaesdkError`.

Each subclass also derives from the closest built-in exception, so callers that already
catch `ValueError`, `LookupError` or `OSError` keep working.
"""

from __future__ import annotations


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


def require_train_extra(exc: ImportError) -> MissingDependencyError:
    """The error to raise when torch, onnx or safetensors is missing."""
    return MissingDependencyError(
        f"{exc.name or 'a training dependency'} is not installed; training and export need the train extra: "
        "pip install 'torch==2.13.0' && pip install 'vaesdk[train]' (from a source checkout: pip install '.[train]')"
    )
