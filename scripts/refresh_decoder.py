#!/usr/bin/env python3
"""Export a bundle's decoder again from the run it came from, with today's exporter (needs the `train` extra).

    python scripts/refresh_decoder.py BUNDLE RUN_DIR [--out COPY] [--data-dir DIR]

RUN_DIR is the training run (or checkpoints/NAME) the bundle was exported from; its model
configuration must match the manifest's. The parity gate holds the bundle's encoder and the new
decoder to the run's weights on the images the export used. decoder.onnx and the manifest's
decoder entry, `parity` and `onnx` change (`onnx.decoder_refreshed` says by how much the outputs
moved), and the anomaly calibration and metrics are measured again as export measures them
(scripts/remeasure_bundle.py); priors, directions and `metrics.quality` are kept. --out writes a
copy and leaves BUNDLE untouched.
"""

from __future__ import annotations

import argparse
import sys

from vaesdk.base.errors import VaesdkError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle", help="bundle folder or bundled model name")
    parser.add_argument("run_dir", help="the training run (or checkpoints/NAME) the bundle was exported from")
    parser.add_argument("--out", help="write the refreshed copy here instead of changing BUNDLE")
    parser.add_argument("--data-dir", help="where the run's training data is now (Fashion-MNIST IDX folder or image folder)")
    args = parser.parse_args(argv)
    try:
        from vaesdk.bundle.registry import resolve
        from vaesdk.export.pipeline import refresh_decoder

        change = refresh_decoder(resolve(args.bundle), args.run_dir, out=args.out, data_dir=args.data_dir, log=print)
    except VaesdkError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    print("largest change of each output: " + ", ".join(f"{k} {v:.3g}" for k, v in change["max_abs_change"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
