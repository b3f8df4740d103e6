"""A Triton Inference Server model repository of a bundle's two graphs, written without torch.

    OUT/
      <name>-encoder/config.pbtxt      Triton's model configuration (protobuf text format)
      <name>-encoder/1/model.onnx      the bundle's encoder graph, byte for byte
      <name>-decoder/config.pbtxt
      <name>-decoder/1/model.onnx      the bundle's decoder graph, byte for byte

Each configuration is written from the graph itself (read with `onnx_proto`, after the
bundle's checks): its inputs and outputs by name, element type and shape, with the batch axis
left to `max_batch_size` as Triton wants it, for Triton's onnxruntime backend with dynamic
batching. Triton serves the raw graphs: turning images into the encoder's input and the
decoder's outputs into pixels is the client's part (docs/bundle-format.md, "Pixels in" and
"Pixels out"), as is drawing latents from the bundle's priors.

The folder appears whole or not at all: it is built beside OUT and renamed into place.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from ..base.checks import positive_int
from ..base.errors import BundleError, InvalidArgumentError, OutputError
from ..base.fileio import UMASK, checked_path, swap_folder, write_atomic
from .format import NAME_RE, ROLES, Manifest
from .onnx_proto import ModelInfo, TensorSpec
from .reading import read_bundle
from .registry import resolve

CONFIG_FILE = "config.pbtxt"
MODEL_FILE = "model.onnx"  # the onnxruntime backend's default model file name
VERSION = "1"
BACKEND = "onnxruntime"

# Instance kinds by the word the command line takes: KIND_AUTO is a GPU where Triton has one.
INSTANCE_KINDS = {"auto": "KIND_AUTO", "cpu": "KIND_CPU", "gpu": "KIND_GPU"}
# ONNX element types (onnx_proto's names) -> Triton's data types.
TRITON_TYPES = {
    "float32": "TYPE_FP32", "float16": "TYPE_FP16", "float64": "TYPE_FP64", "bfloat16": "TYPE_BF16",
    "uint8": "TYPE_UINT8", "int8": "TYPE_INT8", "int16": "TYPE_INT16", "int32": "TYPE_INT32",
    "int64": "TYPE_INT64", "bool": "TYPE_BOOL",
}  # fmt: skip


@dataclass(frozen=True)
class TritonSettings:
    """How Triton runs each graph: requests of up to `max_batch_size` items, `instances`
    copies of the graph on `kind` ('auto', 'cpu' or 'gpu'; KINDS), and a dynamic batcher that
    waits up to `queue_delay_us` microseconds to fill a batch. The defaults and the MAX_
    bounds are the command line's too."""

    MAX_BATCH_SIZE: ClassVar[int] = 65536
    MAX_INSTANCES: ClassVar[int] = 256
    MAX_QUEUE_DELAY_US: ClassVar[int] = 10_000_000
    KINDS: ClassVar[tuple[str, ...]] = tuple(INSTANCE_KINDS)

    max_batch_size: int = 64
    instances: int = 1
    kind: str = "auto"
    queue_delay_us: int = 100

    def __post_init__(self) -> None:
        positive_int("max_batch_size", self.max_batch_size, self.MAX_BATCH_SIZE)
        positive_int("instances", self.instances, self.MAX_INSTANCES)
        positive_int("queue_delay_us", self.queue_delay_us, self.MAX_QUEUE_DELAY_US, minimum=0)
        if not isinstance(self.kind, str) or self.kind not in INSTANCE_KINDS:
            raise InvalidArgumentError(f"kind must be one of {', '.join(INSTANCE_KINDS)}, got {self.kind!r:.80}")


@dataclass(frozen=True)
class TritonTensor:
    """One input or output as Triton declares it: dims without the batch axis, -1 where the
    graph leaves a size open."""

    name: str
    data_type: str
    dims: tuple[int, ...]


@dataclass(frozen=True)
class TritonModel:
    """One model of the repository: its Triton name, the bundle role it serves, its
    configuration's text and the graph's bytes."""

    name: str
    role: str
    inputs: tuple[TritonTensor, ...]
    outputs: tuple[TritonTensor, ...]
    config: str
    graph: bytes


@dataclass(frozen=True)
class TritonRepository:
    """A written repository: its folder and its models (encoder first)."""

    path: Path
    models: tuple[TritonModel, ...]
    settings: TritonSettings


def triton_model_name(name: str, role: str) -> str:
    """The Triton model name of a bundle's graph: `<name>-encoder`, `<name>-decoder`."""
    return f"{name}-{role}"


def triton_tensor(spec: TensorSpec, label: str) -> TritonTensor:
    """A graph input or output in Triton's terms; its first axis is the batch axis."""
    data_type = TRITON_TYPES.get(spec.dtype)
    if data_type is None:
        raise BundleError(f"{label} '{spec.name}' is {spec.dtype}, which Triton's onnxruntime backend cannot take as a tensor")
    if not spec.shape or isinstance(spec.shape[0], int):
        raise BundleError(f"{label} '{spec.name}' has shape {list(spec.shape)}; the first axis must be a symbolic batch axis")
    return TritonTensor(spec.name, data_type, tuple(d if isinstance(d, int) and d > 0 else -1 for d in spec.shape[1:]))


def _quoted(text: str) -> str:
    """A protobuf text-format string literal."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + "".join(c if c.isprintable() else f"\\{ord(c):03o}" for c in escaped) + '"'


def _tensors(field: str, tensors: tuple[TritonTensor, ...]) -> list[str]:
    entries = []
    for t in tensors:
        dims = ", ".join(str(d) for d in t.dims)
        entries.append(f"  {{\n    name: {_quoted(t.name)}\n    data_type: {t.data_type}\n    dims: [ {dims} ]\n  }}")
    return [f"{field} [", ",\n".join(entries), "]"]


def _describe(manifest: Manifest, role: str) -> list[str]:
    """What the graph takes and gives, in the bundle format's words, as comment lines."""
    g = manifest.geometry
    c = g.channels
    h, w = (g.height, g.width) if g.fixed_size else ("H", "W")
    lo, hi = g.pixel_range
    units = "p * float32(1/255)" if (lo, hi) == (0.0, 1.0) else f"p * float32(1/255) * {hi - lo:g} {'-' if lo < 0 else '+'} {abs(lo):g}"
    latent = f"[{g.latent_channels}, {'H' if not g.fixed_size else h}/{g.factor}, {'W' if not g.fixed_size else w}/{g.factor}]" if g.spatial else f"[{manifest.latent_dim}]"
    sides = f" (H and W multiples of {g.multiple})" if not g.fixed_size else ""
    if role == "encoder":
        lines = [
            f"Input x: uint8 images p [H, W, C] = [{h}, {w}, {c}]{sides} as float32 {units},",
            f"channels first [{c}, {h}, {w}] (docs/bundle-format.md, Pixels in).",
        ]
        if manifest.kind == "vae":
            lines.append(f"Outputs mean, logvar {latent}: the posterior q(z|x) = N(mean, diag(exp(logvar))).")
        else:
            lines.append(f"Output mean {latent}: the latent of each image.")
    else:
        out = "in [0, 1]" if (lo, hi) == (0.0, 1.0) else f"in [{lo:g}, {hi:g}]"
        lines = [
            f"Input z: latents {latent}, from the bundle's priors or the encoder.",
            f"Output mean [{c}, {h}, {w}]: pixel means {out}; uint8 pixels are",
            f"rint(clip({'mean' if (lo, hi) == (0.0, 1.0) else 'mean in [0, 1] units'}, 0, 1) * 255), channels last (docs/bundle-format.md, Pixels out).",
        ]
        others = [name for name in manifest.decoder_outputs if name != "mean"]
        if others:
            lines.append(f"Outputs {', '.join(others)}: the parameters of p(x|z) ({manifest.likelihood_type}).")
    return lines


def model_config(name: str, role: str, graph: bytes, info: ModelInfo, manifest: Manifest, settings: TritonSettings) -> TritonModel:
    """The Triton model of one graph: its bytes, verified by the bundle's checks, and what
    onnx_proto read from them (`info`)."""
    label = f"the {role} graph"
    inputs = tuple(triton_tensor(t, f"{label} input") for t in info.inputs)
    outputs = tuple(triton_tensor(t, f"{label} output") for t in info.outputs)
    model_name = triton_model_name(name, role)
    lines = [f"# {model_name}: the {role} of the vaesdk bundle {manifest.name!r}, for Triton's onnxruntime backend."]
    lines += [f"# {line}" for line in _describe(manifest, role)]
    lines += [
        f"name: {_quoted(model_name)}",
        f"backend: {_quoted(BACKEND)}",
        f"default_model_filename: {_quoted(MODEL_FILE)}",
        f"max_batch_size: {settings.max_batch_size}",
        *_tensors("input", inputs),
        *_tensors("output", outputs),
        "dynamic_batching {",
        f"  max_queue_delay_microseconds: {settings.queue_delay_us}",
        "}",
        "instance_group [",
        "  {",
        f"    count: {settings.instances}",
        f"    kind: {INSTANCE_KINDS[settings.kind]}",
        "  }",
        "]",
    ]
    return TritonModel(model_name, role, inputs, outputs, "\n".join(lines) + "\n", graph)


def triton_models(model: str | os.PathLike | None, settings: TritonSettings, name: str | None = None) -> tuple[TritonModel, ...]:
    """The repository's models for a bundle (a bundled model's name or a bundle folder), read
    and verified like any load; `name` replaces the bundle's name in the model names."""
    if name is not None and (not isinstance(name, str) or not NAME_RE.match(name)):
        raise InvalidArgumentError(f"name {name!r:.80} must be 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit")
    bundle = read_bundle(resolve(model))
    name = name or bundle.manifest.name
    return tuple(model_config(name, role, bundle.models[role], bundle.info[role], bundle.manifest, settings) for role in ROLES)


def write_triton_repository(
    model: str | os.PathLike | None,
    out: str | os.PathLike,
    settings: TritonSettings | None = None,
    name: str | None = None,
    force: bool = False,
) -> TritonRepository:
    """Write a Triton model repository of a bundle's encoder and decoder to the folder `out`.

    `out` must not exist, or be an empty folder; with `force`, a model repository already
    there (a folder of model folders, each with its config.pbtxt) is replaced whole, and
    anything else in the way is refused. Nothing is left behind on failure."""
    settings = TritonSettings() if settings is None else settings
    if not isinstance(settings, TritonSettings):
        raise InvalidArgumentError(f"settings must be a TritonSettings, got {type(settings).__name__}")
    if not isinstance(force, bool):
        raise InvalidArgumentError(f"force must be True or False, got {force!r:.80}")
    out = checked_path(out, OutputError, "output folder")
    if out.name in ("", ".", ".."):
        example = str(out / "triton-models")
        raise OutputError(f"output folder {str(out)!r} names no folder of its own; give a path that ends in the folder's name, e.g. {example!r}")
    _check_destination(out, force)
    models = triton_models(model, settings, name)
    made = _make_parents(out.parent)
    tmp = None
    try:
        try:
            tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
        except OSError as e:
            raise OutputError(f"cannot write in {out.parent}: {e.strerror or e}") from None
        for m in models:
            write_atomic(tmp / m.name / CONFIG_FILE, m.config.encode("utf-8"))
            write_atomic(tmp / m.name / VERSION / MODEL_FILE, m.graph)
        os.chmod(tmp, 0o777 & ~UMASK)  # mkdtemp makes it private; a repository is for a server to read
        _move_into_place(tmp, out, force)
    except BaseException:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        for folder in reversed(made):
            try:
                folder.rmdir()
            except OSError:
                break
        raise
    return TritonRepository(out, models, settings)


def _exists(out: Path) -> OutputError:
    return OutputError(
        f"{out} already exists and is not empty; pass force=True to replace it, or choose another folder",
        cli_message=f"{out} already exists and is not empty; pass --force to replace it, or choose another --out",
    )


def _check_destination(out: Path, force: bool) -> None:
    """Refuse, before any work, what is in the way at `out`."""
    if out.is_symlink():
        raise OutputError(f"{out} is a symbolic link; refusing to write through it (choose another folder)")
    if not out.exists():
        return
    if not out.is_dir():
        raise OutputError(f"{out} is a file; a model repository is a folder: choose another path")
    try:
        entries = sorted(out.iterdir())
    except OSError as e:
        raise OutputError(f"cannot read {out}: {e.strerror or e}") from None
    if not entries:
        return
    if not force:
        raise _exists(out)
    for entry in entries:
        if entry.is_symlink() or not entry.is_dir() or not (entry / CONFIG_FILE).is_file():
            raise OutputError(
                f"{out} holds {entry.name!r}, which is not a Triton model folder (a folder with {CONFIG_FILE}); "
                "force replaces only a model repository: choose another folder, or remove it yourself",
                cli_message=f"{out} holds {entry.name!r}, which is not a Triton model folder (a folder with {CONFIG_FILE}); "
                "--force replaces only a model repository: choose another --out, or remove it yourself",
            )


def _make_parents(folder: Path) -> list[Path]:
    """Create `folder` and its missing parents; the ones made, outermost first."""
    missing = []
    for parent in (folder, *folder.parents):
        if parent.exists() or parent.is_symlink():
            break
        missing.append(parent)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot create directory {folder}: {e.strerror or e}") from None
    return list(reversed(missing))


def _move_into_place(tmp: Path, out: Path, force: bool) -> None:
    """Rename the finished repository to `out`: over nothing or an empty folder, or, with
    `force`, over a repository that is removed only once the new one is in place."""
    _check_destination(out, force)  # again: the folder may have changed while the files were written
    try:
        swap_folder(tmp, out, replace=force)
    except OSError as e:
        if e.errno in (errno.ENOTEMPTY, errno.EEXIST):
            raise _exists(out) from None
        raise OutputError(f"cannot write {out}: {e.strerror or e}") from None
