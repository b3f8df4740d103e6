"""Resumable jobs under faults (vaesdk.jobs.shards): one run at a time per job folder, a
lock left by a killed run taken over, damaged, swapped or stale shards computed again,
leftover temporary files removed."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import vaesdk
import vaesdk.jobs.blocks
from folders import png_folder
from test_shards import assert_same, count_blocks

SHARD = vaesdk.jobs.blocks.BLOCK_SIZE


@pytest.fixture(scope="module")
def folder(fashion_test, tmp_path_factory):
    """600 test images: three one-block shards, the last one partial."""
    return png_folder(tmp_path_factory.mktemp("fault-inputs"), fashion_test.images[:600], {})


@pytest.fixture(scope="module")
def model(tiny_vae_bundle):
    return vaesdk.load(tiny_vae_bundle, device="cpu")


@pytest.fixture(scope="module")
def reference(model, folder):
    return vaesdk.run_job(model, "embed", [folder])


def run(model, folder, job):
    return vaesdk.run_job(model, "embed", [folder], job_dir=job, shard_size=SHARD)


def test_a_second_run_on_a_held_job_folder_is_refused_naming_the_holder(model, folder, tmp_path):
    job = tmp_path / "job"
    job.mkdir()
    fd = os.open(job / ".lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(fd, b"pid 4242 on elsewhere, since noon")
        with pytest.raises(vaesdk.OutputError, match=r"job folder .* is in use by pid 4242 on elsewhere, since noon; wait"):
            run(model, folder, job)
        assert not list(job.glob("shard-*"))  # refused before computing anything
    finally:
        os.close(fd)


def test_the_lock_of_a_killed_run_is_taken_over(model, folder, tmp_path, reference):
    job = tmp_path / "job"
    job.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, time, sys; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
         "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)", str(job / ".lock")],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(vaesdk.OutputError, match="is in use"):
        run(model, folder, job)
    holder.kill()  # kill -9: the kernel drops its lock
    holder.wait()
    assert_same(run(model, folder, job), reference)


@pytest.mark.parametrize("damage", ["swapped", "zero-byte", "truncated", "content-changed"])
def test_a_damaged_or_stale_shard_is_computed_again(model, folder, tmp_path, monkeypatch, damage):
    inputs = tmp_path / "inputs"
    shutil.copytree(folder, inputs)
    job = tmp_path / "job"
    first = run(model, inputs, job)
    shard0, shard2 = job / "shard-00000.npz", job / "shard-00002.npz"
    if damage == "swapped":
        shutil.copy(shard0, shard2)
    elif damage == "zero-byte":
        shard2.write_bytes(b"")
    elif damage == "truncated":
        shard2.write_bytes(shard2.read_bytes()[:100])
    else:  # an input of the last shard changed on disk after its shard was written
        last = sorted(inputs.iterdir())[-1]
        other = sorted(inputs.iterdir())[0]
        shutil.copy(other, last)
    computed = count_blocks(monkeypatch)
    again = run(model, inputs, job)
    assert computed == [2]  # only the bad shard
    assert_same(again, vaesdk.run_job(model, "embed", [inputs]))  # as an uninterrupted run
    assert np.array_equal(again.columns["mean"], first.columns["mean"]) == (damage != "content-changed")


def test_leftover_temporary_files_are_removed_by_the_next_run(model, folder, tmp_path, reference):
    job = tmp_path / "job"
    run(model, folder, job)
    for name in (".shard-00001.npz.abc123.tmp", ".job.json.def456.tmp", ".embed.csv.ghi789.tmp"):
        (job / name).write_bytes(b"partial")
    assert_same(run(model, folder, job), reference)
    assert not list(job.glob(".*.tmp"))


@pytest.mark.parametrize("out", ["z.csv", "z.npz", "z.npy"])
def test_running_a_finished_job_again_succeeds_and_keeps_its_output(folder, tmp_path, tiny_vae_bundle, out):
    from typer.testing import CliRunner

    from vaesdk.cli.main import app

    args = ["embed", str(folder), "-o", str(tmp_path / out), "--job-dir", str(tmp_path / "job"), "-m", str(tiny_vae_bundle)]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    written = (tmp_path / out).read_bytes()
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0, again.output
    assert (tmp_path / out).read_bytes() == written  # left as it is
    (tmp_path / out).write_bytes(b"something else")  # another file in the way is still refused
    refused = CliRunner().invoke(app, args)
    assert refused.exit_code == 6 and "already exists with other contents" in refused.output


@pytest.mark.slow
def test_kill_9_at_random_moments_then_resume_ends_byte_identical(fashion_test, tmp_path, tiny_vae_bundle):
    import random
    import time

    images = png_folder(tmp_path / "in", fashion_test.images[:3000], {})
    args = [sys.executable, "-m", "vaesdk", "embed", str(images), "-m", str(tiny_vae_bundle), "--shard-size", "256", "--workers", "1"]
    reference = tmp_path / "whole.csv"
    start = time.monotonic()
    assert subprocess.run([*args, "-o", str(reference)], capture_output=True, timeout=300).returncode == 0
    whole = time.monotonic() - start  # kills fall within an uninterrupted run's time
    out, job = tmp_path / "out.csv", tmp_path / "job"
    rng = random.Random(0)
    kills = 0
    for _ in range(6):  # at most six kills, each at a random moment of a run
        run = subprocess.Popen([*args, "-o", str(out), "--job-dir", str(job)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.2, 0.8) * whole)
        if run.poll() is not None:
            break
        run.kill()
        run.wait()
        kills += 1
    final = subprocess.run([*args, "-o", str(out), "--job-dir", str(job)], capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stderr
    assert kills >= 1
    assert out.read_bytes() == reference.read_bytes()
    assert not list(job.glob(".*.tmp")) and not list(tmp_path.glob(".out.csv.*.tmp"))
