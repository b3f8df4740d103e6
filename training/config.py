"""Settings for the model and the training run, each in one dataclass.

Both are written into every checkpoint as JSON, so a checkpoint describes itself
and can be exported or resumed without the command line that made it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from vaesdk.datasets import DEFAULT_FASHION_MNIST_DIR
from vaesdk.errors import InvalidArgumentError


@dataclass
class ModelConfig:
    """Shape of the encoder/decoder pair.

    `widths` lists the channel count at each resolution; every entry after the first
    halves the spatial size, so `image_size` must be divisible by 2 ** (len(widths) - 1).
    """

    kind: Literal["vae", "ae"] = "vae"
    image_size: int = 28
    channels: int = 1
    latent_dim: int = 32
    widths: tuple[int, ...] = (32, 64, 128)
    # Residual blocks at each resolution; 0 keeps the model small enough to train on a CPU.
    res_blocks: int = 0
    # Bounds of the decoder's per-pixel log-variance (in [0, 1] pixel units).
    # Below about log((0.3/255)^2) the discretized likelihood of a bin is already ~1,
    # so a tighter floor only invites overflow in 1/sigma.
    logvar_min: float = -14.0
    logvar_max: float = 2.0

    def __post_init__(self) -> None:
        self.widths = tuple(int(w) for w in self.widths)
        if self.kind not in ("vae", "ae"):
            raise InvalidArgumentError(f"kind must be 'vae' or 'ae', got {self.kind!r}")
        if self.channels not in (1, 3):
            raise InvalidArgumentError(f"channels must be 1 or 3, got {self.channels}")
        if self.latent_dim < 1:
            raise InvalidArgumentError(f"latent_dim must be >= 1, got {self.latent_dim}")
        if self.res_blocks < 0:
            raise InvalidArgumentError(f"res_blocks must be >= 0, got {self.res_blocks}")
        if not self.widths or any(w < 1 for w in self.widths):
            raise InvalidArgumentError(f"widths must be positive channel counts, got {self.widths}")
        factor = 2 ** (len(self.widths) - 1)
        if self.image_size < factor or self.image_size % factor:
            raise InvalidArgumentError(
                f"image_size {self.image_size} is not divisible by {factor} "
                f"(2 ** (len(widths) - 1) for widths={self.widths}); pick another size or fewer widths"
            )
        if not self.logvar_min < self.logvar_max:
            raise InvalidArgumentError("logvar_min must be below logvar_max")

    @property
    def bottom_size(self) -> int:
        return self.image_size // 2 ** (len(self.widths) - 1)


@dataclass
class TrainConfig:
    """One training run. Defaults train the bundled Fashion-MNIST model."""

    model: ModelConfig = field(default_factory=ModelConfig)
    dataset: Literal["fashion-mnist", "folder"] = "fashion-mnist"
    data_dir: str = str(DEFAULT_FASHION_MNIST_DIR)
    out_dir: str = "runs/fashion-mnist"
    seed: int = 0
    batch_size: int = 128
    lr: float = 1e-3
    max_epochs: int = 100
    # Halve the learning rate after this many epochs without validation improvement ...
    lr_patience: int = 2
    # ... and stop after this many.
    patience: int = 6
    # Clip the gradient norm: narrow per-pixel variances make rare, very large gradients
    # that otherwise knock training back by several epochs. 0 disables clipping.
    grad_clip: float = 5000.0
    val_fraction: float = 1 / 12  # 5,000 of Fashion-MNIST's 60,000 training images
    # Limit the number of training images (0 = all); for quick runs and tests.
    limit: int = 0
    num_threads: int = 0  # 0 = torch's default

    def __post_init__(self) -> None:
        if isinstance(self.model, dict):
            self.model = ModelConfig(**self.model)
        if not 0 < self.val_fraction < 1:
            raise InvalidArgumentError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.grad_clip < 0:
            raise InvalidArgumentError(f"grad_clip must be >= 0, got {self.grad_clip}")
        for name in ("batch_size", "max_epochs", "patience", "lr_patience"):
            if getattr(self, name) < 1:
                raise InvalidArgumentError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.limit < 0:
            raise InvalidArgumentError(f"limit must be >= 0, got {self.limit}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["model"]["widths"] = list(self.model.widths)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        d = dict(d)
        d["model"] = ModelConfig(**d["model"])
        return cls(**d)
