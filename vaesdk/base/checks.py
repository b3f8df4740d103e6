"""The value checks every layer shares: an integer in a range, a finite number, a seed.

Kept apart from the model's argument rules (`arguments.py`) so that image reading, input
batching and the grid maker, which sit below the model, check values with the same words.
The seed rule lives here, once, for every layer and front end: the latent maths, the
model's operations, batch jobs, the CLI's `--seed` and the service's contract.
"""

from __future__ import annotations

import math
import secrets
from typing import Any

import numpy as np

from .errors import InvalidArgumentError


def positive_int(name: str, value: Any, maximum: int, minimum: int = 1, hint: str = "") -> int:
    """`value` as an int in minimum..maximum (bools refused: True is not a count). `hint`
    follows the range in the message, e.g. "(or None for one per core)"."""
    where = f"{minimum}..{maximum}{f' {hint}' if hint else ''}"
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InvalidArgumentError(f"{name} must be an integer in {where}, got {value!r:.80}")
    if not minimum <= value <= maximum:
        raise InvalidArgumentError(f"{name} must be in {where}, got {value}")
    return int(value)


def number(name: str, value: Any) -> float:
    """A finite real number (bools and strings refused: True is not a delta)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InvalidArgumentError(f"{name} must be a number, got {value!r:.80}")
    try:
        v = float(value)
    except OverflowError:
        v = math.inf
    if not math.isfinite(v):
        raise InvalidArgumentError(f"{name} must be finite, got {value!r:.80}")
    return v


# ---- seeds --------------------------------------------------------------------------------
# A seed is an integer >= SEED_MIN (bools refused); numpy seeds a generator from any such
# integer. A batch job's seed (`vaesdk.run_job`, `vae score --seed`, the service's score route)
# is also at most JOB_SEED_MAX, a signed 64-bit integer. A seed drawn for a run that was given
# none has FRESH_SEED_BITS bits: small enough to type back.
SEED_MIN = 0
JOB_SEED_MAX = 2**63 - 1
FRESH_SEED_BITS = 31


def fresh_seed() -> int:
    """A new seed for a run that was given none: small enough to type back (0..2**31-1), so
    a front end can report it and the run can be repeated."""
    return secrets.randbits(FRESH_SEED_BITS)


def check_seed_value(seed: object) -> int:
    """An integer seed, checked: an int >= 0 (bools refused), with the message every layer
    gives (`arguments.check_seed`, the random streams of `maths.latent`)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < SEED_MIN:
        raise InvalidArgumentError(f"seed must be a non-negative integer or a numpy Generator, got {seed!r:.80}")
    return int(seed)


def check_job_seed(seed: object) -> int:
    """A batch job's seed: an int in SEED_MIN..JOB_SEED_MAX (bools refused)."""
    return positive_int("seed", seed, JOB_SEED_MAX, minimum=SEED_MIN)
