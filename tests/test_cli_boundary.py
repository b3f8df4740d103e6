"""The CLI and the server are front ends: they use the SDK through the names `vaesdk` exports
(`vaesdk.__all__`), its exception classes (`vaesdk.base.errors`), and the front ends' own
documented internal module `vaesdk.frontend`; plus the torch-side `training` and `export`
packages for `vae train` and `vae export`, `vaesdk.serve` for `vae serve` and `vaesdk.jobs.ray`
for `--ray`. Never the runtime's other internal modules, whether imported or reached as
`vaesdk.<module>`."""

from __future__ import annotations

import ast
from pathlib import Path

import vaesdk
from vaesdk import frontend

ROOT = Path(__file__).resolve().parents[1]
FRONT_ENDS = sorted([*(ROOT / "cli").glob("*.py"), *(ROOT / "serve").glob("*.py")])
ALLOWED_MODULES = {"vaesdk.base.errors", "vaesdk.frontend", "vaesdk.serve", "vaesdk.jobs.ray", "vaesdk.cli", "vaesdk.web"}
ALLOWED_PACKAGES = ("vaesdk.training", "vaesdk.export", "vaesdk.serve.", "vaesdk.cli.")
SUBMODULES = {m.split(".", 1)[1] for m in ALLOWED_MODULES} | {"training", "export"}


def _uses(path: Path) -> list[tuple[int, str]]:
    """(line, what) for every SDK name a file uses: 'module' for an import of a module,
    'module:name' for a name taken from one, 'vaesdk.name' / 'frontend.name' for attributes."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and node.module.startswith("vaesdk"):
            out += [(node.lineno, f"{node.module}:{a.name}") for a in node.names]
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.startswith("vaesdk")]
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in ("vaesdk", "frontend"):
            out.append((node.lineno, f"{node.value.id}.{node.attr}"))
    return out


def _wrong(what: str) -> bool:
    module, _, name = what.partition(":")
    if what.startswith("vaesdk.") and ":" not in what and what.count(".") == 1 and what[7:] not in SUBMODULES:
        return what[7:] not in vaesdk.__all__  # vaesdk.<name> as an attribute
    if what.startswith("frontend."):
        return what[9:] not in frontend.__all__
    if what == "vaesdk":
        return False
    if module == "vaesdk":
        return name not in vaesdk.__all__ and name != "frontend"
    if module == "vaesdk.frontend":
        return name not in frontend.__all__
    return module not in ALLOWED_MODULES and not module.startswith(ALLOWED_PACKAGES)


def test_front_ends_use_only_public_sdk_names_and_the_frontend_module():
    wrong = [f"{p.relative_to(ROOT)}:{line} {what}" for p in FRONT_ENDS for line, what in _uses(p) if _wrong(what)]
    assert not wrong, "front ends reach into SDK internals: " + ", ".join(wrong)


def test_the_check_sees_imports_and_attributes():
    # The walk finds imports inside functions too (the CLI defers its heavy ones), and
    # names reached as attributes of the package.
    found = {what for p in FRONT_ENDS for _, what in _uses(p)}
    assert {"vaesdk", "vaesdk.base.errors:VaesdkError", "vaesdk.training.train:train", "vaesdk.Model", "frontend.write_atomic"} <= found
    assert _wrong("vaesdk.runtime.model:DEFAULT_IW_SAMPLES") and _wrong("vaesdk.maths.latent") and _wrong("vaesdk.write_atomic")
    assert _wrong("frontend.load") and not _wrong("vaesdk.base.errors:InvalidArgumentError") and not _wrong("vaesdk.DEFAULT_BATCH")


def test_the_public_face_is_what_a_library_user_needs():
    # The front ends' plumbing lives in vaesdk.frontend, not in the package namespace.
    assert not set(frontend.__all__) & set(vaesdk.__all__)
    for name in vaesdk.__all__:
        assert hasattr(vaesdk, name), name
