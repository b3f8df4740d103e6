"""The model bundle's format: a folder holding manifest.json, encoder.onnx and decoder.onnx.

This module is the one definition of the format: its constants and limits, the graphs'
input/output contract, the manifest's checks (`validate_manifest`) and its JSON text
(`manifest_json`). Export writes bundles by it; `reading` reads them from disk by it and
`editing` rewrites a manifest in place.

Contract, N being a symbolic batch dimension and the shapes those of the bundle's `Geometry`:
  encoder.onnx  x [N, C, H, W] float32 in the image's range  ->  mean, logvar: latents [N, D] or [N, C', h, w]
                                                                 (ae: mean only)
  decoder.onnx  z: latents                                   ->  mean [N, C, H, W], logvar [N, C, H, W]
                                                                 (ae, and decoders without a Gaussian: mean only)
                                                                 and factor [N, R, C, H, W] with a low-rank covariance
Version 3 added spatial latents, free and non-square image sizes, the pixel range and
latent-diffusion scaling (`geometry`); version 2 the low-rank covariance, the dequantized
likelihood and fitted mixture priors. Bundles of versions 1 and 2 read unchanged, and a
writer uses the lowest version that describes its bundle (`version_for`).
"""


from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from ..base.errors import BundleError
from ..maths.anomaly import check_manifest_entry as check_anomaly_entry
from ..maths.pixels import MANIFEST_TYPES, PixelLikelihood
from ..maths.priors import KINDS, STANDARD_PRIOR, anomaly_densities, prior_files
from .geometry import MAX_FACTOR, MAX_IMAGE_SIDE, MAX_LATENT_CHANNELS, MAX_LATENT_DIM, PIXEL_RANGES, Geometry

BUNDLE_FORMAT = "vaesdk-bundle"
FORMAT_VERSION = 3
MANIFEST = "manifest.json"
MAX_MODEL_BYTES = 512 * 1024 * 1024
MAX_MANIFEST_BYTES = 16 * 1024 * 1024
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")
FILE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}\.onnx\Z")
PRIOR_FILE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}\.npz\Z")
MAX_PRIOR_BYTES = 64 * 1024 * 1024
ROLES = ("encoder", "decoder")
FP16 = "fp16"
"""The variant holding a decoder that computes in float16 behind the decoder's float32 contract."""
# The operators a bundle's graphs may run: what exporters of convolutional and attention
# autoencoders produce, with no control flow (Loop, If, Scan), no random or sequence operators
# and no custom domains, so that running a graph once costs what its size says.
OPERATORS = frozenset(
    "Abs Add And AveragePool BatchNormalization Cast Ceil Celu Clip Concat Constant ConstantOfShape Conv "
    "ConvTranspose Cos DepthToSpace Div Dropout Einsum Elu Equal Erf Exp Expand Flatten Floor Gather Gelu Gemm "
    "GlobalAveragePool Greater GroupNormalization HardSigmoid HardSwish Identity InstanceNormalization "
    "LayerNormalization LeakyRelu Less Log LogSoftmax MatMul Max MaxPool Mean Min Mish Mul Neg Not Or Pad Pow "
    "Reciprocal ReduceL2 ReduceMax ReduceMean ReduceMin ReduceSum ReduceSumSquare Relu Reshape Resize Round Selu "
    "Shape Sigmoid Sign Sin Size Slice Softmax Softplus Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum Tanh Tile "
    "Transpose Unsqueeze Upsample Where".split()
)
# The most elements a constant shape may ask an Expand, Tile, ConstantOfShape or Resize for:
# 2^28 float32 values are 1 GiB.
MAX_CONSTANT_ELEMENTS = 1 << 28


LIKELIHOODS = MANIFEST_TYPES


def io_contract(kind: str, geometry: Geometry, rank: int = 0, decoder_logvar: bool = True) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """The inputs and outputs each graph must have, as written into the manifest.
    rank > 0: the decoder also outputs the factor W of a low-rank-plus-diagonal covariance;
    decoder_logvar=False: a vae decoder whose likelihood needs its mean only (Bernoulli,
    continuous Bernoulli, a fixed sigma, none)."""
    image, latent = geometry.graph_shapes()
    outs = ("mean", "logvar") if kind == "vae" else ("mean",)

    def spec(name: str, shape: list) -> dict[str, Any]:
        return {"name": name, "dtype": "float32", "shape": shape}

    decoder_outs = [spec(o, image) for o in (outs if decoder_logvar else ("mean",))]
    if rank:
        decoder_outs.append(spec("factor", ["N", rank, *image[1:]]))
    return {
        "encoder": {"inputs": [spec("x", image)], "outputs": [spec(o, latent) for o in outs]},
        "decoder": {"inputs": [spec("z", latent)], "outputs": decoder_outs},
    }


def version_for(geometry: Geometry) -> int:
    """The lowest format version that describes a bundle of this geometry."""
    return 2 if geometry.square_flat else 3


# ---- manifest schema ----------------------------------------------------------------------


def _fail(where: str, problem: str) -> BundleError:
    return BundleError(f"invalid manifest: {where} {problem}")


def _get(d: dict, key: str, kind: type | tuple[type, ...], where: str, required: bool = True) -> Any:
    if key not in d:
        if required:
            raise _fail(f"{where}.{key}".lstrip("."), "is missing")
        return None
    v = d[key]
    if isinstance(v, bool) and kind in (int, float, (int, float)):
        raise _fail(f"{where}.{key}".lstrip("."), f"must be {_kind_name(kind)}, got {v!r}")
    if not isinstance(v, kind):
        raise _fail(f"{where}.{key}".lstrip("."), f"must be {_kind_name(kind)}, got {type(v).__name__}")
    return v


def _kind_name(kind: type | tuple[type, ...]) -> str:
    names = {dict: "an object", list: "a list", str: "a string", int: "an integer", float: "a number", bool: "true/false"}
    if isinstance(kind, tuple):
        return " or ".join(names.get(k, k.__name__) for k in kind)
    return names.get(kind, kind.__name__)


def _vector(v: Any, dim: int, where: str) -> list[float]:
    if not isinstance(v, list) or len(v) != dim:
        raise _fail(where, f"must be a list of {dim} numbers")
    # The common case at C speed (a manifest's Gaussians hold tens of thousands of numbers):
    # only ints and floats, each made a float, with a finite sum (a NaN or an infinity makes it
    # not finite). Any doubt (a finite sum that overflows, an int too large for a float) takes
    # the loop below.
    if set(map(type, v)) <= {int, float}:
        try:
            if math.isfinite(sum(map(float, v))):
                return v
        except OverflowError:
            pass
    for x in v:
        try:
            finite = not isinstance(x, bool) and isinstance(x, (int, float)) and math.isfinite(x)
        except OverflowError:  # an integer too large for a float
            finite = False
        if not finite:
            raise _fail(where, f"must hold finite numbers, found {x!r:.40}")
    return v


def _same_json(a: Any, b: Any) -> bool:
    """Equal as JSON values, kinds included: unlike ==, 28.0 is not 28 and true is not 1."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same_json(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same_json(x, y) for x, y in zip(a, b))
    return a == b


@dataclass(frozen=True)
class Manifest:
    """A validated manifest; `data` is the full JSON object."""

    data: dict[str, Any]

    @property
    def name(self) -> str:
        return self.data["name"]

    @property
    def kind(self) -> str:
        return self.data["kind"]

    @cached_property
    def geometry(self) -> Geometry:
        """The image and latent shapes (`geometry.Geometry`), worked out once: every call of
        an operation asks for them."""
        return Geometry.from_manifest(self.data)

    @property
    def channels(self) -> int:
        return self.data["image"]["channels"]

    @property
    def latent_dim(self) -> int:
        """D of flat latents; C*h*w of spatial latents of a fixed size (what a prior draws)."""
        return self.geometry.latent_dim

    @property
    def directions(self) -> dict[str, dict[str, Any]]:
        return self.data.get("directions") or {}

    @property
    def likelihood_type(self) -> str | None:
        """'discretized_gaussian', 'dequantized_gaussian', or None for a plain autoencoder."""
        lik = self.data.get("likelihood")
        return lik["type"] if lik else None

    @property
    def pixel_likelihood(self) -> PixelLikelihood | None:
        """p(x|z) (vaesdk.maths.pixels), or None for a plain autoencoder."""
        return PixelLikelihood.from_manifest(self.data.get("likelihood"))

    @property
    def decoder_outputs(self) -> list[str]:
        """The decoder's outputs, in the contract's order."""
        return [o["name"] for o in self.data["decoder"]["outputs"]]

    @property
    def covariance_rank(self) -> int:
        """Columns of the decoder's covariance factor; 0 for a diagonal covariance."""
        lik = self.data.get("likelihood") or {}
        return int(lik.get("rank", 0)) if lik.get("covariance") == "lowrank" else 0

    def file(self, role: str) -> dict[str, Any]:
        return self.data[role]

    @property
    def fp16_decoder(self) -> dict[str, Any] | None:
        """The file entry of the decoder that computes in float16, or None."""
        variants = self.data.get("variants")
        entry = variants.get(FP16) if isinstance(variants, dict) else None
        return entry["decoder"] if entry else None

    @property
    def prior_files(self) -> dict[str, dict[str, Any]]:
        """The stored priors kept in files: name -> {file, sha256, bytes, ...}."""
        return prior_files(self.data["latent"])

    @property
    def default_prior(self) -> str | None:
        """The manifest's `latent.default_prior`, or None when it names none; the default
        prior itself (this, or the format's rule without it) is `PriorSet.default`."""
        return self.data["latent"].get("default_prior")


def _check_file_entry(
    entry: dict[str, Any], where: str, pattern: re.Pattern[str] = FILE_RE, suffix: str = ".onnx", max_bytes: int = MAX_MODEL_BYTES,
    taken: tuple[str, ...] = (),
) -> None:  # fmt: skip
    """A file's entry: a plain name matching `pattern` (ending in `suffix`) and none of `taken`,
    its sha256 and its size in 1..max_bytes. Graphs by default; prior files pass their own."""
    fname = _get(entry, "file", str, where)
    if not pattern.match(fname) or fname in taken:
        raise _fail(f"{where}.file", f"must be a plain file name ending in {suffix}, got {fname!r}")
    if not re.fullmatch(r"[0-9a-f]{64}", _get(entry, "sha256", str, where)):
        raise _fail(f"{where}.sha256", "must be 64 lowercase hex digits")
    size = _get(entry, "bytes", int, where)
    if not 0 < size <= max_bytes:
        raise _fail(f"{where}.bytes", f"must be in 1..{max_bytes}, got {size}")


def _check_geometry(data: dict[str, Any], version: int) -> Geometry:
    """The `image` and `latent` objects held to the format of `version`: the geometry."""
    image = _get(data, "image", dict, "")
    latent = _get(data, "latent", dict, "")
    channels = _get(image, "channels", int, "image")
    if channels not in (1, 3):
        raise _fail("image.channels", f"must be 1 or 3, got {channels}")
    fixed = "height" in image or "width" in image or version < 3
    if fixed:
        h, w = _get(image, "height", int, "image"), _get(image, "width", int, "image")
        if not (1 <= h <= MAX_IMAGE_SIDE and 1 <= w <= MAX_IMAGE_SIDE) or (version < 3 and h != w):
            shape = "square with a side" if version < 3 else "of height and width"
            raise _fail("image", f"must be {shape} in 1..{MAX_IMAGE_SIDE}, got {h}x{w}")
        if "multiple" in image:
            raise _fail("image.multiple", "is for a free size; a fixed size (height, width) has none")
    else:
        multiple = _get(image, "multiple", int, "image")
        if not 1 <= multiple <= MAX_FACTOR:
            raise _fail("image.multiple", f"must be in 1..{MAX_FACTOR}, got {multiple}")
    if version < 3:
        for key in ("range",):
            if key in image:
                raise _fail(f"image.{key}", f"is a format version 3 key; this manifest says version {version}")
    lo_hi = image.get("range", [0, 1])
    if not isinstance(lo_hi, list) or tuple(float(v) for v in lo_hi if isinstance(v, (int, float)) and not isinstance(v, bool)) not in PIXEL_RANGES or len(lo_hi) != 2:
        raise _fail("image.range", f"must be [0, 1] or [-1, 1], got {lo_hi!r:.40}")

    spatial = "factor" in latent or "channels" in latent
    if spatial and version < 3:
        raise _fail("latent", f"has spatial keys (channels, factor), which need format version 3; this manifest says {version}")
    if spatial:
        if "dim" in latent:
            raise _fail("latent.dim", "is for flat latents; spatial latents have channels and factor")
        c = _get(latent, "channels", int, "latent")
        if not 1 <= c <= MAX_LATENT_CHANNELS:
            raise _fail("latent.channels", f"must be in 1..{MAX_LATENT_CHANNELS}, got {c}")
        f = _get(latent, "factor", int, "latent")
        if not 1 <= f <= MAX_FACTOR:
            raise _fail("latent.factor", f"must be in 1..{MAX_FACTOR}, got {f}")
        if fixed and (image["height"] % f or image["width"] % f):
            raise _fail("latent.factor", f"must divide the image's height and width ({image['height']}x{image['width']}), got {f}")
        if not fixed and image["multiple"] % f:
            raise _fail("image.multiple", f"must be a multiple of latent.factor {f}, got {image['multiple']}")
        for key in ("scaling_factor", "shift_factor"):
            v = _get(latent, key, (int, float), "latent", required=False)
            if v is not None and not (math.isfinite(v) and (key == "shift_factor" or v > 0)):
                raise _fail(f"latent.{key}", f"must be a finite number{' above 0' if key == 'scaling_factor' else ''}, got {v!r}")
        for key in ("channel_mean", "channel_std"):
            if latent.get(key) is not None:
                values = _vector(latent[key], c, f"latent.{key}")
                if key == "channel_std" and min(values) <= 0:
                    raise _fail("latent.channel_std", "must hold numbers above 0")
    else:
        if not fixed:
            raise _fail("image", "has a free size (multiple), which needs spatial latents (latent.channels, latent.factor)")
        if tuple(float(v) for v in lo_hi) != (0.0, 1.0):
            raise _fail("image.range", f"must be [0, 1] with flat latents (their likelihoods are stated in [0, 1] pixel units), got {lo_hi}")
        dim = _get(latent, "dim", int, "latent")
        if not 1 <= dim <= MAX_LATENT_DIM:
            raise _fail("latent.dim", f"must be in 1..{MAX_LATENT_DIM}, got {dim}")
        for key in ("scaling_factor", "shift_factor", "channel_mean", "channel_std"):
            if key in latent:
                raise _fail(f"latent.{key}", "is for spatial latents (latent.channels, latent.factor)")
    return Geometry.from_manifest(data)


def validate_manifest(data: Any) -> Manifest:
    """Check types, required fields, version and internal consistency; raise BundleError."""
    if not isinstance(data, dict):
        raise BundleError("invalid manifest: the top level must be a JSON object")
    if data.get("format") != BUNDLE_FORMAT:
        raise _fail("format", f"must be {BUNDLE_FORMAT!r}, got {data.get('format')!r} (is this a vaesdk bundle?)")
    version = _get(data, "format_version", int, "")
    if version > FORMAT_VERSION:
        raise BundleError(
            f"bundle format_version {version} is newer than this vaesdk understands ({FORMAT_VERSION}); upgrade vaesdk"
        )
    if version < 1:
        raise _fail("format_version", f"must be in 1..{FORMAT_VERSION}, got {version}")
    name = _get(data, "name", str, "")
    if not NAME_RE.match(name):
        raise _fail("name", f"must match {NAME_RE.pattern}, got {name!r}")
    _get(data, "description", str, "", required=False)
    kind = _get(data, "kind", str, "")
    if kind not in ("vae", "ae"):
        raise _fail("kind", f"must be 'vae' or 'ae', got {kind!r}")

    geometry = _check_geometry(data, version)
    dim = geometry.latent_dim if (geometry.fixed_size or not geometry.spatial) else 0
    latent = data["latent"]
    _get(latent, "default_prior", str, "latent", required=False)
    if latent.get("kl_per_dim") is not None:
        if geometry.spatial:
            raise _fail("latent.kl_per_dim", "is for flat latents; a bundle with spatial latents has none")
        _vector(latent["kl_per_dim"], dim, "latent.kl_per_dim")

    likelihood = data.get("likelihood")
    rank = 0
    if kind == "vae":
        if not isinstance(likelihood, dict) or likelihood.get("type") not in LIKELIHOODS:
            raise _fail("likelihood", f"must be {{'type': one of {list(LIKELIHOODS)}, ...}} for a vae")
        covariance = likelihood.get("covariance", "diagonal")
        if covariance == "lowrank":
            rank = _get(likelihood, "rank", int, "likelihood")
            if not 1 <= rank <= 256:
                raise _fail("likelihood.rank", f"must be in 1..256, got {rank}")
            if likelihood["type"] != "dequantized_gaussian":
                raise _fail("likelihood.type", "must be 'dequantized_gaussian' with a low-rank covariance")
        elif covariance == "fixed":
            if likelihood["type"] != "discretized_gaussian":
                raise _fail("likelihood.covariance", "'fixed' (a sigma in the manifest) goes with type 'discretized_gaussian'")
            sigma = _get(likelihood, "sigma", (int, float), "likelihood")
            if not 1e-4 <= sigma <= 10.0:
                raise _fail("likelihood.sigma", f"must be in 1e-4..10 ([0, 1] pixel units), got {sigma}")
        elif covariance != "diagonal":
            raise _fail("likelihood.covariance", f"must be 'diagonal', 'lowrank' or 'fixed', got {covariance!r}")
        if likelihood["type"] in ("bernoulli", "continuous_bernoulli", "none") and covariance != "diagonal":
            raise _fail("likelihood.covariance", f"must be absent for type {likelihood['type']!r}, got {covariance!r}")
    elif likelihood is not None:
        raise _fail("likelihood", "must be null for a plain autoencoder ('ae')")
    if geometry.spatial and kind == "vae" and likelihood.get("type") != "none":
        raise _fail("likelihood.type", f"must be 'none' with spatial latents (a deterministic decoder), got {likelihood.get('type')!r}")
    if geometry.spatial and data.get("anomaly") is not None:
        raise _fail("anomaly", "is not defined for spatial latents; a bundle with spatial latents has none")

    decoder_logvar = kind != "vae" or PixelLikelihood.from_manifest(likelihood).outputs[1:2] == ["logvar"]
    contract = io_contract(kind, geometry, rank, decoder_logvar)
    for role in ROLES:
        entry = _get(data, role, dict, "")
        _check_file_entry(entry, role)
        for side in ("inputs", "outputs"):
            if not _same_json(_get(entry, side, list, role), contract[role][side]):
                raise _fail(f"{role}.{side}", f"must be {contract[role][side]} for this kind, image and latent shape")
    if data["encoder"]["file"] == data["decoder"]["file"]:
        raise _fail("decoder.file", "must differ from encoder.file")
    fp16 = (data.get("variants") or {}).get(FP16) if isinstance(data.get("variants"), dict) else None
    if fp16 is not None:
        if version < 3:
            raise _fail(f"variants.{FP16}", f"is a format version 3 key; this manifest says version {version}")
        decoder = _get(fp16, "decoder", dict, f"variants.{FP16}") if isinstance(fp16, dict) else None
        if decoder is None:
            raise _fail(f"variants.{FP16}", "must be an object {decoder: {file, sha256, bytes}}")
        _check_file_entry(decoder, f"variants.{FP16}.decoder")
        if decoder["file"] in (data["encoder"]["file"], data["decoder"]["file"]):
            raise _fail(f"variants.{FP16}.decoder.file", "must differ from encoder.file and decoder.file")

    directions = data.get("directions")
    if directions is not None:
        if not isinstance(directions, dict):
            raise _fail("directions", "must be an object of name -> {vector, ...}")
        for dname, entry in directions.items():
            if not NAME_RE.match(dname):
                raise _fail("directions", f"has a bad name {dname!r} (letters, digits, '_', '.', '-')")
            if not isinstance(entry, dict):
                raise _fail(f"directions.{dname}", "must be an object")
            _vector(entry.get("vector"), geometry.latent_channels if geometry.spatial else dim, f"directions.{dname}.vector")
    latent = data["latent"]
    if any(latent.get(k.key) for k in KINDS) and not dim:
        raise _fail("latent", "holds priors, which need latents of one shape: a bundle of a free image size has none")
    names = {STANDARD_PRIOR} if kind == "vae" and not geometry.spatial else set()  # N(0, I) is the prior of flat VAE latents only
    for prior_kind in KINDS:
        entries = latent.get(prior_kind.key)
        if entries is None:
            continue
        key = f"latent.{prior_kind.key}"
        if not isinstance(entries, dict):
            shape = "{file, sha256, bytes, ...}" if prior_kind.in_file else "{...}"
            raise _fail(key, f"must be an object of name -> {shape}")
        for pname, entry in entries.items():
            where = f"{key}.{pname}"
            # 'standard' means N(0, I) in every kind, so no stored prior takes it; one name, one prior.
            if not NAME_RE.match(pname) or pname in names | {STANDARD_PRIOR}:
                raise _fail(key, f"has a bad or repeated prior name {pname!r} (a stored prior's name is not 'standard' nor another prior's)")
            if not isinstance(entry, dict):
                raise _fail(where, "must be an object")
            if prior_kind.in_file:
                _check_file_entry(entry, where, PRIOR_FILE_RE, ".npz", MAX_PRIOR_BYTES, (data["encoder"]["file"], data["decoder"]["file"]))
            if prior_kind.check is not None:
                prior_kind.check(entry, dim, where, _vector, _fail)
            names.add(pname)
    default = data["latent"].get("default_prior")
    if default is not None and default not in names:
        raise _fail("latent.default_prior", f"names no prior of this bundle ({default!r}; known: {sorted(names)})")
    if data.get("anomaly") is not None:
        check_anomaly_entry(data["anomaly"])
        prior = (data["anomaly"].get("calibration") or {}).get("prior")
        usable, kinds = anomaly_densities(latent)
        if prior is not None and prior != STANDARD_PRIOR and prior not in usable:
            raise _fail("anomaly.calibration.prior", f"must be 'standard' or a {kinds} of this bundle, got {prior!r} (yours: {usable})")
    for key in ("metrics", "training", "parity", "onnx", "variants"):
        if data.get(key) is not None and not isinstance(data[key], dict):
            raise _fail(key, "must be an object")
    return Manifest(data)


def manifest_json(data: dict[str, Any]) -> str:
    """Indented JSON with innermost lists (shapes, vectors) kept on one line each."""
    text = json.dumps(data, indent=2, allow_nan=False)
    # A JSON string cannot hold a raw newline, so folding newlines inside a list of scalars
    # never changes a value.
    text = re.sub(r"\[\n\s*([^\[\]{}]*?)\n\s*\]", lambda m: "[" + re.sub(r",\n\s*", ", ", m.group(1)) + "]", text)
    return text + "\n"
