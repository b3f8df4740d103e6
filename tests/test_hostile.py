"""Hostile arguments to every public function: the answer is a valid result or a
VaesdkError with a one-line message, never another exception (numpy broadcasting, OSError,
TypeError, MemoryError, ...). The named cases are the ones found by hand; the property test
drives each function with values drawn by hypothesis."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import vaesdk
from vaesdk.bundle.format import MANIFEST

ROOT = Path(__file__).resolve().parents[1]
SHIRT = (ROOT / "docs" / "images" / "inputs" / "shirt.png").read_bytes()
IMAGES = np.zeros((2, 28, 28, 1), np.uint8)


def assert_one_line_error(fn, *words: str) -> vaesdk.VaesdkError:
    with pytest.raises(vaesdk.VaesdkError) as info:
        fn()
    message = str(info.value)
    assert message and "\n" not in message
    for w in words:
        assert w in message, message
    return info.value


@pytest.mark.parametrize(
    "call,words",
    [
        (lambda m: vaesdk.load("a\0b"), ("NUL byte",)),
        (lambda m: vaesdk.load("x" * 5000), ("limited",)),
        (lambda m: vaesdk.load("/tmp/" + "y" * 300), ("file names are limited to 255",)),
        (lambda m: m.encode("a\0b.png"), ("NUL byte",)),
        (lambda m: m.encode("/tmp/" + "y" * 300 + ".png"), ("255",)),
        (lambda m: vaesdk.save_png("a\0b.png", IMAGES[0]), ("NUL byte",)),
        (lambda m: vaesdk.save_png("/tmp/" + "y" * 300 + ".png", IMAGES[0]), ("255",)),
        (lambda m: m.traverse(values=["x"], seed=0), ("traversal value", "'x'")),
        (lambda m: m.traverse(dims=3, seed=0), ("dims", "3")),
        (lambda m: vaesdk.make_grid(IMAGES, ncols=-1), ("ncols", "-1")),
        (lambda m: vaesdk.make_grid(IMAGES, ncols=1.5), ("ncols", "1.5")),
        (lambda m: vaesdk.make_grid(IMAGES, ncols=10**9), ("ncols",)),
        (lambda m: vaesdk.make_grid(IMAGES, ncols=4096, scale=64), ("pixels", "limit")),
        (lambda m: m.sample(2, temperature=1e38, seed=0), ("temperature", "1e+38")),
        (lambda m: m.sample_latents(2, temperature=1e38, seed=0), ("temperature",)),
        (lambda m: vaesdk.load(device="cpu", threads=10**6), ("threads",)),
    ],
)
def test_named_hostile_inputs(bundled_model, call, words):
    assert_one_line_error(lambda: call(bundled_model), *words)


def test_traverse_range_reversed_runs_high_to_low(bundled_model):
    up = bundled_model.traverse(dims=[9], values=[-3, 0, 3], seed=1)
    down = bundled_model.traverse(dims=[9], values=[3, 0, -3], seed=1)
    assert np.array_equal(up.images[:, ::-1], down.images) and list(down.values) == [3, 0, -3]


@pytest.mark.train  # builds the graph with onnx
def test_decoder_whose_real_output_differs_from_its_declared_shape_is_refused_at_load(tiny_vae_bundle, tmp_path):
    onnx = pytest.importorskip("onnx")  # the train extra; the dev environment has it
    from onnx import TensorProto, helper, numpy_helper

    d = vaesdk.load(tiny_vae_bundle, device="cpu").latent_dim  # a diagonal decoder: mean and logvar
    weights = numpy_helper.from_array(np.zeros((d, 784), np.float32), "w")
    shape = numpy_helper.from_array(np.array([-1, 1, 14, 56], np.int64), "shape")  # 784 pixels, wrong layout
    nodes = [
        helper.make_node("MatMul", ["z", "w"], ["flat"]),
        helper.make_node("Reshape", ["flat", "shape"], ["mean"]),
        helper.make_node("Identity", ["mean"], ["logvar"]),
    ]
    declared = ["N", 1, 28, 28]
    graph = helper.make_graph(
        nodes, "liar", [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", d])],
        [helper.make_tensor_value_info("mean", TensorProto.FLOAT, declared),
         helper.make_tensor_value_info("logvar", TensorProto.FLOAT, declared)],
        initializer=[weights, shape],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10
    data = model.SerializeToString()
    bundle = tmp_path / "liar"
    shutil.copytree(tiny_vae_bundle, bundle)
    (bundle / "decoder.onnx").write_bytes(data)
    manifest = json.loads((bundle / MANIFEST).read_text())
    import hashlib

    manifest["decoder"].update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    (bundle / MANIFEST).write_text(json.dumps(manifest))
    error = assert_one_line_error(lambda: vaesdk.load(bundle, device="cpu"), "decoder", "[1, 1, 14, 56]", "[1, 1, 28, 28]")
    assert isinstance(error, vaesdk.BundleError)


# ---- property-based: every public function, hostile values -------------------------------------

SCRATCH = Path(tempfile.mkdtemp(prefix="vaesdk-hostile-"))

ints = st.sampled_from([-(2**70), -(2**63), -1, 0, 1, 2, 3, 7, 31, 32, 33, 1000, 10**6, 10**9, 2**63, 2**70])
floats = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([1e38, -1e38, 1e-320, 0.5, -0.0])
texts = st.text(max_size=12) | st.sampled_from(["", "\0", "a\0b", "x" * 300, "standard", "aggregate", "bag", "slerp", "cuda", "-", "."])
arrays = st.builds(
    lambda shape, dtype, fill: np.full(shape, fill).astype(dtype, casting="unsafe"),
    st.lists(st.sampled_from([0, 1, 2, 3, 28, 32]), min_size=0, max_size=4).map(tuple),
    st.sampled_from([np.uint8, np.float32, np.float64, np.int64, np.bool_, np.complex64, object]),
    st.sampled_from([0, 1, -1, 0.5, 255, 1e30, np.nan]),
)
hostile = st.one_of(
    st.none(), st.booleans(), ints, floats, texts, st.binary(max_size=40), arrays,
    st.lists(st.one_of(ints, floats, texts), max_size=4), st.dictionaries(texts, ints, max_size=2), st.tuples(ints, texts),
)  # fmt: skip


def _safe_path(value):
    if isinstance(value, str):
        return str(SCRATCH / value.lstrip("/"))
    return value


def calls(m: vaesdk.Model) -> dict:
    """name -> (function, {argument: a valid value}); each example replaces some arguments."""
    z = np.zeros((2, m.latent_dim), np.float32)
    return {
        "load": (lambda **k: vaesdk.load(**k), dict(name_or_path=None, device="cpu", threads=1, batch_size=8)),
        "encode": (m.encode, dict(images=IMAGES)),
        "embed": (m.embed, dict(images=IMAGES)),
        "embed_sampled": (m.embed, dict(images=IMAGES, sample_latent=True, seed=0)),
        "decode": (m.decode, dict(z=z, sample_pixels=False, seed=0)),
        "decode_params": (m.decode_params, dict(z=z)),
        "sample": (m.sample, dict(n=2, seed=0, temperature=1.0, truncation=None, sample_pixels=False, prior="standard")),
        "sample_latents": (m.sample_latents, dict(n=2, seed=0, temperature=1.0, truncation=None, prior="standard")),
        "iter_sample": (lambda **k: list(m.iter_sample(**k)), dict(n=2, seed=0, temperature=1.0, prior="standard")),
        "reconstruct": (m.reconstruct, dict(images=IMAGES, sample_latent=False, sample_pixels=False, seed=0)),
        "edit": (m.edit, dict(images=IMAGES, dim=1, direction=None, delta=1.0, sample_latent=False, seed=0)),
        "edit_latents": (m.edit_latents, dict(z=z, dim=None, direction="bag", delta=1.0)),
        "interpolate": (m.interpolate, dict(a=IMAGES[0], b=SHIRT, steps=3, method="slerp")),
        "interpolate_latents": (m.interpolate_latents, dict(a=z[0], b=z[1], steps=3, method="linear")),
        "traverse": (m.traverse, dict(image=None, dims=[0, 1], values=[-1.0, 1.0], max_dims=2, seed=0, prior="standard")),
        "score": (m.score, dict(images=IMAGES[:1], k=4, seed=0)),
        "validate": (lambda operation, **k: m.validate(operation, **k), dict(operation="edit", dim=1, delta=1.0)),
        "describe": (lambda **k: m.describe(), dict()),
        "make_grid": (vaesdk.make_grid, dict(images=IMAGES, ncols=2, padding=1, scale=2)),
        "save_png": (lambda path, **k: vaesdk.save_png(_safe_path(path), **k), dict(path="out.png", image=IMAGES[0], overwrite=True)),
        "to_pil": (vaesdk.to_pil, dict(images=IMAGES)),
        "read_inputs": (lambda **k: [b.items for b in vaesdk.read_inputs(**k)], dict(sources=[SHIRT, "nope.png"], image_shape=m, batch_size=2)),
    }


NAMES = sorted([  # listed here so each function is its own test
    "load", "encode", "embed", "embed_sampled", "decode", "decode_params", "sample", "sample_latents", "iter_sample",
    "reconstruct", "edit", "edit_latents", "interpolate", "interpolate_latents", "traverse", "score", "validate",
    "describe", "make_grid", "save_png", "to_pil", "read_inputs",
])  # fmt: skip


@pytest.mark.parametrize("name", NAMES)
def test_every_public_function_gives_a_result_or_a_vaesdk_error(bundled_model, name):
    fn, valid = calls(bundled_model)[name]
    keys = sorted(valid) or ["_"]

    @settings(max_examples=int(os.environ.get("VAESDK_HOSTILE_EXAMPLES", "25")), deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(replace=st.lists(st.sampled_from(keys), min_size=1, max_size=2, unique=True), values=st.lists(hostile, min_size=2, max_size=2))
    def check(replace, values):
        kwargs = dict(valid)
        for key, value in zip(replace, values):
            if key != "_":
                kwargs[key] = value
        try:
            fn(**kwargs)
        except vaesdk.VaesdkError as e:
            assert str(e) and "\n" not in str(e), repr(e)

    old = os.getcwd()
    os.chdir(SCRATCH)  # nothing a hostile path writes lands in the checkout
    try:
        check()
    finally:
        os.chdir(old)
