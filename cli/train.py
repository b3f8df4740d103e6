"""`vae train` and `vae export`: the torch side, imported only when these commands run."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from vaesdk.errors import require_train_extra

app = typer.Typer()


def _import_torch_side():
    try:
        import torch  # noqa: F401
        import safetensors  # noqa: F401
    except ImportError as e:
        raise require_train_extra(e) from None


@app.command()
def train(
    out_dir: Annotated[Path, typer.Option("--out-dir", help="Run folder for checkpoints.")] = Path("runs/fashion-mnist"),
    dataset: Annotated[str, typer.Option(help="fashion-mnist, or folder (your own images under --data-dir).")] = "fashion-mnist",
    data_dir: Annotated[
        Optional[Path], typer.Option(help="Fashion-MNIST IDX folder, or your image folder (sub-folders = classes).")
    ] = None,
    kind: Annotated[str, typer.Option(help="vae (probabilistic, ELBO) or ae (plain autoencoder, L2 loss).")] = "vae",
    latent_dim: Annotated[int, typer.Option(min=1, max=4096)] = 32,
    widths: Annotated[str, typer.Option(help="Channel counts per resolution, comma-separated.")] = "32,64,128",
    res_blocks: Annotated[int, typer.Option(min=0, max=8, help="Residual blocks per resolution.")] = 0,
    image_size: Annotated[int, typer.Option(min=4, max=1024, help="Side of the square model input (folder datasets).")] = 28,
    channels: Annotated[int, typer.Option(help="1 (grayscale) or 3 (RGB), for folder datasets.")] = 1,
    epochs: Annotated[int, typer.Option(min=1, help="At most this many epochs.")] = 100,
    patience: Annotated[int, typer.Option(min=1, help="Stop after this many epochs without validation improvement.")] = 6,
    lr_patience: Annotated[int, typer.Option(min=1, help="Halve the learning rate after this many epochs without improvement.")] = 2,
    grad_clip: Annotated[float, typer.Option(min=0.0, help="Clip the gradient norm to this (0 = off).")] = 5000.0,
    batch_size: Annotated[int, typer.Option(min=1)] = 128,
    lr: Annotated[float, typer.Option(min=0.0)] = 1e-3,
    seed: Annotated[int, typer.Option()] = 0,
    limit: Annotated[int, typer.Option(min=0, help="Use only the first N training images (0 = all).")] = 0,
    threads: Annotated[int, typer.Option(min=0, help="torch CPU threads (0 = default).")] = 0,
    resume: Annotated[bool, typer.Option(help="Continue the run in --out-dir from its last epoch.")] = False,
) -> None:
    """Train a VAE (or plain autoencoder) and write checkpoints to --out-dir."""
    _import_torch_side()
    from vaesdk.errors import InvalidArgumentError
    from vaesdk.training.config import DEFAULT_FASHION_MNIST_DIR, ModelConfig, TrainConfig
    from vaesdk.training.train import train as run_training

    try:
        width_list = tuple(int(w) for w in widths.split(","))
    except ValueError:
        raise InvalidArgumentError(f"--widths {widths!r} is not a comma-separated list of integers (e.g. 32,64,128)") from None
    if dataset == "folder" and data_dir is None:
        raise InvalidArgumentError("--dataset folder needs --data-dir pointing at your images")
    config = TrainConfig(
        model=ModelConfig(
            kind=kind, image_size=image_size, channels=channels, latent_dim=latent_dim, widths=width_list, res_blocks=res_blocks
        ),
        dataset=dataset,
        data_dir=str(data_dir or DEFAULT_FASHION_MNIST_DIR),
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
    name: Annotated[Optional[str], typer.Option(help="Model name in the manifest. [default: the --out folder's name]")] = None,
    description: Annotated[str, typer.Option(help="One line about the model, stored in the manifest.")] = "",
    eval_data: Annotated[
        str, typer.Option(help="fashion-mnist, a labelled image folder, or none: test data for the manifest's metrics.")
    ] = "fashion-mnist",
    data_dir: Annotated[Optional[Path], typer.Option(help="Folder with the Fashion-MNIST IDX files.")] = None,
    probe_data: Annotated[Optional[str], typer.Option(help="Labelled image folder for the probe and directions (folder eval data).")] = None,
    iw_samples: Annotated[int, typer.Option(min=1, max=10000, help="Importance samples for the likelihood bound.")] = 100,
    eval_limit: Annotated[int, typer.Option(min=0, help="Evaluate on only the first N images (0 = all).")] = 0,
    force: Annotated[bool, typer.Option("--force", "-f", help="Replace an existing bundle folder.")] = False,
) -> None:
    """Export a checkpoint to a bundle: encoder.onnx + decoder.onnx + manifest.json, verified.

    Fails, writing nothing, if onnxruntime does not reproduce PyTorch within the parity tolerance.
    """
    _import_torch_side()
    from vaesdk.export.pipeline import export_bundle

    with _eval_progress() as progress:
        export_bundle(
            run_dir,
            out,
            name=name,
            description=description,
            eval_data=None if eval_data == "none" else eval_data,
            data_dir=data_dir,
            probe_data=probe_data,
            iw_samples=iw_samples,
            eval_limit=eval_limit,
            force=force,
            log=typer.echo,
            progress=progress,
        )


def _eval_progress():
    from contextlib import contextmanager

    from .common import progress as bar

    @contextmanager
    def wrap():
        with bar(100, "evaluating") as advance:
            state = {"task": None, "pct": 0}

            def report(task: str, done: int, total: int) -> None:
                pct = int(100 * done / max(total, 1))
                if task != state["task"]:
                    state["task"], state["pct"] = task, 0
                    advance(-100)
                advance(pct - state["pct"])
                state["pct"] = pct

            yield report

    return wrap()
