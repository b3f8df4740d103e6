"""vaesdk.imaging.images and vaesdk.base.fileio: the input policy (formats, size limits, corrupt files,
frames, orientation, modes, geometry, arrays), grids, and atomic PNG writing."""

from __future__ import annotations

import errno
import io
import os
import re
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

import vaesdk
from vaesdk.imaging import images
from vaesdk.base.errors import InvalidArgumentError, InvalidImageError, OutputError, VaesdkError
from vaesdk.base.fileio import write_atomic
from vaesdk.imaging.images import as_batch, load_image, make_grid, save_png

SIZE = 28
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def encode(im: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kwargs)
    return buf.getvalue()


def random_image(mode: str, w: int = SIZE, h: int = SIZE, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    shape = (h, w) if mode == "L" else (h, w, 3)
    return Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header_only(width: int, height: int) -> bytes:
    """A well-formed PNG that declares width x height 8-bit grey pixels but holds almost no data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        PNG_SIGNATURE
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + png_chunk(b"IEND", b"")
    )


def tiled(values, dtype) -> np.ndarray:
    """A SIZE x SIZE array repeating `values`, so no resizing blurs the values under test."""
    return np.resize(np.asarray(values, dtype), (SIZE, SIZE))


def temp_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith(".") and p.name.endswith(".tmp"))


def forbid_decoding(monkeypatch) -> None:
    def refuse(self, *args, **kwargs):
        raise AssertionError("pixel data was decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)


def raise_enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# ---------------------------------------------------------------- formats


ALLOWED = [("PNG", {}), ("JPEG", {}), ("BMP", {}), ("GIF", {}), ("WEBP", {}), ("TIFF", {})]


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("fmt,kwargs", ALLOWED, ids=[f for f, _ in ALLOWED])
def test_allowed_format_loads_as_uint8_of_model_shape(fmt, kwargs, channels):
    data = encode(random_image("RGB", 40, 30), fmt, **kwargs)
    out = load_image(data, size=SIZE, channels=channels)
    assert out.dtype == np.uint8
    assert out.shape == (SIZE, SIZE, channels)


@pytest.mark.parametrize("fmt,kwargs", [("PNG", {}), ("BMP", {}), ("TIFF", {}), ("WEBP", {"lossless": True})])
def test_lossless_formats_keep_pixels_exactly(fmt, kwargs):
    rgb = random_image("RGB")
    gray = random_image("L", seed=1)
    assert np.array_equal(load_image(encode(rgb, fmt, **kwargs), SIZE, 3), np.asarray(rgb))
    assert np.array_equal(load_image(encode(gray, fmt, **kwargs), SIZE, 1)[..., 0], np.asarray(gray))


def test_image_loads_from_a_path_and_from_a_file_object(tmp_path):
    data = encode(random_image("L"), "PNG")
    path = tmp_path / "digit.png"
    path.write_bytes(data)
    expected = load_image(data, SIZE, 1)
    assert np.array_equal(load_image(path, SIZE, 1), expected)
    assert np.array_equal(load_image(str(path), SIZE, 1), expected)
    assert np.array_equal(load_image(io.BytesIO(data), SIZE, 1), expected)


@pytest.mark.parametrize("fmt", ["PPM", "ICO", "PCX", "TGA"])
def test_format_outside_the_allow_list_is_refused(fmt):
    data = encode(random_image("RGB"), fmt)
    assert Image.open(io.BytesIO(data)).format == fmt  # Pillow itself would read it
    with pytest.raises(InvalidImageError, match="supported formats"):
        load_image(data, SIZE, 1)


def test_format_is_identified_by_content_not_by_file_name(tmp_path):
    disguised = tmp_path / "not-really.png"
    disguised.write_bytes(encode(random_image("RGB"), "PPM"))
    with pytest.raises(InvalidImageError):
        load_image(disguised, SIZE, 1)
    oddly_named = tmp_path / "picture.dat"
    oddly_named.write_bytes(encode(random_image("L"), "PNG"))
    assert load_image(oddly_named, SIZE, 1).shape == (SIZE, SIZE, 1)


# ---------------------------------------------------------------- size limits


def test_png_declaring_50000_by_50000_pixels_is_refused_without_decoding(monkeypatch):
    data = png_header_only(50_000, 50_000)
    assert len(data) < 100
    forbid_decoding(monkeypatch)
    start = time.monotonic()
    with pytest.raises(InvalidImageError) as info:
        load_image(data, SIZE, 1)
    assert time.monotonic() - start < 5.0
    assert str(images.MAX_PIXELS) in str(info.value)


@pytest.mark.parametrize(
    "width,height",
    [(8000, 8000), (10_000, 10_000), (images.MAX_PIXELS + 1, 1)],
    ids=["below-pillow-warning", "pillow-warning", "one-row-over"],
)
def test_header_over_max_pixels_is_refused_whatever_pillow_thinks(monkeypatch, width, height):
    assert width * height > images.MAX_PIXELS
    forbid_decoding(monkeypatch)
    with pytest.raises(InvalidImageError, match=str(images.MAX_PIXELS)):
        load_image(png_header_only(width, height), SIZE, 1)


@pytest.mark.parametrize("kind", ["png", "pil", "array"])
def test_pixel_limit_refuses_just_above_and_accepts_at_the_limit(monkeypatch, kind):
    monkeypatch.setattr(images, "MAX_PIXELS", 100)

    def source(w, h):
        im = Image.new("L", (w, h), 200)
        return {"png": encode(im, "PNG"), "pil": im, "array": np.asarray(im)}[kind]

    for w, h in [(10, 10), (100, 1), (4, 25)]:
        assert load_image(source(w, h), SIZE, 1).shape == (SIZE, SIZE, 1)
    for w, h in [(101, 1), (11, 10), (1, 101)]:
        with pytest.raises(InvalidImageError, match="100"):
            load_image(source(w, h), SIZE, 1)


def test_oversized_file_is_refused_before_reading(monkeypatch, tmp_path):
    monkeypatch.setattr(images, "MAX_FILE_BYTES", 1000)
    path = tmp_path / "big.png"
    path.write_bytes(encode(random_image("RGB", 64, 64), "PNG"))
    assert path.stat().st_size > 1000
    data = path.read_bytes()

    def refuse(self):
        raise AssertionError("the file was read")

    monkeypatch.setattr(Path, "read_bytes", refuse)
    with pytest.raises(InvalidImageError, match="1000"):
        load_image(path, SIZE, 1)
    with pytest.raises(InvalidImageError, match="1000"):
        load_image(data, SIZE, 1)


# ---------------------------------------------------------------- unreadable input


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_file_cut_in_half_is_refused(tmp_path, fmt):
    data = encode(random_image("RGB", 64, 64), fmt)
    half = data[: len(data) // 2]
    with pytest.raises(InvalidImageError, match=r"^image data is truncated or corrupt \("):
        load_image(half, SIZE, 1)
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(half)
    with pytest.raises(InvalidImageError, match=rf"^{re.escape(str(path))} is truncated or corrupt \("):
        load_image(path, SIZE, 1)
    opened = Image.open(io.BytesIO(half))  # a PIL image not yet decoded
    with pytest.raises(InvalidImageError, match=rf"^PIL image \({opened.mode}, 64x64\) is truncated or corrupt \("):
        load_image(opened, SIZE, 1)


@pytest.mark.parametrize(
    "data",
    [
        bytes(np.random.default_rng(3).integers(0, 256, 2048, dtype=np.uint8)),
        b"this is a text file, not an image\n" * 10,
        PNG_SIGNATURE,
        PNG_SIGNATURE + b"\x00" * 64,
        b"\xff\xd8\xff" + b"\x00" * 64,
    ],
    ids=["random", "text", "png-signature-only", "png-signature-zeros", "jpeg-signature-zeros"],
)
def test_garbage_bytes_are_refused(data):
    with pytest.raises(InvalidImageError):
        load_image(data, SIZE, 1)


def test_empty_data_and_empty_file_are_refused(tmp_path):
    with pytest.raises(InvalidImageError):
        load_image(b"", SIZE, 1)
    empty = tmp_path / "empty.png"
    empty.touch()
    with pytest.raises(InvalidImageError):
        load_image(empty, SIZE, 1)


def test_missing_path_is_refused(tmp_path):
    with pytest.raises(InvalidImageError, match="does not exist"):
        load_image(tmp_path / "nope.png", SIZE, 1)


def test_directory_path_is_refused(tmp_path):
    with pytest.raises(InvalidImageError, match="not a regular file"):
        load_image(tmp_path, SIZE, 1)


# ---------------------------------------------------------------- frames and orientation


FRAME_COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]


@pytest.mark.parametrize("fmt,kwargs", [("GIF", {}), ("PNG", {}), ("WEBP", {"lossless": True})])
def test_animation_uses_only_the_first_frame(fmt, kwargs):
    frames = [Image.new("RGB", (SIZE, SIZE), c) for c in FRAME_COLOURS]
    data = encode(frames[0], fmt, save_all=True, append_images=frames[1:], **kwargs)
    opened = Image.open(io.BytesIO(data))
    assert opened.n_frames == 3
    first = np.broadcast_to(np.array(FRAME_COLOURS[0], np.uint8), (SIZE, SIZE, 3))
    assert np.array_equal(load_image(data, SIZE, 3), first)
    # An image the caller left on a later frame is still read from frame 0.
    opened.seek(2)
    assert np.array_equal(load_image(opened, SIZE, 3), first)


def exif_jpeg(orientation: int) -> tuple[bytes, np.ndarray]:
    """A 40x20 JPEG, bright in its stored top-left corner, tagged with `orientation`."""
    stored = np.full((20, 40), 30, np.uint8)
    stored[:10, :10] = 230
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(Image.fromarray(stored), "JPEG", exif=exif, quality=95), stored


@pytest.mark.parametrize(
    "orientation,transpose,bright_corner",
    [(6, Image.Transpose.ROTATE_270, "top-right"), (8, Image.Transpose.ROTATE_90, "bottom-left")],
)
def test_exif_orientation_is_applied(orientation, transpose, bright_corner):
    data, stored = exif_jpeg(orientation)
    out = load_image(data, SIZE, 1)[..., 0].astype(int)
    upright = Image.fromarray(stored).transpose(transpose)
    expected = load_image(encode(upright, "PNG"), SIZE, 1)[..., 0].astype(int)
    assert np.abs(out - expected).mean() < 4
    # Upright the picture is 20 wide and 40 tall: black bars left and right, not above and below.
    assert (out[:, :7] == 0).all() and (out[:, 21:] == 0).all()
    assert (out[:, 7:21] > 0).all()
    corners = {
        "top-left": out[1:6, 8:13],
        "top-right": out[1:6, 15:20],
        "bottom-left": out[22:27, 8:13],
        "bottom-right": out[22:27, 15:20],
    }
    assert corners.pop(bright_corner).mean() > 180
    assert all(region.mean() < 80 for region in corners.values())


def test_exif_orientation_is_applied_to_loaded_and_converted_pil_images(tmp_path):
    data, _ = exif_jpeg(6)
    path = tmp_path / "rotated.jpg"
    path.write_bytes(data)
    expected = load_image(path, SIZE, 1)
    loaded = Image.open(path)
    loaded.load()
    assert np.array_equal(load_image(loaded, SIZE, 1), expected)
    assert np.array_equal(load_image(Image.open(path).convert("L"), SIZE, 1), expected)


# ---------------------------------------------------------------- modes


def test_mode_1_maps_to_0_and_255():
    bits = tiled([0, 1, 1, 0, 1], np.uint8).astype(bool)
    im = Image.fromarray(bits).convert("1")
    assert im.mode == "1"
    expected = np.where(bits, 255, 0)
    assert np.array_equal(load_image(im, SIZE, 1)[..., 0], expected)
    assert np.array_equal(load_image(encode(im, "PNG"), SIZE, 1)[..., 0], expected)


def test_mode_L_is_kept_as_is_and_repeated_for_three_channels():
    gray = random_image("L")
    assert np.array_equal(load_image(gray, SIZE, 1)[..., 0], np.asarray(gray))
    rgb = load_image(gray, SIZE, 3)
    assert all(np.array_equal(rgb[..., k], np.asarray(gray)) for k in range(3))


def test_mode_LA_composites_onto_black():
    la = np.stack([tiled([200, 200, 200], np.uint8), tiled([255, 0, 128], np.uint8)], axis=-1)
    im = Image.fromarray(la, "LA")
    for source in (im, encode(im, "PNG")):
        out = load_image(source, SIZE, 1)[..., 0].astype(int)
        assert np.array_equal(out[la[..., 1] == 255], np.full((la[..., 1] == 255).sum(), 200))
        assert (out[la[..., 1] == 0] == 0).all()
        assert (np.abs(out[la[..., 1] == 128] - 100) <= 1).all()


def test_mode_P_with_transparency_composites_onto_black():
    im = Image.fromarray(tiled([0, 1, 2], np.uint8), "P")
    im.putpalette([255, 255, 255, 255, 0, 0, 0, 0, 255] + [0] * (253 * 3))
    indices = np.asarray(im)
    for source in (encode(im, "PNG", transparency=0), encode(im, "GIF", transparency=0)):
        assert "transparency" in Image.open(io.BytesIO(source)).info
        out = load_image(source, SIZE, 3)
        assert (out[indices == 0] == 0).all()  # white but transparent
        assert (out[indices == 1] == [255, 0, 0]).all()
        assert (out[indices == 2] == [0, 0, 255]).all()


def test_mode_RGB_uses_luma_for_one_channel():
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255), (0, 0, 0)]
    index = tiled(range(len(colours)), np.uint8)
    rgb = np.array(colours, np.uint8)[index]
    out = load_image(Image.fromarray(rgb), SIZE, 1)[..., 0]
    assert np.array_equal(out, np.array([76, 150, 29, 255, 0], np.uint8)[index])
    assert np.array_equal(load_image(Image.fromarray(rgb), SIZE, 3), rgb)


def test_mode_RGBA_transparent_pixels_become_black():
    index = tiled([0, 1, 2], np.uint8)
    rgba = np.array([(255, 255, 255, 0), (255, 0, 0, 255), (255, 255, 255, 128)], np.uint8)[index]
    im = Image.fromarray(rgba, "RGBA")
    for source in (im, encode(im, "PNG"), encode(im, "WEBP", lossless=True), encode(im, "TIFF")):
        out = load_image(source, SIZE, 3).astype(int)
        assert (out[index == 0] == 0).all()
        assert (out[index == 1] == [255, 0, 0]).all()
        assert (np.abs(out[index == 2] - 128) <= 1).all()


@pytest.mark.parametrize("mode", ["La", "RGBa"])
def test_premultiplied_alpha_modes_composite_onto_black(mode):
    # Premultiplied pixels already hold colour x alpha, which is their composite over black.
    index = tiled([0, 1, 2], np.uint8)
    grey_alpha = np.array([(200, 255), (0, 0), (64, 128)], np.uint8)[index]
    bands = 1 if mode == "La" else 3
    pixels = np.concatenate([np.repeat(grey_alpha[..., :1], bands, -1), grey_alpha[..., 1:]], -1)
    im = Image.frombytes(mode, (SIZE, SIZE), pixels.tobytes())
    for channels in (1, 3):
        out = load_image(im, SIZE, channels).astype(int)
        assert (out[index == 0] == 200).all()
        assert (out[index == 1] == 0).all()
        assert (np.abs(out[index == 2] - 64) <= 1).all()


def test_mode_PA_composites_its_palette_colours_onto_black():
    index = tiled([0, 1, 2], np.uint8)
    alpha = np.array([255, 0, 128], np.uint8)[index]
    im = Image.frombytes("PA", (SIZE, SIZE), np.stack([index, alpha], -1).tobytes())
    im.putpalette([255, 0, 0, 0, 255, 0, 200, 200, 200] + [0] * (253 * 3))
    out = load_image(im, SIZE, 3).astype(int)
    assert (out[index == 0] == [255, 0, 0]).all()
    assert (out[index == 1] == 0).all()
    assert (np.abs(out[index == 2] - 100) <= 1).all()


@pytest.mark.parametrize("mode", ["YCbCr", "LAB", "HSV"])
def test_other_colour_spaces_reach_grey_through_rgb(mode):
    # Pillow cannot take LAB straight to L, and YCbCr's own grey is its Y band, not RGB's luma.
    rgb = random_image("RGB")
    im = rgb.convert(mode) if mode == "YCbCr" else Image.frombytes(mode, rgb.size, rgb.tobytes())
    via_rgb = im.convert("RGB")
    assert np.array_equal(load_image(im, SIZE, 3), np.asarray(via_rgb))
    assert np.array_equal(load_image(im, SIZE, 1)[..., 0], np.asarray(via_rgb.convert("L")))


@pytest.mark.parametrize("mode,key", [("RGB", (255, 255, 255)), ("L", 255)])
def test_transparent_colour_key_composites_onto_black(mode, key):
    index = tiled([0, 1], np.uint8)
    im = Image.fromarray(np.where(index == 0, 255, 90).astype(np.uint8), "L").convert(mode)
    data = encode(im, "PNG", transparency=key)
    out = load_image(data, SIZE, 1)[..., 0]
    assert (out[index == 0] == 0).all()
    assert (out[index == 1] == 90).all()


def test_mode_CMYK_converts_through_RGB():
    index = tiled([0, 1, 2], np.uint8)
    cmyk = np.array([(0, 0, 0, 0), (0, 0, 0, 255), (255, 0, 0, 0)], np.uint8)[index]
    im = Image.fromarray(cmyk, "CMYK")
    for source in (im, encode(im, "TIFF"), encode(im, "JPEG", quality=100)):
        rgb = load_image(source, SIZE, 3).astype(int)
        assert (np.abs(rgb[index == 0] - 255) <= 2).all()
        assert (rgb[index == 1] <= 2).all()
        assert (np.abs(rgb[index == 2] - [0, 255, 255]) <= 2).all()
    assert np.array_equal(load_image(im, SIZE, 1)[..., 0], np.array([255, 0, 179], np.uint8)[index])


@pytest.mark.parametrize("kind", ["pil", "png", "tiff"])
def test_mode_I16_is_scaled_not_clipped(kind):
    values = tiled([0, 257, 32768, 65535], np.uint16)
    im = Image.fromarray(values)
    assert im.mode == "I;16"
    source = {"pil": im, "png": encode(im, "PNG"), "tiff": encode(im, "TIFF")}[kind]
    if kind != "pil":
        assert Image.open(io.BytesIO(source)).mode.startswith("I;16")
    out = load_image(source, SIZE, 1)[..., 0]
    assert np.array_equal(out, tiled([0, 1, 128, 255], np.uint8))


def test_mode_I16_big_endian_is_scaled_too():
    im = Image.fromarray(tiled([0, 32768, 65535], np.uint16)).convert("I").convert("I;16B")
    assert im.mode == "I;16B"
    assert np.array_equal(load_image(im, SIZE, 1)[..., 0], tiled([0, 128, 255], np.uint8))


@pytest.mark.parametrize("kind", ["pil", "tiff"])
def test_mode_I_within_16_bits_is_scaled(kind):
    im = Image.fromarray(tiled([0, 257, 32768, 65535], np.int32))
    assert im.mode == "I"
    source = im if kind == "pil" else encode(im, "TIFF")
    assert np.array_equal(load_image(source, SIZE, 1)[..., 0], tiled([0, 1, 128, 255], np.uint8))


@pytest.mark.parametrize(
    "mode,values,expected",
    [
        ("I;16", [0, 32768], [0, 128]),  # half the range: scaled, so not stretched to white
        ("I;16", [0, 33025, 65535], [0, 129, 255]),  # 33025 * 255 / 65535 = 128.502: the divisor is 65535
        ("I", [1000, 33025, 65535], [4, 129, 255]),  # at the 16-bit edge: still scaled
        ("I", [1000, 65536], [0, 255]),  # just outside 16 bits: stretched
        ("I", [0, 30000], [0, 117]),
        ("F", [0.2, 1.0], [51, 255]),  # at the unit range's edge: still scaled
        ("F", [0.2, 1.5], [0, 255]),  # just outside: stretched
    ],
)
def test_high_depth_scaling_at_the_edges_of_its_range(mode, values, expected):
    dtype = {"I;16": np.uint16, "I": np.int32, "F": np.float32}[mode]
    im = Image.fromarray(tiled(values, dtype))
    assert im.mode == mode
    assert np.array_equal(load_image(im, SIZE, 1)[..., 0], tiled(expected, np.uint8))


@pytest.mark.parametrize(
    "values,expected",
    [([-50, 0, 200], [0, 51, 255]), ([0, 40_000, 100_000], [0, 102, 255]), ([-5, -5], [0, 0])],
    ids=["negative", "above-16-bit", "constant"],
)
def test_mode_I_outside_16_bits_is_stretched(values, expected):
    im = Image.fromarray(tiled(values, np.int32))
    assert im.mode == "I"
    assert np.array_equal(load_image(im, SIZE, 1)[..., 0], tiled(expected, np.uint8))


@pytest.mark.parametrize(
    "values,expected",
    [
        ([0.0, 0.5, 1.0], [0, 128, 255]),
        ([0.0, 0.25], [0, 64]),
        ([-0.5, 0.0, 0.5], [0, 128, 255]),
        ([-1.0, 0.0, 3.0], [0, 64, 255]),
        ([0.0, 1.0, 5.0], [0, 51, 255]),
        ([3.0, 3.0], [0, 0]),
    ],
    ids=["unit", "unit-dark", "negative-below-one", "negative", "above-one", "constant"],
)
@pytest.mark.parametrize("kind", ["pil", "tiff"])
def test_mode_F_unit_range_is_scaled_and_other_ranges_stretched(values, expected, kind):
    im = Image.fromarray(tiled(values, np.float32))
    assert im.mode == "F"
    source = im if kind == "pil" else encode(im, "TIFF")
    assert np.array_equal(load_image(source, SIZE, 1)[..., 0], tiled(expected, np.uint8))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_mode_F_with_nan_or_infinity_is_refused(bad):
    im = Image.fromarray(tiled([0.0, 0.5, bad], np.float32))
    with pytest.raises(InvalidImageError, match=r"^PIL image \(F, 28x28\) contains NaN or infinite pixels$"):
        load_image(im, SIZE, 1)
    with pytest.raises(InvalidImageError, match="NaN or infinite"):
        load_image(encode(im, "TIFF"), SIZE, 1)


@pytest.mark.parametrize("dtype", [np.uint16, np.int32, np.float32])
def test_high_depth_modes_repeat_one_grey_for_three_channels(dtype):
    top = 1.0 if dtype == np.float32 else 65535
    im = Image.fromarray(tiled([0, top], dtype))
    out = load_image(im, SIZE, 3)
    assert out.shape == (SIZE, SIZE, 3)
    assert all(np.array_equal(out[..., k], tiled([0, 255], np.uint8)) for k in range(3))


# ---------------------------------------------------------------- geometry


@pytest.mark.parametrize("side", [56, 300])
def test_downscaling_is_pillows_lanczos_with_a_reducing_gap_of_3(side):
    im = Image.fromarray(np.random.default_rng(side).integers(0, 256, (side, side), dtype=np.uint8))
    want = np.asarray(im.resize((SIZE, SIZE), Image.Resampling.LANCZOS, reducing_gap=3.0))
    assert np.array_equal(load_image(im, SIZE, 1)[..., 0], want)
    assert not np.array_equal(want, np.asarray(im.resize((SIZE, SIZE), Image.Resampling.BICUBIC)))


def test_errors_name_the_input(tmp_path):
    bad = tmp_path / "broken-shirt.png"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(InvalidImageError, match="broken-shirt.png"):
        load_image(str(bad), SIZE, 1)
    with pytest.raises(InvalidImageError, match=r"^my-label is empty \(shape \(0, 5\)\)"):
        load_image(np.zeros((0, 5), np.uint8), SIZE, 1, "my-label")


@pytest.mark.parametrize(
    "source,label",
    [
        (np.zeros((20, 20), np.uint8), "array of shape (20, 20)"),
        (Image.new("L", (20, 20)), "PIL image (L, 20x20)"),
        (encode(Image.new("L", (20, 20)), "PNG"), "image data"),
    ],
    ids=["array", "pil", "bytes"],
)
def test_size_errors_name_the_input_and_its_size(monkeypatch, source, label):
    monkeypatch.setattr(images, "MAX_PIXELS", 399)
    with pytest.raises(InvalidImageError) as info:
        load_image(source, SIZE, 1)
    assert str(info.value) == f"{label} is 20x20 pixels; the limit is 399 pixels in all"
    with pytest.raises(InvalidImageError, match=r"^shirt-7 is 20x20 pixels"):
        load_image(source, SIZE, 1, "shirt-7")


@pytest.mark.parametrize("size", [(0, 5), (5, 0), (0, 0)])
def test_empty_pil_images_are_refused_as_empty(size):
    with pytest.raises(InvalidImageError) as info:
        load_image(Image.new("L", size), SIZE, 1)
    assert str(info.value) == f"PIL image (L, {size[0]}x{size[1]}) is empty ({size[0]}x{size[1]} pixels)"


def test_conversion_failures_name_the_input_and_the_cause(monkeypatch):
    def refuse(im, mode=None, *args, **kwargs):
        raise ValueError("conversion not supported")

    monkeypatch.setattr(Image.Image, "convert", refuse)  # Pillow failing to convert grey to RGB
    with pytest.raises(InvalidImageError) as info:
        load_image(Image.new("L", (3, 3)), SIZE, 3)
    assert str(info.value) == "PIL image (L, 3x3) could not be converted (conversion not supported)"


def test_unsupported_input_types_are_named():
    with pytest.raises(InvalidImageError) as info:
        load_image(3.5, SIZE, 1)
    assert str(info.value).startswith("unsupported image input of type float; pass a path")


def test_wide_image_is_scaled_and_centred_between_black_bars():
    wide = np.full((28, 56), 100, np.uint8)
    wide[:, :28] = 255
    out = load_image(Image.fromarray(wide), SIZE, 1)[..., 0].astype(int)
    assert (out[:7] == 0).all() and (out[21:] == 0).all()
    content = out[7:21]
    assert content.shape == (14, 28)
    # Scaled, not cropped: both halves survive, each 14 columns wide (Lanczos rings at the seam).
    assert (np.abs(content[:, :11] - 255) <= 1).all()
    assert (np.abs(content[:, 17:] - 100) <= 1).all()


def test_tall_image_gets_bars_left_and_right():
    out = load_image(Image.new("L", (28, 56), 255), SIZE, 1)[..., 0]
    assert (out[:, :7] == 0).all() and (out[:, 21:] == 0).all()
    assert (out[:, 7:21] == 255).all()


@pytest.mark.parametrize("channels", [1, 3])
def test_single_pixel_fills_the_square(channels):
    out = load_image(Image.new("RGB", (1, 1), (200, 200, 200)), SIZE, channels)
    assert out.shape == (SIZE, SIZE, channels)
    assert (out == 200).all()


@pytest.mark.parametrize("w,h", [(1, 5000), (5000, 1)])
@pytest.mark.parametrize("channels", [1, 3])
def test_extreme_aspect_ratio_becomes_a_centred_line(w, h, channels):
    out = load_image(encode(Image.new("L", (w, h), 255), "PNG"), SIZE, channels)
    assert out.shape == (SIZE, SIZE, channels)
    line = out[:, 13] if w == 1 else out[13]
    assert (line == 255).all()
    assert out.sum() == 255 * SIZE * channels


@pytest.mark.parametrize("mode,channels", [("L", 1), ("RGB", 3)])
def test_model_sized_image_is_returned_unchanged(mode, channels):
    im = random_image(mode, seed=5)
    expected = np.asarray(im).reshape(SIZE, SIZE, channels)
    for source in (im, encode(im, "PNG"), np.asarray(im)):
        assert np.array_equal(load_image(source, SIZE, channels), expected)


# ---------------------------------------------------------------- arrays


@pytest.mark.parametrize("channels,mode", [(1, "L"), (3, "RGB")])
def test_to_pil_gives_one_image_per_batch_entry_with_the_same_pixels(channels, mode):
    batch = np.random.default_rng(channels).integers(0, 256, (3, 5, 7, channels), dtype=np.uint8)
    out = vaesdk.to_pil(batch)
    assert [im.mode for im in out] == [mode] * 3 and [im.size for im in out] == [(7, 5)] * 3
    for im, a in zip(out, batch):
        assert np.array_equal(np.asarray(im).reshape(a.shape), a)
    single = vaesdk.to_pil(batch[1])
    assert len(single) == 1 and np.array_equal(np.asarray(single[0]).reshape(batch[1].shape), batch[1])


@pytest.mark.parametrize("bad", [np.zeros((5, 7), np.uint8), np.zeros((1, 2, 5, 7, 1), np.uint8)], ids=["2d", "5d"])
def test_to_pil_refuses_arrays_that_are_not_images_naming_the_shape(bad):
    with pytest.raises(InvalidArgumentError) as info:
        vaesdk.to_pil(bad)
    assert str(info.value) == f"to_pil takes a uint8 array [N, H, W, C] or [H, W, C], got shape {bad.shape}"


def test_to_pil_refuses_what_is_not_an_array():
    with pytest.raises(InvalidArgumentError, match=r"^to_pil takes a uint8 array \[N, H, W, C\] or \[H, W, C\]$"):
        vaesdk.to_pil([[1, 2], [3]])


def test_uint8_array_layouts_give_the_same_batch():
    gray = np.asarray(random_image("L", seed=9))
    opaque = np.full_like(gray, 255)
    layouts = [gray, gray[..., None], np.stack([gray] * 3, -1), np.stack([gray, gray, gray, opaque], -1)]
    for arr in layouts:
        batch = as_batch(arr, SIZE, 1)
        assert batch.dtype == np.uint8 and batch.shape == (1, SIZE, SIZE, 1)
        assert np.array_equal(batch[0, ..., 0], gray)
        assert np.array_equal(load_image(arr, SIZE, 1)[..., 0], gray)


def test_rgba_array_composites_onto_black():
    rgba = np.zeros((SIZE, SIZE, 4), np.uint8)
    rgba[..., :3] = 255
    rgba[:, :14, 3] = 255
    out = load_image(rgba, SIZE, 3)
    assert (out[:, :14] == 255).all() and (out[:, 14:] == 0).all()


def test_batch_arrays_are_converted_image_by_image():
    rng = np.random.default_rng(11)
    ready = rng.integers(0, 256, (5, SIZE, SIZE, 1), dtype=np.uint8)
    assert np.array_equal(as_batch(ready, SIZE, 1), ready)
    assert np.array_equal(as_batch(ready[..., 0], SIZE, 1), ready)
    assert np.array_equal(as_batch(np.repeat(ready, 3, axis=-1), SIZE, 1), ready)
    assert as_batch(np.repeat(ready, 3, axis=-1), SIZE, 3).shape == (5, SIZE, SIZE, 3)
    wide = rng.integers(0, 256, (4, SIZE, 2 * SIZE, 3), dtype=np.uint8)
    assert as_batch(wide, SIZE, 1).shape == (4, SIZE, SIZE, 1)


def test_list_of_mixed_inputs_becomes_one_batch():
    im = random_image("L")
    batch = as_batch([np.asarray(im), im, encode(im, "PNG")], SIZE, 1)
    assert batch.shape == (3, SIZE, SIZE, 1)
    assert all(np.array_equal(b[..., 0], np.asarray(im)) for b in batch)


def test_bool_array_maps_to_0_and_255():
    mask = tiled([True, False, True], bool)
    assert np.array_equal(as_batch(mask, SIZE, 1)[0, ..., 0], np.where(mask, 255, 0))


def test_every_16_bit_value_is_rounded_to_the_nearest_of_256_levels():
    # 65407 / 257 = 254.502 rounds up; a 65536 divisor would give 254.498 and round down.
    values = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    want = np.rint(values.astype(np.float64) * 255.0 / 65535.0).astype(np.uint8)
    assert want[65407 // 256, 65407 % 256] == 255
    assert np.array_equal(load_image(values, 256, 1)[..., 0], want)
    sixteen = Image.fromarray(values)
    assert sixteen.mode == "I;16"
    assert np.array_equal(load_image(sixteen, 256, 1)[..., 0], want)
    assert np.array_equal(make_grid(values[None, ..., None], padding=0)[..., 0], want)


def test_output_arrays_that_are_not_pixels_are_named_as_output_images():
    with pytest.raises(InvalidImageError) as info:
        vaesdk.to_pil(np.zeros((1, 4, 4, 1), np.complex64))
    assert str(info.value) == "output image has dtype complex64; pass uint8 pixels (or floats in [0, 1])"


def test_uint16_array_is_scaled_not_clipped():
    out = as_batch(tiled([0, 257, 32768, 65535], np.uint16), SIZE, 1)[0, ..., 0]
    assert np.array_equal(out, tiled([0, 1, 128, 255], np.uint8))


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_float_array_in_unit_range_is_scaled(dtype):
    out = as_batch(tiled([0.0, 0.5, 1.0], dtype), SIZE, 1)[0, ..., 0]
    assert np.array_equal(out, tiled([0, 128, 255], np.uint8))


@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.int64, np.uint32])
def test_integer_array_within_byte_range_is_accepted(dtype):
    values = tiled([0, 17, 255] if dtype != np.int8 else [0, 17, 127], dtype)
    assert np.array_equal(as_batch(values, SIZE, 1)[0, ..., 0], values.astype(np.uint8))


BAD_ARRAYS = {
    "float-above-one": (tiled([0.0, 1.5], np.float32), InvalidImageError),
    "float-negative": (tiled([-0.1, 0.5], np.float64), InvalidImageError),
    "float-nan": (tiled([0.0, np.nan], np.float32), InvalidImageError),
    "float-inf": (tiled([0.0, np.inf], np.float64), InvalidImageError),
    "int-256": (tiled([0, 256], np.int32), InvalidImageError),
    "int-negative": (tiled([-1, 0], np.int64), InvalidImageError),
    "object": (np.full((SIZE, SIZE), None, dtype=object), InvalidImageError),
    "complex": (np.zeros((SIZE, SIZE), np.complex64), InvalidImageError),
    "strings": (np.full((SIZE, SIZE), "a"), InvalidImageError),
    "empty-batch": (np.zeros((0, SIZE, SIZE, 1), np.uint8), InvalidArgumentError),
    "empty-batch-to-convert": (np.zeros((0, 10, 10, 3), np.float32), InvalidArgumentError),
    "empty-rows": (np.zeros((0, SIZE), np.uint8), InvalidImageError),
    "empty-columns": (np.zeros((SIZE, 0, 3), np.uint8), InvalidImageError),
    "empty-image-in-batch": (np.zeros((2, SIZE, 0, 1), np.uint8), InvalidImageError),
    "zero-dim": (np.array(7, np.uint8), InvalidImageError),
    "one-dim": (np.zeros(SIZE, np.uint8), InvalidImageError),
    "five-dim": (np.zeros((1, 1, SIZE, SIZE, 1), np.uint8), InvalidImageError),
    "two-channels-in-batch": (np.zeros((2, SIZE, SIZE, 2), np.uint8), InvalidImageError),
}


BAD_ARRAY_MESSAGES = {
    "float-above-one": 'float array of shape (28, 28) must lie in [0, 1]; got values in [0, 1.5]',
    "float-negative": 'float array of shape (28, 28) must lie in [0, 1]; got values in [-0.1, 0.5]',
    "float-nan": 'array of shape (28, 28) contains NaN or infinite values',
    "float-inf": 'array of shape (28, 28) contains NaN or infinite values',
    "int-256": 'integer array of shape (28, 28) must lie in [0, 255]; got values in [0, 256]',
    "int-negative": 'integer array of shape (28, 28) must lie in [0, 255]; got values in [-1, 0]',
    "object": 'array of shape (28, 28) has dtype object; pass uint8 pixels (or floats in [0, 1])',
    "complex": 'array of shape (28, 28) has dtype complex64; pass uint8 pixels (or floats in [0, 1])',
    "strings": 'array of shape (28, 28) has dtype <U1; pass uint8 pixels (or floats in [0, 1])',
    "empty-batch": 'no images given (the batch is empty)',
    "empty-batch-to-convert": 'no images given (the batch is empty)',
    "empty-rows": 'array of shape (0, 28) is empty (shape (0, 28))',
    "empty-columns": 'array of shape (28, 0, 3) is empty (shape (28, 0, 3))',
    "empty-image-in-batch": 'image 0 of the batch is empty (shape (28, 0, 1))',
    "zero-dim": 'array of shape () has shape (); expected [H, W] or [H, W, C] with C in 1, 3, 4',
    "one-dim": 'array of shape (28,) has shape (28,); expected [H, W] or [H, W, C] with C in 1, 3, 4',
    "five-dim": 'array of shape (1, 1, 28, 28, 1) has shape (1, 1, 28, 28, 1); expected [H, W] or [H, W, C] with C in 1, 3, 4',
    "two-channels-in-batch": 'image 0 of the batch has shape (28, 28, 2); expected [H, W] or [H, W, C] with C in 1, 3, 4',
}


@pytest.mark.parametrize("name", list(BAD_ARRAYS))
def test_bad_array_is_refused_with_a_vaesdk_error_naming_the_array_and_the_fix(name):
    arr, error = BAD_ARRAYS[name]
    with pytest.raises(error) as info:
        as_batch(arr, SIZE, 1)
    assert isinstance(info.value, VaesdkError)
    assert str(info.value) == BAD_ARRAY_MESSAGES[name]


@pytest.mark.parametrize("shape", [(SIZE, SIZE, 2), (SIZE, SIZE, 5), (2, SIZE, SIZE, 3), (SIZE,)])
def test_to_model_array_refuses_shapes_that_are_not_one_image(shape):
    with pytest.raises(InvalidImageError, match="shape"):
        load_image(np.zeros(shape, np.uint8), SIZE, 1)


def test_empty_list_is_refused():
    with pytest.raises(InvalidArgumentError) as info:
        as_batch([], SIZE, 1)
    assert str(info.value) == "no images given (the list is empty)"


# ---------------------------------------------------------------- grids


@pytest.mark.parametrize(
    "n,ncols,padding,scale,expected",
    [
        (5, None, 2, 1, (2 * 4 + 3 * 2, 3 * 4 + 4 * 2, 1)),
        (5, None, 0, 2, (2 * 8, 3 * 8, 1)),
        (5, 5, 2, 1, (4 + 2 * 2, 5 * 4 + 6 * 2, 1)),
        (4, None, 1, 3, (2 * 12 + 3, 2 * 12 + 3, 1)),
        (1, None, 2, 1, (4 + 4, 4 + 4, 1)),
    ],
)
def test_make_grid_shape_for_a_flat_batch(n, ncols, padding, scale, expected):
    grid = make_grid(np.ones((n, 4, 4, 1), np.uint8), ncols=ncols, padding=padding, scale=scale)
    assert grid.dtype == np.uint8
    assert grid.shape == expected


@pytest.mark.parametrize(
    "padding,scale,expected",
    [(2, 1, (2 * 4 + 3 * 2, 3 * 5 + 4 * 2, 3)), (1, 3, (2 * 12 + 3, 3 * 15 + 4, 3)), (0, 1, (8, 15, 3))],
)
def test_make_grid_shape_for_rows_of_images(padding, scale, expected):
    grid = make_grid(np.ones((2, 3, 4, 5, 3), np.uint8), padding=padding, scale=scale)
    assert grid.shape == expected


def test_make_grid_places_tiles_row_major_on_black_padding():
    tiles = (np.arange(1, 6, dtype=np.uint8)[:, None, None, None] * np.ones((5, 2, 3, 1), np.uint8)) * 40
    grid = make_grid(tiles, ncols=3, padding=1, scale=2)[..., 0]
    for i in range(5):
        r, k = divmod(i, 3)
        y, x = 1 + r * 5, 1 + k * 7
        assert (grid[y : y + 4, x : x + 6] == 40 * (i + 1)).all()
        grid[y : y + 4, x : x + 6] = 0
    assert (grid == 0).all()


def test_make_grid_defaults_are_a_near_square_grid_with_2_pixels_of_padding_at_scale_1():
    tiles = np.ones((5, 4, 4, 1), np.uint8)
    assert np.array_equal(make_grid(tiles), make_grid(tiles, ncols=3, padding=2, scale=1))
    assert make_grid(tiles).shape == (2 * 4 + 3 * 2, 3 * 4 + 4 * 2, 1)


def test_make_grid_of_one_single_pixel_image():
    grid = make_grid(np.full((1, 1, 1, 1), 7, np.uint8), ncols=1)
    assert grid.shape == (5, 5, 1) and grid[2, 2, 0] == 7 and grid.sum() == 7


@pytest.mark.parametrize(
    "arr,kwargs,message",
    [
        (np.zeros((4, 4, 1), np.uint8), {}, "make_grid takes [N, H, W, C] or [R, K, H, W, C], got shape (4, 4, 1)"),
        (np.zeros((0, 4, 4, 1), np.uint8), {}, "make_grid needs at least one image, got shape (0, 4, 4, 1)"),
        ([[1, 2], [3]], {}, "make_grid takes a uint8 array [N, H, W, C] or [R, K, H, W, C]"),
        (np.full((2, 4, 4, 1), 2.0), {}, "float grid images must lie in [0, 1]; got values in [2, 2]"),
        (np.zeros((2, 4, 4, 1), np.uint8), {"scale": 0}, "scale must be in 1..64, got 0"),
        (np.zeros((2, 4, 4, 1), np.uint8), {"scale": 1.5}, "scale must be an integer in 1..64, got 1.5"),
        (np.zeros((2, 4, 4, 1), np.uint8), {"padding": -1}, "padding must be in 0..1024, got -1"),
        (np.zeros((2, 4, 4, 1), np.uint8), {"ncols": 0}, "ncols must be in 1..4096, got 0"),
    ],
    ids=["three-dims", "empty", "ragged", "float-range", "scale-0", "scale-float", "negative-padding", "ncols-0"],
)
def test_make_grid_refuses_bad_arguments_naming_them(arr, kwargs, message):
    with pytest.raises(InvalidImageError if "float" in message else InvalidArgumentError) as info:
        make_grid(arr, **kwargs)
    assert str(info.value) == message


def test_make_grid_one_column_is_allowed():
    assert make_grid(np.ones((3, 4, 5, 1), np.uint8), ncols=1, padding=1).shape == (3 * 4 + 4, 5 + 2, 1)


@pytest.mark.parametrize("layout", ["flat", "rows"])
def test_make_grid_pixel_limit_is_the_exact_size_of_the_grid(monkeypatch, layout):
    # 2 rows of 3 tiles of 2x5 pixels, scale 2, padding 1: (2*4 + 3) x (3*10 + 4) = 11 x 34 = 374 pixels.
    tiles = np.ones((6, 2, 5, 1), np.uint8)
    arr, kwargs = (tiles, {"ncols": 3}) if layout == "flat" else (tiles.reshape(2, 3, 2, 5, 1), {})
    monkeypatch.setattr(images, "MAX_GRID_PIXELS", 374)
    assert make_grid(arr, padding=1, scale=2, **kwargs).shape == (11, 34, 1)
    monkeypatch.setattr(images, "MAX_GRID_PIXELS", 373)
    with pytest.raises(InvalidArgumentError) as info:
        make_grid(arr, padding=1, scale=2, **kwargs)
    assert str(info.value) == (
        "the grid would have 374 pixels (ncols=3, scale=2, padding=1); the limit is 373: use fewer columns or a smaller scale"
    )


# ---------------------------------------------------------------- folders


def test_one_folder_listing_serves_inputs_and_data_sets(tmp_path):
    from vaesdk.evaluation.datasets import list_image_folder
    from vaesdk.imaging.images import IMAGE_SUFFIXES, image_files

    folder = tmp_path / "imgs"
    for name in ["b/z.png", "b/a.PNG", "a b/x.jpg", "a/y.gif", "a/deep/w.bmp", "a/notes.txt"]:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"x")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "o.png").write_bytes(b"x")
    (folder / "link").symlink_to(outside, target_is_directory=True)  # not entered, as rglob does not
    expected = sorted(q for q in folder.rglob("*") if q.suffix.lower() in IMAGE_SUFFIXES and q.is_file())
    assert [Path(p) for p in image_files(folder)] == expected and len(expected) == 5
    files, labels, classes = list_image_folder(folder)
    assert files == expected and classes == ("a", "a b", "a/deep", "b") and labels.tolist() == [2, 0, 1, 3, 3]


# ---------------------------------------------------------------- atomic writing


PICTURE = np.asarray(random_image("RGB", 7, 5, seed=2))


def test_save_png_writes_a_valid_png(tmp_path):
    target = tmp_path / "out.png"
    assert save_png(target, PICTURE) == target
    data = target.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    with Image.open(target) as im:
        assert im.format == "PNG"
        assert np.array_equal(np.asarray(im), PICTURE)
    assert temp_files(tmp_path) == []


def test_save_png_writes_one_channel_images_as_grey(tmp_path):
    gray = PICTURE[..., :1]
    with Image.open(save_png(tmp_path / "gray.png", gray)) as im:
        assert im.mode == "L"
        assert np.array_equal(np.asarray(im), gray[..., 0])


def test_write_atomic_writes_exact_bytes_and_creates_parent_folders(tmp_path):
    target = tmp_path / "a" / "b" / "blob.bin"
    write_atomic(target, b"\x00payload\xff")
    assert target.read_bytes() == b"\x00payload\xff"


def test_written_file_gets_the_usual_permissions(tmp_path):
    target = write_atomic(tmp_path / "perm.bin", b"x")
    # mkstemp creates 0600 files; outputs must be readable like any other new file.
    assert target.stat().st_mode & 0o777 == 0o666 & ~current_umask()


def test_existing_file_is_refused_without_overwrite(tmp_path):
    target = tmp_path / "out.png"
    target.write_bytes(b"precious")
    with pytest.raises(OutputError, match="already exists"):
        save_png(target, PICTURE)
    assert target.read_bytes() == b"precious"
    assert temp_files(tmp_path) == []


def test_existing_file_is_replaced_with_overwrite(tmp_path):
    target = tmp_path / "out.png"
    target.write_bytes(b"old")
    save_png(target, PICTURE, overwrite=True)
    with Image.open(target) as im:
        assert np.array_equal(np.asarray(im), PICTURE)
    assert sorted(os.listdir(tmp_path)) == ["out.png"]


@pytest.mark.parametrize("overwrite", [False, True])
def test_symlink_target_is_refused_and_its_target_untouched(tmp_path, overwrite):
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"do not touch")
    link = tmp_path / "out.png"
    link.symlink_to(victim)
    with pytest.raises(OutputError, match="symbolic link"):
        save_png(link, PICTURE, overwrite=overwrite)
    assert link.is_symlink() and os.readlink(link) == str(victim)
    assert victim.read_bytes() == b"do not touch"
    assert temp_files(tmp_path) == []


@pytest.mark.parametrize("overwrite", [False, True])
def test_dangling_symlink_is_refused(tmp_path, overwrite):
    link = tmp_path / "out.png"
    link.symlink_to(tmp_path / "elsewhere.png")
    with pytest.raises(OutputError, match="symbolic link"):
        write_atomic(link, b"x", overwrite=overwrite)
    assert not (tmp_path / "elsewhere.png").exists()


def test_directory_target_is_refused(tmp_path):
    with pytest.raises(OutputError, match="directory"):
        write_atomic(tmp_path, b"x", overwrite=True)


@pytest.mark.parametrize("overwrite", [False, True])
def test_unwritable_directory_raises_output_error_and_leaves_no_temp_file(tmp_path, monkeypatch, overwrite):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    target = out_dir / "img.png"
    if overwrite:
        target.write_bytes(b"old")
    before = sorted(os.listdir(out_dir))
    if os.geteuid() == 0:
        # Root ignores directory permissions; fail the way a full disk does instead.
        monkeypatch.setattr(os, "fsync", raise_enospc)
    else:
        out_dir.chmod(0o555)
    try:
        with pytest.raises(OutputError):
            save_png(target, PICTURE, overwrite=overwrite)
    finally:
        out_dir.chmod(0o755)
    assert sorted(os.listdir(out_dir)) == before
    assert temp_files(out_dir) == []
    if overwrite:
        assert target.read_bytes() == b"old"


@pytest.mark.parametrize("overwrite", [False, True])
def test_failing_rename_raises_output_error_and_removes_the_temp_file(tmp_path, monkeypatch, overwrite):
    target = tmp_path / "img.png"
    if overwrite:
        target.write_bytes(b"old")
    monkeypatch.setattr(os, "replace", raise_enospc)
    monkeypatch.setattr(os, "link", raise_enospc)
    with pytest.raises(OutputError, match="cannot write"):
        save_png(target, PICTURE, overwrite=overwrite)
    assert temp_files(tmp_path) == []
    assert sorted(os.listdir(tmp_path)) == (["img.png"] if overwrite else [])
    if overwrite:
        assert target.read_bytes() == b"old"


@pytest.mark.parametrize("overwrite", [False, True])
def test_keyboard_interrupt_mid_write_propagates_and_leaves_nothing_behind(tmp_path, monkeypatch, overwrite):
    target = tmp_path / "img.png"
    if overwrite:
        target.write_bytes(b"old")

    def interrupt(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupt)
    with pytest.raises(KeyboardInterrupt):
        save_png(target, PICTURE, overwrite=overwrite)
    assert temp_files(tmp_path) == []
    if overwrite:
        assert target.read_bytes() == b"old"
    else:
        assert not target.exists()
    assert sorted(os.listdir(tmp_path)) == (["img.png"] if overwrite else [])


def test_file_created_while_writing_is_not_clobbered(tmp_path, monkeypatch):
    target = tmp_path / "img.png"
    real_fsync = os.fsync

    def fsync_then_race(fd):
        real_fsync(fd)
        target.write_bytes(b"written by someone else meanwhile")

    monkeypatch.setattr(os, "fsync", fsync_then_race)
    with pytest.raises(OutputError, match="already exists"):
        save_png(target, PICTURE)
    assert target.read_bytes() == b"written by someone else meanwhile"
    assert temp_files(tmp_path) == []


def test_filesystem_without_hard_links_still_gets_the_file(tmp_path, monkeypatch):
    def no_links(src, dst):
        raise OSError(errno.EPERM, os.strerror(errno.EPERM))

    monkeypatch.setattr(os, "link", no_links)
    target = save_png(tmp_path / "img.png", PICTURE)
    with Image.open(target) as im:
        assert np.array_equal(np.asarray(im), PICTURE)
    assert sorted(os.listdir(tmp_path)) == ["img.png"]


def test_an_empty_output_image_is_refused_before_pillow_sees_it(tmp_path):
    with pytest.raises(InvalidImageError) as info:
        save_png(tmp_path / "empty.png", np.zeros((0, 0, 1), np.uint8))
    assert str(info.value) == "output image is empty (shape (0, 0, 1)); a PNG needs at least one pixel"
    assert not list(tmp_path.iterdir())


def test_an_interruption_just_after_the_temporary_file_is_made_removes_it(tmp_path, monkeypatch):
    """Ctrl-C (or SIGTERM, raised like it) landing the moment the temporary file exists, before
    the call that made it has returned, leaves nothing behind."""
    from vaesdk.base import fileio

    real_open = os.open

    def open_then_interrupted(path, flags, mode=0o777):
        os.close(real_open(path, flags, mode))
        raise KeyboardInterrupt

    monkeypatch.setattr(fileio.os, "open", open_then_interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_atomic(tmp_path / "out.png", b"x")
    assert os.listdir(tmp_path) == []
