"""A newcomer's install: `pip install .` into a fresh virtual environment without torch,
then the runtime commands on the bundled model."""

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent


def run(*args, cwd=None, check=True):
    r = subprocess.run([str(a) for a in args], capture_output=True, text=True, cwd=cwd, timeout=900)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, args))} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory):
    venv = tmp_path_factory.mktemp("fresh") / "venv"
    base = getattr(sys, "_base_executable", sys.executable)
    run(base, "-m", "venv", venv)
    run(venv / "bin" / "python", "-m", "pip", "install", "-q", ROOT)
    return venv


def test_install_brings_no_torch_and_one_import_name(fresh_venv):
    py = fresh_venv / "bin" / "python"
    assert run(py, "-c", "import torch", check=False).returncode != 0
    purelib = run(py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip()
    ours = run(py, "-m", "pip", "show", "-f", "vaesdk").stdout
    files = [line.strip() for line in ours.split("Files:")[1].splitlines() if line.strip()]
    top = {f.split("/")[0] for f in files if not f.startswith("..")}
    assert {t for t in top if not t.endswith(".dist-info")} == {"vaesdk"}, top
    for generic in ("cli", "training", "export", "models"):
        assert not (Path(purelib) / generic).exists()
    assert any(f.endswith("models/fashion-mnist/decoder.onnx") for f in files)
    for shipped in (
        "vaesdk/manifest.schema.json", "vaesdk/web/index.html", "vaesdk/web/vae.js", "vaesdk/serve/app.py",
        "vaesdk/web/vendor/ort-wasm-simd-threaded.wasm", "vaesdk/web/vendor/LICENSE",
    ):  # fmt: skip
        assert shipped in files, shipped


def test_sample_and_edit_work_from_a_fresh_install(fresh_venv, tmp_path):
    vae = fresh_venv / "bin" / "vae"
    r = run(vae, "sample", "--n", "16", "--seed", "0", cwd=tmp_path)
    assert "samples.png" in r.stderr
    with Image.open(tmp_path / "samples.png") as im:
        grid = np.asarray(im)
    assert grid.shape == (4 * 2 * 28 + 5 * 2,) * 2 and grid.std() > 10  # 4x4 at scale 2; a picture, not a blank
    crop = tmp_path / "one.png"
    Image.fromarray(grid[4:60, 4:60]).save(crop)  # first sample, 2x enlarged: exercises the resize policy
    r = run(vae, "edit", crop, "--dim", "3", "--delta", "2", cwd=tmp_path)
    assert (tmp_path / "one.edit.png").exists() and "one.edit.png" in r.stderr
    r = run(fresh_venv / "bin" / "python", "-m", "vaesdk", "sample", "--n", "4", "--seed", "0", "-o", "m.png", cwd=tmp_path)
    assert (tmp_path / "m.png").is_file() and "m.png" in r.stderr
    r = run(vae, "info", cwd=tmp_path)
    assert "runs on     cpu" in r.stdout
    r = run(vae, "train", cwd=tmp_path, check=False)
    assert r.returncode == 7 and "pip install" in r.stderr
