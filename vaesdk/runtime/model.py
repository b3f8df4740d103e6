"""The model object: every operation on a loaded bundle, used alike by the API and the CLI.

A `Model` is onnxruntime sessions, batching and the operations, over a `ModelSpec` (what the
bundle's facts decide: shapes, priors, directions, calibration; `vaesdk.runtime.spec`).

Images go in as anything `vaesdk.imaging.images.as_batch` accepts and come out as uint8 arrays
[N, H, W, C]; latents are float32 [N, D]. Work is split into batches of `batch_size`, so
memory stays bounded whatever N is. Random operations take `seed` (an int, a numpy
Generator, a `RandomStreams`, or None for fresh entropy) and draw latents and pixels from
separate streams, so the same seed gives the same result for any batch size and any device.
"""

from __future__ import annotations

import threading
from pathlib import Path
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import arguments
from ..maths import latent as L
from .arguments import DEFAULT_IW_SAMPLES, MAX_IW_SAMPLES, MAX_SAMPLES, MAX_STEPS
from ..bundle.reading import Bundle
from ..bundle.format import Manifest
from ..bundle.geometry import Geometry
from ..bundle.editing import add_direction
from ..base.errors import BundleError, InvalidArgumentError
from ..imaging.images import ImageInput
from ..maths.latent import Seed
from ..bundle.onnx_proto import keep_outputs
from ..maths.priors import Draw
from .session import create_graph, create_graphs, verify_output_contract
from .scoring import Scorer, Scores
from .spec import ModelSpec

DEFAULT_BATCH = 256
PRIOR_BLOCK = 1024


@dataclass(frozen=True)
class Traversal:
    """images: uint8 [rows, steps, H, W, C]; row r varies latent dimension dims[r] over values."""

    images: np.ndarray
    dims: list[int]
    values: np.ndarray


class LoadedBundle:
    """What every loaded bundle has, whatever its latents: its folder, its spec, its encoder
    and decoder sessions on one device, and the description read from the spec. `Model`
    (flat latents) and `SpatialModel` (spatial latents) build their operations on it."""

    def __init__(self, bundle: Bundle, device: str, threads: int | None, batch_size: int, sized: bool = True):
        self.path: Path = bundle.path
        self.batch_size = arguments.positive_int("batch_size", batch_size, 1 << 20)
        self._encoder, self._decoder = create_graphs(bundle.models, device, threads, str(bundle.path), sized)
        verify_output_contract(self._encoder, self._decoder, bundle.manifest, str(bundle.path))
        self._write_lock = threading.Lock()
        self.spec = ModelSpec.from_bundle(bundle)

    @property
    def manifest(self) -> Manifest:
        return self.spec.manifest

    @manifest.setter
    def manifest(self, manifest: Manifest) -> None:
        self.spec = self.spec.with_manifest(manifest)

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def kind(self) -> str:
        return self.spec.kind

    @property
    def geometry(self) -> Geometry:
        """The image and latent shapes."""
        return self.spec.geometry

    @property
    def device(self) -> str:
        """'cuda' or 'cpu': what actually runs the graphs."""
        return self._decoder.device

    @property
    def providers(self) -> list[str]:
        return self._decoder.providers

    @property
    def priors(self) -> list[str]:
        """Names `sample` accepts as `prior`: 'standard' (the model's N(0, I), VAEs with flat
        latents only), the mixtures and the Gaussians fitted at export ('mixture', 'aggregate',
        one per class, ...)."""
        return self.spec.prior_set.names

    @property
    def default_prior(self) -> str | None:
        """What `sample`, `iter_sample`, `sample_latents` and `traverse` draw from when no
        prior is named: the bundle's choice when it names one (its fitted mixture), else the
        model's own N(0, I) ('standard'), else (a plain autoencoder, which has no prior of its
        own) its first fitted prior, else None: such a model cannot sample."""
        return self.spec.prior_set.default

    @property
    def directions(self) -> dict[str, np.ndarray]:
        return self.spec.directions

    def describe(self) -> dict[str, Any]:
        """What this model is and can do, as a plain JSON-ready dict: name, kind, image and
        latent sizes (and geometry), dimensions by use, priors (and the default one),
        directions, metrics, device. `vae info`, the server's /v1/models and the browser page
        read the same keys."""
        return self.spec.describe(self.device, self.providers)


class Model(LoadedBundle):
    """A loaded bundle with flat latents and its onnxruntime sessions. Safe to share between threads."""

    def __init__(self, bundle: Bundle, device: str = "auto", threads: int | None = None, batch_size: int = DEFAULT_BATCH):
        super().__init__(bundle, device, threads, batch_size)
        # onnxruntime runs every node of a graph whatever outputs a call asks for: means-only
        # decodes get their own session of the decoder cut down to `mean`.
        mean_only = keep_outputs(bundle.models["decoder"], ["mean"])
        self._mean_decoder = self._decoder
        if mean_only is not bundle.models["decoder"]:
            mean_device = self._decoder.device if device == "auto" else device
            self._mean_decoder = create_graph(mean_only, mean_device, threads, f"{bundle.path}/decoder (mean)")
        self._scorer = Scorer(self.spec, self._decoder, self.batch_size)

    # ---- description ----------------------------------------------------------------------

    @property
    def latent_dim(self) -> int:
        return self.spec.latent_dim

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(H, W, C) of the images the model takes and makes."""
        return self.spec.image_shape

    @property
    def feature_dim(self) -> int:
        """Numbers per image that `embed` gives: D."""
        return self.latent_dim

    def dims_by_usage(self) -> list[int]:
        """Latent dimensions, most used first (average KL over the export's reference set).
        Without that record, in index order."""
        return self.spec.dims_by_usage()

    def validate(self, operation: str, **options: Any) -> dict[str, Any]:
        """Check the arguments of `operation` ('sample', 'edit', 'reconstruct', 'interpolate',
        'traverse', 'score', 'encode', 'embed', 'decode') against this model, before any image
        is read; raise InvalidArgumentError naming the bad value, else return them checked
        (directions resolved to vectors)."""
        return arguments.validate(self.spec, operation, options)

    def prepare(self, operation: str, **options: Any) -> Callable[..., Any]:
        """`operation` with its arguments checked now, once (as `validate` checks them), ready
        to run: what front ends use to refuse a bad request before queueing its work, then run
        it without checking again.

        'sample' (the arguments of `sample`) gives a function of no arguments returning what
        `sample` returns. 'edit' and 'reconstruct' (their arguments without the images) give a
        function from images to outputs, uint8 [N, H, W, C]; its calls draw from one set of
        random streams, seeded now, each continuing where the last stopped, so batches run one
        after another give what one call over all of them would (`map_images` relies on it)."""
        if operation == "sample":
            args = arguments.validate(self.spec, "sample", options)
            return lambda: self._sample_checked(args)
        if operation in ("edit", "reconstruct"):
            args = arguments.validate(self.spec, operation, options)
            streams = L.RandomStreams.from_seed(args["seed"])  # a RandomStreams passes through with its own generators
            return lambda images: self._encode_change_decode(images, args, streams, shift=operation == "edit")
        raise InvalidArgumentError(f"prepare takes 'sample', 'edit' or 'reconstruct', got {operation!r:.80}")

    def __repr__(self) -> str:
        h, w, c = self.image_shape
        return f"<vaesdk.Model {self.name!r} {self.kind} {h}x{w}x{c} latent_dim={self.latent_dim} on {self.device}>"

    # ---- batching helpers -----------------------------------------------------------------

    def _images(self, images: ImageInput | Sequence[ImageInput]) -> np.ndarray:
        return self.spec.to_batch(images)

    def _chunks(self, n: int, size: int | None = None) -> Iterator[slice]:
        size = size or self.batch_size
        for i in range(0, n, size):
            yield slice(i, min(i + size, n))

    def require_vae(self, what: str) -> None:
        """Raise UnsupportedOperationError, naming `what`, unless this model is a VAE."""
        self.spec.require_vae(what)

    def _to_nchw(self, batch: np.ndarray) -> np.ndarray:
        x = np.empty((batch.shape[0], batch.shape[3], batch.shape[1], batch.shape[2]), np.float32)
        np.multiply(batch.transpose(0, 3, 1, 2), np.float32(1.0 / 255.0), out=x, casting="unsafe")
        return x

    # ---- encoder --------------------------------------------------------------------------

    def encode(self, images: ImageInput | Sequence[ImageInput]) -> L.Posterior:
        """q(z|x) for each image: a Posterior with mean and logvar, float32 [N, D]."""
        batch = self._images(images)
        outputs = ["mean", "logvar"] if self.kind == "vae" else ["mean"]
        parts: list[list[np.ndarray]] = [[] for _ in outputs]
        for sl in self._chunks(len(batch)):
            for acc, out in zip(parts, self._encoder.run(self._to_nchw(batch[sl]), outputs)):
                acc.append(out)
        joined = [np.concatenate(p) for p in parts]
        return L.Posterior(joined[0], joined[1] if len(joined) > 1 else None)

    def embed(
        self, images: ImageInput | Sequence[ImageInput], *, sample_latent: bool = False, seed: Seed = None
    ) -> np.ndarray:
        """z for each image, float32 [N, D]: the posterior mean (features for downstream
        tasks), or with `sample_latent=True` a draw from q(z|x) (from `seed`, or from its
        latent stream when it is a RandomStreams)."""
        if not arguments.check_bool("sample_latent", sample_latent):
            return self.encode(images).mean
        self.require_vae("sampling from q(z|x)")
        return self._latents_of(images, True, seed)

    def _latents_of(self, images: ImageInput | Sequence[ImageInput], sample_latent: bool, seed: Seed) -> np.ndarray:
        """`embed` with checked arguments: a draw from q(z|x) (from `seed`, or from its latent
        stream when it is a RandomStreams) or, without `sample_latent`, its mean."""
        if not sample_latent:
            return self.encode(images).mean
        rng = seed.latent if isinstance(seed, L.RandomStreams) else L.rng_from(seed)
        return self.encode(images).sample(rng)

    # ---- decoder --------------------------------------------------------------------------

    def decode_params(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """p(x|z) per pixel in [0, 1] units: (mean, logvar), float32 [N, H, W, C]. logvar is
        None for an ae and for decoders without a Gaussian (Bernoulli, continuous Bernoulli,
        none), and 2 log sigma everywhere for a Gaussian with a fixed sigma; for a Bernoulli
        the mean is the probability of each pixel."""
        z = L.check_latents(z, self.latent_dim)
        outputs = ["mean", "logvar"] if "logvar" in self.manifest.decoder_outputs else ["mean"]
        parts: list[list[np.ndarray]] = [[] for _ in outputs]
        for sl in self._chunks(len(z)):
            for acc, out in zip(parts, self._decoder.run(z[sl], outputs)):
                acc.append(out.transpose(0, 2, 3, 1))
        joined = [np.concatenate(p) for p in parts]
        pixels = self.spec.pixels
        if pixels is not None and pixels.sigma is not None:
            return joined[0], np.full_like(joined[0], 2.0 * np.log(pixels.sigma))
        return joined[0], joined[1] if len(joined) > 1 else None

    def decode(self, z: np.ndarray, *, sample_pixels: bool = False, seed: Seed = None) -> np.ndarray:
        """Latents -> uint8 images [N, H, W, C]: the mean of p(x|z), or a draw from it
        (from `seed`, or from its pixel stream when it is a RandomStreams)."""
        z = L.check_latents(z, self.latent_dim)
        sample_pixels = arguments.check_bool("sample_pixels", sample_pixels)
        if sample_pixels:
            self.spec.require_pixel_draws()
        return self._decode(z, self._pixel_rng(sample_pixels, seed))

    @staticmethod
    def _pixel_rng(sample_pixels: bool, seed: Seed) -> np.random.Generator | None:
        """The generator of pixel draws for a checked `sample_pixels` (None: means): `seed`'s,
        or its pixel stream when it is a RandomStreams."""
        if not sample_pixels:
            return None
        return seed.pixels if isinstance(seed, L.RandomStreams) else L.rng_from(seed)

    def _decode(self, z: np.ndarray, pixel_rng: np.random.Generator | None) -> np.ndarray:
        """`decode` of checked float32 latents: pixel draws from `pixel_rng`, or means when None."""
        out = np.empty((len(z), *self.image_shape), np.uint8)
        for sl in self._chunks(len(z)):
            if pixel_rng is not None:
                mean = self._draw_pixels(z[sl], pixel_rng)
            else:
                (mean,) = self._mean_decoder.run(z[sl], ["mean"])
            means_to_uint8(mean, out[sl], self.name)
        return out

    def _draw_pixels(self, z: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """x ~ p(x|z) in [0, 1] units, [N, C, H, W] float32, before rounding to 8-bit values.

        Diagonal: x = mean + sigma * eps. Low rank: x = mean + W eps1 + sigma * eps2, which has
        covariance diag(sigma^2) + W W^T. Each image takes its R + C*H*W normals from `rng` in
        one row, so the draws do not depend on how images are split into batches. Rounding
        to the nearest bin (edge bins open-ended, hence the clip in means_to_uint8) makes this a
        draw of the 8-bit image.
        """
        pixels = self.spec.pixels
        assert pixels is not None  # checked: a vae
        return pixels.draw(self._decoder.run(z, pixels.outputs), rng)

    # ---- generation and editing -----------------------------------------------------------

    def sample_latents(
        self,
        n: int,
        *,
        seed: Seed = None,
        temperature: float = 1.0,
        truncation: float | None = None,
        prior: str | None = None,
    ) -> np.ndarray:
        """n latents drawn from `prior` (see `priors`; default `default_prior`) with its spread
        scaled by `temperature`, optionally truncated: float32 [n, D]."""
        n = arguments.positive_int("n", n, MAX_SAMPLES)
        temperature, truncation = arguments.check_temperature(temperature), arguments.check_truncation(truncation)
        prior = arguments.check_prior(self.spec, prior)
        return np.concatenate(list(self._prior_blocks(n, L.rng_from(seed), temperature, truncation, prior)))

    def _prior_draw(self, prior: str | None) -> Draw:
        """The function drawing (n, rng, temperature, truncation) -> z for a prior name."""
        return self.spec.prior_set.draw(prior)

    def _prior_blocks(
        self, n: int, rng: np.random.Generator, temperature: float, truncation: float | None, prior: str | None = None
    ) -> Iterator[np.ndarray]:
        # Fixed-size blocks, whatever the batch size, so truncation's redraws consume the
        # stream identically and a seed means the same latents in every call pattern.
        draw = self._prior_draw(prior)
        for sl in self._chunks(n, PRIOR_BLOCK):
            yield draw(sl.stop - sl.start, rng, temperature, truncation)

    def iter_sample(
        self,
        n: int,
        *,
        seed: Seed = None,
        temperature: float = 1.0,
        truncation: float | None = None,
        sample_pixels: bool = False,
        prior: str | None = None,
    ) -> Iterator[np.ndarray]:
        """`sample` in batches of `batch_size` (memory stays bounded): yields uint8 [b, H, W, C].
        The concatenated batches equal `sample` with the same arguments."""
        # Checked now, not at the first next(): a generator function would defer every error.
        args = arguments.validate(self.spec, "sample", dict(n=n, seed=seed, temperature=temperature, truncation=truncation,
                                                sample_pixels=sample_pixels, prior=prior, stream=True))  # fmt: skip
        n, temperature, truncation = args["n"], args["temperature"], args["truncation"]
        return (images for _, images in self._sample_batches(n, seed, temperature, truncation, sample_pixels, prior))

    def _sample_batches(
        self, n: int, seed: Seed, temperature: float, truncation: float | None, sample_pixels: bool, prior: str | None,
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:  # fmt: skip
        """(latents, images) per batch: the latents come from the first of two streams split
        from `seed` (now, at the call), the pixel noise from the second."""
        z_rng, px_rng = L.split_rng(seed, 2) if sample_pixels else (L.latent_stream(seed), None)
        return self._decoded_blocks(n, z_rng, px_rng, temperature, truncation, prior)

    def _decoded_blocks(
        self, n: int, z_rng: np.random.Generator, px_rng: np.random.Generator | None, temperature: float,
        truncation: float | None, prior: str | None,
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:  # fmt: skip
        """Prior draws and their images; pixels drawn from `px_rng`, or means when it is None
        (callers have checked that the model can draw pixels)."""
        for block in self._prior_blocks(n, z_rng, temperature, truncation, prior):
            # Once per block, not per batch: a bundle's prior may be far from the range decode accepts.
            block = L.check_latents(block, self.latent_dim)
            for sl in self._chunks(len(block)):
                yield block[sl], self._decode(block[sl], px_rng)

    def sample(
        self,
        n: int = 16,
        *,
        seed: Seed = None,
        temperature: float = 1.0,
        truncation: float | None = None,
        sample_pixels: bool = False,
        prior: str | None = None,
        return_latents: bool = False,
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """n new images: latents drawn from `prior` (default `default_prior`: the bundle's
        fitted mixture when it has one, else N(0, I); see `priors` for the others, e.g. one
        Gaussian per class), decoded. uint8 [n, H, W, C]; with `return_latents`, the pair
        (images, the float32 [n, D] latents they were decoded from)."""
        return self.prepare("sample", n=n, seed=seed, temperature=temperature, truncation=truncation,
                            sample_pixels=sample_pixels, prior=prior, return_latents=return_latents)()  # fmt: skip

    def _sample_checked(self, args: dict[str, Any]) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """`sample` with the arguments `validate` checked."""
        parts = list(self._sample_batches(args["n"], args["seed"], args["temperature"], args["truncation"], args["sample_pixels"], args["prior"]))
        images = np.concatenate([im for _, im in parts])
        return (images, np.concatenate([z for z, _ in parts])) if args["return_latents"] else images

    def reconstruct(
        self,
        images: ImageInput | Sequence[ImageInput],
        *,
        sample_latent: bool = False,
        sample_pixels: bool = False,
        seed: Seed = None,
    ) -> np.ndarray:
        """Encode then decode: uint8 [N, H, W, C]."""
        streams = L.RandomStreams.from_seed(seed)  # a RandomStreams passes through with its own generators
        z = self.embed(images, sample_latent=sample_latent, seed=streams)
        return self.decode(z, sample_pixels=sample_pixels, seed=streams)

    def edit_latents(
        self, z: np.ndarray, *, dim: int | None = None, direction: str | np.ndarray | None = None, delta: float = 1.0
    ) -> np.ndarray:
        """Shift latents: `dim` by `delta` prior standard deviations, or along a named (or
        given) direction by `delta` times its vector."""
        z = L.check_latents(z, self.latent_dim)
        target = arguments.edit_target(self.spec, dim, direction)
        return self._shift(z, target, arguments.check_delta(delta))

    def _shift(self, z: np.ndarray, target: tuple[int | None, np.ndarray | None], delta: float) -> np.ndarray:
        """z moved by checked arguments (see `edit_latents`)."""
        z = z.copy()
        dim, vector = target
        if dim is not None:
            z[:, dim] += np.float32(delta)
        else:
            z += np.float32(delta) * vector
        if not np.isfinite(z).all() or np.abs(z).max() > L.MAX_ABS_LATENT:
            raise InvalidArgumentError(f"delta {delta!r} pushes the latent beyond +-{L.MAX_ABS_LATENT:g}; use a smaller delta")
        return z

    def edit(
        self,
        images: ImageInput | Sequence[ImageInput],
        *,
        dim: int | None = None,
        direction: str | np.ndarray | None = None,
        delta: float = 1.0,
        sample_latent: bool = False,
        sample_pixels: bool = False,
        seed: Seed = None,
    ) -> np.ndarray:
        """Encode, shift (see `edit_latents`), decode: uint8 [N, H, W, C]."""
        return self.prepare("edit", dim=dim, direction=direction, delta=delta, sample_latent=sample_latent,
                            sample_pixels=sample_pixels, seed=seed)(images)  # fmt: skip

    def _encode_change_decode(
        self, images: ImageInput | Sequence[ImageInput], args: dict[str, Any], streams: L.RandomStreams, shift: bool
    ) -> np.ndarray:
        """`reconstruct`, or with `shift` `edit`, of arguments `validate` checked: latents drawn
        from `streams.latent`, pixels from `streams.pixels`."""
        z = self._latents_of(images, args["sample_latent"], streams)
        if shift:
            z = self._shift(z, (args["dim"], args["direction"]), args["delta"])
        return self._decode(L.check_latents(z, self.latent_dim), self._pixel_rng(args["sample_pixels"], streams))

    def interpolate_latents(self, a: np.ndarray, b: np.ndarray, steps: int = 8, method: str = "slerp") -> np.ndarray:
        """`steps` latents from a to b inclusive: float32 [steps, D]."""
        a = L.check_latents(a, self.latent_dim, "a")
        b = L.check_latents(b, self.latent_dim, "b")
        if len(a) != 1 or len(b) != 1:
            raise InvalidArgumentError("interpolate takes one start and one end latent")
        steps = arguments.positive_int("steps", steps, MAX_STEPS, minimum=2)
        return self._path(a[0], b[0], steps, arguments.check_method(method))

    @staticmethod
    def _path(a: np.ndarray, b: np.ndarray, steps: int, method: str) -> np.ndarray:
        """`interpolate_latents` of checked latents a, b [D] and arguments."""
        t = np.linspace(0.0, 1.0, steps)
        return (L.slerp if method == "slerp" else L.lerp)(a, b, t)

    def interpolate(
        self, a: ImageInput, b: ImageInput, *, steps: int = 8, method: str = "slerp", sample_pixels: bool = False,
        seed: Seed = None,
    ) -> np.ndarray:  # fmt: skip
        """Images along the path between the posterior means of images a and b: uint8 [steps, H, W, C].
        The first and last frames are the reconstructions of a and b."""
        args = arguments.validate(self.spec, "interpolate", dict(steps=steps, method=method, sample_pixels=sample_pixels, seed=seed))
        za, zb = self.embed([a, b])
        za, zb = L.check_latents(za, self.latent_dim, "a"), L.check_latents(zb, self.latent_dim, "b")
        z = self._path(za[0], zb[0], args["steps"], args["method"])
        return self._decode(L.check_latents(z, self.latent_dim), self._pixel_rng(args["sample_pixels"], seed))

    def traverse(
        self,
        image: ImageInput | None = None,
        *,
        dims: Sequence[int] | None = None,
        values: Sequence[float] | np.ndarray | None = None,
        max_dims: int = 8,
        seed: Seed = None,
        prior: str | None = None,
    ) -> Traversal:
        """Vary one latent dimension at a time around a base latent (the image's posterior
        mean, or a draw from `prior` when no image is given).

        Row r sets dimension dims[r] to each of `values` (default -3..3 in 7 steps, in prior
        standard deviations); dims default to the `max_dims` most used dimensions.
        """
        args = arguments.validate(self.spec, "traverse", dict(dims=dims, values=values, max_dims=max_dims, seed=seed, prior=prior))
        if image is None:
            base = np.concatenate(list(self._prior_blocks(1, L.rng_from(seed), 1.0, None, args["prior"])))
        else:
            base = self.embed(image)
            if len(base) != 1:
                raise InvalidArgumentError(f"traverse takes one image, got {len(base)}")
        dims = args["dims"] if args["dims"] is not None else self.dims_by_usage()[: args["max_dims"]]
        values = args["values"]
        z = np.repeat(base, len(dims) * len(values), axis=0).reshape(len(dims), len(values), -1)
        for r, d in enumerate(dims):
            z[r, :, d] = values
        images = self.decode(z.reshape(-1, self.latent_dim))
        return Traversal(images.reshape(len(dims), len(values), *self.image_shape), list(dims), values)

    # ---- likelihood -----------------------------------------------------------------------

    def score(
        self,
        images: ImageInput | Sequence[ImageInput],
        *,
        k: int = DEFAULT_IW_SAMPLES,
        seed: int | np.random.Generator | None = 0,
        calibrated: bool = True,
    ) -> Scores:
        """-ELBO and -(importance-weighted bound with k samples) per image in bits/dim, the
        anomaly score and, when the bundle is calibrated, its p-value (see `Scores`).
        calibrated=False ignores the bundle's calibration: the anomaly is the raw pixel + latent
        and there are no p-values (what `anomaly.calibrate_anomaly` fits a new calibration to)."""
        self.require_vae("scoring likelihoods")
        k = arguments.positive_int("k", k, MAX_IW_SAMPLES)
        calibration = self.spec.calibration if arguments.check_bool("calibrated", calibrated) else None
        return self._scorer.score(self._images(images), self.encode, k, seed, calibration)

    # ---- directions -----------------------------------------------------------------------

    def add_direction(
        self,
        name: str,
        from_images: ImageInput | Sequence[ImageInput],
        to_images: ImageInput | Sequence[ImageInput],
        *,
        description: str = "",
        overwrite: bool = False,
    ) -> np.ndarray:
        """Store mean(z of to_images) - mean(z of from_images) as a named direction in the
        bundle's manifest (written atomically; the model files and their checksums are untouched)."""
        vector = (self.embed(to_images).mean(0) - self.embed(from_images).mean(0)).astype(np.float32)
        with self._write_lock:
            self.manifest = add_direction(self.path, name, vector, description=description, overwrite=overwrite)
        return vector


def means_to_uint8(x: np.ndarray, out: np.ndarray, name: str) -> None:
    """Decoder means [N, C, H, W] in [0, 1] units -> uint8 `out` [N, H, W, C]. Works in place
    on `x` (a fresh output of onnxruntime): no temporary arrays."""
    # One reduction catches NaN and inf: both make the sum non-finite.
    if not np.isfinite(x.sum(dtype=np.float64)):
        raise BundleError(f"the decoder of {name!r} produced NaN or infinite pixels; the model file is broken")
    # Scaled first, then clipped to [0, 255]: the same values as clipping to [0, 1] first (x * 255
    # is monotonic and exact at 0 and 1), with maximum and minimum directly instead of through
    # np.clip's Python wrapper.
    x *= np.float32(255.0)
    np.maximum(x, 0.0, out=x)
    np.minimum(x, 255.0, out=x)
    np.rint(x, out=x)
    np.copyto(out, x.transpose(0, 2, 3, 1), casting="unsafe")  # exact: the values are whole numbers




