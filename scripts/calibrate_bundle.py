#!/usr/bin/env python3
"""Add an anomaly-score calibration to an existing VAE bundle (needs the `train` extra).

    python scripts/calibrate_bundle.py BUNDLE [--out COPY] [--data-dir DIR] [--images FOLDER] [--remeasure]

By default the held-out images are the training run's validation split, reproduced from the
manifest's training.config; --images takes a folder of held-out images instead (never images
the model was trained on). --out writes a calibrated copy and leaves BUNDLE untouched. Only
manifest.json changes; the ONNX files and their checksums do not. --remeasure also measures
the score again on the test set the manifest's metrics record (metrics.anomaly), as export does.
"""

from __future__ import annotations

import argparse
import sys

from vaesdk.base.errors import VaesdkError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle", help="bundle folder or bundled model name")
    parser.add_argument("--out", help="write a calibrated copy here instead of changing BUNDLE")
    parser.add_argument("--data-dir", help="where the run's training data is now (Fashion-MNIST IDX folder or image folder)")
    parser.add_argument("--images", help="a folder of held-out in-distribution images to calibrate on instead")
    parser.add_argument("--remeasure", action="store_true", help="also measure the score again on the recorded test set")
    args = parser.parse_args(argv)
    try:
        from vaesdk.evaluation.datasets import load_image_folder
        from vaesdk.export.calibration import calibrate_bundle, remeasure_anomaly
        from vaesdk.bundle.registry import resolve

        bundle = resolve(args.bundle)
        images = source = None
        if args.images:
            m = __import__("vaesdk").load(bundle, device="cpu")
            h, _, c = m.image_shape
            images, source = load_image_folder(args.images, h, c).images, f"image folder {args.images}"
        path = calibrate_bundle(bundle, images=images, source=source, data_dir=args.data_dir, out=args.out)
        if args.remeasure:
            measured = remeasure_anomaly(path)
            print(f"measured again on {measured['test_images']} test images: " + ", ".join(
                f"{name} AUROC {r['auroc']:.4f}" for name, r in measured["ood"].items()
            ))
    except VaesdkError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    print(f"calibrated the anomaly score of {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
