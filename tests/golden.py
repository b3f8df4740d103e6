"""Golden outputs of the bundled models: seeded `vae` commands pinned pixel for pixel.

`compute(model)` runs each command of the model's cases through the CLI (in this process,
CliRunner) on a few of its images (Fashion-MNIST test images; for `emoji`, the emoji PNGs in
tests/data/emoji-inputs) and returns what it made: the pixels of each PNG (shape, sha256
and the pixels themselves, so a failure can say how far off it is) and the `score` figures.
tests/test_golden.py compares that with tests/golden/<model>.json. When the bundled model
changes on purpose, `scripts/regenerate-golden` rewrites the JSON (this file, run with
--write) and the docs' pictures (docs/make_examples.sh) in one go.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import sys
import tempfile
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

GOLDEN_DIR = Path(__file__).resolve().parent / "golden"
MODEL = "fashion-mnist"
# Inputs: the first Fashion-MNIST test image of each of these classes.
INPUT_CLASSES = ("shirt", "trouser", "sneaker", "bag")
EMOJI_INPUTS = Path(__file__).resolve().parent / "data" / "emoji-inputs"
SCORE_FIELDS = ("elbo_bpd", "iw_bpd", "anomaly", "p_value")
# Relative tolerance for the score figures: float64 sums over the same float32 network
# outputs; a different CPU kernel changes them in the last digits only.
SCORE_RTOL = 1e-6

# {DIM0}, {DIM1}: the model's most used latent dimensions, so the cases fit any replacement model.
CASES: dict[str, list[str]] = {
    "sample": ["sample", "--n", "16", "--seed", "0", "-o", "sample.png"],
    "sample-aggregate-pixels": ["sample", "--n", "8", "--seed", "3", "--prior", "aggregate", "--temperature", "0.8",
                                "--truncation", "2", "--sample-pixels", "-o", "sample-aggregate.png"],
    "traverse": ["traverse", "inputs/shirt.png", "--rows", "3", "--steps", "5", "-o", "traverse.png"],
    "traverse-prior": ["traverse", "--seed", "1", "--dims", "{DIM0},{DIM1}", "--range", "-2", "2", "--steps", "4", "-o", "traverse-prior.png"],
    "edit-dim": ["edit", "inputs/shirt.png", "--dim", "{DIM0}", "--delta", "2", "-o", "edit-dim.png"],
    "edit-direction": ["edit", "inputs/trouser.png", "--direction", "sneaker", "--delta", "1", "--sample-latent",
                       "--seed", "2", "-o", "edit-direction.png"],
    "reconstruct": ["reconstruct", "inputs/bag.png", "-o", "reconstruct.png"],
    "score": ["score", "inputs", "--k", "100", "--seed", "0", "--json"],
}  # fmt: skip
EMOJI_CASES: dict[str, list[str]] = {
    "sample": ["sample", "--n", "16", "--seed", "0", "-o", "sample.png"],
    "sample-pixels": ["sample", "--n", "4", "--seed", "3", "--sample-pixels", "-o", "sample-pixels.png"],
    "sample-animals": ["sample", "--n", "8", "--seed", "1", "--prior", "animals", "-o", "sample-animals.png"],
    "traverse": ["traverse", "inputs/grinning.png", "--rows", "3", "--steps", "5", "-o", "traverse.png"],
    "edit-direction": ["edit", "inputs/grinning.png", "--direction", "animals", "--delta", "1", "-o", "edit-direction.png"],
    "interpolate": ["interpolate", "inputs/dog.png", "inputs/rocket.png", "--steps", "6", "-o", "interpolate.png"],
    "reconstruct": ["reconstruct", "inputs/apple.png", "-o", "reconstruct.png"],
    "score": ["score", "inputs", "--k", "100", "--seed", "0", "--json"],
}  # fmt: skip
MODEL_CASES = {"fashion-mnist": CASES, "emoji": EMOJI_CASES}


def _inputs(folder: Path, model: str = MODEL) -> dict[str, Any]:
    """Write the input images as PNG files into folder/inputs; where they come from."""
    (folder / "inputs").mkdir()
    if model == "emoji":
        names = sorted(p.name for p in EMOJI_INPUTS.glob("*.png"))
        for name in names:
            (folder / "inputs" / name).write_bytes((EMOJI_INPUTS / name).read_bytes())
        return {name: hashlib.sha256((EMOJI_INPUTS / name).read_bytes()).hexdigest() for name in names}
    from vaesdk.evaluation.datasets import load_fashion_mnist
    from vaesdk.imaging.images import save_png

    test = load_fashion_mnist(split="test")
    indices = {}
    for name in INPUT_CLASSES:
        indices[name] = int((test.labels == test.class_names.index(name)).argmax())
        save_png(folder / "inputs" / f"{name}.png", test.images[indices[name]])
    return indices


@contextmanager
def _cwd(path: Path):
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def pixels_record(pixels: np.ndarray) -> dict[str, Any]:
    pixels = np.ascontiguousarray(pixels, np.uint8)
    return {
        "shape": list(pixels.shape),
        "sha256": hashlib.sha256(pixels.tobytes()).hexdigest(),
        "pixels": base64.b64encode(zlib.compress(pixels.tobytes(), 9)).decode(),
    }


def pixels_from_record(record: dict[str, Any]) -> np.ndarray:
    return np.frombuffer(zlib.decompress(base64.b64decode(record["pixels"])), np.uint8).reshape(record["shape"])


def model_identity(name: str = MODEL) -> dict[str, Any]:
    """What the golden outputs belong to: the bundled model's files, by checksum."""
    import vaesdk

    model = vaesdk.load(name, device="cpu")
    manifest = model.manifest.data
    return {
        "model": name,
        "encoder_sha256": manifest["encoder"]["sha256"],
        "decoder_sha256": manifest["decoder"]["sha256"],
        "dims_by_usage": model.dims_by_usage()[:2],
    }


def compute(model: str = MODEL) -> dict[str, Any]:
    from typer.testing import CliRunner

    from vaesdk.cli.main import app

    runner = CliRunner()
    out: dict[str, Any] = model_identity(model)
    dims = {"DIM0": str(out["dims_by_usage"][0]), "DIM1": str(out["dims_by_usage"][1])}
    out["commands"] = {}
    with tempfile.TemporaryDirectory() as tmp, _cwd(Path(tmp)):
        out["inputs"] = _inputs(Path(tmp), model)
        for name, template in MODEL_CASES[model].items():
            args = [a.format(**dims) for a in template]
            result = runner.invoke(app, [*args, "-m", model, "--device", "cpu"])
            if result.exit_code != 0:
                raise RuntimeError(f"vae {' '.join(args)} failed ({result.exit_code}): {result.output}")
            entry: dict[str, Any] = {"command": "vae " + " ".join(args)}
            if "--json" in args:
                scores = json.loads(result.stdout)["scores"]
                entry["scores"] = [{"file": Path(s["file"]).name, **{k: s[k] for k in SCORE_FIELDS}} for s in scores]
            else:
                with Image.open(args[args.index("-o") + 1]) as im:
                    entry.update(pixels_record(np.asarray(im)))
            out["commands"][name] = entry
    return out


def golden_path(model: str = MODEL) -> Path:
    return GOLDEN_DIR / f"{model}.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="rewrite tests/golden/MODEL.json (else print what they belong to)")
    parser.add_argument("models", nargs="*", default=list(MODEL_CASES), help=f"models (default: {', '.join(MODEL_CASES)})")
    args = parser.parse_args()
    for model in args.models:
        data = compute(model)
        if args.write:
            GOLDEN_DIR.mkdir(exist_ok=True)
            golden_path(model).write_text(json.dumps(data, indent=1) + "\n")
            print(f"wrote {golden_path(model)}", file=sys.stderr)
        else:
            json.dump({k: v for k, v in data.items() if k != "commands"}, sys.stdout, indent=1)


if __name__ == "__main__":
    main()
