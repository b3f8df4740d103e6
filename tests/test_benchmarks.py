"""The benchmark suite runs on any bundle: a smoke run of benchmarks/run.py on the tiny
committed bundles (8 latents, a three-output low-rank decoder, a plain autoencoder), so that
sizes or outputs hard-coded for one model make it fail here. Not a timing test: it checks
that every figure is there and well-formed, never how large it is."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def untrained_checkpoint(bundle: Path, run_dir: Path) -> Path:
    """A run folder with the bundle's model configuration and freshly initialised weights: the
    torch runner times the same architecture (its weights do not matter to a smoke run)."""
    from vaesdk.training.config import ModelConfig
    from vaesdk.training.model import VAE
    from vaesdk.training.train import BEST_WEIGHTS, CHECKPOINT_JSON, save_weights

    config = json.loads((bundle / "manifest.json").read_text())["training"]["config"]
    run_dir.mkdir(parents=True)
    (run_dir / CHECKPOINT_JSON).write_text(json.dumps({"config": config}))
    save_weights(run_dir / BEST_WEIGHTS, VAE(ModelConfig.from_record(config["model"])))
    return run_dir


@pytest.mark.parametrize("name", ["tiny-lowrank", "tiny-ae"])
def test_the_benchmark_suite_runs_on_any_bundle(name, tmp_path):
    bundle = ROOT / "tests" / "data" / name
    facts = json.loads((bundle / "manifest.json").read_text())
    checkpoint = untrained_checkpoint(bundle, tmp_path / "run")
    out = tmp_path / "results.json"
    args = ["--model", bundle, "--checkpoint", checkpoint, "--quick", "--batches", "1,3", "--process-runs", "1", "--out", out]
    r = subprocess.run([sys.executable, ROOT / "benchmarks" / "run.py", *map(str, args)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads(out.read_text())
    ops = ["encode", "decode", "sample"] if facts["kind"] == "vae" else ["encode", "decode"]
    want = {(op, b, runner) for op in ops for b in (1, 3) for runner in ("vaesdk", "onnxruntime", "torch")}
    assert {(c["op"], c["batch"], c["runner"]) for c in result["calls"]} == want
    for c in result["calls"]:
        assert 0 < c["median_ms"] <= c["p95_ms"] and c["calls"] >= 5, c
    assert result["model"] == facts["name"] and result["batches"] == [1, 3]
    assert result["command"].startswith("python benchmarks/run.py --model ")
    assert all(p["runs"] == 1 and p["median_s"] > 0 for p in result["processes"].values())
    rows = [line for line in r.stdout.splitlines() if line.startswith(("| encode |", "| decode |", "| sample |"))]
    assert len(rows) == 2 * len(ops), r.stdout


def test_the_suite_refuses_a_bundle_without_a_checkpoint(tmp_path):
    bundle = ROOT / "tests" / "data" / "tiny-vae"
    r = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--model", str(bundle), "--quick", "--out", str(tmp_path / "r.json")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 2 and "no training checkpoint at" in r.stderr and "--checkpoint RUN_DIR" in r.stderr
