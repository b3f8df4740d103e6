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


def test_large_json_bodies_are_refused_unparsed_while_other_requests_go_on(base):
    """Four 11 MB bodies of unknown keys at once (which, parsed, held the interpreter for
    seconds): each is refused from its size, 413 naming the JSON limit, and /healthz answers
    meanwhile."""
    import threading

    from vaesdk.serve.settings import Limits

    body = json.dumps({f"key{i:07d}": 0 for i in range(700_000)}).encode()
    assert len(body) > Limits().max_json_bytes
    answers: list[httpx.Response] = []

    def post() -> None:
        answers.append(httpx.post(f"{base}/v1/models/tiny-vae/sample", content=body, headers={"Content-Type": "application/json"}, timeout=120))

    posts = [threading.Thread(target=post) for _ in range(4)]
    for p in posts:
        p.start()
    assert httpx.get(f"{base}/healthz", timeout=120).status_code == 200
    for p in posts:
        p.join()
    assert [r.status_code for r in answers] == [413] * 4
    assert all(f"limit for JSON bodies is {Limits().max_json_bytes}" in r.json()["detail"] for r in answers)


def test_the_host_header_must_name_this_server(tiny_vae_bundle):
    """Against DNS rebinding: a page on evil.example whose name resolves to 127.0.0.1 sends
    Host: evil.example, and is refused; the loopback names pass."""
    from fastapi.testclient import TestClient

    from vaesdk.serve import ServeConfig, create_app
    from vaesdk.serve.settings import LOOPBACK_NAMES

    app = create_app([vaesdk.load(tiny_vae_bundle)], ServeConfig(allowed_hosts=LOOPBACK_NAMES))
    with TestClient(app) as client:
        r = client.get("/v1/models", headers={"Host": "evil.example:8000"})
        assert r.status_code == 400 and r.json()["error"] == "bad_host"
        assert "'evil.example:8000'" in r.json()["detail"] and "--allowed-host" in r.json()["detail"]
        for host in ("localhost:8000", "127.0.0.1", "[::1]:8000", "LOCALHOST"):
            assert client.get("/v1/models", headers={"Host": host}).status_code == 200, host


def test_vae_serve_on_loopback_checks_the_host_header():
    from webserver import vae_serve_process

    with vae_serve_process("--device", "cpu", "-m", "fashion-mnist") as (_, url):
        assert httpx.get(f"{url}/healthz", headers={"Host": "rebound.example"}).status_code == 400
        assert httpx.get(f"{url}/healthz").status_code == 200
    with vae_serve_process("--device", "cpu", "-m", "fashion-mnist", "--allowed-host", "*") as (_, url):
        assert httpx.get(f"{url}/healthz", headers={"Host": "rebound.example"}).status_code == 200
