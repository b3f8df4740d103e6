"""What vaesdk's own front ends (the `vae` CLI and `vae serve`) share beyond the public API:
plumbing and defaults that a user of the library does not need. Internal: names here may
change between releases; the boundary test (tests/test_cli_boundary.py) keeps the front
ends to `vaesdk.__all__`, `vaesdk.base.errors` and this module.
"""

from __future__ import annotations

from .base.checks import JOB_SEED_MAX, SEED_MIN, fresh_seed, number, positive_int
from .bundle.geometry import MAX_IMAGE_SIDE, Geometry
from .bundle.registry import resolve as resolve_bundle
from .maths.anomaly import check_flag
from .runtime.arguments import MAX_IW_SAMPLES, MAX_SAMPLES, MAX_STEPS, MAX_TEMPERATURE
from .evaluation.evaluate import DEFAULT_EVAL_K
from .base.fileio import write_atomic
from .imaging.inputs import expand_sources
from .jobs.blocks import BLOCK_SIZE, score_report
from .maths.latent import ACTIVE_KL_NATS, MAX_ABS_LATENT
from .runtime.session import cancellable
from .runtime.calibration import calibrate_bundle
from .imaging.images import IMAGE_SUFFIXES, image_files, read_stream
from .jobs.shards import DEFAULT_SHARD_SIZE
from .bundle.triton import TritonSettings, write_triton_repository

__all__ = [
    "IMAGE_SUFFIXES",
    "ACTIVE_KL_NATS",
    "DEFAULT_EVAL_K",
    "DEFAULT_SHARD_SIZE",
    "JOB_SEED_MAX",
    "MAX_ABS_LATENT",
    "MAX_IMAGE_SIDE",
    "Geometry",
    "MAX_IW_SAMPLES",
    "MAX_SAMPLES",
    "MAX_STEPS",
    "MAX_TEMPERATURE",
    "BLOCK_SIZE",
    "SEED_MIN",
    "TritonSettings",
    "calibrate_bundle",
    "cancellable",
    "check_flag",
    "expand_sources",
    "fresh_seed",
    "image_files",
    "number",
    "positive_int",
    "resolve_bundle",
    "write_triton_repository",
    "read_stream",
    "score_report",
    "write_atomic",
]
