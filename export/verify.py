"""The parity gate: onnxruntime must reproduce PyTorch on the same inputs, or export fails.

Inputs cover random images, real images, batch size 1, random prior latents, the
encoder's own latents for the real images, and far-out latents (|z| = 4), so both the
typical and the extreme ranges of every output are compared.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from vaesdk.base.errors import BundleError
from vaesdk.runtime.session import create_graph

from ..training.model import VAE

# float32 convolutions summed in a different order differ by ~1e-6 relative; allow a
# margin for deeper or wider models while still catching any real graph difference.
ATOL = 1e-4
RTOL = 1e-4


@dataclass
class ParityReport:
    max_abs_error: dict[str, float]
    worst_ratio: float  # max |a - b| / (ATOL + RTOL |b|); <= 1 passes
    cases: dict[str, int]

    def as_manifest(self) -> dict:
        return {
            "tolerance": {"atol": ATOL, "rtol": RTOL, "rule": "|onnx - torch| <= atol + rtol * |torch| elementwise"},
            "max_abs_error": self.max_abs_error,
            "worst_error_to_tolerance": self.worst_ratio,
            "cases": self.cases,
            "provider": "CPUExecutionProvider",
        }


def check_parity(model: VAE, encoder_onnx: bytes, decoder_onnx: bytes, real_images: np.ndarray, seed: int = 0) -> ParityReport:
    """real_images: uint8 [N, H, W, C]. Raises BundleError when any output is out of tolerance."""
    c = model.config
    rng = np.random.default_rng(seed)
    model = model.eval()
    enc = create_graph(encoder_onnx, "cpu", label="encoder.onnx")
    dec = create_graph(decoder_onnx, "cpu", label="decoder.onnx")
    real = real_images.transpose(0, 3, 1, 2).astype(np.float32) / 255.0
    image_cases = {
        "random_images": rng.random((32, c.channels, c.image_size, c.image_size), dtype=np.float32),
        "real_images": real,
        "single_image": real[:1],
    }
    out_names = ["mean", "logvar"] if c.kind == "vae" else ["mean"]
    decoder_names = out_names + (["factor"] if c.factor_channels else [])
    errors: dict[str, float] = {}
    worst = 0.0

    def compare(label: str, ours: list[np.ndarray], theirs: tuple[torch.Tensor, ...]) -> None:
        nonlocal worst
        names = decoder_names if label == "decoder" else out_names
        if len(ours) != len(theirs):
            raise BundleError(f"parity: {label} has {len(ours)} outputs in onnxruntime, {len(theirs)} in torch")
        for name, a, b in zip(names, ours, theirs):
            b = b.numpy()
            if a.shape != b.shape:
                raise BundleError(f"parity: {label} output '{name}' has shape {a.shape} in onnxruntime, {b.shape} in torch")
            diff = np.abs(a.astype(np.float64) - b)
            key = f"{label}.{name}"
            errors[key] = max(errors.get(key, 0.0), float(diff.max()))
            worst = max(worst, float((diff / (ATOL + RTOL * np.abs(b))).max()))

    latents = []
    with torch.no_grad():
        for case, x in image_cases.items():
            ours = enc.run(x, out_names)
            compare("encoder", ours, model.encoder(torch.from_numpy(x)))
            if case == "real_images":
                latents.append(ours[0])
        latent_cases = {
            "prior_latents": rng.standard_normal((64, c.latent_dim), dtype=np.float32),
            "encoded_latents": latents[0],
            "far_latents": 4.0 * np.sign(rng.standard_normal((16, c.latent_dim))).astype(np.float32),
            "single_latent": rng.standard_normal((1, c.latent_dim), dtype=np.float32),
        }
        for z in latent_cases.values():
            compare("decoder", dec.run(z, decoder_names), model.decoder(torch.from_numpy(z)))
    cases = {k: len(v) for k, v in {**image_cases, **latent_cases}.items()}
    report = ParityReport(errors, worst, cases)
    if worst > 1.0:
        detail = ", ".join(f"{k}={v:.2e}" for k, v in errors.items())
        raise BundleError(
            f"parity gate failed: onnxruntime differs from PyTorch by up to {worst:.1f}x the tolerance "
            f"(atol={ATOL}, rtol={RTOL}); max abs errors: {detail}. The export is not written"
        )
    return report
