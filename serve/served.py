"""What an app serves: its models, fixed when the app is made, its limits and its worker pool.
The routes of both protocols reach the models through it."""

from __future__ import annotations

import secrets
from typing import Any, Callable

from fastapi import Request

import vaesdk
from vaesdk.base.errors import InvalidArgumentError

from . import contract
from .errors import ApiError
from .pool import Pool
from .settings import ServeConfig


def require_token(request: Request, token: str) -> None:
    """Refuse (401) a request without 'Authorization: Bearer TOKEN', compared in constant time."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not secrets.compare_digest(value.encode(), token.encode()):
        raise ApiError(401, "unauthorized", "a valid token is required: send 'Authorization: Bearer TOKEN'", {"WWW-Authenticate": "Bearer"})


class Served:
    def __init__(self, models: list[vaesdk.Model], config: ServeConfig):
        self.config, self.limits = config, config.limits
        self.models: dict[str, vaesdk.Model] = {}
        for m in models:
            if m.name in self.models:
                raise InvalidArgumentError(f"two bundles are named {m.name!r}; serve each name once")
            self.models[m.name] = m
        if not self.models:
            raise InvalidArgumentError("no models to serve")
        self.pool = Pool(self.limits.workers, self.limits.queue)
        self.doc = contract.Contract(list(self.models.values()), self.limits, token=config.token is not None)
        self.descriptions = {name: {k: v for k, v in m.describe().items() if k != "path"} for name, m in self.models.items()}

    def authorize(self, request: Request) -> None:
        """A dependency of the /v1 and /v2 routes: the bearer token, when the server has one."""
        if self.config.token is not None:
            require_token(request, self.config.token)

    def model_of(self, name: str) -> vaesdk.Model:
        if name not in self.models:
            raise ApiError(404, "not_found", f"unknown model {name[:80]!r}; served models: {', '.join(self.models)}")
        return self.models[name]

    def model_for(self, name: str, operation: str) -> vaesdk.Model:
        """The served model `name`, for a route of `operation`: a route the model does not have
        (contract.operations_of) answers the SDK's refusal of that operation (422), or 404 where
        the SDK refuses nothing (embed of a flat model, whose features are its encode means)."""
        model = self.model_of(name)
        have = contract.operations_of(model)
        if operation not in have:
            model.validate(operation)
            raise ApiError(404, "not_found", f"model {name!r} has no {operation} route; its routes: {', '.join(have)}")
        return model

    async def compute(self, request: Request, fn: Callable[[], Any]) -> Any:
        """fn() in the pool, within the request timeout; cancelled if the client goes."""

        async def gone() -> None:
            # The body has been read: the next ASGI message is the client's disconnect.
            while (await request.receive())["type"] != "http.disconnect":
                pass

        return await self.pool.run(fn, self.limits.timeout_s, gone)
