"""Property tests: no input, however malformed, gets past vaesdk.imaging.images as anything but a
model-ready uint8 array or a VaesdkError (InvalidImageError for image data)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from vaesdk.base.errors import InvalidImageError, VaesdkError
from vaesdk.imaging.images import as_batch, load_image

SIZE = 28

# Pillow warns about the corrupt TIFF metadata these tests feed it on purpose.
pytestmark = pytest.mark.filterwarnings(r"ignore:.*:UserWarning:PIL\.TiffImagePlugin")

SIGNATURES = [
    b"\x89PNG\r\n\x1a\n",
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR",
    b"\xff\xd8\xff",
    b"\xff\xd8\xff\xe0\x00\x10JFIF\x00",
    b"GIF87a",
    b"GIF89a",
    b"BM",
    b"II*\x00",
    b"MM\x00*",
    b"RIFF\x00\x00\x00\x00WEBPVP8 ",
    b"RIFF\x00\x00\x00\x00WEBPVP8L",
]

FUZZ = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _encode(im: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kwargs)
    return buf.getvalue()


def _seed_images() -> list[bytes]:
    """Small valid files of every allowed format, the starting points for mutation."""
    rng = np.random.default_rng(7)
    rgb = Image.fromarray(rng.integers(0, 256, (9, 13, 3), dtype=np.uint8))
    gray16 = Image.fromarray(rng.integers(0, 65536, (9, 13), dtype=np.uint16))
    return [
        _encode(rgb, "PNG"),
        _encode(rgb.convert("P"), "PNG", transparency=0),
        _encode(gray16, "PNG"),
        _encode(rgb, "JPEG", quality=80),
        _encode(rgb.convert("L"), "JPEG", progressive=True),
        _encode(rgb, "BMP"),
        _encode(rgb, "GIF", save_all=True, append_images=[rgb.rotate(90)]),
        _encode(rgb, "WEBP", lossless=True),
        _encode(rgb, "TIFF"),
        _encode(rgb, "TIFF", compression="tiff_lzw"),
    ]


SEEDS = _seed_images()


def _assert_model_ready(out: np.ndarray) -> None:
    assert isinstance(out, np.ndarray)
    assert out.dtype == np.uint8
    assert out.shape == (SIZE, SIZE, 1)


def _load_or_refuse(data: bytes) -> None:
    try:
        out = load_image(data, SIZE, 1)
    except InvalidImageError:
        return
    _assert_model_ready(out)


@FUZZ
@given(data=st.binary(max_size=4096))
def test_arbitrary_bytes_load_or_raise_invalid_image(data):
    _load_or_refuse(data)


@FUZZ
@given(signature=st.sampled_from(SIGNATURES), rest=st.binary(max_size=4096))
def test_bytes_behind_a_real_signature_load_or_raise_invalid_image(signature, rest):
    _load_or_refuse(signature + rest)


@FUZZ
@given(
    seed=st.sampled_from(SEEDS),
    edits=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), min_size=1, max_size=8),
    keep=st.floats(0.05, 1.0),
)
def test_mutated_valid_files_load_or_raise_invalid_image(seed, edits, keep):
    # Random bytes rarely get past a decoder's header checks; corrupting real files does.
    data = bytearray(seed)
    for where, value in edits:
        data[int(where * len(data))] = value
    _load_or_refuse(bytes(data[: max(1, int(keep * len(data)))]))


ARRAY_DTYPES = st.sampled_from([np.uint8, np.uint16, np.int32, np.float32, np.float64, np.bool_])
ARRAY_SHAPES = hnp.array_shapes(min_dims=2, max_dims=4, min_side=0, max_side=6)


def _array_elements(dtype) -> st.SearchStrategy:
    if np.issubdtype(dtype, np.floating):
        # Mostly [0, 1] so that the accepted branch is exercised too, plus NaN, inf and strays.
        return st.one_of(
            st.floats(0.0, 1.0, width=32),
            st.floats(allow_nan=True, allow_infinity=True, width=32),
        )
    if dtype == np.int32:
        return st.one_of(st.integers(0, 255), st.integers(-(2**31), 2**31 - 1))
    return hnp.from_dtype(np.dtype(dtype))


@st.composite
def _arrays(draw) -> np.ndarray:
    dtype = draw(ARRAY_DTYPES)
    return draw(hnp.arrays(dtype, ARRAY_SHAPES, elements=_array_elements(dtype)))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(arr=_arrays())
def test_arbitrary_arrays_become_a_batch_or_raise_vaesdk_error(arr):
    try:
        out = as_batch(arr, SIZE, 1)
    except VaesdkError:
        return
    assert out.dtype == np.uint8
    assert out.ndim == 4
    assert out.shape[1:] == (SIZE, SIZE, 1)
    assert out.shape[0] >= 1
