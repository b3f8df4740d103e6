"""vaesdk: run exported variational autoencoders with numpy + onnxruntime, no torch.

    import vaesdk
    model = vaesdk.load()                  # the bundled Fashion-MNIST VAE
    images = model.sample(16, seed=0)      # uint8 [16, 28, 28, 1]
    edited = model.edit("docs/images/inputs/sneaker.png", dim=3, delta=2.0)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .requirements import require_runtime

require_runtime()  # one line naming what is missing, instead of a traceback from deep inside

from .base.errors import (
    BundleError,
    DeviceUnavailableError,
    InferenceError,
    InvalidArgumentError,
    InvalidImageError,
    MissingDependencyError,
    ModelNotFoundError,
    OutputError,
    UnsupportedOperationError,
    VaesdkError,
)
from .imaging.images import encode_png, make_grid, save_png, to_pil
from .imaging.inputs import InputBatch, InputItem, read_inputs
from .jobs.runner import run_job
from .jobs.blocks import JobResult
from .maths.latent import Posterior, RandomStreams
from .runtime.loader import load
from .runtime.model import DEFAULT_BATCH, DEFAULT_IW_SAMPLES, Model, Traversal
from .runtime.spatial import Decoded, SpatialModel
from .runtime.scoring import Scores
from .runtime.per_image import ImageResult, map_images
from .bundle.registry import DEFAULT_MODEL, list_models
from .runtime.session import available_providers
from .version import __version__

if TYPE_CHECKING:  # the evaluation layer loads on first use of `vaesdk.evaluate_dataset`
    from .evaluation.evaluate import evaluate_dataset


__all__ = [
    "load",
    "list_models",
    "available_providers",
    "Model",
    "SpatialModel",
    "Posterior",
    "Decoded",
    "Scores",
    "Traversal",
    "RandomStreams",
    "read_inputs",
    "InputBatch",
    "InputItem",
    "map_images",
    "ImageResult",
    "run_job",
    "JobResult",
    "evaluate_dataset",
    "make_grid",
    "encode_png",
    "save_png",
    "to_pil",
    "DEFAULT_MODEL",
    "DEFAULT_BATCH",
    "DEFAULT_IW_SAMPLES",
    "VaesdkError",
    "BundleError",
    "ModelNotFoundError",
    "InvalidArgumentError",
    "InvalidImageError",
    "UnsupportedOperationError",
    "DeviceUnavailableError",
    "InferenceError",
    "OutputError",
    "MissingDependencyError",
    "__version__",
]


def __getattr__(name: str) -> Any:
    if name == "evaluate_dataset":
        from .evaluation.evaluate import evaluate_dataset

        return evaluate_dataset
    raise AttributeError(f"module 'vaesdk' has no attribute {name!r}")
