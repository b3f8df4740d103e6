"""onnxruntime sessions and the choice of device (vaesdk.runtime.session).
"""

from __future__ import annotations

import pytest

# Needs onnx (the train extra): marked, and skipped at collection where it is absent.
pytestmark = pytest.mark.train
pytest.importorskip("onnx")

import numpy as np
import onnx
import onnxruntime
from crafted import LATENT, crafted_encoder, load_error, swap_model

import vaesdk
import vaesdk.bundle.format
import vaesdk.bundle.registry
import vaesdk.runtime.session
from vaesdk.base.errors import DeviceUnavailableError, InvalidArgumentError

# ---- sessions and devices ----------------------------------------------------------------


@pytest.fixture(scope="module")
def encoder_bytes(tiny_vae_bundle) -> bytes:
    return (tiny_vae_bundle / "encoder.onnx").read_bytes()


@pytest.mark.parametrize("device", ["tpu", "cuda:x", "cuda:", "CUDA", "gpu", "", "cpu\n", "cuda:0\n", "cuda:\u0663", None, 0])
def test_create_graph_rejects_unknown_devices(encoder_bytes, device):
    with pytest.raises(InvalidArgumentError) as e:
        vaesdk.runtime.session.create_graph(encoder_bytes, device=device)
    assert "device must be 'auto', 'cpu', 'cuda' or 'cuda:N'" in str(e.value) and repr(device) in str(e.value)


@pytest.mark.parametrize("threads", [-1, 1.5, True, "2"])
def test_create_graph_rejects_bad_thread_counts(encoder_bytes, threads):
    with pytest.raises(InvalidArgumentError, match="threads must be a non-negative integer"):
        vaesdk.runtime.session.create_graph(encoder_bytes, device="cpu", threads=threads)


def test_create_graph_cpu(encoder_bytes):
    graph = vaesdk.runtime.session.create_graph(encoder_bytes, device="cpu", threads=1)
    assert graph.device == "cpu" and graph.providers == ["CPUExecutionProvider"] and graph.input_name == "x"
    mean, logvar = graph.run(np.zeros((3, 1, 28, 28), np.float32))
    assert mean.shape == logvar.shape == (3, LATENT)


def test_create_graph_cuda_runs_on_cuda_or_says_how_to_get_it(encoder_bytes):
    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        with pytest.raises(DeviceUnavailableError) as e:
            vaesdk.runtime.session.create_graph(encoder_bytes, device="cuda")
        message = str(e.value)
        assert "'cuda'" in message and "onnxruntime-gpu" in message and "--device cpu" in message
    else:
        graph = vaesdk.runtime.session.create_graph(encoder_bytes, device="cuda")
        assert graph.device == "cuda"
        assert graph.session.get_providers()[0] == "CUDAExecutionProvider"


def test_load_with_cuda_runs_on_cuda_or_raises_device_unavailable(tiny_vae_bundle):
    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        with pytest.raises(DeviceUnavailableError, match="onnxruntime-gpu"):
            vaesdk.load(tiny_vae_bundle, device="cuda")
    else:
        assert vaesdk.load(tiny_vae_bundle, device="cuda").device == "cuda"


def test_create_graph_auto_uses_cuda_only_when_it_exists(encoder_bytes):
    graph = vaesdk.runtime.session.create_graph(encoder_bytes, device="auto")
    expected = "cuda" if "CUDAExecutionProvider" in onnxruntime.get_available_providers() else "cpu"
    assert graph.device == expected
    assert graph.session.get_providers()[0] == ("CUDAExecutionProvider" if expected == "cuda" else "CPUExecutionProvider")


@pytest.fixture
def cuda_that_silently_falls_back(monkeypatch) -> list:
    """onnxruntime claims CUDA, but every session it makes runs on the CPU only."""
    real = onnxruntime.InferenceSession
    requested: list = []

    class CpuOnlySession:
        def __init__(self, model, sess_options=None, providers=None, **kwargs):
            requested.append(list(providers))
            self._inner = real(model, sess_options=sess_options, providers=["CPUExecutionProvider"])

        def get_providers(self):
            return ["CPUExecutionProvider"]

        def __getattr__(self, name):
            return getattr(self._inner, name)

    monkeypatch.setattr(vaesdk.runtime.session, "available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(onnxruntime, "InferenceSession", CpuOnlySession)
    return requested


def test_silent_cuda_fallback_is_an_error_for_device_cuda(encoder_bytes, cuda_that_silently_falls_back):
    with pytest.raises(DeviceUnavailableError) as e:
        vaesdk.runtime.session.create_graph(encoder_bytes, device="cuda:0")
    assert "did not start" in str(e.value) and "--device cpu" in str(e.value)
    (attempt,) = cuda_that_silently_falls_back
    assert attempt[0][0] == "CUDAExecutionProvider" and attempt[0][1]["device_id"] == "0"


def test_silent_cuda_fallback_gives_cpu_for_device_auto(encoder_bytes, cuda_that_silently_falls_back):
    graph = vaesdk.runtime.session.create_graph(encoder_bytes, device="auto")
    assert graph.device == "cpu"
    assert cuda_that_silently_falls_back[0][0][0] == "CUDAExecutionProvider"
    assert cuda_that_silently_falls_back[-1] == ["CPUExecutionProvider"]
    assert graph.run(np.zeros((1, 1, 28, 28), np.float32))[0].shape == (1, LATENT)


def test_silent_cuda_fallback_through_load(tiny_vae_bundle, cuda_that_silently_falls_back):
    with pytest.raises(DeviceUnavailableError):
        vaesdk.load(tiny_vae_bundle, device="cuda")
    assert vaesdk.load(tiny_vae_bundle, device="auto").device == "cpu"


def test_onnxruntime_failure_is_a_bundle_error(bundle_copy):
    # Passes every static check, but onnxruntime cannot build it (an allowed operator given an
    # attribute it does not have).
    model = onnx.load_from_string(crafted_encoder())
    model.graph.node[-1].attribute.append(onnx.helper.make_attribute("no_such_attribute", 1))
    swap_model(bundle_copy, "encoder", model.SerializeToString())
    assert "onnxruntime could not load" in load_error(bundle_copy)


def test_cancellable_stops_graph_runs_on_this_thread_only(tiny_vae_bundle):
    import threading

    from vaesdk.base.errors import CancelledError

    model = vaesdk.load(tiny_vae_bundle, device="cpu")
    event = threading.Event()
    with vaesdk.runtime.session.cancellable(event):
        assert model.sample(2, seed=0).shape[0] == 2  # not set: runs as usual
        other: list = []
        event.set()
        thread = threading.Thread(target=lambda: other.append(model.sample(2, seed=0)))
        thread.start()
        thread.join()
        assert other and other[0].shape[0] == 2  # another thread is not affected
        with pytest.raises(CancelledError, match="cancelled"):
            model.sample(2, seed=0)
    assert model.sample(2, seed=0).shape[0] == 2  # outside the block: runs again


def test_a_graph_does_not_keep_a_second_copy_of_its_model(tmp_path):
    # onnxruntime's Python session keeps the bytes it was built from unless told otherwise: for
    # a model of 128 MiB of weights the process would hold them twice for the session's life.
    import subprocess
    import sys

    weights = np.ones(32 * 2**20, np.float32)  # 128 MiB
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Add", ["x", "w"], ["y"])],
        "big",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [weights.size])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [weights.size])],
        [onnx.numpy_helper.from_array(weights, "w")],
    )
    path = tmp_path / "big.onnx"
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)]), str(path))
    script = f"""
import gc, os
import vaesdk.runtime.session as s
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
start = rss()
data = open({str(path)!r}, "rb").read()
graph = s.create_graph(data, "cpu", label="big")
del data
gc.collect()
print(rss() - start)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True).stdout
    held = float(out.split()[-1])
    # onnxruntime's own copy of the weights (128 MiB) and its arena; a second copy would be 256+.
    assert 100 < held < 200, f"the process holds {held:.0f} MiB after building a session of a 128 MiB model"
