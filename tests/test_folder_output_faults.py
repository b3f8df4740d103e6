"""`vae reconstruct` and `vae edit` into a folder under faults: a rerun keeps the outputs that
exist and writes only the missing ones (no `-1` duplicates), one run at a time writes into a
folder, and a full disk stops the run and says how many inputs have no output, which a rerun
then fills."""

from __future__ import annotations

import fcntl
import os

import pytest
from typer.testing import CliRunner

import vaesdk
import vaesdk.cli.common as common
from folders import png_folder
from vaesdk.cli.main import app

runner = CliRunner()


@pytest.fixture
def inputs(fashion_test, tmp_path):
    return png_folder(tmp_path / "in", fashion_test.images[:40], {})


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def outputs(folder):
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


@pytest.mark.parametrize("command", [["reconstruct"], ["edit", "--dim", "0", "--delta", "1"]])
def test_a_rerun_keeps_what_exists_and_writes_only_the_missing(inputs, tmp_path, tiny_vae_bundle, command):
    out = tmp_path / "out"
    first = run(*command, inputs, "--out-dir", out, "-m", tiny_vae_bundle)
    assert first.exit_code == 0, first.output
    names = outputs(out)
    assert len(names) == 40
    removed = names[5:10]
    for name in removed:
        (out / name).unlink()
    before = {n: (out / n).stat().st_mtime_ns for n in names if n not in removed}
    again = run(*command, inputs, "--out-dir", out, "-m", tiny_vae_bundle)
    assert again.exit_code == 0, again.output
    assert outputs(out) == names  # the same 40 names: nothing duplicated as NAME.recon-1.png
    assert {n: (out / n).stat().st_mtime_ns for n in before} == before  # the kept ones untouched
    assert "kept 35 output(s)" in again.output
    forced = run(*command, inputs, "--out-dir", out, "-m", tiny_vae_bundle, "--force")
    assert forced.exit_code == 0 and outputs(out) == names and "kept" not in forced.output


def test_seeded_draws_give_the_uninterrupted_run_s_pictures_on_a_rerun(inputs, tmp_path, tiny_vae_bundle):
    whole, partial = tmp_path / "whole", tmp_path / "partial"
    args = ["reconstruct", inputs, "--sample-latent", "--seed", "4", "-m", tiny_vae_bundle]
    assert run(*args, "--out-dir", whole).exit_code == 0
    assert run(*args, "--out-dir", partial).exit_code == 0
    for name in outputs(partial)[::3]:
        (partial / name).unlink()
    assert run(*args, "--out-dir", partial).exit_code == 0
    assert all((whole / n).read_bytes() == (partial / n).read_bytes() for n in outputs(whole))


def test_a_second_run_into_a_held_folder_is_refused(inputs, tmp_path, tiny_vae_bundle):
    out = tmp_path / "out"
    out.mkdir()
    fd = os.open(out, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        r = run("reconstruct", inputs, "--out-dir", out, "-m", tiny_vae_bundle)
        assert r.exit_code == 6 and "another vae run is writing into" in r.output
        assert outputs(out) == []
    finally:
        os.close(fd)


def test_a_full_disk_stops_the_run_and_counts_what_has_no_output(inputs, tmp_path, tiny_vae_bundle, monkeypatch):
    out = tmp_path / "out"
    real = common.write_atomic
    calls = [0]

    def filling(path, data, overwrite=False):
        calls[0] += 1
        if calls[0] > 12:
            raise vaesdk.OutputError(f"cannot write {path}: No space left on device")
        return real(path, data, overwrite=overwrite)

    monkeypatch.setattr(common, "write_atomic", filling)
    r = run("reconstruct", inputs, "--out-dir", out, "-m", tiny_vae_bundle)
    assert r.exit_code == 6, r.output
    written = len(outputs(out))
    assert written < 40 and f"{40 - written} of 40 input(s) have no output" in r.output
    assert len([line for line in r.output.splitlines() if line.startswith("vae: error:")]) == 1
    monkeypatch.setattr(common, "write_atomic", real)
    again = run("reconstruct", inputs, "--out-dir", out, "-m", tiny_vae_bundle)
    assert again.exit_code == 0 and len(outputs(out)) == 40 and not any("-1." in n for n in outputs(out))
