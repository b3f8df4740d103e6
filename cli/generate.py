"""`vae sample`: new images from the prior."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import numpy as np
import typer

from vaesdk.errors import InvalidArgumentError
from vaesdk.images import make_grid

from .common import choose_seed, emit_json, load_model, note, output_path, place, progress, write_png
from .options import BatchOpt, DeviceOpt, ForceOpt, JsonOpt, ModelOpt, OutDirOpt, OutFileOpt, SamplePixelsOpt, ScaleOpt, SeedOpt

app = typer.Typer()
MAX_GRID = 1024


@app.command()
def sample(
    n: Annotated[int, typer.Option("--n", "-n", help="How many images.")] = 16,
    seed: SeedOpt = None,
    temperature: Annotated[float, typer.Option(help="Scale of the prior draw: below 1 gives more typical, less varied images.")] = 1.0,
    truncation: Annotated[
        Optional[float], typer.Option(help="Redraw latent components beyond +-this many standard deviations.")
    ] = None,
    sample_pixels: SamplePixelsOpt = False,
    out: OutFileOpt = None,
    out_dir: OutDirOpt = None,
    ncols: Annotated[Optional[int], typer.Option(min=1, max=256, help="Grid columns. [default: near-square]")] = None,
    scale: ScaleOpt = 2,
    model: ModelOpt = None,
    device: DeviceOpt = "auto",
    batch_size: BatchOpt = 256,
    force: ForceOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Draw images from the prior: a grid PNG (default samples.png), or one PNG each with --out-dir."""
    if n < 1:
        raise InvalidArgumentError(f"--n must be at least 1, got {n}")
    if out is not None and out_dir is not None:
        raise InvalidArgumentError("give --out (one grid) or --out-dir (one file per image), not both")
    if out_dir is None and n > MAX_GRID:
        raise InvalidArgumentError(f"--n {n} is too many for one grid (at most {MAX_GRID}); pass --out-dir to write one file per image")
    seed = choose_seed(seed, quiet=json_out)
    m = load_model(model, device, batch_size)
    batches = m.iter_sample(n, seed=seed, temperature=temperature, truncation=truncation, sample_pixels=sample_pixels)
    written: list[str] = []
    if out_dir is None:
        images = np.concatenate(list(batches))
        target = place(output_path(out, "samples.png", force), out is not None, force)
        written.append(write_png(target, make_grid(images, ncols=ncols, scale=scale), force))
    else:
        width = len(str(n - 1))
        with progress(n, "sampling") as advance:
            i = 0
            for batch in batches:
                for image in batch:
                    written.append(write_png(out_dir / f"sample-{i:0{width}d}.png", image, force))
                    i += 1
                advance(len(batch))
    if json_out:
        emit_json({"model": m.name, "device": m.device, "seed": seed, "n": n, "outputs": written})
    elif written != ["-"]:
        where = written[0] if out_dir is None else f"{len(written)} files in {out_dir}"
        note(f"wrote {n} sample(s) from {m.name} to {where}")
