"""`vae sample`: new images from the prior."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import numpy as np
import typer

from vaesdk.base.errors import InvalidArgumentError
from vaesdk import DEFAULT_BATCH, make_grid

from .common import Outputs, announce_seed, choose_seed, emit_json, enlarge, load_model, note, progress
from .options import BatchOpt, DeviceOpt, ForceOpt, JsonOpt, ModelOpt, OutDirOpt, OutFileOpt, PriorOpt, SamplePixelsOpt, SeedOpt

app = typer.Typer()
MAX_GRID = 1024


@app.command()
def sample(
    n: Annotated[int, typer.Option("--n", "-n", help="How many images.")] = 16,
    seed: SeedOpt = None,
    temperature: Annotated[float, typer.Option(help="Scale of the prior draw; below 1 gives more typical, less varied images.")] = 1.0,
    truncation: Annotated[
        Optional[float], typer.Option(help="Redraw latent components beyond +-this many standard deviations.")
    ] = None,
    prior: PriorOpt = None,
    sample_pixels: SamplePixelsOpt = False,
    out: OutFileOpt = None,
    out_dir: OutDirOpt = None,
    ncols: Annotated[Optional[int], typer.Option(min=1, max=256, help="Grid columns.", show_default="near-square")] = None,
    scale: Annotated[
        Optional[int],
        typer.Option(min=1, max=16, help="Enlarge pictures by this factor (nearest neighbour).", show_default="2 for a grid, 1 with --out-dir"),
    ] = None,
    model: ModelOpt = None,
    device: DeviceOpt = "auto",
    batch_size: BatchOpt = DEFAULT_BATCH,
    force: ForceOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Draw images from the prior: a grid PNG (samples.png), or one PNG each with --out-dir."""
    if n < 1:
        raise InvalidArgumentError(f"--n must be at least 1, got {n}")
    if out is not None and out_dir is not None:
        raise InvalidArgumentError("give --out (one grid) or --out-dir (one file per image), not both")
    if out_dir is None and n > MAX_GRID:
        raise InvalidArgumentError(f"--n {n} is too many for one grid (at most {MAX_GRID}); pass --out-dir to write one file per image")
    m = load_model(model, device, batch_size)
    options = dict(temperature=temperature, truncation=truncation, sample_pixels=sample_pixels, prior=prior)
    drawn = seed is None
    seed = choose_seed(seed, quiet=True)
    # iter_sample checks every argument at once and runs nothing until iterated, so a bad
    # argument fails here, before the drawn seed is announced.
    batches = m.iter_sample(n, seed=seed, **options)
    if drawn and not json_out:
        announce_seed(seed)
    scale = scale or (2 if out_dir is None else 1)
    outputs = Outputs(force)
    written: list[str] = []
    if out_dir is None:
        grid = make_grid(np.concatenate(list(batches)), ncols=ncols, scale=scale)
        target = outputs.explicit(out) if out is not None else outputs.default(Path("samples.png"))
        written.append(outputs.write_png(target, grid))
    else:
        width = len(str(n - 1))
        with progress(n, "sampling") as advance:
            for batch in batches:
                for image in batch:
                    written.append(outputs.write_png(out_dir / f"sample-{len(written):0{width}d}.png", enlarge(image, scale)))
                advance(len(batch))
    if json_out:
        emit_json({"model": m.name, "device": m.device, "seed": seed, "n": n, "prior": prior or m.default_prior, "outputs": written})
    elif written != ["-"]:
        where = written[0] if out_dir is None else f"{len(written)} files in {out_dir}"
        note(f"wrote {n} sample(s) from {m.name} to {where}")
