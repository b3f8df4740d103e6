"""The training side's torch likelihood: the same numbers as the runtime's numpy one, and
finite gradients everywhere training can go."""

import pytest

# Needs torch (the train extra): marked, and skipped at collection where it is absent.
pytestmark = pytest.mark.train
pytest.importorskip("torch")

import numpy as np
import torch

from vaesdk.maths import likelihood as L
from vaesdk.training.likelihood import discretized_gaussian_log_prob as torch_log_prob


def test_numpy_and_torch_likelihoods_agree():
    rng = np.random.default_rng(0)
    k = rng.integers(0, 256, 50_000)
    k[:500], k[500:1000] = 0, 255
    mean = rng.uniform(-0.2, 1.2, k.shape)
    logvar = rng.uniform(-14.0, 2.0, k.shape)
    ours = L.discretized_gaussian_log_prob(k, mean, logvar)
    theirs = torch_log_prob(torch.tensor(k), torch.tensor(mean), torch.tensor(logvar)).numpy()
    assert np.all(np.isfinite(ours))
    np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-6)


def test_torch_likelihood_has_finite_gradients_everywhere():
    k = torch.tensor([0, 1, 128, 254, 255] * 4)
    mean = torch.linspace(-0.5, 1.5, 20, dtype=torch.float32, requires_grad=True)
    logvar = torch.linspace(-14.0, 2.0, 20, dtype=torch.float32, requires_grad=True)
    torch_log_prob(k, mean, logvar).sum().backward()
    assert torch.isfinite(mean.grad).all() and torch.isfinite(logvar.grad).all()
