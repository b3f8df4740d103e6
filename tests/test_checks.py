"""The value rules with one home each (vaesdk/base/checks.py, vaesdk/runtime/arguments.py):
the seed rule and the temperature bound, and the copies outside Python held to them."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from vaesdk import InvalidArgumentError, frontend
from vaesdk.base import checks
from vaesdk.runtime import arguments

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("seed", [0, 1, np.int64(7), checks.JOB_SEED_MAX, 2**70])
def test_a_seed_is_any_integer_from_zero(seed):
    assert checks.check_seed_value(seed) == int(seed)
    assert arguments.check_seed(seed) == int(seed)


@pytest.mark.parametrize("seed", [-1, True, 1.0, "3", None])
def test_other_seeds_are_refused_with_the_one_message(seed):
    with pytest.raises(InvalidArgumentError, match="seed must be a non-negative integer or a numpy Generator"):
        checks.check_seed_value(seed)


def test_a_jobs_seed_is_bounded():
    assert checks.check_job_seed(checks.JOB_SEED_MAX) == 2**63 - 1
    with pytest.raises(InvalidArgumentError, match=rf"seed must be in 0\.\.{checks.JOB_SEED_MAX}, got {2**63}"):
        checks.check_job_seed(2**63)
    with pytest.raises(InvalidArgumentError, match="seed must be an integer"):
        checks.check_job_seed(True)


def test_a_fresh_seed_is_small_enough_to_type_back():
    seeds = {checks.fresh_seed() for _ in range(100)}
    assert all(0 <= s < 2**checks.FRESH_SEED_BITS for s in seeds) and len(seeds) > 90
    assert frontend.fresh_seed is checks.fresh_seed and frontend.JOB_SEED_MAX == checks.JOB_SEED_MAX


def test_the_temperature_bound_is_stated_as_the_sdk_checks_it():
    bound = f"{arguments.MAX_TEMPERATURE:g}"
    arguments.check_temperature(arguments.MAX_TEMPERATURE)
    with pytest.raises(InvalidArgumentError, match=rf"temperature must be in 0\.\.{bound} "):
        arguments.check_temperature(np.nextafter(arguments.MAX_TEMPERATURE, np.inf))
    page = (ROOT / "web" / "vae.js").read_text(encoding="utf-8")
    assert re.findall(r"temperature <= (\d+(?:\.\d+)?)", page) == [bound]
    assert re.findall(r"temperature must be in 0\.\.(\d+)", page) == [bound]
    spec = (ROOT / "docs" / "bundle-format.md").read_text(encoding="utf-8")
    assert re.findall(r"`temperature` 1 \(allowed 0\.\.(\d+)", spec) == [bound]
    assert frontend.MAX_TEMPERATURE == arguments.MAX_TEMPERATURE
