"""`vae directions`: list the named latent directions of a bundle, or add your own."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from vaesdk.base.errors import InvalidArgumentError

from .common import emit_json, gather_inputs, load_model, note
from .options import DeviceOpt, JsonOpt, ModelOpt

app = typer.Typer(help="Named latent directions: list them (the default) or add one from two sets of images.")


@app.callback(invoke_without_command=True)
def directions(ctx: typer.Context, model: ModelOpt = None, device: DeviceOpt = "auto", json_out: JsonOpt = False) -> None:
    """List the bundle's named directions (use them with `vae edit --direction NAME`)."""
    # Subcommands inherit the group's --model/--device, so `vae directions -m X add ...` works.
    ctx.obj = {"model": model, "device": device}
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
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Name of the new direction.", show_default=False)],
    from_images: Annotated[Path, typer.Option("--from", help="Images (a folder or a file) the direction leads away from.", show_default=False)],
    to_images: Annotated[Path, typer.Option("--to", help="Images the direction leads towards.", show_default=False)],
    description: Annotated[str, typer.Option(help="A note stored with the direction.")] = "",
    model: ModelOpt = None,
    device: DeviceOpt = "auto",
    force: Annotated[bool, typer.Option("--force", "-f", help="Replace a direction of the same name.")] = False,
) -> None:
    """Store NAME = mean latent of --to images minus mean latent of --from images in the bundle.

    The manifest is rewritten atomically; the model files and their checksums are untouched.
    """
    inherited = ctx.obj or {}
    m = load_model(model or inherited.get("model"), device if device != "auto" else inherited.get("device", "auto"))
    groups = {}
    for label, source in (("--from", from_images), ("--to", to_images)):
        inputs = gather_inputs([str(source)])
        batches = [b for _, b in inputs.batches(m, m.batch_size)]
        inputs.finish(0)  # any unreadable image stops here, before the bundle is touched
        if not batches:
            raise InvalidArgumentError(f"{label} {source} holds no readable images")
        groups[label] = np.concatenate(batches)
    vector = m.add_direction(name, groups["--from"], groups["--to"], description=description, overwrite=force)
    note(
        f"added direction {name!r} (|v|={np.linalg.norm(vector):.2f}, from {len(groups['--from'])} and {len(groups['--to'])} images) "
        f"to {m.path}; use it with: vae edit IMG --direction {name} --delta 1"
    )
