"""Ctrl-C during a long batch job leaves only complete files."""

import os
import signal
import subprocess
import sys
import time

from PIL import Image


def test_interrupted_sampling_leaves_only_complete_pngs(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "vaesdk.cli.main", "sample", "--n", "100000", "--seed", "0", "--out-dir", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path,
        # A shell starts background jobs with SIGINT ignored, and the child would inherit
        # that (and Python then installs no KeyboardInterrupt handler): give it the default.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    deadline = time.time() + 120
    while time.time() < deadline and len(_complete(out)) < 50:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err.decode()
    assert b"interrupted" in err and b"Traceback" not in err
    names = os.listdir(out)
    assert len(names) >= 50
    assert not [n for n in names if not n.endswith(".png") or n.startswith(".")]  # no temporary files
    for name in names:
        with Image.open(out / name) as im:
            im.load()  # raises on a truncated file
            assert im.size == (28, 28)


def test_sigterm_cleans_up_like_ctrl_c(tmp_path):
    # Python's default for SIGTERM ends the process without running cleanups (an export's
    # temporary bundle folder stayed behind); the CLI turns it into an interruption.
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "vaesdk.cli.main", "sample", "--n", "100000", "--seed", "0", "--out-dir", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path,
    )  # fmt: skip
    deadline = time.time() + 120
    while time.time() < deadline and len(_complete(out)) < 20:
        time.sleep(0.05)
    proc.terminate()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err.decode()
    assert b"interrupted" in err and b"Traceback" not in err
    names = os.listdir(out)
    assert len(names) >= 20
    assert not [n for n in names if not n.endswith(".png") or n.startswith(".")]  # no temporary files


def _complete(folder):
    # Finished PNGs only: a temporary file being written is removed when the run is interrupted.
    return [n for n in os.listdir(folder) if n.endswith(".png") and not n.startswith(".")] if folder.exists() else []
