"""Batch commands over a folder, end to end, against the model alone: images/s.

    python benchmarks/folder_throughput.py [--images 10000] [--repeats 3] [--commands embed,score,reconstruct]

Writes `--images` PNGs (Fashion-MNIST test images, cycled) into a temporary folder (or
--folder), then, `--repeats` times in alternating rounds:
- end to end: `vae COMMAND FOLDER` in a fresh process, files in -> outputs written
  (embed: features.npy; score: scores.csv; reconstruct: one PNG per input), process start
  and model loading included; with the default decoding pool and with `--workers 1`
  (decoding in the model's thread, as before the pool); and the marginal rate, from the
  difference between the whole folder's time and a tenth of it's (the process start and the
  model loading cancel out: the rate a long job runs at);
- model only: the same SDK call on the images already decoded in memory, same batch size
  (embed: Model.encode; score: Model.score, k=1; reconstruct: Model.reconstruct), in a
  fresh process, timed around the call only.
Prints medians, the spread and the ratio end-to-end / model-only (of the medians, and the
median of each round's own ratio) as JSON (and writes it to --json-out when given).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODEL_ONLY = r"""
import json, sys, time
import numpy as np
import vaesdk
command, folder, model, batch = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
m = vaesdk.load(model, device="cpu", batch_size=batch)
images = np.concatenate([b.images for b in vaesdk.read_inputs([folder], m, 4096)])
t0 = time.perf_counter()
if command == "embed":
    m.encode(images)
elif command == "score":
    m.score(images, k=1, seed=0)
else:
    m.reconstruct(images)
print(json.dumps({"images": len(images), "seconds": time.perf_counter() - t0}))
"""


def write_folder(folder: Path, count: int) -> None:
    from vaesdk.evaluation.datasets import load_fashion_mnist
    from vaesdk.imaging.images import save_png

    data = load_fashion_mnist(split="test").images
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        save_png(folder / f"img{i:06d}.png", data[i % len(data)])


def end_to_end(command: str, folder: Path, model: str, batch: int, workers: int | None, scratch: Path) -> float:
    out = Path(tempfile.mkdtemp(dir=scratch))
    args = [sys.executable, "-m", "vaesdk.cli.main", command, str(folder), "-m", model, "--device", "cpu", "--batch-size", str(batch)]
    if command == "embed":
        args += ["-o", str(out / "features.npy")]
    elif command == "score":
        args += ["-o", str(out / "scores.csv")]
    else:
        args += ["--out-dir", str(out)]
    if workers is not None:
        args += ["--workers", str(workers)]
    t0 = time.perf_counter()
    subprocess.run(args, check=True, capture_output=True)
    seconds = time.perf_counter() - t0
    subprocess.run(["rm", "-rf", str(out)], check=True)
    return seconds


def model_only(command: str, folder: Path, model: str, batch: int) -> tuple[int, float]:
    r = subprocess.run([sys.executable, "-c", MODEL_ONLY, command, str(folder), model, str(batch)], check=True, capture_output=True, text=True)
    got = json.loads(r.stdout.strip().splitlines()[-1])
    return got["images"], got["seconds"]


def summary(rates: list[float]) -> dict:
    return {"median": statistics.median(rates), "min": min(rates), "max": max(rates), "runs": len(rates)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--model", default="fashion-mnist")
    parser.add_argument("--commands", default="embed,score,reconstruct")
    parser.add_argument("--folder", type=Path, help="Reuse (or fill) this folder instead of a temporary one.")
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="vaesdk-folder-bench-") as tmp:
        scratch = Path(tmp)
        folder = args.folder or scratch / "images"
        if not folder.exists() or sum(1 for _ in folder.glob("*.png")) < args.images:
            write_folder(folder, args.images)
        n = sum(1 for _ in folder.glob("*.png"))
        # A tenth of the folder (hard links): the difference of the two runs' times is the
        # marginal rate, without process start and model loading.
        small = scratch / "small"
        small.mkdir()
        for f in sorted(folder.glob("*.png"))[: n // 10]:
            os.link(f, small / f.name)
        n_small = n // 10
        results: dict = {"images": n, "batch_size": args.batch_size, "model": args.model, "cpus": os.cpu_count(), "commands": {}}
        for command in args.commands.split(","):
            pooled, single, model, marginal = [], [], [], []
            for _ in range(args.repeats):  # alternating rounds: load from other work hits all of them alike
                images, seconds = model_only(command, folder, args.model, args.batch_size)
                model.append(images / seconds)
                whole = end_to_end(command, folder, args.model, args.batch_size, None, scratch)
                part = end_to_end(command, small, args.model, args.batch_size, None, scratch)
                pooled.append(n / whole)
                marginal.append((n - n_small) / (whole - part))
                single.append(n / end_to_end(command, folder, args.model, args.batch_size, 1, scratch))
            entry = {
                "model_only_images_per_s": summary(model),
                "end_to_end_images_per_s": summary(pooled),
                "end_to_end_workers_1_images_per_s": summary(single),
                "end_to_end_marginal_images_per_s": summary(marginal),
            }
            entry["end_to_end_over_model_only"] = entry["end_to_end_images_per_s"]["median"] / entry["model_only_images_per_s"]["median"]
            entry["workers_1_over_model_only"] = entry["end_to_end_workers_1_images_per_s"]["median"] / entry["model_only_images_per_s"]["median"]
            # The ratio within each round too: on a shared machine, load drifts between rounds.
            entry["end_to_end_over_model_only_per_round"] = summary([p / m for p, m in zip(pooled, model)])
            entry["marginal_over_model_only_per_round"] = summary([p / m for p, m in zip(marginal, model)])
            results["commands"][command] = entry
            print(json.dumps({command: entry}), file=sys.stderr)
    text = json.dumps(results, indent=2)
    print(text)
    if args.json_out:
        args.json_out.write_text(text + "\n")


if __name__ == "__main__":
    main()
