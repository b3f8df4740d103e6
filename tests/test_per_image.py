"""vaesdk.map_images: one image operation over many inputs, the call the CLI and the server share."""

import io

import numpy as np
import pytest
from PIL import Image

import vaesdk
from folders import png_folder


@pytest.fixture(scope="module")
def folder(fashion_test, tmp_path_factory):
    """40 real test images as PNG files, with one unreadable file among them."""
    return png_folder(tmp_path_factory.mktemp("per-image"), fashion_test.images[:40], {"img0010a.png": b"not an image"})


def outcome(results):
    return [(r.name, None if r.output is None else r.output.tobytes(), None if r.ok else str(r.error)) for r in results]


def test_results_keep_input_order_with_errors_in_place(bundled_model, folder):
    results = list(vaesdk.map_images(bundled_model, "reconstruct", [folder], workers=1))
    assert len(results) == 41
    bad = [i for i, r in enumerate(results) if not r.ok]
    assert [results[i].name for i in bad] == [str(folder / "img0010a.png")]
    assert isinstance(results[bad[0]].error, vaesdk.InvalidImageError)
    good = [r for r in results if r.ok]
    images = np.stack([r.image for r in good])
    assert np.array_equal(np.stack([r.output for r in good]), bundled_model.reconstruct(images))


@pytest.mark.parametrize("operation,options", [
    ("reconstruct", {"sample_latent": True, "sample_pixels": True}),
    ("edit", {"dim": 3, "delta": 1.5, "sample_latent": True}),
])  # fmt: skip
def test_random_results_do_not_depend_on_batch_size_or_workers(bundled_model, folder, operation, options):
    want = outcome(vaesdk.map_images(bundled_model, operation, [folder], seed=7, batch_size=40, workers=1, **options))
    for batch_size, workers in ((1, 1), (7, 3), (256, 2)):
        got = outcome(vaesdk.map_images(bundled_model, operation, [folder], seed=7, batch_size=batch_size, workers=workers, **options))
        assert got == want, (batch_size, workers)
    # The same draws as one Model call over the readable images with the same seed.
    images = np.stack([r.image for r in vaesdk.map_images(bundled_model, operation, [folder], seed=7, **options) if r.ok])
    direct = getattr(bundled_model, operation)(images, seed=7, **options)
    assert [o for _, o, e in want if e is None] == [row.tobytes() for row in direct]
    other = outcome(vaesdk.map_images(bundled_model, operation, [folder], seed=8, batch_size=40, workers=1, **options))
    assert other != want


@pytest.mark.parametrize("operation,options,message", [
    ("decode", {}, "operation must be one of reconstruct, edit, got 'decode'"),
    ("edit", {"dim": 10_000}, "dim"),
    ("edit", {"dim": 1, "delta": float("nan")}, "delta must be finite"),
    ("reconstruct", {"sample_latent": "yes"}, "sample_latent"),
    ("reconstruct", {"seed": -1}, "seed"),
])  # fmt: skip
def test_bad_arguments_raise_at_the_call_before_any_input_is_read(bundled_model, operation, options, message):
    class Unreadable:
        def __iter__(self):
            raise AssertionError("inputs were read before the arguments were checked")

    with pytest.raises(vaesdk.InvalidArgumentError, match=message):
        vaesdk.map_images(bundled_model, operation, Unreadable(), **options)


def test_a_lower_pixel_limit_refuses_only_the_large_inputs(bundled_model):
    def png(size):
        out = io.BytesIO()
        Image.new("L", (size, size), 128).save(out, "PNG")
        return out.getvalue()

    results = list(vaesdk.map_images(bundled_model, "reconstruct", [("small", png(28)), ("large", png(64))], max_pixels=1000, workers=1))
    assert [r.ok for r in results] == [True, False]
    assert str(results[1].error) == "large is 64x64 pixels; the limit is 1000 pixels in all"
    with pytest.raises(vaesdk.InvalidArgumentError, match=r"max_pixels must be in 1\.\.40000000"):
        vaesdk.map_images(bundled_model, "reconstruct", [png(28)], max_pixels=0)


def test_sample_returns_the_latents_it_decoded(bundled_model):
    images, z = bundled_model.sample(20, seed=3, return_latents=True)
    assert np.array_equal(images, bundled_model.sample(20, seed=3))
    assert z.shape == (20, bundled_model.latent_dim) and z.dtype == np.float32
    assert np.array_equal(bundled_model.decode(z), images)
    truncated, zt = bundled_model.sample(5, seed=3, truncation=0.5, prior="standard", return_latents=True)
    assert np.abs(zt).max() <= 0.5 * 1.0001 and np.array_equal(bundled_model.decode(zt), truncated)
    with pytest.raises(vaesdk.InvalidArgumentError, match="return_latents must be True or False"):
        bundled_model.sample(2, return_latents="yes")
