"""Hostile bundles at load: a graph that would run forever or allocate without bound is
refused within seconds, in bounded memory, with one line, before onnxruntime runs it
(vaesdk.bundle.reading.check_operators) or while the load-time probe runs (its clock)."""

from __future__ import annotations

import time

import numpy as np
import pytest

pytestmark = pytest.mark.train  # builds graphs with onnx (the train extra)

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import vaesdk  # noqa: E402
from memory import UNMEASURABLE, Growth  # noqa: E402
from crafted import LATENT, PIXELS, bundle_with, crafted_decoder, make_model, vi  # noqa: E402
from vaesdk.bundle.format import MAX_CONSTANT_ELEMENTS, OPERATORS  # noqa: E402


def _decoder(extra_nodes, extra_inits, tail: str) -> bytes:
    """A decoder whose mean passes through `extra_nodes` (ending in `tail`, added to it)."""
    nodes = [
        helper.make_node("MatMul", ["z", "W"], ["flat"]),
        helper.make_node("Reshape", ["flat", "shape"], ["base"]),
        *extra_nodes,
        helper.make_node("Add", ["base", tail], ["mean"]),
        helper.make_node("Identity", ["mean"], ["logvar"]),
    ]
    inits = [
        numpy_helper.from_array(np.zeros((LATENT, PIXELS), np.float32), "W"),
        numpy_helper.from_array(np.array([-1, 1, 28, 28], np.int64), "shape"),
        *extra_inits,
    ]
    graph = helper.make_graph(
        nodes, "hostile", [vi("z", ["N", LATENT])], [vi("mean", ["N", 1, 28, 28]), vi("logvar", ["N", 1, 28, 28])], inits
    )
    return make_model(graph)


def _loop_decoder(trips: int) -> bytes:
    """A Loop of `trips` iterations that adds nothing: onnxruntime would spin for ever."""
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]), helper.make_node("Identity", ["acc_in"], ["acc_out"])],
        "body",
        [vi("i", [], TensorProto.INT64), vi("cond_in", [], TensorProto.BOOL), vi("acc_in", [1])],
        [vi("cond_out", [], TensorProto.BOOL), vi("acc_out", [1])],
    )
    nodes = [helper.make_node("Loop", ["trips", "cond", "zero"], ["looped"], body=body)]
    inits = [
        numpy_helper.from_array(np.array(trips, np.int64), "trips"),
        numpy_helper.from_array(np.array(True), "cond"),
        numpy_helper.from_array(np.zeros(1, np.float32), "zero"),
    ]
    return _decoder(nodes, inits, "looped")


def _expand_decoder(shape: list[int]) -> bytes:
    """An Expand to a constant `shape`, reduced back to one number."""
    nodes = [
        helper.make_node("Expand", ["one", "big"], ["expanded"]),
        helper.make_node("ReduceMean", ["expanded"], ["small"], keepdims=0),
    ]
    inits = [numpy_helper.from_array(np.zeros(1, np.float32), "one"), numpy_helper.from_array(np.array(shape, np.int64), "big")]
    return _decoder(nodes, inits, "small")


def _load_error(path) -> tuple[str, float, float]:
    start = time.monotonic()
    with Growth() as grown, pytest.raises(vaesdk.BundleError) as info:
        vaesdk.load(path, device="cpu")
    message = str(info.value)
    assert "\n" not in message
    return message, time.monotonic() - start, grown.mib


def test_a_loop_of_2_to_the_62_iterations_is_refused_at_once(tiny_vae_bundle, tmp_path):
    bundle = bundle_with(tiny_vae_bundle, tmp_path / "loop", decoder=_loop_decoder(1 << 62))
    message, seconds, _ = _load_error(bundle)
    assert "uses operator Loop" in message and "decoder" in message
    assert seconds < 10


def test_an_expand_to_a_huge_constant_shape_is_refused_before_it_allocates(tiny_vae_bundle, tmp_path):
    bundle = bundle_with(tiny_vae_bundle, tmp_path / "expand", decoder=_expand_decoder([1 << 16, 1 << 16, 4]))
    message, seconds, grown_mib = _load_error(bundle)
    assert "Expand node whose constant shape [65536, 65536, 4]" in message
    assert seconds < 10
    if not Growth.measurable():
        pytest.skip(f"the refusal was checked; its memory not: {UNMEASURABLE}")
    assert grown_mib < 512  # nothing near the 64 GiB the node asks for


def test_an_expand_within_the_bound_still_loads(tiny_vae_bundle, tmp_path):
    bundle = bundle_with(tiny_vae_bundle, tmp_path / "small", decoder=_expand_decoder([4, 4]))
    model = vaesdk.load(bundle, device="cpu")
    assert model.decode(np.zeros((1, LATENT), np.float32)).shape == (1, 28, 28, 1)


def test_the_operator_check_sees_the_bundled_models_through(tiny_vae_bundle, tmp_path):
    # The committed graphs run only operators of the format's set; a plain decoder too.
    bundle = bundle_with(tiny_vae_bundle, tmp_path / "plain", decoder=crafted_decoder())
    vaesdk.load(bundle, device="cpu")
    assert {"Conv", "ConvTranspose", "Gemm", "Resize", "Loop"} - OPERATORS == {"Loop"}
    assert MAX_CONSTANT_ELEMENTS == 1 << 28
