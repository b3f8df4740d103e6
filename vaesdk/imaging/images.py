"""Reading images safely into the model's format, and writing PNGs atomically.

Input policy (documented in the README, applied identically by the API, the CLI and
the training image-folder dataset):

* Formats: PNG, JPEG, BMP, GIF, WebP and TIFF only, identified by content, not by name.
* Size: at most MAX_PIXELS pixels, checked from the header before any pixel is decoded;
  truncated or undecodable files are refused. Animations: the first frame only.
* Orientation: the EXIF orientation tag is applied.
* Modes: transparency is composited onto black (the background of the training data);
  16-bit ('I;16*') is scaled by 255/65535; 32-bit integer ('I') is treated as 16-bit when it
  lies in [0, 65535] and min-max stretched otherwise; float ('F') is taken as [0, 1] when it
  lies there and min-max stretched otherwise; every other mode goes through Pillow's
  conversion to RGB, then to the model's channel count (luma 'L' for one channel).
* Geometry: the image is scaled (Lanczos) so its longer side equals the model's size,
  keeping its aspect ratio, and centred on a black square; any aspect ratio is accepted.

Arrays are accepted as uint8 [H, W], [H, W, C] or batches [N, H, W(, C)] with C in {1, 3, 4};
bool, uint16 and float arrays (finite, in [0, 1]) are converted by the same rules.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import re
import struct
import threading
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..base.checks import positive_int
from ..base.errors import InvalidArgumentError, InvalidImageError
from ..base.fileio import checked_path, write_atomic

ALLOWED_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "WEBP", "TIFF")
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
# Pillow warns above 89.5 M pixels and refuses above twice that; vaesdk refuses far earlier.
MAX_PIXELS = 40_000_000
MAX_FILE_BYTES = 256 * 1024 * 1024

ImageInput = Union[str, os.PathLike, bytes, BinaryIO, Image.Image, np.ndarray]


def read_stream(stream: BinaryIO, label: str = "stdin") -> bytes:
    """The bytes of `stream` (stdin, a pipe), counted while they are read: one byte past
    MAX_FILE_BYTES stops the read with InvalidImageError, whatever the stream holds."""
    chunks, size = [], 0
    while True:
        chunk = stream.read(min(1 << 20, MAX_FILE_BYTES + 1 - size))
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        size += len(chunk)
        if size > MAX_FILE_BYTES:
            raise InvalidImageError(f"{label} holds more than {MAX_FILE_BYTES} bytes, the limit for an image file; pass a smaller image")


def image_suffix(name: str) -> str:
    """The suffix that makes `name` an image file: `..png` and `.png` are images too
    (os.path.splitext sees no suffix in a name that starts with a dot)."""
    dot = name.rfind(".")
    return name[dot:].lower() if dot >= 0 else ""

class DecodeBudget:
    """Bytes of decoded images held at once by this process, across threads: a decode first
    takes its estimated peak (`decode_cost`) from the budget and waits while the others hold
    it, so memory is bounded by the budget, not by workers x the largest image. One image
    over the whole budget runs alone."""

    def __init__(self, total: int):
        self.total, self.used = int(total), 0
        self._cond = threading.Condition()

    @contextlib.contextmanager
    def hold(self, nbytes: int) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: self.used == 0 or self.used + nbytes <= self.total)
            self.used += nbytes
        try:
            yield
        finally:
            if nbytes >= TRIM_AT:
                _release_free_memory()
            with self._cond:
                self.used -= nbytes
                self._cond.notify_all()


# glibc keeps what a thread frees in that thread's arena: without giving it back, the next
# decode on another thread would add its peak to the first one's, budget or not.
TRIM_AT = 64 << 20


def _release_free_memory() -> None:
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.lru_cache(maxsize=1)
def _malloc_trim() -> Any:
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


# The peak of decoding, orienting, converting and resizing one image, in multiples of its
# decoded bytes (measured: a 6000x6000 16-bit RGBA PNG, 144 MB decoded, peaks near 784 MB).
DECODE_PEAK_FACTOR = 6
_BAND_BYTES = {"I": 4, "F": 4, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2}


def decode_cost(w: int, h: int, mode: str) -> int:
    """Estimated peak bytes of turning a w x h image of Pillow `mode` into the model's input:
    at least 4 bytes a pixel (alpha is composited in RGBA), times DECODE_PEAK_FACTOR."""
    try:
        bands = Image.getmodebands(mode)
    except (KeyError, ValueError):
        bands = 4
    return w * h * max(4, bands * _BAND_BYTES.get(mode, 1)) * DECODE_PEAK_FACTOR


def _available_memory() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 4 << 30


# A quarter of the memory free at import, between 1 and 4 GiB: the largest image the pixel
# limit admits (40 M pixels, about 960 MB at its peak) always fits alone.
DECODE_BUDGET = DecodeBudget(min(4 << 30, max(1 << 30, _available_memory() // 4)))


# Pillow warns "Corrupt EXIF data" (with its own file path) when an image's EXIF block is
# damaged; the image still decodes and only its orientation tag is lost, which the image policy
# tolerates, so the warning is silenced rather than shown to users.
warnings.filterwarnings("ignore", message="Corrupt EXIF data", category=UserWarning, module=r"PIL\.")

# warnings.catch_warnings swaps process-wide state; the lock keeps our own threads from
# restoring each other's filters mid-open.
_open_lock = threading.Lock()


def pixel_limit(max_pixels: int | None) -> int:
    """The pixel limit in force: MAX_PIXELS, or a caller's lower one (a server's per-upload limit)."""
    if max_pixels is None:
        return MAX_PIXELS
    return positive_int("max_pixels", max_pixels, MAX_PIXELS, hint=f"(or None for {MAX_PIXELS})")


def _check_pixels(w: int, h: int, label: str, limit: int) -> None:
    if w * h > limit:
        raise InvalidImageError(f"{label} is {w}x{h} pixels; the limit is {limit} pixels in all")


def _open(source: Any, label: str, limit: int) -> Image.Image:
    if isinstance(source, (str, os.PathLike)):
        path = checked_path(source, InvalidImageError, "image path")
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise InvalidImageError(f"{label} does not exist") from None
        except OSError as e:
            raise InvalidImageError(f"cannot read image file {label}: {e.strerror or e}") from None
        if not path.is_file():
            raise InvalidImageError(f"{label} is not a regular file")
        if size > MAX_FILE_BYTES:
            raise InvalidImageError(f"{label} is {size} bytes; the limit for an image file is {MAX_FILE_BYTES}")
        try:
            source = path.read_bytes()
        except OSError as e:
            raise InvalidImageError(f"cannot read image file {label}: {e.strerror or e}") from None
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) > MAX_FILE_BYTES:
            raise InvalidImageError(f"{label} is {len(source)} bytes; the limit for an image file is {MAX_FILE_BYTES}")
        source = io.BytesIO(source)
    try:
        with _open_lock, warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(source, formats=ALLOWED_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise InvalidImageError(f"{label} declares {_bomb_pixels(e)}; the limit is {limit} pixels in all") from None
    except UnidentifiedImageError:
        raise InvalidImageError(
            f"{label} is not a readable image; supported formats: {', '.join(ALLOWED_FORMATS)}"
        ) from None
    except (OSError, ValueError, SyntaxError, EOFError, struct.error) as e:
        raise InvalidImageError(f"{label} is not a readable image ({e})") from None
    w, h = im.size
    if w < 1 or h < 1:
        raise InvalidImageError(f"{label} is {w}x{h} pixels; the limit is {limit} pixels in all")
    _check_pixels(w, h, label, limit)
    return im


def _bomb_pixels(e: Exception) -> str:
    """The pixel count in Pillow's decompression-bomb message ("Image size (N pixels) exceeds ..."),
    so the refusal names the size it refused."""
    found = re.search(r"\((\d+) pixels\)", str(e))
    return f"{int(found.group(1))} pixels" if found else "too many pixels"


def _decode(im: Image.Image, label: str, limit: int, from_file: bool = True) -> Image.Image:
    """Decode the first frame (of a file still open) and apply the EXIF orientation."""
    try:
        if from_file:
            im.seek(0)
            im.load()
        im = ImageOps.exif_transpose(im)
    except Image.DecompressionBombError as e:
        raise InvalidImageError(f"{label} decodes to {_bomb_pixels(e)}; the limit is {limit} pixels in all") from None
    except (OSError, ValueError, SyntaxError, EOFError, IndexError, TypeError, struct.error, MemoryError) as e:
        raise InvalidImageError(f"{label} is truncated or corrupt ({e})") from None
    _check_pixels(*im.size, label, limit)
    return im


def _stretch(a: np.ndarray) -> np.ndarray:
    lo, hi = float(a.min()), float(a.max())
    if hi <= lo:
        return np.zeros(a.shape, np.uint8)
    return np.rint((a.astype(np.float64) - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def _high_depth_to_l(im: Image.Image, label: str) -> Image.Image:
    """'I;16*', 'I' and 'F' images to 8-bit 'L', scaled rather than clipped."""
    if im.mode.startswith("I;16"):
        a = np.asarray(im).astype(np.float64)
        return Image.fromarray(np.rint(a * (255.0 / 65535.0)).astype(np.uint8), "L")
    a = np.asarray(im)
    if im.mode == "F" and not np.isfinite(a).all():
        raise InvalidImageError(f"{label} contains NaN or infinite pixels")
    if im.mode == "I" and a.min() >= 0 and a.max() <= 65535:
        out = np.rint(a.astype(np.float64) * (255.0 / 65535.0)).astype(np.uint8)
    elif im.mode == "F" and a.min() >= 0.0 and a.max() <= 1.0:
        out = np.rint(a.astype(np.float64) * 255.0).astype(np.uint8)
    else:
        out = _stretch(a)
    return Image.fromarray(out, "L")


def _to_mode(im: Image.Image, channels: int, label: str) -> Image.Image:
    """Any Pillow mode to 'L' (channels=1) or 'RGB' (channels=3), by the module's policy."""
    if im.mode in ("I", "F") or im.mode.startswith("I;16"):
        im = _high_depth_to_l(im, label)
    has_alpha = im.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (im.mode in ("P", "L", "RGB") and "transparency" in im.info)
    if has_alpha:
        # Pillow converts premultiplied La only to LA; every other alpha mode goes straight to RGBA.
        rgba = (im.convert("LA") if im.mode == "La" else im).convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        im = Image.alpha_composite(black, rgba).convert("RGB")
    target = "L" if channels == 1 else "RGB"
    if im.mode == target:
        return im
    if im.mode not in ("L", "RGB"):
        im = im.convert("RGB")
    return im.convert(target)


Size = int | tuple[int, int] | None
"""A model's image size: a square's side, (height, width), or None for the image's own size."""


def _fit(im: Image.Image, size: tuple[int, int] | None) -> Image.Image:
    """Scale so the image fits (height, width) with its aspect kept, centred on black; None
    keeps the image's own size."""
    w, h = im.size
    if size is None or (h, w) == size:
        return im
    sh, sw = size
    scale = min(sw / w, sh / h)
    new = (max(1, min(sw, round(w * scale))), max(1, min(sh, round(h * scale))))
    resized = im.resize(new, Image.Resampling.LANCZOS, reducing_gap=3.0)
    if new == (sw, sh):
        return resized
    canvas = Image.new(im.mode, (sw, sh), 0)
    canvas.paste(resized, ((sw - new[0]) // 2, (sh - new[1]) // 2))
    return canvas


def _hw(size: Size) -> tuple[int, int] | None:
    return (size, size) if isinstance(size, int) else size


def _array_to_uint8(a: np.ndarray, label: str) -> np.ndarray:
    if a.dtype == np.uint8:
        return a
    if a.dtype == np.bool_:
        return a.astype(np.uint8) * 255
    if a.dtype == np.uint16:
        return np.rint(a * (255.0 / 65535.0)).astype(np.uint8)
    if np.issubdtype(a.dtype, np.floating):
        if a.size and not np.isfinite(a).all():
            raise InvalidImageError(f"{label} contains NaN or infinite values")
        if a.size and (a.min() < 0.0 or a.max() > 1.0):
            raise InvalidImageError(f"float {label} must lie in [0, 1]; got values in [{a.min():g}, {a.max():g}]")
        return np.rint(a.astype(np.float64) * 255.0).astype(np.uint8)
    if np.issubdtype(a.dtype, np.integer):
        if a.size and (a.min() < 0 or a.max() > 255):
            raise InvalidImageError(f"integer {label} must lie in [0, 255]; got values in [{a.min()}, {a.max()}]")
        return a.astype(np.uint8)
    raise InvalidImageError(f"{label} has dtype {a.dtype}; pass uint8 pixels (or floats in [0, 1])")


def _array_to_pil(a: np.ndarray, label: str) -> Image.Image:
    a = _array_to_uint8(a, label)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim == 2:
        return Image.fromarray(np.ascontiguousarray(a), "L")
    if a.ndim == 3 and a.shape[2] in (3, 4):
        return Image.fromarray(np.ascontiguousarray(a), "RGB" if a.shape[2] == 3 else "RGBA")
    raise InvalidImageError(f"{label} has shape {a.shape}; expected [H, W] or [H, W, C] with C in 1, 3, 4")


def load_image(image: ImageInput, size: Size, channels: int, label: str | None = None, *, max_pixels: int | None = None) -> np.ndarray:
    """One image of any supported kind -> uint8 [H, W, channels]: fitted to `size` (a side or
    (H, W); aspect kept, centred on black), or at its own size when `size` is None.
    `max_pixels` lowers the size limit below MAX_PIXELS (checked from the header, before decoding)."""
    label = label or _describe(image)
    limit = pixel_limit(max_pixels)
    if isinstance(image, np.ndarray):
        if image.ndim >= 2 and 0 in image.shape[:2]:
            raise InvalidImageError(f"{label} is empty (shape {image.shape})")
        im = _array_to_pil(image, label)
        _check_pixels(*im.size, label, limit)
    elif isinstance(image, Image.Image):
        w, h = image.size
        if w < 1 or h < 1:
            raise InvalidImageError(f"{label} is empty ({w}x{h} pixels)")
        _check_pixels(w, h, label, limit)
        # Loaded or converted images keep their EXIF tag too; orient them the same way.
        im = _decode(image, label, limit, from_file=getattr(image, "fp", None) is not None)
    elif isinstance(image, (str, os.PathLike, bytes, bytearray, memoryview)) or hasattr(image, "read"):
        opened = _open(image, label, limit)
        with DECODE_BUDGET.hold(decode_cost(*opened.size, opened.mode)):
            return _converted(_decode(opened, label, limit), size, channels, label)
    else:
        raise InvalidImageError(
            f"unsupported image input of type {type(image).__name__}; pass a path, bytes, a file object, a PIL image or a uint8 array"
        )
    return _converted(im, size, channels, label)


def _converted(im: Image.Image, size: Size, channels: int, label: str) -> np.ndarray:
    try:
        fitted = _fit(_to_mode(im, channels, label), _hw(size))
        out = np.asarray(fitted)
    except InvalidImageError:
        raise
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError) as e:
        raise InvalidImageError(f"{label} could not be converted ({e})") from None
    return out.reshape(fitted.size[1], fitted.size[0], channels)


def _describe(image: Any) -> str:
    if isinstance(image, (str, os.PathLike)):
        return str(image)
    if isinstance(image, np.ndarray):
        return f"array of shape {image.shape}"
    if isinstance(image, Image.Image):
        return f"PIL image ({image.mode}, {image.size[0]}x{image.size[1]})"
    return "image data"


def as_batch(images: ImageInput | Sequence[ImageInput], size: int | tuple[int, int], channels: int) -> np.ndarray:
    """One image, a list of images or an array batch -> uint8 [N, H, W, channels] fitted to
    `size` (a side or (H, W))."""
    if isinstance(images, np.ndarray):
        ready = images.dtype == np.uint8 and images.ndim == 4 and images.shape[1:] == (*_hw(size), channels)
        if ready and len(images):
            return images
        if images.ndim == 4 or (images.ndim == 3 and images.shape[-1] not in (1, 3, 4)):
            if images.shape[0] == 0:
                raise InvalidArgumentError("no images given (the batch is empty)")
            return np.stack([load_image(a, size, channels, f"image {i} of the batch") for i, a in enumerate(images)])
        return load_image(images, size, channels)[None]
    if isinstance(images, (list, tuple)):
        if not images:
            raise InvalidArgumentError("no images given (the list is empty)")
        return np.stack([load_image(a, size, channels) for a in images])
    return load_image(images, size, channels)[None]


def to_pil(images: np.ndarray) -> list[Image.Image]:
    """uint8 [N, H, W, C] (or one [H, W, C]) -> PIL images ('L' or 'RGB')."""
    try:
        images = np.asarray(images)
    except Exception:
        raise InvalidArgumentError("to_pil takes a uint8 array [N, H, W, C] or [H, W, C]") from None
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4:
        raise InvalidArgumentError(f"to_pil takes a uint8 array [N, H, W, C] or [H, W, C], got shape {images.shape}")
    return [_array_to_pil(a, "output image") for a in images]


MAX_GRID_COLUMNS = 4096
MAX_GRID_SCALE = 64
MAX_GRID_PADDING = 1024
MAX_GRID_PIXELS = 200_000_000


def make_grid(images: np.ndarray, ncols: int | None = None, padding: int = 2, scale: int = 1) -> np.ndarray:
    """Tile images into one picture.

    images: uint8 [N, H, W, C] (laid out row-major, `ncols` per row, default near-square)
    or [R, K, H, W, C] (R rows of K). Returns uint8 [H', W', C]. `scale` repeats pixels.
    """
    try:
        images = np.asarray(images)
    except Exception:
        raise InvalidArgumentError("make_grid takes a uint8 array [N, H, W, C] or [R, K, H, W, C]") from None
    images = _array_to_uint8(images, "grid images")
    if images.size == 0:
        raise InvalidArgumentError(f"make_grid needs at least one image, got shape {images.shape}")
    scale = positive_int("scale", scale, MAX_GRID_SCALE)
    padding = positive_int("padding", padding, MAX_GRID_PADDING, minimum=0)
    if images.ndim == 5:
        rows, ncols = images.shape[:2]
        images = images.reshape(-1, *images.shape[2:])
    elif images.ndim == 4:
        n = len(images)
        ncols = int(np.ceil(np.sqrt(n))) if ncols is None else positive_int("ncols", ncols, MAX_GRID_COLUMNS)
        rows = -(-n // ncols)
    else:
        raise InvalidArgumentError(f"make_grid takes [N, H, W, C] or [R, K, H, W, C], got shape {images.shape}")
    h, w = images.shape[1] * scale, images.shape[2] * scale
    pixels = (rows * h + (rows + 1) * padding) * (ncols * w + (ncols + 1) * padding)
    if pixels > MAX_GRID_PIXELS:
        raise InvalidArgumentError(
            f"the grid would have {pixels} pixels (ncols={ncols}, scale={scale}, padding={padding}); "
            f"the limit is {MAX_GRID_PIXELS}: use fewer columns or a smaller scale"
        )
    if scale > 1:
        images = images.repeat(scale, axis=1).repeat(scale, axis=2)
    n, h, w, c = images.shape
    grid = np.zeros((rows * h + (rows + 1) * padding, ncols * w + (ncols + 1) * padding, c), np.uint8)
    for i in range(n):
        r, k = divmod(i, ncols)
        y, x = padding + r * (h + padding), padding + k * (w + padding)
        grid[y : y + h, x : x + w] = images[i]
    return grid


def encode_png(image: np.ndarray) -> bytes:
    """uint8 [H, W, C] -> PNG bytes."""
    array = np.asarray(image)
    if array.size == 0:  # Pillow fails inside its encoder on a 0-pixel image
        raise InvalidImageError(f"output image is empty (shape {array.shape}); a PNG needs at least one pixel")
    buf = io.BytesIO()
    _array_to_pil(array, "output image").save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def save_png(path: str | os.PathLike, image: np.ndarray, overwrite: bool = False) -> Path:
    """Write one uint8 [H, W, C] image as PNG, atomically."""
    return write_atomic(path, encode_png(image), overwrite=overwrite)


def image_files(folder: str | os.PathLike, skipped: list[str] | None = None) -> list[str]:
    """The image files under `folder`, recursively, in the order of `sorted(folder.rglob("*"))`
    and with its rules (symlinked folders are not entered, unreadable ones skipped).
    os.scandir's entries know their type without a stat per file, and sorting tuples of
    names is much cheaper than sorting Path objects: a folder of a million images is listed
    in seconds. The one folder listing: inputs and the data sets use it. `skipped`, when
    given, receives the paths of the other entries that are not folders (not images)."""
    found: list[tuple[tuple[str, ...], str]] = []
    stack: list[tuple[tuple[str, ...], str]] = [((), os.fspath(folder))]
    while stack:
        parts, current = stack.pop()
        try:
            with os.scandir(current) as it:
                entries = list(it)
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.is_dir() and not entry.is_symlink():
                    stack.append(((*parts, entry.name), entry.path))
                elif image_suffix(entry.name) in IMAGE_SUFFIXES and entry.is_file():
                    found.append(((*parts, entry.name), entry.path))
                elif skipped is not None:  # a file (or link) that is not an image: counted, not read
                    skipped.append(entry.path)
            except OSError:
                continue
    found.sort()
    return [path for _, path in found]
