"""Shared fixtures.

`tiny_vae_bundle`, `tiny_ae_bundle` and `tiny_lowrank_bundle` are the committed tiny bundles
under tests/data (made once by tests/make_tiny_bundles.py with the project's own train and
export code), so the runtime and command-line tests need neither torch nor a training run.
`trained_vae_bundle` and `trained_lowrank_bundle` train and export fresh ones, for the tests
of training and export themselves. Tests that only need the runtime at full size use
`bundled_model`, the committed default model.

A test that needs more than `pip install -e '.[dev]'` carries the marker of what it needs
(NEEDS; pyproject.toml describes each): `train` (torch or onnx), `ray`, `docs` (MkDocs), `web`
(node, the npm packages, Chromium), `nginx`, `generator` (.venv-generator), `clients`
(.venv-clients). Every other test
gets the `runtime` marker here, so in an environment made by `pip install -e '.[dev]'` alone,
`pytest -m runtime` is the runtime's own suite. A test that uses a fixture of TRAIN_FIXTURES
gets the `train` marker here; a module that imports torch or onnx at its top marks itself
(`pytestmark`) and imports them with `pytest.importorskip`, so that collecting it without them
is no error.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

import vaesdk
from vaesdk.evaluation.datasets import DEFAULT_FASHION_MNIST_DIR, ImageSet, load_fashion_mnist

DATA = Path(__file__).resolve().parent / "data"
# The tests' child processes (`python -m vaesdk ...`, run from the checkout) must import the
# installed vaesdk, as a user's would: `python -m` puts the working directory first on the
# path, and there the source tree's vaesdk/ lacks what the install maps in (vaesdk.cli from
# cli/, ...). With an editable install both are the same; with `pip install '.[dev]'` they are not.
os.environ["PYTHONSAFEPATH"] = "1"
# Fixtures that train and export with torch: every test using one is a `train` test.
TRAIN_FIXTURES = frozenset({"trained_vae_bundle", "trained_lowrank_bundle"})


# What a test can need beyond `pip install -e '.[dev]'`: one marker each (pyproject.toml).
NEEDS = ("train", "ray", "docs", "web", "nginx", "generator", "clients")


@pytest.hookimpl(tryfirst=True)  # before -m selects on the markers added here
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if TRAIN_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.train)
        if not any(item.get_closest_marker(need) for need in NEEDS):
            item.add_marker(pytest.mark.runtime)


@pytest.fixture(scope="session")
def fashion_test() -> ImageSet:
    """The 10,000 Fashion-MNIST test images with labels."""
    return load_fashion_mnist(DEFAULT_FASHION_MNIST_DIR, "test")


@pytest.fixture(scope="session")
def bundled_model() -> vaesdk.Model:
    return vaesdk.load(device="cpu")


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tiny")


@pytest.fixture(scope="session")
def tiny_vae_bundle() -> Path:
    """The committed tiny VAE bundle (latent_dim 8). Read-only: copy it (`bundle_copy`) to change it."""
    return DATA / "tiny-vae"


@pytest.fixture(scope="session")
def tiny_ae_bundle() -> Path:
    """The committed tiny plain-autoencoder bundle (latent_dim 8). Read-only."""
    return DATA / "tiny-ae"


@pytest.fixture(scope="session")
def trained_vae_bundle(tiny_root) -> Path:
    """A tiny VAE with a diagonal, discretized decoder, trained and exported in this run
    (its run folder is next to it, run-vae)."""
    from make_tiny_bundles import DIAGONAL, train_and_export

    return train_and_export(tiny_root, "vae", **DIAGONAL)


@pytest.fixture(scope="session")
def tiny_lowrank_bundle() -> Path:
    """The committed tiny VAE with the default decoder (low-rank-plus-diagonal covariance,
    here rank 4; dequantized likelihood) and a fitted mixture prior. Read-only."""
    return DATA / "tiny-lowrank"


@pytest.fixture(scope="session")
def trained_lowrank_bundle(tiny_root) -> Path:
    """The same kind of bundle trained and exported in this run, with its run folder next
    to it (run-lowrank), for the tests that compare it with the training code."""
    from make_tiny_bundles import LOWRANK, train_and_export

    return train_and_export(tiny_root, "vae", **LOWRANK)


@pytest.fixture
def bundle_copy(tiny_vae_bundle, tmp_path) -> Path:
    """A private, writable copy of the tiny VAE bundle."""
    dest = tmp_path / "bundle"
    shutil.copytree(tiny_vae_bundle, dest)
    return dest


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)
