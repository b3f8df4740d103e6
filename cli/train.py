"""`vae train` and `vae export`: the torch side, imported only when these commands run."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from vaesdk.errors import require_train_extra

from .common import progress
from .options import DataDirOpt, DataOpt, Kind

app = typer.Typer()


def _import_torch_side() -> None:
    try:
        import safetensors  # noqa: F401
        import torch  # noqa: F401
    except ImportError as e:
        raise require_train_extra(e) from None


@app.command()
def train(
    out_dir: Annotated[Path, typer.Option("--out-dir", help="Run folder for checkpoints.")] = Path("runs/fashion-mnist"),
    data: DataOpt = "fashion-mnist",
    data_dir: DataDirOpt = None,
    kind: Annotated[Kind, typer.Option(help="vae (probabilistic, trained on the ELBO) or ae (plain autoencoder, L2 loss).")] = Kind.vae,
    latent_dim: Annotated[int, typer.Option(min=1, max=4096, help="Latent dimensions.")] = 32,
    widths: Annotated[str, typer.Option(help="Channel counts per resolution, comma-separated; each after the first halves the size.")] = "32,64,128",
    res_blocks: Annotated[int, typer.Option(min=0, max=8, help="Residual blocks per resolution.")] = 0,
    image_size: Annotated[int, typer.Option(min=4, max=1024, help="Side of the square model input (image folders).")] = 28,
    channels: Annotated[int, typer.Option(min=1, max=3, help="1 (grayscale) or 3 (RGB), for image folders.")] = 1,
    epochs: Annotated[int, typer.Option(min=1, help="At most this many epochs.")] = 100,
    patience: Annotated[int, typer.Option(min=1, help="Stop after this many epochs without validation improvement.")] = 6,
    lr_patience: Annotated[int, typer.Option(min=1, help="Halve the learning rate after this many epochs without improvement.")] = 2,
    grad_clip: Annotated[float, typer.Option(min=0.0, help="Clip the gradient norm to this (0 = off).")] = 5000.0,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per optimisation step.")] = 128,
    lr: Annotated[float, typer.Option(min=0.0, help="Adam learning rate.")] = 1e-3,
    seed: Annotated[int, typer.Option(help="Seed of initialisation, validation split and shuffling.")] = 0,
    limit: Annotated[int, typer.Option(min=0, help="Use only the first N training images (0 = all).")] = 0,
    threads: Annotated[int, typer.Option(min=0, help="torch CPU threads (0 = torch's default).")] = 0,
    resume: Annotated[bool, typer.Option(help="Continue the run in --out-dir from its last epoch.")] = False,
) -> None:
    """Train a VAE (or plain autoencoder) and write checkpoints to --out-dir."""
    _import_torch_side()
    from vaesdk.datasets import DEFAULT_FASHION_MNIST_DIR
    from vaesdk.errors import InvalidArgumentError
    from vaesdk.training.config import ModelConfig, TrainConfig
    from vaesdk.training.train import train as run_training

    try:
        width_list = tuple(int(w) for w in widths.split(","))
    except ValueError:
        raise InvalidArgumentError(f"--widths {widths!r} is not a comma-separated list of integers (e.g. 32,64,128)") from None
    folder = data != "fashion-mnist"
    config = TrainConfig(
        model=ModelConfig(
            kind=kind.value, image_size=image_size, channels=channels, latent_dim=latent_dim, widths=width_list, res_blocks=res_blocks
        ),
        dataset="folder" if folder else "fashion-mnist",
        data_dir=data if folder else str(data_dir or DEFAULT_FASHION_MNIST_DIR),
        out_dir=str(out_dir),
        seed=seed,
        batch_size=batch_size,
        lr=lr,
        max_epochs=epochs,
        patience=patience,
        lr_patience=lr_patience,
        grad_clip=grad_clip,
        limit=limit,
        num_threads=threads,
    )
    command = "vae " + shlex.join(sys.argv[1:]) if sys.argv[1:2] == ["train"] else "vae train"
    run_training(config, resume=resume, command=command, log=typer.echo)


@app.command("export")
def export_cmd(
    run_dir: Annotated[Path, typer.Argument(help="Training run folder (holds checkpoint.json).", show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="Bundle folder to write.", show_default=False)],
    name: Annotated[Optional[str], typer.Option(help="Model name in the manifest.", show_default="the --out folder's name")] = None,
    description: Annotated[str, typer.Option(help="One line about the model, stored in the manifest.")] = "",
    data: Annotated[
        str, typer.Option("--data", help="Test data for the manifest's metrics: fashion-mnist, a labelled image folder, or none.")
    ] = "fashion-mnist",
    data_dir: DataDirOpt = None,
    train_data: Annotated[
        Optional[str], typer.Option(help="Labelled image folder for the probe and the class directions, with --data FOLDER.")
    ] = None,
    iw_samples: Annotated[int, typer.Option(min=1, max=10000, help="Importance samples for the likelihood bound.")] = 100,
    eval_limit: Annotated[int, typer.Option(min=0, help="Evaluate on only the first N images (0 = all).")] = 0,
    force: Annotated[bool, typer.Option("--force", "-f", help="Replace an existing bundle folder.")] = False,
) -> None:
    """Export a checkpoint to a verified bundle: encoder.onnx, decoder.onnx, manifest.json.

    Writes nothing if onnxruntime does not reproduce PyTorch within the parity tolerance.
    """
    _import_torch_side()
    from vaesdk.export.pipeline import export_bundle

    with progress(100, "evaluating") as update:
        export_bundle(
            run_dir,
            out,
            name=name,
            description=description,
            eval_data=None if data == "none" else data,
            data_dir=data_dir,
            probe_data=train_data,
            iw_samples=iw_samples,
            eval_limit=eval_limit,
            force=force,
            log=typer.echo,
            progress=lambda task, done, total: update(completed=done, total=total, description=task),
        )
