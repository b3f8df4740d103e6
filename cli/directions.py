"""`vae directions`: list the named latent directions of a bundle, or add your own."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from vaesdk.errors import InvalidArgumentError

from .common import emit_json, gather_inputs, load_model, note
from .options import DeviceOpt, ForceOpt, JsonOpt, ModelOpt

app = typer.Typer(help="Named latent directions: list them (default) or add one from two folders of images.", no_args_is_help=False)


@app.callback(invoke_without_command=True)
def directions(ctx: typer.Context, model: ModelOpt = None, device: DeviceOpt = "auto", json_out: JsonOpt = False) -> None:
    """List the bundle's named directions (use them with `vae edit --direction NAME`)."""
    if ctx.invoked_subcommand is not None:
        return
    m = load_model(model, device)
    found = m.manifest.directions
    if json_out:
        emit_json({name: {"norm": float(np.linalg.norm(v["vector"])), "description": v.get("description", "")} for name, v in found.items()})
        return
    if not found:
        typer.echo(f"{m.name} has no named directions; add one with `vae directions add NAME --from DIR_A --to DIR_B`")
        return
    width = max(map(len, found))
    for name, entry in found.items():
        typer.echo(f"{name:<{width}}  |v|={np.linalg.norm(entry['vector']):6.2f}  {entry.get('description', '')}")


@app.command()
def add(
    name: Annotated[str, typer.Argument(help="Name of the new direction.", show_default=False)],
    from_dir: Annotated[Path, typer.Option("--from", help="Images (files or a folder) the direction leads away from.", show_default=False)],
    to_dir: Annotated[Path, typer.Option("--to", help="Images the direction leads towards.", show_default=False)],
    description: Annotated[str, typer.Option(help="A note stored with the direction.")] = "",
    model: ModelOpt = None,
    device: DeviceOpt = "auto",
    force: ForceOpt = False,
) -> None:
    """Add NAME = mean latent of --to images minus mean latent of --from images to the bundle."""
    m = load_model(model, device)
    groups = {}
    for label, source in (("--from", from_dir), ("--to", to_dir)):
        inputs = gather_inputs([str(source)])
        batches = [b for _, b in inputs.batches(m, 256)]
        if inputs.failures:
            inputs.finish(0)
        if not batches:
            raise InvalidArgumentError(f"{label} {source} holds no readable images")
        groups[label] = np.concatenate(batches)
    vector = m.add_direction(name, groups["--from"], groups["--to"], description=description, overwrite=force)
    note(
        f"added direction {name!r} (|v|={np.linalg.norm(vector):.2f}, from {len(groups['--from'])} and {len(groups['--to'])} images) "
        f"to {m.bundle.path}; use it with: vae edit IMG --direction {name} --delta 1"
    )
