"""`vae serve` with a bundle of spatial latents [C, h, w] (an autoencoder of latent diffusion)
beside a flat one: images of any size the model takes go through reconstruct, edit, encode and
embed at their own size, latents go to decode with their shape, each answer is the SDK's own
(bytes, shapes, the precision that ran); sample and score answer the SDK's one-line refusal and
are not in the model's paths; the Open Inference Protocol takes tensors whose sides vary per
request; Ray Serve's batches join only requests of one size. Servers listen on 127.0.0.1 only.

The spatial bundle is tests/data/tiny-taesd (made by tests/make_tiny_bundles.py: an
AutoencoderTiny, latents [4, H/4, W/4], sides multiples of 4, pixels in [-1, 1])."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import numpy as np
import pytest
from PIL import Image

import vaesdk
from vaesdk.imaging.images import encode_png
from webserver import running_app, vae_serve_process

ROOT = Path(__file__).resolve().parents[1]
SPATIAL = ROOT / "tests" / "data" / "tiny-taesd"
LIMITS = dict(max_latents=8, max_images=4, max_image_pixels=20000)
HEADER = "Inference-Header-Content-Length"


@pytest.fixture(scope="module")
def spatial_bundle() -> Path:
    """The tiny bundle with spatial latents, in one place for every test here."""
    if not (SPATIAL / "manifest.json").is_file():
        pytest.fail(f"no spatial bundle at {SPATIAL}: make it with tests/make_tiny_bundles.py taesd")
    return SPATIAL


@pytest.fixture(scope="module")
def spatial(spatial_bundle) -> Any:
    model = vaesdk.load(spatial_bundle, device="cpu")
    g = model.geometry
    # The sizes in these tests are this bundle's: 3-channel images of any size, sides multiples of 4, latents [4, H/4, W/4].
    assert g.spatial and not g.fixed_size and (g.channels, g.multiple, g.latent_channels, g.factor) == (3, 4, 4, 4), model
    return model


@pytest.fixture(scope="module")
def served(bundled_model, spatial):
    from vaesdk.serve import Limits, ServeConfig, create_app

    app = create_app([bundled_model, spatial], ServeConfig(limits=Limits(**LIMITS)))
    with running_app(app) as base, httpx.Client(base_url=base, timeout=120) as client:
        yield client, client.get("/openapi.json").json()


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    """A non-square image of a size the tiny model takes: 24 x 40 (H x W)."""
    return np.random.default_rng(5).integers(0, 256, (24, 40, 3), dtype=np.uint8)


def png_size(content: bytes) -> tuple[int, int]:
    """(H, W) of a PNG."""
    width, height = Image.open(io.BytesIO(content)).size
    return height, width


def upload(*images: np.ndarray) -> list[tuple[str, tuple[str, bytes]]]:
    return [("image", (f"{i}.png", encode_png(im))) for i, im in enumerate(images)]


def one_line_error(r: httpx.Response, status: int) -> str:
    assert r.status_code == status, (r.status_code, r.text[:300])
    body = r.json()
    assert set(body) == {"error", "detail"} and "\n" not in body["detail"] and body["detail"], body
    return body["detail"]


def conforms(doc: dict[str, Any], path: str, r: httpx.Response, body: Any = None) -> None:
    """The request body (JSON) and the answer hold to the document's declarations for `path`."""
    op = doc["paths"][path]["post"]
    check = jsonschema.Draft202012Validator

    def valid(schema: dict[str, Any], value: Any) -> None:
        jsonschema.validate(value, {**schema, "components": doc["components"]}, cls=check)

    if body is not None:
        valid(op["requestBody"]["content"]["application/json"]["schema"], body)
    answer = op["responses"][str(r.status_code)]
    media = r.headers["content-type"].split(";")[0]
    assert media in answer["content"], (path, media, list(answer["content"]))
    if media == "application/json":
        valid(answer["content"][media]["schema"], r.json())
    for header in answer.get("headers", {}):
        assert header.lower() in r.headers, (path, header)


# ---- /v1 --------------------------------------------------------------------------------------


def test_the_document_writes_the_spatial_models_own_routes_beside_the_flat_ones(served, spatial):
    client, doc = served
    names = [m["name"] for m in client.get("/v1/models").json()["models"]]
    assert names == ["fashion-mnist", spatial.name]
    ops = {op["operationId"]: path for path, methods in doc["paths"].items() for op in methods.values()}
    prefix = re.sub(r"[^0-9a-z]+", "_", spatial.name.lower())
    own = {k.removeprefix(prefix + "_") for k in ops if k.startswith(prefix + "_")}
    assert own == {"describe_model", "bundle_file", "decode", "reconstruct", "edit", "encode", "embed"}, own
    flat = {k.removeprefix("fashion_mnist_") for k in ops if k.startswith("fashion_mnist_")}
    assert flat == {"describe_model", "bundle_file", "sample", "decode", "reconstruct", "edit", "encode", "score"}, flat
    assert f"{spatial.name}.decode" in str(ops) and f"{spatial.name}.sample" not in str(ops)  # the protocol's models
    # Every schema the document holds is a schema, and every reference resolves.
    for name, schema in doc["components"]["schemas"].items():
        jsonschema.Draft202012Validator.check_schema(schema)
    refs = set(re.findall(r'"#/components/schemas/([^"]+)"', json.dumps(doc)))
    assert refs <= set(doc["components"]["schemas"]), refs - set(doc["components"]["schemas"])
    decode = doc["paths"][f"/v1/models/{spatial.name}/decode"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert decode["properties"]["shape"]["prefixItems"][1] == {"const": 4, "type": "integer"}
    assert decode["properties"]["shape"]["prefixItems"][0]["maximum"] == LIMITS["max_latents"]  # this server's limit
    edit = doc["paths"][f"/v1/models/{spatial.name}/edit"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert edit["required"] == ["image", "direction"] and "dim" not in edit["properties"] and "sample_pixels" not in edit["properties"]


def test_reconstruct_of_a_non_square_image_answers_a_png_of_its_size(served, spatial, image):
    client, doc = served
    r = client.post(f"/v1/models/{spatial.name}/reconstruct", files=upload(image))
    assert r.status_code == 200 and r.headers["content-type"] == "image/png", r.text[:300]
    assert png_size(r.content) == (24, 40)
    assert r.content == encode_png(spatial.reconstruct(image)[0])  # the SDK's bytes
    conforms(doc, f"/v1/models/{spatial.name}/reconstruct", r)
    # Several uploads of different sizes: one entry each, each at its own size.
    small = image[:8, :12]
    r = client.post(f"/v1/models/{spatial.name}/reconstruct", files=upload(image, small))
    sizes = [png_size(base64.b64decode(e["png"])) for e in r.json()["results"]]
    assert sizes == [(24, 40), (8, 12)], r.json()
    conforms(doc, f"/v1/models/{spatial.name}/reconstruct", r)


def test_edit_moves_along_a_per_channel_vector(served, spatial, image):
    client, doc = served
    r = client.post(f"/v1/models/{spatial.name}/edit", files=upload(image), data={"direction": "0.5,0,0,-0.5", "delta": "2"})
    assert r.status_code == 200, r.text[:300]
    assert r.content == encode_png(spatial.edit(image, direction=np.array([0.5, 0, 0, -0.5]), delta=2.0)[0])
    assert r.content != encode_png(spatial.reconstruct(image)[0])  # the edit moved the image
    for bad in ("1,2", "shiny", "0.5,0,0,1e3"):
        detail = one_line_error(client.post(f"/v1/models/{spatial.name}/edit", files=upload(image), data={"direction": bad}), 422)
        assert f"direction={bad!r}" in detail and "4 comma-separated numbers" in detail, detail
    detail = one_line_error(client.post(f"/v1/models/{spatial.name}/edit", files=upload(image), data={"dim": "3", "direction": "0,0,0,0"}), 422)
    assert "'dim'" in detail and "direction" in detail, detail  # no dim for spatial latents
    detail = one_line_error(client.post(f"/v1/models/{spatial.name}/edit", files=upload(image), data={"delta": "1"}), 422)
    assert "needs a direction" in detail, detail  # the SDK's refusal, not a server error


def test_decode_of_latents_with_their_shape_answers_images_of_h_f_by_w_f(served, spatial):
    client, doc = served
    z = np.random.default_rng(3).standard_normal((1, 4, 6, 10)).astype(np.float32)
    body = {"shape": [1, 4, 6, 10], "latents": z.ravel().tolist()}
    r = client.post(f"/v1/models/{spatial.name}/decode", json=body)
    assert r.status_code == 200 and r.headers["content-type"] == "image/png", r.text[:300]
    assert png_size(r.content) == (24, 40)
    assert r.content == encode_png(spatial.decode(z)[0])
    assert r.headers["x-vaesdk-precision"] == spatial.decode_with_info(z).precision[0] == "fp32"
    conforms(doc, f"/v1/models/{spatial.name}/decode", r, body)
    # Several latents: one PNG each, with the precision of each; JSON's 6.0 is the integer 6.
    two = np.concatenate([z, -z])
    body = {"shape": [2, 4.0, 6, 10], "latents": two.ravel().tolist(), "precision": "fp32"}
    r = client.post(f"/v1/models/{spatial.name}/decode", json=body)
    answer = r.json()
    assert [base64.b64decode(p) for p in answer["images"]] == [encode_png(im) for im in spatial.decode(two)], r.text[:200]
    assert answer["precision"] == ["fp32", "fp32"] and r.headers["x-vaesdk-precision"] == "fp32, fp32"
    conforms(doc, f"/v1/models/{spatial.name}/decode", r, body)


def test_decode_refuses_latents_that_do_not_fit_their_shape_or_this_servers_limits(served, spatial):
    client, _ = served
    url = f"/v1/models/{spatial.name}/decode"
    detail = one_line_error(client.post(url, json={"shape": [1, 4, 6, 10], "latents": [0.0] * 239}), 422)
    assert "239" in detail and "240" in detail and "N*C*h*w" in detail, detail
    detail = one_line_error(client.post(url, json={"shape": [1, 3, 6, 10], "latents": [0.0] * 180}), 422)
    assert "shape[1]=3" in detail and "4" in detail, detail
    detail = one_line_error(client.post(url, json={"shape": [9, 4, 1, 1], "latents": [0.0] * 36}), 413)
    assert "shape[0]=9" in detail and "limit of 8" in detail, detail
    detail = one_line_error(client.post(url, json={"shape": [1, 4, 40, 40], "latents": [0.0] * 6400}), 413)
    assert "160x160" in detail and "20000" in detail, detail
    if spatial.manifest.fp16_decoder is None:
        detail = one_line_error(client.post(url, json={"shape": [1, 4, 6, 10], "latents": [0.0] * 240, "precision": "fp16"}), 422)
        assert "'fp16'" in detail and "'fp32'" in detail, detail  # a bundle without a float16 decoder
    else:
        r = client.post(url, json={"shape": [1, 4, 6, 10], "latents": [0.0] * 240, "precision": "fp16"})
        assert r.status_code == 200 and r.headers["x-vaesdk-precision"] in ("fp16", "fp32 (fp16 was not finite)"), r.text[:200]
    detail = one_line_error(client.post(url, json={"latents": [[0.0] * 4]}), 422)
    assert "shape" in detail, detail


def test_encode_answers_each_latent_with_its_shape_and_embed_pooled_features(served, spatial, image):
    client, doc = served
    small, odd = image[:8, :12], image[:18, :16]
    r = client.post(f"/v1/models/{spatial.name}/encode", files=upload(image, small, odd))
    assert r.status_code == 200, r.text[:300]
    first, second, third = r.json()["results"]
    assert first["shape"] == [4, 6, 10] and second["shape"] == [4, 2, 3]
    posterior = spatial.encode(image)
    assert np.asarray(first["mean"], np.float32).reshape(first["shape"]).tobytes() == posterior.mean[0].tobytes()
    if spatial.kind == "vae":
        assert np.asarray(first["logvar"], np.float32).reshape(first["shape"]).tobytes() == posterior.logvar[0].tobytes()
    else:
        assert first["logvar"] is None
    assert "18x16" in third["error"] and "20x16" in third["error"], third  # its own error; the others still ran
    conforms(doc, f"/v1/models/{spatial.name}/encode", r)
    # The latents as encode answers them decode as they are.
    r = client.post(f"/v1/models/{spatial.name}/decode", json={"shape": [1, *first["shape"]], "latents": first["mean"]})
    assert r.content == encode_png(spatial.decode(posterior.mean)[0])
    r = client.post(f"/v1/models/{spatial.name}/embed", files=upload(image, small))
    features = [e["features"] for e in r.json()["results"]]
    assert np.asarray(features, np.float32).tobytes() == np.concatenate([spatial.embed(image), spatial.embed(small)]).tobytes()
    conforms(doc, f"/v1/models/{spatial.name}/embed", r)


def test_sample_and_score_answer_the_sdks_one_line_refusal(served, spatial, image):
    client, _ = served
    for route, call, sdk in (("sample", dict(json={"n": 1}), lambda: spatial.sample(1)), ("score", dict(files=upload(image)), lambda: spatial.score(image))):
        detail = one_line_error(client.post(f"/v1/models/{spatial.name}/{route}", **call), 422)
        with pytest.raises(vaesdk.UnsupportedOperationError) as refused:
            sdk()
        assert detail == str(refused.value), (route, detail)
    # A flat model has no embed route: its features are its encode means.
    detail = one_line_error(client.post("/v1/models/fashion-mnist/embed", files=upload(image)), 404)
    assert "embed" in detail and "encode" in detail, detail


def test_an_image_size_that_is_not_a_multiple_answers_422_naming_the_size_and_the_fix(served, spatial, image):
    client, _ = served
    for route, data in (("reconstruct", {}), ("edit", {"direction": "0,0,0,0"})):
        detail = one_line_error(client.post(f"/v1/models/{spatial.name}/{route}", files=upload(image[:18, :16]), data=data), 422)
        assert "18x16" in detail and "multiples of 4" in detail and "crop or pad to 20x16" in detail, (route, detail)


# ---- /v2, the Open Inference Protocol --------------------------------------------------------


def outputs(r: httpx.Response) -> dict[str, np.ndarray]:
    """The arrays of an answer, JSON or binary, read as the protocol says."""
    assert r.status_code == 200, r.text[:300]
    dtypes = {"UINT8": np.uint8, "FP32": np.float32}
    size = int(r.headers.get(HEADER, len(r.content)))
    head, rest = json.loads(r.content[:size]), r.content[size:]
    out = {}
    for o in head["outputs"]:
        if "data" in o:
            out[o["name"]] = np.array(o["data"], dtypes[o["datatype"]]).reshape(o["shape"])
        else:
            n = o["parameters"]["binary_data_size"]
            out[o["name"]], rest = np.frombuffer(rest[:n], dtypes[o["datatype"]]).reshape(o["shape"]), rest[n:]
    return out


def test_oip_decode_and_encode_take_tensors_whose_sides_vary(served, spatial, image):
    client, _ = served
    name = spatial.name
    meta = client.get(f"/v2/models/{name}.decode").json()
    assert meta["inputs"] == [{"name": "latents", "datatype": "FP32", "shape": [-1, 4, -1, -1]}]
    assert meta["outputs"] == [{"name": "images", "datatype": "UINT8", "shape": [-1, -1, -1, 3]}]
    assert client.get(f"/v2/models/{name}.encode").json()["inputs"][0]["shape"] == [-1, -1, -1, 3]
    for refused in ("sample", "score"):
        assert client.get(f"/v2/models/{name}.{refused}").status_code == 404
    z = np.random.default_rng(4).standard_normal((1, 4, 6, 10)).astype(np.float32)
    body = {"inputs": [{"name": "latents", "datatype": "FP32", "shape": [1, 4, 6, 10], "data": z.ravel().tolist()}]}
    images = outputs(client.post(f"/v2/models/{name}.decode/infer", json=body))["images"]
    assert images.shape == (1, 24, 40, 3) and images.tobytes() == spatial.decode(z).tobytes()
    # Binary tensors, another size in the next request.
    z2 = np.random.default_rng(6).standard_normal((2, 4, 3, 5)).astype(np.float32)
    head = json.dumps({"inputs": [{"name": "latents", "datatype": "FP32", "shape": [2, 4, 3, 5], "parameters": {"binary_data_size": z2.nbytes}}],
                       "outputs": [{"name": "images", "parameters": {"binary_data": True}}]}).encode()  # fmt: skip
    r = client.post(f"/v2/models/{name}.decode/infer", content=head + z2.tobytes(), headers={HEADER: str(len(head)), "Content-Type": "application/octet-stream"})
    assert outputs(r)["images"].tobytes() == spatial.decode(z2).tobytes()
    body = {"inputs": [{"name": "images", "datatype": "UINT8", "shape": [1, 24, 40, 3], "data": image.ravel().tolist()}]}
    encoded = outputs(client.post(f"/v2/models/{name}.encode/infer", json=body))
    posterior = spatial.encode(image)
    assert encoded["mean"].shape == (1, 4, 6, 10) and encoded["mean"].tobytes() == posterior.mean.tobytes()
    assert spatial.kind != "vae" or encoded["logvar"].tobytes() == posterior.logvar.tobytes()
    # Refusals: one line each, naming the value and the fix.
    odd = {"inputs": [{"name": "images", "datatype": "UINT8", "shape": [1, 18, 16, 3], "data": image[:18, :16].ravel().tolist()}]}
    r = client.post(f"/v2/models/{name}.encode/infer", json=odd)
    assert r.status_code == 400 and "18x16" in r.json()["error"] and "crop or pad to 20x16" in r.json()["error"], r.text
    big = {"inputs": [{"name": "latents", "datatype": "FP32", "shape": [1, 4, 40, 40], "data": [0.0] * 6400}]}
    r = client.post(f"/v2/models/{name}.decode/infer", json=big)
    assert r.status_code == 400 and "160x160" in r.json()["error"] and "20000" in r.json()["error"], r.text
    empty = {"inputs": [{"name": "latents", "datatype": "FP32", "shape": [1, 4, 0, 10], "data": []}]}
    r = client.post(f"/v2/models/{name}.decode/infer", json=empty)
    assert r.status_code == 400 and "[1, 4, 0, 10]" in r.json()["error"] and "1 to" in r.json()["error"], r.text


# ---- Ray Serve -------------------------------------------------------------------------------


@pytest.mark.ray
def test_ray_serve_batches_join_spatial_requests_of_one_size_only(spatial):
    pytest.importorskip("ray.serve")
    from vaesdk.serve import oip
    from vaesdk.serve.ray_serve import Job, compute_batch

    ops = oip.operations({spatial.name: spatial})
    assert sorted(ops) == [f"{spatial.name}.decode", f"{spatial.name}.encode"]
    decode = ops[f"{spatial.name}.decode"]
    rng = np.random.default_rng(8)
    zs = [rng.standard_normal(shape).astype(np.float32) for shape in ((1, 4, 6, 10), (2, 4, 6, 10), (1, 4, 3, 5))]
    outcomes = compute_batch([Job(decode, {"latents": z}, {}) for z in zs])
    assert [o.batch for o in outcomes] == [2, 2, 1]  # the two of one size in one call, the other alone
    for z, o in zip(zs, outcomes):
        assert o.error is None and o.outputs["images"].tobytes() == spatial.decode(z).tobytes()


@pytest.mark.ray
def test_ray_serve_deploys_a_spatial_bundle(spatial, spatial_bundle):
    """One replica on a local Ray instance (2 CPUs, loopback): the protocol's decode answers the
    SDK's bytes for a non-square latent; the refused operations are no protocol models."""
    ray = pytest.importorskip("ray")
    serve = pytest.importorskip("ray.serve")
    from vaesdk.serve.ray_serve import RayServeOptions, application
    from webserver import free_port

    port = free_port()
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False, logging_level="ERROR")
    try:
        options = RayServeOptions(bundles=(str(spatial_bundle),), num_replicas=1, allowed_hosts=("127.0.0.1",))
        serve.start(http_options={"host": "127.0.0.1", "port": port}, logging_config={"log_level": "WARNING"})
        serve.run(application(options), name="vaesdk-spatial", route_prefix="/")
        z = np.random.default_rng(9).standard_normal((1, 4, 6, 10)).astype(np.float32)
        body = {"inputs": [{"name": "latents", "datatype": "FP32", "shape": [1, 4, 6, 10], "data": z.ravel().tolist()}]}
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            assert outputs(client.post(f"/v2/models/{spatial.name}.decode/infer", json=body))["images"].tobytes() == spatial.decode(z).tobytes()
            r = client.post(f"/v2/models/{spatial.name}.sample/infer", json={"inputs": [{"name": "n", "datatype": "INT64", "shape": [1], "data": [1]}]})
            assert r.status_code == 404 and f"{spatial.name}.decode, {spatial.name}.encode" in r.json()["error"], r.text
    finally:
        serve.shutdown()
        ray.shutdown()


# ---- `vae serve` and its document, under schemathesis --------------------------------------

# Uploads are images whose sides are multiples of 4 (the tiny model's), in every mode: no schema
# keyword can say "bytes that decode as an image of such a size".
HOOKS = '''
import io
import schemathesis
from hypothesis import strategies as st
from PIL import Image
from schemathesis.transport.serialization import Binary

def _png(mode, width, height, fill):
    buf = io.BytesIO()
    Image.new(mode, (4 * width, 4 * height), fill).save(buf, format="PNG")
    return Binary(buf.getvalue())

schemathesis.openapi.format("binary", st.builds(
    _png, st.sampled_from(["L", "RGB", "RGBA", "LA", "P", "1"]), st.integers(1, 24), st.integers(1, 24), st.integers(0, 255)))

FORM_ROUTES = ("/reconstruct", "/edit", "/encode", "/embed")

@schemathesis.hook
def filter_body(context, body):
    # As in test_serve_contract.py: multipart cannot send a list of one value or an empty list
    # for a scalar field as invalid.
    if context.operation is None or not context.operation.path.endswith(FORM_ROUTES) or not isinstance(body, dict):
        return True
    return not any(isinstance(v, list) and len(v) <= 1 for k, v in body.items() if k != "image")
'''

# As in test_serve_contract.py, 413 counts as rejecting invalid data. A latent's or an image's
# data must hold as many numbers as its shape says (N*C*h*w), which no JSON Schema keyword can
# say where the sides vary: the routes that take such tensors (decode, and the protocol's
# infer) refuse a generated "valid" body whose length and shape disagree, so only there is
# positive_data_acceptance off.
CONFIG = """
[checks.negative_data_rejection]
expected-statuses = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429", "5xx"]

[[operations]]
include-path-regex = "(/decode|/infer)$"
checks.positive_data_acceptance.enabled = false
"""


def test_schemathesis_finds_no_failure_against_a_spatial_model(tmp_path, spatial_bundle):
    """`vae serve -m BUNDLE` with a spatial bundle alone, every check: schemathesis runs them
    all when none is named (naming them on the command line would override CONFIG's one
    exception)."""
    (tmp_path / "vaesdk_st_spatial_hooks.py").write_text(HOOKS)
    (tmp_path / "schemathesis.toml").write_text(CONFIG)
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "vaesdk_st_spatial_hooks", "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    st = Path(sys.executable).with_name("st")
    limits = ["--max-n", "4", "--max-images", "2", "--max-pixels", "20000", "--max-upload-mb", "1"]
    with vae_serve_process("-m", str(spatial_bundle), "--device", "cpu", *limits) as (_, base):
        assert [m["name"] for m in httpx.get(f"{base}/v1/models").json()["models"]] == [vaesdk.load(spatial_bundle, device="cpu").name]
        run = subprocess.run(
            [str(st), "--config-file", str(tmp_path / "schemathesis.toml"), "--no-color", "run", f"{base}/openapi.json",
             "--seed", "20261202", "--max-examples", "3",
             "--workers", "1", "--request-timeout", "60", "--max-time", "150", "--phases", "examples,coverage,fuzzing"],
            capture_output=True, text=True, env=env, timeout=450, cwd=tmp_path,
        )  # fmt: skip
    tail = run.stdout[-6000:] + run.stderr[-2000:]
    print(tail)
    assert run.returncode == 0, tail
    cases = re.search(r"(\d+) generated, (\d+) passed", run.stdout)
    assert cases and cases[1] == cases[2] and int(cases[1]) >= 50, tail
