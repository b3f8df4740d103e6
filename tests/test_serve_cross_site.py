"""The service against cross-site requests and stalling bodies: JSON routes take JSON only
(415), a state-changing request from another web page's origin is refused (403) unless
--cors-origin allows it, and an error names a few unknown keys, not all of them."""

from __future__ import annotations

import json

import httpx
import pytest

import vaesdk


@pytest.fixture(scope="module")
def base(tiny_vae_bundle):
    from vaesdk.serve import ServeConfig, create_app
    from webserver import running_app

    app = create_app([vaesdk.load(tiny_vae_bundle)], ServeConfig(cors_origins=["https://app.example"]))
    with running_app(app) as url:
        yield url


def test_a_browser_like_cross_origin_text_plain_request_is_refused(base):
    # What a page on another site can send without a preflight: text/plain, with its Origin.
    r = httpx.post(f"{base}/v1/models/tiny-vae/sample", content=b'{"n": 2}', headers={"Content-Type": "text/plain", "Origin": "https://evil.example"})
    assert r.status_code == 403, r.text
    assert "https://evil.example" in r.json()["detail"] and "--cors-origin" in r.json()["detail"]
    # The same from a multipart form.
    r = httpx.post(f"{base}/v1/models/tiny-vae/encode", files={"image": ("a.png", b"x")}, headers={"Origin": "https://evil.example"})
    assert r.status_code == 403


def test_json_routes_take_json_only(base):
    r = httpx.post(f"{base}/v1/models/tiny-vae/sample", content=b'{"n": 2}', headers={"Content-Type": "text/plain"})
    assert r.status_code == 415 and "application/json" in r.json()["detail"]
    assert httpx.post(f"{base}/v1/models/tiny-vae/sample", json={"n": 2}).status_code == 200


def test_the_own_page_and_allowed_origins_pass(base):
    for origin in (base, "https://app.example"):
        r = httpx.post(f"{base}/v1/models/tiny-vae/sample", json={"n": 1}, headers={"Origin": origin})
        assert r.status_code == 200, (origin, r.text)


def test_an_error_about_unknown_keys_is_bounded(base):
    body = {f"k{i:07d}": 0 for i in range(100_000)}
    r = httpx.post(f"{base}/v1/models/tiny-vae/sample", content=json.dumps(body), headers={"Content-Type": "application/json"}, timeout=60)
    assert r.status_code == 422
    assert len(r.content) < 1000 and "and 99995 more" in r.json()["detail"]
