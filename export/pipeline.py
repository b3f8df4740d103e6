"""Checkpoint -> verified bundle folder, in one call (`vae export`).

The bundle is assembled in a temporary folder beside the destination and moved into place
only when every step has passed: ONNX export, onnx.checker, the parity gate, loading through
the runtime, and evaluation. A failure leaves no partial bundle behind.
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import vaesdk
from vaesdk.maths.anomaly import MIN_CALIBRATION, calibrate_anomaly
from vaesdk.bundle.format import MANIFEST, MAX_MANIFEST_BYTES, NAME_RE, STANDARD_PRIOR
from vaesdk.bundle.editing import folder_lock, write_manifest
from vaesdk.bundle.reading import read_bundle, read_regular_file
from vaesdk.evaluation.datasets import DEFAULT_FASHION_MNIST_DIR, ImageSet, load_dataset
from vaesdk.base.errors import BundleError, InvalidArgumentError, OutputError
from vaesdk.evaluation.evaluate import Progress, evaluate
from vaesdk.base.fileio import UMASK, swap_folder, write_atomic
from vaesdk.maths.latent import ACTIVE_KL_NATS, Posterior, class_mean_directions
from vaesdk.maths.priors import GAUSSIAN, Prior, fit_gaussian, stored

from ..training.train import load_checkpoint
from .calibration import FOLDER_TEST_SPLIT, run_split, validation_images, validation_source
from .fit_prior import FULL_COVARIANCE_MAX_DIM, QUALITY_MARGIN, choose_prior, cluster_candidates, fit_mixture, frechet_distance
from .manifest import build_manifest, onnx_record
from .onnx import export_graphs
from .verify import check_parity

MIXTURE_PRIOR = "mixture"
MIXTURE_FILE = "prior-mixture.npz"


@dataclass
class EvalSets:
    """Images for the manifest's figures: `test` for metrics, `train` (the images the model
    was trained on) for the probe, class directions and fitted priors, `held_out` (images not
    trained on) for choosing the prior's size and for calibration. `source` says what `test` is."""

    test: ImageSet | None
    train: ImageSet | None
    held_out: ImageSet | None
    source: str
    dataset: str


def export_bundle(
    run_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    name: str | None = None,
    description: str = "",
    eval_data: str | None = "auto",
    data_dir: str | os.PathLike | None = None,
    probe_data: str | None = None,
    iw_samples: int = 100,
    eval_limit: int = 0,
    allow_collapsed: bool = False,
    force: bool = False,
    log: Callable[[str], None] = lambda s: None,
    progress: Progress | None = None,
) -> Path:
    """Export the best weights of `run_dir` to the bundle folder `out_dir`.

    eval_data: 'auto' (the run's own data source, from its checkpoint: Fashion-MNIST's test
    split, or the held-out validation part of the run's image folder), 'fashion-mnist', a
    labelled image folder, or None to skip metrics and fitted priors. eval_limit > 0 uses
    only that many images of each set (quick runs and tests). A VAE with too few active
    latent dimensions (posterior collapse) is refused unless allow_collapsed.
    """
    out_dir, name = checked_destination(out_dir, name, force)
    model, checkpoint = load_checkpoint(run_dir)
    config = model.config
    sets = _eval_sets(eval_data, probe_data, data_dir, checkpoint, config.image_size, config.channels)
    if eval_limit:
        sets = EvalSets(*(None if s is None else s.head(eval_limit) for s in (sets.test, sets.train, sets.held_out)), sets.source, sets.dataset)
    if sets.test is None and config.kind == "vae":
        _refuse_collapse(_best_active_dims(checkpoint), config.latent_dim, checkpoint, allow_collapsed, "the best epoch's validation")

    with bundle_under_construction(out_dir) as tmp:
        log("exporting encoder.onnx and decoder.onnx")
        files, folded = export_graphs(model, tmp)
        real = sets.test.images[:256] if sets.test is not None else _random_images(config.image_size, config.channels)
        report = check_parity(model, files["encoder"].read_bytes(), files["decoder"].read_bytes(), real)
        log(f"parity gate passed: worst error {report.worst_ratio:.3f} of tolerance")
        data = build_manifest(name, config, files, checkpoint, report.as_manifest(), description, folded)
        write_manifest(tmp, data)
        # Priors first: the anomaly score's latent part uses the fitted mixture, and the
        # evaluation measures the calibrated score.
        train_post = _add_priors_and_directions(tmp, data, sets, log) if sets.test is not None else None
        if config.kind == "vae":
            _add_anomaly_calibration(tmp, data, checkpoint, data_dir, log)
        if sets.test is not None:
            _add_evaluation(tmp, data, sets, train_post, iw_samples, log, progress)
            if config.kind == "vae":
                active = data["latent"]["active_dims"]
                _refuse_collapse(active, config.latent_dim, checkpoint, allow_collapsed, f"the {len(sets.test)} evaluation images")
    log(f"bundle written to {out_dir}")
    return out_dir


@contextmanager
def bundle_under_construction(out_dir: Path, rebuilt_from: bytes | None = None) -> Iterator[Path]:
    """A temporary folder beside `out_dir` to build a bundle in. When the block ends without
    error, the bundle must load through the runtime's checks; then it is made readable and
    moved into place. On any failure the folder is removed: no partial bundle is left.

    `rebuilt_from`: the manifest bytes of the bundle at `out_dir` that the new one was built
    from. The swap then happens under the folder's lock (the one direction and calibration
    writes take), and only if the manifest is still those bytes: a write made meanwhile is
    never lost; the rebuild is refused instead."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".partial", dir=out_dir.parent))
    try:
        yield tmp
        vaesdk.load(tmp, device="cpu")  # the finished bundle must load through the runtime's checks
        os.chmod(tmp, 0o777 & ~UMASK)  # mkdtemp makes it private; a bundle is for others to read
        with folder_lock(out_dir) if rebuilt_from is not None else nullcontext():
            if rebuilt_from is not None and _read_or_none(out_dir) != rebuilt_from:
                raise OutputError(
                    f"{out_dir}'s manifest.json changed while this ran (a direction or a calibration written meanwhile); "
                    "it was left as it is: run the command again"
                )
            swap_folder(tmp, out_dir, replace=True)  # an old bundle is removed only once the new one is in place
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def manifest_bytes(bundle_dir: Path) -> bytes:
    """A bundle's manifest.json as it is on disk, read as the runtime reads it (a regular file
    within the size limit, no symlink, no FIFO); BundleError otherwise."""
    return read_regular_file(bundle_dir / MANIFEST, MAX_MANIFEST_BYTES, "manifest")


def _read_or_none(bundle_dir: Path) -> bytes | None:
    try:
        return manifest_bytes(bundle_dir)
    except BundleError:
        return None


def checked_destination(out_dir: str | os.PathLike, name: str | None, force: bool) -> tuple[Path, str]:
    """The bundle folder to write and the model's name (the folder's, unless given), checked
    before any work: a valid name, and no folder in the way without `force`."""
    out_dir = Path(out_dir)
    name = name or out_dir.name
    if not NAME_RE.match(name):
        raise InvalidArgumentError(f"bundle name {name!r:.80} must be 1-64 letters, digits, '_', '.' or '-'; pass --name")
    if (out_dir.exists() or out_dir.is_symlink()) and not force:
        raise OutputError(f"{out_dir} already exists; pass --force to replace it")
    return out_dir, name


def _best_active_dims(checkpoint: dict[str, Any]) -> int | None:
    """Active dimensions at the epoch whose weights are exported (the best one)."""
    history = checkpoint.get("history") or []
    best = checkpoint.get("best_epoch")
    entry = history[best] if isinstance(best, int) and 0 <= best < len(history) else (history[-1] if history else None)
    return entry["val"].get("active_dims") if entry else None


def _refuse_collapse(active: int | None, dim: int, checkpoint: dict[str, Any], allow: bool, where: str) -> None:
    if active is None:
        return
    fraction = (checkpoint.get("config") or {}).get("min_active_fraction", 0.1)
    need = max(1, math.ceil(fraction * dim))
    if active < need and not allow:
        raise BundleError(
            f"posterior collapse: only {active} of {dim} latent dimensions are active (mean KL > {ACTIVE_KL_NATS} nats) on "
            f"{where}, fewer than {need}; the model ignores its latent. Retrain (see `vae train --help`: "
            "--kl-warmup-epochs, --fixed-variance-epochs, --latent-dim), or pass --allow-collapsed to export it anyway"
        )


def _eval_sets(
    eval_data: str | None, probe_data: str | None, data_dir: Any, checkpoint: dict[str, Any], size: int, channels: int
) -> EvalSets:
    if eval_data is None:
        return EvalSets(None, None, None, "none", "none")
    dataset = checkpoint["dataset"]
    trained_on = dataset.get("name", "fashion-mnist")
    if eval_data == "auto":
        train, held_out = _run_split(checkpoint, trained_on, data_dir)
        if trained_on == "fashion-mnist":
            test = load_dataset("fashion-mnist", "test", size, channels, data_dir or DEFAULT_FASHION_MNIST_DIR)
            return EvalSets(test, train, held_out, "test", "fashion-mnist")
        # A folder has no test split: the run's validation images were never trained on.
        return EvalSets(held_out, train, held_out, FOLDER_TEST_SPLIT, "image folder")
    if eval_data == "fashion-mnist":
        data_dir = data_dir or DEFAULT_FASHION_MNIST_DIR
        test = load_dataset("fashion-mnist", "test", size, channels, data_dir)
        if trained_on == "fashion-mnist":
            train, held_out = _run_split(checkpoint, trained_on, data_dir)
            return EvalSets(test, train, held_out, "test", "fashion-mnist")
        return EvalSets(test, load_dataset("fashion-mnist", "train", size, channels, data_dir), None, "test", "fashion-mnist")
    test = load_dataset(eval_data, "test", size, channels)
    train = load_dataset(probe_data, "train", size, channels) if probe_data else None
    return EvalSets(test, train, None, eval_data, "image folder")


def _run_split(checkpoint: dict[str, Any], trained_on: str, data_dir: Any) -> tuple[ImageSet, ImageSet]:
    """The run's own training and validation images, reproduced from its recorded seed and fraction."""
    where = str(data_dir) if data_dir is not None else checkpoint["config"]["data_dir"]
    if trained_on != "fashion-mnist" and not Path(where).is_dir():
        raise InvalidArgumentError(
            f"the run was trained on the folder {where}, which is gone; pass --data-dir with its new place, "
            "or --data FOLDER / --data none"
        )
    return run_split(checkpoint["config"], data_dir)


def _random_images(size: int, channels: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (64, size, size, channels), dtype=np.uint8)


def _add_priors_and_directions(bundle_dir: Path, data: dict[str, Any], sets: EvalSets, log: Callable[[str], None]) -> Posterior | None:
    """Fit the Gaussians and (VAEs) the mixture prior to the encoded training images, and the
    class directions; returns the training posteriors (None without training images)."""
    train = sets.train
    if train is None:
        return None
    model = vaesdk.load(bundle_dir, device="cpu")
    train_post = model.encode(train.images)
    data["latent"][GAUSSIAN.key] = fit_gaussians(train_post, train)
    if model.kind == "vae":
        held_out = model.embed(sets.held_out.images) if sets.held_out is not None else None
        add_mixture(bundle_dir, data, model, train_post, held_out, log)
    if train.labels is not None and train.class_names:
        vectors = class_mean_directions(train_post.mean, train.labels, train.class_names)
        data["directions"] = {
            cls: {
                "vector": [float(x) for x in v],
                "description": f"towards '{cls}': mean latent of '{cls}' training images minus that of all others",
                "source": "export",
            }
            for cls, v in vectors.items()
        }
    write_manifest(bundle_dir, data)
    return train_post


def _add_evaluation(
    bundle_dir: Path,
    data: dict[str, Any],
    sets: EvalSets,
    train_post: Posterior | None,
    k: int,
    log: Callable[[str], None],
    progress: Progress | None,
    seed: int = 0,
) -> None:
    model = vaesdk.load(bundle_dir, device="cpu")
    test, train = sets.test, sets.train
    log(f"evaluating on {len(test)} images ({sets.source}; importance-weighted bound with k={k})")
    train_features = train_post.mean if train_post is not None else None
    metrics = evaluate(
        model, test, train, k=k, seed=seed, train_features=train_features, test_is_calibration=sets.source == FOLDER_TEST_SPLIT,
        **({"progress": progress} if progress else {}),
    )  # fmt: skip
    kl = metrics.pop("kl_per_dim", None)
    if kl is not None:
        data["latent"]["kl_per_dim"] = kl
        data["latent"]["active_dims"] = metrics["active_dims"]
        data["latent"]["active_threshold_nats"] = ACTIVE_KL_NATS
    data["metrics"] = {"dataset": sets.dataset, "split": sets.source, **metrics}
    write_manifest(bundle_dir, data)


def add_mixture(
    bundle_dir: Path, data: dict[str, Any], model: vaesdk.Model, train: Posterior, held_out: np.ndarray | None,
    log: Callable[[str], None], covariance: str | None = None,
) -> None:  # fmt: skip
    """Fit candidate mixture priors to the training latents `train` (posteriors), choose the
    one to ship by the quality of its samples and by held-out likelihood
    (`fit_prior.choose_prior`), write it as prior-mixture.npz and make it the bundle's default
    prior. `held_out`: posterior means of held-out images (None: a tenth of the training
    latents is held out). Sample quality is the Fréchet distance, in `model`'s own encoder
    features, between the decoded samples and the held-out latents (`sample_distance`).
    `covariance`: 'full' or 'diagonal' for every candidate (default: EM by the latent
    dimension, fit_prior.covariance_for; clusters full where the file fits the budget)."""
    means = np.asarray(train.mean, np.float64)
    variance = None if train.logvar is None else np.exp(np.asarray(train.logvar, np.float64))
    if held_out is None:  # no images held out of training: hold out a tenth of the latents
        order = np.random.default_rng(0).permutation(len(means))
        cut = max(1, len(means) // 10)
        held_out, means = means[order[:cut]], means[order[cut:]]
        variance = None if variance is None else variance[order[cut:]]
    if len(means) < 4:
        log("prior: too few training images to fit a mixture; the default prior stays N(0, I)")
        return
    held_out = np.asarray(held_out, np.float64)
    em, em_record = fit_mixture(means, held_out, log=log, covariance=covariance)
    em_entry = {k: em_record[k] for k in ("components", "covariance", "fit_points", "candidates")}
    em_entry["selection"] = em_record["selection"]
    candidates = [("em", em, em_entry), *cluster_candidates(means, variance, held_out, covariance=covariance, log=log)]
    name, mixture, rows = choose_prior(candidates, held_out, sample_distance(model, held_out), log=log)
    log(f"prior: chose {name} ({mixture.describe()})")
    facts = {
        "fitted_to": "latents of the training images",
        "components": mixture.components,
        "covariance": "diagonal" if mixture.diagonal else "full",
        "candidate": name,
        "selection": "the highest held-out log-likelihood among the candidates within the budgets whose samples' distance to "
        f"held-out images is within {QUALITY_MARGIN:.0%} of the best (export/fit_prior.choose_prior)",
        "candidates": rows,
        "held_out_points": len(held_out),
    }
    store_prior(bundle_dir, data, MIXTURE_PRIOR, mixture, facts, MIXTURE_FILE)
    data["latent"]["default_prior"] = MIXTURE_PRIOR


SAMPLE_DISTANCE_DRAWS = 5000


def sample_distance(model: vaesdk.Model, held_out: np.ndarray, n: int = SAMPLE_DISTANCE_DRAWS, seed: int = 0) -> Callable[[Any], float]:
    """A prior's sample quality without any network but the model's own: draw n latents (seeded),
    decode them to images, encode those, and take the Fréchet distance of their posterior
    means to the held-out images' posterior means `held_out` [M, D]. A prior that samples
    where no image encodes decodes to images that encode elsewhere and scores far."""

    def distance(prior: Any) -> float:
        z = prior.sample(n, np.random.default_rng(seed))
        return frechet_distance(model.embed(model.decode(z)), held_out)

    return distance


def store_prior(bundle_dir: Path, data: dict[str, Any], name: str, prior: Prior, facts: dict[str, Any], file_name: str | None = None) -> None:
    """Add a fitted prior to a bundle under construction as its kind stores it: its entry in
    the manifest's `latent` object (with `facts`, such as what it was fitted to), and for a kind
    kept in a file, the file (`file_name`, default prior-NAME.npz) with its digest and size."""
    kind, entry, blob = stored(prior)
    if blob is not None:
        file_name = file_name or f"prior-{name}.npz"
        write_atomic(bundle_dir / file_name, blob)
        entry = {"file": file_name, "sha256": hashlib.sha256(blob).hexdigest(), "bytes": len(blob), **entry}
    data["latent"].setdefault(kind.key, {})[name] = {**entry, **facts}


def _add_anomaly_calibration(
    bundle_dir: Path, data: dict[str, Any], checkpoint: dict[str, Any], data_dir: str | os.PathLike | None, log: Callable[[str], None]
) -> None:
    """Calibrate the anomaly score on the run's validation split, images the weights were
    never trained on (reproduced from the checkpoint's recorded data, seed and fraction;
    `data_dir` says where the data is now, as for the evaluation)."""
    images, source = validation_images(checkpoint["config"], data_dir)
    if len(images) < MIN_CALIBRATION:
        log(
            f"anomaly score not calibrated: the run held out {len(images)} validation images, fewer than "
            f"{MIN_CALIBRATION}; the bundle reports anomaly without p_value (a larger folder gives one)"
        )
        return
    log(f"calibrating the anomaly score on {len(images)} held-out validation images")
    data["anomaly"] = calibrate_anomaly(vaesdk.load(bundle_dir, device="cpu"), images, source)
    write_manifest(bundle_dir, data)


def fit_gaussians(post: Posterior, data: ImageSet) -> dict[str, dict[str, Any]]:
    """Gaussians moment-matched to the encoded training images: all of them ('aggregate'),
    and each class. Sampling from them avoids the regions of N(0, I) no image encodes to.
    None beyond FULL_COVARIANCE_MAX_DIM latents: the mixture (diagonal there) is the prior."""
    groups = {"aggregate": np.ones(len(data), bool)}
    if data.labels is not None:
        groups.update({name: data.labels == k for k, name in enumerate(data.class_names)})
    out: dict[str, dict[str, Any]] = {}
    if post.mean.shape[1] > FULL_COVARIANCE_MAX_DIM:
        # A full covariance in the manifest is D(D+1)/2 numbers: 8.4 million at 4,096 latents.
        return out
    for name, sel in groups.items():
        if sel.sum() < 2 or name in (MIXTURE_PRIOR, STANDARD_PRIOR):
            continue
        g = fit_gaussian(post.mean[sel], None if post.logvar is None else post.logvar[sel])
        out[name] = {**g.to_manifest(), "images": int(sel.sum()), "fitted_to": "encoded training images" + ("" if name == "aggregate" else f" of class '{name}'")}
    return out


def refresh_decoder(
    bundle: str | os.PathLike,
    run_dir: str | os.PathLike,
    *,
    out: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
    log: Callable[[str], None] = lambda s: None,
) -> dict[str, Any]:
    """Export the decoder of `run_dir`, the run `bundle` was exported from, again with today's
    exporter, and put it in place of the bundle's decoder.onnx (or of a copy's, at `out`).

    The weights must be the bundle's: the run's model configuration must equal the manifest's,
    and the parity gate holds the bundle's encoder.onnx and the new decoder.onnx to the run's
    modules, on the images the export used (the run's own test or held-out images). The
    decoder's file entry, `parity` and `onnx` change, and what the manifest records of the
    decoder's outputs is measured again as export measures it (`remeasure`: the anomaly
    calibration and the metrics). The priors and directions (fitted to encoder outputs) stay;
    so does `metrics.quality`, which benchmarks/fid/frechet.py --record measures. The manifest's
    `onnx.decoder_refreshed` records by how much the two graphs' outputs differ on the gate's
    latents. Returns that record.
    """
    source = Path(bundle)
    original = manifest_bytes(source)  # before reading the bundle: a write in between is caught at the swap
    manifest = read_bundle(source).manifest.data
    model, checkpoint = load_checkpoint(run_dir)
    recorded = ((manifest.get("training") or {}).get("config") or {}).get("model")
    if recorded != checkpoint["config"]["model"]:
        raise InvalidArgumentError(f"{run_dir} is not the run {source} was exported from: their model configurations differ")
    config = model.config
    target = Path(out) if out is not None else source
    if out is not None and (target.exists() or target.is_symlink()):
        raise OutputError(f"{target} already exists; pass a new folder to --out")
    sets = recorded_sets(manifest, data_dir)
    with bundle_under_construction(target, original if out is None else None) as tmp:
        _copy_bundle(source, tmp)
        fresh = Path(tempfile.mkdtemp(prefix=".graphs.", dir=tmp))
        try:
            log("exporting decoder.onnx")
            paths, folded = export_graphs(model, fresh)
            new_decoder = paths["decoder"].read_bytes()
        finally:
            shutil.rmtree(fresh, ignore_errors=True)
        real = (sets.test if sets.test is not None else sets.held_out).images[:256]
        report = check_parity(model, (tmp / manifest["encoder"]["file"]).read_bytes(), new_decoder, real)
        log(f"parity gate passed: worst error {report.worst_ratio:.3f} of tolerance")
        change = _decoder_change(source / manifest["decoder"]["file"], new_decoder, manifest, config.latent_dim)
        write_atomic(tmp / manifest["decoder"]["file"], new_decoder, overwrite=True)
        data = dict(manifest)
        data["decoder"] = {**manifest["decoder"], "sha256": hashlib.sha256(new_decoder).hexdigest(), "bytes": len(new_decoder)}
        data["parity"] = report.as_manifest()
        data["onnx"] = {**onnx_record(tmp / manifest["decoder"]["file"], folded), "decoder_refreshed": change}
        write_manifest(tmp, data)
        _remeasure_into(tmp, data, sets, log)
    log(f"decoder.onnx of {target} replaced: outputs differ from the previous graph's by at most {max(change['max_abs_change'].values()):.3g}")
    return change


def recorded_sets(manifest: dict[str, Any], data_dir: str | os.PathLike | None = None) -> EvalSets:
    """The images a bundle's figures were measured on, reproduced from its manifest: the run's
    training and validation split (from `training.config`) and, when the manifest records
    test-set metrics, the test set export's default data gave them (Fashion-MNIST's test split
    for a Fashion-MNIST run, the validation split for a folder run). `data_dir`: where the run's
    data is now. Refuses a bundle that records no run, figures measured on other data, and data
    whose counts differ from what the manifest records."""
    metrics = manifest.get("metrics") or {}
    training = manifest.get("training") or {}
    config = training.get("config")
    name = manifest.get("name", "the bundle")
    if not config:
        raise InvalidArgumentError(f"{name} records no training run to measure again on; export its run again with `vae export`")
    calibrated_on = (((manifest.get("anomaly") or {}).get("calibration")) or {}).get("source")
    if calibrated_on is not None and calibrated_on != validation_source(config):
        raise InvalidArgumentError(
            f"{name}'s anomaly score was calibrated on {calibrated_on}, not on its run's validation split, which is all "
            "this measures again on; export its run again with `vae export`, then `vae calibrate` it on those images"
        )
    own = {"dataset": "fashion-mnist", "split": "test"} if config.get("dataset") == "fashion-mnist" else {"split": FOLDER_TEST_SPLIT}
    measured = {"dataset", "split", "images", "seed"} <= metrics.keys()
    if measured and any(metrics[k] != v for k, v in own.items()):
        raise InvalidArgumentError(
            f"{name}'s metrics were measured on {metrics['dataset']} ({metrics['split']}), not on its run's own data, "
            "which is all this measures again on; export its run again with `vae export --data ...`"
        )
    train, held_out = _run_split({"config": config}, config.get("dataset", "fashion-mnist"), data_dir)
    counts = (training.get("dataset") or {})
    found = {"train_images": len(train), "val_images": len(held_out)}
    if any(k in counts and counts[k] != v for k, v in found.items()):
        raise InvalidArgumentError(
            f"the data found for {name} ({len(train)} training and {len(held_out)} validation images) is not the data its run "
            f"recorded ({counts.get('train_images')} and {counts.get('val_images')}); pass --data-dir with the run's data"
        )
    if not measured:
        return EvalSets(None, train, held_out, "none", "none")
    if metrics["split"] == FOLDER_TEST_SPLIT:
        test = held_out.head(metrics["images"])
    else:
        image = manifest["image"]
        test = load_dataset("fashion-mnist", "test", image["height"], image["channels"], data_dir).head(metrics["images"])
    probe = metrics.get("probe_train_images")
    train = train.head(probe or len(train))  # export's eval_limit takes the first images of each set
    if len(test) != metrics["images"] or (probe is not None and len(train) != probe):
        raise InvalidArgumentError(
            f"the data found for {name} ({len(test)} test and {len(train)} training images) is not what its metrics record "
            f"({metrics['images']} and {probe}); pass --data-dir with the run's data"
        )
    return EvalSets(test, train, held_out, metrics["split"], metrics["dataset"])


def remeasure(bundle: str | os.PathLike, *, data_dir: str | os.PathLike | None = None, log: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Measure again, through the runtime and exactly as export does, what `bundle`'s manifest
    records of its graphs' outputs: the anomaly calibration (on the run's validation split) and
    the metrics (the recorded test set, seed and importance samples; the probe on the run's
    training split). The priors, directions and `metrics.quality` stay. Only manifest.json
    changes; the bundle is measured in a copy that takes its place when every figure is in, so
    a failure leaves it as it was. Returns the new metrics (None for a bundle exported without)."""
    bundle = Path(bundle)
    original = manifest_bytes(bundle)  # before reading the bundle: a write in between is caught at the swap
    data = read_bundle(bundle).manifest.data
    sets = recorded_sets(data, data_dir)
    with bundle_under_construction(bundle, original) as tmp:
        _copy_bundle(bundle, tmp)
        _remeasure_into(tmp, data, sets, log)
    return data.get("metrics")


def _copy_bundle(source: Path, tmp: Path) -> None:
    for entry in source.iterdir():
        if entry.is_dir():
            shutil.copytree(entry, tmp / entry.name)
        else:
            shutil.copy2(entry, tmp / entry.name)


def _remeasure_into(bundle_dir: Path, data: dict[str, Any], sets: EvalSets, log: Callable[[str], None]) -> None:
    """Calibrate and evaluate the bundle being built at `bundle_dir` (manifest `data`) on `sets`,
    as export does, keeping `metrics.quality`; the calibration keeps its prior. Refuses to drop
    an outlier set the old figures had (one this machine cannot load)."""
    if data.get("anomaly") is not None:
        log(f"calibrating the anomaly score again on {len(sets.held_out)} held-out validation images")
        config = data["training"]["config"]
        data["anomaly"] = calibrate_anomaly(vaesdk.load(bundle_dir, device="cpu"), sets.held_out.images, validation_source(config))
        write_manifest(bundle_dir, data)
    if sets.test is None:
        return
    old = data["metrics"]
    _add_evaluation(bundle_dir, data, sets, None, old.get("iw_samples", 16), log, None, seed=old["seed"])
    lost = set((old.get("anomaly") or {}).get("ood") or {}) - set((data["metrics"].get("anomaly") or {}).get("ood") or {})
    if lost:
        raise InvalidArgumentError(
            f"the outlier sets {sorted(lost)} of the recorded figures could not be loaded here; measure again where they can be"
        )
    if "quality" in old:
        data["metrics"]["quality"] = old["quality"]
        write_manifest(bundle_dir, data)


def _decoder_change(old_path: Path, new_decoder: bytes, manifest: dict[str, Any], latent_dim: int) -> dict[str, Any]:
    """How far the new decoder's outputs are from the old one's, on seeded latents."""
    from datetime import datetime, timezone

    from vaesdk.runtime.session import create_graph

    names = [o["name"] for o in manifest["decoder"]["outputs"]]
    old = create_graph(old_path.read_bytes(), "cpu", label="the previous decoder.onnx")
    new = create_graph(new_decoder, "cpu", label="the new decoder.onnx")
    z = np.random.default_rng(0).standard_normal((256, latent_dim), dtype=np.float32)
    worst = {name: float(np.abs(a - b).max()) for name, a, b in zip(names, old.run(z, names), new.run(z, names))}
    return {
        "date": datetime.now(timezone.utc).replace(microsecond=0).isoformat(),
        "why": "exported again from the same weights by a newer exporter (export/upsample.py: each doubling layer at its input's resolution)",
        "latents": "256 seeded standard normals",
        "max_abs_change": worst,
    }
