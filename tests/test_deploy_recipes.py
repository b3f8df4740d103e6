"""The KServe recipe: deploy/kserve/Dockerfile and deploy/kserve/inferenceservice.yaml.

What can be checked without a container runtime or a cluster: the image's build steps and
user, the InferenceService's fields (and, with KServe's own models in .venv-clients, that
every field is one KServe and Kubernetes know), and the command the container runs: started
here exactly as written, on the loopback address and a free port, it must serve, and the
probes' paths must answer and be in the service's OpenAPI document."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from fnmatch import fnmatch
from pathlib import Path

import httpx
import pytest
import yaml

import vaesdk
from webserver import free_port

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "deploy" / "kserve" / "Dockerfile"
MANIFEST = ROOT / "deploy" / "kserve" / "inferenceservice.yaml"
CLIENTS_PYTHON = ROOT / ".venv-clients" / "bin" / "python"
PORT = 8080
PROBES = {"readinessProbe": "/v2/health/ready", "livenessProbe": "/v2/health/live"}


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order: comments dropped, continuation lines joined."""
    out, current = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        if line.strip().startswith("#") or not line.strip():
            continue
        current += line.rstrip()
        if current.endswith("\\"):
            current = current[:-1] + " "
            continue
        keyword, _, rest = current.strip().partition(" ")
        out.append((keyword.upper(), rest.strip()))
        current = ""
    assert not current, "the Dockerfile ends inside a continued line"
    return out


def exec_form(instruction: str) -> list[str]:
    """ENTRYPOINT's or CMD's JSON array: the exec form, so that `vae` is the container's first
    process and gets SIGTERM (the service's graceful shutdown), which a shell form would not pass on."""
    (value,) = [rest for keyword, rest in dockerfile() if keyword == instruction]
    args = json.loads(value)
    assert isinstance(args, list) and all(isinstance(a, str) for a in args), f"{instruction} must be a JSON array of strings"
    return args


def inference_service() -> dict:
    docs = list(yaml.safe_load_all(MANIFEST.read_text()))
    assert len(docs) == 1, "one InferenceService per file"
    return docs[0]


def container() -> dict:
    (c,) = inference_service()["spec"]["predictor"]["containers"]
    return c


def option(args: list[str], name: str) -> str:
    """The value of an option that appears exactly once in a command line."""
    where = [i for i, a in enumerate(args) if a == name]
    assert len(where) == 1 and where[0] + 1 < len(args), f"{name} must appear once, with a value, in {args}"
    return args[where[0] + 1]


# ---- the image ---------------------------------------------------------------------------------


def test_the_image_installs_the_wheel_with_the_serve_extra_on_python_3_11_slim():
    steps = dockerfile()
    froms = [rest for keyword, rest in steps if keyword == "FROM"]
    assert froms == ["python:3.11-slim"]
    (copy,) = [rest for keyword, rest in steps if keyword == "COPY"]
    source, destination = copy.split()
    # The glob takes the wheel `python -m build --wheel` names for this version.
    assert fnmatch(f"vaesdk-{vaesdk.__version__}-py3-none-any.whl", source) and not fnmatch("vaesdk-0.1.0.tar.gz", source)
    (run,) = [rest for keyword, rest in steps if keyword == "RUN"]
    assert re.search(r'pip install "\$1\[serve\]"', run) and destination.rstrip("/") in run
    assert '[ "$#" -ne 1 ]' in run  # exactly one wheel in the context, or the build stops with a message


def test_the_image_runs_as_a_numeric_non_root_user_it_creates():
    steps = dockerfile()
    users = [(i, rest) for i, (keyword, rest) in enumerate(steps) if keyword == "USER"]
    assert users, "the image must not run as root"
    index, user = users[-1]
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) != 0, f"USER {user}: a numeric uid other than 0, so runAsNonRoot can check it"
    assert all(keyword != "RUN" for keyword, _ in steps[index:]), "nothing runs as root after USER"
    (run,) = [rest for keyword, rest in steps if keyword == "RUN"]
    assert f"useradd --create-home --uid {uid}" in run  # a home: Python and onnxruntime may write there
    if gid:
        assert gid.isdigit() and int(gid) != 0 and f"groupadd --gid {gid}" in run and f"--gid {gid}" in run.split("useradd", 1)[1]


def test_the_entrypoint_serves_on_every_interface_at_the_exposed_port():
    entry = exec_form("ENTRYPOINT")
    assert entry[:2] == ["vae", "serve"]
    assert option(entry, "--host") == "0.0.0.0" and option(entry, "--port") == str(PORT)
    expose = [rest for keyword, rest in dockerfile() if keyword == "EXPOSE"]
    assert expose == [str(PORT)]
    assert exec_form("CMD") == []  # every bundled model unless the container's args say otherwise


# ---- the InferenceService ----------------------------------------------------------------------


def quantity(value: str | int | float) -> float:
    """A Kubernetes resource quantity as a number (the suffixes the recipe may use)."""
    text = str(value)
    suffixes = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6, "G": 1e9}
    match = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", text)
    assert match and (match.group(2) in suffixes or not match.group(2)), f"not a resource quantity: {text!r}"
    return float(match.group(1)) * suffixes.get(match.group(2), 1)


def test_the_inference_service_has_what_kserve_needs_for_a_custom_predictor():
    isvc = inference_service()
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1" and isvc["kind"] == "InferenceService"
    name = isvc["metadata"]["name"]
    assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name) and len(name) <= 63, f"{name!r} is not a DNS-1035 label"
    predictor = isvc["spec"]["predictor"]
    assert "model" not in predictor, "a custom container, not a ServingRuntime's model"
    assert 1 <= predictor["minReplicas"] <= predictor["maxReplicas"]
    c = container()
    assert c["name"] == "kserve-container"
    assert re.fullmatch(r"[^\s:]+(:[0-9]+)?/[^\s:]+:[\w.-]+", c["image"]), "an image in a registry, with a tag"
    (port,) = c["ports"]  # Knative routes to one port
    assert port["containerPort"] == PORT and port.get("protocol", "TCP") == "TCP" and port.get("name", "http1") == "http1"


def test_the_probes_are_the_protocols_health_routes_on_the_served_port():
    c = container()
    for probe, path in PROBES.items():
        get = c[probe]["httpGet"]
        assert get == {"path": path, "port": PORT}, probe
        assert c[probe]["timeoutSeconds"] >= 1 and c[probe]["periodSeconds"] >= c[probe]["timeoutSeconds"]


def test_the_resources_request_no_more_than_their_limits():
    resources = container()["resources"]
    for kind in ("cpu", "memory"):
        assert 0 < quantity(resources["requests"][kind]) <= quantity(resources["limits"][kind]), kind
    # The bundled models and the server fit well within the memory asked for.
    assert quantity(resources["requests"]["memory"]) >= 512 * 2**20


def test_the_pod_runs_as_non_root_like_the_image():
    security = container()["securityContext"]
    assert security["runAsNonRoot"] is True and security["allowPrivilegeEscalation"] is False


# ---- the command the container runs, started here ------------------------------------------------


def local(args: list[str], port: int) -> list[str]:
    """The container's command line on this machine: the loopback address and a free port in
    place of 0.0.0.0 and 8080, nothing else changed; `vae` from this environment."""
    args = list(args)
    args[args.index("--host") + 1] = "127.0.0.1"
    args[args.index("--port") + 1] = str(port)
    vae = shutil.which(args[0], path=str(Path(sys.executable).parent))
    assert vae, f"no `{args[0]}` console script beside {sys.executable}: pip install -e '.[dev]'"
    return [vae, *args[1:]]


def start(args: list[str], env: dict[str, str] | None = None) -> Iterator[tuple[subprocess.Popen, str]]:
    port = free_port()
    log = tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen(local(args, port), stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300  # the imports and model loads on a loaded machine
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                raise AssertionError(f"{' '.join(args)} did not serve (exit {proc.poll()}): {log.read()[-2000:]}")
            try:
                if httpx.get(f"{base}/healthz", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        yield proc, base
    finally:
        if proc.poll() is None:
            proc.terminate()  # SIGTERM, as Kubernetes stops a pod
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()


TOKEN = "a-token-from-the-secret"


@pytest.fixture(scope="module")
def deployed() -> Iterator[tuple[subprocess.Popen, str]]:
    """The InferenceService's command: the image's ENTRYPOINT with the container's args in place
    of CMD, and the container's environment with its (optional) secret present."""
    env = {e["name"]: e.get("value", TOKEN) for e in container().get("env", [])}
    assert "VAESDK_TOKEN" in env  # the secret's variable is the one `vae serve` reads
    yield from start(exec_form("ENTRYPOINT") + container().get("args", exec_form("CMD")), env)


def test_the_deployed_command_serves_the_models_it_names(deployed):
    _, base = deployed
    args = container()["args"]
    named = [args[i + 1] for i, a in enumerate(args) if a in ("--model", "-m")]
    assert httpx.get(f"{base}/v1/models", timeout=30).status_code == 401  # the secret's token is in force
    r = httpx.get(f"{base}/v1/models", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
    assert r.status_code == 200, r.text[:300]
    assert [m["name"] for m in r.json()["models"]] == named


def test_the_images_own_command_serves_every_bundled_model():
    server = start(exec_form("ENTRYPOINT") + exec_form("CMD"))
    _, base = next(server)
    try:
        r = httpx.get(f"{base}/v1/models", timeout=30)
        assert r.status_code == 200, r.text[:300]
        assert sorted(m["name"] for m in r.json()["models"]) == sorted(vaesdk.list_models())
    finally:
        server.close()


def test_the_probes_answer_and_are_in_the_openapi_document(deployed):
    # Kubernetes' probes send no token: with the secret present they must still answer 200.
    _, base = deployed
    paths = httpx.get(f"{base}/openapi.json", timeout=30).json()["paths"]
    for probe, path in PROBES.items():
        assert "get" in paths.get(path, {}), f"{probe} {path} is not a GET route of the served OpenAPI document"
        r = httpx.get(f"{base}{path}", timeout=30)
        assert r.status_code == 200, f"{probe} {path} answered {r.status_code}: {r.text[:200]}"


# ---- KServe's and Kubernetes' own models of the resource -----------------------------------------

STRICT = r"""
import json, sys
import yaml
import kserve.models as kserve_models
import kubernetes.client.models as k8s_models

PRIMITIVES = {"str": str, "int": int, "bool": bool, "float": (int, float), "object": object}
problems = []


def model_class(type_name):
    return getattr(kserve_models, type_name, None) or getattr(k8s_models, type_name, None)


def build(value, type_name, where):
    # The generated models: every key must be one of the class's fields, recursively.
    if type_name.startswith("list["):
        if not isinstance(value, list):
            problems.append(f"{where}: expected a list, got {value!r}")
            return None
        return [build(v, type_name[5:-1], f"{where}[{i}]") for i, v in enumerate(value)]
    if type_name.startswith("dict("):
        if not isinstance(value, dict):
            problems.append(f"{where}: expected a mapping, got {value!r}")
            return None
        inner = type_name[5:-1].split(", ", 1)[1]
        return {k: build(v, inner, f"{where}.{k}") for k, v in value.items()}
    cls = model_class(type_name)
    if cls is None:
        want = PRIMITIVES.get(type_name, object)
        if not isinstance(value, want) or (type_name == "int" and isinstance(value, bool)):
            problems.append(f"{where}: expected {type_name}, got {value!r}")
        return value
    if not isinstance(value, dict):
        problems.append(f"{where}: expected a {type_name} mapping, got {value!r}")
        return None
    fields = {json_key: attr for attr, json_key in cls.attribute_map.items()}
    kwargs = {}
    for key, v in value.items():
        if key not in fields:
            problems.append(f"{where}.{key}: not a field of {type_name}")
            continue
        kwargs[fields[key]] = build(v, cls.openapi_types[fields[key]], f"{where}.{key}")
    try:
        return cls(**kwargs)  # the generated setters refuse missing required fields
    except (TypeError, ValueError) as e:
        problems.append(f"{where}: {e}")
        return None


with open(sys.argv[1], encoding="utf-8") as f:
    build(yaml.safe_load(f), "V1beta1InferenceService", "")
print(json.dumps(problems))
"""


def kserve_problems(path: Path) -> list[str]:
    if not CLIENTS_PYTHON.exists():
        pytest.fail(f"{CLIENTS_PYTHON} is missing: make it with scripts/test (tests/protocol-clients.txt)")
    done = subprocess.run([str(CLIENTS_PYTHON), "-c", STRICT, str(path)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


@pytest.mark.clients
def test_every_field_is_one_kserve_and_kubernetes_know():
    assert kserve_problems(MANIFEST) == []


@pytest.mark.clients
def test_the_field_check_catches_a_misspelt_or_missing_field(tmp_path):
    # The check above would pass anything if the walk ignored what it does not know.
    text = MANIFEST.read_text()
    misspelt = tmp_path / "misspelt.yaml"
    misspelt.write_text(text.replace("readinessProbe:", "readinesProbe:"))
    assert any("readinesProbe: not a field of V1Container" in p for p in kserve_problems(misspelt))
    no_predictor = tmp_path / "no-predictor.yaml"
    isvc = yaml.safe_load(text)
    isvc["spec"] = {"predictr": isvc["spec"]["predictor"]}
    no_predictor.write_text(yaml.safe_dump(isvc))
    problems = kserve_problems(no_predictor)
    assert any("predictr: not a field" in p for p in problems) and any("`predictor`, must not be `None`" in p for p in problems)
