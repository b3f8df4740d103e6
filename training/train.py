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
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from tqdm.auto import tqdm

from vaesdk.base.errors import InvalidArgumentError, OutputError
from vaesdk.base.fileio import write_atomic
from vaesdk.maths.latent import ACTIVE_KL_NATS

from .config import ModelConfig, TrainConfig
from .data import (
    ArrayImages, GlobalBatchSampler, ImageSet, StackImages, TrainingData, open_training_data,
)  # fmt: skip
from .distributed import Objective, Processes, all_sum, join, leave
from .model import VAE

CHECKPOINT_JSON = "checkpoint.json"
BEST_WEIGHTS = "model.safetensors"
LAST_STATE = "state.safetensors"


# ---- data -------------------------------------------------------------------------------


def load_training_images(config: TrainConfig) -> ImageSet:
    """All of the run's images in memory (export's evaluation reads them this way)."""
    return config.images()


def open_run_data(config: TrainConfig) -> TrainingData:
    m = config.model
    return open_training_data(config.dataset, config.data_dir, m.image_size, m.channels, config.limit, config.val_fraction, config.seed)


def loader(dataset, sampler: GlobalBatchSampler, workers: int, persistent: bool = False) -> DataLoader:
    """This process's batches; `workers` > 0 decodes them in that many background processes
    (kept across epochs when `persistent`; the sampler still runs here, so set_epoch works)."""
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=workers,
        collate_fn=StackImages(dataset.image_shape),
        persistent_workers=persistent and workers > 0,
        prefetch_factor=4 if workers > 0 else None,
    )


def draw_noise(
    generator: torch.Generator, n: int, config: ModelConfig, image_shape: tuple[int, ...]
) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """The posterior draw eps [n, D] and dequantization noise [n, C, H, W] of one global batch,
    in the order model.loss draws them itself. Drawn whole on every process, each taking its
    rows, so an image gets the same noise whatever the number of processes."""
    if config.kind != "vae":
        return None
    eps = torch.randn((n, config.latent_dim), generator=generator)
    uniform = torch.rand((n, *image_shape), generator=generator) if config.likelihood == "dequantized" else None
    return eps, uniform


def share(noise, rank: int, world_size: int, device: torch.device):
    if noise is None:
        return None
    return tuple(None if t is None else t[rank::world_size].to(device) for t in noise)


def step_generator(seed: int, epoch: int, step: int) -> torch.Generator:
    """The noise source of one training step: a function of (seed, epoch, step) only, so a
    resumed run, or one with another number of processes, draws the same noise."""
    return torch.Generator().manual_seed(int(np.random.SeedSequence([seed, epoch, step]).generate_state(1)[0]))


# ---- evaluation -------------------------------------------------------------------------


def accumulate(totals: dict[str, Any], out: dict[str, torch.Tensor], n: int) -> None:
    """Add a batch's mean metrics, weighted by its size; vectors (kl_per_dim) stay vectors."""
    for k, v in out.items():
        v = v.detach().double().cpu()
        totals[k] = totals.get(k, 0.0) + (v if v.ndim else float(v)) * n


def reduce_totals(totals: dict[str, Any], processes: Processes) -> dict[str, Any]:
    """Totals summed over all processes (every process holds a share of each batch)."""
    if processes.world_size == 1:
        return totals
    keys = sorted(totals)
    flat = torch.cat([torch.as_tensor(totals[k], dtype=torch.float64).reshape(-1) for k in keys])
    flat = all_sum(flat, processes)
    out, i = {}, 0
    for k in keys:
        size = torch.as_tensor(totals[k]).numel()
        out[k] = flat[i : i + size].clone() if torch.as_tensor(totals[k]).ndim else float(flat[i])
        i += size
    return out


def averaged(totals: dict[str, Any], n: int) -> tuple[dict[str, float], list[float] | None]:
    """(scalar metrics, per-dimension KL) from accumulated totals, with `active_dims` added."""
    kl = totals.pop("kl_per_dim", None)
    metrics = {k: v / n for k, v in totals.items()}
    if kl is None:
        return metrics, None
    kl_per_dim = (kl / n).tolist()
    metrics["active_dims"] = sum(v > ACTIVE_KL_NATS for v in kl_per_dim)
    return metrics, kl_per_dim


@torch.no_grad()
def validation_pass(
    model: VAE, images, batch_size: int = 500, seed: int = 1234, processes: Processes = Processes(), workers: int = 0
) -> tuple[dict[str, float], list[float] | None]:
    """Mean metrics of the true objective (-ELBO with weight 1, the decoder's own variance)
    over `images` (a Dataset of uint8 [C, H, W], or a uint8 [N, C, H, W] tensor), and the
    per-dimension KL (None for an AE). Posterior and dequantization noise are seeded, and
    drawn per whole batch, so the figures are repeatable and the same for any number of
    processes (each evaluates its share of every batch; the totals are summed)."""
    dataset = images if isinstance(images, Dataset) else TensorImages(images)
    sampler = GlobalBatchSampler(len(dataset), batch_size, processes.rank, processes.world_size)
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    totals: dict[str, Any] = {}
    for n, batch in zip(sampler.global_batch_sizes(), loader(dataset, sampler, workers)):
        noise = share(draw_noise(generator, n, model.config, dataset.image_shape), processes.rank, processes.world_size, processes.device)
        if len(batch):
            accumulate(totals, model.loss(batch.to(processes.device), noise=noise), len(batch))
    model.train()
    return averaged(reduce_totals(totals, processes), len(dataset))


class TensorImages(ArrayImages):
    """An ArrayImages over a uint8 [N, C, H, W] tensor that is already in torch's layout."""

    def __init__(self, images: torch.Tensor):
        self.images = images


def collapse_message(active: int, dim: int, epochs: int) -> str:
    return (
        f"posterior collapse: only {active} of {dim} latent dimensions are in use (mean KL > {ACTIVE_KL_NATS} nats) "
        f"after {epochs} epochs; the decoder is explaining the images without z. Likely causes: a decoder too strong "
        f"for the latent, or its variance learned too early. Try a longer --kl-warmup-epochs or --fixed-variance-epochs, "
        f"a smaller --latent-dim, or fewer --res-blocks"
    )


def objective(metrics: dict[str, float], kind: str) -> float:
    """The number early stopping watches: -ELBO in bits/dim for a VAE, MSE for an AE."""
    return metrics["bpd"] if kind == "vae" else metrics["mse"]


# ---- checkpoints ------------------------------------------------------------------------


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer state into flat tensors (for safetensors) and JSON-able rest."""
    sd = optimizer.state_dict()
    tensors = {f"optim.{idx}.{key}": t.cpu() for idx, state in sd["state"].items() for key, t in state.items()}
    return tensors, {"param_groups": sd["param_groups"], "state_keys": {str(i): list(s) for i, s in sd["state"].items()}}


def restore_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    state = {int(i): {k: tensors[f"optim.{i}.{k}"] for k in keys} for i, keys in meta["state_keys"].items()}
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def save_weights(path: Path, model: VAE) -> None:
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    write_atomic(path, save_safetensors(tensors), overwrite=True)


def load_weights(path: Path, model: VAE) -> None:
    model.load_state_dict(load_safetensors(Path(path).read_bytes()))


def read_checkpoint(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / CHECKPOINT_JSON
    if not path.is_file():
        raise InvalidArgumentError(f"no checkpoint at {run_dir} ({CHECKPOINT_JSON} missing); train first with `vae train`")
    return json.loads(path.read_text())


def load_checkpoint(run_dir: str | Path) -> tuple[VAE, dict[str, Any]]:
    """The best weights of a run, in eval mode, with its checkpoint record."""
    meta = read_checkpoint(run_dir)
    model = VAE(ModelConfig.from_record(meta["config"]["model"]))
    load_weights(Path(run_dir) / BEST_WEIGHTS, model)
    return model.eval(), meta


# ---- the loop ---------------------------------------------------------------------------


def train(config: TrainConfig, *, resume: bool = False, command: str = "", log: Callable[[str], None] = print) -> Path:
    """Train until the validation objective stops improving; returns the run directory.

    Under torchrun (WORLD_SIZE > 1) every process runs this function: each computes the loss
    of its strided share of every global batch of `batch_size` images, DistributedDataParallel
    averages the gradients, validation totals are summed over the processes, and only
    process 0 logs and writes the run directory.
    """
    processes = join(config.device)
    try:
        return _train(config, processes, resume=resume, command=command, log=log if processes.is_main else lambda s: None)
    finally:
        leave(processes)


def _train(config: TrainConfig, processes: Processes, *, resume: bool, command: str, log: Callable[[str], None]) -> Path:
    run_dir = Path(config.out_dir)
    if (run_dir / CHECKPOINT_JSON).exists() and not resume:
        raise OutputError(f"{run_dir} already holds a checkpoint; pass --resume to continue it or choose another --out-dir")
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    torch.manual_seed(config.seed)
    rank, world_size, device = processes.rank, processes.world_size, processes.device
    if config.batch_size < world_size:
        raise InvalidArgumentError(f"batch_size {config.batch_size} is smaller than the {world_size} processes; use --batch-size {world_size} or more")

    data = open_run_data(config)
    n_train, n_val = len(data.train), len(data.val)
    if n_val < world_size:
        raise InvalidArgumentError(f"{n_val} validation images are too few for {world_size} processes; use more images or fewer processes")
    log(
        f"data: {n_train} training and {n_val} validation images, {data.image_shape}"
        + (f"; {world_size} processes ({processes.backend}), {config.batch_size} images per step in all" if world_size > 1 else "")
    )

    model = VAE(config.model).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=config.lr_patience - 1)
    n_params = sum(p.numel() for p in model.parameters())
    m = config.model
    covariance = f"lowrank (rank {m.rank})" if m.covariance == "lowrank" else m.covariance
    log(
        f"model: {m.kind}, latent_dim={m.latent_dim}, widths={m.widths}, res_blocks={m.res_blocks}, "
        f"upsample={m.upsample}" + (f", {covariance} covariance, {m.likelihood} likelihood" if m.kind == "vae" else "")
        + f", {n_params:,} parameters"
    )

    history: list[dict[str, Any]] = []
    start_epoch, best, best_epoch = 0, math.inf, -1
    if resume:
        meta = read_checkpoint(run_dir)
        if TrainConfig.from_dict(meta["config"]).to_dict()["model"] != config.to_dict()["model"]:
            raise InvalidArgumentError(f"{run_dir} was trained with a different model config; resume with the same settings")
        state = load_safetensors((run_dir / LAST_STATE).read_bytes())
        model.load_state_dict({k[len("model.") :]: v for k, v in state.items() if k.startswith("model.")})
        restore_optimizer(optimizer, state, meta["optimizer"])
        scheduler.load_state_dict(meta["scheduler"])
        torch.set_rng_state(state["rng.torch"])
        history, best, best_epoch = meta["history"], meta["best_objective"], meta["best_epoch"]
        start_epoch = meta["epochs_done"]
        before = meta.get("distributed", {}).get("world_size", 1)
        log(
            f"resumed at epoch {start_epoch} (best {best:.4f} at epoch {best_epoch + 1})"
            + (f", trained so far with {before} processes" if before != world_size else "")
        )

    # Every process starts from the same weights (seeded above; DDP also broadcasts rank 0's).
    objective_module = Objective(model)
    if world_size > 1:
        objective_module = DistributedDataParallel(objective_module, device_ids=[device.index] if device.type == "cuda" else None)
    is_vae = m.kind == "vae"
    # The warm-up epochs optimise a different objective: the learning-rate schedule and early
    # stopping only start counting after them (validation always measures the true -ELBO).
    warmup_epochs = max(config.kl_warmup_epochs, config.fixed_variance_epochs) if is_vae else 0
    sampler = GlobalBatchSampler(n_train, config.batch_size, rank, world_size, seed=config.seed)
    batch_sizes = sampler.global_batch_sizes()
    n_batches = len(batch_sizes)
    train_batches = loader(data.train, sampler, config.num_workers, persistent=True)
    for epoch in range(start_epoch, config.max_epochs):
        if best_epoch >= 0 and epoch - max(best_epoch, warmup_epochs - 1) > config.patience:
            break
        t0 = time.perf_counter()
        model.train()
        fixed_logvar = config.warmup_logvar if is_vae and epoch < config.fixed_variance_epochs else None
        sampler.set_epoch(epoch)
        bar = tqdm(zip(batch_sizes, train_batches), total=n_batches, desc=f"epoch {epoch + 1}", leave=False, disable=None if processes.is_main else True)
        sums: dict[str, Any] = {}
        for step, (n_global, batch) in enumerate(bar):
            noise = draw_noise(step_generator(config.seed, epoch, step), n_global, m, data.image_shape)
            options = {"noise": share(noise, rank, world_size, device)} if is_vae else {}
            if is_vae:
                options.update(kl_weight=config.kl_weight(epoch + step / n_batches), fixed_logvar=fixed_logvar)
            n_local = len(batch)
            if n_local == 0:
                # The last global batch can be smaller than the number of processes; a process
                # without a share still joins the gradient averaging, with a zero-weighted image.
                batch = torch.zeros((1, *data.image_shape), dtype=torch.uint8)
                options["noise"] = None if not is_vae else tuple(None if t is None else torch.zeros_like(t[:1]).to(device) for t in noise)
            out = objective_module(batch.to(device), **options)
            optimizer.zero_grad(set_to_none=True)
            # Each process's loss is the mean over its share; weighting it by its share of the
            # global batch makes DDP's average of the gradients that of the global batch mean.
            (out["loss"] * (n_local * world_size / n_global)).backward()
            if config.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            if n_local:
                accumulate(sums, out, n_local)
            bar.set_postfix({k: f"{float(out[k]):.4f}" for k in ("bpd", "mse") if k in out})
        train_metrics, _ = averaged(reduce_totals(sums, processes), n_train)
        val_metrics, kl_per_dim = validation_pass(model, data.val, processes=processes, workers=config.num_workers)
        score = objective(val_metrics, m.kind)
        in_warmup = epoch < warmup_epochs
        if not in_warmup:
            scheduler.step(score)
        improved = score < best
        if improved:
            best, best_epoch = score, epoch
            if processes.is_main:
                save_weights(run_dir / BEST_WEIGHTS, model)
        entry: dict[str, Any] = {
            "epoch": epoch + 1,
            "seconds": round(time.perf_counter() - t0, 1),
            "lr": optimizer.param_groups[0]["lr"],
            "world_size": world_size,
            "train": train_metrics,
            "val": val_metrics,
        }
        if is_vae:
            entry["kl_weight"] = config.kl_weight(epoch + 1)
            entry["fixed_variance"] = fixed_logvar is not None
            entry["val_kl_per_dim"] = kl_per_dim
        history.append(entry)
        log(
            f"epoch {epoch + 1}: train {_fmt(train_metrics)} | val {_fmt(val_metrics)}"
            f"{' *' if improved else ' (warm-up)' if in_warmup else ''} ({time.perf_counter() - t0:.0f}s)"
        )
        collapsed = is_vae and _collapsed(history, config)
        if collapsed:
            log(collapse_message(int(val_metrics["active_dims"]), m.latent_dim, epoch + 1))
        if not processes.is_main:
            continue

        opt_tensors, opt_meta = optimizer_tensors(optimizer)
        state = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        state.update({k: v.cpu() for k, v in opt_tensors.items()})
        state["rng.torch"] = torch.get_rng_state()
        write_atomic(run_dir / LAST_STATE, save_safetensors(state), overwrite=True)
        record = {
            "format": "vaesdk-checkpoint",
            "config": config.to_dict(),
            "dataset": {
                "name": config.dataset,
                "data_dir": config.data_dir,
                "train_images": n_train,
                "val_images": n_val,
                "split": {"seed": config.seed, "val_fraction": config.val_fraction, "limit": config.limit},
                "class_names": list(data.class_names),
            },
            # The global batch is the same for any number of processes, so a run can be
            # resumed with another number of them and continue the same optimisation.
            "distributed": {"world_size": world_size, "global_batch_size": config.batch_size, "backend": processes.backend},
            "command": command,
            "epochs_done": epoch + 1,
            "best_epoch": best_epoch,
            "best_objective": best,
            "objective": "val -ELBO (bits/dim)" if is_vae else "val MSE",
            "schedule": config.schedule() if is_vae else None,
            "collapsed": collapsed,
            "history": history,
            "optimizer": opt_meta,
            "scheduler": scheduler.state_dict(),
            "torch": torch.__version__,
        }
        write_atomic(run_dir / CHECKPOINT_JSON, json.dumps(record, indent=1).encode(), overwrite=True)
    log(f"best epoch {best_epoch + 1}: val {'bits/dim' if is_vae else 'MSE'} {best:.4f}; weights in {run_dir / BEST_WEIGHTS}")
    return run_dir


def _collapsed(history: list[dict[str, Any]], config: TrainConfig) -> bool:
    """True when the last `collapse_patience` epochs after the warm-up all had fewer than
    `min_active_fraction` of the latent dimensions active (and always when none are)."""
    after = [h for h in history if h["epoch"] > config.kl_warmup_epochs and not h["fixed_variance"]]
    recent = after[-config.collapse_patience :]
    if len(recent) < config.collapse_patience:
        return False
    need = max(1, math.ceil(config.min_active_fraction * config.model.latent_dim))
    return all(h["val"]["active_dims"] < need for h in recent)


def _fmt(metrics: dict[str, float]) -> str:
    return " ".join(f"{k}={v:.4f}" if k != "active_dims" else f"active={v}" for k, v in metrics.items() if k != "loss")

