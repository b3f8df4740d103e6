"""Ctrl-C (and SIGTERM) during a long batch job leaves only complete files."""

import os
import signal
import subprocess
import sys
import time

import pytest
from PIL import Image


def _interrupt_sampling(tmp_path, sig: int, after: int) -> tuple[int, bytes, list[str]]:
    """Start `vae sample --out-dir`, send `sig` once `after` PNGs are complete; (exit code, stderr, files)."""
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "vaesdk.cli.main", "sample", "--n", "100000", "--seed", "0", "--out-dir", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path,
        # A shell starts background jobs with SIGINT ignored, and the child would inherit
        # that (and Python then installs no KeyboardInterrupt handler): give it the default.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    deadline = time.time() + 120
    while time.time() < deadline and len(_complete(out)) < after:
        time.sleep(0.05)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    return proc.returncode, err, os.listdir(out)


# SIGTERM: Python's default ends the process without running cleanups (a terminated export
# left its temporary bundle folder behind); the CLI turns it into an interruption too.
@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["ctrl-c", "sigterm"])
def test_interrupted_sampling_leaves_only_complete_pngs(tmp_path, sig, code):
    returncode, err, names = _interrupt_sampling(tmp_path, sig, 30)
    assert returncode == code, err.decode()
    assert b"interrupted" in err and b"Traceback" not in err
    assert len(names) >= 30
    assert not [n for n in names if not n.endswith(".png") or n.startswith(".")]  # no temporary files
    for name in names:
        with Image.open(tmp_path / "out" / name) as im:
            im.load()  # raises on a truncated file
            assert im.size == (28, 28)


def _complete(folder):
    # Finished PNGs only: a temporary file being written is removed when the run is interrupted.
    return [n for n in os.listdir(folder) if n.endswith(".png") and not n.startswith(".")] if folder.exists() else []
