"""`vae serve`: an HTTP service over vaesdk (the `serve` extra: FastAPI, uvicorn, python-multipart)."""

from .app import Limits, ServeConfig, create_app
from .deadlines import Deadlines
from .run import serve

__all__ = ["Deadlines", "Limits", "ServeConfig", "create_app", "serve"]
