"""Export's rule for the shipped prior (export/fit_prior.choose_prior), replayed on candidates of
benchmarks/priors_fd.py whose sample quality that script measured in classifier features: does
the label-free sample distance export uses (decode seeded draws, encode the images again,
Fréchet distance of their posterior means to the held-out images') pick what the classifier
features picked?

    python benchmarks/prior_choice.py --model fashion-mnist [--cache DIR] [--json benchmarks/prior-choice-results.json]
    python benchmarks/prior_choice.py --model emoji

Candidates are fitted (or read from --cache) by priors_fd.py's `load_or_fit`; each gets the
distance export computes (`pipeline.sample_distance`, SAMPLE_DISTANCE_DRAWS draws, seed 0),
its held-out log-likelihood, and the classifier FD priors_fd.py recorded for it at
temperature 1 (benchmarks/priors-fd-results.json, seed 0), and `choose_prior` runs on them.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import priors_fd  # noqa: E402

import vaesdk  # noqa: E402
from vaesdk.export.fit_prior import choose_prior  # noqa: E402
from vaesdk.export.pipeline import SAMPLE_DISTANCE_DRAWS, sample_distance  # noqa: E402

CANDIDATES = {
    "fashion-mnist": ["em-means-40-full", "kmeans-aggregate-40-diag", "kmeans-aggregate-100-full", "kmeans-aggregate-300-full",
                      "kmeans-aggregate-1000-full", "kmeans-aggregate-3000-diag", "latents-posterior"],
    "emoji": ["kmeans-aggregate-40-full", "kmeans-aggregate-60-full", "kmeans-aggregate-300-diag", "kmeans-aggregate-1000-diag",
              "kmeans-aggregate-2000-diag", "kmeans-aggregate-3000-diag", "latents-posterior"],
}  # fmt: skip


def classifier_fd(results: dict, model: str, name: str) -> float | None:
    fd = results["models"][model]["candidates"].get(name, {}).get("fd", {}).get("1.0", {})
    for runs in fd.values():
        if "0" in runs:
            return runs["0"]["all"]
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, choices=sorted(CANDIDATES))
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "vaesdk-priors-fd")
    parser.add_argument("--json", type=Path, default=HERE / "prior-choice-results.json")
    args = parser.parse_args()
    t0 = time.time()
    log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    model = vaesdk.load(args.model, device="cpu")
    args.cache.mkdir(parents=True, exist_ok=True)
    lat = priors_fd.latents(model, args.cache, log)
    held = lat["held_mean"].astype("float64")
    fd_results = json.loads((HERE / "priors-fd-results.json").read_text())
    candidates = []
    for name in CANDIDATES[args.model]:
        mixture, record, _ = priors_fd.load_or_fit(name, model, lat, args.cache, log)
        candidates.append((name, mixture, {"components": mixture.components, "covariance": "diagonal" if mixture.diagonal else "full"}))
    chosen, _, rows = choose_prior(candidates, held, sample_distance(model, held), log=log)
    for row in rows:
        row["classifier_fd"] = classifier_fd(fd_results, args.model, row["candidate"])
    out = json.loads(args.json.read_text()) if args.json.is_file() else {}
    out[args.model] = {
        "chosen": chosen, "draws": SAMPLE_DISTANCE_DRAWS, "held_out_latents": len(held), "candidates": rows,
        "command": " ".join(["python", "benchmarks/prior_choice.py", *sys.argv[1:]]),
        "date": datetime.now(timezone.utc).replace(microsecond=0).isoformat(), "machine": f"{platform.machine()}, {__import__('os').cpu_count()} cores",
        "seconds": round(time.time() - t0, 1),
    }  # fmt: skip
    args.json.write_text(json.dumps(out, indent=1) + "\n")
    print(f"{args.model}: chose {chosen}")
    for r in rows:
        print(f"  {r['candidate']:28s} distance {r['sample_distance']!s:8s} held-out LL {r['held_out_log_likelihood']:9.2f}  classifier FD {r['classifier_fd']}  {'<- chosen' if r['chosen'] else ''}")


if __name__ == "__main__":
    main()
