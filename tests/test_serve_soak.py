"""A short run of the soak (benchmarks/soak.py; the full one is 10 minutes): 32 polite
clients on mixed routes, the slow-HTTP mix for part of it against shortened deadlines. No
answer other than the SDK's (a 503 only with Retry-After), and the server's RSS and open file
descriptors at the end within 10 % of their values after warm-up."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import soak  # noqa: E402


@pytest.mark.slow
def test_short_soak_with_the_hostile_mix(bundled_model, monkeypatch):
    x = soak.expectations(bundled_model)
    # The hostile check's own length, scaled to the shortened deadlines (2 s and 4 s).
    monkeypatch.setattr(soak, "hostile_check", lambda base, x, _check=soak.hostile_check: _check(base, x, seconds=8.0))
    with soak.server_process("--header-timeout", "2", "--body-timeout", "4") as (proc, base):
        result = soak.soak(base, proc.pid, x, clients=32, seconds=40.0, warmup_s=10.0, hostile_at_s=15.0, max_requests=2000)
    print(f"\nshort soak: {result}")
    assert result["requests"] >= 32 and result["stuck_clients"] == 0, result
    assert result["errors"] == 0, (result["wrong"], result["lost"])
    assert not any(int(s) >= 500 and s != "503" for s in result["statuses"]), result["statuses"]
    assert result["hostile"]["polite_ok_share"] >= 0.95 and result["hostile"]["held_share"] <= 0.05, result["hostile"]
    assert abs(result["rss_change"]) <= 0.10 and abs(result["fd_change"]) <= 0.10, (result["warm"], result["end"])
