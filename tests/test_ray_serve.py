"""The Ray Serve deployment (serve/ray_serve.py): the Open Inference Protocol with requests
batched across clients, answering the SDK's bytes for each request alone, from two replicas on
a local Ray instance (2 CPUs, loopback only); the batching itself without Ray; its options,
builder arguments and command-line refusals."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

# The ray extra (scripts/test installs it); `pip install '.[dev]'` alone has no Ray: skipped there.
pytestmark = pytest.mark.ray
ray = pytest.importorskip("ray")
pytest.importorskip("ray.serve")
httpx = pytest.importorskip("httpx")
from ray import serve

import vaesdk
from vaesdk.base.errors import InvalidArgumentError, ModelNotFoundError
from vaesdk.serve import oip
from vaesdk.serve.settings import Limits
from vaesdk.serve.ray_serve import BATCH_HEADER, REPLICA_HEADER, Job, RayServeOptions, application, build_app, check_resources, compute_batch

ROOT = Path(__file__).resolve().parents[1]
TINY_AE = ROOT / "tests" / "data" / "tiny-ae"
HEADER = oip.HEADER
MAX_BODY = 1 << 20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def models():
    return {m.name: m for m in (vaesdk.load(name, device="cpu") for name in ("fashion-mnist", "emoji", TINY_AE))}


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False, logging_level="ERROR")
    yield
    serve.shutdown()
    ray.shutdown()


@pytest.fixture(scope="module")
def deployment(cluster, tmp_path_factory, monkeypatch_module):
    """Two replicas of fashion-mnist, emoji and the tiny autoencoder (given by a path relative to
    this process's working directory), batches of up to 8 that wait up to 0.1 s to fill, bodies
    of up to 1 MiB."""
    port = free_port()
    monkeypatch_module.chdir(ROOT / "tests")
    options = RayServeOptions(bundles=("fashion-mnist", "emoji", "data/tiny-ae"), num_replicas=2, max_batch_size=8,
                              batch_wait_timeout_s=0.1, allowed_hosts=("127.0.0.1",), limits=Limits(max_body_bytes=MAX_BODY))  # fmt: skip
    t0 = time.perf_counter()
    serve.start(http_options={"host": "127.0.0.1", "port": port}, logging_config={"log_level": "WARNING"})
    serve.run(application(options), name="vaesdk-test", route_prefix="/")
    print(f"deployed in {time.perf_counter() - t0:.1f} s")
    yield f"http://127.0.0.1:{port}"  # stopped with the cluster


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def tensor(name: str, array: np.ndarray) -> dict:
    datatype = {np.dtype(np.float32): "FP32", np.dtype(np.uint8): "UINT8", np.dtype(np.int64): "INT64"}[array.dtype]
    return {"name": name, "shape": list(array.shape), "datatype": datatype, "data": array.ravel().tolist()}


def outputs_of(response: httpx.Response) -> dict[str, np.ndarray]:
    """A protocol answer's outputs, JSON or binary (Inference-Header-Content-Length)."""
    assert response.status_code == 200, response.text[:300]
    size = int(response.headers.get(HEADER, len(response.content)))
    head, rest = json.loads(response.content[:size]), memoryview(response.content)[size:]
    arrays = {}
    for out in head["outputs"]:
        dt = oip.DATATYPES[out["datatype"]]
        if "parameters" in out:
            n = out["parameters"]["binary_data_size"]
            arrays[out["name"]], rest = np.frombuffer(rest[:n], dt).reshape(out["shape"]), rest[n:]
        else:
            arrays[out["name"]] = np.asarray(out["data"], dt).reshape(out["shape"])
    return arrays


def test_answers_are_the_sdk_bytes_from_both_replicas_with_requests_batched(deployment, models, fashion_test):
    """Decode (JSON), encode (binary outputs) and sample requests from 16 concurrent clients, of
    three models and many sizes: every answer equals the SDK's for that request alone, both
    replicas answer, and decode and encode requests were computed several to one SDK call."""
    rng = np.random.default_rng(7)
    fashion, emoji, ae = models["fashion-mnist"], models["emoji"], models["tiny-ae"]
    pools = {  # real images for the two bundled models; the tiny autoencoder takes any uint8 image
        fashion.name: fashion_test.images[:500],
        emoji.name: emoji.spec.to_batch(sorted((ROOT / "tests" / "data" / "emoji-inputs").glob("*.png"))),
        ae.name: rng.integers(0, 256, (50, *ae.image_shape), dtype=np.uint8),
    }
    requests = []  # (protocol model, body, the SDK's answer)
    for i in range(40):
        m = (fashion, fashion, emoji, ae)[i % 4]
        z = rng.standard_normal((int(rng.integers(1, 9)), m.latent_dim)).astype(np.float32)
        requests.append((f"{m.name}.decode", {"inputs": [tensor("latents", z)]}, {"images": m.decode(z)}))
    for i in range(24):
        m = (fashion, emoji, ae)[i % 3]
        images = pools[m.name][rng.choice(len(pools[m.name]), size=int(rng.integers(1, 5)))]
        posterior = m.encode(images)
        want = {"mean": posterior.mean, **({"logvar": posterior.logvar} if posterior.logvar is not None else {})}
        requests.append((f"{m.name}.encode", {"inputs": [tensor("images", images)], "parameters": {"binary_data_output": True}}, want))
    for seed in range(8):
        m = (fashion, emoji)[seed % 2]
        images, z = m.sample(seed + 1, seed=seed, return_latents=True)
        body = {"inputs": [tensor("n", np.array([seed + 1], np.int64)), tensor("seed", np.array([seed], np.int64))]}
        requests.append((f"{m.name}.sample", body, {"images": images, "latents": z, "seed": np.array([seed], np.int64)}))
    order = rng.permutation(len(requests))

    def send(i: int) -> tuple[int, httpx.Response]:
        name, body, _ = requests[i]
        return i, httpx.post(f"{deployment}/v2/models/{name}/infer", json=body, timeout=120)

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(send, order))
    batches: dict[str, list[int]] = {}
    for i, response in answers:
        name, _, want = requests[i]
        got = outputs_of(response)
        assert set(got) == set(want), name
        for key in want:
            assert got[key].dtype == want[key].dtype and got[key].shape == want[key].shape, (name, key)
            assert got[key].tobytes() == want[key].tobytes(), (name, key)
        batches.setdefault(name.split(".")[1], []).append(int(response.headers[BATCH_HEADER]))
    replicas = {r.headers[REPLICA_HEADER] for _, r in answers}
    assert len(replicas) == 2, replicas
    assert max(batches["decode"]) > 1 and max(batches["encode"]) > 1, batches
    assert set(batches["sample"]) == {1}, batches  # seeded: each alone


def test_the_protocol_routes_answer_as_in_vae_serve(deployment, models):
    meta = httpx.get(f"{deployment}/v2/models/emoji.decode", timeout=30).json()
    assert meta["inputs"] == [{"name": "latents", "datatype": "FP32", "shape": [-1, 128]}]
    index = httpx.post(f"{deployment}/v2/repository/index", timeout=30).json()
    assert [e["name"] for e in index] == list(oip.operations(models))  # the protocol models `vae serve` makes of these bundles
    bad = httpx.post(f"{deployment}/v2/models/fashion-mnist.decode/infer", json={"inputs": [tensor("latents", np.zeros((2, 3), np.float32))]}, timeout=30)
    assert bad.status_code == 400 and bad.json()["error"] == "input 'latents' has shape [2, 3]; it must be [-1, 64] (-1: any number of rows)"
    # The outer checks of `vae serve`, in each replica: the Host (allowed_hosts), the body limit, the origin rule.
    wrong_host = httpx.get(f"{deployment}/v2/models/emoji.decode", headers={"Host": "attacker.example"}, timeout=30)
    assert wrong_host.status_code == 400 and "attacker.example" in wrong_host.text and REPLICA_HEADER in wrong_host.headers
    big = httpx.post(f"{deployment}/v2/models/fashion-mnist.decode/infer", content=b" " * (MAX_BODY + 1), headers={"Content-Type": "application/json"}, timeout=30)
    assert big.status_code == 413 and str(MAX_BODY) in big.text
    body = {"inputs": [tensor("latents", np.zeros((1, 64), np.float32))]}
    other_site = httpx.post(f"{deployment}/v2/models/fashion-mnist.decode/infer", json=body, headers={"Origin": "http://evil.example"}, timeout=30)
    assert other_site.status_code == 403 and "evil.example" in other_site.text


def test_requests_beyond_the_queue_are_refused_with_503(deployment):
    """`max_queued_requests`: with one replica taking one request at a time and one place to
    wait, most of ten concurrent slow requests get a 503 that names the limit (a second
    application beside the first, at /bp, on no CPU of its own)."""
    options = RayServeOptions(bundles=("fashion-mnist",), max_batch_size=1, max_ongoing_requests=1, max_queued_requests=1, cpus_per_replica=0)
    serve.run(application(options), name="vaesdk-bp", route_prefix="/bp")
    try:
        body = {"inputs": [tensor("latents", np.random.default_rng(4).standard_normal((256, 64)).astype(np.float32))]}
        with ThreadPoolExecutor(10) as pool:
            answers = list(pool.map(lambda _: httpx.post(f"{deployment}/bp/v2/models/fashion-mnist.decode/infer", json=body, timeout=120), range(10)))
        statuses = sorted(r.status_code for r in answers)
        # How many get in depends on when each arrives; without the limit all ten would (256 places).
        assert set(statuses) == {200, 503} and statuses.count(503) >= 4, statuses
        assert all("max_queued_requests=1" in r.text for r in answers if r.status_code == 503)
    finally:
        serve.delete("vaesdk-bp")


def jobs_for(ops: dict[str, oip.Operation], rng: np.random.Generator, images: np.ndarray) -> list[Job]:
    """A mixed batch as replicas see it: decodes whose rows add up past the SDK's batch size of
    256 (so the joint call cuts its chunks elsewhere than each request alone), encodes, samples
    and scores of two models."""
    jobs = []
    for name, rows in [("fashion-mnist.decode", 200), ("emoji.decode", 3), ("fashion-mnist.decode", 100), ("fashion-mnist.decode", 1), ("emoji.decode", 70)]:
        op = ops[name]
        jobs.append(Job(op, {"latents": rng.standard_normal((rows, op.model.latent_dim)).astype(np.float32)}, {}))
    for start, rows in [(0, 5), (5, 130), (135, 200)]:
        jobs.append(Job(ops["fashion-mnist.encode"], {"images": images[start : start + rows]}, {}))
    jobs.append(Job(ops["tiny-ae.encode"], {"images": images[:7]}, {}))  # the same image shape, another model: alone
    for seed in (3, 4):  # scores with the same parameters: joined, the second's draws would be other ones
        jobs.append(Job(ops["fashion-mnist.sample"], {"n": np.array([4]), "seed": np.array([seed])}, {"temperature": 1.0}))
        jobs.append(Job(ops["fashion-mnist.score"], {"images": images[seed * 10 : seed * 10 + 6]}, {"k": 2, "seed": 5}))
    return jobs


def test_a_batch_answers_each_request_as_the_sdk_alone(models, fashion_test):
    """Without Ray: the joint SDK calls of one batch give every request the bytes of its own
    call, and say how many requests shared each call."""
    ops = oip.operations(models)
    jobs = jobs_for(ops, np.random.default_rng(0), fashion_test.images[:400])
    outcomes = compute_batch(jobs)
    for job, outcome in zip(jobs, outcomes):
        assert outcome.error is None, outcome.error
        alone = job.op.run(job.inputs, job.parameters)
        assert outcome.outputs.keys() == alone.keys()
        for key in alone:
            assert outcome.outputs[key].tobytes() == alone[key].tobytes(), (job.op.name, key)
    assert [o.batch for o in outcomes] == [3, 2, 3, 3, 2, 3, 3, 3, 1, 1, 1, 1, 1]


def test_requests_join_only_with_equal_parameters(models):
    """A row-wise operation with a parameter (a decode that scales its latents first): requests
    join only those with the same parameters."""

    class ScaledDecode(oip.Decode):
        def run(self, inputs, parameters):
            return super().run({"latents": inputs["latents"] * np.float32(parameters["scale"])}, {})

    op = ScaledDecode(models["fashion-mnist"], Limits())
    z = np.random.default_rng(2).standard_normal((4, 3, 64)).astype(np.float32)
    jobs = [Job(op, {"latents": z[i]}, {"scale": scale}) for i, scale in enumerate((1.0, 2.0, 1.0, 2.0))]
    outcomes = compute_batch(jobs)
    assert [o.batch for o in outcomes] == [2, 2, 2, 2]
    for job, outcome in zip(jobs, outcomes):
        assert outcome.outputs["images"].tobytes() == op.run(job.inputs, job.parameters)["images"].tobytes()


def test_a_bad_request_in_a_batch_gets_its_own_error(models):
    """A request that fails the SDK's checks (a NaN latent, here bypassing the router's own
    check) fails the joint call: the batch is computed again request by request, so only it
    gets the error and the others their answers."""
    op = oip.operations(models)["fashion-mnist.decode"]
    rng = np.random.default_rng(1)
    good = [rng.standard_normal((4, 64)).astype(np.float32) for _ in range(3)]
    bad = good[0].copy()
    bad[2, 5] = np.nan
    outcomes = compute_batch([Job(op, {"latents": z}, {}) for z in (good[0], bad, good[1], good[2])])
    assert isinstance(outcomes[1].error, InvalidArgumentError) and "finite" in str(outcomes[1].error)
    for z, outcome in zip((good[0], good[1], good[2]), (outcomes[0], outcomes[2], outcomes[3])):
        assert outcome.error is None and outcome.batch == 1
        assert outcome.outputs["images"].tobytes() == op.model.decode(z).tobytes()


@pytest.mark.parametrize(
    "options, message",
    [
        ({"num_replicas": 0}, "num_replicas must be in 1..1024, got 0"),
        ({"num_replicas": 2, "max_replicas": 4, "min_replicas": 1}, "num_replicas 2 and min/max_replicas are both given"),
        ({"max_replicas": 4}, "autoscaling needs both min_replicas and max_replicas, got None and 4"),
        ({"min_replicas": 3, "max_replicas": 2}, "min_replicas 3 is above max_replicas 2; make min_replicas <= max_replicas"),
        ({"target_ongoing_requests": 4}, "target_ongoing_requests 4 is for autoscaling; give min_replicas and max_replicas too"),
        ({"max_batch_size": 0}, "max_batch_size must be in 1..1024, got 0"),
        ({"batch_wait_timeout_s": -1}, "batch_wait_timeout_s must be in 0..10 seconds, got -1"),
        ({"max_batch_size": 32, "max_ongoing_requests": 8}, "max_ongoing_requests must be in 32..1048576 (at least max_batch_size, 32, or no batch can fill), got 8"),
        ({"device": "cuda:1"}, "device must be 'cpu' or 'cuda' (Ray gives each replica its GPUs), got 'cuda:1'"),
        ({"device": "cuda", "gpus_per_replica": 0}, "gpus_per_replica must be above 0 on cuda (and >= 0 on cpu), got 0"),
        ({"max_queued_requests": 0}, "max_queued_requests must be in 1..1048576 (or -1: no limit), got 0"),
        ({"token": "short"}, "token must be a string of at least 8 characters"),
        ({"bundles": ("fashion-mnist", "emoji", "fashion-mnist")}, "bundle 'fashion-mnist' is given twice; serve each bundle once"),
    ],
)
def test_bad_options_are_refused_naming_the_value_and_the_fix(options, message):
    with pytest.raises(InvalidArgumentError) as e:
        RayServeOptions(**{"bundles": ("fashion-mnist",), **options})
    assert str(e.value).startswith(message)


def test_an_unknown_bundle_is_refused_before_any_replica_starts():
    with pytest.raises(ModelNotFoundError, match="fashion-mnist"):  # the message lists the known models
        RayServeOptions(bundles=("fashion-mnits",))


def test_options_make_the_deployment_options(monkeypatch):
    fixed = RayServeOptions(bundles=("fashion-mnist",), num_replicas=3, max_batch_size=8).deployment_options()
    assert fixed == {"num_replicas": 3, "max_ongoing_requests": 16, "max_queued_requests": 256, "ray_actor_options": {"num_cpus": 1.0, "num_gpus": 0.0}}
    auto = RayServeOptions(bundles=("fashion-mnist",), min_replicas=0, max_replicas=4, target_ongoing_requests=6, device="cuda").deployment_options()
    assert auto["autoscaling_config"] == {"min_replicas": 0, "initial_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 6}
    assert "num_replicas" not in auto and auto["ray_actor_options"]["num_gpus"] == 1.0
    assert RayServeOptions().bundles == tuple(sorted(vaesdk.list_models(), key=lambda n: n != vaesdk.DEFAULT_MODEL))
    monkeypatch.chdir(TINY_AE.parent)
    assert RayServeOptions(bundles=("fashion-mnist", "./tiny-ae")).models == ("fashion-mnist", str(TINY_AE.resolve()))  # replicas have another working directory


def test_a_token_guards_every_route_but_the_health_checks(models):
    """The replicas' `authorize` in the protocol router, without Ray (Starlette's test client)."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from vaesdk.serve.ray_serve import _authorize

    async def run(request, op, inputs, parameters):
        return op.run(inputs, parameters)

    app = FastAPI()
    app.include_router(oip.router(oip.operations({"fashion-mnist": models["fashion-mnist"]}), run, _authorize("s3cret-token")))
    client = TestClient(app)
    assert client.get("/v2/health/live").status_code == 200
    refused = client.get("/v2/models/fashion-mnist.decode", headers={"Authorization": "Bearer wrong-token"})
    assert refused.status_code == 401 and refused.headers["WWW-Authenticate"] == "Bearer" and "Authorization: Bearer TOKEN" in refused.json()["error"]
    body = {"inputs": [tensor("latents", np.zeros((1, 64), np.float32))]}
    assert client.post("/v2/models/fashion-mnist.decode/infer", json=body).status_code == 401
    answer = client.post("/v2/models/fashion-mnist.decode/infer", json=body, headers={"Authorization": "Bearer s3cret-token"})
    assert answer.status_code == 200 and answer.json()["outputs"][0]["shape"] == [1, 28, 28, 1]


def test_replicas_that_the_cluster_cannot_place_are_refused():
    two = {"CPU": 2.0}
    check_resources(RayServeOptions(bundles=("fashion-mnist",), num_replicas=2), two)
    check_resources(RayServeOptions(bundles=("fashion-mnist",), min_replicas=0, max_replicas=8), two)  # starts with one
    with pytest.raises(InvalidArgumentError, match=r"^3 replica\(s\) of 1 CPU need 3 CPUs but the Ray cluster has 2; start fewer replicas or give each less \(cpus_per_replica\)$"):
        check_resources(RayServeOptions(bundles=("fashion-mnist",), num_replicas=3), two)
    with pytest.raises(InvalidArgumentError, match=r"^1 replica\(s\) of 1 GPU need 1 GPUs but the Ray cluster has 0; .* \(gpus_per_replica\); or serve on cpu$"):
        check_resources(RayServeOptions(bundles=("fashion-mnist",), device="cuda"), two)


def test_the_builder_reads_serve_run_arguments():
    app = build_app({"bundles": "fashion-mnist, emoji", "num_replicas": "2", "max_batch_size": "4", "batch_wait_timeout_s": "0.01", "allowed_hosts": "localhost,127.0.0.1"})
    assert type(app).__name__ == "Application"
    with pytest.raises(InvalidArgumentError, match=r"^num_replicas must be an integer, got 'two'$"):
        build_app({"num_replicas": "two"})
    with pytest.raises(InvalidArgumentError, match=r"^unknown argument 'replicas'; known: allowed_hosts, batch_wait_timeout_s, bundles, "):
        build_app({"replicas": "2"})


@pytest.mark.parametrize(
    "args, message",
    [
        (["fashion-mnits"], "error: unknown model 'fashion-mnits'"),
        (["fashion-mnist", "--replicas", "0"], "error: num_replicas must be in 1..1024, got 0"),
        (["--max-batch-size", "many"], "error: argument --max-batch-size: invalid int value: 'many'; see --help"),
    ],
)
def test_the_command_refuses_bad_arguments_in_one_line(args, message):
    r = subprocess.run([sys.executable, "-m", "vaesdk.serve.ray_serve", *args], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.startswith(message) and r.stderr.count("\n") == 1, r.stderr


def test_the_command_serves_and_stops_on_sigterm(cluster, models):
    """`python -m vaesdk.serve.ray_serve` on the test's Ray instance (its address), on its own
    port: more replicas than the instance has CPUs are refused; it answers the protocol, and
    SIGTERM removes its application and exits 0. (Runs last:
    it stops the module's deployment: the command starts Serve with its own port.)"""
    serve.shutdown()
    port = free_port()
    address = ray.get_runtime_context().gcs_address
    r = subprocess.run([sys.executable, "-m", "vaesdk.serve.ray_serve", "fashion-mnist", "--replicas", "3", "--address", address],
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == 2 and "error: 3 replica(s) of 1 CPU need 3 CPUs but the Ray cluster has 2;" in r.stderr, r.stderr[-500:]
    proc = subprocess.Popen(
        [sys.executable, "-m", "vaesdk.serve.ray_serve", "fashion-mnist", "--port", str(port), "--address", address, "--max-batch-size", "4"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        line = proc.stdout.readline()
        assert line.startswith(f"serving fashion-mnist over the Open Inference Protocol on http://127.0.0.1:{port}/v2 (1 replica(s), batches of up to 4)"), line
        z = np.random.default_rng(3).standard_normal((5, 64)).astype(np.float32)
        r = httpx.post(f"http://127.0.0.1:{port}/v2/models/fashion-mnist.decode/infer", json={"inputs": [tensor("latents", z)]}, timeout=60)
        assert outputs_of(r)["images"].tobytes() == models["fashion-mnist"].decode(z).tobytes()
        # A loopback --host answers to the loopback names only.
        assert httpx.get(f"http://127.0.0.1:{port}/v2/health/live", headers={"Host": "rebound.example"}, timeout=30).status_code == 400
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0 and out.strip() == "stopped"
        assert "vaesdk" not in serve.status().applications
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_ray_stays_an_optional_import():
    """`vae serve` never imports ray; without ray, this module says which extra to install."""
    code = "import sys, vaesdk.serve.app, vaesdk.serve.oip, vaesdk.serve.run; assert 'ray' not in sys.modules, 'ray imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
    blocked = "import sys; sys.modules['ray'] = None; "
    r = subprocess.run([sys.executable, "-c", blocked + "import vaesdk.serve.ray_serve"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and r.stderr.strip().splitlines()[-1].startswith(
        "vaesdk.base.errors.MissingDependencyError: ray[serve] is not installed; the Ray Serve deployment needs the ray extra: pip install '.[ray]'"
    )
    r = subprocess.run([sys.executable, "-c", blocked + "import runpy; runpy.run_module('vaesdk.serve.ray_serve', run_name='__main__')"],
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == 1 and r.stderr.startswith("error: ray[serve] is not installed;") and r.stderr.count("\n") == 1, r.stderr
