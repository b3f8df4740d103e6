"""Rules over the source, read with `ast` (nothing is imported):

- the modules of `vaesdk/` form no import cycle, counting every import: module level,
  inside functions, and under `if TYPE_CHECKING:`;
- no module of `vaesdk/`, `cli/` or `serve/` reaches a private name (leading underscore) of
  another module: neither `from m import _x` nor `m._x` / `obj._x` on an object it did not
  make itself (`self._x` and `cls._x` are its own; dunders are not private).

Files still being changed elsewhere are listed in PENDING with what they reach today; an
entry that no longer matches what the file does fails too, so the list only shrinks.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Source folder -> the package name it is installed as (pyproject.toml, package-dir).
PACKAGES = {"vaesdk": "vaesdk", "cli": "vaesdk.cli", "serve": "vaesdk.serve"}

# Private reach in front-end files that are being reworked on other branches: (file, name).
PENDING: set[tuple[str, str]] = set()


def _module_name(path: Path) -> str:
    folder = path.parent.name
    stem = path.stem
    return PACKAGES[folder] if stem == "__init__" else f"{PACKAGES[folder]}.{stem}"


def _files(folder: str) -> list[Path]:
    return sorted((ROOT / folder).glob("*.py"))


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
