"""Inputs under faults: stdin is counted while it is read and stops at the image file limit;
files whose names start with a dot (`..png`, `.png`) are images like any other."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import pytest

import vaesdk
from vaesdk.imaging.images import MAX_FILE_BYTES, image_files, image_suffix, read_stream

SHIRT = Path(__file__).resolve().parents[1] / "docs" / "images" / "inputs" / "shirt.png"


class Endless(io.RawIOBase):
    """/dev/zero as a stream, counting what was read from it."""

    def __init__(self):
        self.given = 0

    def readable(self):
        return True

    def readinto(self, b):
        b[:] = bytes(len(b))
        self.given += len(b)
        return len(b)


def test_an_endless_stdin_stops_one_read_past_the_limit():
    stream = Endless()
    with pytest.raises(vaesdk.InvalidImageError, match=f"stdin holds more than {MAX_FILE_BYTES} bytes"):
        read_stream(io.BufferedReader(stream, buffer_size=1 << 16))
    assert stream.given <= MAX_FILE_BYTES + (2 << 20)  # counted as it came, not read to the end


def test_a_stream_within_the_limit_is_read_whole():
    data = SHIRT.read_bytes()
    assert read_stream(io.BytesIO(data)) == data


def test_names_that_start_with_a_dot_are_images(tmp_path):
    for name in ("..png", ".png", "a.PNG", "notes.txt", "png"):
        shutil.copy(SHIRT, tmp_path / name)
    assert sorted(Path(p).name for p in image_files(tmp_path)) == ["..png", ".png", "a.PNG"]
    assert (image_suffix("..png"), image_suffix("png"), image_suffix("x.tar.GIF")) == (".png", "", ".gif")
    model = vaesdk.load()
    assert model.embed([tmp_path / "..png"]).shape == (1, model.latent_dim)
