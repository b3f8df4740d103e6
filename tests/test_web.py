"""The browser page in headless Chromium: its decode of given latents matches the Python SDK
within one grey level, served by `vae serve` and as plain static files next to a bundle.

Needs Debian's chromium and `npm ci` in web/ (scripts/test installs both)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from webserver import running_app, static_files

pytestmark = pytest.mark.web

ROOT = Path(__file__).resolve().parents[1]
WEB = ROOT / "web"
PAGE_FILES = ("index.html", "page.js", "page.css", "vae.js")


@pytest.fixture(scope="module")
def browser_ready() -> None:
    missing = [what for what, ok in (
        ("Chromium (/usr/bin/chromium; Debian package chromium)", Path("/usr/bin/chromium").exists() or shutil.which("chromium")),
        ("node", shutil.which("node")),
        ("web/node_modules (run `npm ci` in web/)", (WEB / "node_modules" / "playwright-core").is_dir()),
        ("web/vendor (run `npm ci` in web/)", (WEB / "vendor" / "ort.wasm.min.js").is_file()),
    ) if not ok]  # fmt: skip
    assert not missing, f"the browser test needs: {', '.join(missing)}; ./scripts/test installs them"


def run_page(url: str, latents: np.ndarray, tmp_path: Path, screenshot: Path | None = None, draws: int = 0) -> dict:
    z_file, out_file = tmp_path / "z.json", tmp_path / "out.json"
    z_file.write_text(json.dumps(latents.tolist()))
    args = ["node", str(WEB / "test" / "page.mjs"), url, str(z_file), str(out_file)] + ([str(screenshot)] if screenshot else [])
    env = {**os.environ, "DRAWS": str(draws)}
    done = subprocess.run(args, capture_output=True, text=True, timeout=90, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(out_file.read_text())


def pixels_of(result: dict) -> np.ndarray:
    shape = (result["n"], result["height"], result["width"], result["channels"])
    return np.asarray(result["pixels"], np.int16).reshape(shape)


def test_page_served_by_vae_serve_decodes_like_the_sdk(browser_ready, bundled_model, tmp_path):
    from vaesdk.serve import create_app

    z = np.random.default_rng(7).standard_normal((6, bundled_model.latent_dim)).astype(np.float32)
    z[5] *= 3.0  # far from the prior's bulk too
    shot = tmp_path / "page.png"
    with running_app(create_app([bundled_model])) as base:
        result = run_page(f"{base}/?prior=aggregate", z, tmp_path, shot)
    assert result["errors"] == [] and result["status"].startswith("ready"), result["status"]
    diff = np.abs(pixels_of(result) - bundled_model.decode(z).astype(np.int16))
    assert diff.max() <= 1, f"page and SDK differ by up to {diff.max()} grey levels"
    with Image.open(shot) as im:
        assert im.size == (1000, 580)
        assert len(np.unique(np.asarray(im.convert("L")))) > 16  # the page drew images, not a blank error page


def test_page_as_static_files_next_to_a_bundle(browser_ready, tiny_vae_bundle, tmp_path):
    import vaesdk

    site = tmp_path / "site"
    shutil.copytree(tiny_vae_bundle, site)
    for name in PAGE_FILES:
        shutil.copy(WEB / name, site / name)
    shutil.copytree(WEB / "vendor", site / "vendor")
    model = vaesdk.load(tiny_vae_bundle, device="cpu")
    z = np.random.default_rng(3).standard_normal((3, model.latent_dim)).astype(np.float32)
    with static_files(site) as base:
        result = run_page(f"{base}/index.html", z, tmp_path)
    assert result["errors"] == [] and result["status"].startswith("ready"), result["status"]
    assert np.abs(pixels_of(result) - model.decode(z).astype(np.int16)).max() <= 1
    assert result["visible"] == {"#sample": True, "#grid": True, "#sliders": True, "#size-controls": False}


def test_page_draws_from_the_bundles_mixture_prior(browser_ready, bundled_model, tmp_path):
    """The page reads the bundle's .npz mixture and samples it by default, as the SDK does:
    the draws' mean and per-dimension variance match the mixture's (5-sigma bounds)."""
    from vaesdk.serve import create_app

    n = 4000
    with running_app(create_app([bundled_model])) as base:
        result = run_page(f"{base}/", np.zeros((1, bundled_model.latent_dim), np.float32), tmp_path, draws=n)
    assert result["errors"] == [] and result["status"].startswith("ready"), result["status"]
    assert result["priors"] == bundled_model.priors and result["defaultPrior"] == bundled_model.default_prior == "mixture"
    z = np.asarray(result["draws"], np.float64).reshape(n, bundled_model.latent_dim)
    mix = bundled_model.spec.prior_set.fitted["mixture"]
    mean = mix.weights @ mix.means
    second = np.einsum("k,kij,klj->il", mix.weights, mix.cholesky, mix.cholesky) + np.einsum("k,ki,kl->il", mix.weights, mix.means, mix.means)
    var = np.diag(second) - mean**2
    assert np.abs(z.mean(0) - mean).max() < 5 * np.sqrt(var.max() / n)
    # The variance of a sample variance is (m4 - var^2) / n; a mixture's fourth moment is at most
    # a few times 3 var^2, so 0.25 relative is over 5 sigma at n = 4000, and a draw with the
    # covariance instead of its Cholesky factor is far outside it.
    np.testing.assert_allclose(z.var(0), var, rtol=0.25)


def test_page_of_a_spatial_bundle_decodes_and_reconstructs_at_a_chosen_size(browser_ready, tmp_path):
    """A bundle with spatial latents (free size, range [-1, 1]): the page decodes given latents
    at a non-square size and reconstructs an image at its own size like the SDK, reconstructs a
    picked file in its view, refuses sampling and a size the model does not take."""
    import vaesdk

    bundle = ROOT / "tests" / "data" / "tiny-kl"
    site = tmp_path / "site"
    shutil.copytree(bundle, site)
    for name in PAGE_FILES:
        shutil.copy(WEB / name, site / name)
    shutil.copytree(WEB / "vendor", site / "vendor")
    model = vaesdk.load(bundle, device="cpu")
    g = model.geometry
    f, m = g.factor, g.multiple
    rng = np.random.default_rng(5)
    k = m // f  # latent pixels per step of the image's sides
    z = rng.standard_normal((2, g.latent_channels, 5 * k, 9 * k)).astype(np.float32)
    image = rng.integers(0, 256, (6 * m, 10 * m, g.channels), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "image.png")
    inputs = {"z": z.ravel().tolist(), "height": 5 * m, "width": 9 * m, "pixels": image.ravel().tolist(),
              "image_height": 6 * m, "image_width": 10 * m, "tiled_height": 256 + 8 * m, "bad_height": 6 * m + 1}  # fmt: skip
    (tmp_path / "input.json").write_text(json.dumps(inputs))
    args = [str(tmp_path / n) for n in ("input.json", "image.png", "out.json", "spatial.png")]
    with static_files(site) as base:
        done = subprocess.run(["node", str(WEB / "test" / "spatial.mjs"), f"{base}/index.html", *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "out.json").read_text())
    assert result["errors"] == [] and result["readyStatus"].startswith("ready"), result["readyStatus"]
    assert result["visible"] == {"#sample": False, "#grid": False, "#sliders": False, "#prior": False, "#size-controls": True}
    decoded = np.asarray(result["decoded"]["pixels"], np.int16).reshape(2, 5 * m, 9 * m, g.channels)
    assert (result["decoded"]["height"], result["decoded"]["width"]) == (5 * m, 9 * m)
    assert np.abs(decoded - model.decode(z, tile=False).astype(np.int16)).max() <= 1
    rebuilt = np.asarray(result["rebuilt"]["pixels"], np.int16).reshape(1, 6 * m, 10 * m, g.channels)
    want = model.reconstruct(image[None], tile=False).astype(np.int16)
    assert np.abs(rebuilt - want).max() <= 2 and np.mean(rebuilt != want) < 0.01
    assert result["sampled"].startswith("OperationError: 'tiny-kl' has spatial latents and no prior")
    # The picked file, reconstructed at its own size and shown beside itself.
    assert result["fileStatus"] == f"image.png reconstructed at {6 * m}x{10 * m}"
    assert result["sizeInputs"] == [str(6 * m), str(10 * m)]
    assert result["shown"][0] == result["shown"][1] and result["shown"][1][0] * 10 == result["shown"][1][1] * 6
    # Noise decoded in the page's tiles (256 pixels a side for this model) at a size beyond one tile.
    assert result["tileSide"] == "256" and result["tiledStatus"] == f"decoded noise at {256 + 8 * m}x{10 * m}"
    assert result["badSizeStatus"].startswith(f"error: image size {6 * m + 1}x{10 * m} (HxW): this model takes sides that are multiples of {m}")
