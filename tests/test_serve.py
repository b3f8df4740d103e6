"""`vae serve`: every route gives the SDK's result byte for byte; limits, token, CORS, pool
and errors behave as documented. The server runs on 127.0.0.1 only."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import signal
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

import vaesdk
from vaesdk.imaging.images import encode_png, make_grid
from webserver import running_app, vae_serve_process

ROOT = Path(__file__).resolve().parents[1]
INPUTS = ROOT / "docs" / "images" / "inputs"
NAME = "fashion-mnist"


def png_bytes(name: str) -> bytes:
    return (INPUTS / f"{name}.png").read_bytes()


@pytest.fixture(scope="module")
def server(bundled_model):
    from vaesdk.serve import Limits, ServeConfig, create_app

    limits = Limits(max_body_bytes=2_000_000, max_image_pixels=1_000_000, max_images=4, max_n=64, max_k=50)
    with running_app(create_app([bundled_model], ServeConfig(limits=limits))) as base:
        with httpx.Client(base_url=base, timeout=60) as client:
            yield client


def api(path: str) -> str:
    return f"/v1/models/{NAME}/{path}"


def assert_error(r: httpx.Response, status: int, *words: str) -> None:
    assert r.status_code == status, (r.status_code, r.text[:300])
    body = r.json()
    assert set(body) == {"error", "detail"} and "\n" not in body["detail"] and "Traceback" not in body["detail"]
    for w in words:
        assert w in body["detail"], body


def test_health_models_and_docs(server, bundled_model):
    assert server.get("/healthz").json() == {"status": "ok"}
    models = server.get("/v1/models").json()["models"]
    expected = {k: v for k, v in bundled_model.describe().items() if k != "path"}
    assert models == [json.loads(json.dumps(expected))]  # no server path leaks out
    assert server.get("/docs").status_code == 200
    paths = server.get("/openapi.json").json()["paths"]
    for route in ("sample", "decode", "edit", "reconstruct", "encode", "score"):
        assert f"/v1/models/{NAME}/{route}" in paths
    page = server.get("/")
    assert page.status_code == 200 and "page.js" in page.text


def test_sample_png_and_json_match_the_sdk(server, bundled_model):
    r = server.post(api("sample"), json={"n": 8, "seed": 5, "prior": "aggregate", "temperature": 0.8, "ncols": 4})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert r.content == encode_png(make_grid(bundled_model.sample(8, seed=5, prior="aggregate", temperature=0.8), ncols=4))
    assert r.headers["x-vaesdk-seed"] == "5"
    r = server.post(api("sample"), json={"n": 3, "seed": 5}, headers={"Accept": "application/json"})
    body = r.json()
    expected = bundled_model.sample(3, seed=5)
    assert [base64.b64decode(p) for p in body["images"]] == [encode_png(im) for im in expected]
    assert np.array_equal(bundled_model.decode(np.asarray(body["latents"], np.float32)), expected)
    drawn = server.post(api("sample"), json={"n": 1})  # no seed: one is drawn and returned
    seed = int(drawn.headers["x-vaesdk-seed"])
    assert drawn.content == encode_png(make_grid(bundled_model.sample(1, seed=seed)))


def test_decode_matches_the_sdk(server, bundled_model):
    z = np.random.default_rng(0).standard_normal((3, bundled_model.latent_dim)).astype(np.float32)
    r = server.post(api("decode"), json={"latents": z.tolist()})
    assert r.content == encode_png(make_grid(bundled_model.decode(z)))


def test_image_routes_match_the_sdk(server, bundled_model):
    shirt, bag = png_bytes("shirt"), png_bytes("bag")
    r = server.post(api("edit"), files={"image": ("shirt.png", shirt)}, data={"dim": "9", "delta": "2"})
    assert r.status_code == 200 and r.content == encode_png(bundled_model.edit(shirt, dim=9, delta=2.0)[0])
    r = server.post(api("edit"), files={"image": ("shirt.png", shirt)}, data={"direction": "trouser", "delta": "1"})
    assert r.content == encode_png(bundled_model.edit(shirt, direction="trouser", delta=1.0)[0])
    r = server.post(api("reconstruct"), files={"image": ("bag.png", bag)})
    assert r.content == encode_png(bundled_model.reconstruct(bag)[0])
    r = server.post(api("reconstruct"), files={"image": ("bag.png", bag)}, data={"sample_latent": "true", "seed": "4"})
    assert r.content == encode_png(bundled_model.reconstruct(bag, sample_latent=True, seed=4)[0])
    # Several uploads, one broken: JSON, the broken one reported, the others still done.
    files = [("image", ("shirt.png", shirt)), ("image", ("junk.png", b"not an image")), ("image", ("bag.png", bag))]
    body = server.post(api("reconstruct"), files=files).json()["results"]
    assert [e["name"] for e in body] == ["shirt.png", "junk.png", "bag.png"]
    assert "not a readable image" in body[1]["error"]
    recon = bundled_model.reconstruct([shirt, bag])
    assert [base64.b64decode(body[0]["png"]), base64.b64decode(body[2]["png"])] == [encode_png(im) for im in recon]


def test_encode_and_score_match_the_sdk_in_upload_order(server, bundled_model):
    shirt, bag = png_bytes("shirt"), png_bytes("bag")
    # The unreadable upload shares its name with a readable one: entries follow upload order, not names.
    files = [("image", ("a.png", shirt)), ("image", ("a.png", b"")), ("image", ("b.png", bag))]
    body = server.post(api("encode"), files=files).json()["results"]
    post = bundled_model.encode([shirt, bag])
    assert [e["name"] for e in body] == ["a.png", "a.png", "b.png"] and set(body[1]) == {"name", "error"}
    for entry, row in ((body[0], 0), (body[2], 1)):
        assert entry["mean"] == post.mean[row].tolist() and entry["logvar"] == post.logvar[row].tolist()
    body = server.post(api("score"), files=files, data={"k": "20", "seed": "3"}).json()
    s = bundled_model.score([shirt, bag], k=20, seed=3)
    assert (body["k"], body["seed"], body["calibration"]["n"]) == (20, 3, bundled_model.manifest.data["anomaly"]["calibration"]["n"])
    assert set(body["results"][1]) == {"name", "error"} and "a.png" in body["results"][1]["error"]
    for entry, row in ((body["results"][0], 0), (body["results"][2], 1)):
        assert entry == {
            "name": ["a.png", "b.png"][row], "elbo_bpd": float(s.elbo_bpd[row]), "iw_bpd": float(s.iw_bpd[row]),
            "anomaly": float(s.anomaly[row]), "p_value": float(s.p_value[row]),
        }  # fmt: skip


def test_an_upload_over_the_pixel_limit_is_an_error_in_its_place(server):
    big = io.BytesIO()
    Image.new("L", (1001, 1000), 0).save(big, "PNG")  # 1,001,000 pixels; the limit is 1,000,000
    files = [("image", ("shirt.png", png_bytes("shirt"))), ("image", ("big.png", big.getvalue()))]
    for route in ("reconstruct", "encode", "score"):
        results = server.post(api(route), files=files, headers={"Accept": "application/json"}).json()["results"]
        assert [r["name"] for r in results] == ["shirt.png", "big.png"]
        assert "error" not in results[0], results[0]
        assert results[1]["error"] == "big.png is 1001x1000 pixels; the limit is 1000000 pixels in all", route


def test_bundle_files_are_served_as_they_are_on_disk_and_nothing_else(server, bundled_model):
    files = bundled_model.describe()["files"]
    assert {"manifest.json", "encoder.onnx", "decoder.onnx"} <= set(files.values())
    for file in files.values():
        r = server.get(api(f"files/{file}"))
        assert r.status_code == 200 and r.content == (bundled_model.path / file).read_bytes(), file
        assert r.headers["content-type"].startswith("application/json" if file.endswith(".json") else "application/octet-stream")
    assert_error(server.get(api("files/README.md")), 404, "README.md", "manifest.json")
    assert server.get(api("files/..%2Fmanifest.json")).status_code == 404


def test_client_faults_are_4xx_json_naming_the_problem(server):
    shirt = png_bytes("shirt")
    assert_error(server.post("/v1/models/nope/sample", json={}), 404, "nope", NAME)
    assert_error(server.post(api("sample"), json={"n": "x"}), 422, "n='x' must be an integer")
    assert_error(server.post(api("sample"), json={"temperature": 1e38}), 422, "temperature")
    assert_error(server.post(api("sample"), json={"prior": "nope"}), 422, "unknown prior")
    assert_error(server.post(api("sample"), json={"n": 1, "file": "/etc/passwd"}), 422, "unknown field")
    assert_error(server.post(api("sample"), content=b"{not json", headers={"content-type": "application/json"}), 422, "JSON")
    assert_error(server.post(api("sample"), json={"n": 65}), 413, "n=65", "64")
    assert_error(server.post(api("decode"), json={"latents": [[0.0] * 3]}), 422, "shape")
    assert_error(server.post(api("decode"), json={"latents": [["x"] * 32]}), 422, "numbers")
    assert_error(server.post(api("decode"), json={"latents": [[1e30] * 32]}), 422)
    assert_error(server.post(api("edit"), files={"image": ("a.png", shirt)}, data={"dim": "99"}), 422, "out of range")
    assert_error(server.post(api("edit"), files={"image": ("a.png", shirt)}, data={"dim": "x"}), 422, "dim")
    assert_error(server.post(api("edit"), files={"image": ("a.png", shirt)}, data={"direction": "nope"}), 422, "unknown direction")
    assert_error(server.post(api("edit"), json={"dim": 1}), 422, "multipart")
    assert_error(server.post(api("edit"), files={"image": ("a.png", shirt)}, data={"dim": "1", "delta": "1001"}), 422, "delta=1001", "1000")
    assert_error(server.post(api("edit"), files={"image": ("a.png", shirt)}, data={"dim": "1", "dlta": "2"}), 422, "'dlta'", "delta")
    assert_error(server.post(api("edit"), files={"image": ("a.png", shirt)}, data={"dim": ""}), 422, "dim=''")
    assert_error(server.post(api("edit"), files=[("image", ("a.png", shirt)), ("dim", (None, "1")), ("dim", (None, "2"))]), 422, "dim", "once")
    assert_error(server.post(api("encode"), files={"picture": ("a.png", shirt)}), 422, "'picture'", "image")
    assert server.post(api("edit"), files={"image": ("a.png", shirt)}, data={"dim": "3.0"}).status_code == 200  # JSON Schema's integer 3.0
    assert_error(server.post(api("score"), files={"image": ("a.png", shirt)}, data={"k": "51"}), 413, "k=51")
    assert_error(server.post(api("reconstruct"), files={"image": ("a.png", b"GIF89a\x01")}), 422, "a.png")
    too_many = [("image", (f"{i}.png", shirt)) for i in range(5)]
    assert_error(server.post(api("encode"), files=too_many), 413, "4")
    assert_error(server.post(api("encode"), files={"image": ("big.bin", b"\0" * 2_100_000)}), 413, "2000000")
    big = io.BytesIO()
    Image.new("L", (1100, 1000)).save(big, format="PNG")
    body = server.post(api("encode"), files=[("image", ("big.png", big.getvalue())), ("image", ("a.png", shirt))]).json()
    assert "1000000" in body["results"][0]["error"] and "mean" in body["results"][1]


def test_chunked_body_over_the_limit_is_refused(server):
    def chunks():
        for _ in range(30):
            yield b"x" * 100_000

    r = server.post(api("sample"), content=chunks(), headers={"content-type": "application/json"})
    assert_error(r, 413, "2000000")


def test_token_and_cors(bundled_model):
    from vaesdk.serve import ServeConfig, create_app

    with running_app(create_app([bundled_model], ServeConfig(token="s3cret-token"))) as base:
        assert httpx.get(f"{base}/healthz").status_code == 200
        assert_error(httpx.get(f"{base}/v1/models"), 401, "Bearer")
        assert_error(httpx.get(f"{base}/v1/models", headers={"Authorization": "Bearer wrong"}), 401)
        assert httpx.get(f"{base}/v1/models", headers={"Authorization": "Bearer s3cret-token"}).status_code == 200
        preflight = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
        assert "access-control-allow-origin" not in httpx.options(f"{base}/v1/models", headers=preflight).headers
    config = ServeConfig(cors_origins=["https://app.example"])
    with running_app(create_app([bundled_model], config)) as base:
        r = httpx.options(f"{base}/v1/models/{NAME}/sample", headers=preflight)
        assert r.headers.get("access-control-allow-origin") == "https://app.example"


def test_pool_refuses_overload_and_times_out():
    from vaesdk.serve.errors import ApiError
    from vaesdk.serve.pool import Pool

    async def scenario() -> None:
        pool = Pool(workers=1, queue=0)
        gate = threading.Event()
        first = asyncio.ensure_future(pool.run(gate.wait, timeout=30))
        await asyncio.sleep(0.05)
        with pytest.raises(ApiError) as busy:
            await pool.run(lambda: 1, timeout=30)
        assert busy.value.status == 503 and busy.value.headers == {"Retry-After": "1"}
        gate.set()
        assert await first is True
        assert await pool.run(lambda: 2, timeout=30) == 2  # the slot came back
        with pytest.raises(ApiError) as slow:
            await pool.run(lambda: time.sleep(0.5), timeout=0.05)
        assert slow.value.status == 504
        pool.shutdown()

    asyncio.run(scenario())


def test_vae_serve_finishes_in_flight_requests_on_sigterm(tmp_path):
    log = tmp_path / "serve.log"
    with log.open("w+") as stderr, vae_serve_process("--device", "cpu", stderr=stderr) as (proc, base):
        files = [("image", (f"{i}.png", png_bytes("shirt"))) for i in range(8)]
        result: dict = {}

        def slow_request() -> None:
            result["r"] = httpx.post(f"{base}/v1/models/{NAME}/score", files=files, data={"k": "1000"}, timeout=120)

        client = threading.Thread(target=slow_request)
        client.start()
        time.sleep(2.0)  # the request is being computed (8 x 1000 decodes: several seconds of work)
        assert client.is_alive(), "the request ended before SIGTERM; nothing was in flight"
        proc.send_signal(signal.SIGTERM)
        client.join(timeout=120)
        assert result["r"].status_code == 200 and len(result["r"].json()["results"]) == 8, result["r"].text[:300]
        assert proc.wait(timeout=60) == 0
    text = log.read_text()
    served = ", ".join([vaesdk.DEFAULT_MODEL] + [m for m in vaesdk.list_models() if m != vaesdk.DEFAULT_MODEL])
    assert f"serving {served} on http://127.0.0.1" in text and "Traceback" not in text
    assert "stopping on SIGTERM: 1 request(s) in flight" in text
    assert "1 request(s) answered while stopping, 0 answered 503" in text
