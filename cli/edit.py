"""Commands that encode images and decode changed latents: edit, reconstruct, interpolate, traverse."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Optional

import numpy as np
import typer

import vaesdk
from vaesdk import DEFAULT_BATCH, InvalidArgumentError, OutputError, frontend, make_grid

from .common import STDIO, Outputs, choose_seed, emit_json, enlarge, folder_writer, gather_inputs, load_model, note, output_names, progress, read_source
from .options import (
    BatchOpt, DeviceOpt, ForceOpt, JsonOpt, Method, ModelOpt, OutDirOpt, OutFileOpt, SampleLatentOpt, SamplePixelsOpt,
    PriorOpt, ScaleOpt, SeedOpt, WorkersOpt,
)  # fmt: skip

app = typer.Typer()

ImagesArg = Annotated[list[str], typer.Argument(help="Image files, folders, or '-' for stdin.", show_default=False)]
# Threads writing output files while the model runs: they mostly wait for fsync, and a deeper
# queue of writes helped up to about 16 (1,000 files: 0.64 ms each with 4, 0.42 ms with 16).
WRITERS = 16


@dataclass
class PerImage:
    """The options every one-output-per-input command shares."""

    images: list[str]
    out: Optional[Path]
    out_dir: Optional[Path]
    scale: int
    force: bool
    json_out: bool
    batch_size: int
    model: Optional[str]
    device: str
    workers: Optional[int] = None


def run_per_image(opts: PerImage, operation: str, suffix: str, options: dict[str, Any], extra: dict, side_by_side: bool = False) -> None:
    """Write one PNG per input as NAME.<suffix>.png (in --out-dir, or the current folder;
    --out for a single input): `vaesdk.map_images(model, operation, ...)` over the inputs,
    which checks `options` against the model before any image is read.

    Into a folder, a run is resumable: each input's file name is fixed by the input list
    (NAME.<suffix>.png, then NAME.<suffix>-1.png for a later input of the same name), an
    output that exists is kept and its input skipped (--force replaces it), one run at a
    time writes into a folder, and a run that cannot write (a full disk) stops and names
    the inputs left without output."""
    if opts.out is not None and opts.out_dir is not None:
        raise InvalidArgumentError("give --out (one input) or --out-dir (any number of inputs), not both")
    inputs = gather_inputs(opts.images)
    if opts.out is not None and len(inputs.paths) != 1:
        raise InvalidArgumentError("--out takes one input image; with several, use --out-dir")
    m = load_model(opts.model, opts.device, opts.batch_size)
    if opts.out is not None:
        targets: list[Any] = [None]
    else:
        folder = opts.out_dir if opts.out_dir is not None else Path(".")
        targets = output_names([name for name, _ in inputs.named], folder, suffix)
    with folder_writer(None if opts.out is not None else folder):
        kept = set() if opts.force or opts.out is not None else {i for i, t in enumerate(targets) if t.exists() or t.is_symlink()}
        # Seeded draws run through the inputs in order: skipping one would change the rest, so
        # those runs compute every input and write only the missing outputs.
        draws = bool(options.get("sample_latent") or options.get("sample_pixels"))
        todo = [i for i in range(len(targets)) if draws or i not in kept]
        named = [inputs.named[i] for i in todo]
        if named:
            results = vaesdk.map_images(m, operation, named, batch_size=opts.batch_size, workers=opts.workers, **options)
        else:  # every output is kept: the options are still checked, as a run with work checks them
            m.validate(operation, **options)
            results = []
        records, written = [], []
        try:
            with progress(len(named), suffix) as advance, Outputs(opts.force, background=WRITERS) as outputs:
                for i, r in zip(todo, results):
                    advance(1)
                    if not r.ok:
                        inputs.failed([(r.name, r.error)])
                        continue
                    if i in kept:
                        continue
                    result = make_grid(np.stack([r.image, r.output]), ncols=2, padding=1) if side_by_side else r.output
                    target = outputs.explicit(opts.out) if opts.out is not None else targets[i]
                    records.append({"input": r.name, "output": outputs.write_png(target, enlarge(result, opts.scale))})
                    written.append(i)
        except OutputError as e:
            if opts.out is not None:
                raise
            missing = [inputs.named[i][0] for i in range(len(targets)) if not (targets[i].exists() or targets[i].is_symlink())]
            raise OutputError(
                f"{e}; {len(missing)} of {len(targets)} input(s) have no output (first: {missing[0] if missing else 'none'}): "
                "run the command again to write them; the outputs written are kept and skipped"
            ) from None
    if kept:
        note(f"kept {len(kept)} output(s) that already exist in {folder} and skipped their inputs; --force replaces them")
    if opts.json_out:
        emit_json({"model": m.name, **extra, "results": records, "kept": [str(targets[i]) for i in sorted(kept)], "failed": inputs.failures})
    else:
        for rec in records:
            if rec["output"] != STDIO:
                note(f"{rec['input']} -> {rec['output']}")
    inputs.finish(len(records))


SideBySideOpt = Annotated[bool, typer.Option("--side-by-side", help="Put each input left of its result.")]
TileOpt = Annotated[
    Optional[bool],
    typer.Option("--tile/--no-tile", help="Models with spatial latents: run in overlapping, blended tiles (bounded memory).",
                 show_default="tiles above 1024x1024 pixels"),
]  # fmt: skip
TileSizeOpt = Annotated[Optional[int], typer.Option(min=1, help="Models with spatial latents: a tile's side in image pixels.", show_default="512")]


def tiling(tile: Optional[bool], tile_size: Optional[int]) -> dict[str, Any]:
    """The tiling options given (a model with flat latents refuses them by name)."""
    return {k: v for k, v in (("tile", tile), ("tile_size", tile_size)) if v is not None}


def random_seed(seed: Optional[int], random: bool, quiet: bool) -> Optional[int]:
    """The seed of a command that draws (chosen and reported when not given); None otherwise."""
    return choose_seed(seed, quiet) if random else None


@app.command()
def edit(
    images: ImagesArg,
    dim: Annotated[Optional[int], typer.Option(help="Latent dimension to shift (see `vae info`).")] = None,
    direction: Annotated[Optional[str], typer.Option(help="Named direction to move along (see `vae directions`).")] = None,
    delta: Annotated[
        float, typer.Option(help="Shift: prior standard deviations for --dim; multiples of the vector for --direction.")
    ] = 1.0,
    side_by_side: SideBySideOpt = False,
    sample_latent: SampleLatentOpt = False,
    sample_pixels: SamplePixelsOpt = False,
    seed: SeedOpt = None,
    tile: TileOpt = None,
    tile_size: TileSizeOpt = None,
    out: OutFileOpt = None,
    out_dir: OutDirOpt = None,
    scale: ScaleOpt = 1,
    model: ModelOpt = None,
    device: DeviceOpt = "auto",
    batch_size: BatchOpt = DEFAULT_BATCH,
    force: ForceOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Encode each image, shift its latent along a dimension or a named direction, decode.

    Writes NAME.edit.png per input into the current folder (or --out-dir; --out for one image).
    """
    opts = PerImage(images, out, out_dir, scale, force, json_out, batch_size, model, device)
    seed = random_seed(seed, sample_latent or sample_pixels, json_out)
    options = dict(dim=dim, direction=direction, delta=delta, sample_latent=sample_latent, sample_pixels=sample_pixels, seed=seed,
                   **tiling(tile, tile_size))  # fmt: skip
    run_per_image(opts, "edit", "edit", options, {"dim": dim, "direction": direction, "delta": delta}, side_by_side)


@app.command()
def reconstruct(
    images: ImagesArg,
    side_by_side: SideBySideOpt = False,
    sample_latent: SampleLatentOpt = False,
    sample_pixels: SamplePixelsOpt = False,
    seed: SeedOpt = None,
    tile: TileOpt = None,
    tile_size: TileSizeOpt = None,
    out: OutFileOpt = None,
    out_dir: OutDirOpt = None,
    scale: ScaleOpt = 1,
    model: ModelOpt = None,
    device: DeviceOpt = "auto",
    batch_size: BatchOpt = DEFAULT_BATCH,
    workers: WorkersOpt = None,
    force: ForceOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Encode and decode each image: NAME.recon.png per input (placed as for edit).

    Images are decoded by --workers threads while the model runs; outputs keep the input order."""
    opts = PerImage(images, out, out_dir, scale, force, json_out, batch_size, model, device, workers)
    seed = random_seed(seed, sample_latent or sample_pixels, json_out)
    options = dict(sample_latent=sample_latent, sample_pixels=sample_pixels, seed=seed, **tiling(tile, tile_size))
    run_per_image(opts, "reconstruct", "recon", options, {}, side_by_side)


@app.command()
def interpolate(
    image_a: Annotated[str, typer.Argument(help="Start image ('-' for stdin).", show_default=False)],
    image_b: Annotated[str, typer.Argument(help="End image.", show_default=False)],
    steps: Annotated[int, typer.Option(min=2, max=frontend.MAX_STEPS, help="Frames, both ends included.")] = 8,
    method: Annotated[Method, typer.Option(help="slerp (spherical, keeps latents typical) or linear.")] = Method.slerp,
    out: OutFileOpt = None,
    frames_dir: Annotated[Optional[Path], typer.Option("--frames-dir", help="Also write each frame as a PNG here.")] = None,
    scale: ScaleOpt = 2,
    model: ModelOpt = None,
    device: DeviceOpt = "auto",
    force: ForceOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Walk between the latents of two images: a strip PNG (interpolation.png)."""
    if image_a == image_b == STDIO:
        raise InvalidArgumentError("only one of the two images can come from stdin ('-')")
    m = load_model(model, device)
    frames = m.interpolate(read_source(image_a), read_source(image_b), steps=steps, method=method.value)
    outputs = Outputs(force)
    target = outputs.explicit(out) if out is not None else outputs.default(Path("interpolation.png"))
    written = [outputs.write_png(target, make_grid(frames, ncols=steps, scale=scale))]
    if frames_dir is not None:
        written += [outputs.write_png(frames_dir / f"frame-{i:03d}.png", enlarge(f, scale)) for i, f in enumerate(frames)]
    if json_out:
        emit_json({"model": m.name, "method": method.value, "steps": steps, "outputs": written})
    elif written[0] != STDIO:
        note(f"wrote {steps}-step {method.value} interpolation to {written[0]}" + (f" and frames to {frames_dir}" if frames_dir else ""))


@app.command()
def traverse(
    image: Annotated[Optional[str], typer.Argument(help="Image to start from ('-' for stdin).", show_default="a prior sample")] = None,
    dims: Annotated[Optional[str], typer.Option(help="Comma-separated latent dimensions, one row each.", show_default="the most used")] = None,
    rows: Annotated[int, typer.Option(min=1, max=4096, help="Without --dims: how many of the most used dimensions.")] = 8,
    value_range: Annotated[
        tuple[float, float], typer.Option("--range", help="First and last column's value, in prior standard deviations (3 -3 runs high to low).")
    ] = (-3.0, 3.0),
    steps: Annotated[int, typer.Option(min=1, max=frontend.MAX_STEPS, help="Columns: values from low to high.")] = 7,
    prior: PriorOpt = None,
    seed: SeedOpt = None,
    out: OutFileOpt = None,
    scale: ScaleOpt = 2,
    model: ModelOpt = None,
    device: DeviceOpt = "auto",
    force: ForceOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """A grid with one row per latent dimension and one column per value (traversal.png)."""
    dim_list = _parse_dims(dims) if dims is not None else None
    m = load_model(model, device)
    source = read_source(image) if image is not None else None
    if image is None:
        seed = choose_seed(seed, quiet=json_out)
    values = np.linspace(value_range[0], value_range[1], steps)
    result = m.traverse(source, dims=dim_list, values=values, max_dims=rows, seed=seed, prior=prior)
    outputs = Outputs(force)
    target = outputs.explicit(out) if out is not None else outputs.default(Path("traversal.png"))
    written = outputs.write_png(target, make_grid(result.images, scale=scale))
    if json_out:
        emit_json({"model": m.name, "dims": result.dims, "values": result.values, "seed": seed, "output": written})
    elif written != STDIO:
        note(f"wrote traversal of dimensions {', '.join(map(str, result.dims))} over {values[0]:g}..{values[-1]:g} to {written}")


def _parse_dims(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise InvalidArgumentError(f"--dims {text!r} must be comma-separated integers, e.g. 0,3,7") from None
