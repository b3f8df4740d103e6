"""The training loop, top to bottom.

A run directory holds three files, all rewritten atomically after every epoch:
  model.safetensors   weights of the best epoch so far (by validation objective); export reads it
  state.safetensors   weights, optimizer moments and RNG state of the last epoch; resume reads it
  checkpoint.json     configs, dataset, history, the command that made it: self-describing
No pickle anywhere: tensors go through safetensors, everything else through JSON.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from tqdm.auto import tqdm

from vaesdk.errors import InvalidArgumentError, OutputError
from vaesdk.fileio import write_atomic

from .config import ModelConfig, TrainConfig
from .data import ImageSet, load_fashion_mnist, load_image_folder, split_train_val, to_nchw
from .model import VAE

CHECKPOINT_JSON = "checkpoint.json"
BEST_WEIGHTS = "model.safetensors"
LAST_STATE = "state.safetensors"


# ---- data -------------------------------------------------------------------------------


def load_dataset(config: TrainConfig) -> ImageSet:
    if config.dataset == "fashion-mnist":
        data = load_fashion_mnist(config.data_dir, "train")
        m = config.model
        if (m.image_size, m.channels) != (28, 1):
            raise InvalidArgumentError(f"Fashion-MNIST is 28x28 grayscale; set image_size=28, channels=1 (got {m.image_size}, {m.channels})")
    else:
        data = load_image_folder(config.data_dir, config.model.image_size, config.model.channels)
    if config.limit:
        data = data.head(config.limit)
    return data


def batches(images: torch.Tensor, batch_size: int, generator: torch.Generator | None = None):
    order = torch.randperm(len(images), generator=generator) if generator is not None else torch.arange(len(images))
    for i in range(0, len(images), batch_size):
        yield images[order[i : i + batch_size]]


# ---- evaluation -------------------------------------------------------------------------


@torch.no_grad()
def evaluate(model: VAE, images: torch.Tensor, batch_size: int = 500, seed: int = 1234) -> dict[str, float]:
    """Mean metrics over `images` (uint8 [N, C, H, W]); posterior noise is seeded so the figure is repeatable."""
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    totals: dict[str, float] = {}
    for batch in batches(images, batch_size):
        out = model.loss(batch, generator)
        for k, v in out.items():
            totals[k] = totals.get(k, 0.0) + float(v) * len(batch)
    model.train()
    return {k: v / len(images) for k, v in totals.items()}


def objective(metrics: dict[str, float], kind: str) -> float:
    """The number early stopping watches: -ELBO in bits/dim for a VAE, MSE for an AE."""
    return metrics["bpd"] if kind == "vae" else metrics["mse"]


# ---- checkpoints ------------------------------------------------------------------------


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer state into flat tensors (for safetensors) and JSON-able rest."""
    sd = optimizer.state_dict()
    tensors = {f"optim.{idx}.{key}": t for idx, state in sd["state"].items() for key, t in state.items()}
    return tensors, {"param_groups": sd["param_groups"], "state_keys": {str(i): list(s) for i, s in sd["state"].items()}}


def restore_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    state = {int(i): {k: tensors[f"optim.{i}.{k}"] for k in keys} for i, keys in meta["state_keys"].items()}
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def save_weights(path: Path, model: VAE) -> None:
    tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    write_atomic(path, save_safetensors(tensors), overwrite=True)


def load_weights(path: Path, model: VAE) -> None:
    model.load_state_dict(load_safetensors(Path(path).read_bytes()))


def read_checkpoint(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / CHECKPOINT_JSON
    if not path.is_file():
        raise InvalidArgumentError(f"no checkpoint at {run_dir} ({CHECKPOINT_JSON} missing); train first with `vae train`")
    return json.loads(path.read_text())


def load_model(run_dir: str | Path) -> tuple[VAE, dict[str, Any]]:
    """The best weights of a run, in eval mode, with its checkpoint record."""
    meta = read_checkpoint(run_dir)
    model = VAE(ModelConfig(**meta["config"]["model"]))
    load_weights(Path(run_dir) / BEST_WEIGHTS, model)
    return model.eval(), meta


# ---- the loop ---------------------------------------------------------------------------


def train(config: TrainConfig, *, resume: bool = False, command: str = "", log: Callable[[str], None] = print) -> Path:
    """Train until the validation objective stops improving; returns the run directory."""
    run_dir = Path(config.out_dir)
    if (run_dir / CHECKPOINT_JSON).exists() and not resume:
        raise OutputError(f"{run_dir} already holds a checkpoint; pass --resume to continue it or choose another --out-dir")
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    torch.manual_seed(config.seed)

    data = load_dataset(config)
    train_set, val_set = split_train_val(data, config.val_fraction, config.seed)
    train_images = torch.from_numpy(to_nchw(train_set.images))
    val_images = torch.from_numpy(to_nchw(val_set.images))
    log(f"data: {len(train_set)} training and {len(val_set)} validation images, {tuple(train_images.shape[1:])}")

    model = VAE(config.model)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=config.lr_patience - 1)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"model: {config.model.kind}, latent_dim={config.model.latent_dim}, widths={config.model.widths}, {n_params:,} parameters")

    history: list[dict[str, Any]] = []
    start_epoch, best, best_epoch = 0, math.inf, -1
    if resume:
        meta = read_checkpoint(run_dir)
        if meta["config"]["model"] != config.to_dict()["model"]:
            raise InvalidArgumentError(f"{run_dir} was trained with a different model config; resume with the same settings")
        state = load_safetensors((run_dir / LAST_STATE).read_bytes())
        model.load_state_dict({k[len("model.") :]: v for k, v in state.items() if k.startswith("model.")})
        restore_optimizer(optimizer, state, meta["optimizer"])
        scheduler.load_state_dict(meta["scheduler"])
        torch.set_rng_state(state["rng.torch"])
        history, best, best_epoch = meta["history"], meta["best_objective"], meta["best_epoch"]
        start_epoch = meta["epochs_done"]
        log(f"resumed at epoch {start_epoch} (best {best:.4f} at epoch {best_epoch})")

    for epoch in range(start_epoch, config.max_epochs):
        if best_epoch >= 0 and epoch - best_epoch > config.patience:
            break
        t0 = time.perf_counter()
        model.train()
        # Shuffling is seeded per epoch, so a resumed run sees the same order it would have.
        order = torch.Generator().manual_seed(config.seed * 100_003 + epoch)
        n_batches = math.ceil(len(train_images) / config.batch_size)
        bar = tqdm(batches(train_images, config.batch_size, order), total=n_batches, desc=f"epoch {epoch + 1}", leave=False, disable=None)
        sums: dict[str, float] = {}
        for batch in bar:
            out = model.loss(batch)
            optimizer.zero_grad(set_to_none=True)
            out["loss"].backward()
            if config.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            for k, v in out.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach()) * len(batch)
            bar.set_postfix({k: f"{float(out[k]):.4f}" for k in ("bpd", "mse") if k in out})
        train_metrics = {k: v / len(train_images) for k, v in sums.items()}
        val_metrics = evaluate(model, val_images)
        score = objective(val_metrics, config.model.kind)
        scheduler.step(score)
        improved = score < best
        if improved:
            best, best_epoch = score, epoch
            save_weights(run_dir / BEST_WEIGHTS, model)
        history.append(
            {
                "epoch": epoch + 1,
                "seconds": round(time.perf_counter() - t0, 1),
                "lr": optimizer.param_groups[0]["lr"],
                "train": train_metrics,
                "val": val_metrics,
            }
        )
        log(
            f"epoch {epoch + 1}: train {_fmt(train_metrics)} | val {_fmt(val_metrics)}"
            f"{' *' if improved else ''} ({time.perf_counter() - t0:.0f}s)"
        )

        opt_tensors, opt_meta = optimizer_tensors(optimizer)
        state = {f"model.{k}": v.detach().contiguous() for k, v in model.state_dict().items()}
        state.update(opt_tensors)
        state["rng.torch"] = torch.get_rng_state()
        write_atomic(run_dir / LAST_STATE, save_safetensors(state), overwrite=True)
        record = {
            "format": "vaesdk-checkpoint",
            "config": config.to_dict(),
            "dataset": {
                "name": config.dataset,
                "data_dir": config.data_dir,
                "train_images": len(train_set),
                "val_images": len(val_set),
                "class_names": list(data.class_names),
            },
            "command": command,
            "epochs_done": epoch + 1,
            "best_epoch": best_epoch,
            "best_objective": best,
            "objective": "val -ELBO (bits/dim)" if config.model.kind == "vae" else "val MSE",
            "history": history,
            "optimizer": opt_meta,
            "scheduler": scheduler.state_dict(),
            "torch": torch.__version__,
        }
        write_atomic(run_dir / CHECKPOINT_JSON, json.dumps(record, indent=1).encode(), overwrite=True)
    log(f"best epoch {best_epoch + 1}: val {'bits/dim' if config.model.kind == 'vae' else 'MSE'} {best:.4f}; weights in {run_dir / BEST_WEIGHTS}")
    return run_dir


def _fmt(metrics: dict[str, float]) -> str:
    return " ".join(f"{k}={v:.4f}" for k, v in metrics.items() if k != "loss")

