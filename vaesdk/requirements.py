"""The runtime's three dependencies, checked once when the package is imported."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

# module -> the distribution pip installs it from
RUNTIME = {"numpy": "numpy", "onnxruntime": "onnxruntime", "PIL": "pillow"}


def require_runtime() -> None:
    """Raise ModuleNotFoundError naming every missing runtime dependency and the fix."""
    missing = [dist for module, dist in RUNTIME.items() if importlib.util.find_spec(module) is None]
    if missing:
        raise ModuleNotFoundError(
            f"vaesdk needs {', '.join(missing)}, which this Python ({sys.executable or 'python'}) lacks; install vaesdk with its "
            "dependencies: pip install . in a source checkout, or pip install the vaesdk wheel file",
            name=missing[0],
        )


def missing_part(part: str) -> str:
    """Why `vaesdk.<part>` cannot be imported, with the fix. Installing maps the repository's
    top-level folders (models/, cli/, ...) into the package: a Python started in the repository's
    root imports its vaesdk/ folder instead of the installed package, and that folder lacks them."""
    here = Path(__file__).resolve().parent
    if (here.parent / "pyproject.toml").is_file():
        return (
            f"vaesdk.{part} is not in {here}: Python imported vaesdk from the source folder, not the installed package "
            "(it runs in the repository's root); run it from another folder, or install with `pip install -e .`"
        )
    return f"this installation of vaesdk has no vaesdk.{part}; install it again (pip install --force-reinstall vaesdk)"
