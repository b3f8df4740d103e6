"""ASGI middleware of the service: the body limit, the same-origin rule, and the page's mount."""

from __future__ import annotations

from typing import Any, Callable

from starlette.routing import Match, Mount

from .errors import BodyTooLarge, error_response


class LimitBody:
    """ASGI wrapper: refuse a body over the limit from its Content-Length, and stop reading
    one that grows past it (chunked uploads)."""

    def __init__(self, app: Any, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for key, value in scope.get("headers", []):
            if key == b"content-length" and value.isdigit() and int(value) > self.limit:
                response = error_response(413, "too_large", f"the request body is {int(value)} bytes; the limit is {self.limit}")
                return await response(scope, receive, send)
        seen = 0

        async def limited() -> dict:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise BodyTooLarge(f"the request body exceeds the limit of {self.limit} bytes")
            return message

        await self.app(scope, limited, send)


class SameOrigin:
    """Refuse requests that change or compute something (POST and the like) sent by a web page
    of another origin, unless --cors-origin allows that origin: browsers send them without
    asking first (text/plain and multipart are "simple" requests), so any page the user opens
    could otherwise make a local service compute. Requests without an Origin header (curl,
    scripts, clients) and the server's own page pass."""

    SAFE = {"GET", "HEAD", "OPTIONS"}

    def __init__(self, app: Any, allowed: list[str]):
        self.app, self.allowed = app, {o.rstrip("/") for o in allowed}

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "http" and scope.get("method", "GET") not in self.SAFE:
            headers = dict(scope.get("headers", []))
            origin = headers.get(b"origin", b"").decode("latin-1").rstrip("/")
            host = headers.get(b"host", b"").decode("latin-1")
            if origin and origin not in self.allowed and origin.split("://", 1)[-1] != host:
                response = error_response(
                    403, "cross_origin", f"a request from the web page origin {origin[:100]} is refused; allow it with --cors-origin {origin[:100]}"
                )
                return await response(scope, receive, send)
        await self.app(scope, receive, send)


class Page(Mount):
    """The browser page at /, for every path that is not the API's: a path of the API with
    another method still answers 405 with Allow (a mount at / would take it first)."""

    def __init__(self, app: Any, api_paths: list[str]):
        super().__init__("/", app=app, name="page")
        self._api = {p.split("{", 1)[0].rstrip("/") for p in api_paths}

    def matches(self, scope: dict) -> tuple[Match, dict]:
        path = scope.get("path", "")
        if path.startswith(("/v1/", "/v2/")) or path.rstrip("/") in self._api:
            return Match.NONE, {}
        return super().matches(scope)



class AllowedHosts:
    """Refuse a request whose Host header is not a name this server answers to (400): a web
    page on a name that an attacker's DNS points at 127.0.0.1 (DNS rebinding) would otherwise
    reach a local service as if it were its own origin. `hosts` are names without ports;
    "*" allows any."""

    def __init__(self, app: Any, hosts: list[str]):
        self.app, self.hosts = app, {h.lower().strip("[]") for h in hosts}

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "http" and "*" not in self.hosts:
            host = dict(scope.get("headers", [])).get(b"host", b"").decode("latin-1")
            # host[:port], or [v6 address][:port]
            name = host[1:].split("]", 1)[0] if host.startswith("[") else host.split(":", 1)[0]
            if name.lower() not in self.hosts:
                detail = f"the Host header {host[:100]!r} is not a name of this server ({', '.join(sorted(self.hosts))}); add it with --allowed-host"
                return await error_response(400, "bad_host", detail)(scope, receive, send)
        await self.app(scope, receive, send)


def add_guards(app: Any, max_body_bytes: int, allowed_origins: list[str], allowed_hosts: list[str] | None) -> None:
    """The checks every app of the service sits behind, outermost first: the Host check (when
    `allowed_hosts` is given), the body limit, the same-origin rule."""
    app.add_middleware(SameOrigin, allowed=allowed_origins)
    app.add_middleware(LimitBody, limit=max_body_bytes)
    if allowed_hosts is not None:
        app.add_middleware(AllowedHosts, hosts=allowed_hosts)
