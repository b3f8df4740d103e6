"""Checkpoint modules -> encoder.onnx and decoder.onnx, each self-contained (weights inside)."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import onnx
import torch

from vaesdk.bundle.format import io_contract
from vaesdk.base.errors import BundleError, InvalidArgumentError

from vaesdk.bundle.geometry import MAX_IMAGE_SIDE, Geometry

from ..training.config import ModelConfig
from ..training.model import VAE
from .upsample import folded_copy

OPSET = 18


def export_module(
    module: torch.nn.Module, example: torch.Tensor, input_name: str, output_names: list[str], path: Path, *, sides: int | None = None
) -> None:
    """Export `module` (one tensor in, a tensor or a tuple of tensors out) to `path` with a
    dynamic batch axis N, weights inside the file; checked by onnx.checker. `sides` = m also
    makes the input's last two axes (height and width of [N, C, H, W]) dynamic, each any
    multiple of m up to MAX_IMAGE_SIDE: m = f for the images of a model with spatial latents,
    1 for its latents."""
    batch = torch.export.Dim("N", min=1, max=1 << 20)
    axes = {0: batch} if sides is None else {0: batch, **_side_axes(sides)}
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        # The exporter narrates its internals as warnings; the checker and the parity gate judge the result.
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module,
            (example,),
            dynamo=True,
            input_names=[input_name],
            output_names=output_names,
            dynamic_shapes={input_name: axes},
            opset_version=OPSET,
            external_data=False,
            optimize=True,
            verbose=False,
        )
    proto = program.model_proto
    for t in proto.graph.initializer:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            raise BundleError(f"{path.name}: exporter stored {t.name} externally; bundles must be self-contained")
    onnx.save_model(proto, str(path), save_as_external_data=False)
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as e:
        raise BundleError(f"{path.name} fails onnx.checker: {str(e).splitlines()[0]}") from None


def _side_axes(step: int) -> dict[int, object]:
    """Axes 2 and 3 as dynamic sizes step*h and step*w (torch.export's derived dimensions)."""
    if not 1 <= step <= MAX_IMAGE_SIDE:
        raise InvalidArgumentError(f"sides={step!r} must be an integer in 1..{MAX_IMAGE_SIDE}: the step of the dynamic height and width")
    h, w = (torch.export.Dim(n, min=1, max=MAX_IMAGE_SIDE // step) for n in ("h", "w"))
    return {2: h, 3: w} if step == 1 else {2: step * h, 3: step * w}


def config_geometry(config: ModelConfig) -> Geometry:
    """The geometry of a model this project trains: a square image, flat latents."""
    return Geometry(config.channels, config.image_size, config.image_size, config.latent_dim)


def export_graphs(model: VAE, out_dir: Path) -> tuple[dict[str, Path], int]:
    """Write encoder.onnx and decoder.onnx into out_dir with the bundle contract's I/O names;
    returns their paths and how many of the decoder's doubling layers the graph computes at
    their input's resolution (export/upsample.py)."""
    c = model.config
    model = model.eval()
    contract = io_contract(c.kind, config_geometry(c), c.factor_channels // c.channels)
    paths = {"encoder": out_dir / "encoder.onnx", "decoder": out_dir / "decoder.onnx"}
    decoder, folded = folded_copy(model.decoder, torch.randn(2, c.latent_dim))
    with torch.no_grad():
        export_module(
            model.encoder,
            torch.rand(2, c.channels, c.image_size, c.image_size),
            "x",
            [o["name"] for o in contract["encoder"]["outputs"]],
            paths["encoder"],
        )
        export_module(
            decoder,
            torch.randn(2, c.latent_dim),
            "z",
            [o["name"] for o in contract["decoder"]["outputs"]],
            paths["decoder"],
        )
    return paths, folded
