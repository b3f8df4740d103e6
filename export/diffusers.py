"""diffusers autoencoders -> verified bundles with spatial latents (`vae export --from diffusers`).

A folder written by `save_pretrained` of `AutoencoderKL` or `AutoencoderTiny` is rebuilt with
diffusers' own class (weights from safetensors only; nothing is unpickled) and exported as a
bundle of a free image size: sides any multiple of the factor f, latents [C', H/f, W/f].

  AutoencoderKL    kind "vae": encoder x -> mean, logvar of its diagonal Gaussian posterior
                   (after quant_conv: `encode(x).latent_dist`); decoder z -> `decode(z).sample`,
                   a deterministic decoder (likelihood "none").
  AutoencoderTiny  kind "ae": encoder x -> `encode(x).latents`; decoder z -> `decode(z).sample`.

Both classes take and give pixels in [-1, 1], so the graphs do too (the image's `range`).
Latents are the autoencoder's own, unscaled: the config's scaling_factor and shift_factor go
into the manifest (`latent.scaling_factor`, `latent.shift_factor`), with the per-channel mean
and standard deviation of the latents of the export's images. The parity gate compares
onnxruntime with diffusers in torch at three image sizes, one of them not square.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import os
import platform
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from vaesdk.base.errors import BundleError, InvalidArgumentError, MissingDependencyError
from vaesdk.bundle.editing import write_manifest
from vaesdk.bundle.format import FP16, io_contract, validate_manifest
from vaesdk.bundle.geometry import MAX_FACTOR, MAX_LATENT_CHANNELS, Geometry
from vaesdk.evaluation.datasets import list_image_folder
from vaesdk.imaging.images import load_image
from vaesdk.maths.pixels import KINDS
from vaesdk.runtime.session import Graph, create_graph

from .manifest import base_manifest
from .onnx import export_module
from .pipeline import bundle_under_construction, checked_destination
from .upsample import folded_copy
from .verify import DEFAULT_TOLERANCE, ParityReport, Tolerance, Gate

CLASSES = ("AutoencoderKL", "AutoencoderTiny")
# The parity gate's image sizes in latent pixels (h, w), times f: 64x64, 96x64 and 128x96 for
# f = 8. One is not square, so a graph that mixes up height and width fails.
GATE_LATENT_SIDES = ((8, 8), (12, 8), (16, 12))
PARITY_IMAGES = 4  # images per gate size: the first of --images, and of --held-out when given
# The longest image side the latent statistics are taken at, in latent pixels: a larger image
# is scaled down to it (the attention of AutoencoderKL's middle block grows with the square of
# the latent's pixels: 1 GiB per image at 128x128 latents).
STATISTICS_LATENT_SIDE = 64
PREPROCESSING = "x = pixels / 127.5 - 1 as float32 (the range [-1, 1]), layout NCHW"


# ---- reading the folder ---------------------------------------------------------------------


@dataclass
class Autoencoder:
    """A diffusers autoencoder rebuilt from its folder, and the shapes its config gives."""

    folder: Path
    class_name: str
    config: dict[str, Any]  # config.json as saved
    model: nn.Module
    channels: int
    latent_channels: int
    factor: int

    @property
    def kind(self) -> str:
        """'vae' for AutoencoderKL (a Gaussian posterior), 'ae' for AutoencoderTiny."""
        return "vae" if self.class_name == "AutoencoderKL" else "ae"

    def graphs(self) -> tuple[nn.Module, nn.Module]:
        """(encoder, decoder) modules in the bundle's contract."""
        if self.kind == "vae":
            return KLEncoder(self.model).eval(), Decoder(self.model).eval()
        return TinyEncoder(self.model).eval(), Decoder(self.model).eval()

    def geometry(self, channel_mean: Sequence[float] | None = None, channel_std: Sequence[float] | None = None) -> Geometry:
        """A free image size (sides multiples of f), pixels in [-1, 1], the config's latent scaling."""
        return Geometry(
            channels=self.channels,
            height=None,
            width=None,
            latent_channels=self.latent_channels,
            factor=self.factor,
            multiple=self.factor,
            pixel_range=(-1.0, 1.0),
            scaling_factor=_config_number(self.config, "scaling_factor", 1.0, self.folder),
            shift_factor=_config_number(self.config, "shift_factor", 0.0, self.folder),
            channel_mean=None if channel_mean is None else tuple(float(v) for v in channel_mean),
            channel_std=None if channel_std is None else tuple(float(v) for v in channel_std),
        )


class KLEncoder(nn.Module):
    """AutoencoderKL's encoder: x [N, C, H, W] in [-1, 1] -> mean, logvar [N, C', H/f, W/f] of
    its diagonal Gaussian posterior (after quant_conv; logvar clamped to [-30, 20] as diffusers does)."""

    def __init__(self, vae: nn.Module):
        super().__init__()
        self.vae = vae

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        posterior = self.vae.encode(x).latent_dist
        return posterior.mean, posterior.logvar


class TinyEncoder(nn.Module):
    """AutoencoderTiny's encoder: x [N, C, H, W] in [-1, 1] -> latents [N, C', H/f, W/f]."""

    def __init__(self, vae: nn.Module):
        super().__init__()
        self.vae = vae

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        return (self.vae.encode(x).latents,)


class Decoder(nn.Module):
    """Either class's decoder: z [N, C', h, w] -> the image [N, C, f*h, f*w] in [-1, 1]
    (`decode(z).sample`; AutoencoderKL applies post_quant_conv first)."""

    def __init__(self, vae: nn.Module):
        super().__init__()
        self.vae = vae

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor]:
        return (self.vae.decode(z).sample,)


def read_autoencoder(folder: str | os.PathLike) -> Autoencoder:
    """The AutoencoderKL or AutoencoderTiny saved in `folder` (config.json and safetensors
    weights, as `save_pretrained` writes), rebuilt by its diffusers class from local files,
    in float32 and eval mode; its factor f is read from the config and checked by running it."""
    root = Path(folder)
    config_path = root / "config.json"
    if not config_path.is_file():
        raise InvalidArgumentError(f"{root} is not a diffusers model folder (config.json and weights, as save_pretrained writes)")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise InvalidArgumentError(f"{config_path} is not valid JSON ({e}); save the model again with save_pretrained") from None
    if not isinstance(config, dict):
        raise InvalidArgumentError(f"{config_path} must hold a JSON object, as save_pretrained writes")
    class_name = config.get("_class_name")
    if class_name not in CLASSES:
        raise InvalidArgumentError(
            f"{config_path} describes {class_name or 'no class (_class_name is missing)'!s:.80}; --from diffusers takes {' or '.join(CLASSES)}"
        )
    channels, latent_channels, factor = _shapes(config, config_path)
    try:
        import diffusers
    except ImportError:
        raise MissingDependencyError("--from diffusers needs diffusers: pip install '.[import]' in a checkout (or pip install diffusers)") from None
    with _quiet(diffusers):
        try:
            model = getattr(diffusers, class_name).from_pretrained(
                str(root), local_files_only=True, use_safetensors=True, low_cpu_mem_usage=False, torch_dtype=torch.float32
            )
        except Exception as e:  # diffusers raises OSError, ValueError, RuntimeError, ... for a folder it cannot use
            detail = " ".join(str(e).split())[:240]
            raise BundleError(
                f"diffusers could not rebuild {class_name} from {root} ({type(e).__name__}: {detail}); the folder needs the config.json "
                "and diffusion_pytorch_model.safetensors that save_pretrained writes, with weights that fit the config"
            ) from None
    model = model.eval()
    for switch in ("disable_tiling", "disable_slicing"):  # one pass over the whole image: the graph's computation
        if hasattr(model, switch):
            getattr(model, switch)()
    found = Autoencoder(root, class_name, config, model, channels, latent_channels, factor)
    _check_factor(found)
    return found


def _shapes(config: dict[str, Any], where: Path) -> tuple[int, int, int]:
    """(image channels, latent channels, factor f) from the config, checked against the format."""

    def ints(key: str, default: Any) -> Any:
        value = config.get(key, default)
        items = value if isinstance(value, (list, tuple)) else [value]
        if not items or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in items):
            raise InvalidArgumentError(f"{where}: {key} {value!r:.60} must be a positive integer (or a list of them)")
        return value

    in_channels, out_channels = ints("in_channels", 3), ints("out_channels", 3)
    if in_channels not in (1, 3) or out_channels != in_channels:
        raise InvalidArgumentError(
            f"{where}: in_channels {in_channels} and out_channels {out_channels}: a bundle holds images of 1 or 3 channels, the same in and out"
        )
    latent_channels = ints("latent_channels", 4)
    if not latent_channels <= MAX_LATENT_CHANNELS:
        raise InvalidArgumentError(f"{where}: latent_channels {latent_channels} is over the format's {MAX_LATENT_CHANNELS}")
    if config["_class_name"] == "AutoencoderKL":
        factor = 2 ** (len(ints("block_out_channels", [64])) - 1)
    else:
        # AutoencoderTiny: every encoder block after the first halves the sides; every decoder
        # block but the last multiplies them by upsampling_scaling_factor.
        down = 2 ** (len(ints("encoder_block_out_channels", [64] * 4)) - 1)
        up = ints("upsampling_scaling_factor", 2) ** (len(ints("decoder_block_out_channels", [64] * 4)) - 1)
        if down != up:
            raise InvalidArgumentError(
                f"{where}: the encoder divides the sides by {down} and the decoder multiplies them by {up}; an autoencoder's decoder must undo its encoder"
            )
        factor = down
    if not factor <= MAX_FACTOR:
        raise InvalidArgumentError(f"{where}: the factor between image and latent sides is {factor}, over the format's {MAX_FACTOR}")
    return in_channels, latent_channels, factor


def _check_factor(found: Autoencoder) -> None:
    """Run the model once on a (2f x 3f) image: its latent must be (C', 2, 3) and decode to (C, 2f, 3f)."""
    f = found.factor
    encoder, decoder = found.graphs()
    with torch.no_grad():
        z = encoder(torch.zeros(1, found.channels, 2 * f, 3 * f))[0]
        x = decoder(z)[0] if tuple(z.shape) == (1, found.latent_channels, 2, 3) else None
    if x is None or tuple(x.shape) != (1, found.channels, 2 * f, 3 * f):
        got = tuple(z.shape[1:]) if x is None else f"{tuple(z.shape[1:])}, decoded to {tuple(x.shape[1:])}"
        raise BundleError(
            f"{found.class_name} in {found.folder} maps a {2 * f}x{3 * f} image to a latent of {got}, not "
            f"{(found.latent_channels, 2, 3)} and back (factor {f} from its config): the config does not describe the model"
        )


@contextmanager
def _quiet(diffusers: Any) -> Iterator[None]:
    """diffusers' own log lines (a missing `accelerate`, ...) are no concern of the export's."""
    log = diffusers.utils.logging
    before = log.get_verbosity()
    log.set_verbosity(logging.CRITICAL)
    try:
        yield
    finally:
        log.set_verbosity(before)


def _config_number(config: dict[str, Any], key: str, default: float, where: Path) -> float:
    value = config.get(key)
    if value is None:
        return default
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and (key != "scaling_factor" or value > 0)
    if not ok:
        raise InvalidArgumentError(f"{where / 'config.json'}: {key} {value!r:.40} must be a finite number{' above 0' if key == 'scaling_factor' else ''}")
    return float(value)


# ---- images -----------------------------------------------------------------------------------


def read_images(source: str | os.PathLike | Sequence[Any], channels: int, flag: str) -> list[np.ndarray]:
    """Each image of a folder (or a sequence of images) at its own size: uint8 [H, W, channels]."""
    if isinstance(source, (str, os.PathLike)):
        if not Path(source).is_dir():
            raise InvalidArgumentError(f"{flag} {source} is not a folder of images")
        source, _, _ = list_image_folder(source)
    images = [load_image(item, None, channels) for item in source]
    if not images:
        raise InvalidArgumentError(f"{flag} holds no images")
    return images


def crop_to(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 [H, W, C] -> [height, width, C]: the largest centred crop of that aspect, scaled with Lanczos."""
    h, w, c = image.shape
    if (h, w) == (height, width):
        return image
    crop_w, crop_h = (w, max(1, round(w * height / width))) if w * height <= h * width else (max(1, round(h * width / height)), h)
    left, top = (w - crop_w) // 2, (h - crop_h) // 2
    im = Image.fromarray(image[..., 0] if c == 1 else image)
    im = im.resize((width, height), Image.Resampling.LANCZOS, box=(left, top, left + crop_w, top + crop_h))
    return np.asarray(im).reshape(height, width, c)


def statistics_size(image: np.ndarray, factor: int) -> tuple[int, int]:
    """The size an image's latent statistics are taken at: its own, scaled down (aspect kept)
    to a longer side of at most STATISTICS_LATENT_SIDE * f, with sides rounded down to
    multiples of f (at least f)."""
    height, width = image.shape[:2]
    scale = min(1.0, STATISTICS_LATENT_SIDE * factor / max(height, width))
    return (max(factor, int(height * scale) // factor * factor), max(factor, int(width * scale) // factor * factor))


def gate_sizes(factor: int) -> list[tuple[int, int]]:
    """The parity gate's image sizes (height, width) for a factor f."""
    return [(h * factor, w * factor) for h, w in GATE_LATENT_SIDES]


# ---- the parity gate and the latent statistics ----------------------------------------------


def check_spatial_graphs(
    encoder: nn.Module,
    decoder: nn.Module,
    encoder_graph: Graph,
    decoder_graph: Graph,
    images: Sequence[np.ndarray],
    geometry: Geometry,
    *,
    encoder_outputs: Sequence[str],
    tolerance: Tolerance = DEFAULT_TOLERANCE,
) -> dict[str, Any]:
    """onnxruntime against torch at each gate size: the encoder on `images` (uint8 [H, W, C]
    of any size, centre-cropped and scaled to it) and on one of them alone, the decoder on
    onnxruntime's latent means of them. Returns the manifest's `parity`; raises BundleError
    on a miss, naming the worst element."""
    sizes = gate_sizes(geometry.factor or 1)
    gates: dict[str, Gate] = {}
    cases: dict[str, int] = {}
    with torch.no_grad():
        for k, (height, width) in enumerate(sizes):
            size = f"{height}x{width}"
            gate = gates[size] = Gate(tolerance)
            x = geometry.to_model_units(np.stack([crop_to(im, height, width) for im in images]))
            batches = {f"images_{size}": x, **({f"single_image_{size}": x[:1]} if k == 0 else {})}
            for case, xb in batches.items():
                ours = encoder_graph.run(xb, list(encoder_outputs))
                gate.compare("encoder", case, encoder_outputs, ours, encoder(torch.from_numpy(xb)))
                z = ours[0]
                gate.compare("decoder", case.replace("image", "latent"), ["mean"], decoder_graph.run(z, ["mean"]), decoder(torch.from_numpy(z)))
                cases[case] = cases[case.replace("image", "latent")] = len(xb)
    errors: dict[str, float] = {}
    for gate in gates.values():
        for key, value in gate.errors.items():
            errors[key] = max(errors.get(key, 0.0), value)
    worst = max(gates.values(), key=lambda g: g.worst)
    report = ParityReport(errors, worst.worst, cases, tolerance, worst.where)
    if not worst.worst <= 1.0:
        raise BundleError(
            f"parity gate failed: onnxruntime differs from diffusers in torch by {worst.worst:.3g}x the tolerance (atol={tolerance.atol:g} "
            f"scaled by the output's magnitude, rtol={tolerance.rtol:g}); worst: {worst.where}. Nothing was written; "
            "pass a looser tolerance (--atol, --rtol) if the difference is float32 rounding"
        )
    return {
        **report.as_manifest(),
        "sizes": [[h, w] for h, w in sizes],
        "by_size": {size: {"max_abs_error": gate.errors, "worst_error_to_tolerance": gate.worst} for size, gate in gates.items()},
        "reference": "diffusers in torch, float32, on the CPU",
    }


def latent_statistics(encoder_graph: Graph, images: Sequence[np.ndarray], geometry: Geometry) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation of the latents (posterior means) of `images`,
    each encoded at its `statistics_size`, over every latent pixel."""
    count, mean, m2 = 0, np.zeros(geometry.latent_channels), np.zeros(geometry.latent_channels)
    for image in images:
        x = geometry.to_model_units(crop_to(image, *statistics_size(image, geometry.factor or 1))[None])
        z = encoder_graph.run(x, ["mean"])[0].astype(np.float64)
        values = z.transpose(1, 0, 2, 3).reshape(geometry.latent_channels, -1)
        n, part_mean = values.shape[1], values.mean(axis=1)
        part_m2 = ((values - part_mean[:, None]) ** 2).sum(axis=1)
        delta, total = part_mean - mean, count + n  # Chan et al.'s pairwise update: no cancellation
        mean, m2 = mean + delta * n / total, m2 + part_m2 + delta**2 * count * n / total
        count = total
    return mean, np.sqrt(m2 / count)


FP16_TOLERANCE = Tolerance(atol=2e-2, rtol=2e-2)
"""The float16 decoder against the float32 one: float16 keeps about 3 decimal digits, and errors
add up over a decoder's layers."""


class HalfDecoder(nn.Module):
    """A decoder computing in float16, float32 in and out: what `variants.fp16.decoder` holds."""

    def __init__(self, decoder: nn.Module):
        super().__init__()
        self.decoder = copy.deepcopy(decoder).half()

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(out.float() for out in self.decoder(z.half()))


def check_fp16_decoder(decoder: nn.Module, fp16_graph: Graph, encoder_graph: Graph, images: Sequence[np.ndarray], geometry: Geometry) -> dict[str, Any]:
    """The float16 decoder in onnxruntime against the float32 decoder in torch, at each gate
    size on the latents of `images`. A non-finite output (float16 overflows where float32
    does not) is counted, not failed: the runtime computes such a batch again in float32.
    Raises BundleError when a finite output misses FP16_TOLERANCE, or when every case is non-finite."""
    gate, cases, non_finite = Gate(FP16_TOLERANCE), 0, 0
    with torch.no_grad():
        for height, width in gate_sizes(geometry.factor or 1):
            x = geometry.to_model_units(np.stack([crop_to(im, height, width) for im in images]))
            z = encoder_graph.run(x, ["mean"])[0]
            ours = fp16_graph.run(z, ["mean"])
            cases += 1
            if not np.isfinite(ours[0]).all():
                non_finite += 1
                continue
            gate.compare("decoder (float16)", f"latents_{height}x{width}", ["mean"], ours, decoder(torch.from_numpy(z)))
    if non_finite == cases:
        raise BundleError("the float16 decoder gives non-finite values at every gate size; export without --fp16 (the model overflows float16)")
    if not gate.worst <= 1.0:
        raise BundleError(f"the float16 decoder misses the float32 one by {gate.worst:.3g}x its tolerance ({gate.where}); export without --fp16")
    return {
        "reference": "the float32 decoder in torch",
        "tolerance": {"atol": FP16_TOLERANCE.atol, "rtol": FP16_TOLERANCE.rtol},
        "max_abs_error": gate.errors.get("decoder (float16).mean"),
        "worst_error_to_tolerance": gate.worst,
        "cases": cases,
        "non_finite_cases": non_finite,
    }


# ---- the export -------------------------------------------------------------------------------


def export_diffusers(
    folder: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    images: str | os.PathLike | Sequence[Any],
    held_out: str | os.PathLike | Sequence[Any] | None = None,
    name: str | None = None,
    description: str = "",
    tolerance: Tolerance = DEFAULT_TOLERANCE,
    fp16: bool = False,
    force: bool = False,
    log: Callable[[str], None] = lambda s: None,
) -> Path:
    """Export the AutoencoderKL or AutoencoderTiny saved in `folder` to the bundle folder
    `out_dir` (module docstring). `images` (a folder, or images of any size) give the
    latents' per-channel statistics and the first images of the parity gate; `held_out`
    images join the parity gate only (a bundle with spatial latents has no anomaly
    calibration). `fp16` adds a decoder that computes in float16 (`variants.fp16`), held to
    the float32 one by FP16_TOLERANCE where its output is finite. Returns `out_dir`; nothing
    is left behind on failure."""
    out_dir, name = checked_destination(out_dir, name, force)
    vae = read_autoencoder(folder)
    log(f"{vae.class_name} from {vae.folder}: {vae.channels} channels, latents [{vae.latent_channels}, H/{vae.factor}, W/{vae.factor}]")
    train = read_images(images, vae.channels, "--images")
    held = read_images(held_out, vae.channels, "--held-out") if held_out is not None else []
    parity_images = train[: PARITY_IMAGES // 2] + held[: PARITY_IMAGES // 2] if held else train[:PARITY_IMAGES]
    log(
        f"{len(train)} images for the latent statistics, {len(parity_images)} for the parity gate"
        + (f" ({len(held[: PARITY_IMAGES // 2])} of them from --held-out, used only there)" if held else "")
        + "; no anomaly calibration: bundles with spatial latents have none yet"
    )
    geometry = vae.geometry()
    encoder, decoder = vae.graphs()
    encoder_outputs = ["mean", "logvar"] if vae.kind == "vae" else ["mean"]
    contract = io_contract(vae.kind, geometry, 0, decoder_logvar=False)
    f = vae.factor
    # The exported decoder computes each doubling layer at its input's resolution (export/upsample.py,
    # 16/36 of those layers' multiply-adds); the parity gate holds it to the original layers in torch.
    exported_decoder, folded = folded_copy(decoder, torch.randn(1, vae.latent_channels, 8, 8))

    with bundle_under_construction(out_dir) as tmp:
        files = {"encoder": tmp / "encoder.onnx", "decoder": tmp / "decoder.onnx"}
        log(f"exporting encoder.onnx and decoder.onnx for any image size with sides multiples of {f}")
        with torch.no_grad():
            export_module(encoder, torch.rand(2, vae.channels, 4 * f, 3 * f) * 2 - 1, "x", encoder_outputs, files["encoder"], sides=f)
            export_module(exported_decoder, torch.randn(2, vae.latent_channels, 4, 3), "z", ["mean"], files["decoder"], sides=1)
        encoder_graph = create_graph(files["encoder"].read_bytes(), "cpu", label="encoder.onnx")
        decoder_graph = create_graph(files["decoder"].read_bytes(), "cpu", label="decoder.onnx")
        parity = check_spatial_graphs(encoder, decoder, encoder_graph, decoder_graph, parity_images, geometry, encoder_outputs=encoder_outputs, tolerance=tolerance)
        log(f"parity gate passed at {', '.join(parity['by_size'])}: worst error {parity['worst_error_to_tolerance']:.3f} of the tolerance ({parity['worst_element']})")
        variants = {}
        if fp16:
            files["fp16"] = tmp / "decoder-fp16.onnx"
            log("exporting decoder-fp16.onnx: the decoder computing in float16, float32 in and out")
            with torch.no_grad():
                export_module(HalfDecoder(exported_decoder).eval(), torch.randn(2, vae.latent_channels, 4, 3), "z", ["mean"], files["fp16"], sides=1)
            fp16_graph = create_graph(files["fp16"].read_bytes(), "cpu", label="decoder-fp16.onnx")
            fp16_parity = check_fp16_decoder(decoder, fp16_graph, encoder_graph, parity_images, geometry)
            log(f"float16 decoder within {fp16_parity['worst_error_to_tolerance']:.3f} of its tolerance; {fp16_parity['non_finite_cases']} case(s) not finite (those re-run in float32)")
            blob = files["fp16"].read_bytes()
            variants[FP16] = {"decoder": {"file": files["fp16"].name, "sha256": hashlib.sha256(blob).hexdigest(), "bytes": len(blob)}, "parity": fp16_parity}
        mean, std = latent_statistics(encoder_graph, train, geometry)
        if not np.all(std > 0):
            raise BundleError(f"the latents of --images have a channel that never varies (std {std.min():.3g}); give more, or more varied, images")
        geometry = vae.geometry(mean, std)
        likelihood = None
        if vae.kind == "vae":
            likelihood = {"type": "none", "units": "the decoder's mean is in the image's range [-1, 1]: pixel k sits at k / 127.5 - 1", "about": KINDS["none"].description}
        data = base_manifest(name, description, vae.kind, geometry, likelihood, files, contract, preprocessing=PREPROCESSING, folded=folded)
        data["parity"] = parity
        if variants:
            data["variants"] = variants
        data["training"] = _record(vae, len(train))
        data["created"] = datetime.now(timezone.utc).replace(microsecond=0).isoformat()
        validate_manifest(data)
        write_manifest(tmp, data)
    log(f"bundle written to {out_dir}")
    return out_dir


def _record(vae: Autoencoder, n_images: int) -> dict[str, Any]:
    """The manifest's record of the origin: what the folder says, and what this export measured."""
    import diffusers

    return {
        "imported": True,
        "from": "diffusers",
        "folder": vae.folder.name,
        "class": vae.class_name,
        "diffusers": diffusers.__version__,
        "config": vae.config,
        "pixel_range": [-1, 1],
        "latent_statistics": {
            "images": n_images,
            "of": "posterior means (the encoder's mean output), unscaled, over every latent pixel",
            "image_size": f"each image's own, scaled down to a longer side of at most {STATISTICS_LATENT_SIDE} latent pixels, centre-cropped to sides that are multiples of the factor",
        },
        "torch": torch.__version__,
        "machine": platform.machine(),
    }
