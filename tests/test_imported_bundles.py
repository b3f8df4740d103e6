"""Bundles of models trained elsewhere, one per likelihood kind only `vae export --from` makes
(the committed tests/data/tiny-bernoulli, tiny-cbernoulli, tiny-fixed, tiny-none), through
every front end the runtime has: Python, the `vae` command and the service. No torch."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import httpx
import numpy as np
import pytest
from typer.testing import CliRunner

import vaesdk
from folders import png_folder
from vaesdk.cli.main import app

DATA = Path(__file__).resolve().parent / "data"
KINDS = {"tiny-bernoulli": "bernoulli", "tiny-cbernoulli": "continuous_bernoulli", "tiny-fixed": "fixed_gaussian", "tiny-none": "none"}
SHIRT = (Path(__file__).resolve().parents[1] / "docs" / "images" / "inputs" / "shirt.png").read_bytes()


@pytest.mark.parametrize("name", list(KINDS))
def test_python_operations(name, fashion_test):
    model = vaesdk.load(DATA / name)
    images = fashion_test.images[:6]
    assert model.spec.pixels.name == KINDS[name] and model.manifest.data["training"]["imported"] is True
    assert model.sample(3, seed=0).shape == (3, 28, 28, 1)
    assert model.reconstruct(images).shape == images.shape
    assert model.edit(images[0], dim=0, delta=1.0).shape == (1, 28, 28, 1)
    assert model.interpolate(images[0], images[1], steps=3).shape == (3, 28, 28, 1)
    scores = model.score(images, seed=0)
    assert scores.p_value is not None and np.all(np.isfinite(scores.anomaly))
    assert scores.bounds == (name != "tiny-none")
    if name == "tiny-none":
        with pytest.raises(vaesdk.UnsupportedOperationError, match="no pixel likelihood"):
            model.sample(2, seed=0, sample_pixels=True)
    else:
        drawn = model.sample(2, seed=0, sample_pixels=True)
        assert drawn.shape == (2, 28, 28, 1)
        if name == "tiny-bernoulli":
            assert set(np.unique(drawn)) <= {0, 255}


@pytest.mark.parametrize("name", list(KINDS))
def test_cli_commands(name, fashion_test, tmp_path):
    bundle = tmp_path / name
    import shutil

    shutil.copytree(DATA / name, bundle)  # directions add writes to the manifest
    folder = png_folder(tmp_path / "in", fashion_test.images[:8], {})
    a, b = png_folder(tmp_path / "a", fashion_test.images[8:12], {}), png_folder(tmp_path / "b", fashion_test.images[12:16], {})
    runner = CliRunner()
    for args in (
        ["sample", "-m", str(bundle), "--n", "4", "--seed", "0", "--out", str(tmp_path / "s.png")],
        ["reconstruct", "-m", str(bundle), str(folder), "--out-dir", str(tmp_path / "r")],
        ["edit", "-m", str(bundle), str(folder), "--dim", "0", "--delta", "1", "--out-dir", str(tmp_path / "e")],
        ["traverse", "-m", str(bundle), "--seed", "0", "--out", str(tmp_path / "t.png")],
        ["embed", "-m", str(bundle), str(folder), "-o", str(tmp_path / "z.npy")],
        ["score", "-m", str(bundle), str(folder), "--flag-p-below", "0.01", "--json"],
        ["directions", "-m", str(bundle), "add", "ab", "--from", str(a), "--to", str(b)],
        ["info", "-m", str(bundle)],
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, (args, result.output)
    assert "ab" in vaesdk.load(bundle).directions


@pytest.fixture(scope="module")
def server():
    from vaesdk.serve import ServeConfig, create_app
    from webserver import running_app

    models = [vaesdk.load(DATA / name) for name in KINDS]
    with running_app(create_app(models, ServeConfig())) as base:
        with httpx.Client(base_url=base, timeout=60) as client:
            yield client


@pytest.mark.parametrize("name", list(KINDS))
def test_the_service_gives_the_sdk_answers(server, name):
    model = vaesdk.load(DATA / name)
    r = server.post(f"/v1/models/{name}/sample", json={"n": 2, "seed": 3}, headers={"Accept": "application/json"})
    assert r.status_code == 200, r.text
    images, latents = model.sample(2, seed=3, return_latents=True)
    assert np.array_equal(np.asarray(r.json()["latents"], np.float32), latents)
    assert [base64.b64decode(p) for p in r.json()["images"]] == [vaesdk.encode_png(im) for im in images]
    r = server.post(f"/v1/models/{name}/score", files=[("image", ("shirt.png", SHIRT))], data={"seed": "3"})
    assert r.status_code == 200, r.text
    entry = r.json()["results"][0]
    s = model.score(SHIRT, seed=3)
    assert entry["anomaly"] == pytest.approx(float(s.anomaly[0])) and entry["p_value"] == pytest.approx(float(s.p_value[0]))
    if name == "tiny-none":  # no likelihood: no bounds, said as null rather than a number
        assert entry["elbo_bpd"] is None and entry["iw_bpd"] is None
    else:
        assert entry["elbo_bpd"] == pytest.approx(float(s.elbo_bpd[0]))
    r = server.post(f"/v1/models/{name}/reconstruct", files={"image": ("shirt.png", SHIRT)})
    assert r.status_code == 200 and r.content[:4] == b"\x89PNG"
    described = server.get(f"/v1/models/{name}").json()
    assert json.dumps(described)  # plain JSON
