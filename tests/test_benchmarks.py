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


@pytest.mark.train  # the torch runner, and onnx for the FLOP count
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
    want |= {("sample", b, "prior") for b in (1, 3) if "sample" in ops}  # the prior's own draw
    assert result["batches"] == [1, 3] and [e["model"] for e in result["models"]] == [facts["name"]]
    (entry,) = result["models"]
    assert {(c["op"], c["batch"], c["runner"]) for c in entry["calls"]} == want
    for c in entry["calls"]:
        assert 0 < c["median_ms"] <= c["p95_ms"] and c["calls"] >= 5, c
    assert result["command"].startswith("python benchmarks/run.py --model ")
    assert all(p["runs"] == 1 and p["median_s"] > 0 for p in entry["processes"].values())
    # Ratios against torch and the bare session.run, for every op and batch timed.
    assert set(entry["ratios"]) == set(ops) and all(set(r) == {"1", "3"} for r in entry["ratios"].values())
    assert all(v["vs_torch"] > 0 and v["vs_bare"] > 0 for r in entry["ratios"].values() for v in r.values())
    # sample against the bare run plus the prior's draw: in the JSON and as one row per batch.
    assert all(v["vs_bare_and_prior"] > 0 for v in entry["ratios"].get("sample", {}).values())
    draw_rows = [line for line in r.stdout.splitlines() if line.startswith((f"| {facts['name']} | 1 |", f"| {facts['name']} | 3 |"))]
    assert len(draw_rows) == (2 if "sample" in ops else 0), r.stdout
    # The peak is measured in every round; the decoder's FLOPs come from its graph.
    peak = result["peak"]
    assert len(peak["rounds"]) == result["rounds"] == 1
    assert peak["gflops"] == max(peak["matmul_gflops"], peak["conv_gflops"]) > 0
    assert entry["decoder"]["flops_per_image"] == sum(entry["decoder"]["by_op"].values()) > 0
    assert set(entry["decoder"]["by_op"]) <= {"Conv", "ConvTranspose", "Gemm", "MatMul"}
    a = entry["arithmetic"]
    assert a["batch"] == 3 and a["decode_gflops"] > 0 and a["fraction_of_peak"] == a["decode_gflops"] / peak["gflops"]
    rows = [line for line in r.stdout.splitlines() if line.startswith(("| encode |", "| decode |", "| sample |"))]
    assert len(rows) == 2 * len(ops), r.stdout
    ratio_rows = [line for line in r.stdout.splitlines() if line.startswith((f"| {facts['name']} | decode |", f"| {facts['name']} | sample |"))]
    assert len(ratio_rows) == len({"decode", "sample"} & set(ops)), r.stdout
    assert "% of peak" in r.stdout and "GFLOP/s" in r.stdout, r.stdout


@pytest.mark.train  # onnx
def test_the_decoder_flops_are_counted_from_the_graph():
    """tiny-ae's decoder (shapes from its graph): a Gemm from 8 latents to 8x7x7, transposed
    convolutions 8->8 and 8->4 (4x4 kernels, stride 2) to 14x14 and 28x28, and a Conv 4->1
    (3x3) at 28x28. A multiply-add is 2 FLOPs; a transposed convolution's input value feeds
    C_out x kh x kw outputs."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from run import decoder_flops

    counted = decoder_flops(ROOT / "tests" / "data" / "tiny-ae")
    assert counted["by_op"] == {
        "Gemm": 2 * 392 * 8,
        "ConvTranspose": 2 * (8 * 7 * 7) * (8 * 4 * 4) + 2 * (8 * 14 * 14) * (4 * 4 * 4),
        "Conv": 2 * (1 * 28 * 28) * (4 * 3 * 3),
    }
    assert counted["nodes"] == 4 and counted["flops_per_image"] == sum(counted["by_op"].values())

def test_the_suite_refuses_a_bundle_without_a_checkpoint(tmp_path):
    bundle = ROOT / "tests" / "data" / "tiny-vae"
    r = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--model", str(bundle), "--quick", "--out", str(tmp_path / "r.json")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 2 and "no training checkpoint at" in r.stderr and "--checkpoint RUN_DIR" in r.stderr


@pytest.mark.train  # onnx, for onnxruntime's float16 conversion
def test_the_gpu_benchmark_rehearses_on_the_cpu(tmp_path):
    """benchmarks/cuda.py runs once where a GPU is lent; --device cpu runs every step of it here
    (SDK calls, IO binding in float32 and float16, PyTorch eager, cold start)."""
    import onnxruntime

    out = tmp_path / "cuda.json"
    script = str(ROOT / "benchmarks" / "cuda.py")
    args = [sys.executable, script, "--device", "cpu", "--quick", "--model", "fashion-mnist", "--out", str(out)]
    r = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    entry = json.loads(out.read_text())["models"]["fashion-mnist"]
    assert set(entry["calls"]) == {"1", "16"}
    for row in entry["calls"].values():
        for key in ("vaesdk decode", "vaesdk sample", "iobinding-fp32", "iobinding-fp16", "torch decode"):
            assert 0 < row[key]["median_ms"] <= row[key]["p95_ms"] and row[key]["calls"] >= 5, (key, row[key])
        assert 0 < row["fp16 error"]["max_abs"] < 0.05 and 0 <= row["fp16 error"]["uint8_pixels_differing"] < 0.05
    assert entry["cold_start"]["runs"] == 1 and entry["cold_start"]["median_s"] > 0
    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        r = subprocess.run([sys.executable, script, "--out", str(tmp_path / "none.json")], capture_output=True, text=True, timeout=120)
        assert r.returncode == 2 and "no CUDA provider" in r.stderr and "onnxruntime-gpu" in r.stderr, r.stderr
