"""Training from an image folder without holding it in memory: peak memory and images/s.

    python benchmarks/streaming.py --images 20000 [--workers 2] [--repeats 3] [--folder DIR]

Writes `--images` PNGs (Fashion-MNIST training images, cycled, in class sub-folders) unless
--folder already holds them, then measures in fresh processes, `--repeats` times each:
- stream: one epoch of `train()` on the folder (lazy decoding, `--workers` DataLoader
  workers; tiny model, so the data path is what is measured): images/s of the epoch and peak
  RSS of the trainer plus its workers;
- in-memory reference: torch imported, then the whole folder decoded into one array (what
  training did first before streaming): peak RSS only.
At small image sizes the data is a few MB and torch's own footprint dominates both figures.
Prints medians and the ratio of peak memory, as JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
mode, folder, out, workers = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
result = {}
if mode == "stream":
    from vaesdk.training.config import ModelConfig, TrainConfig
    from vaesdk.training.train import train
    config = TrainConfig(model=ModelConfig(latent_dim=8, widths=(8, 16, 32), covariance="diagonal", rank=0, likelihood="discretized"),
                         dataset="folder", data_dir=folder, out_dir=out, max_epochs=1, batch_size=256, num_workers=workers,
                         num_threads=1, val_fraction=0.01)
    train(config, log=lambda s: None)
    meta = json.load(open(out + "/checkpoint.json"))
    result["train_images"] = meta["dataset"]["train_images"]
    result["epoch_seconds"] = meta["history"][0]["seconds"]
    result["images_per_s"] = result["train_images"] / result["epoch_seconds"]
else:
    import torch  # both sides pay for torch's own footprint; the difference is the data
    from vaesdk.evaluation.datasets import load_image_folder
    t0 = time.perf_counter()
    data = load_image_folder(folder, 28, 1)
    result["images"] = len(data)
    result["load_seconds"] = time.perf_counter() - t0
# ru_maxrss is KiB on Linux; workers are children (their peak, not a sum at one moment).
result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
result["peak_rss_children_mib"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(json.dumps(result))
"""


def write_folder(folder: Path, count: int) -> None:
    from vaesdk.evaluation.datasets import load_fashion_mnist
    from vaesdk.imaging.images import save_png

    data = load_fashion_mnist(split="train")
    for i in range(count):
        j = i % len(data)
        sub = folder / data.class_names[int(data.labels[j])]
        sub.mkdir(parents=True, exist_ok=True)
        save_png(sub / f"{i:07d}.png", data.images[j])


def measure(mode: str, folder: Path, workers: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run([sys.executable, "-c", CHILD, mode, str(folder), str(Path(tmp) / "run"), str(workers)],
                              capture_output=True, text=True, check=True)  # fmt: skip
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--folder", type=Path, help="reuse (or create) the PNG folder here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        folder = args.folder or Path(tmp) / "pngs"
        if not folder.is_dir() or not any(folder.rglob("*.png")):
            t0 = time.perf_counter()
            write_folder(folder, args.images)
            print(f"wrote {args.images} PNGs in {time.perf_counter() - t0:.0f}s", file=sys.stderr)
        runs = {mode: [measure(mode, folder, args.workers) for _ in range(args.repeats)] for mode in ("stream", "in-memory")}
    med = lambda mode, key: statistics.median(r[key] for r in runs[mode])  # noqa: E731
    # Upper bound of the whole job: the trainer's peak plus every worker at the largest one's peak.
    stream_peak = med("stream", "peak_rss_mib") + max(args.workers, 0) * med("stream", "peak_rss_children_mib")
    report = {
        "images": args.images,
        "workers": args.workers,
        "repeats": args.repeats,
        "stream_images_per_s": round(med("stream", "images_per_s"), 1),
        "stream_peak_rss_mib": round(med("stream", "peak_rss_mib"), 1),
        "stream_worker_peak_rss_mib": round(med("stream", "peak_rss_children_mib"), 1),
        "in_memory_peak_rss_mib": round(med("in-memory", "peak_rss_mib"), 1),
        "in_memory_load_seconds": round(med("in-memory", "load_seconds"), 1),
        "stream_job_peak_rss_mib_upper_bound": round(stream_peak, 1),
        "peak_memory_ratio_stream_vs_in_memory": round(stream_peak / med("in-memory", "peak_rss_mib"), 3),
        "runs": runs,
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
