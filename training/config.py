"""Settings for the model and the training run, each in one dataclass.

Both are written into every checkpoint as JSON, so a checkpoint describes itself
and can be exported or resumed without the command line that made it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from vaesdk.evaluation.datasets import DEFAULT_FASHION_MNIST_DIR, ImageSet, training_images, training_split
from vaesdk.base.errors import InvalidArgumentError


@dataclass
class ModelConfig:
    """Shape of the encoder/decoder pair.

    `widths` lists the channel count at each resolution; every entry after the first
    halves the spatial size, so `image_size` must be divisible by 2 ** (len(widths) - 1).
    """

    kind: Literal["vae", "ae"] = "vae"
    image_size: int = 28
    channels: int = 1
    latent_dim: int = 64
    widths: tuple[int, ...] = (32, 64, 128)
    # Residual blocks at each resolution; 0 keeps the model small enough to train on a CPU.
    res_blocks: int = 0
    # How the decoder doubles its resolution: "resize" (nearest-neighbour, then a 3x3
    # convolution) or "transpose" (a 4x4 stride-2 transposed convolution, the older bundles').
    # Resize runs about twice as fast in onnxruntime and avoids checkerboard artefacts.
    upsample: Literal["resize", "transpose"] = "resize"
    # Pixel covariance of p(x|z): "diagonal" (independent pixels) or "lowrank"
    # (diag(sigma^2) + W W^T with a decoder-predicted factor W of `rank` columns).
    covariance: Literal["diagonal", "lowrank"] = "lowrank"
    rank: int = 16
    # How 8-bit pixels are scored: "discretized" (the exact mass of each value's bin; diagonal
    # covariance only) or "dequantized" (the continuous density of pixel + uniform noise in its
    # bin, a lower bound on the discrete likelihood that any covariance admits).
    likelihood: Literal["discretized", "dequantized"] = "dequantized"
    # Bounds of the decoder's per-pixel log-variance (in [0, 1] pixel units).
    # Below about log((0.3/255)^2) the discretized likelihood of a bin is already ~1,
    # so a tighter floor only invites overflow in 1/sigma.
    logvar_min: float = -14.0
    logvar_max: float = 2.0

    def __post_init__(self) -> None:
        self.widths = tuple(int(w) for w in self.widths)
        if self.kind not in ("vae", "ae"):
            raise InvalidArgumentError(f"kind must be 'vae' or 'ae', got {self.kind!r}")
        if self.kind == "ae":  # no likelihood: the VAE's covariance and likelihood settings do not apply
            self.covariance, self.rank, self.likelihood = "diagonal", 0, "discretized"
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
        if self.upsample not in ("resize", "transpose"):
            raise InvalidArgumentError(f"upsample must be 'resize' or 'transpose', got {self.upsample!r}")
        if self.covariance not in ("diagonal", "lowrank"):
            raise InvalidArgumentError(f"covariance must be 'diagonal' or 'lowrank', got {self.covariance!r}")
        if self.likelihood not in ("discretized", "dequantized"):
            raise InvalidArgumentError(f"likelihood must be 'discretized' or 'dequantized', got {self.likelihood!r}")
        if self.covariance == "lowrank":
            if not 1 <= self.rank <= 256:
                raise InvalidArgumentError(f"a low-rank covariance needs rank in 1..256, got {self.rank}; e.g. --rank 8")
            if self.likelihood != "dequantized":
                raise InvalidArgumentError(
                    "a low-rank covariance has no closed-form bin probability; use likelihood='dequantized' (--likelihood dequantized)"
                )
        elif self.rank:
            raise InvalidArgumentError(f"rank {self.rank} needs covariance='lowrank' (--covariance lowrank)")

    @classmethod
    def from_record(cls, d: dict[str, Any]) -> ModelConfig:
        """The config saved in a checkpoint. Records from before an option existed meant
        what the code did then: transposed-convolution upsampling."""
        return cls(**{"upsample": "transpose", "covariance": "diagonal", "rank": 0, "likelihood": "discretized", **d})

    @property
    def factor_channels(self) -> int:
        """Channels of the decoder's covariance factor output (rank * channels), 0 if diagonal."""
        return self.rank * self.channels if self.covariance == "lowrank" else 0

    @property
    def bottom_size(self) -> int:
        return self.image_size // 2 ** (len(self.widths) - 1)


DEVICES = ("auto", "cuda", "cpu")


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
    # DataLoader processes decoding training images (0 = in the training process). Image
    # folders are decoded lazily, file by file, so a few workers keep the model fed.
    num_workers: int = 0
    # Where to train: "auto" (the GPU when torch sees one, else the CPU), "cuda" or "cpu".
    # Under torchrun each process takes the GPU of its local rank.
    device: str = "auto"
    # Against posterior collapse (a decoder that explains the data with its own variance and
    # ignores z): the KL term's weight beta rises linearly from 0 to 1 over the first
    # `kl_warmup_epochs` epochs (per step), and for the first `fixed_variance_epochs` the
    # decoder's pixel variance is held at exp(`warmup_logvar`), so only its mean can explain
    # the images and it must use z to do so. After both, the objective is the true ELBO.
    kl_warmup_epochs: int = 5
    fixed_variance_epochs: int = 2
    warmup_logvar: float = -4.6  # sigma = 0.1 in [0, 1] pixel units
    # A latent dimension is active when its mean KL over the validation images exceeds
    # vaesdk.ACTIVE_KL_NATS; training warns when fewer than `min_active_fraction` of them
    # are active for `collapse_patience` epochs after the warm-up, and export refuses such a model.
    min_active_fraction: float = 0.1
    collapse_patience: int = 2

    def __post_init__(self) -> None:
        if isinstance(self.model, dict):
            self.model = ModelConfig.from_record(self.model)
        if not 0 < self.val_fraction < 1:
            raise InvalidArgumentError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.grad_clip < 0:
            raise InvalidArgumentError(f"grad_clip must be >= 0, got {self.grad_clip}")
        for name in ("batch_size", "max_epochs", "patience", "lr_patience"):
            if getattr(self, name) < 1:
                raise InvalidArgumentError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.num_workers < 0:
            raise InvalidArgumentError(f"num_workers must be >= 0, got {self.num_workers}")
        if self.device not in DEVICES:
            raise InvalidArgumentError(f"device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        if self.limit < 0:
            raise InvalidArgumentError(f"limit must be >= 0, got {self.limit}")
        for name in ("kl_warmup_epochs", "fixed_variance_epochs"):
            if getattr(self, name) < 0:
                raise InvalidArgumentError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.min_active_fraction <= 1:
            raise InvalidArgumentError(f"min_active_fraction must be in [0, 1], got {self.min_active_fraction}")
        if self.collapse_patience < 1:
            raise InvalidArgumentError(f"collapse_patience must be >= 1, got {self.collapse_patience}")
        if not self.model.logvar_min <= self.warmup_logvar <= self.model.logvar_max:
            raise InvalidArgumentError(
                f"warmup_logvar {self.warmup_logvar} must lie within the decoder's logvar range "
                f"[{self.model.logvar_min}, {self.model.logvar_max}]"
            )

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["model"]["widths"] = list(self.model.widths)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        d = dict(d)
        d["model"] = ModelConfig.from_record(d["model"])
        return cls(**d)

    def images(self) -> ImageSet:
        """All of the run's images in memory (`vaesdk.evaluation.datasets.training_images`)."""
        return training_images(self.dataset, self.data_dir, self.model.image_size, self.model.channels, self.limit)

    def split(self) -> tuple[ImageSet, ImageSet]:
        """The run's (training, validation) images in memory, split as the run split them
        (`vaesdk.evaluation.datasets.training_split`)."""
        m = self.model
        return training_split(self.dataset, self.data_dir, m.image_size, m.channels, self.limit, self.val_fraction, self.seed)

    def kl_weight(self, progress_epochs: float) -> float:
        """beta after `progress_epochs` (fractional) epochs of training: 0 -> 1 linearly."""
        if self.kl_warmup_epochs == 0:
            return 1.0
        return min(1.0, progress_epochs / self.kl_warmup_epochs)

    def schedule(self) -> dict[str, Any]:
        """The anti-collapse schedule, as recorded in checkpoints and manifests."""
        return {
            "kl_warmup_epochs": self.kl_warmup_epochs,
            "kl_weight": "linear from 0 to 1 per step over kl_warmup_epochs, then 1 (the true ELBO)",
            "fixed_variance_epochs": self.fixed_variance_epochs,
            "warmup_logvar": self.warmup_logvar,
        }
