"""The CLI is a front end: it uses the SDK through the names `vaesdk` exports (plus its
exception classes, and the torch-side `training` and `export` packages for `vae train` and
`vae export`, `vaesdk.serve` for `vae serve` and `vaesdk.ray` for `--ray`), never the runtime's
internal modules."""

from __future__ import annotations

import ast
from pathlib import Path

import vaesdk

CLI = Path(__file__).resolve().parents[1] / "cli"
ALLOWED_MODULES = {"vaesdk.errors", "vaesdk.serve", "vaesdk.ray"}  # the optional integrations are public modules
ALLOWED_PACKAGES = ("vaesdk.training", "vaesdk.export")


def _sdk_imports(path: Path) -> list[tuple[int, str, list[str]]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and node.module.startswith("vaesdk"):
            out.append((node.lineno, node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            out.extend((node.lineno, a.name, []) for a in node.names if a.name.startswith("vaesdk"))
    return out


def test_cli_modules_import_only_public_sdk_names():
    wrong = []
    for path in sorted(CLI.glob("*.py")):
        for line, module, names in _sdk_imports(path):
            if module == "vaesdk":
                wrong += [f"{path.name}:{line} vaesdk.{n}" for n in names if n not in vaesdk.__all__]
            elif module not in ALLOWED_MODULES and not module.startswith(ALLOWED_PACKAGES):
                wrong.append(f"{path.name}:{line} {module}")
    assert not wrong, "CLI modules reach into SDK internals: " + ", ".join(wrong)


def test_the_check_sees_imports():
    # The walk finds imports inside functions too (the CLI defers its heavy ones).
    found = {module for path in CLI.glob("*.py") for _, module, _ in _sdk_imports(path)}
    assert {"vaesdk", "vaesdk.errors", "vaesdk.training.train"} <= found
