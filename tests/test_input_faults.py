"""Inputs under faults: stdin is counted while it is read and stops at the image file limit;
files whose names start with a dot (`..png`, `.png`) are images like any other."""

from __future__ import annotations

import io
import shutil
import subprocess
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


# ---- the decode budget --------------------------------------------------------------------


def test_the_decode_budget_lets_holders_in_only_while_they_fit():
    import threading
    import time

    from vaesdk.imaging.images import DecodeBudget

    budget = DecodeBudget(100)
    inside, most = [0], [0]
    lock = threading.Lock()

    def work(n):
        with budget.hold(n):
            with lock:
                inside[0] += n
                most[0] = max(most[0], inside[0])
            time.sleep(0.02)
            with lock:
                inside[0] -= n

    threads = [threading.Thread(target=work, args=(n,)) for n in (60, 60, 30, 250, 40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert most[0] <= 250 and budget.used == 0  # 250 alone (over the budget), the rest within 100
    assert most[0] == 250 or most[0] <= 100


def test_decode_cost_counts_bytes_not_pixels():
    from vaesdk.imaging.images import DECODE_PEAK_FACTOR, decode_cost

    assert decode_cost(10, 10, "L") == 10 * 10 * 4 * DECODE_PEAK_FACTOR  # alpha compositing works in RGBA
    assert decode_cost(10, 10, "I;16") == decode_cost(10, 10, "L")
    assert decode_cost(10, 10, "F") == 10 * 10 * 4 * DECODE_PEAK_FACTOR


# Writes the test image (a 16-bit RGBA PNG of 6000 x 6000 pixels, 1.1 MB) to argv[1].
MAKE_PNG = r"""
import struct, sys, zlib
w = h = 6000
raw = b"".join(b"\0" + (bytes(range(256)) * (w * 8 // 256 + 1))[: w * 8] for _ in range(h))
chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)
open(sys.argv[1], "wb").write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 6, 0, 0, 0)) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))
"""

# Decodes the file argv[1] on three threads at once with a budget of argv[2] bytes; prints
# how much the process grew (MiB), or "unmeasurable".
PEAK = r"""
import sys
from concurrent.futures import ThreadPoolExecutor
sys.path.insert(0, sys.argv[3])
from memory import Growth
import vaesdk.imaging.images as I
I.DECODE_BUDGET.total = int(sys.argv[2])
png = open(sys.argv[1], "rb").read()
if not Growth.measurable():
    sys.exit(print("unmeasurable"))
with Growth() as grown, ThreadPoolExecutor(3) as pool:
    list(pool.map(lambda _: I.load_image(png, 28, 1), range(3)))
print(round(grown.mib))
"""


@pytest.mark.slow
def test_three_workers_decoding_16_bit_6000_squared_pngs_stay_within_the_budget(tmp_path):
    import subprocess
    import sys

    from memory import TESTS, UNMEASURABLE

    path = tmp_path / "big.png"
    subprocess.run([sys.executable, "-c", MAKE_PNG, str(path)], check=True, timeout=120)

    def grown_mb(budget: int) -> int:
        out = subprocess.run([sys.executable, "-c", PEAK, str(path), str(budget), TESTS], capture_output=True, text=True, check=True).stdout
        if out.strip() == "unmeasurable":
            pytest.skip(UNMEASURABLE)
        return int(out)

    bounded, unbounded = grown_mb(1 << 30), grown_mb(1 << 40)
    # Three at once grew the process by 2,326 MB here, one at a time (the 1 GiB budget) by 955 MB.
    assert bounded < 1200 and unbounded > 1.8 * bounded, (bounded, unbounded)


def test_vae_embed_of_an_endless_stdin_stops_at_the_limit(tmp_path):
    import sys

    from memory import UNMEASURABLE, run_child

    err = tmp_path / "stderr"
    with open("/dev/zero", "rb") as zero, open(err, "wb") as stderr:
        code, peak_mib = run_child([sys.executable, "-m", "vaesdk", "embed", "-"], stdin=zero, stdout=subprocess.DEVNULL, stderr=stderr)
    assert code == 3, err.read_text()
    assert f"stdin holds more than {MAX_FILE_BYTES} bytes" in err.read_text()
    if peak_mib == 0:
        pytest.skip(UNMEASURABLE)
    # The command's peak memory: about one limit's worth, not all of what /dev/zero offers.
    assert peak_mib < 3 * MAX_FILE_BYTES / 2**20


# ---- one line per message ------------------------------------------------------------------


def test_a_corrupt_exif_block_reads_without_a_warning(tmp_path):
    import subprocess
    import sys

    from PIL import Image

    path = tmp_path / "bad-exif.jpg"
    # An EXIF block that says it holds more than it does: Pillow warns "Corrupt EXIF data".
    Image.new("L", (28, 28), 128).save(path, "JPEG", exif=b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\x00\x05\x01\x12\x00\x03\x00\x00\x00\x01\x00\x06")
    done = subprocess.run([sys.executable, "-W", "always", "-m", "vaesdk", "embed", str(path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert done.stdout.count("\n") == 2


def test_library_warnings_reach_the_command_line_as_one_line():
    import subprocess
    import sys

    code = (
        "import sys, warnings; from vaesdk.cli import main as m; warnings.showwarning = m.one_line_warning; "
        "warnings.warn('first line\\nsecond line', RuntimeWarning)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stderr == "vae: warning: first line second line\n"


def test_onnxruntime_logs_errors_only(tiny_vae_bundle):
    from vaesdk.runtime.session import create_graph

    graph = create_graph((tiny_vae_bundle / "decoder.onnx").read_bytes(), "cpu")
    assert graph.session.get_session_options().log_severity_level == 3


def test_folder_expansion_counts_and_names_what_it_skips(tmp_path):
    from typer.testing import CliRunner

    from vaesdk.cli.main import app

    for name in ("a.png", "..png", ".png"):
        shutil.copy(SHIRT, tmp_path / name)
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "raw.bin").write_bytes(b"\0")
    result = CliRunner().invoke(app, ["embed", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert result.output.count("\n") >= 4  # the header and three images (..png and .png included)
    assert "skipped 2 file(s) in the folders that are not images" in result.output and "notes.txt" in result.output
