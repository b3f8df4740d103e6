"""Candidate latent priors for a bundled model, measured by the quality of their samples and by
their likelihood of held-out latents, with their size and speed: which mixture the bundle
should sample from by default.

    python benchmarks/priors_fd.py --model fashion-mnist [--n 10000] [--seeds 0] [--candidates 'kmeans-*'] \
        [--temperatures 1,0.8] [--baselines] [--json benchmarks/priors-fd-results.json] [--cache DIR]
    python benchmarks/priors_fd.py --model emoji --n 5000 ...
    python benchmarks/priors_fd.py --model fashion-mnist --write 'kmeans-means-300-full@0.8'

Latents: the encoder's posterior means (and log-variances) of the model's own training run's
images, reproduced from the manifest's split (`split_indices`: for fashion-mnist the 55,000
training and 5,000 validation images of Fashion-MNIST's training split, for emoji 6,932 and
630 of data/emoji). Priors are fitted to the training latents only; the validation latents
are the held-out latents of the likelihood check.

Candidates (`--candidates` takes shell patterns of their names; temperatures multiply each
component's spread as the runtime's `temperature` does):
  shipped                       the bundle's own mixture (models/NAME/prior-mixture.npz)
  em-{means,draws}-K-{full,diag} sklearn EM on at most EM_POINTS posterior means, or one
                                draw from q(z|x) per image
  kmeans-{means,aggregate}-K-{full,diag}  (K in COMPONENTS; any K when named in full)
                                k-means on every training mean, one component per cluster
                                (export/fit_prior.cluster_mixture), covariance shrunk towards
                                the pooled one by the shrinkage of best held-out likelihood;
                                'aggregate' adds the cluster's mean posterior variance
  latents-{posterior,narrow}    one diagonal component per training latent, as many as the
                                format holds (MAX_COMPONENTS random ones): the aggregate
                                posterior of those images, and the same with a tenth of the
                                spread (a prior that memorises its training latents)

Figures per candidate and temperature: the mean log density of the held-out posterior means
(nats per image) and of one posterior draw per held-out image, the same on training means
(the gap shows memorising); the Fréchet distance of n decoded samples (decoder means) to the
reference images in the features of benchmarks/fid/frechet.py (its classifier and code),
one figure per seed; the prior file's size, the fit time, the time to read and check the
file, and the time of one draw of 16 and of 256 latents (GaussianMixture.sample, median).

Reference images are those of benchmarks/fid/frechet.py: Fashion-MNIST's 10,000 test
images; all emoji images, and for emoji also the 630 held-out ones alone (FD against images
whose latents no prior saw). `--baselines` adds the reference figures: the reconstructions
of the reference images (the decoder's ceiling), decoded training latents (a perfect prior,
posterior means and posterior draws), and two halves of the data (the floor).

Results merge into the --json file per model and candidate, so runs can add candidates,
seeds or sample counts; each run appends its command, date, machine and wall time. Fits and
latents are cached in --cache. `--write NAME[@T]` writes that candidate, its covariance
factors multiplied by T, to benchmarks/priors/MODEL-prior.npz and records its manifest entry.
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import json
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from sklearn.mixture import GaussianMixture as SkMixture

import vaesdk
from vaesdk.evaluation.datasets import load_fashion_mnist, load_image_folder, split_indices
from vaesdk.export.fit_prior import REG_COVAR, cluster_latents, cluster_mixture, mixture_from_sklearn
from vaesdk.maths.priors import MAX_COMPONENTS, GaussianMixture

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE / "fid"))
from frechet import CLASSIFIERS, FeatureExtractor, frechet_distance, reference_sets  # noqa: E402

DATA = {"emoji": "data/emoji"}  # image folders of the bundled colour models (frechet.py's --data)
COMPONENTS = (40, 100, 300, 1000, 3000)
EM_COMPONENTS = (40, 100)  # EM beyond this costs hours on a few cores; k-means covers larger K
EM_POINTS = 20_000
SHRINKAGE = (1.0, 4.0, 16.0, 64.0)  # pseudo-points towards the pooled covariance; chosen by held-out likelihood
SHRINKAGE_POINTS = 1000  # held-out latents used to choose the shrinkage
LIKELIHOOD_POINTS = 5000
MAX_PRIOR_BYTES = 64 * 1024 * 1024  # the format's limit (vaesdk.bundle.format)
BUDGET = {"bytes": 10 * 1024 * 1024, "draw_16_ms": 1.0}  # what a bundle may carry and cost per draw


# ---- latents and reference features ---------------------------------------------------------


def run_images(model: vaesdk.Model) -> tuple[np.ndarray, np.ndarray]:
    """(training images, validation images) of the model's own run, as the manifest records it."""
    manifest = json.loads((model.path / "manifest.json").read_text(encoding="utf-8"))
    split = manifest["training"]["dataset"]["split"]
    if model.name == "fashion-mnist":
        images = load_fashion_mnist(split="train").images
    else:
        h, _, c = model.image_shape
        images = load_image_folder(DATA[model.name], h, c).images
    train_idx, val_idx = split_indices(len(images), split["val_fraction"], split["seed"])
    return images[np.sort(train_idx)], images[np.sort(val_idx)]


def cached(path: Path, make) -> dict[str, np.ndarray]:
    if path.is_file():
        with np.load(path) as f:
            return dict(f)
    arrays = make()
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return arrays


def latents(model: vaesdk.Model, cache: Path, log) -> dict[str, np.ndarray]:
    def make():
        train, val = run_images(model)
        log(f"encoding {len(train)} training and {len(val)} validation images")
        a, b = model.encode(train), model.encode(val)
        return {"train_mean": a.mean, "train_logvar": a.logvar, "held_mean": b.mean, "held_logvar": b.logvar}

    return cached(cache / f"{model.name}-latents.npz", make)


def references(model: vaesdk.Model, features: FeatureExtractor, cache: Path) -> dict[str, np.ndarray]:
    """Features of the reference images ('all') and, for a folder, of its held-out images ('held_out')."""

    def make():
        reference, held_out = reference_sets(model, DATA.get(model.name))
        out = {"all": features(reference.images)}
        if DATA.get(model.name):
            out["held_out"] = features(held_out)
        return out

    refs = cached(cache / f"{model.name}-reference-features.npz", make)
    return {**refs, "all_radii": knn_radii(refs["all"])}


# ---- candidates -----------------------------------------------------------------------------


def candidate_names(dim: int) -> list[str]:
    names = ["shipped"]
    for fit in ("means", "draws"):
        names += [f"em-{fit}-{k}-{cov}" for k in EM_COMPONENTS for cov in ("full", "diag")]
    for fit in ("means", "aggregate"):
        names += [f"kmeans-{fit}-{k}-{cov}" for k in COMPONENTS for cov in ("full", "diag")]
    return names + ["latents-posterior", "latents-narrow"]


def stored_bytes(name: str, dim: int) -> int:
    """The prior file's size before fitting (the format's limit rules some candidates out)."""
    parts = name.split("-")
    if parts[0] not in ("em", "kmeans"):
        return 0
    k = int(parts[2])
    factor = k * dim * dim if parts[3] == "full" else k * dim
    return 8 * (k + k * dim + factor)


def mean_log_prob(mixture: GaussianMixture, z: np.ndarray, chunk: int = 128) -> float:
    """Mean log density of latents z [N, D] (GaussianMixture.log_prob in chunks: it holds [K, chunk, D])."""
    chunk = max(1, min(chunk, int(2e8 // (8 * mixture.components * mixture.dim))))
    return float(np.concatenate([mixture.log_prob(z[i : i + chunk]) for i in range(0, len(z), chunk)]).mean())


def tempered(mixture: GaussianMixture, t: float) -> GaussianMixture:
    """The mixture the runtime draws from at temperature t: each component's factor times t."""
    return GaussianMixture(mixture.weights, mixture.means, mixture.cholesky * t)


def fit(name: str, model: vaesdk.Model, lat: dict[str, np.ndarray], labels_cache: Path, log) -> tuple[GaussianMixture, dict]:
    rng = np.random.default_rng(0)
    train, held = lat["train_mean"].astype(np.float64), lat["held_mean"].astype(np.float64)
    if name == "shipped":
        entry = json.loads((model.path / "manifest.json").read_text(encoding="utf-8"))["latent"]["mixtures"]["mixture"]
        blob = (model.path / entry["file"]).read_bytes()
        return GaussianMixture.from_npz(blob, model.latent_dim, entry["file"]), {"fit_points": entry.get("fit_points"), "fit_seconds": None}
    parts = name.split("-")
    if parts[0] == "em":
        _, source, k, cov = parts
        points = train
        if source == "draws":
            points = train + np.exp(0.5 * lat["train_logvar"]) * rng.standard_normal(train.shape)
        if len(points) > EM_POINTS:
            points = points[rng.choice(len(points), EM_POINTS, replace=False)]
        t0 = time.perf_counter()
        sk = SkMixture(int(k), covariance_type="full" if cov == "full" else "diag", reg_covar=REG_COVAR, max_iter=100, random_state=0).fit(points)
        seconds = time.perf_counter() - t0
        mixture = mixture_from_sklearn(sk, "full" if cov == "full" else "diagonal")
        return mixture, {"fit_points": len(points), "fit_seconds": round(seconds, 1), "em_iterations": int(sk.n_iter_), "converged": bool(sk.converged_)}
    if parts[0] == "kmeans":
        _, source, k, cov = parts
        path = labels_cache / f"{model.name}-kmeans-{k}.npz"
        if path.is_file():
            with np.load(path) as f:
                labels, kmeans_seconds = f["labels"], float(f["seconds"])
        else:
            log(f"  k-means, {k} clusters of {len(train)} latents")
            t0 = time.perf_counter()
            labels = cluster_latents(train, int(k))
            kmeans_seconds = time.perf_counter() - t0
            np.savez(path, labels=labels, seconds=kmeans_seconds)
        variance = np.exp(lat["train_logvar"].astype(np.float64)) if source == "aggregate" else None
        covariance = "full" if cov == "full" else "diagonal"
        check = held[:SHRINKAGE_POINTS]
        scores = {}
        t0 = time.perf_counter()
        for s in SHRINKAGE:
            scores[s] = mean_log_prob(cluster_mixture(train, labels, covariance=covariance, shrinkage=s, posterior_variance=variance), check)
        select_seconds = time.perf_counter() - t0
        best = max(scores, key=scores.get)
        t0 = time.perf_counter()
        mixture = cluster_mixture(train, labels, covariance=covariance, shrinkage=best, posterior_variance=variance)
        seconds = kmeans_seconds + time.perf_counter() - t0
        return mixture, {
            "fit_points": len(train), "fit_seconds": round(seconds, 1), "kmeans_seconds": round(kmeans_seconds, 1),
            "shrinkage": best, "shrinkage_held_out_ll": {str(s): round(v, 2) for s, v in scores.items()},
            "shrinkage_selection_seconds": round(select_seconds, 1),
        }  # fmt: skip
    if parts[0] == "latents":
        t0 = time.perf_counter()
        idx = np.sort(rng.choice(len(train), min(MAX_COMPONENTS, len(train)), replace=False))
        scales = np.exp(0.5 * lat["train_logvar"][idx].astype(np.float64)) * (0.1 if parts[1] == "narrow" else 1.0)
        mixture = GaussianMixture(np.full(len(idx), 1.0 / len(idx)), train[idx], scales)
        return mixture, {"fit_points": len(idx), "fit_seconds": round(time.perf_counter() - t0, 1)}
    raise SystemExit(f"unknown candidate {name!r}; known: {', '.join(candidate_names(model.latent_dim))}")


def draw_ms(mixture: GaussianMixture, n: int, rounds: int = 7) -> float:
    """Median milliseconds of one mixture.sample(n) call, each round about 0.1 s of calls."""
    rng = np.random.default_rng(0)
    mixture.sample(n, rng)  # the first call builds the cumulative weights
    t0, calls = time.perf_counter(), 0
    while time.perf_counter() - t0 < 0.05:
        mixture.sample(n, rng)
        calls += 1
    per_round = max(1, int(calls * 2))
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(per_round):
            mixture.sample(n, rng)
        times.append((time.perf_counter() - t0) / per_round * 1e3)
    return statistics.median(times)


def log_prob_ms(mixture: GaussianMixture, z: np.ndarray, rounds: int = 3) -> float:
    """Median milliseconds of one mixture.log_prob call on a batch of latents (what the
    anomaly score's latent part costs per batch; it holds [K, batch, D] arrays)."""
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        mixture.log_prob(z)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def load_ms(blob: bytes, dim: int, rounds: int = 3) -> float:
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        GaussianMixture.from_npz(blob, dim, "prior")
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def describe(mixture: GaussianMixture, blob: bytes, lat: dict[str, np.ndarray], temperatures: list[float]) -> dict:
    """Size, speed and likelihoods of a fitted mixture, per temperature."""
    rng = np.random.default_rng(1)
    held, held_logvar = lat["held_mean"].astype(np.float64), lat["held_logvar"].astype(np.float64)
    held, held_logvar = held[:LIKELIHOOD_POINTS], held_logvar[:LIKELIHOOD_POINTS]
    held_draws = held + np.exp(0.5 * held_logvar) * rng.standard_normal(held.shape)
    train = lat["train_mean"].astype(np.float64)
    train = train[np.random.default_rng(2).choice(len(train), min(LIKELIHOOD_POINTS, len(train)), replace=False)]
    out = {
        "components": mixture.components,
        "covariance": "diagonal" if mixture.diagonal else "full",
        "bytes": len(blob),
        "load_ms": round(load_ms(blob, mixture.dim), 1),
        "draw_16_ms": round(draw_ms(mixture, 16), 4),
        "draw_256_ms": round(draw_ms(mixture, 256), 4),
        "log_prob_256_ms": round(log_prob_ms(mixture, held[:256]), 1),
        "likelihood": {},
    }
    for t in temperatures:
        m = tempered(mixture, t)
        out["likelihood"][str(t)] = {
            "held_out": round(mean_log_prob(m, held), 3),
            "held_out_draws": round(mean_log_prob(m, held_draws), 3),
            "train": round(mean_log_prob(m, train), 3),
        }
    return out


# ---- Fréchet distances ----------------------------------------------------------------------


PR_NEIGHBOURS = 3  # k of the k-nearest-neighbour balls of improved precision and recall


def _squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.maximum((a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T, 0.0)


def knn_radii(f: np.ndarray, k: int = PR_NEIGHBOURS, chunk: int = 2000) -> np.ndarray:
    """Squared distance of each feature vector [N, F] to its k-th nearest other one."""
    return np.concatenate([np.partition(_squared_distances(f[i : i + chunk], f), k, axis=1)[:, k] for i in range(0, len(f), chunk)])


def covered(a: np.ndarray, b: np.ndarray, radii_b: np.ndarray, chunk: int = 2000) -> float:
    """The fraction of a's vectors inside at least one of b's k-nearest-neighbour balls."""
    return float(np.concatenate([(_squared_distances(a[i : i + chunk], b) <= radii_b[None, :]).any(1) for i in range(0, len(a), chunk)]).mean())


def precision_recall(samples: np.ndarray, reference: np.ndarray, reference_radii: np.ndarray) -> dict[str, float]:
    """Improved precision and recall (Kynkäänniemi et al., 2019) in the same features as the
    FD: precision, the share of samples that fall within the reference images' manifold (how
    realistic they are); recall, the share of reference images within the samples' manifold
    (how much of the data they cover). FD mixes the two; a spread that buys recall with
    precision can lower it, which these two figures show."""
    return {
        "precision": round(covered(samples, reference, reference_radii), 4),
        "recall": round(covered(reference, samples, knn_radii(samples)), 4),
    }


def fd_of_images(images: np.ndarray, features: FeatureExtractor, refs: dict[str, np.ndarray]) -> dict[str, float]:
    """FD against each reference set ('all', 'held_out'), and precision and recall against 'all'."""
    f = features(images)
    out = {key: round(frechet_distance(f, ref), 3) for key, ref in refs.items() if not key.endswith("_radii")}
    if "all_radii" in refs:
        out.update(precision_recall(f, refs["all"], refs["all_radii"]))
    return out


def baselines(model, features, refs, lat, n, seeds, log) -> dict:
    reference, held_out = reference_sets(model, DATA.get(model.name))
    out = {"reference_images": len(reference.images)}
    t0 = time.perf_counter()
    recon_features = features(model.reconstruct(reference.images))
    recon = {"all": frechet_distance(recon_features, refs["all"]), **precision_recall(recon_features, refs["all"], refs["all_radii"])}
    if "held_out" in refs:
        recon["held_out"] = frechet_distance(features(model.reconstruct(held_out)), refs["held_out"])
        out["held_out_images"] = len(held_out)
    out["ceiling_reconstructions"] = {k: round(v, 3) for k, v in recon.items()}
    log(f"  ceiling (reconstructions of the reference images): {out['ceiling_reconstructions']}  {time.perf_counter() - t0:.0f} s")
    ref = refs["all"]
    order = np.random.default_rng(0).permutation(len(ref))
    half_a, half_b = ref[order[: len(ref) // 2]], ref[order[len(ref) // 2 :]]
    out["floor_halves"] = {"all": round(frechet_distance(half_a, half_b), 3), **precision_recall(half_a, half_b, knn_radii(half_b))}
    if "held_out" in refs:  # as many random reference images as held-out ones, against the held-out ones
        train_ref = ref[np.random.default_rng(0).choice(len(ref), len(refs["held_out"]), replace=False)]
        out["floor_held_out_size"] = round(frechet_distance(train_ref, refs["held_out"]), 3)
    train_mean, train_std = lat["train_mean"], np.exp(0.5 * lat["train_logvar"])
    for key in ("perfect_prior_means", "perfect_prior_draws"):
        out[key] = {}
        for seed in seeds:
            rng = np.random.default_rng(seed)
            idx = rng.choice(len(train_mean), min(n, len(train_mean)), replace=False)
            z = train_mean[idx]
            if key.endswith("draws"):
                z = (z + train_std[idx] * rng.standard_normal(z.shape)).astype(np.float32)
            out[key][str(seed)] = fd_of_images(model.decode(z), features, refs)
        log(f"  {key}: {out[key]}")
    out["n"] = n
    return out


def sample_fd(mixture: GaussianMixture, t: float, n: int, seed: int, model, features, refs) -> dict[str, float]:
    z = mixture.sample(n, np.random.default_rng(seed), temperature=t)
    return fd_of_images(model.decode(z), features, refs)


# ---- main -----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--n", type=int, default=None, help="samples per FD (default: 10000 for 28x28 models, 5000 otherwise)")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds; one FD per seed")
    parser.add_argument("--candidates", default="*", help="comma-separated shell patterns of candidate names")
    parser.add_argument("--temperatures", default="1,0.8")
    parser.add_argument("--baselines", action="store_true", help="also the ceiling, the perfect prior and the floor")
    parser.add_argument("--no-fd", action="store_true", help="fit and describe only")
    parser.add_argument("--json", type=Path, default=HERE / "priors-fd-results.json")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "vaesdk-priors-fd")
    parser.add_argument("--write", default=None, help="NAME[@T], or 'auto' (the rule of `choose` at --n): write it to benchmarks/priors/MODEL-prior.npz")
    args = parser.parse_args()
    started = time.time()
    log = lambda s: print(s, flush=True)  # noqa: E731

    model = vaesdk.load(args.model, device="cpu")
    n = args.n or (10_000 if model.image_shape == (28, 28, 1) else 5_000)
    seeds = [int(s) for s in args.seeds.split(",")]
    temperatures = [float(t) for t in args.temperatures.split(",")]
    args.cache.mkdir(parents=True, exist_ok=True)
    results = json.loads(args.json.read_text()) if args.json.is_file() else {"models": {}, "runs": []}
    entry = results["models"].setdefault(model.name, {"candidates": {}})
    features = FeatureExtractor(CLASSIFIERS[model.image_shape])
    lat = latents(model, args.cache, log)
    refs = references(model, features, args.cache)
    entry.update({
        "train_latents": len(lat["train_mean"]), "held_out_latents": len(lat["held_mean"]),
        "likelihood_points": {"held_out": min(LIKELIHOOD_POINTS, len(lat["held_mean"])), "train": min(LIKELIHOOD_POINTS, len(lat["train_mean"]))},
        "reference": "Fashion-MNIST test split" if model.name == "fashion-mnist" else f"every image of {DATA[model.name]} ('all'); the run's validation images ('held_out')",
    })  # fmt: skip

    def save():
        args.json.write_text(json.dumps(results, indent=1) + "\n")

    if args.write:
        name, _, t = args.write.partition("@")
        if name == "auto":
            name, t = choose(entry, n, log)
        write_prior(model, name, float(t or 1.0), lat, args.cache, entry, log)
        save()
        return

    if args.baselines:
        log(f"{model.name}: baselines, n={n}, seeds {seeds}")
        entry["baselines"] = baselines(model, features, refs, lat, n, seeds, log)
        save()

    patterns = args.candidates.split(",")
    names = [c for c in candidate_names(model.latent_dim) if any(fnmatch.fnmatchcase(c, p) for p in patterns)]
    names += [p for p in patterns if p not in names and re.fullmatch(r"(em-(means|draws)|kmeans-(means|aggregate))-[0-9]+-(full|diag)", p)]
    for name in names:
        record = entry["candidates"].setdefault(name, {})
        if stored_bytes(name, model.latent_dim) > MAX_PRIOR_BYTES:
            record["skipped"] = f"its file would hold {stored_bytes(name, model.latent_dim) / 2**20:.0f} MiB, beyond the format's {MAX_PRIOR_BYTES / 2**20:.0f} MiB"
            log(f"{name}: skipped ({record['skipped']})")
            continue
        mixture, fit_record, blob = load_or_fit(name, model, lat, args.cache, log)
        known = record.get("likelihood", {})
        if "log_prob_256_ms" not in record or not all(str(t) in known for t in temperatures):
            t0 = time.perf_counter()
            described = describe(mixture, blob, lat, temperatures)
            described["likelihood"] = {**known, **described["likelihood"]}
            record.update(fit_record, **described)
            log(f"{name}: {mixture.components} components, {len(blob) / 2**20:.2f} MiB, fit {fit_record.get('fit_seconds')} s, "
                f"draw 16: {record['draw_16_ms']:.3f} ms, held-out LL {json.dumps(record['likelihood'])}  ({time.perf_counter() - t0:.0f} s)")  # fmt: skip
            save()
        if args.no_fd:
            continue
        for t in temperatures:
            fds = record.setdefault("fd", {}).setdefault(str(t), {}).setdefault(str(n), {})
            for seed in seeds:
                if str(seed) in fds and "precision" in fds[str(seed)]:
                    continue
                t0 = time.perf_counter()
                fds[str(seed)] = sample_fd(mixture, t, n, seed, model, features, refs)
                log(f"{name} @ T={t}: FD {fds[str(seed)]} (n={n}, seed {seed}, {time.perf_counter() - t0:.0f} s)")
                save()

    results["runs"].append({
        "command": " ".join(["python", "benchmarks/priors_fd.py", *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%d", time.gmtime(started)),
        "machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} CPUs (shared), {platform.python_version()}",
        "wall_seconds": round(time.time() - started),
    })  # fmt: skip
    save()


def load_or_fit(name: str, model, lat, cache: Path, log) -> tuple[GaussianMixture, dict, bytes]:
    folder = cache / f"{model.name}-fits"
    folder.mkdir(exist_ok=True)
    path, meta = folder / f"{name}.npz", folder / f"{name}.json"
    if path.is_file() and meta.is_file():
        blob = path.read_bytes()
        return GaussianMixture.from_npz(blob, model.latent_dim, name), json.loads(meta.read_text()), blob
    log(f"{name}: fitting")
    mixture, record = fit(name, model, lat, cache, log)
    blob = mixture.to_npz()
    GaussianMixture.from_npz(blob, model.latent_dim, name)  # the runtime's checks
    path.write_bytes(blob)
    meta.write_text(json.dumps(record))
    return mixture, record, blob


PRECISION_TOLERANCE = 0.02  # how far below decoded training latents' precision a sampler may fall
MIN_SEEDS = 3


def summary(entry: dict, n: int) -> list[dict]:
    """One row per measured candidate and temperature: mean figures over the seeds at n."""
    rows = []
    for name, c in entry["candidates"].items():
        for t, by_n in c.get("fd", {}).items():
            runs = list(by_n.get(str(n), {}).values())
            if not runs:
                continue
            row = {"candidate": name, "temperature": float(t), "seeds": len(runs), **{k: c.get(k) for k in ("components", "covariance", "bytes", "draw_16_ms")}}
            row["held_out_ll"] = c["likelihood"][t]["held_out"]
            for key in runs[0]:
                values = [r[key] for r in runs if key in r]
                row[key] = round(statistics.mean(values), 4)
                if key in ("all", "held_out") and len(values) > 1:
                    row[f"{key}_sd"] = round(statistics.stdev(values), 3)
            rows.append(row)
    return rows


def choose(entry: dict, n: int, log) -> tuple[str, float]:
    """The rule: within BUDGET, a held-out log-likelihood no lower than the shipped mixture's
    (at temperature 1), and a precision no more than PRECISION_TOLERANCE below that of decoded
    training latents (the perfect prior), the lowest mean FD against the held-out reference
    images ('held_out' where the model has them apart, else 'all'), over at least MIN_SEEDS seeds."""
    key = "held_out" if "held_out" in entry["baselines"]["ceiling_reconstructions"] else "all"
    perfect = entry["baselines"]["perfect_prior_means"].values()
    floor = statistics.mean(r["precision"] for r in perfect) - PRECISION_TOLERANCE
    shipped_ll = entry["candidates"]["shipped"]["likelihood"]["1.0"]["held_out"]
    rows = [r for r in summary(entry, n) if r["seeds"] >= MIN_SEEDS]
    for r in rows:
        faults = []
        if r["bytes"] > BUDGET["bytes"]:
            faults.append("file over budget")
        if r["draw_16_ms"] > BUDGET["draw_16_ms"]:
            faults.append("draw over budget")
        if r["held_out_ll"] < shipped_ll:
            faults.append("held-out likelihood below the shipped mixture's")
        if r["precision"] < floor:
            faults.append("precision below the floor")
        r["faults"] = faults
    eligible = sorted((r for r in rows if not r["faults"]), key=lambda r: r[key])
    entry["selection"] = {
        "rule": choose.__doc__.split("The rule: ")[1].replace("\n    ", " ").strip(),
        "budget": BUDGET, "fd_key": key, "n": n, "precision_floor": round(floor, 4), "shipped_held_out_ll": shipped_ll,
        "ranking": sorted(rows, key=lambda r: (bool(r["faults"]), r[key])),
    }  # fmt: skip
    if not eligible:
        raise SystemExit("no candidate passes the rule; see selection.ranking in the results")
    best = eligible[0]
    log(f"chosen: {best['candidate']} at T={best['temperature']}: FD {best[key]} ({key}), precision {best['precision']}, held-out LL {best['held_out_ll']}")
    return best["candidate"], best["temperature"]


def write_prior(model, name: str, t: float, lat, cache: Path, entry: dict, log) -> None:
    mixture, record, _ = load_or_fit(name, model, lat, cache, log)
    out = tempered(mixture, t)
    blob = out.to_npz()
    GaussianMixture.from_npz(blob, model.latent_dim, name)
    path = HERE / "priors" / f"{model.name}-prior.npz"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(blob)
    manifest_entry = {
        "file": "prior-mixture.npz",
        "sha256": hashlib.sha256(blob).hexdigest(),
        "bytes": len(blob),
        "components": out.components,
        "covariance": "diagonal" if out.diagonal else "full",
    }
    entry["choice"] = {"candidate": name, "temperature": t, "path": str(path.relative_to(HERE.parent)), "manifest_entry": manifest_entry, "fit": record}
    log(f"wrote {path} ({len(blob)} bytes): {json.dumps(manifest_entry)}")


if __name__ == "__main__":
    main()
