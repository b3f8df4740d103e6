"""Latent-diffusion autoencoders: vaesdk (onnxruntime, CPU) against diffusers in PyTorch eager
on the CPU, on the same weights and the same latents.

    python benchmarks/diffusers_vae.py                  # JSON to benchmarks/diffusers-vae-results.json, table on stdout
    python benchmarks/diffusers_vae.py --quick          # smaller sizes, one run each: a smoke run, not for reporting
    python benchmarks/diffusers_vae.py --quick --small-models --out r.json   # tiny configurations (the test suite's run)
    python benchmarks/diffusers_vae.py --work DIR       # keep the models and bundles in DIR and reuse them next time

Two models, each with random weights (seeded; no weights are downloaded), saved with
`save_pretrained` and exported with `vae export --from diffusers` (a folder of seeded random
images for `--images`):
- an AutoencoderKL with Stable Diffusion's VAE architecture (block_out_channels 128, 256, 512,
  512; layers_per_block 2; 4 latent channels; scaling_factor 0.18215);
- an AutoencoderTiny in its default configuration (TAESD).

Decode only, of one image's latents at a time: 512x512 and 1024x1024 untiled (vaesdk
`tile=False`; diffusers' default), 2048x2048 tiled (vaesdk `tile=True`; diffusers
`enable_tiling()`). Both tile 512 image pixels a side: diffusers' default for both classes
(AutoencoderKL's `sample_size`, AutoencoderTiny's fixed 512) and vaesdk's `tile_size`. Their
overlaps differ where the two allow nothing else: vaesdk's tiles always overlap by a quarter
and cross-fade over it; diffusers' AutoencoderKL tiles also overlap by a quarter (128 pixels
of blend), its AutoencoderTiny's by an eighth (64 pixels).

Each figure comes from its own fresh process (one runner, one size): model load (timed apart),
a warm-up decode, then timed decodes (the median is reported, with the count); where one
decode takes minutes, the warm-up is a decode of one tile's size and the size is timed once.
Both runners run with the same number of threads (`--threads`; torch.set_num_threads and the
SpatialModel's `threads`), and every decode ends in uint8 [N, H, W, C] images (diffusers'
output mapped from [-1, 1] as its image processor does). Peak memory is that process's peak
resident set: the larger of its VmHWM at the end and this process sampling its
/proc/PID/statm every 5 ms.

Also measured:
- equality: vaesdk's untiled decode against diffusers' at 512x512, in uint8 units;
- seams: for each runner, one latent (1024x1024 image, tiles of 512) decoded tiled and untiled;
  the mean absolute difference (uint8 units) within 4 pixels of a tile's edge inside the image,
  against the mean elsewhere, and the largest difference of each. vaesdk's edges come from
  `vaesdk.maths.tiles.border_mask`; diffusers' from its tiling code (tiles start every
  `stride` latent pixels from 0 and run `tile_latent_min_size`, cut at the image's end).

Latents are seeded standard normals divided by the model's scaling_factor: what a latent
diffusion model's latents are before `decode`.

Arithmetic: each side's float32 operations per image (convolutions and linear layers, counted
by hooks in torch, plus the attention's two products), for diffusers' modules and for the graph
vaesdk's export writes (doubling layers folded where that pays, export/upsample.py), and this
machine's peak through onnxruntime in the same run (`benchmarks/run.py`'s large Conv and
MatMul). Each untiled row gives both sides' GFLOP/s and share of the peak, and the speed-up
over diffusers that vaesdk's graph would have at 100 % of the peak: how far its arithmetic can go.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RUNNERS = ("vaesdk", "diffusers")
BAND = 4  # image pixels either side of a tile's edge counted as its border
SEED = 0
RSS_INTERVAL = 0.005

# Stable Diffusion's VAE (v1 and v2): the architecture of its config.json.
SD_KL = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "block_out_channels": [128, 256, 512, 512],
    "layers_per_block": 2,
    "act_fn": "silu",
    "latent_channels": 4,
    "norm_num_groups": 32,
    "sample_size": 512,
    "scaling_factor": 0.18215,
}
TAESD: dict = {}  # AutoencoderTiny's defaults are TAESD's configuration
# Tiny configurations of both classes (factor 8, like the real ones), for checking the script.
SMALL_KL = {
    **SD_KL,
    "block_out_channels": [8, 16, 16, 16],
    "layers_per_block": 1,
    "norm_num_groups": 4,
}
SMALL_TINY = {
    "encoder_block_out_channels": [8, 8, 8, 8],
    "decoder_block_out_channels": [8, 8, 8, 8],
    "num_encoder_blocks": [1, 1, 1, 1],
    "num_decoder_blocks": [1, 1, 1, 1],
}


@dataclass(frozen=True)
class Spec:
    """One model of the benchmark: its diffusers class and configuration."""

    key: str
    class_name: str
    config: dict
    label: str

    @property
    def factor(self) -> int:
        if self.class_name == "AutoencoderKL":
            return 2 ** (len(self.config["block_out_channels"]) - 1)
        return 2 ** (len(self.config.get("encoder_block_out_channels", [64] * 4)) - 1)

    @property
    def latent_channels(self) -> int:
        return self.config.get("latent_channels", 4)

    @property
    def scaling_factor(self) -> float:
        return self.config.get("scaling_factor", 1.0)


def specs(small: bool) -> list[Spec]:
    if small:
        return [Spec("small-kl", "AutoencoderKL", SMALL_KL, "AutoencoderKL, tiny configuration"),
                Spec("small-tiny", "AutoencoderTiny", SMALL_TINY, "AutoencoderTiny, tiny configuration")]  # fmt: skip
    return [Spec("sd-kl", "AutoencoderKL", SD_KL, "AutoencoderKL, Stable Diffusion's VAE architecture"),
            Spec("taesd", "AutoencoderTiny", TAESD, "AutoencoderTiny (TAESD)")]  # fmt: skip


@dataclass(frozen=True)
class Plan:
    """Image sides and run counts of one mode."""

    untiled: tuple[int, ...]  # decoded whole
    tiled: tuple[int, ...]  # decoded in tiles
    tile: int  # tile side in image pixels, both runners
    seam: int  # the side of the seam measure's image
    runs: dict  # (spec key, image side) or "*" -> timed decodes; a tiled size timed once warms up on one tile


FULL = Plan(untiled=(512, 1024), tiled=(2048,), tile=512, seam=1024, runs={"*": 3, ("sd-kl", 1024): 2, ("sd-kl", 2048): 1})
QUICK = Plan(untiled=(64, 128), tiled=(256,), tile=128, seam=256, runs={"*": 1})


def runs_for(plan: Plan, key: str, size: int) -> int:
    return plan.runs.get((key, size), plan.runs["*"])


# ---- the child processes ------------------------------------------------------------------------


def status_kib(field: str) -> int:
    """A field of /proc/self/status in KiB (VmHWM: the peak resident set since exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def worker_build(spec: Spec, out: Path) -> None:
    """Build the model with seeded random weights and save it with save_pretrained."""
    import diffusers
    import torch

    torch.manual_seed(SEED)
    model = getattr(diffusers, spec.class_name)(**spec.config)
    model.save_pretrained(str(out), safe_serialization=True)
    print(json.dumps({"parameters": sum(p.numel() for p in model.parameters()),
                      "decoder_parameters": sum(p.numel() for p in model.decoder.parameters())}))  # fmt: skip


def worker_flops(spec: Spec, model_dir: Path, sides: list[int]) -> None:
    """Each decoder's float32 operations for one image at each side, 2 per multiply-add: the
    convolutions and linear layers that run (vaesdk.export.upsample.multiply_adds) plus the
    attention's two products (Q K^T and its softmax times V, over the latent's pixels); for
    diffusers' modules and for the graph vaesdk's export writes (its doubling layers folded
    where that pays, export/upsample.py)."""
    import diffusers
    import torch

    from vaesdk.export.diffusers import Decoder
    from vaesdk.export.upsample import folded_copy, multiply_adds

    model = getattr(diffusers, spec.class_name).from_pretrained(str(model_dir / "model")).eval()
    decoder = Decoder(model).eval()
    exported, folded = folded_copy(decoder, torch.randn(1, spec.latent_channels, 8, 8))
    attention = [0]

    def count_attention(module, inputs, output):
        n, c, h, w = inputs[0].shape
        attention[0] += 2 * 2 * n * (h * w) ** 2 * c

    for module in model.modules():
        if type(module).__name__ == "Attention":
            module.register_forward_hook(count_attention)
    out: dict = {"folded_layers": folded}
    for side in sides:
        z = torch.zeros(1, spec.latent_channels, side // spec.factor, side // spec.factor)
        attention[0] = 0
        convolutions = 2 * multiply_adds(decoder, z)
        attended = attention[0]  # the same attention runs in both graphs
        out[str(side)] = {"diffusers": convolutions + attended, "vaesdk": 2 * multiply_adds(exported, z) + attended}
    print(json.dumps(out))


def diffusers_tiling(model, class_name: str, tile: int, f: int) -> dict:
    """Set diffusers' tile to `tile` image pixels (only when it is not its default already) and
    say what its tiled decode does: tiles of `tile_latent` latent pixels starting every `stride`."""
    if model.tile_sample_min_size != tile:
        model.tile_sample_min_size, model.tile_latent_min_size = tile, tile // f
    tl, overlap = model.tile_latent_min_size, model.tile_overlap_factor
    if class_name == "AutoencoderKL":  # AutoencoderKL.tiled_decode
        stride, blend = int(tl * (1 - overlap)), int(model.tile_sample_min_size * overlap)
    else:  # AutoencoderTiny._tiled_decode
        stride, blend = tl - int(tl * overlap), int(tl * overlap) * f
    return {"tile_px": model.tile_sample_min_size, "tile_latent": tl, "overlap_factor": overlap, "stride_latent": stride, "blend_px": blend}


def worker_decode(runner: str, spec: Spec, model_dir: Path, latent: Path, tiled: bool, tile: int, runs: int, warmup: str,
                  threads: int, save: Path | None) -> None:  # fmt: skip
    """One runner, one latent, in this fresh process: print load time, decode times and memory as JSON."""
    z = np.load(latent)
    f = spec.factor
    t0 = time.perf_counter()
    if runner == "vaesdk":
        import vaesdk

        t1 = time.perf_counter()
        model = vaesdk.load(model_dir / "bundle", device="cpu", threads=threads)
        t2 = time.perf_counter()
        lt = tile // f
        tiling = {"tile_px": tile, "tile_latent": lt, "overlap_latent": lt // 4, "blend_px": lt // 4 * f} if tiled else None

        def decode(x: np.ndarray) -> np.ndarray:
            return model.decode(x, tile=tiled, tile_size=tile)
    else:
        import diffusers
        import torch

        torch.set_num_threads(threads)
        t1 = time.perf_counter()
        model = getattr(diffusers, spec.class_name).from_pretrained(str(model_dir / "model")).eval()
        t2 = time.perf_counter()
        tiling = None
        if tiled:
            model.enable_tiling()
            tiling = diffusers_tiling(model, spec.class_name, tile, f)

        def decode(x: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                sample = model.decode(torch.from_numpy(x)).sample
                # diffusers' VaeImageProcessor: [-1, 1] -> [0, 1], clamped; then * 255, rounded
                return ((sample / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()

    rss_after_load = status_kib("VmRSS")
    hwm_after_load = status_kib("VmHWM")
    # Warm-up: first-call allocations and kernel choices; of one tile where a decode takes minutes.
    lt = tile // f
    w0 = time.perf_counter()
    decode(z if warmup == "same" else np.ascontiguousarray(z[:, :, :lt, :lt]))
    warm_s = time.perf_counter() - w0
    times, image = [], None
    for _ in range(runs):
        s = time.perf_counter()
        image = decode(z)
        times.append(time.perf_counter() - s)
    if save is not None:
        np.save(save, image)
    print(json.dumps({
        "import_s": t1 - t0, "load_s": t2 - t1, "warmup": warmup, "warmup_s": warm_s, "times_s": times,
        "rss_after_load_mib": rss_after_load / 1024, "hwm_after_load_mib": hwm_after_load / 1024, "vmhwm_mib": status_kib("VmHWM") / 1024,
        "tiling": tiling, "threads": threads, "output": {"shape": list(image.shape), "mean": float(image.mean()), "std": float(image.std())},
    }))  # fmt: skip


def run_child(args: list[str]) -> dict:
    """Run this script as a child, sampling its resident set; its JSON plus the sampled peak."""
    page = os.sysconf("SC_PAGE_SIZE")
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([sys.executable, __file__, *args], stdout=out, stderr=err, text=True)
        peak = 0
        statm = f"/proc/{proc.pid}/statm"
        while proc.poll() is None:
            try:
                with open(statm) as fh:
                    peak = max(peak, int(fh.read().split()[1]) * page)
            except (OSError, ValueError, IndexError):
                pass
            time.sleep(RSS_INTERVAL)
        out.seek(0), err.seek(0)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}): {err.read()[-3000:]}")
        result = json.loads(out.read().strip().splitlines()[-1])
    result["sampled_peak_mib"] = peak / 2**20
    if "vmhwm_mib" in result:
        result["peak_rss_mib"] = max(result["vmhwm_mib"], result["sampled_peak_mib"])
    return result


# ---- the models ---------------------------------------------------------------------------------


def write_images(folder: Path, n: int = 4, side: int = 128) -> None:
    """Seeded random RGB images for `vae export --images`."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(folder / f"{i}.png")


def prepare(spec: Spec, work: Path) -> dict:
    """work/<key>/model (save_pretrained) and work/<key>/bundle (vae export --from diffusers),
    reused when a previous run made them from the same configuration and seed."""
    folder = work / spec.key
    stamp = {"class": spec.class_name, "config": spec.config, "seed": SEED}
    stamp_file = folder / "made-from.json"
    if stamp_file.is_file() and json.loads(stamp_file.read_text()).get("stamp") == stamp and (folder / "bundle" / "manifest.json").is_file():
        made = json.loads(stamp_file.read_text())
        return {**made["facts"], "reused": True}
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    built = run_child(["--worker", "build", "--spec", spec.key, "--model-dir", str(folder / "model")])
    t1 = time.perf_counter()
    write_images(folder / "images")
    vae = str(Path(sys.executable).with_name("vae"))
    cmd = [vae, "export", "--from", "diffusers", str(folder / "model"), "--images", str(folder / "images"), "--out", str(folder / "bundle"), "--force"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"benchmarks/diffusers_vae.py: {' '.join(cmd[1:])} failed ({r.returncode}): {(r.stderr or r.stdout)[-2000:]}")
    t2 = time.perf_counter()
    onnx_mib = {name: (folder / "bundle" / name).stat().st_size / 2**20 for name in ("encoder.onnx", "decoder.onnx")}
    facts = {"parameters": built["parameters"], "decoder_parameters": built["decoder_parameters"], "build_and_save_s": t1 - t0,
             "export_s": t2 - t1, "export_command": "vae export --from diffusers MODEL --images IMAGES --out BUNDLE", "onnx_mib": onnx_mib}  # fmt: skip
    stamp_file.write_text(json.dumps({"stamp": stamp, "facts": facts}, indent=1))
    return {**facts, "reused": False}


def latent_file(spec: Spec, side: int, work: Path) -> Path:
    """The latent of a side x side image (seeded standard normals / scaling_factor), saved once for both runners."""
    path = work / spec.key / f"latent-{side}.npy"
    if not path.is_file():
        rng = np.random.default_rng([SEED, side])
        h = side // spec.factor
        z = rng.standard_normal((1, spec.latent_channels, h, h), dtype=np.float32) / np.float32(spec.scaling_factor)
        np.save(path, z)
    return path


# ---- seams ----------------------------------------------------------------------------------------


def diffusers_border_mask(height: int, width: int, tiling: dict, f: int, band: int) -> np.ndarray:
    """Image cells within `band` of the edge of one of diffusers' tiles inside the image, for a
    latent of height x width: tiles start every `stride_latent` from 0 and run `tile_latent`."""
    mask = np.zeros((height * f, width * f), bool)
    tl, stride = tiling["tile_latent"], tiling["stride_latent"]
    for n, axis in ((height, 0), (width, 1)):
        for start in range(0, n, stride):
            for edge in (start, start + tl):
                if 0 < edge < n:
                    cut = slice(max(0, edge * f - band), edge * f + band)
                    if axis == 0:
                        mask[cut, :] = True
                    else:
                        mask[:, cut] = True
    return mask


def seam_figures(tiled: np.ndarray, untiled: np.ndarray, mask: np.ndarray) -> dict:
    """Tiled against untiled (uint8 [1, H, W, C]): mean and max |difference| on the border cells
    and elsewhere, in uint8 units."""
    diff = np.abs(tiled.astype(np.int16) - untiled.astype(np.int16)).astype(np.float64)[0]
    border, rest = diff[mask], diff[~mask]
    return {
        "border_mean": float(border.mean()),
        "elsewhere_mean": float(rest.mean()),
        "border_max": int(border.max()),
        "elsewhere_max": int(rest.max()),
        "border_share": float(mask.mean()),
    }


# ---- the run --------------------------------------------------------------------------------------


def machine() -> dict:
    from importlib import metadata

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = None
    try:
        mem = int(Path("/proc/meminfo").read_text().split()[1]) / 2**20
    except (OSError, ValueError, IndexError):
        pass
    versions = {}
    for dist in ("vaesdk", "onnxruntime", "torch", "diffusers", "numpy"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    return {"cpu": cpu, "arch": platform.machine(), "cores": os.cpu_count(), "memory_gib": mem, "python": platform.python_version(), **versions}


def measure(spec: Spec, runner: str, size: int, tiled: bool, plan: Plan, work: Path, threads: int, save: Path | None) -> dict:
    runs = runs_for(plan, spec.key, size)
    warmup = "same" if runs > 1 or not tiled else "one tile"
    args = ["--worker", runner, "--spec", spec.key, "--model-dir", str(work / spec.key), "--latent", str(latent_file(spec, size, work)),
            "--tile", str(plan.tile), "--runs", str(runs), "--warmup", warmup, "--threads", str(threads)]  # fmt: skip
    args += ["--tiled"] if tiled else []
    args += ["--save", str(save)] if save else []
    load_before = os.getloadavg()[0]
    r = run_child(args)
    r["load_average_1min"] = [load_before, os.getloadavg()[0]]  # before and after: other work on the machine
    r["median_s"] = statistics.median(r["times_s"])
    r["runs"] = len(r["times_s"])
    return r


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="sides 64 and 128 untiled, 256 tiled (tiles of 128), one run each: a smoke run, not for reporting")
    parser.add_argument("--small-models", action="store_true", help="tiny configurations of both classes instead of the real architectures (for checking the script)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="threads for both runners (default: one per core)")
    parser.add_argument("--out", type=Path, default=None, help="results JSON (default: benchmarks/diffusers-vae-results.json; none with --quick)")
    parser.add_argument("--work", type=Path, default=None, help="folder for the models, bundles and latents, kept and reused (default: a temporary one)")
    parser.add_argument("--only", choices=("AutoencoderKL", "AutoencoderTiny"), help="one of the two models")
    parser.add_argument("--worker", choices=(*RUNNERS, "build", "flops"), help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--latent", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--tiled", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--tile", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--runs", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--warmup", help=argparse.SUPPRESS)
    parser.add_argument("--save", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--sides", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        spec = next(s for s in specs(False) + specs(True) if s.key == args.spec)
        if args.worker == "build":
            worker_build(spec, args.model_dir)
        elif args.worker == "flops":
            worker_flops(spec, args.model_dir, [int(v) for v in args.sides.split(",")])
        else:
            worker_decode(args.worker, spec, args.model_dir, args.latent, args.tiled, args.tile, args.runs, args.warmup, args.threads, args.save)
        return
    if args.threads < 1:
        parser.error(f"--threads must be at least 1, got {args.threads}")
    out = args.out or (None if args.quick else ROOT / "benchmarks" / "diffusers-vae-results.json")
    plan = QUICK if args.quick else FULL
    chosen = [s for s in specs(args.small_models) if args.only in (None, s.class_name)]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        result = {
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "machine": machine(),
            "command": " ".join(["python", "benchmarks/diffusers_vae.py", *sys.argv[1:]]),
            "threads": args.threads,
            "mode": "quick" if args.quick else "full",
            "tile_px": plan.tile,
            "seam_band_px": BAND,
            "models": {},
        }
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from run import bench_peak

        peaks = bench_peak(args.threads, 20, 0.5)
        result["peak"] = {**peaks, "gflops": max(p["gflops"] for p in peaks.values())}
        print(f"peak through onnxruntime: {result['peak']['gflops']:.1f} GFLOP/s", file=sys.stderr, flush=True)
        for spec in chosen:
            print(f"{spec.label}: building and exporting ...", file=sys.stderr, flush=True)
            entry = {"label": spec.label, "class": spec.class_name, "config": spec.config, **prepare(spec, work)}
            flops = run_child(["--worker", "flops", "--spec", spec.key, "--model-dir", str(work / spec.key), "--sides", ",".join(map(str, plan.untiled))])
            entry["decoder_flops"] = {side: flops[side] for side in flops if side.isdigit()}
            entry["folded_layers"] = flops["folded_layers"]
            rows = []
            saved = work / spec.key / "out"
            saved.mkdir(exist_ok=True)
            for size, tiled in [(s, False) for s in plan.untiled] + [(s, True) for s in plan.tiled]:
                row = {"side": size, "tiled": tiled}
                for runner in RUNNERS:
                    keep = saved / f"{runner}-{size}-{'tiled' if tiled else 'untiled'}.npy" if size in (plan.untiled[0], plan.seam) else None
                    row[runner] = measure(spec, runner, size, tiled, plan, work, args.threads, keep)
                    print(f"  {size}x{size} {'tiled' if tiled else 'untiled'} {runner}: {row[runner]['median_s']:.2f} s "
                          f"(median of {row[runner]['runs']}), load {row[runner]['load_s']:.2f} s, peak {row[runner]['peak_rss_mib']:.0f} MiB",
                          file=sys.stderr, flush=True)  # fmt: skip
                row["speedup"] = row["diffusers"]["median_s"] / row["vaesdk"]["median_s"]
                row["memory_ratio"] = row["vaesdk"]["peak_rss_mib"] / row["diffusers"]["peak_rss_mib"]
                if not tiled:
                    row["arithmetic"] = arithmetic(entry["decoder_flops"][str(size)], row, result["peak"]["gflops"])
                rows.append(row)
            entry["decode"] = rows
            # Equality: the untiled decodes of the smallest size, vaesdk against diffusers.
            a, b = (np.load(saved / f"{runner}-{plan.untiled[0]}-untiled.npy").astype(np.int16) for runner in RUNNERS)
            d = np.abs(a - b)
            entry["equality"] = {"side": plan.untiled[0], "max_abs": int(d.max()), "mean_abs": float(d.mean()), "share_differing": float((d > 0).mean())}
            # Seams: the seam latent decoded tiled and untiled (from the timed runs where its size is timed).
            seams = {}
            n = plan.seam // spec.factor
            for runner in RUNNERS:
                decoded, runs = {}, {}
                for tiled in (False, True):
                    path = saved / f"{runner}-{plan.seam}-{'tiled' if tiled else 'untiled'}.npy"
                    timed = next((row[runner] for row in rows if (row["side"], row["tiled"]) == (plan.seam, tiled)), None)
                    runs[tiled] = timed or measure(spec, runner, plan.seam, tiled, replace(plan, runs={"*": 1}), work, args.threads, path)
                    decoded[tiled] = np.load(path)
                tiling = runs[True]["tiling"]
                if runner == "vaesdk":
                    from vaesdk.maths.tiles import border_mask

                    mask = border_mask(n, n, tiling["tile_latent"], tiling["overlap_latent"], spec.factor, BAND)
                else:
                    mask = diffusers_border_mask(n, n, tiling, spec.factor, BAND)
                seams[runner] = {**seam_figures(decoded[True], decoded[False], mask), "tiling": tiling, "tiled_decode_s": runs[True]["median_s"]}
                print(f"  seams {runner}: border {seams[runner]['border_mean']:.2f}, elsewhere {seams[runner]['elsewhere_mean']:.2f} "
                      f"(max {seams[runner]['border_max']} / {seams[runner]['elsewhere_max']})", file=sys.stderr, flush=True)  # fmt: skip
            entry["seams"] = {"side": plan.seam, **seams}
            result["models"][spec.key] = entry
            if out:
                out.write_text(json.dumps(result, indent=1) + "\n")
    result["total_s"] = time.perf_counter() - started
    if out:
        out.write_text(json.dumps(result, indent=1) + "\n")
    m = result["machine"]
    print(f"{result['date']}, {m['cpu']} ({m['cores']} cores), {args.threads} threads a runner; onnxruntime {m['onnxruntime']}, "
          f"torch {m['torch']}, diffusers {m['diffusers']}; {result['total_s'] / 60:.1f} min\n")  # fmt: skip
    print(table(result))
    if out:
        print(f"\nJSON: {out}", file=sys.stderr)


def arithmetic(flops: dict, row: dict, peak: float) -> dict:
    """Each runner's GFLOP (its own graph's: vaesdk's may fold doubling layers), GFLOP/s and
    share of the peak, and the speed-up over diffusers of vaesdk's arithmetic run at the peak."""
    out: dict = {"peak_gflops": peak}
    for r in RUNNERS:
        gflop = flops[r] / 1e9
        out[r] = {"gflop": gflop, "gflops": gflop / row[r]["median_s"], "share_of_peak": gflop / row[r]["median_s"] / peak}
    out["speedup_at_peak"] = row["diffusers"]["median_s"] / (out["vaesdk"]["gflop"] / peak)
    return out


def seconds(m: dict) -> str:
    """A runner's median decode time, with min..max when it ran more than once."""
    t = m["times_s"]
    return f"{m['median_s']:,.2f}" + (f" ({min(t):,.1f}..{max(t):,.1f})" if len(t) > 1 else "")


def table(result: dict) -> str:
    lines = [
        "| model | image | tiling | runs | vaesdk s (min..max) | diffusers s (min..max) | speed-up | vaesdk peak MiB | diffusers peak MiB | memory vaesdk/diffusers |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for entry in result["models"].values():
        for row in entry["decode"]:
            v, d = row["vaesdk"], row["diffusers"]
            runs = str(v["runs"]) if v["runs"] == d["runs"] else f"{v['runs']} / {d['runs']}"
            lines.append(
                f"| {entry['class']} | {row['side']}x{row['side']} | {'tiled' if row['tiled'] else 'untiled'} | {runs} | {seconds(v)} | "
                f"{seconds(d)} | {row['speedup']:.2f}x | {v['peak_rss_mib']:,.0f} | {d['peak_rss_mib']:,.0f} | {row['memory_ratio']:.2f} |"
            )
    peak = result.get("peak", {}).get("gflops")
    if peak:
        lines += ["", f"Arithmetic of the untiled decodes (each side's own graph); peak through onnxruntime in this run {peak:.1f} GFLOP/s:", "",
                  "| model | image | diffusers GFLOP | vaesdk GFLOP | vaesdk GFLOP/s (share of peak) | diffusers GFLOP/s (share of peak) | speed-up of vaesdk's graph at 100% of peak |",
                  "|---|---|---:|---:|---:|---:|---:|"]  # fmt: skip
        for entry in result["models"].values():
            for row in entry["decode"]:
                a = row.get("arithmetic")
                if a:
                    v, d = a["vaesdk"], a["diffusers"]
                    lines.append(
                        f"| {entry['class']} | {row['side']}x{row['side']} | {d['gflop']:,.1f} | {v['gflop']:,.1f} | {v['gflops']:.0f} ({100 * v['share_of_peak']:.0f}%) | "
                        f"{d['gflops']:.0f} ({100 * d['share_of_peak']:.0f}%) | {a['speedup_at_peak']:.2f}x |"
                    )
    lines += ["", "| model | import + load vaesdk s | import + load diffusers s | untiled decodes compared | max abs difference | values differing |",
              "|---|---:|---:|---|---:|---:|"]  # fmt: skip
    for entry in result["models"].values():
        cells = []
        for runner in RUNNERS:
            imports = statistics.median(row[runner]["import_s"] for row in entry["decode"])
            loads = statistics.median(row[runner]["load_s"] for row in entry["decode"])
            cells.append(f"{imports:.2f} + {loads:.2f}")
        e = entry["equality"]
        lines.append(f"| {entry['class']} | {cells[0]} | {cells[1]} | {e['side']}x{e['side']} | {e['max_abs']} | {100 * e['share_differing']:.4f}% |")
    lines += ["", "| model | runner | tiles | border mean | elsewhere mean | border max | elsewhere max |", "|---|---|---|---:|---:|---:|---:|"]
    for entry in result["models"].values():
        s = entry["seams"]
        for runner in RUNNERS:
            t = s[runner]
            lines.append(
                f"| {entry['class']} | {runner} | {t['tiling']['tile_px']} px, blend {t['tiling']['blend_px']} px | {t['border_mean']:.2f} | "
                f"{t['elsewhere_mean']:.2f} | {t['border_max']} | {t['elsewhere_max']} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
