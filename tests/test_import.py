"""Bringing your own VAE (vaesdk.export.importer, `vae export --from`): models built from code,
trained for seconds, exported through the documented command and used like any bundle; each
pixel likelihood kind; calibration on the held-out images only; the parity gate's misses."""

from __future__ import annotations

import json
import shutil
import textwrap

import numpy as np
import pytest
from typer.testing import CliRunner

pytestmark = pytest.mark.train

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import vaesdk  # noqa: E402
import vaesdk.export.importer as importer  # noqa: E402
from folders import png_folder  # noqa: E402
from vaesdk.cli.main import app  # noqa: E402
from vaesdk.export.importer import EncoderGraph, Likelihood, export_vae  # noqa: E402
from vaesdk.export.verify import Tolerance  # noqa: E402

MLP = textwrap.dedent(
    '''
    """The PyTorch examples' MLP VAE (784-400-20, Bernoulli decoder), as its two halves."""
    import torch
    from torch import nn


    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc21, self.fc22 = nn.Linear(784, 400), nn.Linear(400, 20), nn.Linear(400, 20)

        def forward(self, x):
            h = torch.relu(self.fc1(x.reshape(-1, 784)))
            return self.fc21(h), self.fc22(h)


    class Decoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc3, self.fc4 = nn.Linear(20, 400), nn.Linear(400, 784)

        def forward(self, z):
            return torch.sigmoid(self.fc4(torch.relu(self.fc3(z))))


    def build():
        torch.manual_seed(0)
        encoder, decoder = Encoder(), Decoder()
        state = torch.load(__file__.replace(".py", ".pt"), weights_only=True)
        encoder.load_state_dict(state["encoder"])
        decoder.load_state_dict(state["decoder"])
        return encoder, decoder
    '''
)


def _train_mlp(images: np.ndarray, epochs: int = 2):
    """The MLP VAE trained on `images` with its own loss (BCE + KL), a few seconds."""
    namespace: dict = {}
    exec(compile(MLP, "mlp.py", "exec"), namespace)
    torch.manual_seed(0)
    encoder, decoder = namespace["Encoder"](), namespace["Decoder"]()
    x = torch.from_numpy(images.reshape(len(images), -1).astype(np.float32) / 255.0)
    opt = torch.optim.Adam([*encoder.parameters(), *decoder.parameters()], 1e-3)
    for _ in range(epochs):
        for i in range(0, len(x), 128):
            xb = x[i : i + 128]
            mu, logvar = encoder(xb)
            recon = decoder(mu + torch.randn_like(mu) * torch.exp(0.5 * logvar))
            kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
            loss = nn.functional.binary_cross_entropy(recon, xb, reduction="sum") + kl
            opt.zero_grad()
            loss.backward()
            opt.step()
    return encoder, decoder


@pytest.fixture(scope="module")
def data(fashion_test):
    """Training images (priors), held-out images (calibration), and images neither saw."""
    images = fashion_test.images
    return images[:3000], images[3000:3400], images[3400:3420]


@pytest.fixture(scope="module")
def mlp_bundle(data, tmp_path_factory):
    """The MLP VAE exported through `vae export --from python FILE.py:build`."""
    root = tmp_path_factory.mktemp("mlp")
    train, held_out, _ = data
    encoder, decoder = _train_mlp(train)
    (root / "mlp.py").write_text(MLP)
    torch.save({"encoder": encoder.state_dict(), "decoder": decoder.state_dict()}, root / "mlp.pt")
    images, held = png_folder(root / "images", train[:600], {}), png_folder(root / "held-out", held_out, {})
    out = root / "bundle"
    result = CliRunner().invoke(app, [
        "export", "--from", "python", f"{root / 'mlp.py'}:build", "--images", str(images), "--held-out", str(held),
        "--out", str(out), "--name", "mlp", "--image-size", "28", "--channels", "1", "--likelihood", "bernoulli",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    return out


def test_the_mlp_vae_is_exported_with_its_own_likelihood_and_record(mlp_bundle):
    manifest = json.loads((mlp_bundle / "manifest.json").read_text())
    assert manifest["likelihood"]["type"] == "bernoulli"
    assert [o["name"] for o in manifest["decoder"]["outputs"]] == ["mean"]
    training = manifest["training"]
    assert training["imported"] is True and training["from"] == "python" and training["function"] == "mlp.py:build"
    assert "config" not in training and "epochs" not in training  # nothing it does not know
    assert manifest["parity"]["worst_error_to_tolerance"] <= 1.0
    assert manifest["anomaly"]["calibration"]["n"] == 400
    assert manifest["latent"]["default_prior"] == "mixture"


def test_every_operation_runs_on_the_imported_bundle(mlp_bundle, data):
    _, _, unseen = data
    model = vaesdk.load(mlp_bundle)
    assert model.sample(4, seed=0).shape == (4, 28, 28, 1)
    drawn = model.sample(4, seed=0, sample_pixels=True)
    assert set(np.unique(drawn)) <= {0, 255}  # Bernoulli pixel draws are binary
    assert model.reconstruct(unseen[:3]).shape == (3, 28, 28, 1)
    assert model.interpolate(unseen[0], unseen[1], steps=4).shape == (4, 28, 28, 1)
    assert model.traverse(unseen[0], dims=[0], values=[-1.0, 0.0, 1.0]).images.shape == (1, 3, 28, 28, 1)
    scores = model.score(unseen, seed=0, k=16)
    assert scores.bounds and np.all(np.isfinite(scores.elbo_bpd)) and scores.iw_bpd.mean() < scores.elbo_bpd.mean()
    assert scores.p_value is not None and np.all((0 < scores.p_value) & (scores.p_value <= 1))
    # The Bernoulli bound, by hand: -log p(x|z) is the binary cross-entropy of the pixels.
    mean, logvar = model.decode_params(model.embed(unseen[:1]))
    assert logvar is None and 0.0 <= mean.min() and mean.max() <= 1.0


def test_the_cli_runs_on_the_imported_bundle(mlp_bundle, data, tmp_path):
    _, _, unseen = data
    folder = png_folder(tmp_path / "in", unseen[:4], {})
    runner = CliRunner()
    for args in (
        ["sample", "-m", str(mlp_bundle), "--n", "4", "--out", str(tmp_path / "s.png")],
        ["reconstruct", "-m", str(mlp_bundle), str(folder), "--out-dir", str(tmp_path / "r")],
        ["score", "-m", str(mlp_bundle), str(folder), "--flag-p-below", "0.01"],
        ["embed", "-m", str(mlp_bundle), str(folder), "-o", str(tmp_path / "z.npy")],
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, (args, result.output)


def test_calibration_uses_the_held_out_images_only(data, tmp_path, monkeypatch):
    train, held_out, _ = data
    seen = []
    real = importer.calibrate_anomaly

    def recording(model, images, source):
        seen.append(np.asarray(images).copy())
        return real(model, images, source)

    monkeypatch.setattr(importer, "calibrate_anomaly", recording)
    encoder, decoder = _train_mlp(train[:500], epochs=1)
    export_vae(encoder, decoder, tmp_path / "b", images=train[:500], held_out=held_out[:150], image_size=28, channels=1, likelihood="bernoulli")
    (calibrated,) = seen
    assert np.array_equal(calibrated, held_out[:150])
    train_rows = {row.tobytes() for row in train[:500]}
    assert not any(row.tobytes() in train_rows for row in calibrated)


def test_without_held_out_images_the_bundle_is_uncalibrated_and_says_so(data, tmp_path):
    train, _, unseen = data
    encoder, decoder = _train_mlp(train[:300], epochs=1)
    logged = []
    export_vae(encoder, decoder, tmp_path / "b", images=train[:300], image_size=28, channels=1, likelihood="bernoulli", log=logged.append)
    assert any("not calibrated" in line for line in logged)
    model = vaesdk.load(tmp_path / "b")
    assert model.score(unseen[:2]).p_value is None
    with pytest.raises(vaesdk.UnsupportedOperationError, match="vae calibrate BUNDLE --held-out DIR"):
        model.score(unseen[:2]).flagged(0.01)
    result = CliRunner().invoke(app, ["calibrate", str(tmp_path / "b"), "--held-out", str(png_folder(tmp_path / "h", train[2000:2150], {}))])
    assert result.exit_code == 0, result.output
    assert vaesdk.load(tmp_path / "b").score(unseen[:2]).p_value is not None


class _Conv(nn.Module):
    """A small convolutional VAE half for the likelihood kinds: image [N, C, 8, 8] <-> z [N, 4]."""

    def __init__(self, decoder: bool, channels: int, outputs: int):
        super().__init__()
        torch.manual_seed(1 + decoder)
        self.decoder, self.channels, self.outputs = decoder, channels, outputs
        self.net = nn.Linear(4, outputs * channels * 64) if decoder else nn.Linear(channels * 64, 8)

    def forward(self, x):
        if not self.decoder:
            h = self.net(x.flatten(1))
            return h[:, :4], h[:, 4:] - 2.0
        h = self.net(x).reshape(-1, self.outputs, self.channels, 8, 8)
        if self.outputs == 1:
            return torch.tanh(h[:, 0])  # a [-1, 1] decoder
        return torch.tanh(h[:, 0]), h[:, 1] - 3.0


@pytest.mark.parametrize(
    "likelihood,kind,outputs",
    [
        ("gaussian", "discretized_gaussian", 2),
        ("gaussian:0.2", "fixed_gaussian", 1),
        ("none", "none", 1),
    ],
)
def test_each_likelihood_kind_of_a_minus_one_to_one_model(tmp_path, likelihood, kind, outputs):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (300, 8, 8, 3), dtype=np.uint8)
    encoder, decoder = _Conv(False, 3, outputs), _Conv(True, 3, outputs)
    export_vae(encoder, decoder, tmp_path / "b", images=images, held_out=images[:120], image_size=8, channels=3, pixel_range="-1,1", likelihood=likelihood)
    model = vaesdk.load(tmp_path / "b")
    assert model.spec.pixels.name == kind
    # Pixels out equal the model's own decoder, mapped from [-1, 1] to [0, 255].
    z = rng.standard_normal((2, 4)).astype(np.float32)
    with torch.no_grad():
        out = decoder(torch.from_numpy(z))
    own = (out if outputs == 1 else out[0]).numpy()
    expected = np.clip(np.rint((own + 1) / 2 * 255), 0, 255).transpose(0, 2, 3, 1)
    assert np.abs(model.decode(z).astype(int) - expected).max() <= 1
    scores = model.score(images[:5], seed=0)
    if kind == "none":
        assert not scores.bounds and np.all(np.isnan(scores.elbo_bpd)) and np.all(np.isfinite(scores.anomaly))
        with pytest.raises(vaesdk.UnsupportedOperationError, match="no pixel likelihood"):
            model.decode(z, sample_pixels=True, seed=0)
    else:
        assert scores.bounds and np.all(np.isfinite(scores.elbo_bpd))
        assert model.decode(z, sample_pixels=True, seed=0).shape == (2, 8, 8, 3)
    if kind == "fixed_gaussian":
        _, logvar = model.decode_params(z)
        assert np.allclose(logvar, 2 * np.log(0.1))  # sigma 0.2 in [-1, 1] units is 0.1 in [0, 1] units


class _Wide(nn.Module):
    """A linear VAE half for 12x20 grey images (not square) <-> z [N, 4]."""

    def __init__(self, decoder: bool):
        super().__init__()
        torch.manual_seed(3 + decoder)
        self.decoder = decoder
        self.net = nn.Linear(4, 2 * 240) if decoder else nn.Linear(240, 8)

    def forward(self, x):
        if not self.decoder:
            h = self.net(x.flatten(1))
            return h[:, :4], h[:, 4:] - 2.0
        h = self.net(x).reshape(-1, 2, 1, 12, 20)
        return torch.sigmoid(h[:, 0]), h[:, 1] - 3.0


def test_a_model_of_non_square_images_exports_to_a_version_3_bundle(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (300, 12, 20, 1), dtype=np.uint8)
    export_vae(_Wide(False), _Wide(True), tmp_path / "b", images=images, held_out=images[:120], image_size=(12, 20), channels=1)
    model = vaesdk.load(tmp_path / "b")
    manifest = model.manifest.data
    assert manifest["format_version"] == 3 and (manifest["image"]["height"], manifest["image"]["width"]) == (12, 20)
    assert model.image_shape == (12, 20, 1) and model.reconstruct(images[:3]).shape == (3, 12, 20, 1)
    # A picture of another shape is fitted into 12x20, aspect kept, centred on black.
    assert model.reconstruct(np.full((40, 40), 255, np.uint8)).shape == (1, 12, 20, 1)
    assert model.sample(2, seed=0).shape == (2, 12, 20, 1) and np.isfinite(model.score(images[:2], seed=0).elbo_bpd).all()


def test_continuous_bernoulli_scores_by_its_normalised_density(tmp_path):
    from vaesdk.maths.pixels import continuous_bernoulli_log_norm

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (200, 8, 8, 1), dtype=np.uint8)
    encoder = _Conv(False, 1, 1)
    decoder = nn.Sequential(_Conv(True, 1, 1), nn.Sigmoid())
    export_vae(encoder, decoder, tmp_path / "b", images=images, image_size=8, channels=1, likelihood="continuous-bernoulli")
    model = vaesdk.load(tmp_path / "b")
    # log C(lambda) against the normalising constant by quadrature
    lam = np.array([0.01, 0.3, 0.5, 0.5 + 1e-5, 0.9])
    grid = (np.arange(200000) + 0.5) / 200000
    numeric = [-np.log(np.mean(l**grid * (1 - l) ** (1 - grid))) for l in lam]
    assert np.allclose(continuous_bernoulli_log_norm(lam), numeric, atol=1e-6)
    assert np.all(np.isfinite(model.score(images[:3], seed=0).elbo_bpd))
    drawn = model.decode(model.embed(images[:2]), sample_pixels=True, seed=0)
    assert drawn.shape == (2, 8, 8, 1)


def test_the_parity_gate_names_the_worst_element_and_takes_a_tolerance(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (100, 8, 8, 1), dtype=np.uint8)
    decoder = nn.Sequential(_Conv(True, 1, 1), nn.Sigmoid())
    real_export = importer.export_module

    def export_then_change(module, example, input_name, output_names, path):
        real_export(module, example, input_name, output_names, path)
        if input_name == "z":  # the graph keeps the old weights; torch runs the new ones
            with torch.no_grad():
                decoder[0].net.bias.add_(1e-2)

    monkeypatch.setattr(importer, "export_module", export_then_change)
    with pytest.raises(vaesdk.BundleError, match=r"parity gate failed: .*worst: decoder\.mean in case \w+ at \["):
        export_vae(_Conv(False, 1, 1), decoder, tmp_path / "b", images=images, image_size=8, channels=1, likelihood="bernoulli")
    assert not (tmp_path / "b").exists() and not list(tmp_path.glob(".b.*"))
    export_vae(_Conv(False, 1, 1), decoder, tmp_path / "b", images=images, image_size=8, channels=1, likelihood="bernoulli", tolerance=Tolerance(atol=5e-2))
    assert json.loads((tmp_path / "b" / "manifest.json").read_text())["parity"]["tolerance"]["atol"] == 5e-2


def test_refusals_are_one_line(tmp_path):
    images = np.zeros((10, 8, 8, 1), np.uint8)
    with pytest.raises(vaesdk.InvalidArgumentError, match="models pixels in \\[0, 1\\]"):
        export_vae(_Conv(False, 1, 1), _Conv(True, 1, 1), tmp_path / "b", images=images, image_size=8, channels=1, pixel_range="-1,1", likelihood="bernoulli")
    with pytest.raises(vaesdk.InvalidArgumentError, match="is not one of bernoulli"):
        Likelihood.parse("poisson")
    with pytest.raises(vaesdk.InvalidArgumentError, match="returned dict"):
        EncoderGraph(nn.Identity(), 0.0, 1.0).select({"nothing": 1})
    (tmp_path / "diff").mkdir()
    (tmp_path / "diff" / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKL", "latent_channels": 4}))
    result = CliRunner().invoke(app, ["export", "--from", "diffusers", str(tmp_path / "diff"), "--images", str(tmp_path), "--out", str(tmp_path / "o")])
    assert result.exit_code != 0 and "diffusion_pytorch_model.safetensors" in result.output and len(result.output.strip().splitlines()) == 1


def test_a_pythae_vae_is_rebuilt_with_pythae_and_exported(data, tmp_path):
    pythae_models = pytest.importorskip("pythae.models")  # the import extra
    train, held_out, unseen = data
    model = pythae_models.VAE(pythae_models.VAEConfig(input_dim=(1, 28, 28), latent_dim=8, reconstruction_loss="bce"))
    model.save(str(tmp_path / "pythae"))
    images = png_folder(tmp_path / "images", train[:300], {})
    held = png_folder(tmp_path / "held", held_out[:120], {})
    result = CliRunner().invoke(app, ["export", "--from", "pythae", str(tmp_path / "pythae"), "--images", str(images), "--held-out", str(held), "--out", str(tmp_path / "b")])
    assert result.exit_code == 0, result.output
    bundle = vaesdk.load(tmp_path / "b")
    manifest = bundle.manifest.data
    assert manifest["likelihood"]["type"] == "bernoulli" and manifest["training"]["from"] == "pythae"
    assert manifest["training"]["config"]["latent_dim"] == 8
    with torch.no_grad():
        x = torch.from_numpy(unseen[:2].transpose(0, 3, 1, 2).astype(np.float32) / 255.0)
        want = model.encoder(x)["embedding"].numpy()
    assert np.allclose(bundle.embed(unseen[:2]), want, atol=1e-4)
    # A folder with pickled architectures is refused, never unpickled.
    shutil.copytree(tmp_path / "pythae", tmp_path / "pickled")
    (tmp_path / "pickled" / "encoder.pkl").write_bytes(b"\x80\x04not a real pickle")
    result = CliRunner().invoke(app, ["export", "--from", "pythae", str(tmp_path / "pickled"), "--images", str(images), "--out", str(tmp_path / "c")])
    assert result.exit_code != 0 and "never unpickles" in result.output


def test_a_4096_latent_model_gets_a_diagonal_mixture_that_fits_the_format(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (400, 8, 8, 1), dtype=np.uint8)

    class Enc(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.net = nn.Linear(64, 2 * 4096)

        def forward(self, x):
            h = self.net(x.flatten(1))
            return h[:, :4096], h[:, 4096:] - 4.0

    decoder = nn.Sequential(nn.Linear(4096, 64), nn.Sigmoid(), nn.Unflatten(1, (1, 8, 8)))
    export_vae(Enc(), decoder, tmp_path / "b", images=images[:300], held_out=images[300:], image_size=8, channels=1, likelihood="bernoulli")
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert (tmp_path / "b" / "manifest.json").stat().st_size < 1 << 20
    mixture = manifest["latent"]["mixtures"]["mixture"]
    assert mixture["covariance"] == "diagonal" and mixture["bytes"] < 8 << 20
    assert "gaussians" not in manifest["latent"] or not manifest["latent"]["gaussians"]
    model = vaesdk.load(tmp_path / "b")
    assert model.default_prior == "mixture" and model.sample_latents(3, seed=0).shape == (3, 4096)
    assert np.all(np.isfinite(model.score(images[:3], seed=0).anomaly))
