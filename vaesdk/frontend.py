"""What vaesdk's own front ends (the `vae` CLI and `vae serve`) share beyond the public API:
plumbing and defaults that a user of the library does not need. Internal: names here may
change between releases; the boundary test (tests/test_cli_boundary.py) keeps the front
ends to `vaesdk.__all__`, `vaesdk.errors` and this module.
"""

from __future__ import annotations

from .anomaly import check_flag
from .arguments import MAX_TEMPERATURE
from .evaluate import DEFAULT_EVAL_K
from .fileio import write_atomic
from .inputs import expand_sources
from .jobs import SEED_BLOCK, score_report
from .latent import ACTIVE_KL_NATS, MAX_ABS_LATENT, fresh_seed
from .session import cancellable
from .shards import DEFAULT_SHARD_SIZE

__all__ = [
    "ACTIVE_KL_NATS",
    "DEFAULT_EVAL_K",
    "DEFAULT_SHARD_SIZE",
    "MAX_ABS_LATENT",
    "MAX_TEMPERATURE",
    "SEED_BLOCK",
    "cancellable",
    "check_flag",
    "expand_sources",
    "fresh_seed",
    "score_report",
    "write_atomic",
]
