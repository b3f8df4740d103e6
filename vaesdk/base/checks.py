"""The value checks every layer shares: an integer in a range, a finite number.

Kept apart from the model's argument rules (`arguments.py`) so that image reading, input
batching and the grid maker, which sit below the model, check values with the same words.
"""

from __future__ import annotations

import math
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
