"""Export: the ONNX graphs, the parity gate, the manifest, and atomic bundle writing."""

import pytest

# Needs torch and onnx (the train extra): marked, and skipped at collection where they are absent.
pytestmark = pytest.mark.train
pytest.importorskip("torch")
pytest.importorskip("onnx")

import hashlib
import json

import numpy as np
import onnx
import torch

import vaesdk
from vaesdk.base.errors import BundleError, OutputError
from vaesdk.maths.latent import ImageNoise
from vaesdk.export import pipeline
from vaesdk.export.verify import DEFAULT_TOLERANCE, check_parity

ATOL, RTOL = DEFAULT_TOLERANCE.atol, DEFAULT_TOLERANCE.rtol
from vaesdk.training.evaluate import bounds_bpd
from vaesdk.training.train import load_checkpoint


@pytest.fixture(scope="module")
def run_dir(trained_vae_bundle):
    return trained_vae_bundle.parent / "run-vae"


def test_graphs_pass_the_full_onnx_check_and_hold_their_weights(trained_vae_bundle):
    for name in ("encoder.onnx", "decoder.onnx"):
        model = onnx.load(str(trained_vae_bundle / name))
        onnx.checker.check_model(model, full_check=True)
        assert all(t.data_location != onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
    assert sorted(p.name for p in trained_vae_bundle.iterdir()) == ["decoder.onnx", "encoder.onnx", "manifest.json", "prior-mixture.npz"]


def test_manifest_records_what_a_deployer_needs(trained_vae_bundle):
    data = json.loads((trained_vae_bundle / "manifest.json").read_text())
    for role in ("encoder", "decoder"):
        blob = (trained_vae_bundle / data[role]["file"]).read_bytes()
        assert data[role]["sha256"] == hashlib.sha256(blob).hexdigest() and data[role]["bytes"] == len(blob)
    assert data["parity"]["worst_error_to_tolerance"] <= 1.0
    assert data["parity"]["tolerance"] == {"atol": ATOL, "rtol": RTOL, "rule": data["parity"]["tolerance"]["rule"]}
    assert data["training"]["epochs"] == 2 and data["training"]["seed"] == 0
    assert {"elbo_bpd", "iw_bpd", "recon_mse", "probe_accuracy"} <= set(data["metrics"])
    assert len(data["latent"]["kl_per_dim"]) == 8 and len(data["directions"]) == 10
    assert data["onnx"]["opset"] >= 17


def test_runtime_matches_pytorch_on_fresh_inputs(trained_vae_bundle, run_dir, fashion_test):
    torch_model, _ = load_checkpoint(run_dir)
    m = vaesdk.load(trained_vae_bundle, device="cpu")
    x = fashion_test.images[100:164]
    with torch.no_grad():
        t_mean, t_logvar = torch_model.encoder(torch.from_numpy(x.transpose(0, 3, 1, 2).astype(np.float32) / 255))
        post = m.encode(x)
        np.testing.assert_allclose(post.mean, t_mean.numpy(), rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(post.logvar, t_logvar.numpy(), rtol=RTOL, atol=ATOL)
        z = np.random.default_rng(0).standard_normal((32, 8), dtype=np.float32)
        d_mean, d_logvar, *_ = torch_model.decoder(torch.from_numpy(z))
        mean, logvar = m.decode_params(z)
        np.testing.assert_allclose(mean, d_mean.numpy().transpose(0, 2, 3, 1), rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(logvar, d_logvar.numpy().transpose(0, 2, 3, 1), rtol=RTOL, atol=ATOL)


def test_runtime_scores_agree_with_the_training_code(trained_vae_bundle, run_dir, fashion_test):
    torch_model, _ = load_checkpoint(run_dir)
    m = vaesdk.load(trained_vae_bundle, device="cpu", batch_size=4096)
    x, k = fashion_test.images[:20], 50
    scores = m.score(x, k=k, seed=7)
    # Each image's own streams (ImageNoise): the runtime drew exactly these posterior noises.
    eps = ImageNoise(7, x).normals(slice(None), k, 8)
    elbo, iw = bounds_bpd(torch_model, x, eps)
    np.testing.assert_allclose(scores.elbo_bpd, elbo, atol=1e-3)
    np.testing.assert_allclose(scores.iw_bpd, iw, atol=1e-3)


def test_lowrank_scores_agree_with_the_training_code(trained_lowrank_bundle, fashion_test):
    """The dequantized bound with a low-rank covariance: numpy (Woodbury) against torch."""
    torch_model, _ = load_checkpoint(trained_lowrank_bundle.parent / "run-lowrank")
    m = vaesdk.load(trained_lowrank_bundle, device="cpu", batch_size=4096)
    assert m.manifest.covariance_rank == 4 and m.manifest.likelihood_type == "dequantized_gaussian"
    x, k = fashion_test.images[:20], 30
    scores = m.score(x, k=k, seed=7)
    # Each image's own streams: the runtime drew these posterior and dequantization noises.
    streams = ImageNoise(7, x)
    eps, noise = streams.normals(slice(None), k, 8), streams.uniforms(slice(None), (k, 1, 28, 28))
    elbo, iw = bounds_bpd(torch_model, x, eps, noise)
    np.testing.assert_allclose(scores.elbo_bpd, elbo, atol=1e-3)
    np.testing.assert_allclose(scores.iw_bpd, iw, atol=1e-3)
    assert np.all(scores.iw_bpd <= scores.elbo_bpd + 1e-9)


def test_lowrank_decoder_passes_parity_with_its_factor_output(trained_lowrank_bundle, fashion_test):
    torch_model, _ = load_checkpoint(trained_lowrank_bundle.parent / "run-lowrank")
    report = check_parity(
        torch_model,
        (trained_lowrank_bundle / "encoder.onnx").read_bytes(),
        (trained_lowrank_bundle / "decoder.onnx").read_bytes(),
        fashion_test.images[:32],
    )
    assert any(key.endswith(".factor") for key in report.max_abs_error)


def test_parity_gate_fails_when_onnx_and_torch_differ(trained_vae_bundle, run_dir, fashion_test):
    torch_model, _ = load_checkpoint(run_dir)
    with torch.no_grad():
        torch_model.decoder.conv_out.bias.add_(0.01)  # a change far below what a picture shows
    with pytest.raises(BundleError, match="parity gate failed"):
        check_parity(
            torch_model,
            (trained_vae_bundle / "encoder.onnx").read_bytes(),
            (trained_vae_bundle / "decoder.onnx").read_bytes(),
            fashion_test.images[:32],
        )


def test_failed_export_leaves_nothing_behind(run_dir, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise BundleError("parity gate failed: simulated")

    monkeypatch.setattr(pipeline, "check_parity", broken)
    with pytest.raises(BundleError, match="simulated"):
        pipeline.export_bundle(run_dir, tmp_path / "out", eval_data=None)
    assert list(tmp_path.iterdir()) == []


def test_export_refuses_to_replace_a_bundle_unless_forced(run_dir, tmp_path):
    out = tmp_path / "b"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(OutputError, match="--force"):
        pipeline.export_bundle(run_dir, out, eval_data=None)
    assert (out / "keep.txt").read_text() == "mine"
    pipeline.export_bundle(run_dir, out, eval_data=None, force=True)
    assert sorted(p.name for p in out.iterdir()) == ["decoder.onnx", "encoder.onnx", "manifest.json"]
    assert [p.name for p in tmp_path.iterdir()] == ["b"]
    assert vaesdk.load(out, device="cpu").name == "b"


def test_a_means_only_decode_does_not_run_the_covariance_head(trained_lowrank_bundle):
    # The decoder's last layer is exported as a mean head and a head for the log-variance and
    # factor; cutting the graph to `mean` must drop the second head's weights entirely.
    from vaesdk.bundle.onnx_proto import keep_outputs

    data = (trained_lowrank_bundle / "decoder.onnx").read_bytes()
    full, cut = onnx.load_from_string(data), onnx.load_from_string(keep_outputs(data, ["mean"]))
    config = load_checkpoint(trained_lowrank_bundle.parent / "run-lowrank")[0].config
    head = config.widths[0] * (config.channels + config.factor_channels) * 9 * 4  # float32 bytes
    weight_bytes = lambda m: sum(len(t.raw_data) for t in m.graph.initializer)  # noqa: E731
    assert weight_bytes(full) - weight_bytes(cut) >= head
    model = vaesdk.load(trained_lowrank_bundle, device="cpu")
    z = np.random.default_rng(1).standard_normal((3, model.latent_dim), dtype=np.float32)
    mean, _ = model.decode_params(z)  # from the whole graph
    assert np.array_equal(model.decode(z), np.rint(np.clip(mean, 0, 1) * np.float32(255)).astype(np.uint8))


def test_the_shipped_prior_is_chosen_by_sample_quality_then_held_out_likelihood(trained_vae_bundle):
    from vaesdk.export.fit_prior import QUALITY_MARGIN

    entry = json.loads((trained_vae_bundle / "manifest.json").read_text())["latent"]["mixtures"]["mixture"]
    rows = entry["candidates"]
    assert rows[0]["candidate"] == "em" and any(r["candidate"].startswith("clusters-") for r in rows)
    assert [r["chosen"] for r in rows].count(True) == 1
    chosen = next(r for r in rows if r["chosen"])
    assert entry["candidate"] == chosen["candidate"] and entry["components"] == chosen["components"]
    eligible = [r for r in rows if r["within_budget"]]
    best = min(r["sample_distance"] for r in eligible)
    near = [r for r in eligible if r["sample_distance"] <= best * (1 + QUALITY_MARGIN)]
    assert chosen["held_out_log_likelihood"] == max(r["held_out_log_likelihood"] for r in near)
    mixture = vaesdk.load(trained_vae_bundle, device="cpu").spec.prior_set.fitted["mixture"]
    assert mixture.components == chosen["components"]


def test_choose_prior_takes_the_likeliest_of_the_near_best_samplers():
    from vaesdk.export.fit_prior import QUALITY_MARGIN, choose_prior
    from vaesdk.maths.priors import GaussianMixture

    def mixture(shift: float) -> GaussianMixture:
        return GaussianMixture(np.array([1.0]), np.full((1, 2), shift), np.eye(2)[None])

    held_out = np.random.default_rng(0).normal(size=(500, 2))
    # Sample distances (lower is better): 'far' samples worst; 'near' is within the margin of
    # 'best', and 'near' (centred on the held-out latents) is the likelier.
    distances = {0.0: 1.0 + 0.9 * QUALITY_MARGIN, 0.5: 1.0, 3.0: 5.0}
    candidates = [("near", mixture(0.0), {}), ("best", mixture(0.5), {}), ("far", mixture(3.0), {})]
    name, chosen, rows = choose_prior(candidates, held_out, lambda m: distances[float(m.means[0, 0])])
    assert name == "near" and chosen is candidates[0][1]
    assert [r["chosen"] for r in rows] == [True, False, False]
    distances[0.0] = 1.0 + 1.1 * QUALITY_MARGIN  # beyond the margin: the best sampler wins whatever its likelihood
    assert choose_prior(candidates, held_out, lambda m: distances[float(m.means[0, 0])])[0] == "best"
