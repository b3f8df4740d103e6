"""Reading a bundle from disk safely, everything verified before onnxruntime sees a byte: the
manifest's strict JSON and its schema and version (`format.validate_manifest`), that each
model file is a regular file (no symlink) under the size cap whose sha256 matches the
manifest, that no tensor asks for external data, and that the graphs' inputs and outputs
match the format's contract (`format.io_contract`)."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..base.errors import BundleError
from .format import (
    MANIFEST,
    MAX_CONSTANT_ELEMENTS,
    MAX_MANIFEST_BYTES,
    MAX_MODEL_BYTES,
    MAX_PRIOR_BYTES,
    OPERATORS,
    ROLES,
    Manifest,
    validate_manifest,
)
from .onnx_proto import SIZED_OPS as SIZED_INPUTS
from .onnx_proto import ModelInfo, TensorSpec, inspect_model


def read_regular_file(path: Path, limit: int, what: str) -> bytes:
    """Read a regular file without following a symlink at `path`, refusing files over `limit`."""
    # O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer forever.
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise BundleError(f"{what} {path} is missing") from None
    except OSError as e:
        if path.is_symlink():
            raise BundleError(f"{what} {path} is a symbolic link; bundles must hold regular files") from None
        raise BundleError(f"cannot open {what} {path}: {e.strerror or e}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise BundleError(f"{what} {path} is not a regular file")
        if st.st_size > limit:
            raise BundleError(f"{what} {path} is {st.st_size} bytes; the limit is {limit}")
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(limit + 1)
        if len(data) > limit:
            raise BundleError(f"{what} {path} grew past the {limit}-byte limit while being read")
        return data
    finally:
        os.close(fd)


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        repeated = sorted({k for k in keys if keys.count(k) > 1})
        raise BundleError(f"the key {repeated[0]!r:.80} appears twice in one object; write each key once")
    return dict(pairs)


def _no_constant(name: str) -> Any:
    raise BundleError(f"{name} is not a JSON number; write finite numbers only (or null)")


def parse_manifest_text(raw: bytes, label: str = MANIFEST) -> Any:
    """The JSON value of a manifest's bytes, by the format's stricter reading of RFC 8259:
    UTF-8 without a byte-order mark, no duplicate keys in an object, no NaN or Infinity."""
    if raw.startswith(b"\xef\xbb\xbf"):
        raise BundleError(f"{label} starts with a UTF-8 byte-order mark; save it as UTF-8 without one")
    try:
        return json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicate_keys, parse_constant=_no_constant)
    except BundleError as e:
        raise BundleError(f"{label} is not valid: {e}") from None
    except (ValueError, RecursionError) as e:  # JSONDecodeError, UnicodeDecodeError, int digit limit, deep nesting
        raise BundleError(f"{label} is not valid JSON ({e})") from None


def read_manifest(bundle_dir: Path) -> Manifest:
    raw = read_regular_file(bundle_dir / MANIFEST, MAX_MANIFEST_BYTES, "manifest")
    return validate_manifest(parse_manifest_text(raw, str(bundle_dir / MANIFEST)))


def check_graph_io(info: ModelInfo, expected: dict[str, list[dict[str, Any]]], label: str) -> None:
    """The graph's declared inputs/outputs must be the contract's, in order, with matching
    dtypes, ranks and static sizes; the batch axis is symbolic, under any name."""
    for side, actual in (("inputs", info.inputs), ("outputs", info.outputs)):
        want = expected[side]
        if [t.name for t in actual] != [w["name"] for w in want]:
            raise BundleError(
                f"{label} has {side} {[t.name for t in actual]} but the bundle contract needs {[w['name'] for w in want]} "
                "(is the encoder in the decoder's place, or the model from another bundle?)"
            )
        for t, w in zip(actual, want):
            _check_spec(t, w, f"{label} {side[:-1]} '{t.name}'")


def _check_spec(t: TensorSpec, want: dict[str, Any], label: str) -> None:
    if t.dtype != want["dtype"]:
        raise BundleError(f"{label} is {t.dtype}; the contract needs {want['dtype']}")
    if len(t.shape) != len(want["shape"]):
        raise BundleError(f"{label} has shape {list(t.shape)}; the contract needs {want['shape']}")
    if isinstance(t.shape[0], int):
        raise BundleError(
            f"{label} has shape {list(t.shape)}, a fixed batch size; the contract needs a symbolic batch axis "
            f"(any name, e.g. {want['shape']}): re-export with a dynamic batch axis"
        )
    for got, need in zip(t.shape[1:], want["shape"][1:]):
        if got != need and (isinstance(need, int) or isinstance(got, int)):  # a symbol matches any symbol
            raise BundleError(f"{label} has shape {list(t.shape)}; the contract needs {want['shape']}")


def check_operators(info: ModelInfo, label: str) -> None:
    """Refuse, before onnxruntime sees the graph, what could make one run of it endless or
    huge: operators outside the format's set (control flow, custom domains, model-local
    functions) and constant shapes that ask for more than MAX_CONSTANT_ELEMENTS elements."""
    if info.functions:
        raise BundleError(f"{label} defines model-local functions ({', '.join(info.functions[:3])}); bundles hold plain graphs: re-export without them")
    unknown = sorted(info.operators - OPERATORS)
    if unknown:
        raise BundleError(
            f"{label} uses operator{'s' if len(unknown) > 1 else ''} {', '.join(unknown[:5])}, outside the operators bundles may run "
            "(no control flow, random or custom operators; docs/bundle-format.md): re-export the model without them"
        )
    for op, inputs in info.sized_nodes:
        for name in (inputs[i] for i in SIZED_INPUTS[op] if i < len(inputs)):
            shape = info.int_constants.get(name)
            if shape is None:
                continue
            elements = 1
            for n in shape:
                elements *= max(int(n), 1)
            if elements > MAX_CONSTANT_ELEMENTS:
                raise BundleError(
                    f"{label} has a {op} node whose constant shape {shape[:8]} asks for {elements:.3g} elements, over the "
                    f"format's {MAX_CONSTANT_ELEMENTS:.3g}: the model file is broken or hostile"
                )


FP16_DECODER = "decoder:fp16"
"""`Bundle.models` key of the decoder computing in float16, when the bundle has one."""


@dataclass(frozen=True)
class Bundle:
    """A verified bundle: its folder, manifest, and the model bytes exactly as hashed."""

    path: Path
    manifest: Manifest
    models: dict[str, bytes]
    info: dict[str, ModelInfo]
    priors: dict[str, bytes]  # fitted mixture name -> .npz bytes, verified like the models


def read_bundle(bundle_dir: str | os.PathLike, verify: bool = True) -> Bundle:
    """Read and verify a bundle folder. `verify=False` skips only the comparison of each model
    file's size and sha256 with the manifest; every other check still runs."""
    bundle_dir = Path(bundle_dir)
    if not bundle_dir.is_dir():
        raise BundleError(f"{bundle_dir} is not a directory; a bundle is a folder with {MANIFEST}, encoder.onnx, decoder.onnx")
    manifest = read_manifest(bundle_dir)
    # The manifest's own inputs and outputs: validate_manifest held them to io_contract.
    contract = {role: {side: manifest.file(role)[side] for side in ("inputs", "outputs")} for role in ROLES}
    models, infos = {}, {}
    graphs = [(role, manifest.file(role), contract[role]) for role in ROLES]
    if manifest.fp16_decoder is not None:
        graphs.append((FP16_DECODER, manifest.fp16_decoder, contract["decoder"]))  # the decoder's contract, float16 inside
    for role, entry, io in graphs:
        path = bundle_dir / entry["file"]
        data = read_regular_file(path, MAX_MODEL_BYTES, f"{role} model")
        if verify and len(data) != entry["bytes"]:
            raise BundleError(
                f"{path} is {len(data)} bytes but its manifest says {entry['bytes']}; "
                "the file was modified or replaced: re-export the bundle or restore the file"
            )
        if verify:
            digest = hashlib.sha256(data).hexdigest()
            if digest != entry["sha256"]:
                raise BundleError(
                    f"{path} does not match its manifest (sha256 {digest[:16]}..., expected {entry['sha256'][:16]}...); "
                    "the file was modified or replaced: re-export the bundle or restore the file"
                )
        info = inspect_model(data, str(path))
        if info.external_tensors:
            raise BundleError(
                f"{path} stores tensors in external files ({', '.join(info.external_tensors[:3])}); "
                "vaesdk bundles must be self-contained: re-export with the weights inside the .onnx file"
            )
        check_graph_io(info, io, str(path))
        check_operators(info, str(path))
        models[role], infos[role] = data, info
    priors = {}
    for name, entry in manifest.prior_files.items():
        path = bundle_dir / entry["file"]
        data = read_regular_file(path, MAX_PRIOR_BYTES, "prior file")
        if verify:
            _check_digest(path, data, entry)
        priors[name] = data
    return Bundle(bundle_dir, manifest, models, infos, priors)


def _check_digest(path: Path, data: bytes, entry: dict[str, Any]) -> None:
    digest = hashlib.sha256(data).hexdigest()
    if len(data) != entry["bytes"] or digest != entry["sha256"]:
        raise BundleError(
            f"{path} does not match its manifest (sha256 {digest[:16]}..., {len(data)} bytes; expected "
            f"{entry['sha256'][:16]}..., {entry['bytes']} bytes); the file was modified or replaced: re-export the bundle or restore the file"
        )
