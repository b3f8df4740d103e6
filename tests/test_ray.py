"""`vae embed/score --ray`: the same results as the single-process command, on a local Ray
instance of two workers (loopback only) over real Fashion-MNIST images."""

import time

import numpy as np
import pytest

# The ray extra (scripts/test installs it); `pip install '.[dev]'` alone has no Ray: skipped there.
pytestmark = pytest.mark.ray
ray = pytest.importorskip("ray")
from typer.testing import CliRunner

import vaesdk
from vaesdk.cli.main import app
from folders import png_folder

runner = CliRunner()


@pytest.fixture(scope="module")
def cluster():
    t0 = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    assert ray.cluster_resources()["CPU"] == 2
    print(f"ray started in {time.perf_counter() - t0:.1f} s")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def folder(fashion_test, tmp_path_factory):
    """600 real test images (three blocks, so both workers get some) and a broken file."""
    return png_folder(tmp_path_factory.mktemp("ray-inputs"), fashion_test.images[:600], {"img0042x.png": b"not an image"})


def vae(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_embed_on_ray_equals_the_single_process_command(cluster, folder, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    plain = vae("embed", folder, "-o", "plain.npz", "--logvar", "--device", "cpu")
    on_ray = vae("embed", folder, "-o", "ray.npz", "--logvar", "--device", "cpu", "--ray", "auto")
    assert plain.exit_code == on_ray.exit_code == 3, on_ray.output  # the broken file, reported by both
    assert "img0042x.png is not a readable image" in on_ray.output
    with np.load("plain.npz") as a, np.load("ray.npz") as b:
        assert len(a["files"]) == 600
        for key in ("files", "mean", "logvar"):
            assert np.array_equal(a[key], b[key]), key


def test_score_on_ray_equals_the_single_process_command(cluster, folder, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ("score", folder, "--k", "3", "--seed", "5", "--device", "cpu")
    plain = vae(*args, "-o", "plain.csv")
    on_ray = vae(*args, "-o", "ray.csv", "--ray", "auto")
    assert plain.exit_code == on_ray.exit_code == 3, on_ray.output
    text = (tmp_path / "plain.csv").read_text()
    assert len(text.splitlines()) == 601
    assert (tmp_path / "ray.csv").read_text() == text
    # Resumable shards on Ray: the same bytes again.
    sharded = vae(*args, "-o", "sharded.csv", "--ray", "auto", "--job-dir", "job", "--shard-size", "512")
    assert sharded.exit_code == 3
    assert (tmp_path / "sharded.csv").read_text() == text
    assert sorted(p.name for p in (tmp_path / "job").iterdir()) == [".lock", "job.json", "shard-00000.npz", "shard-00001.npz"]


def test_stdin_cannot_go_to_ray(cluster, folder):
    r = runner.invoke(app, ["embed", "-", "--ray", "auto"], input=(folder / "img0001.png").read_bytes())
    assert r.exit_code == 2 and "Ray workers read images by path" in r.output


def test_importing_vaesdk_does_not_import_ray():
    import subprocess
    import sys

    code = "import sys, vaesdk, vaesdk.cli.main; assert 'ray' not in sys.modules, 'ray imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("name", ["tiny-bernoulli", "tiny-none"])
def test_imported_bundles_score_on_ray_as_in_process(cluster, folder, tmp_path, monkeypatch, name):
    from pathlib import Path

    bundle = Path(__file__).resolve().parent / "data" / name
    monkeypatch.chdir(tmp_path)
    args = ("score", folder, "-m", bundle, "--seed", "5", "--device", "cpu")
    plain, on_ray = vae(*args, "-o", "plain.csv"), vae(*args, "-o", "ray.csv", "--ray", "auto")
    assert plain.exit_code == on_ray.exit_code == 3, on_ray.output
    assert (tmp_path / "ray.csv").read_text() == (tmp_path / "plain.csv").read_text()
