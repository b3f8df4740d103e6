"""A bundle's shapes, in one object: the image (a fixed size, or a free one whose sides are
multiples of a step), its pixel range, and the latent (flat [D], or spatial [C, h, w] with
the factor f between image and latent sides). Every module that needs a shape asks a
`Geometry`; flat latents of one fixed square size (every format-version-2 bundle) are its
special case.

Manifest entries (format version 3; version 2 has the first form only, square, range [0, 1]):

    image  {"height": H, "width": W, "channels": C}                 a fixed size
           {"channels": C, "multiple": m}                           a free size: sides multiples of m
           optional "range": [0, 1] (the default) or [-1, 1]: the graphs' pixel units
    latent {"dim": D}                                               flat latents [D]
           {"channels": C, "factor": f}                             spatial latents [C, H/f, W/f]
           optional "scaling_factor" (default 1), "shift_factor" (default 0): a latent-diffusion
           model's latents are (z - shift_factor) * scaling_factor; "channel_mean",
           "channel_std": per-channel statistics of z over the export's images
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..base.errors import InvalidArgumentError

MAX_IMAGE_SIDE = 4096
MAX_LATENT_DIM = 65536
MAX_LATENT_CHANNELS = 1024
MAX_FACTOR = 64
PIXEL_RANGES = ((0.0, 1.0), (-1.0, 1.0))


@dataclass(frozen=True)
class Geometry:
    """The image and latent shapes of one model.

    channels          image channels (1 or 3)
    height, width     a fixed image size, or None for a free one
    multiple          a free size's sides are multiples of this (1 for a fixed size)
    latent_channels   C of spatial latents [C, h, w], or D of flat latents [D]
    factor            image side / latent side of spatial latents; None for flat latents
    pixel_range       (low, high): the graphs' units for pixel 0 and pixel 255
    """

    channels: int
    height: int | None
    width: int | None
    latent_channels: int
    factor: int | None = None
    multiple: int = 1
    pixel_range: tuple[float, float] = (0.0, 1.0)
    scaling_factor: float = 1.0
    shift_factor: float = 0.0
    channel_mean: tuple[float, ...] | None = None
    channel_std: tuple[float, ...] | None = None

    # ---- kinds ----------------------------------------------------------------------------

    @property
    def spatial(self) -> bool:
        """Latents [C, h, w] (True) or [D] (False)."""
        return self.factor is not None

    @property
    def fixed_size(self) -> bool:
        return self.height is not None

    @property
    def square_flat(self) -> bool:
        """The version-2 case: one square size and flat latents in [0, 1] pixel units."""
        return not self.spatial and self.height == self.width and self.pixel_range == (0.0, 1.0)

    # ---- shapes ---------------------------------------------------------------------------

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(H, W, C) of a fixed-size model; a free-size model has no one shape."""
        if self.height is None or self.width is None:
            raise InvalidArgumentError("this model takes images of any size (sides multiples of "
                                       f"{self.multiple}); give a size")
        return (self.height, self.width, self.channels)

    @property
    def latent_dim(self) -> int:
        """D of flat latents; for spatial latents of a fixed size, C*h*w."""
        if not self.spatial:
            return self.latent_channels
        h, w = self.latent_size(*self.image_shape[:2])
        return self.latent_channels * h * w

    def latent_size(self, height: int, width: int) -> tuple[int, int]:
        """(h, w) of the latent of an image of this size (checked)."""
        self.check_size(height, width)
        f = self.factor or 1
        return (height // f, width // f)

    def latent_shape(self, height: int | None = None, width: int | None = None) -> tuple[int, ...]:
        """A latent's shape without the batch axis: (D,) or (C, h, w) for an image of this size
        (a fixed-size model's own size when none is given)."""
        if not self.spatial:
            return (self.latent_channels,)
        if height is None or width is None:
            height, width = self.image_shape[:2]
        return (self.latent_channels, *self.latent_size(height, width))

    def image_size_of_latent(self, shape: tuple[int, ...]) -> tuple[int, int]:
        """(H, W) of the image a latent of `shape` (no batch axis) decodes to."""
        if not self.spatial:
            return self.image_shape[:2]
        f = self.factor or 1
        return (int(shape[-2]) * f, int(shape[-1]) * f)

    def check_size(self, height: int, width: int) -> None:
        """Raise InvalidArgumentError unless the model takes images of height x width."""
        if self.fixed_size:
            if (height, width) != (self.height, self.width):
                raise InvalidArgumentError(
                    f"image size {height}x{width} (HxW) is not this model's {self.height}x{self.width}; images are resized to it"
                )
            return
        m = self.multiple
        if not (m <= height <= MAX_IMAGE_SIDE and m <= width <= MAX_IMAGE_SIDE) or height % m or width % m:
            raise InvalidArgumentError(
                f"image size {height}x{width} (HxW): this model takes sides that are multiples of {m} in {m}..{MAX_IMAGE_SIDE}; "
                f"crop or pad to {_round_to(height, m)}x{_round_to(width, m)}"
            )

    def check_latents(self, z: Any, name: str = "z") -> np.ndarray:
        """Latents as float32 [N, *latent shape], finite and of a shape this model decodes;
        one latent without the batch axis is a batch of one."""
        try:
            arr = np.asarray(z, dtype=np.float32)
        except (TypeError, ValueError, OverflowError):  # OverflowError: an integer beyond float range
            raise InvalidArgumentError(f"{name} must be an array of numbers, got {type(z).__name__}") from None
        rank = 3 if self.spatial else 1
        want = f"[N, {self.latent_channels}]" if not self.spatial else f"[N, {self.latent_channels}, h, w]"
        if arr.ndim == rank:
            arr = arr[None]
        if arr.ndim != rank + 1 or arr.shape[1] != self.latent_channels or arr.shape[0] == 0:
            raise InvalidArgumentError(f"{name} has shape {list(arr.shape)}; this model's latents are {want}")
        if self.spatial:
            self.check_size(*self.image_size_of_latent(arr.shape[1:]))
        if not np.all(np.isfinite(arr)):
            raise InvalidArgumentError(f"{name} holds NaN or infinite values")
        return arr

    # ---- pixels ---------------------------------------------------------------------------

    def to_model_units(self, images: np.ndarray) -> np.ndarray:
        """uint8 [N, H, W, C] -> float32 [N, C, H, W] in the graphs' pixel range."""
        lo, hi = self.pixel_range
        x = images.transpose(0, 3, 1, 2).astype(np.float32) * np.float32(1.0 / 255.0)  # the format's rule, bit for bit
        return x if (lo, hi) == (0.0, 1.0) else (x * np.float32(hi - lo) + np.float32(lo))

    def to_unit_range(self, x: np.ndarray, inplace: bool = False) -> np.ndarray:
        """The graphs' pixel values (float32) -> [0, 1] units (unclipped); `inplace` reuses x."""
        lo, hi = self.pixel_range
        if (lo, hi) == (0.0, 1.0):
            return x
        if not inplace:
            return (x - np.float32(lo)) / np.float32(hi - lo)
        x -= np.float32(lo)
        x /= np.float32(hi - lo)
        return x

    # ---- latent-diffusion units -----------------------------------------------------------

    def to_diffusion(self, z: np.ndarray) -> np.ndarray:
        """The autoencoder's latents -> a latent-diffusion model's: (z - shift) * scale."""
        return ((np.asarray(z, np.float32) - np.float32(self.shift_factor)) * np.float32(self.scaling_factor)).astype(np.float32)

    def from_diffusion(self, z: np.ndarray) -> np.ndarray:
        """A latent-diffusion model's latents -> the autoencoder's: z / scale + shift."""
        return (np.asarray(z, np.float32) / np.float32(self.scaling_factor) + np.float32(self.shift_factor)).astype(np.float32)

    # ---- the graphs' contract -------------------------------------------------------------

    def graph_shapes(self) -> tuple[list[Any], list[Any]]:
        """(image, latent) shapes of the graphs' tensors, batch axis "N" first; a free size's
        sides are the symbols "H", "W" and "h", "w"."""
        if self.fixed_size:
            image: list[Any] = ["N", self.channels, self.height, self.width]
            if not self.spatial:
                return image, ["N", self.latent_channels]
            return image, ["N", self.latent_channels, *self.latent_size(self.height, self.width)]  # type: ignore[arg-type]
        return ["N", self.channels, "H", "W"], ["N", self.latent_channels, "h", "w"]

    def probe_size(self) -> tuple[int, int]:
        """The image size a loader runs each graph on once: the model's own, or for a free
        size 4 latent pixels a side."""
        if self.fixed_size:
            return self.image_shape[:2]
        side = 4 * (self.factor or 1)
        side = _round_to(max(side, self.multiple), self.multiple)
        return (side, side)

    # ---- manifest -------------------------------------------------------------------------

    @classmethod
    def from_manifest(cls, data: dict[str, Any]) -> Geometry:
        """The geometry of a manifest already held to the format (format.validate_manifest)."""
        image, latent = data["image"], data["latent"]
        spatial = "factor" in latent
        stats = {k: tuple(float(x) for x in latent[k]) if latent.get(k) is not None else None for k in ("channel_mean", "channel_std")}
        lo, hi = image.get("range", [0, 1])
        return cls(
            channels=image["channels"],
            height=image.get("height"),
            width=image.get("width"),
            latent_channels=latent["channels"] if spatial else latent["dim"],
            factor=latent["factor"] if spatial else None,
            multiple=image.get("multiple", 1),
            pixel_range=(float(lo), float(hi)),
            scaling_factor=float(latent.get("scaling_factor", 1.0)),
            shift_factor=float(latent.get("shift_factor", 0.0)),
            **stats,
        )

    def image_entry(self) -> dict[str, Any]:
        """The manifest's `image` object."""
        entry: dict[str, Any] = {"height": self.height, "width": self.width} if self.fixed_size else {"multiple": self.multiple}
        entry["channels"] = self.channels
        if self.pixel_range != (0.0, 1.0):
            entry["range"] = [int(v) if float(v).is_integer() else v for v in self.pixel_range]
        return entry

    def latent_entry(self) -> dict[str, Any]:
        """The manifest's `latent` object's shape keys."""
        if not self.spatial:
            return {"dim": self.latent_channels}
        entry: dict[str, Any] = {"channels": self.latent_channels, "factor": self.factor}
        if self.scaling_factor != 1.0:
            entry["scaling_factor"] = self.scaling_factor
        if self.shift_factor != 0.0:
            entry["shift_factor"] = self.shift_factor
        for k in ("channel_mean", "channel_std"):
            if getattr(self, k) is not None:
                entry[k] = list(getattr(self, k))
        return entry

    def describe(self) -> dict[str, Any]:
        """The geometry as plain JSON for a model's description."""
        return {
            "image": self.image_entry() | {"range": list(self.pixel_range)},
            "latent": self.latent_entry() | {"shape": ["C", "h", "w"] if self.spatial else ["D"]},
        }


def _round_to(n: int, m: int) -> int:
    return max(m, int(math.floor(n / m + 0.5)) * m)
