"""Each multipart parse error of `vae serve` says what it is; only too many parts mentions the limits."""

from __future__ import annotations

import httpx
import pytest

import vaesdk


@pytest.fixture(scope="module")
def server(tiny_vae_bundle):
    from vaesdk.serve import Limits, ServeConfig, create_app
    from webserver import running_app

    app = create_app([vaesdk.load(tiny_vae_bundle)], ServeConfig(limits=Limits(max_images=2)))
    with running_app(app) as base:
        with httpx.Client(base_url=base, timeout=30) as client:
            yield client


def test_a_body_without_a_boundary_is_named_as_such(server):
    r = server.post("/v1/models/tiny-vae/encode", content=b"x", headers={"Content-Type": "multipart/form-data"})
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert "the multipart body cannot be read: " in detail and "boundary" in detail.lower() and "at most" not in detail


def test_too_many_files_names_the_limit(server):
    files = [("image", (f"{i}.png", b"x")) for i in range(4)]
    r = server.post("/v1/models/tiny-vae/encode", files=files)
    assert r.status_code == 413, r.text
    assert "at most 2 images" in r.json()["detail"]
