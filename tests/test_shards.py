"""Resumable sharded jobs (vaesdk.run_job with job_dir, `vae embed/score --job-dir`): an interrupted
job resumes without redoing finished shards or duplicating results, and ends equal to an
uninterrupted run; a folder of another job is refused."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

import vaesdk
import vaesdk.jobs.blocks
from vaesdk.jobs.blocks import BLOCK_SIZE
from vaesdk.cli.main import app
from folders import png_folder

BLOCK = BLOCK_SIZE


@pytest.fixture(scope="module")
def folder(fashion_test, tmp_path_factory):
    """700 real test images (three one-block shards, the last one partial) and one broken file."""
    return png_folder(tmp_path_factory.mktemp("job-inputs"), fashion_test.images[:700], {"img0300x.png": b"broken"})


@pytest.fixture(scope="module")
def model(tiny_vae_bundle):
    return vaesdk.load(tiny_vae_bundle, device="cpu")


class Interrupted(KeyboardInterrupt):
    pass


def stop_after(inputs: int):
    done = [0]

    def progress(n):
        done[0] += n
        if done[0] >= inputs:
            raise Interrupted()

    return progress


def count_blocks(monkeypatch):
    computed = []
    real = vaesdk.jobs.blocks.run_block

    def counting(model, options, block, items):
        computed.append(block)
        return real(model, options, block, items)

    monkeypatch.setattr(vaesdk.jobs.blocks, "run_block", counting)
    return computed


def assert_same(a, b):
    assert a.names == b.names
    assert list(a.columns) == list(b.columns)
    for c in a.columns:
        assert a.columns[c].dtype == b.columns[c].dtype
        assert a.columns[c].tobytes() == b.columns[c].tobytes(), c
    assert [(n, str(e)) for n, e in a.errors] == [(n, str(e)) for n, e in b.errors]
    assert a.error_positions == b.error_positions


def test_an_interrupted_job_resumes_without_redoing_or_duplicating(folder, model, tmp_path, monkeypatch):
    job = tmp_path / "job"
    want = vaesdk.run_job(model, "score", [folder], k=2, seed=7)
    # Interrupted during the second shard: the first is written, the second is not.
    with pytest.raises(Interrupted):
        vaesdk.run_job(model, "score", [folder], job_dir=job, shard_size=BLOCK, k=2, seed=7, progress=stop_after(BLOCK + 10))
    assert sorted(p.name for p in job.iterdir()) == [".lock", "job.json", "shard-00000.npz"]
    first = (job / "shard-00000.npz").stat()
    computed = count_blocks(monkeypatch)
    got = vaesdk.run_job(model, "score", [folder], job_dir=job, shard_size=BLOCK, k=2, seed=7)
    assert computed == [1, 2]  # only the unfinished shards
    after = (job / "shard-00000.npz").stat()
    assert (after.st_ino, after.st_mtime_ns) == (first.st_ino, first.st_mtime_ns)
    assert sorted(p.name for p in job.iterdir()) == [".lock", "job.json", "shard-00000.npz", "shard-00001.npz", "shard-00002.npz"]
    assert len(got.names) == len(set(got.names)) == 700
    assert_same(got, want)
    # A finished job computes nothing when run again.
    computed.clear()
    assert_same(vaesdk.run_job(model, "score", [folder], job_dir=job, shard_size=BLOCK, k=2, seed=7), want)
    assert computed == []


def test_shards_of_several_blocks_and_embeddings(folder, model, tmp_path):
    want = vaesdk.run_job(model, "embed", [folder], logvar=True)
    got = vaesdk.run_job(model, "embed", [folder], job_dir=tmp_path / "job", shard_size=2 * BLOCK, logvar=True, workers=2)
    assert_same(got, want)
    assert len(list((tmp_path / "job").glob("shard-*.npz"))) == 2


def test_results_in_input_order_put_each_error_where_its_input_was(folder, model):
    result = vaesdk.run_job(model, "embed", [folder])
    files = sorted(p.name for p in folder.iterdir())
    broken = files.index("img0300x.png")
    assert broken == BLOCK + 45 and result.error_positions == [broken]
    order = result.in_input_order()
    assert [n.rsplit("/", 1)[-1] for n, _ in order] == files
    assert isinstance(order[broken][1], vaesdk.VaesdkError)
    assert [x for _, x in order if not isinstance(x, vaesdk.VaesdkError)] == list(range(700))


def test_a_different_job_in_the_same_folder_is_refused(folder, model, tmp_path):
    job = tmp_path / "job"
    files = sorted(folder.glob("img00*.png"))
    vaesdk.run_job(model, "score", files, job_dir=job, shard_size=BLOCK, k=1, seed=0)
    with pytest.raises(vaesdk.InvalidArgumentError, match=r"belongs to another job: options there .*give a new job folder"):
        vaesdk.run_job(model, "score", files, job_dir=job, shard_size=BLOCK, k=1, seed=1)
    with pytest.raises(vaesdk.InvalidArgumentError, match="inputs there"):
        vaesdk.run_job(model, "score", files[1:], job_dir=job, shard_size=BLOCK, k=1, seed=0)
    with pytest.raises(vaesdk.InvalidArgumentError, match="shard size there 256, now 512"):
        vaesdk.run_job(model, "score", files, job_dir=job, shard_size=2 * BLOCK, k=1, seed=0)
    with pytest.raises(vaesdk.InvalidArgumentError, match="options there"):
        vaesdk.run_job(model, "embed", files, job_dir=job, shard_size=BLOCK)


def test_a_killed_write_leaves_nothing_that_counts(folder, model, tmp_path):
    job = tmp_path / "job"
    files = sorted(folder.glob("img00*.png"))
    want = vaesdk.run_job(model, "embed", files, job_dir=job, shard_size=BLOCK)
    (job / "shard-00000.npz").unlink()
    (job / ".shard-00000.npz.abc123.tmp").write_bytes(b"half a shard")  # what a kill during write_atomic leaves
    assert_same(vaesdk.run_job(model, "embed", files, job_dir=job, shard_size=BLOCK), want)
    assert sorted(p.name for p in job.iterdir()) == [".lock", "job.json", "shard-00000.npz"]


@pytest.mark.parametrize("size", [0, 100, BLOCK + 1, 4097 * BLOCK, True])
def test_bad_shard_sizes_are_refused(folder, model, tmp_path, size):
    with pytest.raises(vaesdk.InvalidArgumentError, match="shard_size must be a multiple of 256"):
        vaesdk.run_job(model, "embed", [folder], job_dir=tmp_path / "job", shard_size=size)


def test_the_cli_resumes_a_job_and_writes_what_a_plain_run_writes(folder, model, tiny_vae_bundle, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    plain = runner.invoke(app, ["score", str(folder), "--k", "2", "--seed", "3", "-o", "plain.csv", "-m", str(tiny_vae_bundle)])
    assert plain.exit_code == 3 and "img0300x.png" in plain.output  # the broken file, reported at the end
    with pytest.raises(Interrupted):
        vaesdk.run_job(model, "score", [folder], job_dir="job", shard_size=BLOCK, k=2, seed=3, progress=stop_after(2 * BLOCK + 5))
    assert len(list((tmp_path / "job").glob("shard-*.npz"))) == 2
    args = ["score", str(folder), "--k", "2", "--seed", "3", "-m", str(tiny_vae_bundle), "--job-dir", "job", "--shard-size", str(BLOCK)]
    resumed = runner.invoke(app, args + ["-o", "resumed.csv"])
    assert resumed.exit_code == 3, resumed.output
    assert (tmp_path / "resumed.csv").read_bytes() == (tmp_path / "plain.csv").read_bytes()
    index = json.loads((tmp_path / "job" / "job.json").read_text())
    assert index["options"] == {"operation": "score", "k": 2, "seed": 3} and index["shards"] == 3
    other = runner.invoke(app, args[:5] + ["4"] + args[6:] + ["-o", "other.csv"])  # --seed 4
    assert other.exit_code == 2 and "options there" in other.output and not (tmp_path / "other.csv").exists()


def test_embed_cli_with_a_job_dir_equals_a_plain_run(folder, tiny_vae_bundle, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    base = ["embed", str(folder), "-m", str(tiny_vae_bundle), "--logvar"]
    assert runner.invoke(app, base + ["-o", "plain.npz"]).exit_code == 3
    assert runner.invoke(app, base + ["-o", "sharded.npz", "--job-dir", "j", "--shard-size", "512"]).exit_code == 3
    with np.load("plain.npz") as a, np.load("sharded.npz") as b:
        assert sorted(a.files) == sorted(b.files) == ["files", "logvar", "mean"]
        for key in a.files:
            assert np.array_equal(a[key], b[key])


def test_inputs_held_in_memory_cannot_be_resumed(model, tmp_path, fashion_test):
    with pytest.raises(vaesdk.InvalidArgumentError, match="held in memory; a resumable job takes image files"):
        vaesdk.run_job(model, "embed", [fashion_test.images[0]], job_dir=tmp_path / "job")
    assert not (tmp_path / "job").exists()
