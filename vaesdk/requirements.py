"""The runtime's three dependencies, checked once when the package is imported."""

from __future__ import annotations

import importlib.util
import sys

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

