"""The documented promises (docs/) that no other module tests: the debug switch, every documented exit
code, the latent bound and the sample caps at their boundaries, score's independence of the
batch size, concurrent `add_direction`, and bounded memory for large batches."""

from __future__ import annotations

import pytest

# Needs onnx (the train extra) for its crafted graphs: marked, and skipped at collection where it is absent.
pytestmark = pytest.mark.train
pytest.importorskip("onnx")

import json
import os
import struct
import subprocess
import sys
import textwrap
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import onnxruntime
from crafted import LATENT, PIXELS, affine_decoder, affine_encoder, bundle_with, make_model, vi
from onnx import helper, numpy_helper
from PIL import Image
from typer.testing import CliRunner

import vaesdk
from vaesdk.cli.main import app
from vaesdk.base.errors import InferenceError, InvalidArgumentError
from vaesdk.maths.latent import MAX_ABS_LATENT, check_latents
from vaesdk.runtime.arguments import MAX_SAMPLES, MAX_STREAM_SAMPLES

runner = CliRunner()


def vae_process(*args: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """`vae ARGS` as a user runs it: a fresh interpreter, real stderr."""
    return subprocess.run(
        [sys.executable, "-m", "vaesdk.cli.main", *map(str, args)],
        capture_output=True, text=True, env={**os.environ, **(env or {})}, cwd=cwd, timeout=120,
    )  # fmt: skip


@pytest.fixture(scope="module")
def affine_bundle(tiny_vae_bundle, tmp_path_factory) -> Path:
    """A bundle with affine Gaussian graphs: as fast as a model can be, for the big batches."""
    r = np.random.default_rng(0)
    return bundle_with(
        tiny_vae_bundle,
        tmp_path_factory.mktemp("affine") / "affine",
        encoder=affine_encoder(r.normal(0, 0.1, (PIXELS, LATENT)), np.zeros(LATENT), np.full(LATENT, -2.0)),
        decoder=affine_decoder(r.normal(0, 0.1, (LATENT, PIXELS)), np.full(PIXELS, 0.5), np.full(PIXELS, -6.0)),
    )


# ---- errors: the debug switch and the exit codes ----------------------------------------------


@pytest.mark.parametrize(
    "how", [["--debug"], "VAESDK_DEBUG=1", "VAESDK_DEBUG=yes"], ids=["--debug", "VAESDK_DEBUG=1", "VAESDK_DEBUG=yes"]
)
def test_debug_switch_shows_the_traceback_instead_of_one_line(how, tiny_vae_bundle):
    args = ["sample", "--n", "0", "-m", tiny_vae_bundle]
    env = dict([how.split("=")]) if isinstance(how, str) else {}
    r = vae_process(*(how if isinstance(how, list) else []), *args, env=env)
    assert r.returncode != 0
    assert "Traceback (most recent call last)" in r.stderr and "InvalidArgumentError: --n must be at least 1" in r.stderr


@pytest.mark.parametrize("env", [{}, {"VAESDK_DEBUG": "0"}, {"VAESDK_DEBUG": ""}], ids=["unset", "0", "empty"])
def test_without_the_debug_switch_an_error_is_one_line(env, tiny_vae_bundle):
    r = vae_process("sample", "--n", "0", "-m", tiny_vae_bundle, env={"VAESDK_DEBUG": "", **env})
    assert r.returncode == 2
    assert r.stderr == "vae: error: --n must be at least 1, got 0\n"


def test_exit_code_5_when_the_requested_device_is_unavailable(tiny_vae_bundle):
    # A GPU index far beyond any machine's fails with the GPU build and the CPU build alike.
    r = runner.invoke(app, ["info", "--device", "cuda:999", "-m", str(tiny_vae_bundle)])
    assert r.exit_code == 5, r.output
    assert r.output.startswith("vae: error: device 'cuda:999' requested") and "--device cpu" in r.output
    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        r = runner.invoke(app, ["sample", "--n", "2", "--device", "cuda", "-m", str(tiny_vae_bundle)])
        assert r.exit_code == 5 and "pip install onnxruntime-gpu" in r.output


def batch_breaking_decoder() -> bytes:
    """A decoder that loads and decodes one latent, but fails inside onnxruntime on a batch of
    two or more (a Reshape to one image's size): a model broken at inference time."""
    nodes = [
        helper.make_node("MatMul", ["z", "W"], ["flat"]),
        helper.make_node("Reshape", ["flat", "one"], ["mean"]),
        helper.make_node("Identity", ["mean"], ["logvar"]),
    ]
    inits = [
        numpy_helper.from_array(np.full((LATENT, PIXELS), 0.01, np.float32), "W"),
        numpy_helper.from_array(np.array([1, 1, 28, 28], np.int64), "one"),
    ]
    graph = helper.make_graph(
        nodes, "broken", [vi("z", ["N", LATENT])], [vi("mean", ["N", 1, 28, 28]), vi("logvar", ["N", 1, 28, 28])], inits
    )
    return make_model(graph)


def test_exit_code_8_when_inference_fails(tiny_vae_bundle, tmp_path, monkeypatch):
    broken = bundle_with(tiny_vae_bundle, tmp_path / "broken", decoder=batch_breaking_decoder())
    m = vaesdk.load(broken, device="cpu")
    assert m.decode(np.zeros((1, LATENT))).shape == (1, 28, 28, 1)
    with pytest.raises(InferenceError, match="onnxruntime failed on a batch of 3 on cpu"):
        m.decode(np.zeros((3, LATENT)))
    monkeypatch.chdir(tmp_path)
    r = runner.invoke(app, ["sample", "--n", "3", "--seed", "0", "-m", str(broken)])
    assert r.exit_code == 8, r.output
    assert r.output.startswith("vae: error: onnxruntime failed") and r.output.count("\n") == 1
    assert not list(tmp_path.glob("*.png"))  # nothing partial


def test_python_dash_m_vaesdk_runs_the_cli(tiny_vae_bundle, tmp_path):
    """`python -m vaesdk` is `vae`: the same program name in its messages, the same exit codes."""
    r = subprocess.run([sys.executable, "-m", "vaesdk", "--version"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout == f"vae (vaesdk) {vaesdk.__version__}\n", r.stderr
    r = subprocess.run([sys.executable, "-m", "vaesdk", "sample", "--n", "0", "-m", str(tiny_vae_bundle)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr == "vae: error: --n must be at least 1, got 0\n"
    r = subprocess.run([sys.executable, "-m", "vaesdk", "sample", "--n", "4", "--seed", "0", "-m", str(tiny_vae_bundle)], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert r.returncode == 0 and (tmp_path / "samples.png").is_file(), r.stderr


# ---- the latent bound -------------------------------------------------------------------------


def test_latents_are_accepted_up_to_1e6_and_refused_just_beyond():
    bound = np.float32(MAX_ABS_LATENT)
    assert bound == 1e6  # exactly representable: the boundary is the documented number
    for edge in (bound, -bound):
        z = np.zeros((2, 4), np.float32)
        z[1, 2] = edge
        np.testing.assert_array_equal(check_latents(z, 4), z)
    for beyond in (np.nextafter(bound, np.float32(np.inf)), -np.nextafter(bound, np.float32(np.inf))):
        with pytest.raises(InvalidArgumentError, match=r"beyond \+-1e\+06"):
            check_latents(np.full((1, 4), beyond, np.float32), 4)
    with pytest.raises(InvalidArgumentError, match=r"beyond \+-1e\+06"):
        check_latents(np.full((1, 4), 1e6 + 0.125), 4)  # float64 input just past the bound: still past it in float32
    with pytest.raises(InvalidArgumentError, match="NaN or infinite"):
        check_latents(np.full((1, 4), 1e39), 4)  # beyond float32's range: the overflow branch


def test_the_model_decodes_latents_at_the_bound_and_refuses_beyond(affine_bundle):
    m = vaesdk.load(affine_bundle, device="cpu")
    z = np.zeros((1, LATENT), np.float32)
    z[0, 0] = 1e6
    assert m.decode(z).shape == (1, 28, 28, 1)
    z[0, 0] = np.nextafter(np.float32(1e6), np.float32(np.inf))
    with pytest.raises(InvalidArgumentError, match="beyond"):
        m.decode(z)
    with pytest.raises(InvalidArgumentError, match="smaller delta"):
        m.edit_latents(np.full((1, LATENT), 1e6, np.float32), dim=0, delta=1.0)


def test_range_errors_name_the_value_they_refuse(affine_bundle):
    """Every refusal of an out-of-range value says which value: the traversal value, the latent
    (with its place in the batch), the NaN, the delta."""
    m = vaesdk.load(affine_bundle, device="cpu")
    with pytest.raises(InvalidArgumentError) as info:
        m.traverse(None, dims=[0], values=[1.0, -2.0, 1e7, -3e7])
    assert str(info.value) == (
        "traversal values must lie within +-1e+06, got values[2] = 1e+07; give values in prior standard deviations, e.g. -3 to 3"
    )
    z = np.zeros((3, LATENT))
    z[1, 4] = -2.5e6
    z[2, 0] = 3e6
    with pytest.raises(InvalidArgumentError) as info:
        m.decode(z)
    assert str(info.value) == "z has values beyond +-1e+06, got -2500000.0 at [1, 4]; latents must lie within that range"
    z = np.zeros((2, LATENT), np.float32)
    z[1, 3] = np.inf
    with pytest.raises(InvalidArgumentError) as info:
        m.decode(z)
    assert str(info.value) == "z contains NaN or infinite values (or values beyond float32 range), got inf at [1, 3]"
    with pytest.raises(InvalidArgumentError) as info:
        check_latents(np.full((1, 4), 1e39), 4)
    assert str(info.value).endswith("got 1e+39 at [0, 0]")  # the value given, not its float32 overflow
    with pytest.raises(InvalidArgumentError) as info:
        m.edit_latents(np.zeros((1, LATENT), np.float32), dim=0, delta=2e6)
    assert "got 2000000.0" in str(info.value)


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares width x height grey pixels (its image data is a stub)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b"")


def test_the_decompression_bomb_refusals_name_the_pixel_count(monkeypatch):
    from vaesdk.imaging.images import load_image

    with pytest.raises(vaesdk.InvalidImageError) as info:
        load_image(png_header(20_000, 10_000), 28, 1)
    assert str(info.value) == "image data declares 200000000 pixels; the limit is 40000000 pixels in all"

    def bomb(*args, **kwargs):  # a Pillow whose refusal does not give the count
        raise Image.DecompressionBombError("unexpected wording")

    monkeypatch.setattr(Image, "open", bomb)
    with pytest.raises(vaesdk.InvalidImageError) as info:
        load_image(png_header(30, 30), 28, 1)
    assert str(info.value) == "image data declares too many pixels; the limit is 40000000 pixels in all"


def test_prior_file_refusals_name_the_value(tmp_path):
    """A mixture prior file with a negative weight or a bad Cholesky factor is refused with the
    entry that breaks the rule."""
    import io

    from vaesdk.base.errors import BundleError
    from vaesdk.maths.priors import GaussianMixture

    def npz(**arrays) -> bytes:
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        return buffer.getvalue()

    good = dict(weights=np.array([0.5, 0.5]), means=np.zeros((2, 3)), cholesky=np.stack([np.eye(3)] * 2))
    cases = [
        (dict(weights=np.array([1.25, -0.25])), "weights must be non-negative and sum to 1 (sum 1); got weights[1] = -0.25"),
        (dict(cholesky=np.stack([np.eye(3), np.diag([1.0, -2.0, 1.0])])), "positive diagonal, got cholesky[1, 1, 1] = -2"),
        (dict(cholesky=np.stack([np.eye(3), np.eye(3) + np.eye(3, k=2) * 0.5])), "got cholesky[1, 0, 2] = 0.5 above the diagonal"),
    ]
    for change, message in cases:
        with pytest.raises(BundleError) as info:
            GaussianMixture.from_npz(npz(**{**good, **change}), 3, "p.npz")
        assert str(info.value).startswith("p.npz: ") and str(info.value).endswith(message), str(info.value)


# ---- sample caps --------------------------------------------------------------------------------


def test_sample_caps_at_their_boundaries(affine_bundle):
    m = vaesdk.load(affine_bundle, device="cpu", batch_size=4096)
    assert MAX_SAMPLES == 100_000 and MAX_STREAM_SAMPLES == 10_000_000  # the documented figures (docs/security.md)
    assert m.sample(MAX_SAMPLES, seed=0).shape == (MAX_SAMPLES, 28, 28, 1)
    assert m.sample_latents(MAX_SAMPLES, seed=0).shape == (MAX_SAMPLES, LATENT)
    for call in (m.sample, m.sample_latents):
        with pytest.raises(InvalidArgumentError, match="n must be in 1..100000, got 100001"):
            call(MAX_SAMPLES + 1, seed=0)
    stream = m.iter_sample(MAX_STREAM_SAMPLES, seed=0)  # accepted; nothing is drawn until iterated
    assert next(stream).shape[1:] == (28, 28, 1)
    with pytest.raises(InvalidArgumentError, match="n must be in 1..10000000, got 10000001"):
        m.iter_sample(MAX_STREAM_SAMPLES + 1, seed=0)


def test_cli_sample_caps(tmp_path, tiny_vae_bundle):
    common = ["--seed", "0", "-m", str(tiny_vae_bundle)]
    r = runner.invoke(app, ["sample", "--n", "10000001", "--out-dir", str(tmp_path / "many"), *common])
    assert r.exit_code == 2 and "10000000" in r.output and not (tmp_path / "many").exists()
    r = runner.invoke(app, ["sample", "--n", "1025", "-o", str(tmp_path / "g.png"), *common])
    assert r.exit_code == 2 and "at most 1024" in r.output and "--out-dir" in r.output
    r = runner.invoke(app, ["sample", "--n", "1024", "--scale", "1", "-o", str(tmp_path / "g.png"), *common])
    assert r.exit_code == 0, r.output


# ---- same seed, same result, any batch size ----------------------------------------------------


def test_score_does_not_depend_on_the_batch_size(tiny_vae_bundle, fashion_test):
    images = fashion_test.images[:37]
    want = vaesdk.load(tiny_vae_bundle, device="cpu").score(images, k=9, seed=4)
    for batch_size in (1, 5, 9, 10, 64):
        got = vaesdk.load(tiny_vae_bundle, device="cpu", batch_size=batch_size).score(images, k=9, seed=4)
        np.testing.assert_array_equal(got.elbo_bpd, want.elbo_bpd)
        np.testing.assert_array_equal(got.iw_bpd, want.iw_bpd)
    # Scoring in parts with the same seed gives the whole call's figures too (each image
    # draws from streams of its own).
    m = vaesdk.load(tiny_vae_bundle, device="cpu")
    parts = np.concatenate([m.score(images[i : i + 10], k=9, seed=4).iw_bpd for i in range(0, 37, 10)])
    np.testing.assert_array_equal(parts, want.iw_bpd)


# ---- concurrent add_direction ------------------------------------------------------------------


def test_concurrent_add_direction_keeps_every_direction(bundle_copy, fashion_test):
    """Threads on one model and on two separate models of the same bundle, plus a second
    process, add directions at once: every one is in the manifest afterwards, which still
    verifies, and each vector is what its images give."""
    models = [vaesdk.load(bundle_copy, device="cpu") for _ in range(2)]
    a, b = fashion_test.images[:20], fashion_test.images[20:40]
    names = [f"concurrent-{i}" for i in range(12)]
    errors: list[BaseException] = []
    start = threading.Barrier(len(names) + 1)

    def add(i: int) -> None:
        try:
            start.wait()
            models[i % 2].add_direction(names[i], a[i:], b[i:])
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    code = textwrap.dedent(
        f"""
        import numpy as np, vaesdk
        from vaesdk.evaluation.datasets import load_fashion_mnist
        t = load_fashion_mnist(split="test").images
        m = vaesdk.load({str(bundle_copy)!r}, device="cpu")
        for i in range(6):
            m.add_direction(f"process-{{i}}", t[:20], t[20:40])
        """
    )
    other = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True)
    threads = [threading.Thread(target=add, args=(i,)) for i in range(len(names))]
    for t in threads:
        t.start()
    start.wait()
    for t in threads:
        t.join()
    assert other.wait(timeout=120) == 0, other.stderr.read()
    assert not errors, errors
    reloaded = vaesdk.load(bundle_copy, device="cpu")
    for i, name in enumerate(names):
        want = reloaded.embed(b[i:]).mean(0) - reloaded.embed(a[i:]).mean(0)
        np.testing.assert_allclose(reloaded.directions[name], want, rtol=1e-5, atol=1e-6)
    assert {f"process-{i}" for i in range(6)} <= set(reloaded.directions)
    assert json.loads((bundle_copy / "manifest.json").read_text())["directions"].keys() == reloaded.directions.keys()


# ---- bounded memory ----------------------------------------------------------------------------


PEAK_SCRIPT = """
import sys
import numpy as np
sys.path.insert(0, sys.argv[4])
from memory import Growth
import vaesdk

op, n, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
m = vaesdk.load(path, device="cpu", batch_size=256)
images = np.random.default_rng(0).integers(0, 256, (n, 28, 28, 1), dtype=np.uint8) if op == "reconstruct" else None
m.reconstruct(np.zeros((256, 28, 28, 1), np.uint8))  # warm: sessions and their arenas at full batch size
if not Growth.measurable():
    sys.exit(print("unmeasurable"))
with Growth() as grown:
    if op == "reconstruct":
        out = m.reconstruct(images)
    else:
        for batch in m.iter_sample(n, seed=0):
            pass
print(grown.mib)
"""


def peak_growth_mib(op: str, n: int, bundle: Path) -> float:
    from memory import TESTS, UNMEASURABLE

    r = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, op, str(n), str(bundle), TESTS], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    out = r.stdout.strip().splitlines()[-1]
    if out == "unmeasurable":
        pytest.skip(UNMEASURABLE)
    return float(out)


def test_a_large_batch_needs_memory_for_its_result_only(affine_bundle):
    """reconstruct() of 60,000 images: the result (45 MiB of uint8) and the latents (2 MiB)
    are the only things that grow with N; float copies of the whole batch would add 180 MiB
    each. Peak RSS is measured in a fresh process."""
    n = 60_000
    result_mib = n * PIXELS / 2**20
    growth = peak_growth_mib("reconstruct", n, affine_bundle)
    assert growth < result_mib + 40, f"peak grew by {growth:.0f} MiB for a {result_mib:.0f} MiB result"


def test_streamed_sampling_memory_does_not_grow_with_n(affine_bundle):
    """iter_sample (`vae sample --out-dir`) holds one batch at a time: 300,000 images (224 MiB
    as uint8) are drawn while the peak grows by a small fraction of that."""
    growth = peak_growth_mib("stream", 300_000, affine_bundle)
    assert growth < 40, f"peak grew by {growth:.0f} MiB while streaming"


def test_a_writer_waiting_on_a_folder_replaced_meanwhile_locks_the_new_folder(tmp_path):
    """A rebuilt bundle takes its folder's place (remeasure, refresh) while another writer waits
    for the folder's lock: once the old folder's lock is free, that writer locks the folder now
    at the path, which a third writer already holds, rather than entering beside it."""
    from vaesdk.bundle.editing import folder_lock

    path, old, new = tmp_path / "bundle", tmp_path / "bundle.old", tmp_path / "bundle.new"
    path.mkdir()
    new.mkdir()
    entered, release_third, third_in = threading.Event(), threading.Event(), threading.Event()

    def waiter():
        with folder_lock(path):
            entered.set()

    def third():
        with folder_lock(path):
            third_in.set()
            release_third.wait(10)

    with folder_lock(path):
        w = threading.Thread(target=waiter)
        w.start()
        time.sleep(0.2)  # the waiter is blocked on the folder this lock holds
        path.rename(old)
        new.rename(path)
        t = threading.Thread(target=third)
        t.start()
        assert third_in.wait(10)  # the new folder was free
    assert not entered.wait(0.5)  # the old folder's lock is free, the new one's is held
    release_third.set()
    assert entered.wait(10)
    w.join(10)
    t.join(10)
