"""vaesdk: run exported variational autoencoders with numpy + onnxruntime, no torch.

    import vaesdk
    model = vaesdk.load()                  # the bundled Fashion-MNIST VAE
    images = model.sample(16, seed=0)      # uint8 [16, 28, 28, 1]
    edited = model.edit("shoe.png", dim=3, delta=2.0)
"""

from __future__ import annotations

import os

from .bundle import read_bundle
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
from .fileio import write_atomic
from .images import encode_png, make_grid, save_png, to_pil
from .inputs import InputBatch, InputItem, expand_sources, read_inputs
from .anomaly import check_flag
from .jobs import SEED_BLOCK, JobResult, run_job, score_report
from .evaluate import DEFAULT_EVAL_K, evaluate_dataset
from .latent import ACTIVE_KL_NATS, Posterior, RandomStreams
from .model import DEFAULT_BATCH, DEFAULT_IW_SAMPLES, Model, Scores, Traversal
from .shards import DEFAULT_SHARD_SIZE, run_sharded
from .registry import DEFAULT_MODEL, list_models, resolve
from .session import available_providers
from .version import __version__


def load(
    name_or_path: str | os.PathLike | None = None,
    device: str = "auto",
    *,
    threads: int | None = None,
    batch_size: int = DEFAULT_BATCH,
    verify: bool = True,
) -> Model:
    """Load a bundled model by name (default 'fashion-mnist') or a bundle folder by path.

    device: 'auto' (CUDA when its provider really runs, else CPU), 'cuda', 'cuda:N' or 'cpu'.
    verify=False skips only the size and sha256 checks of the model files; never use it on
    bundles from sources you do not trust.
    """
    return Model(read_bundle(resolve(name_or_path), verify=verify), device, threads=threads, batch_size=batch_size)


__all__ = [
    "load",
    "list_models",
    "Model",
    "Posterior",
    "RandomStreams",
    "Scores",
    "Traversal",
    "make_grid",
    "encode_png",
    "available_providers",
    "DEFAULT_BATCH",
    "read_inputs",
    "expand_sources",
    "InputBatch",
    "InputItem",
    "save_png",
    "to_pil",
    "write_atomic",
    "run_job",
    "score_report",
    "check_flag",
    "run_sharded",
    "JobResult",
    "evaluate_dataset",
    "DEFAULT_EVAL_K",
    "ACTIVE_KL_NATS",
    "DEFAULT_MODEL",
    "DEFAULT_IW_SAMPLES",
    "DEFAULT_SHARD_SIZE",
    "SEED_BLOCK",
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
