"""Rules over the source, read with `ast` (nothing is imported unless a test says so):

- the runtime's layers are its sub-packages, in the order of LAYERS (docs/development.md
  shows the tree): a module imports only from its own layer or the layers below it, counting
  every import (module level, inside functions, under `if TYPE_CHECKING:`);
- the modules of `vaesdk/` form no import cycle;
- `import vaesdk` loads no evaluation code (the `evaluation` layer), checked in a fresh process;
- no module of `vaesdk/`, `cli/` or `serve/` reaches a private name (leading underscore) of
  another module: neither `from m import _x` nor `m._x` / `obj._x` on an object it did not
  make itself (`self._x` and `cls._x` are its own; dunders are not private).

Files still being changed elsewhere are listed in PENDING with what they reach today; an
entry that no longer matches what the file does fails too, so the list only shrinks.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Source folder -> the package name it is installed as (pyproject.toml, package-dir).
PACKAGES = {"vaesdk": "vaesdk", "cli": "vaesdk.cli", "serve": "vaesdk.serve"}

# Private reach in front-end files that are being reworked on other branches: (file, name).
# onnxruntime's InferenceSession keeps the serialized model in `_model_bytes` for its own
# provider fallback; vaesdk/runtime/session.py releases it (with the fallback off): the one
# private name of another project that the runtime touches, checked by test_session.
PENDING: set[tuple[str, str]] = {("vaesdk/session.py", "_model_bytes")}


# The runtime's layers, bottom first: each sub-package of vaesdk/ may import from itself and
# the ones before it. Top-level modules: `version` and `requirements` import nothing of vaesdk
# (below every layer); `frontend` (the CLI's and server's plumbing), `__init__` and `__main__`
# sit above every layer.
LAYERS = ("base", "maths", "imaging", "bundle", "runtime", "jobs", "evaluation")
BELOW_ALL = ("vaesdk.version", "vaesdk.requirements")
ABOVE_ALL = ("vaesdk", "vaesdk.__main__", "vaesdk.frontend")


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT)
    parts = list(rel.parts)
    parts[0] = PACKAGES[parts[0]]
    parts[-1] = path.stem
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _files(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def layer_of(module: str) -> int:
    """0 below every layer, 1..len(LAYERS) for the layers, len(LAYERS) + 1 above them all."""
    if module in BELOW_ALL:
        return 0
    if module in ABOVE_ALL:
        return len(LAYERS) + 1
    parts = module.split(".")
    if len(parts) >= 2 and parts[1] in LAYERS:
        return LAYERS.index(parts[1]) + 1
    raise AssertionError(f"{module} is in no layer: move it into one of vaesdk/{{{','.join(LAYERS)}}}/ or list it here")


def _absolute(module: str, node: ast.ImportFrom, is_package: bool) -> str:
    """The absolute module named by a (possibly relative) `from ... import`."""
    if node.level == 0:
        return node.module or ""
    parts = module.split(".")
    base = parts if is_package else parts[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(path: Path) -> set[str]:
    """Every vaesdk module that `path` imports, wherever the import statement stands.
    `from . import x` counts as importing x when x is a module, else the package (whose
    `__init__` imports most modules)."""
    module, is_package = _module_name(path), path.stem == "__init__"
    modules = {_module_name(p) for p in _files("vaesdk")}
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            target = _absolute(module, node, is_package)
            submodules = {f"{target}.{a.name}" for a in node.names} & modules
            out |= submodules
            if len(submodules) < len(node.names):  # a name defined in `target` itself
                out.add(target)
    return {m for m in out if m in modules and m != module}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of `graph` as a path [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_reach(path: Path) -> list[tuple[int, str]]:
    """(line, name) for each private name of another module or object that `path` uses."""
    out = []
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            out += [(node.lineno, a.name) for a in node.names if _private(a.name)]
        elif isinstance(node, ast.Attribute) and _private(node.attr):
            owner = node.value
            if isinstance(owner, ast.Name) and owner.id in ("self", "cls"):
                continue
            out.append((node.lineno, node.attr))
    return out


def test_every_module_imports_only_from_its_layer_or_below():
    wrong = []
    for path in _files("vaesdk"):
        module = _module_name(path)
        for target in sorted(imports_of(path)):
            if layer_of(target) > layer_of(module):
                wrong.append(f"{module} imports {target}")
    assert not wrong, "imports that go up a layer (LAYERS, bottom first: " + ", ".join(LAYERS) + "): " + "; ".join(wrong)


def test_import_vaesdk_loads_no_evaluation_code():
    code = (
        "import sys, vaesdk; "
        "print(sorted(m for m in sys.modules if m.startswith('vaesdk.evaluation') or m.startswith(('torch', 'onnx.'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert out.strip() == "[]"
    # ... and the public name still works, loading the layer on first use.
    code = "import sys, vaesdk; f = vaesdk.evaluate_dataset; print(f.__module__, 'vaesdk.evaluation.evaluate' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert out.split() == ["vaesdk.evaluation.evaluate", "True"]


def test_layer_check_sees_an_upward_import(tmp_path, monkeypatch):
    for sub in ("base", "runtime"):
        (tmp_path / "vaesdk" / sub).mkdir(parents=True)
        (tmp_path / "vaesdk" / sub / "__init__.py").write_text("")
    (tmp_path / "vaesdk" / "__init__.py").write_text("")
    (tmp_path / "vaesdk" / "runtime" / "model.py").write_text("")
    low = tmp_path / "vaesdk" / "base" / "errors.py"
    low.write_text("def f():\n    from ..runtime.model import Model\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    found = {t for t in imports_of(low)}
    assert found == {"vaesdk.runtime.model"}
    assert layer_of("vaesdk.runtime.model") > layer_of(_module_name(low)) == 1


def test_vaesdk_has_no_import_cycle():
    graph = {_module_name(p): imports_of(p) for p in _files("vaesdk")}
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle in vaesdk/: " + " -> ".join(cycle)


def test_no_private_name_is_reached_across_modules():
    found, pending_seen = [], set()
    for folder in PACKAGES:
        for path in _files(folder):
            rel = f"{folder}/{path.name}"
            for line, name in private_reach(path):
                if (rel, name) in PENDING:
                    pending_seen.add((rel, name))
                else:
                    found.append(f"{rel}:{line} {name}")
    assert not found, "private names reached from another module: " + ", ".join(found)
    stale = sorted(PENDING - pending_seen)
    assert not stale, f"PENDING lists reach that is gone; remove it: {stale}"


# ---- the checks see what they should ---------------------------------------------------------


def test_cycle_finder_finds_a_cycle_and_only_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_imports_are_seen_in_functions_and_type_checking_blocks(tmp_path, monkeypatch):
    folder = tmp_path / "vaesdk"
    folder.mkdir()
    for name in ("__init__", "a", "b", "c", "d"):
        (folder / f"{name}.py").write_text("")
    (folder / "a.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .b import B\n"
        "def f():\n    from . import c\n    from .d import thing\n"
    )
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert imports_of(folder / "a.py") == {"vaesdk.b", "vaesdk.c", "vaesdk.d"}
    (folder / "b.py").write_text("def f():\n    from . import __version__\n")
    assert imports_of(folder / "b.py") == {"vaesdk"}


def test_private_reach_is_seen_and_own_attributes_are_not(tmp_path):
    path = tmp_path / "m.py"
    path.write_text(
        "from .x import _hidden, shown\n"
        "class K:\n    def f(self, model):\n        self._own = 1\n        return model._score(self._own).__class__\n"
    )
    assert private_reach(path) == [(1, "_hidden"), (5, "_score")]
