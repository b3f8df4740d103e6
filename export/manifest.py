"""Build manifest.json for an exported bundle, through the runtime's own schema."""

from __future__ import annotations

import hashlib
import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import onnx
import onnxruntime
import torch

from vaesdk import __version__
from vaesdk.bundle.format import BUNDLE_FORMAT, io_contract, validate_manifest, version_for
from vaesdk.bundle.geometry import Geometry

from ..training.config import ModelConfig
from .onnx import OPSET, config_geometry

CREDITS_FILE = "CREDITS.txt"

IMAGE_POLICY = (
    "any supported image is converted to the model's mode (alpha composited onto black), scaled with Lanczos so "
    "its longer side equals the model size (aspect kept) and centred on a black square; see vaesdk.imaging.images"
)

FREE_SIZE_POLICY = (
    "any supported image is converted to the model's mode (alpha composited onto black) and taken at its own size, "
    "never resized; its height and width must be multiples of {m}; see vaesdk.imaging.images"
)


def _likelihood(config: ModelConfig) -> dict[str, Any]:
    units = "pixel k sits at k/255; decoder mean, logvar and factor are in these [0, 1] units"
    covariance = (
        {"covariance": "lowrank", "rank": config.rank, "covariance_form": "diag(exp(logvar)) + W W^T, W = factor [R, C*H*W] per image"}
        if config.covariance == "lowrank"
        else {"covariance": "diagonal"}
    )
    if config.likelihood == "discretized":
        return {"type": "discretized_gaussian", "bins": 256, "units": units, "edge_bins": "open-ended at 0 and 255", **covariance}
    return {
        "type": "dequantized_gaussian",
        "bins": 256,
        "units": units,
        "bound": (
            "log P(k) >= E_u[log p((k + u) / 255)] - log 255 per pixel, u ~ U(-1/2, 1/2) (Jensen); "
            "reported bits/dim are this lower bound on the discrete likelihood, estimated with seeded u"
        ),
        **covariance,
    }


def base_manifest(
    name: str,
    description: str,
    kind: str,
    geometry: Geometry,
    likelihood: dict[str, Any] | None,
    files: dict[str, Path],
    contract: dict[str, Any],
    preprocessing: str = "x = pixels / 255 as float32, layout NCHW",
    folded: int = 0,
) -> dict[str, Any]:
    """The manifest's format, image, latent, likelihood, graph and onnx entries; `folded`: how
    many doubling layers decoder.onnx computes at their input's resolution (export/upsample.py)."""
    data: dict[str, Any] = {
        "format": BUNDLE_FORMAT,
        "format_version": version_for(geometry),
        "name": name,
        "description": description,
        "kind": kind,
        "image": {
            **geometry.image_entry(),
            "color_mode": "L" if geometry.channels == 1 else "RGB",
            "dtype": "uint8",
            "value_range": [0, 255],
            "preprocessing": preprocessing,
            "input_policy": IMAGE_POLICY if geometry.fixed_size else FREE_SIZE_POLICY.format(m=geometry.multiple),
        },
        "latent": {**geometry.latent_entry(), "prior": "standard_normal" if kind == "vae" and not geometry.spatial else None},
        "likelihood": likelihood,
    }
    for role in ("encoder", "decoder"):
        blob = files[role].read_bytes()
        data[role] = {
            "file": files[role].name,
            "sha256": hashlib.sha256(blob).hexdigest(),
            "bytes": len(blob),
            **contract[role],
        }
    data["onnx"] = onnx_record(files["encoder"], folded)
    return data


def onnx_record(graph: Path, folded: int = 0) -> dict[str, Any]:
    """The manifest's `onnx` entry: the opset, `graph`'s IR version, what exported and verified
    it, and how many of the decoder's doubling layers it computes at their input's resolution."""
    return {
        "opset": OPSET,
        "ir_version": onnx.load_model(str(graph), load_external_data=False).ir_version,
        "producer": f"torch {torch.__version__} (dynamo exporter), onnx {onnx.__version__}",
        "verified_with": f"onnxruntime {onnxruntime.__version__}",
        "vaesdk": __version__,
        "doubling_layers_folded": folded,
    }


def build_manifest(
    name: str,
    config: ModelConfig,
    files: dict[str, Path],
    checkpoint: dict[str, Any],
    parity: dict[str, Any],
    description: str = "",
    folded: int = 0,
) -> dict[str, Any]:
    """A manifest for the graphs in `files`, without metrics or directions (added after evaluation)."""
    geometry = config_geometry(config)
    contract = io_contract(config.kind, geometry, config.factor_channels // config.channels)
    data = base_manifest(name, description, config.kind, geometry, _likelihood(config) if config.kind == "vae" else None, files, contract, folded=folded)
    data["parity"] = parity
    training = {
        "dataset": checkpoint["dataset"],
        "epochs": checkpoint["epochs_done"],
        "best_epoch": checkpoint["best_epoch"] + 1,
        "best_val_objective": checkpoint["best_objective"],
        "objective": checkpoint["objective"],
        "seed": checkpoint["config"]["seed"],
        "command": checkpoint["command"],
        "schedule": checkpoint.get("schedule"),
        "config": checkpoint["config"],
        "torch": checkpoint.get("torch"),
        "machine": platform.machine(),
    }
    training["dataset"] = {k: v for k, v in training["dataset"].items() if k != "data_dir"}
    # An image folder's CREDITS.txt (scripts/emoji-data writes one) travels with the weights.
    credits = Path(checkpoint["dataset"].get("data_dir") or "") / CREDITS_FILE
    if checkpoint["dataset"].get("data_dir") and credits.is_file():
        training["dataset"]["credits"] = credits.read_text(encoding="utf-8").strip()
    data["training"] = training
    data["created"] = datetime.now(timezone.utc).replace(microsecond=0).isoformat()
    validate_manifest(data)
    return data

