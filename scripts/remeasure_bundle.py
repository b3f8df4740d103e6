#!/usr/bin/env python3
"""Measure a bundle's recorded figures again through the runtime, as export does (needs the `train` extra).

    python scripts/remeasure_bundle.py BUNDLE [--data-dir DIR]

For a bundle whose graphs changed but whose weights did not (a decoder exported again by a newer
exporter): the anomaly calibration is made again on the training run's validation split, and the
metrics are measured again on the recorded test set with the recorded seed and importance
samples, the probe fit on the run's training split, all reproduced from the manifest's
`training.config`. Priors, directions and `metrics.quality` (benchmarks/fid/frechet.py --record)
stay. Only manifest.json changes, and only once every figure is measured.
"""

from __future__ import annotations

import argparse
import sys

from vaesdk.base.errors import VaesdkError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle", help="bundle folder or bundled model name")
    parser.add_argument("--data-dir", help="where the run's training data is now (Fashion-MNIST IDX folder or image folder)")
    args = parser.parse_args(argv)
    try:
        from vaesdk.bundle.registry import resolve
        from vaesdk.export.pipeline import remeasure

        metrics = remeasure(resolve(args.bundle), data_dir=args.data_dir, log=print)
    except VaesdkError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    shown = ("recon_mse", "elbo_bpd", "iw_bpd", "probe_accuracy")
    print("measured again: " + ", ".join(f"{k} {metrics[k]:.6g}" for k in shown if k in metrics))
    return 0


if __name__ == "__main__":
    sys.exit(main())
