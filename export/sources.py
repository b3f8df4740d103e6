"""Where an imported VAE comes from: one function per source, each returning the modules and
what it knows of them (`Imported`), for `export_vae`.

- `from_python("FILE.py:FUNCTION")`: FUNCTION() returns (encoder, decoder);
- `from_pythae(FOLDER)`: a folder written by pythae's `save()`, rebuilt with pythae's own
  classes; a folder holding pickled architectures is refused, never unpickled;
- `from_diffusers(FOLDER)`: refused with a pointer: a diffusers autoencoder's spatial latents
  make a bundle that `export_vae` does not write; `vaesdk.export.diffusers.export_diffusers`
  (`vae export --from diffusers`) exports it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from vaesdk.base.errors import BundleError, InvalidArgumentError, MissingDependencyError

SOURCES = ("python", "pythae", "diffusers")


@dataclass
class Imported:
    """Modules and what is known of them: geometry and likelihood where the source records
    them (None: the caller must say), and the manifest's record of the origin."""

    encoder: nn.Module
    decoder: nn.Module
    record: dict[str, Any]
    image_size: int | tuple[int, int] | None = None
    channels: int | None = None
    likelihood: str | None = None
    pixel_range: str | None = None
    notes: list[str] = field(default_factory=list)


def load_source(kind: str, where: str) -> Imported:
    if kind == "python":
        return from_python(where)
    if kind == "pythae":
        return from_pythae(where)
    if kind == "diffusers":
        return from_diffusers(where)
    raise InvalidArgumentError(f"--from {kind!r:.40} is not one of {', '.join(SOURCES)}")


def from_python(target: str) -> Imported:
    """FILE.py:FUNCTION, FUNCTION taking no arguments and returning (encoder, decoder)."""
    path_text, _, function = str(target).rpartition(":")
    if not path_text or not function.isidentifier():
        raise InvalidArgumentError(f"--from python takes FILE.py:FUNCTION, got {target!r:.120}")
    path = Path(path_text)
    if not path.is_file():
        raise InvalidArgumentError(f"{path} is not a file; --from python takes FILE.py:FUNCTION")
    code = path.read_bytes()
    name = f"vaesdk_import_{hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise InvalidArgumentError(f"{path} cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    sys.path.insert(0, str(path.resolve().parent))  # the file's own imports of its neighbours
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(path.resolve().parent))
    fn = getattr(module, function, None)
    if not callable(fn):
        raise InvalidArgumentError(f"{path} defines no function {function!r}")
    got = fn()
    if not (isinstance(got, (tuple, list)) and len(got) == 2 and all(isinstance(m, nn.Module) for m in got)):
        raise InvalidArgumentError(f"{path_text}:{function}() must return (encoder, decoder), two torch.nn.Module; got {type(got).__name__}")
    record = {"from": "python", "function": f"{path.name}:{function}", "source_sha256": hashlib.sha256(code).hexdigest()}
    return Imported(got[0], got[1], record)


# pythae's reconstruction losses -> the likelihood they train: its "mse" is the sum of squared
# errors, -log N(x; mean, sigma^2) up to a constant for sigma^2 = 1/2.
_PYTHAE_LOSSES = {"bce": "bernoulli", "mse": f"gaussian:{math.sqrt(0.5)!r}"}


def from_pythae(folder: str) -> Imported:
    root = Path(folder)
    config_path = root / "model_config.json"
    if not config_path.is_file() or not (root / "model.pt").is_file():
        raise InvalidArgumentError(f"{root} is not a pythae model folder (model_config.json and model.pt, as pythae's save() writes)")
    pickled = sorted(p.name for p in root.glob("*.pkl"))
    if pickled:
        raise BundleError(
            f"{root} stores its architecture as pickled code ({', '.join(pickled)}); vaesdk never unpickles a file. Export it "
            "with --from python FILE.py:FUNCTION, building the encoder and decoder in code and loading model.pt's weights"
        )
    try:
        import pythae.models
        import torch
    except ImportError:
        raise MissingDependencyError("--from pythae needs pythae: pip install '.[import]' in a checkout (or pip install pythae)") from None
    config = json.loads(config_path.read_text())
    config_name = str(config.get("name", ""))
    model_name = config_name.removesuffix("Config")
    model_cls, config_cls = getattr(pythae.models, model_name, None), getattr(pythae.models, config_name, None)
    if model_cls is None or config_cls is None:
        raise InvalidArgumentError(f"{config_path}: {config_name!r:.60} is not a pythae model this pythae knows")
    model_config = config_cls.from_json_file(str(config_path))
    model = model_cls(model_config)
    state = torch.load(root / "model.pt", map_location="cpu", weights_only=True)
    model.load_state_dict(state.get("model_state_dict", state))
    if not hasattr(model, "encoder") or not hasattr(model, "decoder"):
        raise InvalidArgumentError(f"{config_name} has no encoder and decoder modules")
    channels, height, width = (list(config.get("input_dim") or []) + [None, None, None])[:3]
    loss = config.get("reconstruction_loss")
    record = {"from": "pythae", "folder": root.name, "model": model_name, "pythae": getattr(pythae, "__version__", "unknown"), "config": config}
    size = height if height == width else (height, width)  # a non-square size makes a format-version-3 bundle
    return Imported(model.encoder, model.decoder, record, size, channels, _PYTHAE_LOSSES.get(loss), "0,1")


def from_diffusers(folder: str) -> Imported:
    """diffusers autoencoders have spatial latents and a free image size, which `export_vae`
    (flat latents of one size) does not write: `vaesdk.export.diffusers.export_diffusers`
    reads and exports them, and `vae export --from diffusers` runs it."""
    raise InvalidArgumentError(
        f"{folder}: a diffusers autoencoder has spatial latents [C, H/f, W/f], which export_vae does not write; export it with "
        "vaesdk.export.diffusers.export_diffusers (what `vae export --from diffusers` runs)"
    )
