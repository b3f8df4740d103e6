"""Commands that encode images and decode changed latents: edit, reconstruct, interpolate, traverse."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import numpy as np
import typer

from vaesdk.errors import InvalidArgumentError
from vaesdk.images import load_image, make_grid

from .common import (
    STDIO, choose_seed, emit_json, enlarge, gather_inputs, load_model, note, output_for, output_path, place, progress,
    read_source, write_png,
)  # fmt: skip
from .options import (
    BatchOpt, DeviceOpt, ForceOpt, JsonOpt, ModelOpt, OutDirOpt, OutFileOpt, SampleLatentOpt, SamplePixelsOpt, ScaleOpt, SeedOpt,
)  # fmt: skip

app = typer.Typer()

ImagesArg = Annotated[list[str], typer.Argument(help="Image files, folders, or '-' for stdin.", show_default=False)]


def _run_per_image(op, suffix: str, images, out, out_dir, scale, force, json_out, batch_size, model, device, extra: dict) -> None:
    """Apply `op(model, batch)` to every input in batches and write one PNG per input."""
    inputs = gather_inputs(images)
    single = len(inputs.paths) == 1
    m = load_model(model, device, batch_size)
    records = []
    with progress(len(inputs.paths), suffix) as advance:
        for names, batch in inputs.batches(m, batch_size):
            results = op(m, batch)
            for name, result in zip(names, results):
                target = place(output_for(name, out, out_dir, suffix, single), out is not None, force)
                records.append({"input": name, "output": write_png(target, enlarge(result, scale), force)})
            advance(len(names))
    if json_out:
        emit_json({"model": m.name, **extra, "results": records, "failed": [{"input": n, "error": e} for n, e in inputs.failures]})
    else:
        for r in records:
            if r["output"] != STDIO:
                note(f"{r['input']} -> {r['output']}")
    inputs.finish(len(records))


@app.command()
def edit(
    images: ImagesArg,
    dim: Annotated[Optional[int], typer.Option(help="Latent dimension to shift (see `vae info`).")] = None,
    direction: Annotated[Optional[str], typer.Option(help="Named direction to move along (see `vae directions`).")] = None,
    delta: Annotated[float, typer.Option(help="Shift: prior standard deviations for --dim; multiples of the vector for --direction.")] = 1.0,
    sample_latent: SampleLatentOpt = False,
    sample_pixels: SamplePixelsOpt = False,
    seed: SeedOpt = None,
    out: OutFileOpt = None,
    out_dir: OutDirOpt = None,
    scale: ScaleOpt = 1,
    model: ModelOpt = None,
    device: DeviceOpt = "auto",
    batch_size: BatchOpt = 256,
    force: ForceOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Encode each image, shift its latent along a dimension or a named direction, decode.

    Writes NAME.edit.png per input into the current folder (or --out-dir; --out for one image).
    """
    if (dim is None) == (direction is None):
        raise InvalidArgumentError("give exactly one of --dim N or --direction NAME")
    random = sample_latent or sample_pixels
    rng = np.random.default_rng(choose_seed(seed, quiet=json_out)) if random else None

    def op(m, batch):
        return m.edit(batch, dim=dim, direction=direction, delta=delta, sample_latent=sample_latent, sample_pixels=sample_pixels, seed=rng)

    extra = {"dim": dim, "direction": direction, "delta": delta}
    _run_per_image(op, "edit", images, out, out_dir, scale, force, json_out, batch_size, model, device, extra)


@app.command()
def reconstruct(
    images: ImagesArg,
    side_by_side: Annotated[bool, typer.Option("--side-by-side", help="Write the input and its reconstruction next to each other.")] = False,
    sample_latent: SampleLatentOpt = False,
    sample_pixels: SamplePixelsOpt = False,
    seed: SeedOpt = None,
    out: OutFileOpt = None,
    out_dir: OutDirOpt = None,
    scale: ScaleOpt = 1,
    model: ModelOpt = None,
    device: DeviceOpt = "auto",
    batch_size: BatchOpt = 256,
    force: ForceOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Encode and decode each image: NAME.recon.png per input (see edit for where files go)."""
    random = sample_latent or sample_pixels
    rng = np.random.default_rng(choose_seed(seed, quiet=json_out)) if random else None

    def op(m, batch):
        recon = m.reconstruct(batch, sample_latent=sample_latent, sample_pixels=sample_pixels, seed=rng)
        if not side_by_side:
            return recon
        return [make_grid(np.stack([a, b]), ncols=2, padding=1) for a, b in zip(batch, recon)]

    _run_per_image(op, "recon", images, out, out_dir, scale, force, json_out, batch_size, model, device, {})


@app.command()
def interpolate(
    image_a: Annotated[str, typer.Argument(help="Start image.", show_default=False)],
    image_b: Annotated[str, typer.Argument(help="End image.", show_default=False)],
    steps: Annotated[int, typer.Option(min=2, max=1000, help="Frames, both ends included.")] = 8,
    method: Annotated[str, typer.Option(help="slerp (spherical) or linear.")] = "slerp",
    out: OutFileOpt = None,
    frames_dir: Annotated[Optional[Path], typer.Option("--frames-dir", help="Also write each frame as a PNG here.")] = None,
    scale: ScaleOpt = 2,
    model: ModelOpt = None,
    device: DeviceOpt = "auto",
    force: ForceOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Walk between the latents of two images: a strip PNG (default interpolation.png)."""
    m = load_model(model, device)
    h, _, c = m.image_shape
    if image_a == image_b == STDIO:
        raise InvalidArgumentError("only one of the two images can come from stdin ('-')")
    a = load_image(read_source(image_a), h, c)
    b = load_image(read_source(image_b), h, c)
    frames = m.interpolate(a, b, steps=steps, method=method)
    target = place(output_path(out, "interpolation.png", force), out is not None, force)
    written = [write_png(target, make_grid(frames, ncols=steps, scale=scale), force)]
    if frames_dir is not None:
        written += [write_png(frames_dir / f"frame-{i:03d}.png", f, force) for i, f in enumerate(frames)]
    if json_out:
        emit_json({"model": m.name, "method": method, "steps": steps, "outputs": written})
    elif written[0] != STDIO:
        note(f"wrote {steps}-step {method} interpolation to {written[0]}" + (f" and frames to {frames_dir}" if frames_dir else ""))


@app.command()
def traverse(
    image: Annotated[Optional[str], typer.Argument(help="Image to start from; omitted, a prior sample.", show_default=False)] = None,
    dims: Annotated[Optional[str], typer.Option(help="Comma-separated dimensions, one row each. [default: the most used]")] = None,
    rows: Annotated[int, typer.Option(min=1, max=4096, help="With no --dims: how many of the most used dimensions.")] = 8,
    value_range: Annotated[tuple[float, float], typer.Option("--range", help="Lowest and highest value, in prior standard deviations.")] = (-3.0, 3.0),
    steps: Annotated[int, typer.Option(min=1, max=1000, help="Columns: values from low to high.")] = 7,
    seed: SeedOpt = None,
    out: OutFileOpt = None,
    scale: ScaleOpt = 2,
    model: ModelOpt = None,
    device: DeviceOpt = "auto",
    force: ForceOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """A grid with one row per latent dimension and one column per value (default traversal.png)."""
    dim_list = _parse_dims(dims) if dims is not None else None
    m = load_model(model, device)
    if image is None:
        seed = choose_seed(seed, quiet=json_out)
    source = None
    if image is not None:
        h, _, c = m.image_shape
        source = load_image(read_source(image), h, c)
    values = np.linspace(value_range[0], value_range[1], steps)
    result = m.traverse(source, dims=dim_list, values=values, max_dims=min(rows, m.latent_dim), seed=seed)
    target = place(output_path(out, "traversal.png", force), out is not None, force)
    written = write_png(target, make_grid(result.images, scale=scale), force)
    if json_out:
        emit_json({"model": m.name, "dims": result.dims, "values": result.values, "output": written})
    elif written != STDIO:
        note(f"wrote traversal of dimensions {', '.join(map(str, result.dims))} over {values[0]:g}..{values[-1]:g} to {written}")


def _parse_dims(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise InvalidArgumentError(f"--dims {text!r} must be comma-separated integers, e.g. 0,3,7") from None
