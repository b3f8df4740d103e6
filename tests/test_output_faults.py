"""No command exits 0 after losing output: stdout on a full disk, with PYTHONUNBUFFERED=1
(common in containers) and without, ends with exit code 6 and one line naming stdout.
/dev/full refuses every write; a small tmpfs (when this process may mount one) takes the
first part of an output and refuses the rest, the partial write an unbuffered stdout lost."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
INPUTS = [str(ROOT / "docs" / "images" / "inputs"), str(ROOT / "tests" / "data" / "emoji-inputs")]
COMMANDS = {
    "embed": ["embed", *INPUTS],
    "score --json": ["score", *INPUTS, "--json", "--seed", "0"],
    "sample --out -": ["sample", "--n", "64", "--seed", "0", "--out", "-"],
}


def run_vae(args: list[str], stdout_path: str, unbuffered: bool) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    if unbuffered:
        env["PYTHONUNBUFFERED"] = "1"
    with open(stdout_path, "wb") as out:
        return subprocess.run([sys.executable, "-m", "vaesdk", *args], stdout=out, stderr=subprocess.PIPE, text=True, env=env, timeout=300)


@pytest.mark.parametrize("unbuffered", [True, False], ids=["unbuffered", "buffered"])
@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_full_disk_on_stdout_is_exit_6_with_one_line(command, unbuffered):
    done = run_vae(COMMANDS[command], "/dev/full", unbuffered)
    assert done.returncode == 6, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("vae: error:")]
    assert errors == ["vae: error: cannot write to stdout: No space left on device; the output is incomplete"]
    assert done.stderr.splitlines()[-1] == errors[0]  # the last word is the failure


@pytest.fixture
def small_disk(tmp_path):
    """An 8 KiB tmpfs: room for the first part of each output only."""
    mount = tmp_path / "full"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8k", "tmpfs", str(mount)], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({made.stderr.strip()[:80]}); /dev/full covers the refused write")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


@pytest.mark.parametrize("unbuffered", [True, False], ids=["unbuffered", "buffered"])
@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_disk_that_fills_mid_output_is_exit_6(small_disk, command, unbuffered):
    target = small_disk / "out"
    done = run_vae(COMMANDS[command], str(target), unbuffered)
    if target.stat().st_size < 8192:  # the whole output fitted: nothing was lost
        assert done.returncode == 0, done.stderr
        return
    assert done.returncode == 6, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("vae: error:")]
    assert len(errors) == 1 and "cannot write to stdout: No space left on device" in errors[0]
