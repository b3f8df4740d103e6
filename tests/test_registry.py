"""Named bundled models and user paths (vaesdk.bundle.registry).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import vaesdk
import vaesdk.bundle.format
import vaesdk.bundle.registry
import vaesdk.runtime.session
from vaesdk.bundle.format import MANIFEST
from vaesdk.base.errors import BundleError, ModelNotFoundError

TINY_LATENT = 8  # the tiny bundles' latent size (tests/make_tiny_bundles.py)

# ---- the registry ------------------------------------------------------------------------


def test_list_models_returns_names():
    names = vaesdk.list_models()
    assert isinstance(names, list) and all(isinstance(n, str) for n in names)
    assert names == sorted(names)


def test_python_started_in_a_source_checkout_is_told_why_the_bundled_models_are_missing(tmp_path):
    """In a repository's root, Python imports its vaesdk/ folder rather than the installed
    package, and that folder has no models/ or cli/ (installing maps them in): `load()` and
    `python -m vaesdk` say so and name the fix, where they raised ModuleNotFoundError from
    deep inside importlib. The child process drops an editable install's import hook, which
    would otherwise supply the missing parts."""
    import os
    import shutil
    from pathlib import Path

    checkout = tmp_path / "checkout"
    shutil.copytree(Path(vaesdk.__file__).parent, checkout / "vaesdk", ignore=shutil.ignore_patterns("__pycache__", "models", "cli", "serve", "web", "training", "export"))  # as in the repository
    (checkout / "pyproject.toml").write_text("")
    prelude = "import sys; sys.meta_path[:] = [f for f in sys.meta_path if '__editable__' not in getattr(f, '__module__', '')]; "

    env = {k: v for k, v in os.environ.items() if k != "PYTHONSAFEPATH"}  # the working directory first, as by default

    def run(code):
        return subprocess.run([sys.executable, "-c", prelude + code], cwd=checkout, env=env, capture_output=True, text=True, timeout=120)

    r = run("import vaesdk; vaesdk.load()")
    last = r.stderr.strip().splitlines()[-1]
    assert r.returncode == 1 and last.startswith("vaesdk.base.errors.ModelNotFoundError: vaesdk.models is not in "), r.stderr
    assert "source folder" in last and "pip install -e ." in last
    r = run("import runpy; sys.argv = ['vae', 'sample']; runpy.run_module('vaesdk', run_name='__main__')")
    assert r.returncode == 1 and r.stderr.startswith("vae: error: vaesdk.cli is not in ") and r.stderr.count("\n") == 1, r.stderr
    bundle = str(vaesdk.bundle.registry.resolve("fashion-mnist"))
    assert run(f"import vaesdk; print(vaesdk.load({bundle!r}).name)").stdout == "fashion-mnist\n"  # a bundle by its path still loads
    # A folder named like a bundled model that holds no bundle (a dataset's, say) is not taken
    # for the model: the bare name still gets the reason and the fix; a bundle's folder is a path.
    (checkout / "fashion-mnist").mkdir()
    r = run("import vaesdk; vaesdk.load('fashion-mnist')")
    assert r.returncode == 1 and "vaesdk.models is not in " in r.stderr.strip().splitlines()[-1], r.stderr
    shutil.copytree(bundle, checkout / "mine")
    assert run("import vaesdk; print(vaesdk.load('mine').name)").stdout == "fashion-mnist\n"


def test_unknown_model_name_lists_the_known_ones():
    with pytest.raises(ModelNotFoundError) as e:
        vaesdk.load("no-such-model", device="cpu")
    message = str(e.value)
    assert "'no-such-model'" in message and "bundled models:" in message
    for name in vaesdk.list_models():
        assert name in message
    if not vaesdk.list_models():
        assert "(none installed)" in message


@pytest.mark.parametrize("as_str", [True, False])
def test_path_to_a_missing_folder_is_model_not_found(tmp_path, as_str):
    missing = tmp_path / "nowhere" / "bundle"
    with pytest.raises(ModelNotFoundError) as e:
        vaesdk.load(str(missing) if as_str else missing, device="cpu")
    assert f"no bundle at {missing}" in str(e.value)


def test_folder_without_a_manifest_is_a_bundle_error(tmp_path):
    with pytest.raises(BundleError) as e:
        vaesdk.load(tmp_path, device="cpu")
    assert not isinstance(e.value, ModelNotFoundError)
    assert "manifest" in str(e.value) and "is missing" in str(e.value)


def test_manifest_path_itself_resolves_to_its_bundle(tiny_vae_bundle):
    manifest = tiny_vae_bundle / MANIFEST
    assert vaesdk.bundle.registry.resolve(str(manifest)) == tiny_vae_bundle
    model = vaesdk.load(str(manifest), device="cpu")
    assert model.path == tiny_vae_bundle and model.latent_dim == TINY_LATENT


def test_an_export_in_progress_is_not_a_bundled_model(tmp_path):
    for name in ("emoji", ".emoji.abc123.partial"):
        (tmp_path / name).mkdir()
        (tmp_path / name / MANIFEST).write_text("{}")
    # In a fresh interpreter: the listing is cached per process. The models' folder is tmp_path.
    code = (
        "import importlib.resources, json, pathlib, sys, vaesdk\n"
        "importlib.resources.files = lambda package: pathlib.Path(sys.argv[1])\n"
        "print(json.dumps(vaesdk.list_models()))"
    )
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == ["emoji"]
