"""The test suite's markers (tests/conftest.py, pyproject.toml): each marker of what a test
needs beyond `pip install -e '.[dev]'` is registered, and every other test is `runtime`; a test
module that imports torch or onnx at its top (directly, through tests/crafted.py, or through the
training code) marks itself `train` and skips its collection where they are absent, so
`pip install -e '.[dev]'` + `pytest -m runtime` collects without error. Test modules are read
with `ast`; none is imported."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
# Modules whose import needs the train extra.
TORCH_SIDE = ("torch", "onnx", "onnxscript", "safetensors", "sklearn", "crafted", "vaesdk.training.train",
              "vaesdk.training.model", "vaesdk.training.data", "vaesdk.training.likelihood", "vaesdk.training.distributed",
              "vaesdk.export.onnx", "vaesdk.export.verify", "vaesdk.export.pipeline", "make_tiny_bundles")  # fmt: skip


def _needs_train(module: str) -> bool:
    return any(module == m or module.startswith(m + ".") for m in TORCH_SIDE)


def module_level_train_imports(tree: ast.Module) -> list[str]:
    out = []
    for node in tree.body:
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names if _needs_train(a.name)]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and _needs_train(node.module):
            out.append(node.module)
    return out


def guards(tree: ast.Module) -> tuple[bool, bool]:
    """(marks itself train, calls pytest.importorskip at module level before its first train import)."""
    marked = any(
        isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "pytestmark" for t in node.targets)
        and "train" in ast.unparse(node.value)
        for node in tree.body
    )
    skips = False
    for node in tree.body:
        text = ast.unparse(node) if isinstance(node, (ast.Expr, ast.Assign)) else ""
        if "pytest.importorskip(" in text:
            skips = True
        if module_level_train_imports(ast.Module(body=[node], type_ignores=[])):
            break
    return marked, skips


def test_modules_that_import_the_train_extra_are_marked_and_skip_without_it():
    wrong = []
    for path in sorted(TESTS.glob("test_*.py")):
        tree = ast.parse(path.read_text(), str(path))
        if module_level_train_imports(tree):
            marked, skips = guards(tree)
            if not (marked and skips):
                wrong.append(f"{path.name} (pytestmark train: {marked}, importorskip first: {skips})")
    assert not wrong, "modules importing torch/onnx at their top without the train guard: " + ", ".join(wrong)


def test_the_check_sees_an_unguarded_module():
    bare = ast.parse("import numpy as np\nfrom crafted import LATENT\n")
    assert module_level_train_imports(bare) == ["crafted"] and guards(bare) == (False, False)
    late = ast.parse("import torch\nimport pytest\npytestmark = pytest.mark.train\npytest.importorskip('torch')\n")
    assert guards(late) == (True, False)  # the skip comes after the import that fails
    good = ast.parse("import pytest\npytestmark = pytest.mark.train\npytest.importorskip('onnx')\nimport onnx\n")
    assert guards(good) == (True, True)


def test_the_markers_of_needs_are_registered_and_the_rest_is_runtime(request):
    from conftest import NEEDS

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    config = tomllib.loads((TESTS.parent / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    registered = {line.split(":")[0] for line in config["markers"]}
    assert registered == {"slow", "runtime", *NEEDS}
    assert request.node.get_closest_marker("runtime") is not None  # this test needs nothing more
