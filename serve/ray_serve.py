"""The Open Inference Protocol (v2) on Ray Serve: the /v2 routes of `vae serve` as a Ray Serve
deployment whose replicas batch requests together (the `ray` extra).

    python -m vaesdk.serve.ray_serve fashion-mnist --replicas 2 --port 8000
    serve run vaesdk.serve.ray_serve:build_app bundles=fashion-mnist num_replicas=2

Each replica loads the bundles once and answers through the protocol router of `vae serve`
(`oip.router`), so the same clients work against both; only the `run` step differs. Requests
that reach a replica within `batch_wait_timeout_s` of each other (up to `max_batch_size`) go to
one `@serve.batch` call. There, decode and encode requests of the same protocol model are
concatenated along axis 0 into one SDK call whose answers are split again; sample and score
requests (seeded, one random stream per request) are computed one by one. Each answer is the
SDK's for that request alone (tests/test_ray_serve.py), and names the replica that computed it
(`X-Vaesdk-Replica`) and how many requests shared its SDK call (`X-Vaesdk-Batch`).

Nothing imports this module but its users: importing vaesdk or vaesdk.serve never imports ray.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
from starlette.requests import Request

import vaesdk
from vaesdk.frontend import number, positive_int, resolve_bundle
from vaesdk.base.errors import InvalidArgumentError, MissingDependencyError, VaesdkError, install_hint

from . import oip
from .middleware import add_guards
from .served import require_token
from .settings import HOST, LOOPBACK_NAMES, PORT, Limits, bundled_names

try:
    from ray import serve
except ImportError:
    _MISSING = MissingDependencyError(f"ray[serve] is not installed; the Ray Serve deployment needs the ray extra: {install_hint('ray')}")
    if __name__ == "__main__":
        sys.exit(f"error: {_MISSING}")
    raise _MISSING from None

APP_NAME = "vaesdk"
REPLICA_HEADER = "X-Vaesdk-Replica"  # the replica that computed the answer
BATCH_HEADER = "X-Vaesdk-Batch"  # requests computed in the same SDK call as this one (1: alone)
TOKEN_ENV = "VAESDK_TOKEN"  # as `vae serve`
MAX_REPLICAS = 1024
MAX_BATCH = 1024
DEFAULT_MAX_BATCH = 16  # requests per batch
DEFAULT_BATCH_WAIT_S = 0.002  # how long a batch waits to fill


@dataclass(frozen=True)
class RayServeOptions:
    """How the deployment runs. Either a fixed `num_replicas` (default 1) or autoscaling between
    `min_replicas` and `max_replicas` (given together), aiming at `target_ongoing_requests` per
    replica. A replica takes up to `max_ongoing_requests` requests at once (default two batches'
    worth: one computing, one gathering); the deployment holds up to `max_queued_requests` more
    waiting for a replica and answers 503 beyond them. `max_batch_size` 1 turns batching off.
    `limits` bound each request as in `vae serve` (rows per request, body size); `allowed_hosts`
    (None: any) are the names the Host header may carry, and `token` (None: none) is required
    as `Authorization: Bearer TOKEN` on every route but the health checks."""

    bundles: tuple[str, ...] = ()  # names or bundle folders; none: every bundled model
    num_replicas: int | None = None
    min_replicas: int | None = None
    max_replicas: int | None = None
    target_ongoing_requests: float | None = None  # default: max_batch_size
    max_batch_size: int = DEFAULT_MAX_BATCH
    batch_wait_timeout_s: float = DEFAULT_BATCH_WAIT_S
    max_ongoing_requests: int | None = None  # per replica; default 2 * max_batch_size
    max_queued_requests: int = 256
    device: str = "cpu"  # "cpu" or "cuda" (one GPU per replica unless gpus_per_replica says)
    cpus_per_replica: float = 1.0  # Ray's num_cpus; onnxruntime gets as many threads (at least 1)
    gpus_per_replica: float | None = None  # Ray's num_gpus; default 1 on cuda, 0 on cpu
    limits: Limits = field(default_factory=Limits)
    allowed_hosts: tuple[str, ...] | None = None
    token: str | None = field(default=None, repr=False)
    models: tuple[str, ...] = field(default=(), init=False)  # the bundles as replicas load them

    def __post_init__(self) -> None:
        bundles = (self.bundles,) if isinstance(self.bundles, str) else self.bundles
        if not isinstance(bundles, (tuple, list)) or not all(isinstance(b, str) and b.strip() for b in bundles):
            raise InvalidArgumentError(f"bundles must be model names or bundle folders, got {self.bundles!r:.80}")
        setattr_ = object.__setattr__  # frozen: normalised once, here
        setattr_(self, "bundles", tuple(bundles) or tuple(bundled_names()))
        setattr_(self, "models", tuple(_replica_ref(b) for b in self.bundles))
        twice = next((b for b, ref in zip(self.bundles, self.models) if self.models.count(ref) > 1), None)
        if twice is not None:
            raise InvalidArgumentError(f"bundle {twice!r:.80} is given twice; serve each bundle once")
        if self.min_replicas is not None or self.max_replicas is not None:
            if self.num_replicas is not None:
                raise InvalidArgumentError(
                    f"num_replicas {self.num_replicas} and min/max_replicas are both given; give num_replicas for a fixed count, or min_replicas and max_replicas to autoscale"
                )
            if self.min_replicas is None or self.max_replicas is None:
                raise InvalidArgumentError(f"autoscaling needs both min_replicas and max_replicas, got {self.min_replicas} and {self.max_replicas}")
            positive_int("min_replicas", self.min_replicas, MAX_REPLICAS, minimum=0)
            positive_int("max_replicas", self.max_replicas, MAX_REPLICAS)
            if self.min_replicas > self.max_replicas:
                raise InvalidArgumentError(f"min_replicas {self.min_replicas} is above max_replicas {self.max_replicas}; make min_replicas <= max_replicas")
            if self.target_ongoing_requests is not None and number("target_ongoing_requests", self.target_ongoing_requests) <= 0:
                raise InvalidArgumentError(f"target_ongoing_requests must be above 0, got {self.target_ongoing_requests}")
        else:
            if self.target_ongoing_requests is not None:
                raise InvalidArgumentError(f"target_ongoing_requests {self.target_ongoing_requests} is for autoscaling; give min_replicas and max_replicas too")
            if self.num_replicas is not None:
                positive_int("num_replicas", self.num_replicas, MAX_REPLICAS)
        positive_int("max_batch_size", self.max_batch_size, MAX_BATCH)
        wait = number("batch_wait_timeout_s", self.batch_wait_timeout_s)
        if not 0 <= wait <= 10:
            raise InvalidArgumentError(f"batch_wait_timeout_s must be in 0..10 seconds, got {wait}")
        if self.max_ongoing_requests is not None:
            positive_int("max_ongoing_requests", self.max_ongoing_requests, 1 << 20, minimum=self.max_batch_size,
                         hint=f"(at least max_batch_size, {self.max_batch_size}, or no batch can fill)")  # fmt: skip
        if self.max_queued_requests != -1:
            positive_int("max_queued_requests", self.max_queued_requests, 1 << 20, hint="(or -1: no limit)")
        if self.device not in ("cpu", "cuda"):
            raise InvalidArgumentError(f"device must be 'cpu' or 'cuda' (Ray gives each replica its GPUs), got {self.device!r:.80}")
        if number("cpus_per_replica", self.cpus_per_replica) < 0:
            raise InvalidArgumentError(f"cpus_per_replica must be >= 0, got {self.cpus_per_replica}")
        if self.gpus_per_replica is not None:
            gpus = number("gpus_per_replica", self.gpus_per_replica)
            if gpus < 0 or (self.device == "cuda" and gpus == 0):
                raise InvalidArgumentError(f"gpus_per_replica must be above 0 on cuda (and >= 0 on cpu), got {self.gpus_per_replica}")
        if not isinstance(self.limits, Limits):
            raise InvalidArgumentError(f"limits must be a vaesdk.serve.Limits, got {type(self.limits).__name__}")
        if self.allowed_hosts is not None:
            hosts = (self.allowed_hosts,) if isinstance(self.allowed_hosts, str) else tuple(self.allowed_hosts)
            if not hosts or not all(isinstance(h, str) and h.strip() for h in hosts):
                raise InvalidArgumentError(f"allowed_hosts must be host names (or '*' for any), got {self.allowed_hosts!r:.80}")
            setattr_(self, "allowed_hosts", hosts)
        if self.token is not None and (not isinstance(self.token, str) or len(self.token) < 8):
            raise InvalidArgumentError("token must be a string of at least 8 characters")

    @property
    def threads(self) -> int:
        """onnxruntime's threads in each replica: its share of CPUs, at least one."""
        return max(1, int(self.cpus_per_replica))

    def deployment_options(self) -> dict[str, Any]:
        """The Ray Serve deployment options these settings make (`Deployment.options`)."""
        gpus = self.gpus_per_replica if self.gpus_per_replica is not None else (1.0 if self.device == "cuda" else 0.0)
        options: dict[str, Any] = {
            "max_ongoing_requests": self.max_ongoing_requests or 2 * self.max_batch_size,
            "max_queued_requests": self.max_queued_requests,
            "ray_actor_options": {"num_cpus": self.cpus_per_replica, "num_gpus": gpus},
        }
        if self.max_replicas is not None:
            options["autoscaling_config"] = {
                "min_replicas": self.min_replicas,
                "initial_replicas": max(1, self.min_replicas or 0),
                "max_replicas": self.max_replicas,
                "target_ongoing_requests": self.target_ongoing_requests or self.max_batch_size,
            }
        else:
            options["num_replicas"] = self.num_replicas or 1
        return options


def _replica_ref(bundle: str) -> str:
    """What a replica passes to vaesdk.load: a bundled name as it is, a folder as an absolute
    path (replicas do not share this process's working directory). Checked here, so a wrong
    name fails at once, listing the known ones, instead of in every replica."""
    return bundle if bundle in vaesdk.list_models() else str(resolve_bundle(bundle).resolve())


# ---- batching: the work of one @serve.batch call -------------------------------------------

@dataclass
class Job:
    """One protocol request as `run` receives it: parsed and checked by the router."""

    op: oip.Operation
    inputs: dict[str, np.ndarray]
    parameters: dict[str, Any]


@dataclass
class Outcome:
    outputs: dict[str, np.ndarray] | None = None
    error: Exception | None = None
    batch: int = 1  # requests computed in the same SDK call


def _group_key(job: Job) -> tuple | None:
    """Jobs with equal keys can be computed by one SDK call: a row-wise operation (the same
    object), the same parameters, and inputs of the same names, dtypes and shapes but for their
    number of rows, which is the same for every input of a job. None: the job runs alone."""
    # Row for row, nothing drawn at random (decode, encode): requests may be joined along axis 0.
    if not job.op.row_wise(job.parameters) or not job.inputs:
        return None
    arrays = list(job.inputs.values())
    if not all(isinstance(v, np.ndarray) and v.ndim >= 1 and v.shape[0] == arrays[0].shape[0] for v in arrays):
        return None
    try:
        params = json.dumps(job.parameters, sort_keys=True)
    except (TypeError, ValueError):
        return None
    return (id(job.op), params, tuple(sorted((name, v.dtype.str, v.shape[1:]) for name, v in job.inputs.items())))


def _alone(job: Job) -> Outcome:
    try:
        return Outcome(outputs=job.op.run(job.inputs, job.parameters))
    except Exception as e:  # the request's own error, answered to it alone
        return Outcome(error=e)


def _together(jobs: list[Job]) -> list[Outcome] | None:
    """One SDK call for all of `jobs`, its answers split by rows; None when the call fails or
    its answers are not row for row (then each job runs alone and meets its own error)."""
    rows = [next(iter(j.inputs.values())).shape[0] for j in jobs]
    inputs = {name: np.concatenate([j.inputs[name] for j in jobs], axis=0) for name in jobs[0].inputs}
    try:
        outputs = jobs[0].op.run(inputs, jobs[0].parameters)
    except Exception:
        return None
    if not all(isinstance(v, np.ndarray) and v.ndim >= 1 and v.shape[0] == sum(rows) for v in outputs.values()):
        return None
    cuts = np.cumsum(rows)[:-1]
    parts = {name: np.split(v, cuts, axis=0) for name, v in outputs.items()}
    return [Outcome(outputs={name: parts[name][i] for name in outputs}, batch=len(jobs)) for i in range(len(jobs))]


def compute_batch(jobs: Sequence[Job]) -> list[Outcome]:
    """The answers to one batch of requests, in order: row-wise requests that share a
    protocol model, parameters and row shapes in one SDK call, the others one by one. A
    group whose joint call fails is computed again request by request, so a bad request gets
    its own error and never another's."""
    outcomes: list[Outcome | None] = [None] * len(jobs)
    groups: dict[tuple, list[int]] = {}
    for i, job in enumerate(jobs):
        key = _group_key(job)
        if key is None:
            outcomes[i] = _alone(job)
        else:
            groups.setdefault(key, []).append(i)
    for members in groups.values():
        joint = _together([jobs[i] for i in members]) if len(members) > 1 else None
        for n, i in enumerate(members):
            outcomes[i] = joint[n] if joint is not None else _alone(jobs[i])
    return outcomes  # type: ignore[return-value]


# ---- the deployment -------------------------------------------------------------------------

# The replica being constructed in this process (one replica per Ray actor): Ray Serve builds
# its ASGI app with `_asgi_app`, which takes no arguments, right after the replica's __init__.
_constructing: Replica | None = None


class _Headers:
    """ASGI middleware: the replica's id, and the request's batch (set by `Replica.run`), on every answer."""

    def __init__(self, app: Any, replica: str):
        self.app, self.replica = app, replica.encode()

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                extra = [(REPLICA_HEADER.lower().encode(), self.replica)]
                batch = scope.get("state", {}).get("vaesdk_batch")
                if batch is not None:
                    extra.append((BATCH_HEADER.lower().encode(), str(batch).encode()))
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _authorize(token: str) -> Callable[[Request], None]:
    """The router's guard (a FastAPI dependency of the request alone, so nothing else of it
    can be read from the query): the service's bearer-token check."""

    def authorize(request: Request) -> None:
        require_token(request, token)

    return authorize


def _asgi_app() -> Any:
    """The replica's app: the protocol's routes over its operations, computed by its batches,
    behind the same body limit, same-origin rule and Host check as `vae serve`."""
    from fastapi import FastAPI

    replica = _constructing
    if replica is None:
        raise RuntimeError("the deployment's app is built by a replica, right after its __init__; deploy it with application(...) or build_app")
    options = replica.options
    app = FastAPI(title="vaesdk on Ray Serve", version=vaesdk.__version__, docs_url=None, redoc_url=None)
    app.include_router(oip.router(replica.ops, replica.run, _authorize(options.token) if options.token else None))
    add_guards(app, options.limits.max_body_bytes, [], list(options.allowed_hosts) if options.allowed_hosts is not None else None)
    return _Headers(app, replica.replica_id)


class Replica:
    """One replica: the bundles loaded once, the protocol's operations over them, and the
    batch queue every inference request goes through."""

    def __init__(self, options: RayServeOptions):
        global _constructing
        self.options = options
        models = [vaesdk.load(ref, device=options.device, threads=options.threads) for ref in options.models]
        self.models = {m.name: m for m in models}
        if len(self.models) != len(models):
            raise InvalidArgumentError(f"two of the bundles {', '.join(options.bundles)} have the same name; serve each name once")
        self.ops = oip.operations(self.models, options.limits)
        self.replica_id = serve.get_replica_context().replica_id.unique_id
        # One batch queue per process, and one replica per process: these set this replica's.
        self._batch.set_max_batch_size(options.max_batch_size)
        self._batch.set_batch_wait_timeout_s(options.batch_wait_timeout_s)
        _constructing = self

    async def run(self, request: Request, op: oip.Operation, inputs: dict[str, np.ndarray], parameters: dict[str, Any]) -> dict[str, np.ndarray]:
        """`oip.router`'s run step: the request joins this replica's next batch."""
        outcome: Outcome = await self._batch(Job(op, inputs, parameters))
        request.state.vaesdk_batch = outcome.batch
        if outcome.error is not None:
            raise outcome.error
        return outcome.outputs  # type: ignore[return-value]

    @serve.batch(max_batch_size=DEFAULT_MAX_BATCH, batch_wait_timeout_s=DEFAULT_BATCH_WAIT_S)  # set from the options in __init__
    async def _batch(self, jobs: list[Job]) -> list[Outcome]:
        # The SDK calls block: off the replica's event loop, which keeps gathering the next batch.
        return await asyncio.to_thread(compute_batch, jobs)


# The deployment. The class keeps its own name in this module, so Ray pickles it by reference:
# in a replica, its __init__ and `_asgi_app` then share this module's globals.
VaeDeployment = serve.deployment(name="VaeDeployment")(serve.ingress(_asgi_app)(Replica))


def check_resources(options: RayServeOptions, resources: dict[str, float]) -> None:
    """Refuse a deployment whose first replicas cannot all be placed on a cluster with
    `resources` (`ray.cluster_resources()`): Ray would wait for them without end."""
    replicas = (options.num_replicas or 1) if options.max_replicas is None else max(1, options.min_replicas or 0)
    gpus = options.deployment_options()["ray_actor_options"]["num_gpus"]
    for kind, each, fix in (("CPU", options.cpus_per_replica, "cpus_per_replica"), ("GPU", gpus, "gpus_per_replica")):
        have = resources.get(kind, 0.0)
        if each * replicas > have + 1e-9:
            extra = "; or serve on cpu" if kind == "GPU" else ""
            raise InvalidArgumentError(
                f"{replicas} replica(s) of {each:g} {kind} need {each * replicas:g} {kind}s but the Ray cluster has {have:g}; "
                f"start fewer replicas or give each less ({fix}){extra}"
            )


def application(options: RayServeOptions | None = None) -> Any:
    """The Ray Serve application: `serve.run(application(RayServeOptions(...)), route_prefix="/")`."""
    options = options or RayServeOptions()
    return VaeDeployment.options(**options.deployment_options()).bind(options)


# `serve run vaesdk.serve.ray_serve:build_app key=value ...`: each key a field of RayServeOptions.
_INTS = {"num_replicas", "min_replicas", "max_replicas", "max_batch_size", "max_ongoing_requests", "max_queued_requests"}
_FLOATS = {"target_ongoing_requests", "batch_wait_timeout_s", "cpus_per_replica", "gpus_per_replica"}
_LISTS = {"bundles", "allowed_hosts"}  # separated by commas


def build_app(args: dict[str, str]) -> Any:
    """Ray Serve's application builder: `serve run vaesdk.serve.ray_serve:build_app
    bundles=fashion-mnist,emoji num_replicas=2 max_batch_size=32`. Values are strings, lists
    separated by commas; the token, when none is given, is read from VAESDK_TOKEN."""
    known = {f.name for f in fields(RayServeOptions) if f.init and f.name != "limits"}
    values: dict[str, Any] = {}
    for key, raw in dict(args).items():
        if key not in known:
            raise InvalidArgumentError(f"unknown argument {key!r:.80}; known: {', '.join(sorted(known))}")
        text = str(raw).strip()
        if key in _LISTS:
            values[key] = tuple(v.strip() for v in text.split(",") if v.strip())
        elif key in _INTS or key in _FLOATS:
            kind = int if key in _INTS else float
            try:
                values[key] = kind(text)
            except ValueError:
                raise InvalidArgumentError(f"{key} must be {'an integer' if kind is int else 'a number'}, got {text!r:.80}") from None
        else:
            values[key] = text
    values.setdefault("token", os.environ.get(TOKEN_ENV) or None)
    return application(RayServeOptions(**values))


# ---- the command ------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]  # one line, like every other refusal
        self.exit(2, f"error: {message}; see --help\n")


def _parser() -> argparse.ArgumentParser:
    d = {f.name: f.default for f in fields(RayServeOptions)}
    p = _Parser(prog="python -m vaesdk.serve.ray_serve", description=__doc__.splitlines()[0])
    p.add_argument("bundles", nargs="*", metavar="BUNDLE", help="model names or bundle folders (default: every bundled model)")
    p.add_argument("--replicas", type=int, dest="num_replicas", help="a fixed number of replicas (default 1)")
    p.add_argument("--min-replicas", type=int, help="autoscale: at least this many replicas (with --max-replicas)")
    p.add_argument("--max-replicas", type=int, help="autoscale: at most this many replicas")
    p.add_argument("--target-ongoing-requests", type=float, help="autoscale: requests per replica to aim at (default --max-batch-size)")
    p.add_argument("--max-batch-size", type=int, default=d["max_batch_size"], help="requests per batch; 1 turns batching off (default %(default)s)")
    p.add_argument("--batch-wait-timeout-s", type=float, default=d["batch_wait_timeout_s"], help="seconds a batch waits to fill (default %(default)s)")
    p.add_argument("--max-ongoing-requests", type=int, help="requests a replica takes at once (default 2 x --max-batch-size)")
    p.add_argument("--max-queued-requests", type=int, default=d["max_queued_requests"], help="requests waiting for a replica; beyond them, 503 (default %(default)s)")
    p.add_argument("--device", default=d["device"], help="cpu or cuda: where replicas compute (default %(default)s)")
    p.add_argument("--cpus-per-replica", type=float, default=d["cpus_per_replica"], help="Ray CPUs and onnxruntime threads per replica (default %(default)s)")
    p.add_argument("--gpus-per-replica", type=float, help="Ray GPUs per replica (default 1 with --device cuda)")
    p.add_argument("--host", default=HOST, help="where Ray Serve's HTTP proxy listens (default %(default)s: this machine only)")
    p.add_argument("--port", type=int, default=PORT, help="(default %(default)s)")
    p.add_argument("--timeout", type=float, default=Limits().timeout_s, help="seconds a request may take, waiting included; then Ray Serve answers 408 (default %(default)s)")
    p.add_argument("--allowed-host", action="append", dest="allowed_hosts", help="a name the Host header may carry; repeat it (default: the loopback names on a loopback --host, else any)")
    p.add_argument("--token", help=f"require 'Authorization: Bearer TOKEN' (or set {TOKEN_ENV})")
    p.add_argument("--address", default="auto", help="the Ray cluster: auto (this machine's, or else a new local one), head:6379 or ray://head:10001 (default %(default)s)")
    return p


def _last_line(e: BaseException) -> str:
    """The line of a Ray error that says what failed (its text ends with the cause)."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return (lines[-1] if lines else type(e).__name__)[:300]


def main(argv: Sequence[str] | None = None) -> int:
    args = vars(_parser().parse_args(argv))
    host, port, timeout, address = args.pop("host"), args.pop("port"), args.pop("timeout"), args.pop("address")
    if args["allowed_hosts"] is None and host.strip("[]") in LOOPBACK_NAMES:
        args["allowed_hosts"] = list(LOOPBACK_NAMES)  # a loopback service answers to its loopback names only (against DNS rebinding)
    args["token"] = args["token"] or os.environ.get(TOKEN_ENV) or None
    shown = f"[{host}]" if ":" in host else host
    try:
        positive_int("--port", port, 65535)
        if number("--timeout", timeout) <= 0:
            raise InvalidArgumentError(f"--timeout must be above 0 seconds, got {timeout}")
        options = RayServeOptions(**{**args, "bundles": tuple(args["bundles"])})
    except VaesdkError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    import ray

    from vaesdk.jobs.ray import connect

    try:
        connect(address)
        check_resources(options, ray.cluster_resources())
        try:
            serve.start(http_options={"host": host, "port": port, "request_timeout_s": timeout})
        except Exception as e:  # Ray's errors carry the cause in their last line
            raise RuntimeError(f"Ray Serve cannot listen on {shown}:{port} ({_last_line(e)}); choose another --port or --host") from None
        try:
            serve.run(application(options), name=APP_NAME, route_prefix="/")
        except Exception as e:
            raise RuntimeError(f"the deployment did not start ({_last_line(e)}); its replicas' logs are in Ray's session folder, logs/serve/") from None
    except (VaesdkError, RuntimeError, KeyboardInterrupt) as e:
        if not isinstance(e, KeyboardInterrupt):
            print(f"error: {e}", file=sys.stderr)
        ray.shutdown()  # stops the local instance when this command started it
        return 130 if isinstance(e, KeyboardInterrupt) else 2 if isinstance(e, VaesdkError) else 1
    scale = f"{options.min_replicas}..{options.max_replicas} replicas" if options.max_replicas else f"{options.num_replicas or 1} replica(s)"
    print(f"serving {', '.join(options.bundles)} over the Open Inference Protocol on http://{shown}:{port}/v2 "
          f"({scale}, batches of up to {options.max_batch_size}){'; token required' if options.token else ''}", flush=True)  # fmt: skip
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(3600):
        pass
    serve.delete(APP_NAME)  # on a cluster that was running before, the rest of Serve stays
    ray.shutdown()  # stops the local instance when this command started it
    print("stopped", flush=True)
    return 0


if __name__ == "__main__":
    # Run from the module under its package name, so that Ray pickles the deployment by
    # reference (as `serve run` does), not as a class of `__main__`.
    from vaesdk.serve.ray_serve import main as _main

    sys.exit(_main())
