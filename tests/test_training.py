"""Training: config checks, the loss, checkpoints (safetensors + JSON) and exact resume."""

import pytest

# Needs torch (the train extra): marked, and skipped at collection where it is absent.
pytestmark = pytest.mark.train
pytest.importorskip("torch")

import gzip
import json
import re
import struct
from pathlib import Path

import numpy as np
import torch

from vaesdk.evaluation.datasets import load_image_folder, read_idx
from vaesdk.base.errors import InvalidArgumentError, OutputError
from vaesdk.imaging.images import save_png
from vaesdk.training.config import ModelConfig, TrainConfig
from vaesdk.training.model import VAE
from vaesdk.training.train import BEST_WEIGHTS, CHECKPOINT_JSON, LAST_STATE, load_checkpoint, train

ROOT = Path(__file__).resolve().parent.parent
TINY = dict(latent_dim=4, widths=(4, 8))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"kind": "gan"}, "kind"),
        ({"channels": 2}, "channels"),
        ({"latent_dim": 0}, "latent_dim"),
        ({"image_size": 30, "widths": (4, 8, 16)}, "divisible"),
        ({"widths": (4, -1)}, "widths"),
        ({"logvar_min": 1.0, "logvar_max": 0.0}, "logvar_min"),
    ],
)
def test_model_config_rejects_bad_values(kwargs, match):
    with pytest.raises(InvalidArgumentError, match=match):
        ModelConfig(**kwargs)


def test_train_config_round_trips_through_json():
    config = TrainConfig(model=ModelConfig(**TINY), seed=3)
    again = TrainConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config


@pytest.mark.parametrize("kind", ["vae", "ae"])
def test_loss_is_finite_and_falls_on_real_images(kind, fashion_test):
    torch.manual_seed(0)
    model = VAE(ModelConfig(kind=kind, latent_dim=4, widths=(8, 16)))
    opt = torch.optim.Adam(model.parameters(), 2e-3)
    x = torch.from_numpy(fashion_test.images[:64].transpose(0, 3, 1, 2).copy())
    first = float(model.loss(x)["loss"].detach())
    for _ in range(30):
        out = model.loss(x)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    assert np.isfinite(first) and float(model.loss(x)["loss"].detach()) < first
    if kind == "vae":
        assert {"bpd", "kl", "mse"} <= set(out)


def test_vae_loss_is_the_negative_elbo_in_bits_per_dim(fashion_test):
    model = VAE(ModelConfig(**TINY))
    x = torch.from_numpy(fashion_test.images[:8].transpose(0, 3, 1, 2).copy())
    out = model.loss(x, torch.Generator().manual_seed(0))
    assert float(out["bpd"]) == pytest.approx(float(out["loss"].detach()) / (784 * np.log(2)), rel=1e-5)


def _run(tmp_path, name, **kwargs):
    config = TrainConfig(model=ModelConfig(**TINY), out_dir=str(tmp_path / name), limit=600, batch_size=100, **kwargs)
    return config


def test_checkpoints_are_safetensors_and_json_and_resume_is_exact(tmp_path):
    # On the CPU: GPU convolution kernels are not bit-for-bit repeatable.
    straight = train(_run(tmp_path, "a", max_epochs=3, device="cpu"), log=lambda s: None)
    half = _run(tmp_path, "b", max_epochs=2, device="cpu")
    train(half, log=lambda s: None)
    with pytest.raises(OutputError, match="--resume"):
        train(half, log=lambda s: None)
    resumed = train(_run(tmp_path, "b", max_epochs=3, device="cpu"), resume=True, log=lambda s: None)
    assert sorted(p.name for p in straight.iterdir()) == sorted([BEST_WEIGHTS, LAST_STATE, CHECKPOINT_JSON])
    for name in (BEST_WEIGHTS, LAST_STATE):
        assert (straight / name).read_bytes() == (resumed / name).read_bytes(), name
    record = json.loads((resumed / CHECKPOINT_JSON).read_text())
    assert record["epochs_done"] == 3 and len(record["history"]) == 3
    model, meta = load_checkpoint(resumed)
    assert model.config.latent_dim == 4 and meta["config"]["seed"] == 0


def test_resume_refuses_a_different_model(tmp_path):
    train(_run(tmp_path, "c", max_epochs=1), log=lambda s: None)
    other = TrainConfig(model=ModelConfig(latent_dim=5, widths=(4, 8)), out_dir=str(tmp_path / "c"), limit=600, max_epochs=2)
    with pytest.raises(InvalidArgumentError, match="different model config"):
        train(other, resume=True, log=lambda s: None)


def test_early_stopping_and_lr_halving_follow_the_validation_objective(tmp_path):
    # no warm-up: the schedule would hold early stopping back for its epochs
    run = train(
        _run(tmp_path, "d", max_epochs=30, patience=1, lr_patience=1, lr=0.5, kl_warmup_epochs=0, fixed_variance_epochs=0),
        log=lambda s: None,
    )
    record = json.loads((run / CHECKPOINT_JSON).read_text())
    assert record["epochs_done"] < 30  # a huge learning rate stops improving quickly
    # best_epoch is an index: the run stops after `patience` (1) epochs without improvement.
    assert record["epochs_done"] == record["best_epoch"] + 1 + 1
    lrs = [h["lr"] for h in record["history"]]
    assert min(lrs) < 0.5


def test_nothing_in_the_project_unpickles():
    # torch.load only with weights_only=True (tensors, no code): the pythae importer's weights.
    pattern = re.compile(r"torch\.load\((?![^)]*weights_only=True)|import (c?pickle|dill|joblib)|pickle\.loads?\(|weights_only\s*=\s*False|allow_pickle\s*=\s*True")
    offenders = [
        str(p.relative_to(ROOT))
        for folder in ("vaesdk", "training", "export", "cli")
        for p in (ROOT / folder).rglob("*.py")
        if pattern.search(p.read_text())
    ]
    assert offenders == []


def _write_idx(path, array):
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_idx_reader_round_trips_and_refuses_truncation(tmp_path):
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    _write_idx(tmp_path / "a.gz", a)
    np.testing.assert_array_equal(read_idx(tmp_path / "a.gz"), a)
    header = struct.pack(">BBBB", 0, 0, 0x08, 3) + struct.pack(">3I", 2, 3, 4)
    with gzip.open(tmp_path / "short.gz", "wb") as f:
        f.write(header + bytes(5))
    with pytest.raises(InvalidArgumentError, match="truncated"):
        read_idx(tmp_path / "short.gz")
    (tmp_path / "junk.gz").write_bytes(b"not gzip")
    with pytest.raises(InvalidArgumentError):
        read_idx(tmp_path / "junk.gz")


def test_image_folder_dataset_labels_sub_folders(tmp_path, fashion_test):
    for cls, label in (("boots", 9), ("bags", 8)):
        for i, img in enumerate(fashion_test.images[fashion_test.labels == label][:3]):
            save_png(tmp_path / cls / f"{i}.png", img)
    data = load_image_folder(tmp_path, 28, 1)
    assert data.images.shape == (6, 28, 28, 1) and data.class_names == ("bags", "boots")
    assert list(data.labels) == [0, 0, 0, 1, 1, 1]


def test_training_on_an_image_folder(tmp_path, fashion_test):
    for i, img in enumerate(fashion_test.images[:40]):
        save_png(tmp_path / "imgs" / f"{i}.png", np.repeat(img, 3, axis=2))
    config = TrainConfig(
        model=ModelConfig(image_size=16, channels=3, latent_dim=4, widths=(4, 8)),
        dataset="folder", data_dir=str(tmp_path / "imgs"), out_dir=str(tmp_path / "run"), max_epochs=1, batch_size=8,
    )  # fmt: skip
    run = train(config, log=lambda s: None)
    model, _ = load_checkpoint(run)
    assert model.config.channels == 3


def _collapse_prone(tmp_path, name, **schedule):
    """A strong decoder (residual blocks) over a wide latent with a learned variance: without
    the warm-up its posterior collapses within the first epoch on real images."""
    model = ModelConfig(latent_dim=64, widths=(16, 32, 64), res_blocks=1, covariance="diagonal", rank=0, likelihood="discretized")
    config = TrainConfig(model=model, out_dir=str(tmp_path / name), limit=4000, max_epochs=4, batch_size=64, **schedule)
    logs: list[str] = []
    train(config, log=logs.append)
    return json.loads((tmp_path / name / CHECKPOINT_JSON).read_text()), logs


def test_default_schedule_prevents_the_collapse_that_happens_without_it(tmp_path):
    # Without the schedule most latent dimensions die (0 to 14 of 64 stay active in our runs,
    # with a reconstruction error several times higher); min_active_fraction 0.5 makes the
    # detector fire on that, so its message is checked on a real collapse.
    collapsed, logs = _collapse_prone(
        tmp_path, "off", kl_warmup_epochs=0, fixed_variance_epochs=0, collapse_patience=1, min_active_fraction=0.5
    )
    dead = collapsed["history"][-1]["val"]
    assert dead["active_dims"] < 32
    assert collapsed["collapsed"] is True
    assert any(line.startswith(f"posterior collapse: only {dead['active_dims']} of 64 latent dimensions") for line in logs)

    healthy, logs = _collapse_prone(tmp_path, "on", kl_warmup_epochs=2, fixed_variance_epochs=1, min_active_fraction=0.5)
    alive = healthy["history"][-1]["val"]
    assert alive["active_dims"] >= 2 * max(dead["active_dims"], 8)
    assert dead["mse"] > 2 * alive["mse"]
    assert healthy["collapsed"] is False and not any("posterior collapse" in line for line in logs)
    assert healthy["schedule"]["kl_warmup_epochs"] == 2
    # the warm-up reports the true objective: bpd is the -ELBO at weight 1 in every epoch
    assert [h["kl_weight"] for h in healthy["history"]] == [0.5, 1.0, 1.0, 1.0]
