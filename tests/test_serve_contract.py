"""The service's OpenAPI document is its contract: every route declares its body, answers
and errors; a client driven by the document alone gets the SDK's bytes; schemathesis with
every check finds nothing against the running server (loopback, a fixed seed and example
count). The document is the one `vae serve` publishes at /openapi.json."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import numpy as np
import pytest

import vaesdk
from vaesdk.imaging.images import encode_png, make_grid
from webserver import running_app, vae_serve_process

ROOT = Path(__file__).resolve().parents[1]
SHIRT = (ROOT / "docs" / "images" / "inputs" / "shirt.png").read_bytes()
ERROR_STATUSES = {"404", "408", "413", "422", "500", "503", "504"}
OPERATIONS = ["sample", "decode", "reconstruct", "edit", "encode", "score"]


@pytest.fixture(scope="module")
def document(bundled_model) -> dict[str, Any]:
    from vaesdk.serve import create_app

    return create_app([bundled_model]).openapi()


def operations(doc: dict[str, Any]) -> dict[str, tuple[str, str, dict[str, Any]]]:
    return {op["operationId"]: (method, path, op) for path, ops in doc["paths"].items() for method, op in ops.items()}


def test_every_post_route_declares_its_body_media_types_and_errors(document):
    ops = {op_id.removeprefix("fashion_mnist_"): op for op_id, op in operations(document).items() if not op_id.startswith("oip_")}
    assert set(ops) == {"healthz", "list_models", "describe_model", "bundle_file", "sample", "decode", "reconstruct", "edit", "encode", "score"}
    for op_id in ("sample", "decode"):
        body = ops[op_id][2]["requestBody"]["content"]["application/json"]["schema"]
        assert body["additionalProperties"] is False and body["properties"], op_id
    for op_id in ("reconstruct", "edit", "encode", "score"):
        form = ops[op_id][2]["requestBody"]["content"]["multipart/form-data"]["schema"]
        assert form["required"][0] == "image" and form["properties"]["image"]["items"]["format"] == "binary"
        assert form["properties"]["image"]["maxItems"] == 64  # the default limit, read from Limits
    for op_id in ("sample", "decode", "reconstruct", "edit"):
        assert set(ops[op_id][2]["responses"]["200"]["content"]) == {"image/png", "application/json"}, op_id
    for op_id in ("sample", "decode", "reconstruct", "edit", "encode", "score"):
        responses = ops[op_id][2]["responses"]
        # Every POST route refuses other web pages' origins (403); the JSON ones, other media types (415).
        declared = (ERROR_STATUSES - {"404"}) | {"403"} | ({"415"} if op_id in ("sample", "decode") else set())
        assert declared == set(responses) - {"200"}, (op_id, set(responses))  # the model is in the path: no 404
        for status in declared:
            assert responses[status]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorBody"}
        assert "Retry-After" in responses["503"]["headers"]
        assert "401" not in responses  # no token on this server: no 401 to declare
    assert "HTTPValidationError" not in json.dumps(document)  # FastAPI's default error model is not what is sent
    error = document["components"]["schemas"]["ErrorBody"]
    assert set(error["required"]) == {"error", "detail"} and error["additionalProperties"] is False
    score_k = ops["score"][2]["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]["k"]
    import vaesdk

    assert score_k["default"] == vaesdk.DEFAULT_IW_SAMPLES  # the same default k as Model.score and `vae score`


def test_with_a_token_401_is_declared_with_its_header(bundled_model):
    from vaesdk.serve import ServeConfig, create_app

    doc = create_app([bundled_model], ServeConfig(token="s3cret-token")).openapi()
    for op_id, (_, path, op) in operations(doc).items():
        if path.startswith("/v1/"):
            assert "WWW-Authenticate" in op["responses"]["401"]["headers"], op_id


def test_a_method_a_path_lacks_answers_405_with_allow(bundled_model):
    from vaesdk.serve import create_app

    with running_app(create_app([bundled_model])) as base:
        for method, path, allow in [
            ("GET", "/v1/models/fashion-mnist/sample", "POST"), ("DELETE", "/v1/models", "GET"), ("PUT", "/healthz", "GET"),
            ("POST", "/index.html", "GET, HEAD"),
        ]:  # fmt: skip
            r = httpx.request(method, base + path)
            assert r.status_code == 405 and allow in r.headers["allow"], (method, path, r.headers)
            assert set(r.json()) == {"error", "detail"} and method in r.json()["detail"]


class DocumentClient:
    """A client that knows nothing but the OpenAPI document: it finds an operation by its id,
    fills its path, sends the body as the document's media type says, and checks the answer
    against the declared media types and schemas."""

    def __init__(self, base: str):
        self.http = httpx.Client(base_url=base, timeout=60)
        self.doc = self.http.get("/openapi.json").json()
        self.ops = operations(self.doc)

    def _check(self, schema: dict[str, Any], value: Any) -> None:
        # The document's "#/components/..." references resolve against the schema's own root.
        jsonschema.validate(value, {**schema, "components": self.doc["components"]}, cls=jsonschema.Draft202012Validator)

    def call(self, op_id: str, accept: str | None = None, body: dict[str, Any] | None = None, files: list[bytes] = (), **params: Any) -> httpx.Response:
        method, path, op = self.ops[op_id]
        for name, value in params.items():
            declared = next(p for p in op["parameters"] if p["name"] == name and p["in"] == "path")
            assert value in declared["schema"].get("enum", [value])
            path = path.replace("{" + name + "}", str(value))
        content = op.get("requestBody", {}).get("content", {})
        headers = {"Accept": accept} if accept else {}
        if "application/json" in content:
            self._check(content["application/json"]["schema"], body or {})
            r = self.http.request(method.upper(), path, json=body or {}, headers=headers)
        elif "multipart/form-data" in content:
            form = content["multipart/form-data"]["schema"]
            fields = {k: str(v) for k, v in (body or {}).items()}
            assert set(fields) <= set(form["properties"]), fields
            r = self.http.request(method.upper(), path, data=fields, files=[("image", (f"{i}.png", f)) for i, f in enumerate(files)], headers=headers)
        else:
            r = self.http.request(method.upper(), path, headers=headers)
        answer = op["responses"][str(r.status_code)]
        media = r.headers["content-type"].split(";")[0]
        assert media in answer["content"], (op_id, media, list(answer["content"]))
        if media == "application/json":
            self._check(answer["content"][media]["schema"], r.json())
        return r


def test_a_client_driven_by_the_document_gets_the_sdks_bytes(bundled_model):
    with vae_serve_process("--device", "cpu") as (_, base):
        client = DocumentClient(base)
        grid = client.call("fashion_mnist_sample", body={"n": 6, "seed": 3, "ncols": 3})
        assert grid.content == encode_png(make_grid(bundled_model.sample(6, seed=3), ncols=3))
        each = client.call("fashion_mnist_sample", accept="application/json", body={"n": 2, "seed": 3}).json()
        assert [base64.b64decode(p) for p in each["images"]] == [encode_png(im) for im in bundled_model.sample(2, seed=3)]
        encoded = client.call("fashion_mnist_encode", files=[SHIRT]).json()["results"][0]
        posterior = bundled_model.encode(SHIRT)
        assert encoded["mean"] == posterior.mean[0].tolist() and encoded["logvar"] == posterior.logvar[0].tolist()
        assert np.asarray(encoded["mean"], np.float32).tobytes() == posterior.mean[0].tobytes()
        with pytest.raises(jsonschema.ValidationError, match="256"):  # the document states this server's limit
            client.call("fashion_mnist_sample", body={"n": 100_000})


# The client generator runs in its own environment: it pins typer below the version the CLI
# uses, so installing it beside vaesdk would change the CLI under test. The generated package
# needs only httpx and attrs, and is imported here, with this environment's.
GENERATOR = ROOT / "tests" / "client-generator.txt"  # the pinned version, read by scripts/test too
GENERATOR_VENV = Path(os.environ.get("VAESDK_GENERATOR_VENV", ROOT / ".venv-generator"))
# image/png is bytes to the generator (it knows JSON, text and octet-stream); no formatter runs
# on the generated code, so --fail-on-warning fails on the document alone.
GENERATOR_CONFIG = "content_type_overrides:\n  image/png: application/octet-stream\npost_hooks: []\n"


def client_generator() -> Path:
    """openapi-python-client in GENERATOR_VENV, installed there on first use (scripts/test does it up front)."""
    exe, marker = GENERATOR_VENV / "bin" / "openapi-python-client", GENERATOR_VENV / "vaesdk-requirement.txt"
    if exe.is_file() and marker.is_file() and marker.read_text() == GENERATOR.read_text():
        return exe
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(GENERATOR_VENV)], check=True, timeout=300)
    pip = subprocess.run([str(GENERATOR_VENV / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check", "-r", str(GENERATOR)],
                         capture_output=True, text=True, timeout=600)  # fmt: skip
    assert pip.returncode == 0, f"could not install {GENERATOR} into {GENERATOR_VENV}: {pip.stderr[-1500:]}; install it there by hand or set VAESDK_GENERATOR_VENV"
    marker.write_text(GENERATOR.read_text())
    return exe


@pytest.mark.generator
def test_a_client_generated_from_the_document_gets_the_sdks_bytes(tmp_path, bundled_model):
    emoji = vaesdk.load("emoji", device="cpu")
    with vae_serve_process("--device", "cpu") as (_, base):
        (tmp_path / "openapi.json").write_bytes(httpx.get(f"{base}/openapi.json").content)
        (tmp_path / "generator.yaml").write_text(GENERATOR_CONFIG)
        made = subprocess.run(
            [str(client_generator()), "generate", "--path", "openapi.json", "--config", "generator.yaml", "--meta", "none", "--output-path", "vaeclient", "--fail-on-warning"],
            capture_output=True, text=True, cwd=tmp_path, timeout=300,
        )  # fmt: skip
        assert made.returncode == 0 and (tmp_path / "vaeclient" / "client.py").is_file(), made.stdout[-2000:] + made.stderr[-2000:]
        sys.path.insert(0, str(tmp_path))
        try:
            from vaeclient import Client
            from vaeclient.api.emoji import emoji_sample
            from vaeclient.api.fashion_mnist import fashion_mnist_encode, fashion_mnist_sample
            from vaeclient.models import EncodeResults, FashionMnistEncodeBody, FashionMnistSampleFashionMnistSampleRequest
            from vaeclient.models import EmojiSampleEmojiSampleRequest
            from vaeclient.types import File

            client = Client(base_url=base, timeout=httpx.Timeout(120), raise_on_unexpected_status=True)
            for call, body, model in [
                (fashion_mnist_sample, FashionMnistSampleFashionMnistSampleRequest(n=6, seed=3, ncols=3), bundled_model),
                (emoji_sample, EmojiSampleEmojiSampleRequest(n=6, seed=3, ncols=3), emoji),
            ]:
                grid = call.sync(client=client, body=body)
                assert isinstance(grid, File), grid  # the PNG answer, as bytes
                assert grid.payload.read() == encode_png(make_grid(model.sample(6, seed=3), ncols=3)), model.name
            upload = File(payload=io.BytesIO(SHIRT), file_name="shirt.png", mime_type="image/png")
            encoded = fashion_mnist_encode.sync(client=client, body=FashionMnistEncodeBody(image=[upload]))
            assert isinstance(encoded, EncodeResults), encoded
            posterior = bundled_model.encode(SHIRT)
            item = encoded.results[0]
            assert item.name == "shirt.png" and item.mean == posterior.mean[0].tolist() and item.logvar == posterior.logvar[0].tolist()
            assert np.asarray(item.mean, np.float32).tobytes() == posterior.mean[0].tobytes()
        finally:
            sys.path.remove(str(tmp_path))
            for name in [m for m in sys.modules if m == "vaeclient" or m.startswith("vaeclient.")]:
                del sys.modules[name]


@pytest.mark.web
def test_docs_renders_a_working_form_without_internet(tmp_path):
    """/docs in headless Chromium with every other origin refused: Swagger UI loads from the
    server itself, lists every operation, and the sample form's Execute gets a PNG."""
    web = ROOT / "web"
    missing = [what for what, ok in (
        ("Chromium (Debian package chromium)", Path("/usr/bin/chromium").exists() or shutil.which("chromium")),
        ("node", shutil.which("node")), ("web/node_modules (run `npm ci` in web/)", (web / "node_modules" / "playwright-core").is_dir()),
    ) if not ok]  # fmt: skip
    assert not missing, f"this test needs: {', '.join(missing)}; ./scripts/test installs them"
    out = tmp_path / "docs.json"
    with vae_serve_process("--device", "cpu") as (_, base):
        ops = len(operations(httpx.get(f"{base}/openapi.json").json()))
        done = subprocess.run(["node", str(web / "test" / "docs.mjs"), base, "fashion_mnist_sample", "fashion-mnist", str(out)],
                              capture_output=True, text=True, timeout=180)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(out.read_text())
    assert seen["external"] == [] and seen["errors"] == [] and seen["failed"] == [], seen  # nothing from a CDN, nothing broken
    assert seen["operations"] == ops, seen
    assert seen["body"]["n"] == 16 and "temperature" in seen["body"], seen  # the request model's fields and defaults
    assert seen["status"] == "200" and seen["image"] == 1, seen  # the PNG answer, shown as an image


SCHEMATHESIS_SEED = 20261201
SCHEMATHESIS_EXAMPLES = int(os.environ.get("VAESDK_SCHEMATHESIS_EXAMPLES", "5"))
SCHEMATHESIS_MAX_TIME = int(os.environ.get("VAESDK_SCHEMATHESIS_MAX_TIME", "300"))

# schemathesis' strategy for `format: binary` sends real sample files first and then arbitrary
# bytes; the document says these uploads are images, which no schema keyword can express, so
# the valid ("positive") uploads here are images of every mode and size. Invalid bodies are
# still generated by its negative mode, except those that multipart cannot send as invalid
# (filter_body below).
HOOKS = '''
import io
import schemathesis
from hypothesis import strategies as st
from PIL import Image
from schemathesis.transport.serialization import Binary

def _png(mode, width, height, fill):
    buf = io.BytesIO()
    Image.new(mode, (width, height), fill).save(buf, format="PNG")
    return Binary(buf.getvalue())

schemathesis.openapi.format("binary", st.builds(
    _png, st.sampled_from(["L", "RGB", "RGBA", "LA", "P", "1"]), st.integers(1, 96), st.integers(1, 96), st.integers(0, 255)))

FORM_ROUTES = ("/reconstruct", "/edit", "/encode", "/score")

@schemathesis.hook
def filter_body(context, body):
    # multipart/form-data cannot carry a list of one value or an empty list for a scalar field:
    # the first is sent as that value, the second as no field at all, and both are valid
    # requests. Such "invalid" bodies never reach the server as invalid, so none is generated.
    # A list of two or more is sent as a repeated field, which the server refuses (422).
    if context.operation is None or not context.operation.path.endswith(FORM_ROUTES) or not isinstance(body, dict):
        return True
    return not any(isinstance(v, list) and len(v) <= 1 for k, v in body.items() if k != "image")

@schemathesis.hook
def filter_case(context, case):
    # edit's body is one of two disjoint shapes (dim or direction, anyOf). Negative mode breaks
    # one branch at a time, and the result can be a valid body of the other branch, which the
    # server rightly accepts. Such a "negative" case is dropped when the body it sends is valid
    # under the operation's own schema; every truly invalid one is still sent.
    if not case.operation.path.endswith("/edit") or not isinstance(case.body, dict) or case.meta is None:
        return True
    if not any(c.mode.is_negative for c in case.meta.components.values()):
        return True
    import jsonschema
    schema = case.operation.definition.raw["requestBody"]["content"]["multipart/form-data"]["schema"]
    body = dict(case.body)
    if isinstance(body.get("image"), list):
        body["image"] = ["" for _ in body["image"]]  # the files' bytes are not JSON; their count and presence are
    return not jsonschema.Draft202012Validator(schema).is_valid(body)
'''


# The one setting beside `--checks all`: this server answers a value over one of its limits
# (n, k, ncols, uploads) with 413 naming the limit, as documented, so 413 counts as rejecting
# invalid data.
CONFIG = """
[checks.negative_data_rejection]
expected-statuses = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429", "5xx"]
"""


def test_schemathesis_with_every_check_finds_no_failure(tmp_path):
    (tmp_path / "vaesdk_st_hooks.py").write_text(HOOKS)
    (tmp_path / "schemathesis.toml").write_text(CONFIG)
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "vaesdk_st_hooks", "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    st = Path(sys.executable).with_name("st")
    # Small limits keep every generated case cheap (the document states them, so schemathesis
    # stays within them for valid cases and probes past them for invalid ones).
    limits = ["--max-n", "8", "--max-k", "8", "--max-images", "3", "--max-pixels", "20000", "--max-upload-mb", "1"]
    # The default server: every bundled model, each with its own paths in the document.
    with vae_serve_process("--device", "cpu", "--token", "s3cret-token", *limits) as (_, base):
        served = httpx.get(f"{base}/v1/models", headers={"Authorization": "Bearer s3cret-token"}).json()["models"]
        # The protocol's models: each has an infer route and a versioned one (serve/oip.py).
        index = httpx.post(f"{base}/v2/repository/index", headers={"Authorization": "Bearer s3cret-token"}).json()
        assert len(served) == len(vaesdk.list_models()) >= 2, served  # models of different shapes and latent sizes
        run = subprocess.run(
            [str(st), "--config-file", str(tmp_path / "schemathesis.toml"), "--no-color", "run", f"{base}/openapi.json",
             "--checks", "all", "--seed", str(SCHEMATHESIS_SEED), "--max-examples", str(SCHEMATHESIS_EXAMPLES), "--workers", "1",
             "-H", "Authorization: Bearer s3cret-token", "--request-timeout", "60", "--max-time", str(SCHEMATHESIS_MAX_TIME)],
            capture_output=True, text=True, env=env, timeout=SCHEMATHESIS_MAX_TIME + 300, cwd=tmp_path,
        )  # fmt: skip
    tail = run.stdout[-6000:] + run.stderr[-2000:]
    print(tail)
    assert run.returncode == 0, tail
    selected = re.search(r"Operations:\s+(\d+) selected / (\d+) total", run.stdout)
    # Every model's every route: /healthz, /openapi.json, 8 per model under /v1, the protocol's 8
    # fixed routes and 2 per protocol model.
    assert selected and selected[1] == selected[2] == str(2 + len(served) * 8 + 8 + 2 * len(index)), tail
    cases = re.search(r"(\d+) generated, (\d+) passed", run.stdout)
    assert cases and cases[1] == cases[2] and int(cases[1]) >= 500, tail  # every generated case ran and passed
