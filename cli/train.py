"""`vae train` and `vae export`: the torch side, imported only when these commands run."""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from vaesdk.base.errors import InvalidArgumentError, require_train_extra

from vaesdk.training.config import ModelConfig, TrainConfig

from .common import progress
from .options import DataDirOpt, DataOpt, Kind

app = typer.Typer()


def _import_torch_side() -> None:
    try:
        import safetensors  # noqa: F401
        import torch  # noqa: F401
    except ImportError as e:
        raise require_train_extra(e) from None


_M, _T = ModelConfig(), TrainConfig()  # the defaults live in the dataclasses; options only override them


def _default(value: object) -> str:
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


def _opt(help: str, default: object, *names: str, **kw) -> typer.models.OptionInfo:
    return typer.Option(*names, help=help, show_default=_default(default), **kw)


@app.command()
def train(
    out_dir: Annotated[Path, typer.Option("--out-dir", help="Run folder for checkpoints.")] = Path(_T.out_dir),
    data: DataOpt = "fashion-mnist",
    data_dir: DataDirOpt = None,
    kind: Annotated[Kind, typer.Option(help="vae (probabilistic, trained on the ELBO) or ae (plain autoencoder, L2 loss).")] = Kind.vae,
    latent_dim: Annotated[Optional[int], _opt("Latent dimensions.", _M.latent_dim, min=1, max=4096)] = None,
    widths: Annotated[Optional[str], _opt("Channel counts per resolution, comma-separated; each after the first halves the size.", _M.widths)] = None,
    res_blocks: Annotated[Optional[int], _opt("Residual blocks per resolution.", _M.res_blocks, min=0, max=8)] = None,
    upsample: Annotated[Optional[str], _opt("Decoder upsampling: resize (nearest + 3x3 conv) or transpose.", _M.upsample)] = None,
    covariance: Annotated[Optional[str], _opt("Pixel covariance of p(x|z): diagonal or lowrank.", _M.covariance)] = None,
    rank: Annotated[Optional[int], _opt("Columns of the low-rank covariance factor (with --covariance lowrank).", _M.rank, min=0, max=256)] = None,
    likelihood: Annotated[Optional[str], _opt("Pixel likelihood: discretized (exact bins, diagonal only) or dequantized (a bound, any covariance).", _M.likelihood)] = None,
    logvar_min: Annotated[
        Optional[float], _opt(
            "Floor of the decoder's per-pixel log-variance, at most the warm-up's log-variance; a higher floor keeps the model from over-confident pixels.",
            _M.logvar_min, "--logvar-min", min=-30.0, max=_T.warmup_logvar,
        )
    ] = None,
    image_size: Annotated[Optional[int], _opt("Side of the square model input (image folders).", _M.image_size, min=4, max=1024)] = None,
    channels: Annotated[Optional[int], _opt("1 (grayscale) or 3 (RGB), for image folders.", _M.channels, min=1, max=3)] = None,
    epochs: Annotated[Optional[int], _opt("At most this many epochs.", _T.max_epochs, min=1)] = None,
    patience: Annotated[Optional[int], _opt("Stop after this many epochs without validation improvement.", _T.patience, min=1)] = None,
    lr_patience: Annotated[Optional[int], _opt("Halve the learning rate after this many epochs without improvement.", _T.lr_patience, min=1)] = None,
    kl_warmup_epochs: Annotated[Optional[int], _opt("Raise the KL weight from 0 to 1 over this many epochs (against posterior collapse; 0 = off).", _T.kl_warmup_epochs, min=0)] = None,
    fixed_variance_epochs: Annotated[Optional[int], _opt("Hold the decoder variance fixed for this many epochs (against posterior collapse; 0 = off).", _T.fixed_variance_epochs, min=0)] = None,
    grad_clip: Annotated[Optional[float], _opt("Clip the gradient norm to this (0 = off).", _T.grad_clip, min=0.0)] = None,
    batch_size: Annotated[Optional[int], _opt("Images per optimisation step.", _T.batch_size, min=1)] = None,
    lr: Annotated[Optional[float], _opt("Adam learning rate.", _T.lr, min=0.0)] = None,
    seed: Annotated[Optional[int], _opt("Seed of initialisation, validation split and shuffling.", _T.seed)] = None,
    limit: Annotated[Optional[int], _opt("Use only the first N training images (0 = all).", _T.limit, min=0)] = None,
    threads: Annotated[Optional[int], _opt("torch CPU threads (0 = torch's default).", _T.num_threads, min=0)] = None,
    workers: Annotated[Optional[int], _opt("DataLoader processes decoding images (0 = in the training process).", _T.num_workers, min=0, max=64)] = None,
    device: Annotated[Optional[str], _opt("Train on: auto (a CUDA GPU when torch sees one), cuda or cpu.", _T.device)] = None,
    nproc_per_node: Annotated[
        int, typer.Option("--nproc-per-node", min=1, max=1024, help="Train with this many processes on this machine (starts torchrun; DDP).")
    ] = 1,
    resume: Annotated[bool, typer.Option(help="Continue the run in --out-dir from its last epoch.")] = False,
) -> None:
    """Train a VAE (or plain autoencoder) and write checkpoints to --out-dir."""
    _import_torch_side()
    if nproc_per_node > 1 and "WORLD_SIZE" not in os.environ:
        _relaunch_under_torchrun(nproc_per_node)
    from vaesdk.training.train import train as run_training

    width_list = None
    if widths is not None:
        try:
            width_list = tuple(int(w) for w in widths.split(","))
        except ValueError:
            raise InvalidArgumentError(f"--widths {widths!r} is not a comma-separated list of integers (e.g. 32,64,128)") from None
    model_options = dict(
        kind=kind.value, image_size=image_size, channels=channels, latent_dim=latent_dim, widths=width_list,
        res_blocks=res_blocks, upsample=upsample, covariance=covariance, rank=rank, likelihood=likelihood,
        logvar_min=logvar_min,
    )  # fmt: skip
    if covariance == "diagonal":  # the default rank belongs to the default low-rank covariance
        model_options.update(rank=rank or 0, likelihood=likelihood or "discretized")
    folder = data != "fashion-mnist"
    run_options = dict(
        seed=seed, batch_size=batch_size, lr=lr, max_epochs=epochs, patience=patience, lr_patience=lr_patience,
        kl_warmup_epochs=kl_warmup_epochs, fixed_variance_epochs=fixed_variance_epochs, grad_clip=grad_clip,
        limit=limit, num_threads=threads, num_workers=workers, device=device,
    )  # fmt: skip
    config = TrainConfig(
        model=ModelConfig(**_given(model_options)),
        dataset="folder" if folder else "fashion-mnist",
        data_dir=data if folder else str(data_dir or _T.data_dir),
        out_dir=str(out_dir),
        **_given(run_options),
    )
    command = "vae " + shlex.join(sys.argv[1:]) if sys.argv[1:2] == ["train"] else "vae train"
    run_training(config, resume=resume, command=command, log=typer.echo)


def _relaunch_under_torchrun(nproc_per_node: int) -> None:
    """Start this same `vae train` command as `nproc_per_node` torchrun processes and exit with their status."""
    from vaesdk.training.distributed import launch

    argv = sys.argv[1:]
    if "train" not in argv:
        raise InvalidArgumentError("--nproc-per-node needs the command line of `vae train`; run `torchrun --nproc_per_node N -m vaesdk.cli.main train ...` instead")
    at = argv.index("train")
    rest, skip = [], False
    for arg in argv[at + 1 :]:
        if skip:
            skip = False
        elif arg == "--nproc-per-node":
            skip = True
        elif not arg.startswith("--nproc-per-node="):
            rest.append(arg)
    raise typer.Exit(launch(nproc_per_node, ["vaesdk.cli.main", *argv[:at], "train", *rest]))


def _given(options: dict) -> dict:
    return {k: v for k, v in options.items() if v is not None}


@app.command("export")
def export_cmd(
    source: Annotated[
        str,
        typer.Argument(
            help="A vae train run folder (holds checkpoint.json); with --from python, FILE.py:FUNCTION; with --from pythae "
            "or diffusers, the model's folder.",
            show_default=False,
            metavar="RUN_DIR|FILE.py:FUNCTION|FOLDER",
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Bundle folder to write.", show_default=False)],
    name: Annotated[Optional[str], typer.Option(help="Model name in the manifest.", show_default="the --out folder's name")] = None,
    description: Annotated[str, typer.Option(help="One line about the model, stored in the manifest.")] = "",
    from_: Annotated[
        Optional[str],
        typer.Option("--from", help="Export a VAE vaesdk did not train: python (FILE.py:FUNCTION returns encoder, decoder), pythae or diffusers.",
                     metavar="python|pythae|diffusers", show_default="a vae train run"),
    ] = None,  # fmt: skip
    images: Annotated[Optional[Path], typer.Option(help="With --from: a folder of images to fit the priors on (diffusers: to take the latents' statistics on).", show_default=False)] = None,
    held_out: Annotated[
        Optional[Path],
        typer.Option(help="With --from: a folder of images the model did not train on, to calibrate the anomaly score on (diffusers: for the parity gate only).", show_default="none: uncalibrated"),
    ] = None,
    image_size: Annotated[Optional[int], typer.Option(min=1, max=4096, help="With --from: the model's image side, where the source does not record it.", show_default=False)] = None,
    channels: Annotated[Optional[int], typer.Option(min=1, max=3, help="With --from: 1 (grey) or 3 (RGB), where the source does not record it.", show_default=False)] = None,
    pixel_range: Annotated[Optional[str], typer.Option(help="With --from: the pixel range the model takes and gives.", metavar="0,1|-1,1", show_default="0,1")] = None,
    likelihood: Annotated[
        Optional[str],
        typer.Option(help="With --from: the decoder's likelihood, where the source does not record it.",
                     metavar="bernoulli|continuous-bernoulli|gaussian|gaussian:SIGMA|none", show_default=False),
    ] = None,  # fmt: skip
    atol: Annotated[float, typer.Option(min=0.0, help="With --from: the parity gate's absolute tolerance, times the output's magnitude.")] = 1e-4,
    rtol: Annotated[float, typer.Option(min=0.0, help="With --from: the parity gate's relative tolerance.")] = 1e-4,
    fp16: Annotated[bool, typer.Option("--fp16", help="With --from diffusers: add a decoder computing in float16 (used on CUDA; a non-finite output re-runs in float32).")] = False,
    data: Annotated[
        str,
        typer.Option(
            "--data",
            help="Data for the manifest's metrics, priors and directions: auto (the run's own source: Fashion-MNIST's test "
            "split, or the held-out part of its image folder), fashion-mnist, a labelled image folder, or none.",
        ),
    ] = "auto",
    data_dir: DataDirOpt = None,
    train_data: Annotated[
        Optional[str], typer.Option(help="Labelled image folder for the probe and the class directions, with --data FOLDER.")
    ] = None,
    iw_samples: Annotated[int, typer.Option(min=1, max=10000, help="Importance samples for the likelihood bound.")] = 100,
    eval_limit: Annotated[int, typer.Option(min=0, help="Evaluate on only the first N images (0 = all).")] = 0,
    allow_collapsed: Annotated[
        bool, typer.Option("--allow-collapsed", help="Export even if too few latent dimensions are in use (posterior collapse).")
    ] = False,
    force: Annotated[bool, typer.Option("--force", "-f", help="Replace an existing bundle folder.")] = False,
) -> None:
    """Export a trained VAE to a verified bundle: encoder.onnx, decoder.onnx, manifest.json.

    A vae train run by default; with --from, a VAE trained elsewhere (docs: Bring your own
    model). Writes nothing if onnxruntime does not reproduce PyTorch within the parity tolerance.
    """
    _import_torch_side()
    if from_ is not None:
        from vaesdk.export.importer import export_from
        from vaesdk.export.verify import Tolerance

        if images is None:
            raise InvalidArgumentError("--from needs --images DIR: the images to fit the priors on (diffusers: to take the latents' statistics on)")
        export_from(
            from_, source, out, images=images, held_out=held_out, image_size=image_size, channels=channels,
            pixel_range=pixel_range, likelihood=likelihood, tolerance=Tolerance(atol=atol, rtol=rtol), name=name,
            description=description, fp16=fp16, force=force, log=typer.echo,
        )  # fmt: skip
        return
    from vaesdk.export.pipeline import export_bundle

    with progress(100, "evaluating") as update:
        export_bundle(
            source,
            out,
            name=name,
            description=description,
            eval_data=None if data == "none" else data,
            data_dir=data_dir,
            probe_data=train_data,
            iw_samples=iw_samples,
            eval_limit=eval_limit,
            allow_collapsed=allow_collapsed,
            force=force,
            log=typer.echo,
            progress=lambda task, done, total: update(completed=done, total=total, description=task),
        )
