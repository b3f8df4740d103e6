"""Option types shared by several commands (Annotated aliases, one definition each)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from vaesdk import DEFAULT_MODEL
from vaesdk.frontend import SEED_MIN

ModelOpt = Annotated[
    Optional[str],
    typer.Option("--model", "-m", help="Bundled model name or path to a bundle folder.", show_default=DEFAULT_MODEL),
]
DeviceOpt = Annotated[
    str, typer.Option("--device", help="auto (CUDA when it really runs, else CPU), cpu, cuda or cuda:N.")
]
SeedOpt = Annotated[
    Optional[int], typer.Option("--seed", min=SEED_MIN, help="Random seed; omitted, a fresh one is drawn and printed.")
]
ForceOpt = Annotated[bool, typer.Option("--force", "-f", help="Overwrite existing output files.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]
OutFileOpt = Annotated[Optional[Path], typer.Option("--out", "-o", help="Output PNG ('-' writes it to stdout).")]
OutDirOpt = Annotated[Optional[Path], typer.Option("--out-dir", help="Write one PNG per image into this folder.")]
ScaleOpt = Annotated[int, typer.Option("--scale", min=1, max=16, help="Enlarge output pictures by this factor (nearest neighbour).")]
SampleLatentOpt = Annotated[bool, typer.Option("--sample-latent", help="Draw z from q(z|x) instead of taking its mean.")]
SamplePixelsOpt = Annotated[bool, typer.Option("--sample-pixels", help="Draw pixels from p(x|z) instead of taking its mean.")]
BatchOpt = Annotated[int, typer.Option("--batch-size", min=1, max=65536, help="Images per model call.")]
WorkersOpt = Annotated[
    Optional[int],
    typer.Option("--workers", min=1, max=256, help="Image-decoding threads (with --ray: Ray workers).", show_default="one per core"),
]
PriorOpt = Annotated[
    Optional[str],
    typer.Option(
        "--prior",
        help="Where latents come from: mixture (a Gaussian mixture fitted to the training images' latents), standard "
        "(the model's N(0, I)), aggregate (one Gaussian fitted to them) or a class name (see `vae info`).",
        show_default="the bundle's default prior (vae info)",
    ),
]
DataOpt = Annotated[
    str, typer.Option("--data", help="fashion-mnist, or a folder of images (one sub-folder per class for labels).")
]
DataDirOpt = Annotated[Optional[Path], typer.Option("--data-dir", help="Folder holding the Fashion-MNIST IDX .gz files.")]

class Method(str, Enum):
    slerp = "slerp"
    linear = "linear"


class Kind(str, Enum):
    vae = "vae"
    ae = "ae"
