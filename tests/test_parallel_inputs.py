"""Parallel decoding (vaesdk.read_inputs' thread pool) and block-seeded jobs: the same
results for any number of workers and any batch size, in input order, errors in place."""

import threading

import numpy as np
import pytest

import vaesdk
from vaesdk.imaging.inputs import expand_sources, read_items
from vaesdk.jobs.blocks import BLOCK_SIZE
from folders import png_folder


@pytest.fixture(scope="module")
def folder(fashion_test, tmp_path_factory):
    """300 real test images as PNG files, with two unreadable files among them."""
    broken = {"img0100a.png": b"not an image", "img0250a.png": b"\x89PNG\r\n\x1a\n truncated"}
    return png_folder(tmp_path_factory.mktemp("many"), fashion_test.images[:300], broken)


def flatten(batches):
    return [(i.name, None if i.image is None else i.image.tobytes(), None if i.ok else str(i.error)) for b in batches for i in b.items]


def test_results_do_not_depend_on_workers_or_batch_size(folder):
    want = flatten(vaesdk.read_inputs([folder], (28, 28, 1), 300, workers=1))
    assert len(want) == 302 and sum(e is not None for *_, e in want) == 2
    assert [n for n, *_ in want] == sorted(n for n, *_ in want)  # input order kept
    for workers in (2, 3, 8):
        for batch_size in (1, 7, 256):
            batches = list(vaesdk.read_inputs([folder], (28, 28, 1), batch_size, workers=workers))
            assert all(len(b) <= batch_size for b in batches)
            assert flatten(batches) == want, (workers, batch_size)


def test_unreadable_inputs_stay_where_they_were(folder):
    items = list(read_items(expand_sources([folder]), (28, 28, 1), workers=4))
    bad = [i for i, item in enumerate(items) if not item.ok]
    assert [items[i].name for i in bad] == [str(folder / "img0100a.png"), str(folder / "img0250a.png")]
    assert all(isinstance(items[i].error, vaesdk.InvalidImageError) for i in bad)


def test_stopping_early_leaves_no_decoding_threads(folder):
    before = {t.ident for t in threading.enumerate()}
    it = vaesdk.read_inputs([folder], (28, 28, 1), 10, workers=4)
    next(it)
    it.close()  # what a consumer that stops (an exception, a break) does to the generator
    left = [t for t in threading.enumerate() if t.ident not in before and t.name.startswith("vaesdk-read")]
    assert left == []


@pytest.mark.parametrize("workers", [0, -1, 257, 1.5, True, "2"])
def test_bad_worker_counts_are_refused(folder, workers):
    with pytest.raises(vaesdk.InvalidArgumentError, match=r"workers must be (an integer )?in 1\.\.256 \(or None for one per core\)"):
        vaesdk.read_inputs([folder], (28, 28, 1), workers=workers)


@pytest.mark.parametrize("shape", [(float("inf"), 28, 1), (28, float("nan"), 1), (28, 28), "28x28", None])
def test_bad_image_shapes_are_refused(folder, shape):
    with pytest.raises(vaesdk.InvalidArgumentError, match=r"^image_shape must be \(H, W, C\) or a vaesdk.Model, got "):
        next(vaesdk.read_inputs([folder], shape))


def test_score_job_does_not_depend_on_batch_size_or_workers(folder, tiny_vae_bundle):
    want = vaesdk.run_job(vaesdk.load(tiny_vae_bundle, device="cpu"), "score", [folder], k=3, seed=11, workers=1)
    assert len(want) == 300 and len(want.errors) == 2
    for batch_size, workers in ((5, 3), (256, 2), (1024, 1)):
        m = vaesdk.load(tiny_vae_bundle, device="cpu", batch_size=batch_size)
        got = vaesdk.run_job(m, "score", [folder], k=3, seed=11, workers=workers)
        assert got.names == want.names
        for column in ("elbo_bpd", "iw_bpd", "anomaly"):
            assert np.array_equal(got.columns[column], want.columns[column]), (batch_size, workers, column)


def test_bundled_model_scores_do_not_depend_on_batch_size(folder, bundled_model):
    # The bundled model's likelihood is dequantized: its noise has a stream of its own.
    files = sorted(folder.glob("img0*.png"))[:300]
    want = vaesdk.run_job(bundled_model, "score", files, k=2, seed=1)
    small = vaesdk.load(device="cpu", batch_size=7)
    got = vaesdk.run_job(small, "score", files, k=2, seed=1, workers=3)
    for column in ("elbo_bpd", "iw_bpd", "anomaly", "p_value"):
        assert np.array_equal(got.columns[column], want.columns[column]), column


def test_one_block_equals_the_model_call(folder, tiny_vae_bundle, fashion_test):
    m = vaesdk.load(tiny_vae_bundle, device="cpu")
    files = sorted(folder.glob("img00[0-4]?.png"))  # 50 readable images: one block
    got = vaesdk.run_job(m, "score", files, k=4, seed=2)
    want = m.score(fashion_test.images[:50], k=4, seed=2)
    assert np.array_equal(got.columns["iw_bpd"], want.iw_bpd)
    assert np.array_equal(vaesdk.run_job(m, "embed", files).columns["mean"], m.embed(fashion_test.images[:50]))


def test_blocks_draw_different_numbers(folder, tiny_vae_bundle, fashion_test):
    # Two blocks holding the same images must not repeat each other's posterior draws.
    m = vaesdk.load(tiny_vae_bundle, device="cpu")
    first = sorted(folder.glob("img0*.png"))[:BLOCK_SIZE]
    got = vaesdk.run_job(m, "score", first + first, k=1, seed=0).columns["elbo_bpd"]
    assert not np.array_equal(got[: len(first)], got[len(first) :])


def test_a_plain_autoencoder_cannot_score(folder, tiny_ae_bundle):
    with pytest.raises(vaesdk.UnsupportedOperationError, match="plain autoencoder"):
        vaesdk.run_job(vaesdk.load(tiny_ae_bundle, device="cpu"), "score", [folder])


def test_reconstruct_writes_the_same_files_with_any_number_of_workers(folder, tiny_vae_bundle, tmp_path):
    import json

    from typer.testing import CliRunner

    from vaesdk.cli.main import app

    runs = {}
    for workers in ("1", "3"):
        out = tmp_path / workers
        r = CliRunner().invoke(app, ["reconstruct", str(folder), "--out-dir", str(out), "--workers", workers,
                                     "--batch-size", "64", "-m", str(tiny_vae_bundle), "--json"])  # fmt: skip
        assert r.exit_code == 3  # the two unreadable files
        results = json.loads(r.stdout)["results"]
        assert [x["input"] for x in results] == sorted(str(p) for p in folder.glob("img????.png"))
        runs[workers] = {p.name: p.read_bytes() for p in out.iterdir()}
    assert len(runs["1"]) == 300 and runs["1"] == runs["3"]
