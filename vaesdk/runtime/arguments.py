"""Argument checks for every model operation, in one place.

`Model.validate(operation, **arguments)` runs them before any image is read or any graph
runs, so the CLI, the server and Python callers refuse a bad argument the same way and at
the same moment; the operations themselves call the same checkers, once each. The checks
read the model's `ModelSpec` (its shapes, priors and directions), never the model itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..base.checks import check_seed_value, number, positive_int
from ..base.errors import InvalidArgumentError
from ..maths.latent import MAX_ABS_LATENT, RandomStreams
from .spec import ModelSpec

MAX_SAMPLES = 100_000  # held in memory at once
MAX_STREAM_SAMPLES = 10_000_000  # produced batch by batch
MAX_STEPS = 1000
MAX_IW_SAMPLES = 10_000
# Importance samples per image when a caller names no k. The anomaly score and its p-value
# need only the first draw (benchmarks/anomaly.py), so the default is the cheapest; callers
# that report the importance-weighted bound itself choose more (`vae eval`: DEFAULT_EVAL_K).
DEFAULT_IW_SAMPLES = 1
# A prior's spread times this stays far inside MAX_ABS_LATENT (|eps| < 40 in float32 draws),
# so a large temperature is refused by name instead of overflowing the latents later. The one
# home of the bound: the service's contract reads it (vaesdk.frontend); the browser page
# (web/vae.js) and the bundle format (docs/bundle-format.md) state it, held to it by tests.
MAX_TEMPERATURE = 1000.0
METHODS = ("slerp", "linear")


def check_delta(value: Any) -> float:
    v = number("delta", value)
    if abs(v) > MAX_ABS_LATENT:
        raise InvalidArgumentError(f"delta must lie within +-{MAX_ABS_LATENT:g}, got {value!r}; use a smaller delta")
    return v


def check_temperature(value: Any) -> float:
    v = number("temperature", value)
    if not 0.0 <= v <= MAX_TEMPERATURE:
        raise InvalidArgumentError(f"temperature must be in 0..{MAX_TEMPERATURE:g} (1 = the prior's own spread), got {value!r}")
    return v


def check_truncation(value: Any) -> float | None:
    if value is None:
        return None
    v = number("truncation", value)
    if v <= 0:
        raise InvalidArgumentError(f"truncation must be a number > 0 (prior standard deviations), got {value!r}")
    return v


def check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise InvalidArgumentError(f"{name} must be True or False, got {value!r:.80}")
    return bool(value)


def check_seed(value: Any) -> Any:
    """An int >= 0, a numpy Generator, a RandomStreams or None (fresh entropy)."""
    if value is None or isinstance(value, (np.random.Generator, RandomStreams)):
        return value
    return check_seed_value(value)


def check_dim(spec: ModelSpec, value: Any) -> int:
    last = spec.latent_dim - 1
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InvalidArgumentError(f"latent dimension must be an integer in 0..{last}, got {value!r:.80}")
    if not 0 <= value <= last:
        raise InvalidArgumentError(f"latent dimension {value} is out of range; this model has dimensions 0..{last}")
    return int(value)


def _as_list(name: str, value: Any, what: str) -> list:
    """A list or tuple or 1-D array as a list; anything else refused, naming `what` it should be."""
    if isinstance(value, np.ndarray):
        if value.ndim != 1:
            raise InvalidArgumentError(f"{name} must be {what}, got an array of shape {value.shape}")
        return value.tolist()
    if not isinstance(value, (list, tuple, range)):
        raise InvalidArgumentError(f"{name} must be {what}, got {value!r:.80}")
    return list(value)


def check_dims(spec: ModelSpec, value: Any) -> list[int] | None:
    if value is None:
        return None
    out = [check_dim(spec, d) for d in _as_list("dims", value, f"a list of latent dimensions in 0..{spec.latent_dim - 1}")]
    if not out:
        raise InvalidArgumentError(f"dims is empty; give latent dimensions in 0..{spec.latent_dim - 1}")
    if len(out) > MAX_STEPS:
        raise InvalidArgumentError(f"dims has {len(out)} entries; at most {MAX_STEPS}")
    return out


def check_values(value: Any) -> np.ndarray:
    """Traversal values, in prior standard deviations: 1..MAX_STEPS finite numbers, in the
    order given (a descending list gives a reversed row)."""
    if value is None:
        return np.linspace(-3.0, 3.0, 7)
    items = _as_list("values", value, f"a list of 1 to {MAX_STEPS} numbers")
    if not 1 <= len(items) <= MAX_STEPS:
        raise InvalidArgumentError(f"values must hold 1 to {MAX_STEPS} numbers, got {len(items)}")
    out = np.array([number("each traversal value", v) for v in items])
    beyond = np.flatnonzero(np.abs(out) > MAX_ABS_LATENT)
    if beyond.size:
        raise InvalidArgumentError(
            f"traversal values must lie within +-{MAX_ABS_LATENT:g}, got values[{beyond[0]}] = {out[beyond[0]]:g}; "
            "give values in prior standard deviations, e.g. -3 to 3"
        )
    return out


def check_method(value: Any) -> str:
    if not isinstance(value, str) or value not in METHODS:
        raise InvalidArgumentError(f"method must be 'slerp' or 'linear', got {value!r:.80}")
    return value


def check_prior(spec: ModelSpec, value: Any) -> str:
    """A prior name of this model; None: its default prior (`PriorSet.default`)."""
    return spec.prior_set.resolve(value)


def edit_target(spec: ModelSpec, dim_: Any, direction: Any) -> tuple[int | None, np.ndarray | None]:
    """Exactly one of a latent dimension or a direction (a name or a vector), resolved."""
    if (dim_ is None) == (direction is None):
        raise InvalidArgumentError(
            "give exactly one of dim (a latent dimension) or direction (a name or vector)",
            cli_message="give exactly one of --dim N or --direction NAME",
        )
    if dim_ is not None:
        return check_dim(spec, dim_), None
    return None, spec.direction_vector(direction)


def _random_parts(spec: ModelSpec, sample_latent: Any = False, sample_pixels: Any = False) -> dict[str, bool]:
    out = {}
    if sample_latent is not None:
        out["sample_latent"] = check_bool("sample_latent", sample_latent)
    out["sample_pixels"] = check_bool("sample_pixels", sample_pixels)
    if out.get("sample_latent") or out["sample_pixels"]:
        spec.require_vae("sampling from q(z|x) or p(x|z)")
    if out["sample_pixels"]:
        spec.require_pixel_draws()
    return out


def _encoder_random_parts(spec: ModelSpec, sample_latent: Any, sample_pixels: Any) -> dict[str, bool]:
    """`_random_parts` of an operation that takes `sample_latent` (edit, reconstruct), where
    None is not "no such argument" but a bad value: refused after sample_pixels is checked."""
    out = _random_parts(spec, sample_latent, sample_pixels)
    if sample_latent is None:
        check_bool("sample_latent", sample_latent)
    return out


def _sample(spec: ModelSpec, n: Any = 16, seed: Any = None, temperature: Any = 1.0, truncation: Any = None,
            sample_pixels: Any = False, prior: Any = None, return_latents: Any = False, stream: bool = False) -> dict[str, Any]:  # fmt: skip
    return {
        "n": positive_int("n", n, MAX_STREAM_SAMPLES if stream else MAX_SAMPLES),
        "return_latents": check_bool("return_latents", return_latents),
        "seed": check_seed(seed),
        "temperature": check_temperature(temperature),
        "truncation": check_truncation(truncation),
        "prior": check_prior(spec, prior),
        **_random_parts(spec, None, sample_pixels),
    }


def _edit(spec: ModelSpec, dim: Any = None, direction: Any = None, delta: Any = 1.0, sample_latent: Any = False,
          sample_pixels: Any = False, seed: Any = None) -> dict[str, Any]:  # fmt: skip
    d, vector = edit_target(spec, dim, direction)
    return {"dim": d, "direction": vector, "delta": check_delta(delta), "seed": check_seed(seed),
            **_encoder_random_parts(spec, sample_latent, sample_pixels)}  # fmt: skip


def _reconstruct(spec: ModelSpec, sample_latent: Any = False, sample_pixels: Any = False, seed: Any = None) -> dict[str, Any]:
    return {"seed": check_seed(seed), **_encoder_random_parts(spec, sample_latent, sample_pixels)}


def _interpolate(spec: ModelSpec, steps: Any = 8, method: Any = "slerp", sample_pixels: Any = False, seed: Any = None) -> dict[str, Any]:
    return {"steps": positive_int("steps", steps, MAX_STEPS, minimum=2), "method": check_method(method),
            "seed": check_seed(seed), **_random_parts(spec, None, sample_pixels)}  # fmt: skip


def _traverse(spec: ModelSpec, dims: Any = None, values: Any = None, max_dims: Any = 8, seed: Any = None,
              prior: Any = None) -> dict[str, Any]:  # fmt: skip
    return {
        "dims": check_dims(spec, dims),
        "values": check_values(values),
        "max_dims": positive_int("max_dims", max_dims, MAX_STEPS),
        "seed": check_seed(seed),
        "prior": check_prior(spec, prior),
    }


def _score(spec: ModelSpec, k: Any = DEFAULT_IW_SAMPLES, seed: Any = 0) -> dict[str, Any]:
    spec.require_vae("scoring likelihoods")
    if isinstance(seed, RandomStreams):
        raise InvalidArgumentError("score draws from one stream; pass an int seed or a numpy Generator")
    return {"k": positive_int("k", k, MAX_IW_SAMPLES), "seed": check_seed(seed)}


def _none(spec: ModelSpec) -> dict[str, Any]:
    return {}


CHECKS_BY_OPERATION: dict[str, Callable[..., dict[str, Any]]] = {
    "sample": _sample,
    "edit": _edit,
    "reconstruct": _reconstruct,
    "interpolate": _interpolate,
    "traverse": _traverse,
    "score": _score,
    "encode": _none,
    "embed": _none,
    "decode": lambda spec, sample_pixels=False, seed=None: {"seed": check_seed(seed), **_random_parts(spec, None, sample_pixels)},
}


def validate(spec: ModelSpec, operation: Any, arguments: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(operation, str) or operation not in CHECKS_BY_OPERATION:
        raise InvalidArgumentError(f"unknown operation {operation!r:.80}; one of: {', '.join(CHECKS_BY_OPERATION)}")
    check = CHECKS_BY_OPERATION[operation]
    try:
        return check(spec, **arguments)
    except TypeError as e:
        # An argument the operation does not take: name it rather than show Python's message.
        unknown = sorted(set(arguments) - set(check.__code__.co_varnames[1 : check.__code__.co_argcount]))
        if unknown and set(unknown) <= {"tile", "tile_size"}:
            raise InvalidArgumentError(f"{' and '.join(unknown)} {'applies' if len(unknown) == 1 else 'apply'} to models with spatial latents; {spec.name!r} has flat latents of one image size") from None
        if unknown:
            raise InvalidArgumentError(f"{operation} takes no argument {', '.join(unknown)}") from None
        raise
