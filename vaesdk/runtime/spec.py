"""What a bundle's facts decide about a model, with no onnxruntime session: its kind, image
and latent shapes, priors, directions, anomaly calibration, dimensions by usage, what it can do,
and its description. `Model` is built on a `ModelSpec`; argument checks (`arguments`), anomaly
maths and descriptions use the spec, never the model.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..maths.anomaly import Calibration, read_calibration
from ..bundle.format import FORMAT_VERSION, MANIFEST, Manifest
from ..bundle.geometry import Geometry
from ..bundle.reading import Bundle
from ..base.errors import InvalidArgumentError, UnsupportedOperationError
from ..imaging.images import ImageInput, as_batch
from ..maths.latent import ACTIVE_KL_NATS, check_latents  # ACTIVE_KL_NATS: the one definition, shared with training and evaluation
from ..maths.pixels import PixelLikelihood
from ..maths.priors import PriorSet, read_priors
from ..version import __version__


@dataclass(frozen=True)
class ModelSpec:
    """A bundle's manifest and priors, read and checked; `path` is the bundle folder."""

    path: Path
    manifest: Manifest
    prior_set: PriorSet

    @classmethod
    def from_bundle(cls, bundle: Bundle) -> ModelSpec:
        m = bundle.manifest
        geometry = m.geometry
        # Latents of one shape have a dimension a prior draws in; a free-size model's have none.
        dim = geometry.latent_dim if geometry.fixed_size or not geometry.spatial else 0
        fitted = read_priors(
            m.data["latent"], bundle.priors, dim,
            lambda kind, name, entry: f"{bundle.path}/{entry['file']}" if kind.in_file else f"{bundle.path}/{MANIFEST} latent.{kind.key}.{name}",
        )  # fmt: skip
        # N(0, I) is the prior of flat VAE latents only: spatial latents' draws from it decode to noise.
        own_prior = m.kind if not geometry.spatial else "ae"
        return cls(bundle.path, m, PriorSet(m.name, own_prior, dim, fitted, m.default_prior))

    def with_manifest(self, manifest: Manifest) -> ModelSpec:
        """The same bundle after a manifest-only change (a direction added): the priors stay."""
        return replace(self, manifest=manifest)

    # ---- shapes and kind ------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def kind(self) -> str:
        return self.manifest.kind

    @property
    def latent_dim(self) -> int:
        return self.manifest.latent_dim

    @property
    def geometry(self) -> Geometry:
        """The image and latent shapes."""
        return self.manifest.geometry

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(H, W, C) of the images the model takes and makes (a fixed-size model)."""
        return self.geometry.image_shape

    def to_batch(self, images: ImageInput | list[ImageInput]) -> np.ndarray:
        """Images as this model takes them: uint8 [N, H, W, C] by the input policy of `images.as_batch`."""
        h, w, c = self.image_shape
        return as_batch(images, h if h == w else (h, w), c)

    # ---- what it can do -------------------------------------------------------------------

    @property
    def is_vae(self) -> bool:
        """A probabilistic model: a prior N(0, I), q(z|x) and p(x|z) with variances, likelihoods."""
        return self.kind == "vae"

    @property
    def can_sample(self) -> bool:
        """Whether the model has a prior to sample from (a VAE, or an ae with a fitted prior)."""
        return self.prior_set.default is not None

    @property
    def pixels(self) -> PixelLikelihood | None:
        """p(x|z): its kind, the decoder outputs it needs, log p(x|z) and draws (None: an ae)."""
        return self.manifest.pixel_likelihood

    def require_pixel_draws(self) -> None:
        """Raise UnsupportedOperationError unless pixels can be drawn from p(x|z)."""
        self.require_vae("sampling pixels from p(x|z)")
        assert self.pixels is not None
        self.pixels.require_draws()

    def require_vae(self, what: str) -> None:
        """Raise UnsupportedOperationError, naming `what`, unless this model is a VAE."""
        if not self.is_vae:
            raise UnsupportedOperationError(
                f"{what} needs a probabilistic model (a VAE); {self.name!r} is a plain autoencoder with no "
                "prior or likelihood. Use a VAE bundle, or the encode/decode/edit operations"
            )

    # ---- latents --------------------------------------------------------------------------

    @property
    def directions(self) -> dict[str, np.ndarray]:
        return {k: np.asarray(v["vector"], np.float32) for k, v in self.manifest.directions.items()}

    def direction_vector(self, direction: str | np.ndarray) -> np.ndarray:
        """A named direction's vector, or a given vector checked: float32 [D]."""
        if isinstance(direction, str):
            known = self.directions
            if direction not in known:
                names = ", ".join(sorted(known)) or "none (add one with `vae directions add`)"
                raise InvalidArgumentError(f"unknown direction {direction!r}; this model has: {names}")
            return known[direction]
        return check_latents(direction, self.latent_dim, "direction")[0]

    def dims_by_usage(self) -> list[int]:
        """Latent dimensions, most used first (average KL over the export's reference set).
        Without that record, in index order."""
        kl = self.manifest.data["latent"].get("kl_per_dim")
        if kl is None:
            return list(range(self.latent_dim))
        return [int(i) for i in np.argsort(-np.asarray(kl), kind="stable")]

    @property
    def calibration(self) -> Calibration | None:
        """The anomaly score's calibration, or None when the bundle has none."""
        return read_calibration(self.manifest.data)

    # ---- description ----------------------------------------------------------------------

    def describe(self, device: str, providers: list[str]) -> dict[str, Any]:
        """The description of the model as a plain JSON-ready dict (see `Model.describe`),
        for a model running on `device` with `providers`."""
        data = self.manifest.data
        g = self.geometry
        kl = data["latent"].get("kl_per_dim")
        training = data.get("training") or {}
        return {
            "name": self.name,
            "description": data.get("description", ""),
            "kind": self.kind,
            "format_version": data.get("format_version", FORMAT_VERSION),
            "path": str(self.path),
            "image": {"height": g.height, "width": g.width, "channels": g.channels},
            "latent_dim": self.latent_dim if (g.fixed_size or not g.spatial) else None,
            "geometry": g.describe(),
            "kl_per_dim": [float(x) for x in kl] if kl is not None else None,
            "dims_by_usage": self.dims_by_usage() if not g.spatial else None,
            "active_kl_threshold": ACTIVE_KL_NATS,
            "active_dims": int(np.sum(np.asarray(kl) > ACTIVE_KL_NATS)) if kl is not None else None,
            "priors": self.prior_set.names,
            "default_prior": self.prior_set.default,
            "prior_descriptions": self.prior_set.describe(),
            "directions": sorted(self.manifest.directions),
            "metrics": data.get("metrics") or {},
            "parity_max_abs_error": (data.get("parity") or {}).get("max_abs_error"),
            "training": {k: training.get(k) for k in ("dataset", "epochs", "best_epoch", "command")},
            "files": {
                "manifest": MANIFEST,
                "encoder": data["encoder"]["file"],
                "decoder": data["decoder"]["file"],
                **{f"prior:{name}": entry["file"] for name, entry in self.manifest.prior_files.items()},
            },
            "device": device,
            "providers": providers,
            "vaesdk": __version__,
        }
