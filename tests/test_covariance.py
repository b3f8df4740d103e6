"""Pixel draws from a low-rank-plus-diagonal p(x|z) follow N(mean, diag(sigma^2) + W W^T),
rounded to 8-bit levels; and they do not depend on how images are split into batches."""

from __future__ import annotations

import pytest

# Needs onnx (the train extra): marked, and skipped at collection where it is absent.
pytestmark = pytest.mark.train
pytest.importorskip("onnx")

import hashlib
import json
import shutil

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import vaesdk

SIDE, RANK, LATENT = 28, 4, 8
PIXELS = SIDE * SIDE


def _constant_decoder(mean: np.ndarray, logvar: np.ndarray, factor: np.ndarray) -> bytes:
    """A decoder whose outputs ignore z: mean, logvar [P] and factor [R, P] broadcast over the batch."""

    def out(name: str, value: np.ndarray, shape: list[int]) -> list:
        zero = numpy_helper.from_array(np.zeros((LATENT, value.size), np.float32), f"{name}_w")
        bias = numpy_helper.from_array(value.reshape(1, -1).astype(np.float32), f"{name}_b")
        dims = numpy_helper.from_array(np.array([-1, *shape], np.int64), f"{name}_shape")
        nodes = [
            helper.make_node("MatMul", ["z", f"{name}_w"], [f"{name}_mm"]),
            helper.make_node("Add", [f"{name}_mm", f"{name}_b"], [f"{name}_flat"]),
            helper.make_node("Reshape", [f"{name}_flat", f"{name}_shape"], [name]),
        ]
        return nodes, [zero, bias, dims]

    nodes, inits = [], []
    for name, value, shape in (("mean", mean, [1, SIDE, SIDE]), ("logvar", logvar, [1, SIDE, SIDE]), ("factor", factor, [RANK, 1, SIDE, SIDE])):
        n, i = out(name, value, shape)
        nodes += n
        inits += i

    def vi(name, shape):
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)

    graph = helper.make_graph(
        nodes, "constant_decoder", [vi("z", ["N", LATENT])],
        [vi("mean", ["N", 1, SIDE, SIDE]), vi("logvar", ["N", 1, SIDE, SIDE]), vi("factor", ["N", RANK, 1, SIDE, SIDE])], inits,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    return model.SerializeToString()


@pytest.fixture(scope="module")
def known(tiny_lowrank_bundle, tmp_path_factory):
    rng = np.random.default_rng(0)
    mean = np.full(PIXELS, 0.5)
    sigma = rng.uniform(4, 12, PIXELS) / 255.0
    factor = rng.normal(0, 8 / 255.0, (RANK, PIXELS))
    dest = tmp_path_factory.mktemp("lowrank") / "known"
    shutil.copytree(tiny_lowrank_bundle, dest)
    blob = _constant_decoder(mean, np.log(sigma**2), factor)
    (dest / "decoder.onnx").write_bytes(blob)
    manifest = json.loads((dest / "manifest.json").read_text())
    manifest["decoder"].update(sha256=hashlib.sha256(blob).hexdigest(), bytes=len(blob))
    (dest / "manifest.json").write_text(json.dumps(manifest))
    cov_levels = 255.0**2 * (np.diag(sigma**2) + factor.T @ factor) + np.eye(PIXELS) / 12.0  # rounding adds U(-1/2, 1/2)
    return vaesdk.load(dest, device="cpu"), cov_levels


def test_pixel_draws_have_the_low_rank_plus_diagonal_covariance(known):
    model, cov = known
    n = 40_000
    draws = model.decode(np.zeros((n, LATENT), np.float32), sample_pixels=True, seed=1).reshape(n, PIXELS).astype(np.float64)
    pick = np.array([0, 1, 29, 300, 301, 783])
    x = draws[:, pick]
    c = cov[np.ix_(pick, pick)]
    assert np.all(np.abs(x.mean(0) - 127.5) < 5 * np.sqrt(np.diag(c) / n))
    emp = np.cov(x, rowvar=False)
    # standard error of a sample covariance of Gaussian variables: sqrt((s_ii s_jj + s_ij^2) / n)
    se = np.sqrt((np.outer(np.diag(c), np.diag(c)) + c**2) / n)
    assert np.all(np.abs(emp - c) < 5 * se), (emp, c)
    # the off-diagonal terms are what the factor adds: far from zero here
    assert np.abs(c[np.triu_indices(len(pick), 1)]).max() > 20 * se.max()


def test_whitened_pixel_draws_are_standard_normal(known):
    stats = pytest.importorskip("scipy.stats")
    model, cov = known
    n = 5000
    draws = model.decode(np.zeros((n, LATENT), np.float32), sample_pixels=True, seed=2).reshape(n, PIXELS).astype(np.float64)
    white = np.linalg.solve(np.linalg.cholesky(cov), (draws - 127.5).T).T
    for j in (0, 100, 500):
        assert stats.kstest(white[:, j], "norm").pvalue > 1e-4


def test_pixel_draws_do_not_depend_on_the_batch_size(tiny_lowrank_bundle):
    big = vaesdk.load(tiny_lowrank_bundle, device="cpu")
    small = vaesdk.load(tiny_lowrank_bundle, device="cpu", batch_size=3)
    z = big.sample_latents(20, seed=0)
    np.testing.assert_array_equal(big.decode(z, sample_pixels=True, seed=5), small.decode(z, sample_pixels=True, seed=5))
    np.testing.assert_array_equal(big.sample(20, seed=4, sample_pixels=True), small.sample(20, seed=4, sample_pixels=True))
