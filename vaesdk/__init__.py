"""vaesdk: run exported variational autoencoders with numpy + onnxruntime, no torch.

    import vaesdk
    model = vaesdk.load()                  # the bundled Fashion-MNIST VAE
    images = model.sample(16, seed=0)      # uint8 [16, 28, 28, 1]
    edited = model.edit("shoe.png", dim=3, delta=2.0)
"""

from __future__ import annotations

from .requirements import require_runtime

require_runtime()  # one line naming what is missing, instead of a traceback from deep inside

from .errors import (
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
from .evaluate import evaluate_dataset
from .images import encode_png, make_grid, save_png, to_pil
from .inputs import InputBatch, InputItem, read_inputs
from .job_runner import run_job
from .jobs import JobResult
from .latent import Posterior, RandomStreams
from .loader import load
from .model import DEFAULT_BATCH, DEFAULT_IW_SAMPLES, Model, Scores, Traversal
from .per_image import ImageResult, map_images
from .registry import DEFAULT_MODEL, list_models
from .session import available_providers
from .version import __version__


__all__ = [
    "load",
    "list_models",
    "available_providers",
    "Model",
    "Posterior",
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
