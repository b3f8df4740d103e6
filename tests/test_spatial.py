"""Models with spatial latents (vaesdk.runtime.spatial): the tiny latent-diffusion autoencoders
of tests/data (tiny-kl: an AutoencoderKL, f = 8, with a float16 decoder; tiny-taesd: an
AutoencoderTiny, f = 4), run by the torch-free runtime. Their agreement with diffusers itself
is tests/test_import_diffusers.py's."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import vaesdk
from vaesdk.cli.main import app
from vaesdk.maths.tiles import border_mask, plan, run_tiled, starts
from vaesdk.runtime.spatial import FALLBACK, SpatialModel

DATA = Path(__file__).resolve().parent / "data"
KL, TAESD = DATA / "tiny-kl", DATA / "tiny-taesd"


@pytest.fixture(scope="module")
def kl() -> SpatialModel:
    return vaesdk.load(KL)


@pytest.fixture(scope="module")
def taesd() -> SpatialModel:
    return vaesdk.load(TAESD)


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth colour image with a little noise: [h, w, 3] uint8."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 1, w)[None, :, None] * np.linspace(0.3, 1, h)[:, None, None] * [255, 160, 60]
    return np.clip(ramp + rng.integers(0, 40, (h, w, 3)), 0, 255).astype(np.uint8)


# ---- loading and description ---------------------------------------------------------------


def test_a_spatial_bundle_loads_as_a_spatial_model_that_describes_its_geometry(kl, taesd):
    assert isinstance(kl, SpatialModel) and isinstance(taesd, SpatialModel)
    assert (kl.kind, taesd.kind) == ("vae", "ae")
    g = kl.geometry
    assert (g.spatial, g.fixed_size, g.factor, g.multiple, g.latent_channels, g.pixel_range) == (True, False, 8, 8, 4, (-1.0, 1.0))
    described = kl.describe()
    assert described["geometry"]["latent"]["factor"] == 8 and described["latent_dim"] is None
    assert "any size (multiples of 8)" in repr(kl)
    assert kl.feature_dim == 4 and kl.priors == [] and kl.default_prior is None


# ---- sizes ---------------------------------------------------------------------------------


def test_images_keep_their_own_size_and_mixed_sizes_come_back_in_order(kl):
    wide, tall = _image(48, 80), _image(72, 40, seed=1)
    one = kl.reconstruct(wide)
    assert one.shape == (1, 48, 80, 3) and one.dtype == np.uint8
    both = kl.reconstruct([wide, tall, wide])
    assert isinstance(both, list) and [b.shape for b in both] == [(48, 80, 3), (72, 40, 3), (48, 80, 3)]
    # Grouping by size changes nothing: each equals its own call.
    np.testing.assert_array_equal(both[0], one[0])
    np.testing.assert_array_equal(both[1], kl.reconstruct(tall)[0])
    post = kl.encode(wide)
    assert post.mean.shape == post.logvar.shape == (1, 4, 6, 10)
    assert kl.decode(post.mean).shape == (1, 48, 80, 3)
    assert kl.decode(post.mean[0]).shape == (1, 48, 80, 3)  # one latent without its batch axis


def test_a_size_that_is_not_a_multiple_is_refused_naming_the_size_and_the_fix(kl):
    with pytest.raises(vaesdk.InvalidArgumentError, match=r"image size 50x80 .*multiples of 8.*crop or pad to 48x80"):
        kl.reconstruct(_image(50, 80))
    with pytest.raises(vaesdk.InvalidArgumentError, match=r"z has shape \[1, 3, 4, 4\]; this model's latents are \[N, 4, h, w\]"):
        kl.decode(np.zeros((1, 3, 4, 4), np.float32))
    with pytest.raises(vaesdk.InvalidArgumentError, match="NaN or infinite"):
        kl.decode(np.full((1, 4, 2, 2), np.nan, np.float32))


# ---- tiles ---------------------------------------------------------------------------------


def test_tiles_cover_the_axis_and_blend_a_local_operation_exactly():
    assert starts(100, 32, 8) == [0, 24, 48, 68] and starts(20, 32, 8) == [0]
    tiles = plan(100, 70, 32, 8)
    assert {(t.y, t.x) for t in tiles} == {(y, x) for y in starts(100, 32, 8) for x in starts(70, 32, 8)}
    x = np.random.default_rng(0).random((1, 3, 100, 70), dtype=np.float32)
    # An operation with no reach across pixels comes back exactly, whatever the tiles.
    np.testing.assert_allclose(run_tiled(x, lambda t: [2 * t], 32, 8)[0], 2 * x, rtol=1e-6)
    up = run_tiled(x, lambda t: [np.repeat(np.repeat(t, 4, 2), 4, 3)], 32, 8, 4, 1)[0]
    np.testing.assert_allclose(up, np.repeat(np.repeat(x, 4, 2), 4, 3), rtol=1e-6)
    with pytest.raises(ValueError, match="never advances"):
        starts(100, 8, 8)


def _seams(model: SpatialModel, h: int, w: int, tile: int) -> tuple[float, float, float]:
    """(mean difference within 4 pixels of tile borders, elsewhere, max), tiled against untiled
    decodes of one latent, in 0..255 units."""
    f = model.geometry.factor
    z = np.random.default_rng(0).standard_normal((1, 4, h // f, w // f)).astype(np.float32)
    a = model.decode(z, tile=False)[0].astype(np.int16)
    b = model.decode(z, tile=True, tile_size=tile)[0].astype(np.int16)
    d = np.abs(a - b).mean(-1)
    mask = border_mask(h // f, w // f, tile // f, tile // f // 4, f, 4)
    return float(d[mask].mean()), float(d[~mask].mean()), float(d.max())


def test_tiled_decodes_equal_untiled_ones_within_the_stated_bounds(kl, taesd):
    # TAESD's layers reach a bounded neighbourhood: with overlapping tiles its output is the
    # untiled one but for rounding near the borders (docs/spatial-latents.md states the bound).
    border, elsewhere, worst = _seams(taesd, 512, 768, 256)
    assert worst <= 2 and elsewhere < 0.05 and border < 0.25
    # An AutoencoderKL normalizes over the whole image and its middle block attends to every
    # latent pixel, so tiles differ from the untiled image everywhere, not at the borders: the
    # blend leaves no seam (the borders differ no more than elsewhere).
    border, elsewhere, worst = _seams(kl, 512, 768, 256)
    assert border <= 1.1 * elsewhere and elsewhere < 12


def test_automatic_tiling_starts_above_a_megapixel_and_the_options_are_checked(kl):
    assert kl._tiling(1024, 1024, None, None) is None and kl._tiling(1024, 1032, None, None) == 512
    assert kl._tiling(2048, 2048, False, None) is None and kl._tiling(256, 256, True, 128) == 128
    with pytest.raises(vaesdk.InvalidArgumentError, match="tile_size 100 must be a multiple of 8 and at least 32"):
        kl.decode(np.zeros((1, 4, 4, 4), np.float32), tile=True, tile_size=100)
    with pytest.raises(vaesdk.InvalidArgumentError, match="tile must be"):
        kl.decode(np.zeros((1, 4, 4, 4), np.float32), tile="yes")


# ---- precision -----------------------------------------------------------------------------


def test_the_float16_decoder_runs_when_asked_and_says_so(kl, taesd):
    z = np.random.default_rng(1).standard_normal((2, 4, 5, 7)).astype(np.float32)
    half, full = kl.decode_with_info(z, precision="fp16"), kl.decode_with_info(z, precision="fp32")
    assert half.precision == ["fp16", "fp16"] and full.precision == ["fp32", "fp32"]
    assert np.abs(half.images.astype(int) - full.images.astype(int)).max() <= 8
    assert kl.decode_with_info(z).precision == ["fp32", "fp32"]  # automatic: float16 on CUDA only
    with pytest.raises(vaesdk.UnsupportedOperationError, match="'tiny-taesd' has no float16 decoder; use precision 'fp32'"):
        taesd.decode(z, precision="fp16")
    with pytest.raises(vaesdk.InvalidArgumentError, match="precision must be 'fp32', 'fp16' or None"):
        kl.decode(z, precision="bf16")


def test_a_float16_decode_that_overflows_is_computed_again_in_float32(tmp_path):
    bundle = tmp_path / "kl"
    shutil.copytree(KL, bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    entry = manifest["variants"]["fp16"]["decoder"]
    blob = (DATA / "fp16-overflow-decoder.onnx").read_bytes()  # infinite output on every input
    (bundle / entry["file"]).write_bytes(blob)
    entry.update(sha256=hashlib.sha256(blob).hexdigest(), bytes=len(blob))
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    m = vaesdk.load(bundle)
    z = np.random.default_rng(2).standard_normal((3, 4, 4, 6)).astype(np.float32)
    guarded = m.decode_with_info(z, precision="fp16")
    assert guarded.precision == [FALLBACK] * 3
    np.testing.assert_array_equal(guarded.images, m.decode(z, precision="fp32"))  # not a black image
    tiled = m.decode_with_info(z[:1], precision="fp16", tile=True, tile_size=32)
    assert tiled.precision == [FALLBACK]
    np.testing.assert_array_equal(tiled.images, m.decode(z[:1], precision="fp32", tile=True, tile_size=32))


# ---- what each operation means ---------------------------------------------------------------


def test_edits_move_every_latent_pixel_by_a_per_channel_offset(kl):
    z = kl.encode(_image(32, 48)).mean
    v = np.array([0.5, -1.0, 0.0, 2.0], np.float32)
    moved = kl.edit_latents(z, direction=v, delta=0.5)
    np.testing.assert_allclose(moved - z, np.broadcast_to(0.5 * v[None, :, None, None], z.shape), atol=1e-6)
    full = np.random.default_rng(0).standard_normal(z.shape[1:]).astype(np.float32)
    np.testing.assert_allclose(kl.edit_latents(z, direction=full, delta=1.0) - z, full[None], atol=1e-6)
    np.testing.assert_array_equal(kl.edit(_image(32, 48), direction=v, delta=0.5), kl.decode(moved))
    with pytest.raises(vaesdk.InvalidArgumentError, match=r"does not fit latents of shape \[4, 4, 6\]"):
        kl.edit_latents(z, direction=np.zeros((4, 5, 5), np.float32))
    with pytest.raises(vaesdk.UnsupportedOperationError, match="one channel of one latent pixel, not a factor of variation"):
        kl.edit(_image(32, 48), dim=3)


def test_a_direction_from_folders_is_a_per_channel_difference_stored_in_the_bundle(tmp_path):
    bundle = tmp_path / "kl"
    shutil.copytree(KL, bundle)
    m = vaesdk.load(bundle)
    dark, light = [_image(32, 32, s) // 4 for s in range(3)], [_image(40, 24, s) for s in range(3)]
    vector = m.add_direction("lighter", dark, light)
    assert vector.shape == (4,)
    np.testing.assert_allclose(vector, m.embed(light).mean(0) - m.embed(dark).mean(0), atol=1e-6)
    again = vaesdk.load(bundle)
    np.testing.assert_allclose(again.directions["lighter"], vector, atol=1e-6)
    assert again.edit(_image(32, 32), direction="lighter").shape == (1, 32, 32, 3)


def test_embeddings_are_per_channel_means_and_comparable_across_sizes(kl):
    images = [_image(32, 48), _image(64, 40, seed=3)]
    pooled = kl.embed(images)
    assert pooled.shape == (2, 4)
    np.testing.assert_allclose(pooled[1], kl.encode(images[1]).mean[0].mean(axis=(1, 2)), rtol=1e-5)
    full = kl.embed(images[0], pooled=False)
    assert full.shape == (1, 4, 4, 6)


def test_interpolation_runs_between_the_two_images_latents(kl):
    a, b = _image(32, 48), _image(32, 48, seed=5)[::-1].copy()
    frames = kl.interpolate(a, b, steps=4, method="linear")
    assert frames.shape == (4, 32, 48, 3)
    np.testing.assert_array_equal(frames[0], kl.reconstruct(a)[0])
    np.testing.assert_array_equal(frames[-1], kl.reconstruct(b)[0])
    with pytest.raises(vaesdk.InvalidArgumentError, match="interpolate latents of one shape"):
        kl.interpolate(a, _image(40, 48))


def test_latent_diffusion_units_apply_the_scaling_and_shift(kl):
    z = np.random.default_rng(0).standard_normal((1, 4, 3, 5)).astype(np.float32)
    np.testing.assert_allclose(kl.to_diffusion(z), z * 0.18215, rtol=1e-6)
    np.testing.assert_allclose(kl.from_diffusion(kl.to_diffusion(z)), z, rtol=1e-5)


def test_what_spatial_latents_do_not_mean_is_refused_in_one_line(kl, taesd):
    refusals = {
        "sample": (lambda: kl.sample(4), "no prior fitted for one image size, and N(0, I) is not its prior"),
        "sample_latents": (lambda: kl.sample_latents(4), "N(0, I) is not its prior"),
        "traverse": (lambda: kl.traverse(_image(32, 32)), "not a factor of variation"),
        "score": (lambda: kl.score(_image(32, 32)), "deterministic decoder (no likelihood)"),
        "pixels": (lambda: kl.prepare("reconstruct", sample_pixels=True), "there are no pixels to draw"),
        "ae draws": (lambda: taesd.prepare("reconstruct", sample_latent=True), "plain autoencoder"),
    }
    for what, (call, message) in refusals.items():
        with pytest.raises(vaesdk.UnsupportedOperationError) as e:
            call()
        assert message in str(e.value) and "\n" not in str(e.value), what


def test_draws_from_the_posterior_follow_the_seed(kl):
    image = _image(32, 32)
    a = kl.reconstruct(image, sample_latent=True, seed=3)
    np.testing.assert_array_equal(a, kl.reconstruct(image, sample_latent=True, seed=3))
    assert not np.array_equal(a, kl.reconstruct(image, sample_latent=True, seed=4))


# ---- front ends ----------------------------------------------------------------------------


def test_the_command_line_reconstructs_at_each_images_own_size(tmp_path):
    Image.fromarray(_image(48, 80)).save(tmp_path / "wide.png")
    Image.fromarray(_image(50, 80)).save(tmp_path / "odd.png")
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["reconstruct", str(tmp_path / "wide.png"), str(tmp_path / "odd.png"), "-m", str(KL), "--out-dir", str(out), "--tile-size", "32"])
    assert result.exit_code == 3, result.output  # one input failed
    assert Image.open(out / "wide.recon.png").size == (80, 48)
    assert "odd.png: image size 50x80 (HxW)" in result.output and "crop or pad to 48x80" in result.output
    flat = CliRunner().invoke(app, ["reconstruct", str(tmp_path / "wide.png"), "--tile", "--out-dir", str(out)])
    assert flat.exit_code == 2 and "tile applies to models with spatial latents; 'fashion-mnist' has flat latents" in flat.output
    info = CliRunner().invoke(app, ["info", "-m", str(KL)])
    assert "any size, sides multiples of 8" in info.output and "[4, H/8, W/8]" in info.output
    embed = CliRunner().invoke(app, ["embed", str(tmp_path / "wide.png"), "-m", str(KL)])
    assert embed.exit_code == 0 and embed.output.splitlines()[0] == "file,mean_0,mean_1,mean_2,mean_3"
    for command in (["sample", "-m", str(KL)], ["score", str(tmp_path / "wide.png"), "-m", str(KL)]):
        refused = CliRunner().invoke(app, command)
        assert refused.exit_code == 2 and len(refused.output.strip().splitlines()) == 1, refused.output


def test_a_2048_by_2048_reconstruct_runs_in_bounded_memory(tmp_path):
    from memory import UNMEASURABLE, run_child

    def peak(side: int) -> float:
        Image.fromarray(np.tile(_image(256, 256), (side // 256, side // 256, 1))).save(tmp_path / f"{side}.png")
        command = [sys.executable, "-m", "vaesdk", "reconstruct", str(tmp_path / f"{side}.png"), "-m", str(KL), "--out", str(tmp_path / f"r{side}.png"), "--tile"]
        code, mib = run_child(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=600)
        assert code == 0 and Image.open(tmp_path / f"r{side}.png").size == (side, side)
        return mib

    one_tile, large = peak(512), peak(2048)
    if one_tile == 0 or large == 0:
        pytest.skip(UNMEASURABLE)
    # The network's memory is one 512x512 tile's, whatever the image: 2048x2048 adds only the
    # arrays of the image's own size (its pixels, the blend's sums, the output and its PNG), under
    # 56 bytes a pixel (docs/spatial-latents.md). Untiled, the middle block's attention alone
    # would ask for (256*256)^2 float32 numbers: 16 GiB.
    assert large - one_tile < 56 * 2048 * 2048 / 2**20, (one_tile, large)
