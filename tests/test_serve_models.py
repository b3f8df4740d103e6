"""`vae serve` with several models: the bundled one beside the committed tiny bundles (latent
size 8 against 64, a plain autoencoder among VAEs). Each route answers with each model's own
SDK result; the document declares what any served model accepts (and each model's own facts),
what one model lacks gets that model's refusal; by default the command
serves every bundled model."""

from __future__ import annotations

import base64
from pathlib import Path

import httpx
import numpy as np
import pytest
from typer.testing import CliRunner

import vaesdk
from vaesdk.imaging.images import encode_png, make_grid
from webserver import running_app

ROOT = Path(__file__).resolve().parents[1]
SHIRT = (ROOT / "docs" / "images" / "inputs" / "shirt.png").read_bytes()


@pytest.fixture(scope="module")
def models(bundled_model, tiny_vae_bundle, tiny_ae_bundle) -> list[vaesdk.Model]:
    return [bundled_model, vaesdk.load(tiny_vae_bundle, device="cpu"), vaesdk.load(tiny_ae_bundle, device="cpu")]


@pytest.fixture(scope="module")
def served(models):
    from vaesdk.serve import create_app

    app = create_app(models)
    with running_app(app) as base, httpx.Client(base_url=base, timeout=60) as client:
        yield client, app.openapi()


def test_every_model_is_listed_and_answers_with_its_own_results(served, models):
    client, _ = served
    assert [m["name"] for m in client.get("/v1/models").json()["models"]] == [m.name for m in models]
    for m in models:
        api = f"/v1/models/{m.name}"
        r = client.post(f"{api}/sample", json={"n": 3, "seed": 7})
        assert r.status_code == 200 and r.content == encode_png(make_grid(m.sample(3, seed=7))), m.name
        z = np.random.default_rng(0).standard_normal((2, m.latent_dim)).astype(np.float32)
        assert client.post(f"{api}/decode", json={"latents": z.tolist()}).content == encode_png(make_grid(m.decode(z)))
        wrong = client.post(f"{api}/decode", json={"latents": [[0.0] * (m.latent_dim + 1)]})
        assert wrong.status_code == 422 and str(m.latent_dim) in wrong.json()["detail"]
        encoded = client.post(f"{api}/encode", files={"image": ("shirt.png", SHIRT)}).json()["results"][0]
        posterior = m.encode(SHIRT)
        assert encoded["mean"] == posterior.mean[0].tolist()
        assert encoded["logvar"] == (posterior.logvar[0].tolist() if m.kind == "vae" else None)
        last = m.latent_dim - 1
        r = client.post(f"{api}/edit", files={"image": ("shirt.png", SHIRT)}, data={"dim": str(last), "delta": "2"})
        assert r.content == encode_png(m.edit(SHIRT, dim=last, delta=2.0)[0]), m.name
        r = client.post(f"{api}/sample", json={"n": 2, "seed": 1}, headers={"Accept": "application/json"})
        assert [base64.b64decode(p) for p in r.json()["images"]] == [encode_png(im) for im in m.sample(2, seed=1)]


def test_a_request_for_the_autoencoder_that_needs_a_vae_gets_the_sdks_refusal(served, models):
    client, _ = served
    ae = next(m for m in models if m.kind == "ae")
    r = client.post(f"/v1/models/{ae.name}/reconstruct", files={"image": ("a.png", SHIRT)}, data={"sample_latent": "true"})
    assert r.status_code == 422 and "plain autoencoder" in r.json()["detail"]


def test_the_document_declares_what_each_served_model_accepts(served, models):
    _, doc = served
    assert not [p for p in doc["paths"] if "{name}" in p]  # one path per model, never a union of them
    for m in models:
        api = f"/v1/models/{m.name}"
        sample = doc["paths"][f"{api}/sample"]["post"]
        assert sample["operationId"] == f"{m.name.replace('-', '_')}_sample" and sample["tags"] == [m.name]
        body = sample["requestBody"]["content"]["application/json"]["schema"]
        enum = next(s for s in body["properties"]["prior"]["anyOf"] if "enum" in s)["enum"]
        assert enum == list(m.priors), m.name
        rows = doc["paths"][f"{api}/decode"]["post"]["requestBody"]["content"]["application/json"]["schema"]
        row = rows["properties"]["latents"]["items"]
        assert row["minItems"] == row["maxItems"] == m.latent_dim, m.name
        form = doc["paths"][f"{api}/edit"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
        assert form["properties"]["dim"]["maximum"] == m.latent_dim - 1
        latent = form["properties"]["sample_latent"]
        assert latent.get("enum") == (None if m.kind == "vae" else [False]), m.name  # the AE accepts false only
        file = next(p for p in doc["paths"][f"{api}/files/{{file}}"]["get"]["parameters"] if p["name"] == "file")
        assert file["schema"]["enum"] == list(m.describe()["files"].values())


def test_models_whose_operation_ids_would_collide_are_refused(bundled_model, tiny_vae_bundle, tmp_path):
    import json
    import shutil

    from vaesdk.serve import create_app

    shutil.copytree(tiny_vae_bundle, tmp_path / "twin")
    manifest = tmp_path / "twin" / "manifest.json"
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "name": "fashion_mnist"}))
    twin = vaesdk.load(tmp_path / "twin", device="cpu")
    with pytest.raises(vaesdk.InvalidArgumentError, match="'fashion-mnist' and 'fashion_mnist' would share the operation ids fashion_mnist_"):
        create_app([bundled_model, twin])


def test_what_one_model_lacks_gets_that_models_refusal(served, models):
    client, _ = served
    ae, tiny = models[2], models[1]
    r = client.post(f"/v1/models/{ae.name}/sample", json={"n": 1, "prior": "standard"})
    assert r.status_code == 422 and "plain autoencoder" in r.json()["detail"] and "aggregate" in r.json()["detail"]
    r = client.post(f"/v1/models/{tiny.name}/edit", files={"image": ("a.png", SHIRT)}, data={"dim": "63"})
    assert r.status_code == 422 and "0..7" in r.json()["detail"]
    assert client.post(f"/v1/models/{models[0].name}/edit", files={"image": ("a.png", SHIRT)}, data={"dim": "63"}).status_code == 200


def test_vae_serve_serves_every_bundled_model_by_default(monkeypatch, tiny_vae_bundle):
    import vaesdk.bundle.registry
    import vaesdk.serve
    from vaesdk.cli.main import app

    others = [m for m in vaesdk.list_models() if m != vaesdk.DEFAULT_MODEL]
    bundled = {**vaesdk.bundle.registry.bundled_models(), "tiny-vae": tiny_vae_bundle}
    monkeypatch.setattr(vaesdk.bundle.registry, "bundled_models", lambda: bundled)
    served: list[list[str]] = []
    monkeypatch.setattr(vaesdk.serve, "serve", lambda models, **kw: served.append([m.name for m in models]))
    r = CliRunner().invoke(app, ["serve", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert served == [[vaesdk.DEFAULT_MODEL, *others, "tiny-vae"]]
