"""The model object of a bundle with spatial latents [C, h, w]: the autoencoders of latent
diffusion (a latent of an H x W image is [C, H/f, W/f]), taking images at their own size.

What applies to spatial latents, and what each operation means:
- encode, decode, reconstruct: at the image's own size (a free-size model takes sides that are
  multiples of its `multiple`; a fixed-size one fits images to its size); images beyond
  `max_pixels` run in overlapping tiles that are blended (`vaesdk.maths.tiles`), so memory is
  bounded by the tile, not the image;
- interpolate: between the latents of two images of one size, spherically or linearly, over
  all C*h*w numbers;
- edit: a direction is a per-channel offset [C] added to every latent pixel (directions from
  folders are differences of per-channel means), or a full [C, h, w] offset of the latent's size;
- embed: per-channel means over the latent's pixels [N, C] (pooled), or the full latents;
- latent-diffusion units: `to_diffusion` / `from_diffusion` apply the bundle's scaling and
  shift factors.

What is refused, each with one line: sampling, unless the bundle has a prior fitted to the
latents of its one fixed size (N(0, I) is not this model's prior: its draws decode to noise), traversals of one dimension (a latent pixel is not a factor of
variation), and scores (the decoder is deterministic: no likelihood).

Images go in as anything `load_image` accepts; one size gives uint8 [N, H, W, C] out, images of
mixed sizes are grouped by size and give a list of [H, W, C] arrays in input order.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import arguments
from ..base.errors import InvalidArgumentError, UnsupportedOperationError
from ..bundle.editing import add_direction
from ..bundle.geometry import Geometry
from ..bundle.format import FP16
from ..bundle.reading import FP16_DECODER, Bundle
from ..imaging.images import ImageInput, load_image
from ..maths import latent as L
from ..maths import tiles
from ..maths.latent import Seed
from .arguments import MAX_STEPS
from .model import DEFAULT_BATCH, PRIOR_BLOCK, LoadedBundle, means_to_uint8
from .session import Graph, create_graph

DEFAULT_TILE = 512
"""Image pixels a side of one tile."""
MAX_UNTILED_PIXELS = 1024 * 1024
"""An image (or latent, in image pixels) larger than this runs in tiles unless `tile=False`."""
BATCH_PIXELS = 1024 * 1024
"""Images run together until their pixels reach this: a batch's memory is bounded by its pixels."""
FALLBACK = "fp32 (fp16 was not finite)"


@dataclass(frozen=True)
class Decoded:
    """Decoded images, uint8 [N, H, W, C], and the precision each was decoded in: 'fp32',
    'fp16', or FALLBACK (the float16 decoder's output was not finite, so float32 ran)."""

    images: np.ndarray
    precision: list[str]


class SpatialModel(LoadedBundle):
    """A loaded bundle with spatial latents. Safe to share between threads."""

    def __init__(self, bundle: Bundle, device: str = "auto", threads: int | None = None, batch_size: int = DEFAULT_BATCH):
        sized = bundle.manifest.geometry.fixed_size  # free sides: no memory pattern (runtime.session)
        super().__init__(bundle, device, threads, batch_size, sized)
        # The float16 decoder: its session is made at its first use (precision 'fp16', or 'auto' on CUDA).
        self._fp16_bytes = bundle.models.get(FP16_DECODER)
        self._fp16: Graph | None = None
        self._fp16_args = (device if device != "auto" else self._decoder.device, threads, f"{bundle.path}/{FP16_DECODER}", sized)

    # ---- description ----------------------------------------------------------------------

    @property
    def feature_dim(self) -> int:
        """Numbers per image that `embed` gives (pooled): C."""
        return self.geometry.latent_channels

    def require_vae(self, what: str) -> None:
        """Raise UnsupportedOperationError: `what` (scoring, drawing pixels) needs a likelihood,
        and a model with spatial latents has a deterministic decoder."""
        raise UnsupportedOperationError(
            f"{what} needs a decoder with a likelihood; {self.name!r} has spatial latents and a deterministic decoder; use reconstruct, or a bundle with flat latents"
        )

    def __repr__(self) -> str:
        g = self.geometry
        size = f"{g.height}x{g.width}" if g.fixed_size else f"any size (multiples of {g.multiple})"
        return f"<vaesdk.SpatialModel {self.name!r} {self.kind} {size}x{g.channels} latents [{g.latent_channels}, H/{g.factor}, W/{g.factor}] on {self.device}>"

    # ---- images ---------------------------------------------------------------------------

    def load_images(self, images: ImageInput | Sequence[ImageInput]) -> list[np.ndarray]:
        """Images as this model takes them: uint8 [H, W, C] each, at their own size for a
        free-size model (sides checked against its multiple), fitted to its size otherwise."""
        g = self.geometry
        items = _as_list(images)
        size = g.image_shape[:2] if g.fixed_size else None
        out = []
        for i, item in enumerate(items):
            label = None if len(items) == 1 else f"image {i}"
            if isinstance(item, np.ndarray) and item.dtype == np.uint8 and item.ndim == 3 and item.shape[2] == g.channels and size is None:
                image = item
            else:
                image = load_image(item, size, g.channels, label)
            try:
                g.check_size(image.shape[0], image.shape[1])
            except InvalidArgumentError as e:
                raise InvalidArgumentError(f"{label or 'the image'}: {e}") from None
            out.append(image)
        return out

    def _groups(self, images: list[np.ndarray]) -> dict[tuple[int, int], list[int]]:
        groups: dict[tuple[int, int], list[int]] = {}
        for i, im in enumerate(images):
            groups.setdefault(im.shape[:2], []).append(i)
        return groups

    def _chunk(self, height: int, width: int) -> int:
        return max(1, min(self.batch_size, BATCH_PIXELS // (height * width)))

    # ---- tiling choice --------------------------------------------------------------------

    def _tiling(self, height: int, width: int, tile: bool | None, tile_size: int | None) -> int | None:
        """The tile side in image pixels for an image of height x width, or None: untiled."""
        tile = None if tile is None else arguments.check_bool("tile", tile)
        g = self.geometry
        side = DEFAULT_TILE if tile_size is None else arguments.positive_int("tile_size", tile_size, 1 << 16)
        step = max(g.multiple, g.factor or 1)
        if side % step or side < 4 * step:
            raise InvalidArgumentError(f"tile_size {side} must be a multiple of {step} and at least {4 * step}")
        if tile is False or (tile is None and height * width <= MAX_UNTILED_PIXELS):
            return None
        return side if (height > side or width > side) else None

    # ---- encoder --------------------------------------------------------------------------

    def encode(
        self, images: ImageInput | Sequence[ImageInput], *, tile: bool | None = None, tile_size: int | None = None
    ) -> L.Posterior | list[L.Posterior]:
        """q(z|x) per image: a Posterior with mean (and, for a vae, logvar) float32 [N, C, h, w]
        for images of one size; a list of one-image Posteriors for mixed sizes."""
        batch = self.load_images(images)
        parts = self._encode_list(batch, tile, tile_size)
        if len({p[0].shape for p in parts}) == 1:
            means = np.stack([p[0] for p in parts])
            logvars = np.stack([p[1] for p in parts]) if parts[0][1] is not None else None
            return L.Posterior(means, logvars)
        return [L.Posterior(m[None], None if v is None else v[None]) for m, v in parts]

    def _encode_list(self, images: list[np.ndarray], tile: bool | None, tile_size: int | None) -> list[tuple[np.ndarray, np.ndarray | None]]:
        g = self.geometry
        outputs = ["mean", "logvar"] if self.kind == "vae" else ["mean"]
        result: list[Any] = [None] * len(images)
        for (h, w), idx in self._groups(images).items():
            side = self._tiling(h, w, tile, tile_size)
            if side is not None:
                f = g.factor or 1
                overlap = (side // 4) // f * f
                for i in idx:
                    pixels = images[i][None].transpose(0, 3, 1, 2)  # a view: each tile is converted on its own
                    outs = tiles.run_tiled(pixels, lambda t: self._encoder.run(g.to_model_units(t.transpose(0, 2, 3, 1)), outputs), side, overlap, 1, f)
                    result[i] = (outs[0][0], outs[1][0] if len(outs) > 1 else None)
                continue
            n = self._chunk(h, w)
            for s in range(0, len(idx), n):
                sel = idx[s : s + n]
                outs = self._encoder.run(g.to_model_units(np.stack([images[i] for i in sel])), outputs)
                for j, i in enumerate(sel):
                    result[i] = (outs[0][j], outs[1][j] if len(outs) > 1 else None)
        return result

    def embed(
        self, images: ImageInput | Sequence[ImageInput], *, pooled: bool = True, sample_latent: bool = False, seed: Seed = None,
        tile: bool | None = None, tile_size: int | None = None,
    ) -> np.ndarray | list[np.ndarray]:  # fmt: skip
        """Features per image: the per-channel means of its latent over the latent's pixels,
        float32 [N, C] (`pooled`, the default: comparable across sizes), or the full latents
        [N, C, h, w] (a list for mixed sizes). The posterior mean, or with `sample_latent` a
        draw from q(z|x) (a vae)."""
        pooled, sample_latent = arguments.check_bool("pooled", pooled), arguments.check_bool("sample_latent", sample_latent)
        if sample_latent:
            self.spec.require_vae("sampling from q(z|x)")
        rng = L.rng_from(seed) if sample_latent else None
        posteriors = self.encode(images, tile=tile, tile_size=tile_size)
        each = posteriors if isinstance(posteriors, list) else [posteriors]
        latents = [p.sample(rng) if rng is not None else p.mean for p in each]
        if pooled:
            return np.concatenate([z.mean(axis=(2, 3)) for z in latents]).astype(np.float32)
        return latents[0] if len(latents) == 1 else [z[0] for z in latents]

    # ---- decoder --------------------------------------------------------------------------

    def decode(
        self, z: np.ndarray, *, tile: bool | None = None, tile_size: int | None = None, precision: str | None = None
    ) -> np.ndarray:
        """Latents [N, C, h, w] (or one [C, h, w]) -> uint8 images [N, h*f, w*f, C].

        precision: 'fp32', 'fp16' (the bundle's float16 decoder, whose output, where it is not
        finite, is computed again in float32), or None: fp16 on CUDA when the bundle has that
        decoder, else fp32. `decode_with_info` says which ran."""
        return self.decode_with_info(z, tile=tile, tile_size=tile_size, precision=precision).images

    def decode_with_info(
        self, z: np.ndarray, *, tile: bool | None = None, tile_size: int | None = None, precision: str | None = None
    ) -> Decoded:
        """`decode`, with the precision each image was decoded in."""
        z = self.geometry.check_latents(z)
        return self._decode(z, tile, tile_size, self._precision(precision))

    def _precision(self, precision: str | None) -> str:
        """The precision a decode runs in, for a `precision` argument."""
        if precision is None:
            return FP16 if self._fp16_bytes is not None and self.device == "cuda" else "fp32"
        if precision not in ("fp32", FP16):
            raise InvalidArgumentError(f"precision must be 'fp32', 'fp16' or None (automatic), got {precision!r:.40}")
        if precision == FP16 and self._fp16_bytes is None:
            raise UnsupportedOperationError(f"{self.name!r} has no float16 decoder; use precision 'fp32', or export the bundle with one (--fp16)")
        return precision

    def _run_decoder(self, z: np.ndarray, precision: str, used: list[str]) -> np.ndarray:
        """The decoder's mean for a batch (or a tile) of latents, in `precision`; a float16
        result that is not finite (float16 overflows where float32 does not) is computed again
        in float32. Appends the precision that produced the result to `used`."""
        if precision == FP16:
            if self._fp16 is None:
                assert self._fp16_bytes is not None
                self._fp16 = create_graph(self._fp16_bytes, *self._fp16_args)
            (mean,) = self._fp16.run(z, ["mean"])
            with np.errstate(invalid="ignore", over="ignore"):  # inf - inf in the sum: the case looked for
                finite = np.isfinite(mean.sum(dtype=np.float64))
            if finite:
                used.append(FP16)
                return mean
        (mean,) = self._decoder.run(z, ["mean"])
        used.append("fp32" if precision == "fp32" else FALLBACK)
        return mean

    def _decode(self, z: np.ndarray, tile: bool | None, tile_size: int | None, precision: str = "fp32") -> Decoded:
        g = self.geometry
        f = g.factor or 1
        h, w = z.shape[2] * f, z.shape[3] * f
        out = np.empty((len(z), h, w, g.channels), np.uint8)
        ran: list[str] = []
        side = self._tiling(h, w, tile, tile_size)
        if side is not None:
            lt = side // f
            for i in range(len(z)):
                used: list[str] = []
                (mean,) = tiles.run_tiled(z[i : i + 1], lambda t: [self._run_decoder(np.ascontiguousarray(t), precision, used)], lt, lt // 4, f, 1)
                means_to_uint8(g.to_unit_range(mean, inplace=True), out[i : i + 1], self.name)
                ran.append(FALLBACK if FALLBACK in used else used[0])
            return Decoded(out, ran)
        n = self._chunk(h, w)
        for s in range(0, len(z), n):
            used = []
            mean = self._run_decoder(z[s : s + n], precision, used)
            means_to_uint8(g.to_unit_range(mean, inplace=True), out[s : s + n], self.name)
            ran.extend(used * len(mean))
        return Decoded(out, ran)

    # ---- composite operations -------------------------------------------------------------

    def reconstruct(
        self, images: ImageInput | Sequence[ImageInput], *, sample_latent: bool = False, seed: Seed = None,
        tile: bool | None = None, tile_size: int | None = None,
    ) -> np.ndarray | list[np.ndarray]:  # fmt: skip
        """Encode then decode, each image at its own size: uint8 [N, H, W, C] for one size, a
        list of [H, W, C] for mixed sizes."""
        return self._map_latents(images, lambda z: z, sample_latent, seed, tile, tile_size)

    def edit(
        self, images: ImageInput | Sequence[ImageInput], *, direction: str | np.ndarray | None = None, delta: float = 1.0,
        dim: int | None = None, sample_latent: bool = False, seed: Seed = None, tile: bool | None = None, tile_size: int | None = None,
    ) -> np.ndarray | list[np.ndarray]:  # fmt: skip
        """Encode, move each latent along `direction` by `delta` (see `edit_latents`), decode."""
        if dim is not None:
            raise UnsupportedOperationError(_NO_DIMS)
        delta = arguments.check_delta(delta)
        vector = self._direction(direction)
        return self._map_latents(images, lambda z: self._shift(z, vector, delta), sample_latent, seed, tile, tile_size)

    def edit_latents(self, z: np.ndarray, *, direction: str | np.ndarray | None = None, delta: float = 1.0, dim: int | None = None) -> np.ndarray:
        """Latents moved by `delta` times a direction: a per-channel offset [C] added to every
        latent pixel, or a full offset [C, h, w] of the latents' size."""
        if dim is not None:
            raise UnsupportedOperationError(_NO_DIMS)
        z = self.geometry.check_latents(z)
        return self._shift(z, self._direction(direction), arguments.check_delta(delta))

    def _direction(self, direction: str | np.ndarray | None) -> np.ndarray:
        if direction is None:
            raise InvalidArgumentError("edit needs a direction: a name of this model's directions or an array [C] or [C, h, w]")
        if isinstance(direction, str):
            return self.spec.direction_vector(direction)
        try:
            v = np.asarray(direction, np.float32)
        except (TypeError, ValueError, OverflowError):  # OverflowError: an integer beyond float range
            raise InvalidArgumentError(f"direction must be a name or an array of numbers, got {type(direction).__name__}") from None
        c = self.geometry.latent_channels
        if v.ndim not in (1, 3) or v.shape[0] != c or not np.isfinite(v).all():
            raise InvalidArgumentError(f"direction has shape {list(v.shape)}; give finite numbers [{c}] (per channel) or [{c}, h, w]")
        return v

    @staticmethod
    def _shift(z: np.ndarray, vector: np.ndarray, delta: float) -> np.ndarray:
        offset = vector[:, None, None] if vector.ndim == 1 else vector
        if offset.shape[1:] not in ((1, 1), z.shape[2:]):
            raise InvalidArgumentError(f"direction of shape {list(vector.shape)} does not fit latents of shape {list(z.shape[1:])}")
        moved = z + np.float32(delta) * offset
        if not np.isfinite(moved).all() or np.abs(moved).max() > L.MAX_ABS_LATENT:
            raise InvalidArgumentError(f"delta {delta!r} pushes the latent beyond +-{L.MAX_ABS_LATENT:g}; use a smaller delta")
        return moved.astype(np.float32)

    def _map_latents(self, images: Any, change: Any, sample_latent: bool, seed: Seed, tile: bool | None, tile_size: int | None) -> Any:
        sample_latent = arguments.check_bool("sample_latent", sample_latent)
        if sample_latent:
            self.spec.require_vae("sampling from q(z|x)")
        rng = L.rng_from(seed) if sample_latent else None
        return self._change(self.load_images(images), change, rng, tile, tile_size)

    def _change(self, batch: list[np.ndarray], change: Any, rng: np.random.Generator | None, tile: bool | None, tile_size: int | None) -> Any:
        """Encode images of checked sizes, change each latent (a draw from q(z|x) with `rng`,
        else its mean), decode: an array for one size, a list for mixed sizes."""
        parts = self._encode_list(batch, tile, tile_size)
        out = []
        for mean, logvar in parts:
            z = L.Posterior(mean[None], None if logvar is None else logvar[None])
            latent = z.sample(rng) if rng is not None else z.mean
            out.append(self._decode(change(latent), tile, tile_size).images[0])
        if len({o.shape for o in out}) == 1:
            return np.stack(out)
        return out

    def interpolate_latents(self, a: np.ndarray, b: np.ndarray, steps: int = 8, method: str = "slerp") -> np.ndarray:
        """`steps` latents from a to b inclusive (two latents of one shape): [steps, C, h, w]."""
        a, b = self.geometry.check_latents(a, "a"), self.geometry.check_latents(b, "b")
        if len(a) != 1 or len(b) != 1:
            raise InvalidArgumentError("interpolate takes one start and one end latent")
        if a.shape != b.shape:
            raise InvalidArgumentError(f"a and b have shapes {list(a.shape[1:])} and {list(b.shape[1:])}; interpolate latents of one shape")
        steps = arguments.positive_int("steps", steps, MAX_STEPS, minimum=2)
        method = arguments.check_method(method)
        t = np.linspace(0.0, 1.0, steps)
        flat = (L.slerp if method == "slerp" else L.lerp)(a.reshape(-1), b.reshape(-1), t)
        return np.asarray(flat, np.float32).reshape(steps, *a.shape[1:])

    def interpolate(self, a: ImageInput, b: ImageInput, *, steps: int = 8, method: str = "slerp", tile: bool | None = None,
                    tile_size: int | None = None) -> np.ndarray:  # fmt: skip
        """Images along the path between the latents (posterior means) of images a and b, of one
        size: uint8 [steps, H, W, C]."""
        za, zb = (self._encode_list(self.load_images(x), tile, tile_size)[0][0][None] for x in (a, b))
        return self._decode(self.interpolate_latents(za, zb, steps, method), tile, tile_size).images

    # ---- latent-diffusion units -----------------------------------------------------------

    def to_diffusion(self, z: np.ndarray) -> np.ndarray:
        """This model's latents -> a latent-diffusion model's: (z - shift_factor) * scaling_factor."""
        return self.geometry.to_diffusion(self.geometry.check_latents(z))

    def from_diffusion(self, z: np.ndarray) -> np.ndarray:
        """A latent-diffusion model's latents -> this model's: z / scaling_factor + shift_factor."""
        return self.geometry.from_diffusion(self.geometry.check_latents(z))

    # ---- directions -----------------------------------------------------------------------

    def add_direction(
        self, name: str, from_images: ImageInput | Sequence[ImageInput], to_images: ImageInput | Sequence[ImageInput], *,
        description: str = "", overwrite: bool = False,
    ) -> np.ndarray:  # fmt: skip
        """Store the per-channel mean latent of to_images minus that of from_images (float32
        [C]) as a named direction in the bundle's manifest."""
        vector = (self.embed(to_images).mean(0) - self.embed(from_images).mean(0)).astype(np.float32)
        with self._write_lock:
            self.manifest = add_direction(self.path, name, vector, description=description, overwrite=overwrite)
        return vector

    # ---- refused --------------------------------------------------------------------------

    def sample_latents(
        self, n: int, *, seed: Seed = None, temperature: float = 1.0, truncation: float | None = None, prior: str | None = None
    ) -> np.ndarray:
        """n latents [n, C, h, w] from a prior fitted to the latents of a fixed-size model's
        images (flattened C, h, w): what a free-size model has none of, so it refuses."""
        if not self.spec.can_sample:
            raise UnsupportedOperationError(_NO_PRIOR.format(name=self.name))
        n = arguments.positive_int("n", n, arguments.MAX_SAMPLES)
        temperature, truncation = arguments.check_temperature(temperature), arguments.check_truncation(truncation)
        prior = arguments.check_prior(self.spec, prior)
        draw = self.spec.prior_set.draw(prior)
        rng = L.rng_from(seed)
        blocks = [draw(min(PRIOR_BLOCK, n - s), rng, temperature, truncation) for s in range(0, n, PRIOR_BLOCK)]
        return np.concatenate(blocks).reshape(n, *self.geometry.latent_shape()).astype(np.float32)

    def sample(
        self, n: int, *, seed: Seed = None, temperature: float = 1.0, truncation: float | None = None, prior: str | None = None
    ) -> np.ndarray:
        """n images decoded from `sample_latents`: uint8 [n, H, W, C]."""
        return self._decode(self.sample_latents(n, seed=seed, temperature=temperature, truncation=truncation, prior=prior), None, None).images

    def iter_sample(
        self, n: int, *, seed: Seed = None, temperature: float = 1.0, truncation: float | None = None, sample_pixels: bool = False,
        prior: str | None = None,
    ) -> Iterator[np.ndarray]:  # fmt: skip
        """`sample` in batches of `batch_size`: yields uint8 [b, H, W, C]."""
        if arguments.check_bool("sample_pixels", sample_pixels):
            raise UnsupportedOperationError(f"{self.name!r} has a deterministic decoder: there are no pixels to draw (sample_pixels)")
        z = self.sample_latents(n, seed=seed, temperature=temperature, truncation=truncation, prior=prior)
        return (self._decode(z[s : s + self.batch_size], None, None).images for s in range(0, n, self.batch_size))

    def traverse(self, *args: Any, **kwargs: Any) -> Any:
        raise UnsupportedOperationError(_NO_DIMS)

    def score(self, *args: Any, **kwargs: Any) -> Any:
        raise UnsupportedOperationError(
            f"{self.name!r} has a deterministic decoder (no likelihood), so images have no likelihood or anomaly scores; "
            "use reconstruct, or a bundle with flat latents"
        )

    def validate(self, operation: str, **options: Any) -> dict[str, Any]:
        """Check the arguments of `operation` before any image is read (as `Model.validate`):
        refuse what this model cannot do, else return the arguments checked."""
        if operation == "sample" and not self.spec.can_sample:
            raise UnsupportedOperationError(_NO_PRIOR.format(name=self.name))
        refused = {"traverse": self.traverse, "score": self.score}
        if operation in refused:
            refused[operation]()
        checks = {"reconstruct": _reconstruct_args, "edit": _edit_args}
        if operation not in checks:
            return options
        try:
            args = checks[operation](**options)
        except TypeError:
            raise InvalidArgumentError(f"{operation} takes the arguments {', '.join(_ARGS[operation])} for a model with spatial latents, got {', '.join(sorted(options))}") from None
        if args["sample_pixels"]:
            raise UnsupportedOperationError(f"{self.name!r} has a deterministic decoder: there are no pixels to draw (sample_pixels)")
        if args["sample_latent"]:
            self.spec.require_vae("sampling from q(z|x)")
        if operation == "edit":
            if args["dim"] is not None:
                raise UnsupportedOperationError(_NO_DIMS)
            args["direction"] = self._direction(args["direction"])
            args["delta"] = arguments.check_delta(args["delta"])
        self._tiling(1, 1, args["tile"], args["tile_size"])  # checks tile and tile_size
        return args

    def prepare(self, operation: str, **options: Any) -> Any:
        """`operation` ('reconstruct' or 'edit') with its arguments checked now, once: a
        function from images (an array of one size, or a list) to outputs in the same form,
        each call drawing from one latent stream seeded now (as `Model.prepare`)."""
        if operation not in ("reconstruct", "edit"):
            raise InvalidArgumentError(f"prepare takes 'reconstruct' or 'edit' for a model with spatial latents, got {operation!r:.80}")
        args = self.validate(operation, **options)
        rng = L.RandomStreams.from_seed(args["seed"]).latent if args["sample_latent"] else None
        change = (lambda z: self._shift(z, args["direction"], args["delta"])) if operation == "edit" else (lambda z: z)
        return lambda images: self._change(list(images), change, rng, args["tile"], args["tile_size"])


_NO_PRIOR = (
    "{name!r} has spatial latents and no prior fitted for one image size, and N(0, I) is not its prior "
    "(its draws decode to noise); encode images, or decode latents from a latent-diffusion model"
)
_NO_DIMS = (
    "a latent dimension of spatial latents is one channel of one latent pixel, not a factor of variation; "
    "edit with a direction (per channel, or a full [C, h, w] offset) instead of dim"
)


def _reconstruct_args(*, sample_latent: Any = False, sample_pixels: Any = False, seed: Seed = None, tile: Any = None, tile_size: Any = None) -> dict[str, Any]:
    return dict(sample_latent=arguments.check_bool("sample_latent", sample_latent), sample_pixels=arguments.check_bool("sample_pixels", sample_pixels),
                seed=seed, tile=tile, tile_size=tile_size)  # fmt: skip


def _edit_args(*, dim: Any = None, direction: Any = None, delta: Any = 1.0, **rest: Any) -> dict[str, Any]:
    return dict(dim=dim, direction=direction, delta=delta, **_reconstruct_args(**rest))


_ARGS = {"reconstruct": ("sample_latent", "sample_pixels", "seed", "tile", "tile_size"),
         "edit": ("dim", "direction", "delta", "sample_latent", "sample_pixels", "seed", "tile", "tile_size")}  # fmt: skip


def _as_list(images: Any) -> list[Any]:
    if isinstance(images, (list, tuple)):
        if not images:
            raise InvalidArgumentError("no images given (the list is empty)")
        return list(images)
    if isinstance(images, np.ndarray) and images.ndim == 4:
        if images.shape[0] == 0:
            raise InvalidArgumentError("no images given (the batch is empty)")
        return list(images)
    return [images]
