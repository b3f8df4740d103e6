"""`vae info` and `vae models`: what is installed and what runs it; `vae calibrate`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

import vaesdk
from vaesdk.base.errors import InvalidArgumentError
from vaesdk.frontend import calibrate_bundle, image_files

from .common import emit_json, load_model
from .options import DeviceOpt, JsonOpt, ModelOpt

app = typer.Typer()


@app.command()
def models(json_out: JsonOpt = False) -> None:
    """List the bundled models (load others by passing a bundle folder to --model)."""
    names = vaesdk.list_models()
    if json_out:
        emit_json({"default": vaesdk.DEFAULT_MODEL, "models": names})
        return
    if not names:
        typer.echo("no bundled models are installed; load a bundle folder with --model PATH")
    for name in names:
        typer.echo(f"{name}{'  (default)' if name == vaesdk.DEFAULT_MODEL else ''}")


@app.command()
def info(model: ModelOpt = None, device: DeviceOpt = "auto", json_out: JsonOpt = False) -> None:
    """Describe a bundle and say which execution provider runs it."""
    m = load_model(model, device)
    summary = {**m.describe(), "available_providers": vaesdk.available_providers()}
    g = m.geometry
    usage, kl, metrics = summary["dims_by_usage"], summary["kl_per_dim"], summary["metrics"]
    if json_out:
        emit_json(summary)
        return
    lines = [
        f"model       {m.name} ({'variational autoencoder' if m.kind == 'vae' else 'plain autoencoder'})",
        f"bundle      {m.path}",
        f"images      {f'{g.height}x{g.width}' if g.fixed_size else f'any size, sides multiples of {g.multiple}'}, "
        f"{g.channels} channel{'s' if g.channels > 1 else ''}, uint8",
        f"latent      [{g.latent_channels}, H/{g.factor}, W/{g.factor}] (spatial; scaling factor {g.scaling_factor:g}, shift {g.shift_factor:g})"
        if g.spatial else f"latent      {m.latent_dim} dimensions" + (f"; most used: {', '.join(map(str, usage[:8]))}" if kl else ""),
        f"runs on     {m.device} ({', '.join(m.providers)}); available: {', '.join(vaesdk.available_providers())}",
    ]
    if kl:
        lines.append(
            f"active dims {summary['active_dims']} of {m.latent_dim} carry information (KL > {summary['active_kl_threshold']:g} nats)"
        )
    if m.priors:
        lines.append(f"priors      {', '.join(m.priors)}; default {m.default_prior}: {summary['prior_descriptions'][m.default_prior]}")
    if summary["directions"]:
        lines.append(f"directions  {', '.join(summary['directions'])}")
    if metrics:
        parts = [
            f"-ELBO {metrics['elbo_bpd']:.4f} bits/dim" if "elbo_bpd" in metrics else None,
            f"-IW(k={metrics.get('iw_samples')}) {metrics['iw_bpd']:.4f} bits/dim" if "iw_bpd" in metrics else None,
            f"MSE {metrics['recon_mse']:.5f}" if "recon_mse" in metrics else None,
            f"probe accuracy {metrics['probe_accuracy']:.4f}" if "probe_accuracy" in metrics else None,
        ]
        lines.append(f"metrics     {'; '.join(p for p in parts if p)} ({metrics.get('images')} {metrics.get('split')} images)")
    training = summary["training"]
    if training.get("command"):
        lines.append(f"trained by  {training['command']} ({training['epochs']} epochs, best {training['best_epoch']})")
    typer.echo("\n".join(lines))


@app.command()
def calibrate(
    bundle: Annotated[Path, typer.Argument(help="The VAE bundle folder to calibrate.", show_default=False)],
    held_out: Annotated[Path, typer.Option(help="A folder of at least 100 images the model did not train on.", show_default=False)],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Write a calibrated copy here instead of changing BUNDLE.", show_default=False)] = None,
    prior: Annotated[
        Optional[str],
        typer.Option(help="The prior whose density is the score's latent part: standard or a mixture of the bundle (see vae info).",
                     show_default="the current calibration's, else the default prior when it is a mixture"),
    ] = None,
) -> None:
    """Calibrate a bundle's anomaly score on held-out images, so score gives p-values."""
    if not held_out.is_dir():
        raise InvalidArgumentError(f"--held-out {held_out} is not a folder of images")
    files = image_files(held_out)
    path = calibrate_bundle(bundle, files, source=f"{len(files)} held-out images of {held_out.name}", out=out, prior=prior)
    typer.echo(f"calibrated the anomaly score of {path} on {len(files)} held-out images")
