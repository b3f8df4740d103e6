"""The service's settings and their defaults, in one place: where `vae serve` listens, what
one request may ask for, how long a request may take to arrive, how long shutdown waits, and
which models it serves when given none.

No third-party import here: `vae serve --help` shows these defaults without loading the
server stack (FastAPI, uvicorn), which only the serve extra installs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

HOST = "127.0.0.1"  # loopback: the default answers this machine only
PORT = 8000
# In-flight requests get this long to finish after SIGTERM/Ctrl-C; new ones are refused.
GRACEFUL_SHUTDOWN_S = 30
LOOPBACK_NAMES = ["localhost", "127.0.0.1", "::1"]


@dataclass(frozen=True)
class Limits:
    """What one request may ask for. Every refusal names the limit it hit."""

    max_body_bytes: int = 16 * 1024 * 1024  # a whole request, uploads included
    # A JSON body: its parse holds the interpreter (threads included) for as long as it takes,
    # so it is bounded well below max_body_bytes; the largest request the limits allow (256
    # latents of 512 numbers) takes under 3 MiB.
    max_json_bytes: int = 4 * 1024 * 1024
    max_image_pixels: int = 4_000_000  # per uploaded image, read from its header before decoding
    max_images: int = 64  # uploads per request
    max_n: int = 256  # sample: images per request
    max_latents: int = 256  # decode: latents per request
    max_k: int = 1000  # score: importance samples
    workers: int = 2  # requests computed at once
    queue: int = 32  # requests waiting for a worker; beyond that, 503 (32 polite clients: none, docs/service.md)
    timeout_s: float = 60.0  # per request, waiting included; beyond that, 504


@dataclass(frozen=True)
class Deadlines:
    """How long a request may take to arrive, and how many connections may be open
    (enforced by serve/deadlines.py)."""

    header_timeout_s: float = 10.0  # headers complete within this, from the request's first byte
    body_timeout_s: float = 30.0  # the whole body within this (+ 1 s per body_min_rate bytes)
    body_min_rate: int = 64 * 1024  # bytes/s that extend the body deadline; 0: a fixed deadline
    max_connections: int = 1000  # open connections; over it, the longest-arriving one is closed


@dataclass
class ServeConfig:
    limits: Limits = field(default_factory=Limits)
    token: str | None = None  # bearer token required on /v1/*, when set
    cors_origins: list[str] = field(default_factory=list)  # CORS stays off unless origins are given
    web_dir: Path | None = None  # the browser page; default: the installed vaesdk.web
    deadlines: Deadlines = field(default_factory=Deadlines)  # for the request to arrive (serve/deadlines.py)
    # Names the Host header may carry (against DNS rebinding); None: no check. `vae serve`
    # sets the loopback names when it listens on loopback (serve/run.py), "*" allows any.
    allowed_hosts: list[str] | None = None
    grace_s: float = GRACEFUL_SHUTDOWN_S  # in-flight requests' time to finish after SIGTERM


def bundled_names() -> list[str]:
    """What the service serves when given no model: every bundled model, the default one
    first (the page opens on the first)."""
    import vaesdk

    return sorted(vaesdk.list_models(), key=lambda name: name != vaesdk.DEFAULT_MODEL)
