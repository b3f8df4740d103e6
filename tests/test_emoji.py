"""The bundled colour model, `emoji` (64x64 RGB): every CLI command runs on it, its samples
are colour, its category priors and directions come from the training folder's sub-folders,
and its anomaly score tells emoji from what is not an emoji."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import vaesdk
from vaesdk.cli.main import app

INPUTS = Path(__file__).resolve().parent / "data" / "emoji-inputs"
CATEGORIES = ("activities", "animals", "flags", "food", "objects", "people", "smileys", "symbols", "travel")


@pytest.fixture(scope="module")
def emoji() -> vaesdk.Model:
    return vaesdk.load("emoji", device="cpu")


def vae(*args) -> object:
    return CliRunner().invoke(app, [*map(str, args), "-m", "emoji", "--device", "cpu"])


def rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        assert im.mode == "RGB", f"{path.name} is {im.mode}"
        return np.asarray(im)


def colourfulness(pixels: np.ndarray) -> float:
    """Mean spread between the RGB channels of each pixel: 0 for a grey image."""
    x = pixels.reshape(-1, 3).astype(np.float64)
    return float((x.max(1) - x.min(1)).mean())


def test_the_emoji_model_is_bundled_beside_fashion_mnist(emoji):
    assert {"emoji", "fashion-mnist"} <= set(vaesdk.list_models())
    assert emoji.image_shape == (64, 64, 3)
    assert emoji.kind == "vae"
    credits = emoji.manifest.data["training"]["dataset"]["credits"]
    assert "Noto Emoji" in credits and "Apache" in credits and "Twemoji" in credits and "CC-BY 4.0" in credits


def test_priors_and_directions_are_the_folder_categories(emoji):
    assert set(CATEGORIES) <= set(emoji.priors)
    assert set(emoji.directions) == set(CATEGORIES)
    assert emoji.default_prior == "mixture"


def test_vae_sample_draws_colour_emoji_from_the_fitted_prior(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = vae("sample", "--n", 16, "--seed", 0, "-o", "s.png")
    assert r.exit_code == 0, r.output
    grid = rgb(tmp_path / "s.png")
    assert grid.shape[0] >= 4 * 64 and grid.shape[1] >= 4 * 64
    # Emoji are mostly saturated colour on black; a grey or collapsed model is not.
    assert colourfulness(grid) > 10


@pytest.mark.parametrize(
    "args, out",
    [
        (["reconstruct", INPUTS / "apple.png", "-o", "r.png"], "r.png"),
        (["edit", INPUTS / "grinning.png", "--direction", "animals", "--delta", 1, "-o", "e.png"], "e.png"),
        (["edit", INPUTS / "grinning.png", "--dim", 0, "--delta", 2, "-o", "d.png"], "d.png"),
        (["interpolate", INPUTS / "dog.png", INPUTS / "rocket.png", "--steps", 5, "-o", "i.png"], "i.png"),
        (["traverse", INPUTS / "grinning.png", "--rows", 2, "--steps", 3, "-o", "t.png"], "t.png"),
        (["sample", "--n", 4, "--prior", "animals", "--sample-pixels", "-o", "p.png"], "p.png"),
    ],
    ids=["reconstruct", "edit-direction", "edit-dim", "interpolate", "traverse", "sample-category-pixels"],
)
def test_image_commands_make_colour_pictures(tmp_path, monkeypatch, args, out):
    monkeypatch.chdir(tmp_path)
    r = vae(*args)
    assert r.exit_code == 0, r.output
    assert colourfulness(rgb(tmp_path / out)) > 5


def test_reconstructions_resemble_their_inputs(emoji):
    real = np.stack([vaesdk.imaging.images.load_image(p, 64, 3) for p in sorted(INPUTS.glob("*.png"))])
    recon = emoji.reconstruct(real)
    mse = np.mean((recon.astype(np.float64) - real) ** 2) / 255**2
    shuffled = np.mean((recon.astype(np.float64) - np.roll(real, 1, axis=0)) ** 2) / 255**2
    assert mse < shuffled / 2, (mse, shuffled)


def test_embed_info_and_score_run_on_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = vae("embed", INPUTS, "-o", "z.npy")
    assert r.exit_code == 0, r.output
    assert np.load(tmp_path / "z.npy").shape == (4, vaesdk.load("emoji").latent_dim)
    r = vae("info", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["image"]["channels"] == 3
    r = vae("score", INPUTS, "--json")
    assert r.exit_code == 0, r.output
    scores = json.loads(r.stdout)["scores"]
    assert len(scores) == 4 and all(s["p_value"] is not None for s in scores)


def test_anomaly_score_is_calibrated_and_measured_against_what_is_not_an_emoji(emoji):
    # The calibration holds on held-out emoji (about 5% and 1% below p = 0.05 and 0.01; the
    # held-out emoji are the calibration's own images, so each is scored without itself and
    # given a cross-fitted p-value), and the manifest carries the AUROC against garments,
    # digits, noise and textures; the figures are in the docs (docs/anomaly.md).
    anomaly = emoji.manifest.data["metrics"]["anomaly"]
    assert anomaly["score"] == emoji.manifest.data["anomaly"]["score"] == vaesdk.maths.anomaly.SCORE
    assert "cross-fitted" in anomaly["test_scores"]
    assert 0.02 <= anomaly["test_p_below_0.05"] <= 0.1 and anomaly["test_p_below_0.01"] <= 0.03
    assert {"fashion-mnist", "mnist", "uniform-noise", "textures"} <= set(anomaly["ood"])
    assert all(0 <= m["auroc"] <= 1 and m["images"] > 0 for m in anomaly["ood"].values())


def test_noise_blank_images_and_grey_garments_are_unusual_emoji(emoji):
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (200, 64, 64, 3), dtype=np.uint8)
    blank = np.stack([np.full((64, 64, 3), v, np.uint8) for v in (0, 128, 255)])
    # Garments 500 to 699 of the test split: the images 0 to 499 chose the score's features.
    garments = vaesdk.imaging.images.as_batch(vaesdk.evaluation.datasets.load_fashion_mnist(split="test").images[500:700], 64, 3)
    assert np.mean(emoji.score(noise, seed=0).p_value < 0.01) >= 0.95
    assert (emoji.score(blank, seed=0).p_value < 0.01).all()
    # The score's features are the decoder's variance, not its pixel part (a colour model):
    # at least 90% of garments fall below 0.01, nearly all below 0.05.
    assert emoji.manifest.data["anomaly"]["calibration"]["density"]["features"][0] == "decoder_logvar"
    p = emoji.score(garments, seed=0).p_value
    assert np.mean(p < 0.01) >= 0.9 and np.mean(p < 0.05) >= 0.95
