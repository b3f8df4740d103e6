"""`vae serve`'s Open Inference Protocol routes (/v2): each protocol model answers the SDK's own
bytes, in JSON and with the binary tensor data extension; every bad request answers one line
{"error"} with 400 (404 for an unknown model or version); the pool's refusals keep their status
and headers; the routes are in the OpenAPI document with schemas that hold real requests; and
the protocol's own clients (Triton's and KServe's, in .venv-clients) get the SDK's bytes from a
real `vae serve`. Servers listen on 127.0.0.1 only."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import numpy as np
import pytest
from fastapi import Request

import vaesdk
from webserver import running_app, vae_serve_process

ROOT = Path(__file__).resolve().parents[1]
NAME = "fashion-mnist"
HEADER = "Inference-Header-Content-Length"
CLIENTS_VENV = Path(os.environ.get("VAESDK_CLIENTS_VENV", ROOT / ".venv-clients"))
LIMITS = dict(max_n=8, max_latents=8, max_images=4, max_k=50)


@pytest.fixture(scope="module")
def server(bundled_model):
    from vaesdk.serve import Limits, ServeConfig, create_app

    with running_app(create_app([bundled_model], ServeConfig(limits=Limits(**LIMITS)))) as base:
        with httpx.Client(base_url=base, timeout=120) as client:
            yield client


@pytest.fixture(scope="module")
def images(bundled_model) -> np.ndarray:
    return bundled_model.sample(3, seed=11)


def tensor(name: str, array: np.ndarray, datatype: str) -> dict[str, Any]:
    return {"name": name, "datatype": datatype, "shape": list(array.shape), "data": array.ravel().tolist()}


def outputs(r: httpx.Response) -> dict[str, np.ndarray]:
    """The arrays of an answer, JSON or binary, read as the protocol says (not through the server's code)."""
    assert r.status_code == 200, r.text[:300]
    dtypes = {"UINT8": np.uint8, "FP32": np.float32, "FP64": np.float64, "INT64": np.int64}
    size = int(r.headers.get(HEADER, len(r.content)))
    head, rest = json.loads(r.content[:size]), r.content[size:]
    out = {}
    for o in head["outputs"]:
        if "data" in o:
            out[o["name"]] = np.array(o["data"], dtypes[o["datatype"]]).reshape(o["shape"])
        else:
            n = o["parameters"]["binary_data_size"]
            out[o["name"]], rest = np.frombuffer(rest[:n], dtypes[o["datatype"]]).reshape(o["shape"]), rest[n:]
    assert rest == b""
    return out


def infer(client: httpx.Client, model: str, body: dict[str, Any]) -> httpx.Response:
    return client.post(f"/v2/models/{model}/infer", json=body)


def test_each_bundle_is_four_protocol_models_with_the_models_own_shapes(server, bundled_model):
    h, w, c = bundled_model.image_shape
    d = bundled_model.latent_dim
    assert server.get("/v2/health/live").json() == {"live": True} and server.get("/v2/health/ready").json() == {"ready": True}
    meta = server.get("/v2").json()
    assert meta["name"] == "vaesdk" and {"binary_tensor_data", "model_repository"} <= set(meta["extensions"])
    index = server.post("/v2/repository/index").json()
    assert index == [{"name": f"{NAME}.{k}", "version": "1", "state": "READY"} for k in ("decode", "encode", "sample", "score")]
    assert server.post("/v2/repository/index", json={"ready": True}).json() == index
    decode = server.get(f"/v2/models/{NAME}.decode").json()
    assert decode["inputs"] == [{"name": "latents", "datatype": "FP32", "shape": [-1, d]}]
    assert decode["outputs"] == [{"name": "images", "datatype": "UINT8", "shape": [-1, h, w, c]}]
    assert server.get(f"/v2/models/{NAME}.decode/versions/1").json() == decode
    encode = server.get(f"/v2/models/{NAME}.encode").json()
    assert [(t["name"], t["datatype"], t["shape"]) for t in encode["outputs"]] == [("mean", "FP32", [-1, d]), ("logvar", "FP32", [-1, d])]
    sample = server.get(f"/v2/models/{NAME}.sample").json()
    assert [t["name"] for t in sample["inputs"]] == ["n", "seed"] and [t["name"] for t in sample["outputs"]] == ["images", "latents", "seed"]
    score = server.get(f"/v2/models/{NAME}.score").json()
    assert [(t["name"], t["datatype"]) for t in score["outputs"]] == [(k, "FP64") for k in ("elbo_bpd", "iw_bpd", "anomaly", "p_value")]
    assert server.get(f"/v2/models/{NAME}.score/ready").json() == {"name": f"{NAME}.score", "ready": True}


def test_json_answers_are_the_sdks_bytes(server, bundled_model, images):
    z = bundled_model.sample_latents(5, seed=3)
    got = outputs(infer(server, f"{NAME}.decode", {"inputs": [tensor("latents", z, "FP32")]}))
    assert got["images"].tobytes() == bundled_model.decode(z).tobytes()
    # Nested data, as the shape: the same answer.
    nested = {"name": "latents", "datatype": "FP32", "shape": list(z.shape), "data": z.tolist()}
    assert outputs(infer(server, f"{NAME}.decode", {"inputs": [nested]}))["images"].tobytes() == bundled_model.decode(z).tobytes()

    got = outputs(infer(server, f"{NAME}.encode", {"inputs": [tensor("images", images, "UINT8")]}))
    posterior = bundled_model.encode(images)
    assert got["mean"].tobytes() == posterior.mean.tobytes() and got["logvar"].tobytes() == posterior.logvar.tobytes()

    n, seed = np.array([6]), np.array([42])
    body = {"inputs": [tensor("seed", seed, "INT64"), tensor("n", n, "INT32")], "parameters": {"temperature": 0.5}}
    got = outputs(infer(server, f"{NAME}.sample", body))
    expected, z = bundled_model.sample(6, seed=42, temperature=0.5, return_latents=True)
    assert got["images"].tobytes() == expected.tobytes() and got["latents"].tobytes() == z.tobytes() and got["seed"].tolist() == [42]

    body = {"inputs": [tensor("images", images, "UINT8")], "parameters": {"k": 3, "seed": 9}}
    got = outputs(infer(server, f"{NAME}.score", body))
    job = vaesdk.run_job(bundled_model, "score", list(images), k=3, seed=9, workers=1)  # what `vae score` and /v1 score run
    for column in ("elbo_bpd", "iw_bpd", "anomaly", "p_value"):
        assert got[column].tobytes() == job.columns[column].tobytes(), column


def test_binary_tensor_data_in_and_out_gives_the_same_bytes(server, bundled_model, images):
    z = bundled_model.sample_latents(4, seed=5)
    head = json.dumps({
        "inputs": [{"name": "latents", "datatype": "FP32", "shape": [4, bundled_model.latent_dim], "parameters": {"binary_data_size": z.nbytes}}],
        "outputs": [{"name": "images", "parameters": {"binary_data": True}}],
    }).encode()  # fmt: skip
    r = server.post(f"/v2/models/{NAME}.decode/infer", content=head + z.tobytes(), headers={HEADER: str(len(head))})
    assert r.headers["content-type"] == "application/octet-stream" and int(r.headers[HEADER]) < len(r.content)
    assert outputs(r)["images"].tobytes() == bundled_model.decode(z).tobytes()
    # binary_data_output answers every output in binary; an output's own binary_data false keeps it JSON.
    body = {"inputs": [tensor("images", images, "UINT8")], "outputs": [{"name": "mean"}, {"name": "logvar", "parameters": {"binary_data": False}}],
            "parameters": {"binary_data_output": True}}  # fmt: skip
    r = infer(server, f"{NAME}.encode", body)
    head = json.loads(r.content[: int(r.headers[HEADER])])
    assert [("data" in o, o.get("parameters")) for o in head["outputs"]] == [(False, {"binary_data_size": 3 * 4 * bundled_model.latent_dim}), (True, None)]
    got, posterior = outputs(r), bundled_model.encode(images)
    assert got["mean"].tobytes() == posterior.mean.tobytes() and got["logvar"].tobytes() == posterior.logvar.tobytes()


def test_sample_without_a_seed_answers_the_seed_it_drew(server, bundled_model):
    first = outputs(infer(server, f"{NAME}.sample", {"inputs": [tensor("n", np.array([3]), "INT64")]}))
    seed = int(first["seed"][0])
    assert first["images"].tobytes() == bundled_model.sample(3, seed=seed).tobytes()


def test_the_request_id_comes_back_and_only_asked_outputs_are_answered(server, bundled_model):
    r = infer(server, f"{NAME}.score", {"id": "abc-1", "inputs": [tensor("images", bundled_model.sample(1, seed=0), "UINT8")], "outputs": [{"name": "anomaly"}]})
    body = r.json()
    assert body["id"] == "abc-1" and body["model_name"] == f"{NAME}.score" and body["model_version"] == "1"
    assert [o["name"] for o in body["outputs"]] == ["anomaly"]


def bad_requests(d: int) -> list[tuple[str, Any, dict[str, str], int, str]]:
    """(model, body, headers, status, words the one-line error must hold)."""
    z = np.zeros((1, d), np.float32)
    latents = tensor("latents", z, "FP32")
    head = json.dumps({"inputs": [{**{k: v for k, v in latents.items() if k != "data"}, "parameters": {"binary_data_size": z.nbytes}}]}).encode()
    return [
        (f"{NAME}.decode", {"inputs": [{**latents, "datatype": "FP64"}]}, {}, 400, "FP64; fashion-mnist.decode takes it as FP32"),
        (f"{NAME}.decode", {"inputs": [{**latents, "shape": [2, d]}]}, {}, 400, f"shape [2, {d}] ({2 * d} values) but its data holds {d}"),
        (f"{NAME}.decode", {"inputs": [{**latents, "shape": [1, d + 1]}]}, {}, 400, f"it must be [-1, {d}]"),
        (f"{NAME}.decode", {"inputs": [{**latents, "data": [None] * d}]}, {}, 400, "holds null; FP32 data must be numbers"),
        (f"{NAME}.decode", {"inputs": [{**latents, "data": [2e6] * d}]}, {}, 400, "holds 2000000.0; its values must lie within -1e+06..1e+06"),
        (f"{NAME}.decode", {"inputs": [{**latents, "name": "z"}]}, {}, 400, "unknown input 'z' for fashion-mnist.decode; its inputs: latents"),
        (f"{NAME}.decode", {"inputs": [tensor("latents", np.zeros((9, d), np.float32), "FP32")]}, {}, 400, "9 rows; this server takes 1 to 8 latents"),
        (f"{NAME}.decode", {"inputs": [latents], "outputs": [{"name": "pixels"}]}, {}, 400, "unknown output 'pixels'"),
        (f"{NAME}.decode", {"inputs": [latents], "parameters": {"priority": 1}}, {}, 400, "unknown parameter 'priority'"),
        (f"{NAME}.decode", {"inputs": [latents], "model_name": "emoji.decode"}, {}, 400, "does not match"),
        (f"{NAME}.decode", {"inputs": [latents, latents]}, {}, 400, "given twice"),
        (f"{NAME}.decode", {"input": [latents]}, {}, 400, "unknown field 'input'"),
        (f"{NAME}.decode", b"{not json", {}, 400, "not valid JSON"),
        (f"{NAME}.decode", head + z.tobytes()[:-4], {HEADER: str(len(head))}, 400, "binary_data_size"),
        (f"{NAME}.decode", head + z.tobytes() + b"xx", {HEADER: str(len(head))}, 400, "2 bytes follow"),
        (f"{NAME}.decode", head + z.tobytes(), {}, 400, "not valid JSON"),
        (f"{NAME}.decode", head + z.tobytes(), {HEADER: "10x"}, 400, f"{HEADER} is '10x'"),
        (f"{NAME}.decode", head, {HEADER: str(len(head))}, 400, "binary_data_size 256 is not a byte count within the 0 bytes"),
        (f"{NAME}.decode", {"inputs": [{**latents, "parameters": {"binary_data_size": z.nbytes}}]}, {}, 400, "exactly one of data"),
        (f"{NAME}.sample", {"inputs": [tensor("n", np.array([9]), "INT64")]}, {}, 400, "holds 9; its values must lie within 1..8"),
        (f"{NAME}.sample", {"inputs": [tensor("seed", np.array([1]), "INT64")]}, {}, 400, "needs the input(s) n"),
        (f"{NAME}.sample", {"inputs": [tensor("n", np.array([2]), "INT64")], "parameters": {"prior": "nope"}}, {}, 400, "prior="),
        (f"{NAME}.score", {"inputs": [tensor("images", np.zeros((1, 28, 28, 1), np.uint8), "UINT8")], "parameters": {"k": 51}}, {}, 400, "k=51"),
        (f"{NAME}.score", {"inputs": [tensor("images", np.zeros((1, 28, 28, 1), np.int64) + 300, "UINT8")]}, {}, 400, "holds 300"),
        ("emoji.decode", {"inputs": [latents]}, {}, 404, "unknown model 'emoji.decode'; models: fashion-mnist.decode"),
    ]  # fmt: skip


def test_bad_requests_answer_one_line_naming_the_value(server, bundled_model):
    for model, body, headers, status, words in bad_requests(bundled_model.latent_dim):
        kwargs = {"json": body} if isinstance(body, dict) else {"content": body}
        r = server.post(f"/v2/models/{model}/infer", headers=headers, **kwargs)
        assert r.status_code == status, (words, r.status_code, r.text[:300])
        error = r.json()
        assert set(error) == {"error"} and "\n" not in error["error"] and words in error["error"], (words, error)
    r = server.post(f"/v2/models/{NAME}.decode/versions/2/infer", json={"inputs": []})
    assert r.status_code == 404 and r.json() == {"error": "model 'fashion-mnist.decode' has no version '2'; its versions: 1"}
    for path in (f"/v2/models/{NAME}.nope", f"/v2/models/{NAME}.nope/ready", f"/v2/models/{NAME}.decode/versions/7"):
        r = server.get(path)
        assert r.status_code == 404 and set(r.json()) == {"error"}, path
    r = server.post("/v2/repository/index", json={"ready": "yes"})
    assert r.status_code == 400 and r.json() == {"error": "ready must be true or false"}


def test_a_json_header_over_the_json_limit_is_refused_and_binary_data_is_not(bundled_model):
    from vaesdk.serve import Limits, ServeConfig, create_app

    z = bundled_model.sample_latents(8, seed=1)
    app = create_app([bundled_model], ServeConfig(limits=Limits(max_json_bytes=2000, max_latents=8)))
    with running_app(app) as base:
        r = httpx.post(f"{base}/v2/models/{NAME}.decode/infer", json={"inputs": [tensor("latents", z, "FP32")]}, timeout=60)
        assert r.status_code == 413 and "binary" in r.json()["error"] and "2000" in r.json()["error"], r.text[:300]
        head = json.dumps({"inputs": [{"name": "latents", "datatype": "FP32", "shape": list(z.shape), "parameters": {"binary_data_size": z.nbytes}}]}).encode()
        r = httpx.post(f"{base}/v2/models/{NAME}.decode/infer", content=head + z.tobytes(), headers={HEADER: str(len(head))}, timeout=60)
        assert outputs(r)["images"].tobytes() == bundled_model.decode(z).tobytes()


def test_a_front_ends_run_refusal_keeps_its_status_and_headers_and_a_token_guards_all_but_health(bundled_model):
    from fastapi import FastAPI

    from vaesdk.serve import oip
    from vaesdk.serve.errors import ApiError

    calls = []

    async def overloaded(request, op, inputs, parameters):
        calls.append((op.name, sorted(inputs), parameters))
        raise ApiError(503, "overloaded", "all 3 request slots are busy; retry shortly", {"Retry-After": "1"})

    def authorize(request: Request) -> None:
        if request.headers.get("authorization") != "Bearer s3cret-token":
            raise ApiError(401, "unauthorized", "a valid token is required: send 'Authorization: Bearer TOKEN'", {"WWW-Authenticate": "Bearer"})

    app = FastAPI()
    app.include_router(oip.router(oip.operations({NAME: bundled_model}), overloaded, authorize=authorize))
    z = np.zeros((1, bundled_model.latent_dim), np.float32)
    with running_app(app) as base, httpx.Client(base_url=base, timeout=60) as client:
        assert client.get("/v2/health/ready").status_code == 200  # probes need no token
        r = client.post(f"/v2/models/{NAME}.decode/infer", json={"inputs": [tensor("latents", z, "FP32")]})
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer" and set(r.json()) == {"error"}
        assert client.get("/v2").status_code == 401 and calls == []
        r = client.post(f"/v2/models/{NAME}.decode/infer", json={"inputs": [tensor("latents", z, "FP32")]}, headers={"Authorization": "Bearer s3cret-token"})
        assert r.status_code == 503 and r.headers["retry-after"] == "1" and r.json() == {"error": "all 3 request slots are busy; retry shortly"}
    assert calls == [(f"{NAME}.decode", ["latents"], {})]


def test_the_routes_are_in_the_document_and_its_schemas_hold_real_requests(bundled_model, images):
    from vaesdk.serve import Limits, ServeConfig, create_app

    doc = create_app([bundled_model], ServeConfig(limits=Limits(**LIMITS))).openapi()
    paths = doc["paths"]
    for path in ("/v2", "/v2/health/live", "/v2/health/ready", "/v2/models/{model}", "/v2/models/{model}/ready", "/v2/repository/index",
                 "/v2/models/{model}/versions/{version}", f"/v2/models/{NAME}.decode/infer", f"/v2/models/{NAME}.score/versions/{{version}}/infer"):  # fmt: skip
        assert path in paths, path
    model_param = paths["/v2/models/{model}"]["get"]["parameters"][0]["schema"]
    assert model_param["enum"] == [f"{NAME}.{k}" for k in ("decode", "encode", "sample", "score")]

    def valid(model: str, body: dict[str, Any]) -> bool:
        op = paths[f"/v2/models/{model}/infer"]["post"]
        assert {"400", "503", "504"} <= set(op["responses"]) and "application/octet-stream" in op["responses"]["200"]["content"]
        return jsonschema.Draft202012Validator(op["requestBody"]["content"]["application/json"]["schema"]).is_valid(body)

    z = bundled_model.sample_latents(2, seed=0)
    assert valid(f"{NAME}.decode", {"id": "1", "inputs": [tensor("latents", z, "FP32")], "outputs": [{"name": "images", "parameters": {"binary_data": True}}]})
    assert valid(f"{NAME}.encode", {"inputs": [tensor("images", images, "UINT8")], "parameters": {"binary_data_output": False}})
    assert valid(f"{NAME}.sample", {"inputs": [tensor("seed", np.array([1]), "INT64"), tensor("n", np.array([8]), "INT32")], "parameters": {"prior": "standard"}})
    assert valid(f"{NAME}.score", {"inputs": [tensor("images", images, "UINT8")], "parameters": {"k": 50, "seed": 0}})
    # What the server refuses, the document refuses too.
    for model, body, *_ in bad_requests(bundled_model.latent_dim):
        if isinstance(body, dict) and model.startswith(NAME):
            assert not valid(model, body), body
    assert not valid(f"{NAME}.sample", {"inputs": [tensor("n", np.array([2]), "INT64")] * 2})


def clients_python() -> Path:
    python, marker = CLIENTS_VENV / "bin" / "python", CLIENTS_VENV / "vaesdk-requirement.txt"
    spec = ROOT / "tests" / "protocol-clients.txt"
    assert python.is_file() and marker.is_file() and marker.read_text() == spec.read_text(), (
        f"the protocol clients' environment {CLIENTS_VENV} is missing or out of date; run scripts/test (it installs {spec.name} there) or set VAESDK_CLIENTS_VENV"
    )
    return python


@pytest.mark.clients
def test_triton_and_kserve_clients_get_the_sdks_bytes_from_vae_serve(tmp_path, bundled_model):
    python = clients_python()
    z = bundled_model.sample_latents(3, seed=8)
    images = bundled_model.sample(2, seed=4)
    np.savez(tmp_path / "inputs.npz", latents=z, images=images, n=np.array([5], np.int64), seed=np.array([7], np.int64))
    with vae_serve_process("--device", "cpu", "--model", NAME) as (_, base):
        done = subprocess.run([str(python), str(ROOT / "tests" / "oip_clients.py"), base, str(tmp_path), NAME], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    got, report = dict(np.load(tmp_path / "answers.npz")), json.loads((tmp_path / "report.json").read_text())

    decoded, posterior = bundled_model.decode(z), bundled_model.encode(images)
    sampled, drawn = bundled_model.sample(5, seed=7, return_latents=True)
    score = vaesdk.run_job(bundled_model, "score", list(images), k=2, seed=5, workers=1)
    expected = {"decode_images": decoded, "encode_mean": posterior.mean, "encode_logvar": posterior.logvar, "sample_images": sampled,
                "sample_latents": drawn, "sample_seed": np.array([7], np.int64), "score_anomaly": score.columns["anomaly"], "score_p_value": score.columns["p_value"]}  # fmt: skip
    for client, modes, what in (("triton", ("binary", "json"), expected), ("kserve", ("binary", "json"), {k: v for k, v in expected.items() if not k.startswith("score")})):
        for mode in modes:
            for key, want in what.items():
                answer = got[f"{client}_{mode}_{key}"]
                assert answer.dtype == want.dtype and answer.shape == want.shape and answer.tobytes() == want.tobytes(), (client, mode, key)
    assert got["triton_default_decode_images"].tobytes() == decoded.tobytes()

    triton = report["triton"]
    assert triton["live"] and triton["ready"] and triton["model_ready"]
    assert {"binary_tensor_data", "model_repository"} <= set(triton["server"]["extensions"])
    decoders = [m["name"] for m in triton["index"] if NAME in m["name"] and "decode" in m["name"]]
    assert decoders == [f"{NAME}.decode"] and all(m["state"] == "READY" for m in triton["index"])
    assert triton["metadata"]["decode"]["inputs"] == [{"name": "latents", "datatype": "FP32", "shape": [-1, bundled_model.latent_dim]}]
    assert triton["version_metadata"] == triton["metadata"]["decode"]
    assert triton["unknown_model"]["status"] == "404" and f"unknown model '{NAME}.nope'" in triton["unknown_model"]["message"]
    assert triton["bad_shape"]["status"] == "400" and "has shape [3, 63]" in triton["bad_shape"]["message"]
    assert report["kserve"] == {"live": True, "ready": True, "model_ready": True}
