"""`vae triton`: a Triton Inference Server model repository of a bundle's encoder and decoder.

Torch-free: it reads a bundle (not a training checkpoint, which is `vae export`'s input) and
writes another server's layout of the same graphs."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from vaesdk import frontend

from .common import emit_json
from .options import JsonOpt

app = typer.Typer()

DEFAULTS = frontend.TritonSettings()
InstanceKind = Enum("InstanceKind", {kind: kind for kind in frontend.TritonSettings.KINDS}, type=str)


@app.command()
def triton(
    bundle: Annotated[str, typer.Argument(help="Bundled model name or bundle folder.", show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="The model repository folder to write: new, or empty.", show_default=False)],
    max_batch_size: Annotated[
        int, typer.Option(min=1, max=frontend.TritonSettings.MAX_BATCH_SIZE, help="Largest batch Triton gives a graph in one call.")
    ] = DEFAULTS.max_batch_size,
    instances: Annotated[
        int, typer.Option(min=1, max=frontend.TritonSettings.MAX_INSTANCES, help="Copies of each graph Triton runs at once.")
    ] = DEFAULTS.instances,
    kind: Annotated[
        InstanceKind, typer.Option("--kind", help="Where the copies run: auto (a GPU where Triton has one), cpu or gpu.")
    ] = InstanceKind(DEFAULTS.kind),
    max_queue_delay_us: Annotated[
        int,
        typer.Option(min=0, max=frontend.TritonSettings.MAX_QUEUE_DELAY_US, help="Microseconds the dynamic batcher waits to fill a batch."),
    ] = DEFAULTS.queue_delay_us,
    name: Annotated[
        Optional[str], typer.Option("--name", help="Model names NAME-encoder and NAME-decoder.", show_default="the bundle's name")
    ] = None,
    force: Annotated[bool, typer.Option("--force", "-f", help="Replace a model repository already at --out.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Write a Triton Inference Server model repository of a bundle's encoder and decoder."""
    settings = frontend.TritonSettings(max_batch_size=max_batch_size, instances=instances, kind=kind.value, queue_delay_us=max_queue_delay_us)
    repo = frontend.write_triton_repository(bundle, out, settings, name=name, force=force)
    models = [
        {
            "name": m.name,
            "role": m.role,
            "inputs": [{"name": t.name, "data_type": t.data_type, "dims": list(t.dims)} for t in m.inputs],
            "outputs": [{"name": t.name, "data_type": t.data_type, "dims": list(t.dims)} for t in m.outputs],
        }
        for m in repo.models
    ]
    if json_out:
        emit_json({"repository": str(repo.path), "max_batch_size": max_batch_size, "instances": instances, "kind": kind.value,
                   "max_queue_delay_us": max_queue_delay_us, "models": models})  # fmt: skip
        return
    lines = [f"wrote a Triton model repository to {repo.path}"]
    for m in models:
        shapes = ", ".join(f"{t['name']} [{', '.join(map(str, t['dims']))}]" for t in m["outputs"])
        inputs = ", ".join(f"{t['name']} [{', '.join(map(str, t['dims']))}]" for t in m["inputs"])
        lines.append(f"  {m['name']}: {inputs} -> {shapes}")
    lines.append(f"serve it with: tritonserver --model-repository={repo.path.resolve()}")
    typer.echo("\n".join(lines))
