"""The parity gate: onnxruntime must reproduce PyTorch on the same inputs, or export fails.

Inputs cover random images, the caller's real images, batch size 1, a batch of the
runtime's default size (256), random prior latents, the encoder's own latents for the real
images, and far-out latents (|z| = 4), so both the typical and the extreme ranges of every
output are compared, at the batch sizes the runtime uses.

The tolerance is relative and absolute, scaled to each output's magnitude:

    |onnx - torch| <= atol * max(1, max |torch|) + rtol * |torch|    elementwise,

with max |torch| taken over the output in that case. A graph of group norms or attention
rounds float32 sums in another order than PyTorch; an output in the hundreds rounds in
proportion. A miss names the worst element: output, case, index, both values.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from vaesdk.base.errors import BundleError
from vaesdk.runtime.model import DEFAULT_BATCH
from vaesdk.runtime.session import create_graph

from ..training.model import VAE


@dataclass(frozen=True)
class Tolerance:
    """The parity gate's tolerance (module docstring): `atol` scaled by the output's
    magnitude, plus `rtol` of each element's own value."""

    atol: float = 1e-4
    rtol: float = 1e-4

    def as_manifest(self) -> dict:
        return {"atol": self.atol, "rtol": self.rtol, "rule": "|onnx - torch| <= atol * max(1, max |torch|) + rtol * |torch| elementwise, max over the output in each case"}


# float32 convolutions summed in a different order differ by ~1e-6 relative; the default
# allows a margin for deeper or wider models while still catching any real graph difference.
DEFAULT_TOLERANCE = Tolerance()


@dataclass
class ParityReport:
    max_abs_error: dict[str, float]
    worst_ratio: float  # max |a - b| / allowed; <= 1 passes
    cases: dict[str, int]
    tolerance: Tolerance = DEFAULT_TOLERANCE
    worst: str = ""  # the worst element, in words

    def as_manifest(self) -> dict:
        return {
            "tolerance": self.tolerance.as_manifest(),
            "max_abs_error": self.max_abs_error,
            "worst_error_to_tolerance": self.worst_ratio,
            "worst_element": self.worst,
            "cases": self.cases,
            "provider": "CPUExecutionProvider",
        }


@dataclass
class Gate:
    """The parity rule: onnxruntime's outputs against torch's, each element within atol times
    the output's magnitude (at least 1) plus rtol times its own size; `worst` is the largest
    ratio of a difference to what is allowed, `where` names it."""

    tolerance: Tolerance
    errors: dict[str, float] = field(default_factory=dict)
    worst: float = 0.0
    where: str = ""

    def compare(self, role: str, case: str, names: Sequence[str], ours: list[np.ndarray], theirs: Sequence[torch.Tensor]) -> None:
        if len(ours) != len(theirs):
            raise BundleError(f"parity: the {role} has {len(ours)} outputs in onnxruntime, {len(theirs)} in torch")
        for name, a, b in zip(names, ours, theirs):
            b = b.detach().cpu().numpy()
            if a.shape != b.shape:
                raise BundleError(f"parity: {role} output '{name}' has shape {a.shape} in onnxruntime, {b.shape} in torch")
            if not np.isfinite(b).all():
                raise BundleError(f"parity: the {role}'s '{name}' holds NaN or infinite values in torch for the {case} case; the model itself is broken there")
            diff = np.abs(a.astype(np.float64) - b)
            key = f"{role}.{name}"
            self.errors[key] = max(self.errors.get(key, 0.0), float(diff.max()))
            allowed = self.tolerance.atol * max(1.0, float(np.abs(b).max())) + self.tolerance.rtol * np.abs(b)
            ratio = diff / allowed
            i = int(np.argmax(ratio))
            if not np.isfinite(ratio.flat[i]) or ratio.flat[i] > self.worst:
                self.worst = float(ratio.flat[i]) if np.isfinite(ratio.flat[i]) else float("inf")
                index = tuple(int(j) for j in np.unravel_index(i, ratio.shape))
                self.where = f"{key} in case {case} at {list(index)}: onnx {a.flat[i]:.7g}, torch {b.flat[i]:.7g}, allowed difference {allowed.flat[i]:.3g}"


def check_graphs(
    encoder: Callable[[torch.Tensor], Sequence[torch.Tensor]],
    decoder: Callable[[torch.Tensor], Sequence[torch.Tensor]],
    encoder_onnx: bytes,
    decoder_onnx: bytes,
    real_images: np.ndarray,
    *,
    latent_dim: int,
    encoder_outputs: Sequence[str],
    decoder_outputs: Sequence[str],
    tolerance: Tolerance = DEFAULT_TOLERANCE,
    seed: int = 0,
) -> ParityReport:
    """Compare the exported graphs with the modules they came from. `encoder` and `decoder`
    map float32 tensors (images NCHW in [0, 1]; latents [N, D]) to tuples of outputs in the
    contract's order; real_images: uint8 [N, H, W, C]. Raises BundleError on a miss."""
    rng = np.random.default_rng(seed)
    enc = create_graph(encoder_onnx, "cpu", label="encoder.onnx")
    dec = create_graph(decoder_onnx, "cpu", label="decoder.onnx")
    real = real_images.transpose(0, 3, 1, 2).astype(np.float32) / 255.0
    shape = real.shape[1:]
    image_cases = {
        "random_images": rng.random((32, *shape), dtype=np.float32),
        "real_images": real,
        "single_image": real[:1],
        f"batch_{DEFAULT_BATCH}": real[rng.integers(0, len(real), DEFAULT_BATCH)],
    }
    gate = Gate(tolerance)
    encoded = None
    with torch.no_grad():
        for case, x in image_cases.items():
            ours = enc.run(x, list(encoder_outputs))
            gate.compare("encoder", case, encoder_outputs, ours, encoder(torch.from_numpy(x)))
            if case == "real_images":
                encoded = ours[0]
        latent_cases = {
            "prior_latents": rng.standard_normal((64, latent_dim), dtype=np.float32),
            "encoded_latents": encoded,
            "far_latents": 4.0 * np.sign(rng.standard_normal((16, latent_dim))).astype(np.float32),
            "single_latent": rng.standard_normal((1, latent_dim), dtype=np.float32),
            f"batch_{DEFAULT_BATCH}_latents": rng.standard_normal((DEFAULT_BATCH, latent_dim), dtype=np.float32),
        }
        for case, z in latent_cases.items():
            gate.compare("decoder", case, decoder_outputs, dec.run(z, list(decoder_outputs)), decoder(torch.from_numpy(z)))
    cases = {k: len(v) for k, v in {**image_cases, **latent_cases}.items()}
    report = ParityReport(gate.errors, gate.worst, cases, tolerance, gate.where)
    if not gate.worst <= 1.0:
        raise BundleError(
            f"parity gate failed: onnxruntime differs from PyTorch by {gate.worst:.3g}x the tolerance (atol={tolerance.atol:g} "
            f"scaled by the output's magnitude, rtol={tolerance.rtol:g}); worst: {gate.where}. Nothing was written; "
            "pass a looser tolerance (--atol, --rtol) if the difference is float32 rounding"
        )
    return report


def check_parity(model: VAE, encoder_onnx: bytes, decoder_onnx: bytes, real_images: np.ndarray, seed: int = 0) -> ParityReport:
    """The gate for a `vae train` model. real_images: uint8 [N, H, W, C]."""
    c = model.config
    model = model.eval()
    out_names = ["mean", "logvar"] if c.kind == "vae" else ["mean"]
    decoder_names = out_names + (["factor"] if c.factor_channels else [])
    return check_graphs(
        model.encoder, model.decoder, encoder_onnx, decoder_onnx, real_images,
        latent_dim=c.latent_dim, encoder_outputs=out_names, decoder_outputs=decoder_names, seed=seed,
    )  # fmt: skip
