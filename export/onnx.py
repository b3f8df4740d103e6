"""Checkpoint modules -> encoder.onnx and decoder.onnx, each self-contained (weights inside)."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import onnx
import torch

from vaesdk.bundle.format import io_contract
from vaesdk.base.errors import BundleError

from ..training.model import VAE

OPSET = 18


def export_module(module: torch.nn.Module, example: torch.Tensor, input_name: str, output_names: list[str], path: Path) -> None:
    """Export `module` (one tensor in, a tensor or a tuple of tensors out) to `path` with a
    dynamic batch axis N, weights inside the file; checked by onnx.checker."""
    batch = torch.export.Dim("N", min=1, max=1 << 20)
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
            dynamic_shapes={input_name: {0: batch}},
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


def export_graphs(model: VAE, out_dir: Path) -> dict[str, Path]:
    """Write encoder.onnx and decoder.onnx into out_dir with the bundle contract's I/O names."""
    c = model.config
    model = model.eval()
    contract = io_contract(c.kind, c.channels, c.image_size, c.latent_dim, c.factor_channels // c.channels)
    paths = {"encoder": out_dir / "encoder.onnx", "decoder": out_dir / "decoder.onnx"}
    with torch.no_grad():
        export_module(
            model.encoder,
            torch.rand(2, c.channels, c.image_size, c.image_size),
            "x",
            [o["name"] for o in contract["encoder"]["outputs"]],
            paths["encoder"],
        )
        export_module(
            model.decoder,
            torch.randn(2, c.latent_dim),
            "z",
            [o["name"] for o in contract["decoder"]["outputs"]],
            paths["decoder"],
        )
    return paths
