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
    mix = bundled_model.spec.prior_set.mixtures["mixture"]
    mean = mix.weights @ mix.means
    second = np.einsum("k,kij,klj->il", mix.weights, mix.cholesky, mix.cholesky) + np.einsum("k,ki,kl->il", mix.weights, mix.means, mix.means)
    var = np.diag(second) - mean**2
    assert np.abs(z.mean(0) - mean).max() < 5 * np.sqrt(var.max() / n)
    # The variance of a sample variance is (m4 - var^2) / n; a mixture's fourth moment is at most
    # a few times 3 var^2, so 0.25 relative is over 5 sigma at n = 4000, and a draw with the
    # covariance instead of its Cholesky factor is far outside it.
    np.testing.assert_allclose(z.var(0), var, rtol=0.25)
