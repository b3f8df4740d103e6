"""The description of a loaded model as a plain dict: one source for `vae info`, the
server's /v1/models and the browser page."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from .bundle import FORMAT_VERSION, MANIFEST
from .latent import ACTIVE_KL_NATS  # the one definition, shared with training and evaluation

if TYPE_CHECKING:
    from .model import Model


def describe_model(model: Model) -> dict[str, Any]:
    from . import __version__

    data = model.manifest.data
    h, w, c = model.image_shape
    kl = data["latent"].get("kl_per_dim")
    training = data.get("training") or {}
    return {
        "name": model.name,
        "description": data.get("description", ""),
        "kind": model.kind,
        "format_version": data.get("format_version", FORMAT_VERSION),
        "path": str(model.path),
        "image": {"height": h, "width": w, "channels": c},
        "latent_dim": model.latent_dim,
        "kl_per_dim": [float(x) for x in kl] if kl is not None else None,
        "dims_by_usage": model.dims_by_usage(),
        "active_kl_threshold": ACTIVE_KL_NATS,
        "active_dims": int(np.sum(np.asarray(kl) > ACTIVE_KL_NATS)) if kl is not None else None,
        "priors": model.priors,
        "default_prior": model.default_prior,
        "directions": sorted(model.manifest.directions),
        "metrics": data.get("metrics") or {},
        "parity_max_abs_error": (data.get("parity") or {}).get("max_abs_error"),
        "training": {k: training.get(k) for k in ("dataset", "epochs", "best_epoch", "command")},
        "files": {
            "manifest": MANIFEST,
            "encoder": data["encoder"]["file"],
            "decoder": data["decoder"]["file"],
            **{f"prior:{name}": entry["file"] for name, entry in model.manifest.mixtures.items()},
        },
        "device": model.device,
        "providers": model.providers,
        "vaesdk": __version__,
    }
