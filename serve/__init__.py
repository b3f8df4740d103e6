"""`vae serve`: an HTTP service over vaesdk (the `serve` extra: FastAPI, uvicorn, python-multipart)."""

from .app import Limits, ServeConfig, create_app
from .run import serve

__all__ = ["Limits", "ServeConfig", "create_app", "serve"]
