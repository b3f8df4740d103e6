"""`vae serve`: an HTTP service over vaesdk (the `serve` extra: FastAPI, uvicorn, python-multipart).

The names below are loaded on first use, so that `vaesdk.serve.settings` (the defaults `vae
serve --help` shows) can be read without the serve extra's packages.
"""

from __future__ import annotations

import importlib
from typing import Any

# Each public name and the module that defines it.
_HOMES = {"Deadlines": "settings", "Limits": "settings", "ServeConfig": "settings", "create_app": "app", "serve": "run"}

__all__ = ["Deadlines", "Limits", "ServeConfig", "create_app", "serve"]


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
