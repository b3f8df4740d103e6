#!/usr/bin/env bash
# Make the pictures in docs/images (or in OUT_DIR) with the commands docs/cli.md shows.
# Usage: docs/make_examples.sh [OUT_DIR]. Needs `vae` on PATH from an installed vaesdk (the
# bundled model) and Debian's dataset-fashion-mnist for the inputs; PYTHON picks the
# interpreter (default python3). scripts/regenerate-golden runs it; tests/test_golden.py
# checks that the committed pictures are what it makes.
set -euo pipefail
out=${1:-"$(dirname "$0")/images"}
python=${PYTHON:-python3}
docs=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out/inputs"
cd "$out"
rm -rf ./*.png inputs/*.png recon emoji
"$python" - <<'PY'
from vaesdk.evaluation.datasets import load_fashion_mnist
from vaesdk.imaging.images import save_png
test = load_fashion_mnist(split="test")
# First test images of a few classes, as the inputs of the examples.
for name in ("shirt", "trouser", "sneaker", "ankle-boot", "bag", "pullover"):
    i = int((test.labels == test.class_names.index(name)).argmax())
    save_png(f"inputs/{name}.png", test.images[i], overwrite=True)
PY
vae sample --n 32 --seed 0 --ncols 8 -o sample.png
vae sample --n 32 --seed 0 --ncols 8 --sample-pixels -o sample-pixels.png
vae sample --n 32 --seed 0 --ncols 8 --prior standard -o sample-standard.png
vae sample --n 32 --seed 0 --ncols 8 --prior aggregate -o sample-aggregate.png
vae sample --n 16 --seed 0 --ncols 8 --prior ankle-boot -o sample-ankle-boot.png
vae reconstruct inputs/*.png --side-by-side --scale 2 --out-dir recon
vae edit inputs/shirt.png --dim "$(vae info --json | "$python" -c 'import json,sys; print(json.load(sys.stdin)["dims_by_usage"][0])')" --delta 2 --side-by-side --scale 2 -o edit-dim.png
vae edit inputs/pullover.png --direction trouser --delta 2 --side-by-side --scale 2 -o edit-direction.png
vae interpolate inputs/sneaker.png inputs/ankle-boot.png --steps 8 -o interpolate.png
vae interpolate inputs/shirt.png inputs/trouser.png --steps 8 -o interpolate-shirt-trouser.png
vae traverse inputs/shirt.png --rows 6 --steps 9 -o traverse.png
"$python" "$docs/make_covariance_figure.py" --out covariance.png >/dev/null

# The colour model, `emoji`, on the emoji PNGs committed in tests/data/emoji-inputs.
mkdir -p emoji/inputs
cp "$docs/../tests/data/emoji-inputs/"*.png emoji/inputs/
(
  cd emoji
  vae sample -m emoji --n 32 --seed 0 --ncols 8 -o sample.png
  vae sample -m emoji --n 16 --seed 0 --ncols 8 --prior standard -o sample-standard.png
  vae sample -m emoji --n 16 --seed 0 --ncols 8 --prior animals -o sample-animals.png
  vae reconstruct -m emoji inputs/*.png --side-by-side --out-dir recon
  vae edit -m emoji inputs/grinning.png --direction animals --delta 1 --side-by-side -o edit-animals.png
  vae interpolate -m emoji inputs/dog.png inputs/rocket.png --steps 8 -o interpolate.png
  vae traverse -m emoji inputs/grinning.png --rows 6 --steps 9 -o traverse.png
)
