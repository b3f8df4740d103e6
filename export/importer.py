"""Any PyTorch VAE -> a verified bundle: `export_vae` (and `vae export --from ...`).

The caller gives an encoder and a decoder `nn.Module`, the image geometry, the pixel range
the modules expect, the decoder's likelihood and images. The modules are wrapped so that
the graphs speak the bundle format's contract (images in [0, 1], NCHW; latents [N, D]; the
decoder's mean in [0, 1]), exported with a dynamic batch axis, held to PyTorch by the
parity gate, and given priors fitted on the caller's `images`. The anomaly score is
calibrated on `held_out` only, images the model did not train on; without them the bundle
is uncalibrated and says so. The manifest's `training` section records what is known of
the model's origin, nothing invented.
"""

from __future__ import annotations

import math
import os
import platform
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import vaesdk
from vaesdk.base.errors import InvalidArgumentError
from vaesdk.bundle.editing import write_manifest
from vaesdk.evaluation.datasets import ImageSet, load_image_folder
from vaesdk.bundle.format import io_contract, validate_manifest
from vaesdk.bundle.geometry import MAX_IMAGE_SIDE, MAX_LATENT_DIM, Geometry
from vaesdk.maths.anomaly import MIN_CALIBRATION, calibrate_anomaly
from vaesdk.maths.pixels import KINDS
from vaesdk.maths.priors import GAUSSIAN

from .manifest import base_manifest
from .onnx import export_module
from .upsample import folded_copy
from .pipeline import add_mixture, bundle_under_construction, checked_destination, fit_gaussians
from .verify import DEFAULT_TOLERANCE, Tolerance, check_graphs

PIXEL_RANGES = {"0,1": (0.0, 1.0), "-1,1": (-1.0, 1.0)}
# --likelihood: the CLI's spellings -> the pixel likelihood kinds of vaesdk.maths.pixels.
LIKELIHOODS = ("bernoulli", "continuous-bernoulli", "gaussian", "gaussian:SIGMA", "none")

# Attribute pairs an encoder's output object may hold its posterior in: (mean, log-variance).
_POSTERIOR_FIELDS = (("mean", "logvar"), ("embedding", "log_covariance"), ("mu", "logvar"), ("mu", "log_var"), ("mean", "log_var"), ("loc", "logvar"))
# ... and a decoder's output object its mean.
_MEAN_FIELDS = ("reconstruction", "sample", "mean", "x_hat", "recon")


@dataclass(frozen=True)
class Likelihood:
    """The decoder's likelihood as given: a kind of vaesdk.maths.pixels and, for a fixed
    Gaussian, its sigma in the model's own pixel units."""

    kind: str
    sigma: float | None = None

    @classmethod
    def parse(cls, text: str) -> Likelihood:
        value = str(text).strip().lower()
        if value in ("bernoulli", "none"):
            return cls(value)
        if value == "continuous-bernoulli":
            return cls("continuous_bernoulli")
        if value == "gaussian":
            return cls("discretized_gaussian")
        if value.startswith("gaussian:"):
            try:
                sigma = float(value.split(":", 1)[1])
            except ValueError:
                sigma = float("nan")
            if not (math.isfinite(sigma) and sigma > 0):
                raise InvalidArgumentError(f"--likelihood {text!r:.60}: the sigma after 'gaussian:' must be a positive number, e.g. gaussian:0.1")
            return cls("fixed_gaussian", sigma)
        raise InvalidArgumentError(f"--likelihood {text!r:.60} is not one of {', '.join(LIKELIHOODS)}")

    @property
    def decoder_logvar(self) -> bool:
        return self.kind == "discretized_gaussian"


def _read_posterior(out: Any) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(out, (tuple, list)) and len(out) >= 2 and all(isinstance(t, torch.Tensor) for t in out[:2]):
        return out[0], out[1]
    dist = getattr(out, "latent_dist", None)
    if dist is not None:
        out = dist
    for mean_name, logvar_name in _POSTERIOR_FIELDS:
        mean, logvar = _field(out, mean_name), _field(out, logvar_name)
        if isinstance(mean, torch.Tensor) and isinstance(logvar, torch.Tensor):
            return mean, logvar
    raise InvalidArgumentError(
        f"the encoder returned {type(out).__name__}; it must return (mean, logvar) or an object with one of the pairs "
        f"{', '.join('/'.join(p) for p in _POSTERIOR_FIELDS)}"
    )


def _read_mean(out: Any, wants_logvar: bool) -> tuple[torch.Tensor, ...]:
    if isinstance(out, torch.Tensor):
        if wants_logvar:
            raise InvalidArgumentError("--likelihood gaussian needs a decoder that returns (mean, logvar); this one returns one tensor (give gaussian:SIGMA for a fixed sigma)")
        return (out,)
    if isinstance(out, (tuple, list)) and out and all(isinstance(t, torch.Tensor) for t in out):
        if wants_logvar and len(out) < 2:
            raise InvalidArgumentError("--likelihood gaussian needs a decoder that returns (mean, logvar)")
        return tuple(out[:2]) if wants_logvar else (out[0],)
    for name in _MEAN_FIELDS:
        mean = _field(out, name)
        if isinstance(mean, torch.Tensor):
            if wants_logvar:
                logvar = _field(out, "logvar")
                if not isinstance(logvar, torch.Tensor):
                    raise InvalidArgumentError(f"--likelihood gaussian needs the decoder's log-variance; its output has {name} but no logvar")
                return mean, logvar
            return (mean,)
    raise InvalidArgumentError(f"the decoder returned {type(out).__name__}; it must return the pixel mean (a tensor, a tuple, or an object with one of {', '.join(_MEAN_FIELDS)})")


def _field(out: Any, name: str) -> Any:
    try:
        return out[name] if isinstance(out, dict) or hasattr(out, "keys") else getattr(out, name, None)
    except (KeyError, TypeError):
        return getattr(out, name, None)


class EncoderGraph(nn.Module):
    """The caller's encoder in the bundle's contract: x in [0, 1] -> (mean, logvar), [N, D] each."""

    def __init__(self, encoder: nn.Module, low: float, high: float, select: Callable[[Any], tuple[torch.Tensor, torch.Tensor]] | None = None):
        super().__init__()
        self.encoder, self.low, self.high, self.select = encoder, low, high, select or _read_posterior

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, logvar = self.select(self.encoder(x * (self.high - self.low) + self.low))
        return mean.flatten(1), logvar.flatten(1)


class DecoderGraph(nn.Module):
    """The caller's decoder in the bundle's contract: z [N, D] -> the mean in [0, 1] (and its
    logvar in [0, 1] units, for a Gaussian with a learned variance), NCHW."""

    def __init__(self, decoder: nn.Module, low: float, high: float, shape: tuple[int, int, int], logvar: bool,
                 select: Callable[[Any], tuple[torch.Tensor, ...]] | None = None):  # fmt: skip
        super().__init__()
        self.decoder, self.low, self.high, self.shape, self.logvar = decoder, low, high, shape, logvar
        self.select = select or (lambda out: _read_mean(out, logvar))

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, ...]:
        parts = self.select(self.decoder(z))
        scale = self.high - self.low
        mean = ((parts[0] - self.low) / scale).reshape(-1, *self.shape)
        if not self.logvar:
            return (mean,)
        return mean, (parts[1] - 2.0 * math.log(scale)).reshape(-1, *self.shape)


def export_vae(
    encoder: nn.Module,
    decoder: nn.Module,
    out_dir: str | os.PathLike,
    *,
    images: np.ndarray,
    held_out: np.ndarray | None = None,
    image_size: int | tuple[int, int],
    channels: int,
    pixel_range: tuple[float, float] | str = (0.0, 1.0),
    likelihood: str | Likelihood = "gaussian",
    name: str | None = None,
    description: str = "",
    tolerance: Tolerance = DEFAULT_TOLERANCE,
    source: dict[str, Any] | None = None,
    class_names: Sequence[str] | None = None,
    labels: np.ndarray | None = None,
    mixture_covariance: str | None = None,
    force: bool = False,
    log: Callable[[str], None] = lambda s: None,
) -> Path:
    """Export a PyTorch VAE that vaesdk did not train to the bundle folder `out_dir`.

    encoder(x) gives the posterior's mean and log-variance (a tuple, or an object with
    mean/logvar, embedding/log_covariance, mu/logvar, or a `latent_dist`); decoder(z) gives
    the pixel mean (a tensor, a tuple or an object with `reconstruction`/`sample`) and, for
    `likelihood="gaussian"`, the log-variance beside it. Both take and give the model's own
    pixel range: (0, 1) or (-1, 1). `likelihood`: 'gaussian' (learned variance),
    'gaussian:SIGMA' (fixed sigma, in the model's pixel units), 'bernoulli' or
    'continuous-bernoulli' (the decoder's mean is the probability; pixel range (0, 1) only),
    or 'none' (a deterministic decoder). `images` (uint8 [N, H, W, C]) fit the priors;
    `held_out` (images the model never trained on) calibrate the anomaly score. `source`
    goes into the manifest's `training` section as the record of where the model came from.
    `mixture_covariance` ('full' or 'diagonal') overrides the mixture prior's covariance, which
    is full up to 256 latent dimensions and diagonal beyond. Returns `out_dir`; nothing is
    left behind on failure.
    """
    out_dir, name = checked_destination(out_dir, name, force)
    lik = likelihood if isinstance(likelihood, Likelihood) else Likelihood.parse(likelihood)
    low, high = PIXEL_RANGES[pixel_range] if isinstance(pixel_range, str) and pixel_range in PIXEL_RANGES else tuple(pixel_range)
    if (low, high) not in PIXEL_RANGES.values():
        raise InvalidArgumentError(f"pixel range {pixel_range!r:.40} must be 0,1 or -1,1")
    if lik.kind in ("bernoulli", "continuous_bernoulli") and (low, high) != (0.0, 1.0):
        raise InvalidArgumentError(f"a {lik.kind.replace('_', ' ')} decoder models pixels in [0, 1]; this model's pixel range is [{low:g}, {high:g}]")
    height, width = (image_size, image_size) if isinstance(image_size, int) else (int(image_size[0]), int(image_size[1]))
    if not (1 <= height <= MAX_IMAGE_SIDE and 1 <= width <= MAX_IMAGE_SIDE) or channels not in (1, 3):
        raise InvalidArgumentError(f"image size {height}x{width} and channels {channels}: sides must be in 1..{MAX_IMAGE_SIDE}, channels 1 or 3")
    images = _check_images(images, (height, width), channels, "images")
    held_out = None if held_out is None else _check_images(held_out, (height, width), channels, "held-out images")

    shape = (channels, height, width)
    enc = EncoderGraph(encoder.eval(), low, high).eval()
    dec = DecoderGraph(decoder.eval(), low, high, shape, lik.decoder_logvar).eval()
    with torch.no_grad():
        probe = enc(torch.from_numpy(images[:2].transpose(0, 3, 1, 2).astype(np.float32) / 255.0))
    latent_dim = int(probe[0].shape[1])
    if not 1 <= latent_dim <= MAX_LATENT_DIM:
        raise InvalidArgumentError(f"the encoder gives {latent_dim} latent dimensions; the format holds 1..{MAX_LATENT_DIM}")
    geometry = Geometry(channels, height, width, latent_dim)
    contract = io_contract("vae", geometry, 0, lik.decoder_logvar)

    exported_dec, folded = folded_copy(dec, torch.randn(2, latent_dim))  # the doubling layers at their input's resolution (export/upsample.py)
    with bundle_under_construction(out_dir) as tmp:
        files = {"encoder": tmp / "encoder.onnx", "decoder": tmp / "decoder.onnx"}
        log("exporting encoder.onnx and decoder.onnx")
        with torch.no_grad():
            export_module(enc, torch.rand(2, *shape), "x", ["mean", "logvar"], files["encoder"])
            export_module(exported_dec, torch.randn(2, latent_dim), "z", [o["name"] for o in contract["decoder"]["outputs"]], files["decoder"])
        real = np.concatenate([images[:128], held_out[:128]]) if held_out is not None else images[:256]
        report = check_graphs(
            enc, dec, files["encoder"].read_bytes(), files["decoder"].read_bytes(), real, latent_dim=latent_dim,
            encoder_outputs=["mean", "logvar"], decoder_outputs=[o["name"] for o in contract["decoder"]["outputs"]], tolerance=tolerance,
        )  # fmt: skip
        log(f"parity gate passed: worst error {report.worst_ratio:.3f} of the tolerance ({report.worst})")
        data = base_manifest(name, description, "vae", geometry, _likelihood_entry(lik, low, high), files, contract, folded=folded)
        data["parity"] = report.as_manifest()
        data["training"] = {
            "imported": True,
            **(source or {}),
            "pixel_range": [low, high],
            "prior_images": int(len(images)),
            "torch": torch.__version__,
            "machine": platform.machine(),
        }
        data["created"] = datetime.now(timezone.utc).replace(microsecond=0).isoformat()
        validate_manifest(data)
        write_manifest(tmp, data)

        model = vaesdk.load(tmp, device="cpu")
        post = model.encode(images)
        data["latent"][GAUSSIAN.key] = fit_gaussians(post, ImageSet(images, labels, tuple(class_names or ())))
        held_latents = model.embed(held_out) if held_out is not None else None
        add_mixture(tmp, data, model, post, held_latents, log, mixture_covariance)
        write_manifest(tmp, data)
        if held_out is not None and len(held_out) >= MIN_CALIBRATION:
            log(f"calibrating the anomaly score on {len(held_out)} held-out images")
            data["anomaly"] = calibrate_anomaly(vaesdk.load(tmp, device="cpu"), held_out, f"{len(held_out)} held-out images given to the export")
            write_manifest(tmp, data)
        else:
            have = 0 if held_out is None else len(held_out)
            log(f"anomaly score not calibrated: {have} held-out images, {MIN_CALIBRATION} needed (--held-out); scores carry no p-values")
    log(f"bundle written to {out_dir}")
    return out_dir


def _check_images(images: Any, size: tuple[int, int], channels: int, what: str) -> np.ndarray:
    a = np.asarray(images)
    if a.dtype != np.uint8 or a.shape[1:] != (*size, channels) or len(a) < 2:
        raise InvalidArgumentError(f"{what} must be uint8 [N >= 2, {size[0]}, {size[1]}, {channels}], got {a.dtype} {list(a.shape)}")
    return a


def _likelihood_entry(lik: Likelihood, low: float, high: float) -> dict[str, Any]:
    units = "pixel k sits at k/255; the decoder's mean is in these [0, 1] units"
    if lik.kind == "discretized_gaussian":
        return {"type": "discretized_gaussian", "bins": 256, "units": units + ", its logvar too", "edge_bins": "open-ended at 0 and 255", "covariance": "diagonal"}
    if lik.kind == "fixed_gaussian":
        assert lik.sigma is not None
        sigma01 = lik.sigma / (high - low)
        return {"type": "discretized_gaussian", "bins": 256, "units": units, "edge_bins": "open-ended at 0 and 255", "covariance": "fixed", "sigma": sigma01}
    return {"type": lik.kind, "units": units, "about": KINDS[lik.kind].description}


def export_from(
    source: str,
    where: str,
    out_dir: str | os.PathLike,
    *,
    images: str | os.PathLike,
    held_out: str | os.PathLike | None = None,
    image_size: int | None = None,
    channels: int | None = None,
    pixel_range: str | None = None,
    likelihood: str | None = None,
    tolerance: Tolerance = DEFAULT_TOLERANCE,
    name: str | None = None,
    description: str = "",
    fp16: bool = False,
    force: bool = False,
    log: Callable[[str], None] = lambda s: None,
) -> Path:
    """`vae export --from SOURCE WHERE`: load the modules from `source` ('python' with
    FILE.py:FUNCTION, 'pythae' or 'diffusers' with a folder), take the geometry, pixel range
    and likelihood the source records unless given (a given value that contradicts the
    source's is refused), read the image folders at the model's size, and `export_vae`."""
    if source == "diffusers":
        from .diffusers import export_diffusers

        given = [flag for flag, v in (("--image-size", image_size), ("--channels", channels), ("--pixel-range", pixel_range), ("--likelihood", likelihood)) if v is not None]
        if given:
            raise InvalidArgumentError(f"{', '.join(given)} {'does' if len(given) == 1 else 'do'} not apply to --from diffusers: the model's config says it all; leave it out")
        return export_diffusers(where, out_dir, images=images, held_out=held_out, name=name, description=description, tolerance=tolerance,
                                fp16=fp16, force=force, log=log)  # fmt: skip
    if fp16:
        raise InvalidArgumentError(f"--fp16 applies to --from diffusers (a decoder with spatial latents); --from {source} exports flat latents")
    from .sources import load_source

    imported = load_source(source, where)
    size = _agree("--image-size", image_size, imported.image_size)
    chans = _agree("--channels", channels, imported.channels)
    lik = _agree("--likelihood", likelihood, imported.likelihood)
    rng = _agree("--pixel-range", pixel_range, imported.pixel_range) or "0,1"
    missing = [flag for flag, v in (("--image-size", size), ("--channels", chans), ("--likelihood", lik)) if v is None]
    if missing:
        raise InvalidArgumentError(f"--from {source} cannot tell the model's {', '.join(missing)}; pass {' and '.join(missing)}")
    size = size if isinstance(size, tuple) else int(size)
    train = _folder(images, size, int(chans), "--images")
    held = _folder(held_out, size, int(chans), "--held-out") if held_out is not None else None
    log(f"{len(train.images)} images for the priors" + (f", {len(held.images)} held out for calibration" if held is not None else ""))
    return export_vae(
        imported.encoder, imported.decoder, out_dir, images=train.images, held_out=None if held is None else held.images,
        image_size=size, channels=int(chans), pixel_range=rng, likelihood=str(lik), name=name, description=description,
        tolerance=tolerance, source=imported.record, class_names=train.class_names, labels=train.labels, force=force, log=log,
    )  # fmt: skip


def _agree(flag: str, given: Any, recorded: Any) -> Any:
    if given is not None and recorded is not None and str(given) != str(recorded):
        raise InvalidArgumentError(f"{flag} {given} contradicts the model's own {recorded}; leave {flag} out")
    return given if given is not None else recorded


def _folder(folder: str | os.PathLike, size: int | tuple[int, int], channels: int, flag: str) -> ImageSet:
    if not Path(folder).is_dir():
        raise InvalidArgumentError(f"{flag} {folder} is not a folder of images")
    return load_image_folder(folder, size, channels)
