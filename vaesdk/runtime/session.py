"""onnxruntime sessions: the one place that chooses the execution provider.

The choice is verified after the session exists: onnxruntime silently falls back to the CPU
when the CUDA provider is listed but cannot start (missing CUDA or cuDNN libraries, no GPU),
so `get_providers()` is read back rather than trusted.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnxruntime as ort

from ..base.errors import BundleError, CancelledError, DeviceUnavailableError, InferenceError, InvalidArgumentError

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
MAX_THREADS = 1024
DEVICE_RE = re.compile(r"^(auto|cpu|cuda(:[0-9]+)?)\Z")

# HEURISTIC picks cuDNN convolution algorithms without benchmarking every candidate on the
# first call (the default, EXHAUSTIVE, makes that call slow for each new input shape).
CUDA_OPTIONS = {"cudnn_conv_algo_search": "HEURISTIC", "do_copy_in_default_stream": "1"}


def available_providers() -> list[str]:
    """The onnxruntime execution providers this installation has (CUDAExecutionProvider
    with onnxruntime-gpu), whether or not their hardware is present."""
    return list(ort.get_available_providers())


def _options(threads: int | None, quiet: bool, sized: bool = True) -> ort.SessionOptions:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if not sized:
        # A graph whose sides change from call to call (spatial latents): the memory pattern
        # plans one block for every intermediate tensor of a run, which for such graphs doubled
        # the peak (the tiny AutoencoderKL's decoder at 1024x1024: 4,377 MiB with it, 2,193
        # without, no slower).
        opts.enable_mem_pattern = False
    if threads:
        opts.intra_op_num_threads = threads
    # Between the parallel parts of a run onnxruntime's pool threads spin by default, holding
    # cores that other work (another session, the caller's own threads, other processes) is
    # waiting for; with spinning off the emoji decoders ran 1.4x to 1.6x faster at batch 1, 16
    # and 256 on a busy 2-core machine, and Fashion-MNIST's no slower (docs/performance.md).
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # Errors only: onnxruntime's failures reach the caller as one-line errors (BundleError,
    # InferenceError, DeviceUnavailableError), and its warnings (a failed CUDA attempt under
    # device='auto', arena and provider notes) are colour-coded log lines for its developers,
    # not for users of a bundle; the device that really runs is checked after creation.
    opts.log_severity_level = 3
    return opts


_cancel = threading.local()


@contextmanager
def cancellable(event: threading.Event) -> Iterator[None]:
    """Within this block, on this thread, every graph run first checks `event` and raises
    CancelledError once it is set: work whose caller stopped waiting ends at its next batch."""
    previous = getattr(_cancel, "event", None)
    _cancel.event = event
    try:
        yield
    finally:
        _cancel.event = previous


# How long the load-time run of each graph on one input may take.
PROBE_SECONDS = 20.0


@dataclass
class Graph:
    """One ONNX graph in one session; `device` is what really runs it ('cuda' or 'cpu')."""

    session: ort.InferenceSession
    device: str
    input_name: str

    @property
    def providers(self) -> list[str]:
        return self.session.get_providers()

    def run(self, x: np.ndarray, outputs: list[str] | None = None) -> list[np.ndarray]:
        # InferenceSession.run is thread-safe; nothing here keeps per-call state.
        event = getattr(_cancel, "event", None)
        if event is not None and event.is_set():
            raise CancelledError("the work was cancelled: its caller stopped waiting")
        try:
            return self.session.run(outputs, {self.input_name: x})
        except Exception as e:  # onnxruntime raises its own exception types
            raise InferenceError(
                f"onnxruntime failed on a batch of {len(x)} on {self.device}: {str(e).splitlines()[0][:300]}; "
                "try a smaller batch size (--batch-size) or --device cpu"
            ) from None


def create_graph(model: bytes, device: str = "auto", threads: int | None = None, label: str = "model", sized: bool = True) -> Graph:
    """A session for `model` on `device` ('auto', 'cpu', 'cuda' or 'cuda:N'); `sized=False`
    for a graph whose image sides vary between calls."""
    if not isinstance(device, str) or not DEVICE_RE.match(device):
        raise InvalidArgumentError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r:.80}")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or not 0 <= threads <= MAX_THREADS):
        raise InvalidArgumentError(f"threads must be a non-negative integer, at most {MAX_THREADS} (0 = onnxruntime's default), got {threads!r:.80}")
    if device != "cpu":
        device_id = int(device.split(":")[1]) if ":" in device else 0
        if CUDA in available_providers():
            providers = [(CUDA, {**CUDA_OPTIONS, "device_id": str(device_id)}), CPU]
            try:
                session = ort.InferenceSession(model, sess_options=_options(threads, device == "auto", sized), providers=providers)
            except Exception as e:  # e.g. a device_id beyond the GPUs present
                if device != "auto":
                    raise DeviceUnavailableError(f"{_cuda_problem(device)} (onnxruntime: {str(e).splitlines()[0][:200]})") from None
            else:
                if session.get_providers()[0] == CUDA:
                    return Graph(_settled(session), "cuda", session.get_inputs()[0].name)
        if device != "auto":
            raise DeviceUnavailableError(_cuda_problem(device))
    session = _session(model, [CPU], threads, False, label, sized)
    return Graph(_settled(session), "cpu", session.get_inputs()[0].name)


def _settled(session: ort.InferenceSession) -> ort.InferenceSession:
    """The session without its copy of the model file. onnxruntime's Python session keeps the
    bytes it was built from for as long as it lives, only to rebuild itself on another provider
    when one fails at run time (and to say so on stdout); that is a second copy of every weight
    (190 MiB for Stable Diffusion's VAE decoder). With the fallback off, a provider failure is
    the InferenceError that Graph.run raises, and the bytes are released."""
    session.disable_fallback()
    if getattr(session, "_model_bytes", None) is not None:
        session._model_bytes = None
    return session


def _session(model: bytes, providers: list, threads: int | None, quiet: bool, label: str, sized: bool = True) -> ort.InferenceSession:
    try:
        return ort.InferenceSession(model, sess_options=_options(threads, quiet, sized), providers=providers)
    except Exception as e:  # onnxruntime raises its own exception types for bad graphs
        raise BundleError(f"onnxruntime could not load {label}: {str(e).splitlines()[0][:300]}") from None


def _cuda_problem(device: str) -> str:
    if CUDA not in available_providers():
        return (
            f"device {device!r} requested but this onnxruntime has no CUDA provider (it offers {', '.join(available_providers())}); "
            "replace it with the GPU build: pip uninstall onnxruntime && pip install onnxruntime-gpu, or use --device cpu"
        )
    return (
        f"device {device!r} requested but the CUDA provider did not start (no usable GPU, or CUDA/cuDNN libraries missing); "
        "check nvidia-smi and the CUDA/cuDNN versions onnxruntime-gpu needs, or use --device cpu"
    )


def create_graphs(
    models: dict[str, bytes], device: str = "auto", threads: int | None = None, label: str = "bundle", sized: bool = True
) -> tuple[Graph, Graph]:
    """(encoder, decoder) sessions on one device: under 'auto', if either graph fell back to
    the CPU, both run there (mixing providers would copy every batch between devices)."""
    encoder = create_graph(models["encoder"], device, threads, f"{label}/encoder", sized)
    decoder = create_graph(models["decoder"], device, threads, f"{label}/decoder", sized)
    if device == "auto" and encoder.device != decoder.device:
        encoder = create_graph(models["encoder"], "cpu", threads, f"{label}/encoder", sized)
        decoder = create_graph(models["decoder"], "cpu", threads, f"{label}/decoder", sized)
    return encoder, decoder


def verify_output_contract(encoder: Graph, decoder: Graph, manifest: Any, label: str) -> None:
    """Run each graph once on one zero input and compare the real output shapes with the
    manifest's: a graph may declare the right shapes and compute others, which would
    otherwise surface later as a numpy broadcasting error far from its cause."""
    geometry = manifest.geometry
    h, w = geometry.probe_size()
    image, latent = (1, geometry.channels, h, w), (1, *geometry.latent_shape(h, w))
    vae = manifest.kind == "vae"
    checks = (
        (encoder, np.zeros(image, np.float32), latent, "encoder", ["mean", "logvar"] if vae else ["mean"]),
        (decoder, np.zeros(latent, np.float32), image, "decoder", [o for o in manifest.decoder_outputs if o != "factor"]),
    )
    for graph, x, want, role, outputs in checks:
        # A bundle's operators are bounded at reading (bundle.reading.check_operators); the
        # clock bounds the rest: onnxruntime stops a run whose terminate flag is set.
        options = ort.RunOptions()
        timer = threading.Timer(PROBE_SECONDS, lambda: setattr(options, "terminate", True))
        timer.start()
        try:
            results = graph.session.run(outputs, {graph.input_name: x}, options)
        except Exception as e:  # onnxruntime's own exception types
            if options.terminate:
                raise BundleError(
                    f"the {role} of {label} did not finish one input within {PROBE_SECONDS:g} s; the model file is broken or hostile"
                ) from None
            raise BundleError(f"the {role} of {label} fails on one input: {str(e).splitlines()[0][:300]}") from None
        finally:
            timer.cancel()
        for name, out in zip(outputs, results):
            if tuple(out.shape) != want or out.dtype != np.float32:
                raise BundleError(
                    f"the {role} of {label} returns '{name}' as {out.dtype} {list(out.shape)} for one input; "
                    f"its manifest promises float32 {list(want)}: the model file does not match its manifest"
                )
