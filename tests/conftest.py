"""Shared fixtures: small real bundles made by the project's own train and export code.

`tiny_vae_bundle` / `tiny_ae_bundle` are trained for a few hundred steps on real
Fashion-MNIST images (Debian's dataset-fashion-mnist; the test script installs it), then
exported through the full pipeline, parity gate included. Tests that only need the
runtime use `bundled_model`, the committed default model.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

import vaesdk
from vaesdk.datasets import DEFAULT_FASHION_MNIST_DIR, ImageSet, load_fashion_mnist

TINY_WIDTHS = (8, 16, 32)


@pytest.fixture(scope="session")
def fashion_test() -> ImageSet:
    """The 10,000 Fashion-MNIST test images with labels."""
    return load_fashion_mnist(DEFAULT_FASHION_MNIST_DIR, "test")


@pytest.fixture(scope="session")
def bundled_model() -> vaesdk.Model:
    return vaesdk.load(device="cpu")


# The diagonal, discretized decoder of format-1 bundles; the low-rank one is the default.
DIAGONAL = dict(covariance="diagonal", rank=0, likelihood="discretized")


def _train_and_export(root: Path, kind: str, name: str | None = None, **model_options) -> Path:
    from vaesdk.export.pipeline import export_bundle
    from vaesdk.training.config import ModelConfig, TrainConfig
    from vaesdk.training.train import train

    name = name or kind
    run = root / f"run-{name}"
    config = TrainConfig(
        model=ModelConfig(kind=kind, latent_dim=8, widths=TINY_WIDTHS, **model_options),
        out_dir=str(run),
        limit=3000,
        max_epochs=2,
        batch_size=64,
        lr=2e-3,
        kl_warmup_epochs=1,
        fixed_variance_epochs=1,
    )
    train(config, command=f"test fixture ({kind})", log=lambda s: None)
    return export_bundle(run, root / f"tiny-{name}", eval_data="fashion-mnist", eval_limit=300, iw_samples=8)


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tiny")


@pytest.fixture(scope="session")
def tiny_vae_bundle(tiny_root) -> Path:
    """A small VAE bundle (latent_dim 8) with a diagonal, discretized decoder. Treat as
    read-only; copy it to change it."""
    return _train_and_export(tiny_root, "vae", **DIAGONAL)


@pytest.fixture(scope="session")
def tiny_lowrank_bundle(tiny_root) -> Path:
    """A small VAE bundle (latent_dim 8) with the default decoder: low-rank-plus-diagonal
    covariance (rank 4), dequantized likelihood. Treat as read-only."""
    return _train_and_export(tiny_root, "vae", "lowrank", covariance="lowrank", rank=4, likelihood="dequantized")


@pytest.fixture(scope="session")
def tiny_ae_bundle(tiny_root) -> Path:
    """A small plain-autoencoder bundle (latent_dim 8). Treat as read-only."""
    return _train_and_export(tiny_root, "ae")


@pytest.fixture
def bundle_copy(tiny_vae_bundle, tmp_path) -> Path:
    """A private, writable copy of the tiny VAE bundle."""
    dest = tmp_path / "bundle"
    shutil.copytree(tiny_vae_bundle, dest)
    return dest


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)
