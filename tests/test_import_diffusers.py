"""Exporting diffusers autoencoders (vaesdk.export.diffusers, `vae export --from diffusers`): a
tiny AutoencoderKL and a tiny AutoencoderTiny built from code with random weights, saved with
save_pretrained, exported through the command, and held to diffusers' own outputs with
onnxruntime at three image sizes (one not square) other than the parity gate's; the manifest's
geometry; and the folders the command refuses, in one line each, leaving nothing behind."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

pytestmark = pytest.mark.train

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")  # the import extra
ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from vaesdk.base.errors import InvalidArgumentError  # noqa: E402
from vaesdk.bundle.format import FORMAT_VERSION, OPERATORS  # noqa: E402
from vaesdk.bundle.reading import read_bundle  # noqa: E402
from vaesdk.cli.main import app  # noqa: E402
from vaesdk.export.importer import export_from  # noqa: E402
from vaesdk.imaging.images import load_image  # noqa: E402

EMOJI = Path(__file__).resolve().parent / "data" / "emoji-inputs"
# The parity gate's own tolerance (export/verify.py): atol scaled by the output's magnitude, plus rtol.
ATOL = RTOL = 1e-4


def _kl() -> diffusers.AutoencoderKL:
    """Two resolutions (f = 2), mid-block attention, the config's default scaling and no shift."""
    torch.manual_seed(0)
    return diffusers.AutoencoderKL(
        block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4, latent_channels=4,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
    ).eval()  # fmt: skip


def _tiny() -> diffusers.AutoencoderTiny:
    """Three blocks (f = 4), with a scaling and a shift of its own."""
    torch.manual_seed(1)
    return diffusers.AutoencoderTiny(
        encoder_block_out_channels=(8, 8, 8), decoder_block_out_channels=(8, 8, 8), num_encoder_blocks=(1, 1, 1),
        num_decoder_blocks=(1, 1, 1), latent_channels=4, scaling_factor=1.5, shift_factor=0.25,
    ).eval()  # fmt: skip


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    """--images: the four emoji (64x64, RGBA) and two non-square photos-like images, sides
    multiples of 4 so each is encoded at its own size; --held-out: two more images."""
    root = tmp_path_factory.mktemp("images")
    images, held = root / "images", root / "held-out"
    shutil.copytree(EMOJI, images, ignore=shutil.ignore_patterns("*.txt"))
    held.mkdir()
    rng = np.random.default_rng(0)
    for folder, name, (h, w) in ((images, "wide", (36, 52)), (images, "tall", (60, 28)), (held, "a", (40, 40)), (held, "b", (24, 56))):
        ramp = np.linspace(0, 255, w)[None, :, None] * np.linspace(0.2, 1.0, h)[:, None, None]
        noise = rng.integers(0, 64, (h, w, 3))
        Image.fromarray(np.clip(ramp * [1.0, 0.6, 0.3] + noise, 0, 255).astype(np.uint8)).save(folder / f"{name}.png")
    return {"images": images, "held_out": held}


def _export(root: Path, folders: dict[str, Path], *extra: str) -> tuple[Path, object]:
    out = root / "bundle"
    result = CliRunner().invoke(app, [
        "export", "--from", "diffusers", str(root / "model"), "--images", str(folders["images"]),
        "--held-out", str(folders["held_out"]), "--out", str(out), *extra,
    ])  # fmt: skip
    return out, result


@pytest.fixture(scope="module", params=["AutoencoderKL", "AutoencoderTiny"])
def exported(request, folders, tmp_path_factory):
    """(the model, its bundle, the command's output) for each class."""
    root = tmp_path_factory.mktemp(request.param)
    model = _kl() if request.param == "AutoencoderKL" else _tiny()
    model.save_pretrained(root / "model")
    out, result = _export(root, folders, *(["--fp16"] if request.param == "AutoencoderKL" else []))
    assert result.exit_code == 0, result.output
    return model, out, result.output


def _diffusers_uint8(x: torch.Tensor) -> np.ndarray:
    """diffusers' image in [-1, 1], NCHW -> uint8 NHWC, by the format's rounding."""
    return np.rint(np.clip((x.detach().numpy().transpose(0, 2, 3, 1) + 1.0) / 2.0, 0.0, 1.0) * 255.0).astype(np.uint8)


def test_the_runtime_reconstructs_and_decodes_as_diffusers_does(exported, folders):
    import vaesdk

    model, bundle, _ = exported
    m = vaesdk.load(bundle)
    f = m.geometry.factor
    image = np.asarray(Image.open(folders["images"] / "wide.png").convert("RGB"))[: 8 * f, : 12 * f]
    x = torch.from_numpy(m.geometry.to_model_units(image[None]))
    with torch.no_grad():
        z = model.encode(x).latent_dist.mean if model.__class__.__name__ == "AutoencoderKL" else model.encode(x).latents
        theirs = _diffusers_uint8(model.decode(z).sample)
    ours = m.reconstruct(image)
    assert ours.shape == theirs.shape == (1, 8 * f, 12 * f, 3)
    assert np.abs(ours.astype(int) - theirs.astype(int)).max() <= 1  # float32 rounding at a bin's edge
    decoded = m.decode_with_info(z.numpy(), precision="fp32")
    assert decoded.precision == ["fp32"] and np.abs(decoded.images.astype(int) - theirs.astype(int)).max() <= 1


def test_the_float16_decoder_is_close_and_says_so(exported):
    import vaesdk

    model, bundle, _ = exported
    manifest = json.loads((bundle / "manifest.json").read_text())
    if model.__class__.__name__ != "AutoencoderKL":
        assert "variants" not in manifest  # exported without --fp16
        return
    entry = manifest["variants"]["fp16"]
    assert entry["decoder"]["file"] == "decoder-fp16.onnx" and entry["parity"]["worst_error_to_tolerance"] <= 1.0
    m = vaesdk.load(bundle)
    z = np.random.default_rng(0).standard_normal((2, 4, 6, 10)).astype(np.float32)
    half, full = m.decode_with_info(z, precision="fp16"), m.decode_with_info(z, precision="fp32")
    assert half.precision == ["fp16", "fp16"] and full.precision == ["fp32", "fp32"]
    assert np.abs(half.images.astype(int) - full.images.astype(int)).max() <= 8  # float16 rounding, in 1/255 units
    assert m.decode_with_info(z).precision == ["fp32", "fp32"]  # automatic: float16 on CUDA only


def _within_gate(ours: np.ndarray, theirs: torch.Tensor, what: str) -> None:
    theirs = theirs.detach().numpy()
    assert ours.shape == theirs.shape, what
    allowed = ATOL * max(1.0, float(np.abs(theirs).max())) + RTOL * np.abs(theirs)
    worst = float((np.abs(ours.astype(np.float64) - theirs) / allowed).max())
    assert worst <= 1.0, f"{what}: {worst:.3g}x the gate's tolerance"


def test_the_graphs_give_what_diffusers_gives_at_sizes_the_gate_did_not_see(exported, folders):
    model, bundle, _ = exported
    manifest = json.loads((bundle / "manifest.json").read_text())
    f = manifest["latent"]["factor"]
    encoder = ort.InferenceSession(str(bundle / "encoder.onnx"))
    decoder = ort.InferenceSession(str(bundle / "decoder.onnx"))
    emoji = np.stack([load_image(p, 64, 3) for p in sorted(EMOJI.glob("*.png"))])
    kl = isinstance(model, diffusers.AutoencoderKL)
    for height, width in ((6 * f, 6 * f), (10 * f, 7 * f), (4 * f, 14 * f)):
        pixels = np.stack([np.asarray(Image.fromarray(e).resize((width, height), Image.Resampling.BILINEAR)) for e in emoji[:3]])
        x = (pixels.transpose(0, 3, 1, 2).astype(np.float32) / 127.5 - 1.0).astype(np.float32)  # the image's range [-1, 1]
        outputs = encoder.run(None, {"x": x})
        with torch.no_grad():
            if kl:
                posterior = model.encode(torch.from_numpy(x)).latent_dist
                want = [posterior.mean, posterior.logvar]
            else:
                want = [model.encode(torch.from_numpy(x)).latents]
        assert [o.name for o in encoder.get_outputs()] == (["mean", "logvar"] if kl else ["mean"])
        for name, ours, theirs in zip(("mean", "logvar"), outputs, want):
            _within_gate(ours, theirs, f"encoder.{name} at {height}x{width}")
        assert outputs[0].shape == (3, 4, height // f, width // f)
        z = outputs[0]
        (image,) = decoder.run(None, {"z": z})
        with torch.no_grad():
            _within_gate(image, model.decode(torch.from_numpy(z)).sample, f"decoder.mean at {height}x{width}")
        assert image.shape == (3, 3, height, width)


def test_the_manifest_holds_the_geometry_scaling_and_record(exported, folders):
    model, bundle, output = exported
    config = dict(model.config)
    kl = isinstance(model, diffusers.AutoencoderKL)
    f = 2 if kl else 4
    manifest = read_bundle(bundle).manifest.data  # the reader's checks, operators included, pass
    assert manifest["format_version"] == FORMAT_VERSION == 3
    assert manifest["kind"] == ("vae" if kl else "ae")
    assert (manifest["likelihood"] or {}).get("type") == ("none" if kl else None)  # a deterministic decoder
    assert {k: manifest["image"][k] for k in ("multiple", "channels", "range")} == {"multiple": f, "channels": 3, "range": [-1, 1]}
    assert "height" not in manifest["image"] and "width" not in manifest["image"]
    latent = manifest["latent"]
    assert (latent["channels"], latent["factor"]) == (4, f)
    assert latent.get("scaling_factor", 1.0) == config["scaling_factor"] == (0.18215 if kl else 1.5)
    assert latent.get("shift_factor", 0.0) == (0.0 if kl else 0.25)  # AutoencoderKL's shift_factor null -> 0
    assert "kl_per_dim" not in latent and "gaussians" not in latent and manifest.get("anomaly") is None
    assert [o["name"] for o in manifest["encoder"]["outputs"]] == (["mean", "logvar"] if kl else ["mean"])
    assert manifest["encoder"]["inputs"][0]["shape"] == ["N", 3, "H", "W"]
    assert manifest["decoder"]["outputs"] == [{"name": "mean", "dtype": "float32", "shape": ["N", 3, "H", "W"]}]
    parity = manifest["parity"]
    assert parity["sizes"] == [[8 * f, 8 * f], [12 * f, 8 * f], [16 * f, 12 * f]]
    assert parity["worst_error_to_tolerance"] <= 1.0 and set(parity["by_size"]) == {f"{h}x{w}" for h, w in parity["sizes"]}
    training = manifest["training"]
    assert training["from"] == "diffusers" and training["class"] == type(model).__name__
    assert training["diffusers"] == diffusers.__version__ and training["config"]["latent_channels"] == 4
    assert training["config"]["_class_name"] == type(model).__name__ and "epochs" not in training
    # Folding these configurations' doubling layers would save 12.1% and 12.4% of their
    # multiply-adds, under export/upsample.MIN_SAVING: their graphs keep the repeated image.
    assert manifest["onnx"]["doubling_layers_folded"] == 0
    assert "no anomaly calibration" in output
    # The per-channel statistics: of the posterior means of every --images image at its own size.
    latents = []
    for path in sorted(folders["images"].glob("*.png")):
        x = torch.from_numpy(load_image(path, None, 3).transpose(2, 0, 1)[None].astype(np.float32) / 127.5 - 1.0)
        with torch.no_grad():
            z = model.encode(x).latent_dist.mean if kl else model.encode(x).latents
        latents.append(z[0].reshape(4, -1).double().numpy())
    z = np.concatenate(latents, axis=1)
    assert np.allclose(latent["channel_mean"], z.mean(axis=1), rtol=1e-4, atol=1e-5)
    assert np.allclose(latent["channel_std"], z.std(axis=1), rtol=1e-4, atol=1e-5)
    for role in ("encoder", "decoder"):
        ops = {n.op_type for n in onnx.load(str(bundle / f"{role}.onnx")).graph.node}
        assert ops <= OPERATORS, ops - OPERATORS


def _one_line_refusal(result, *needles: str) -> None:
    lines = result.output.strip().splitlines()
    assert result.exit_code != 0 and len(lines) == 1, result.output
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_other_classes_and_broken_folders_are_refused_in_one_line(folders, tmp_path):
    runner = CliRunner()

    def export(folder: Path, *extra: str):
        return runner.invoke(app, ["export", "--from", "diffusers", str(folder), "--images", str(folders["images"]), "--out", str(tmp_path / "b"), *extra])

    unet = diffusers.UNet2DModel(
        sample_size=8, block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4,
        down_block_types=("DownBlock2D",) * 2, up_block_types=("UpBlock2D",) * 2,
    )  # fmt: skip
    unet.save_pretrained(tmp_path / "unet")
    _one_line_refusal(export(tmp_path / "unet"), "UNet2DModel", "AutoencoderKL or AutoencoderTiny")

    _kl().save_pretrained(tmp_path / "kl")
    broken = tmp_path / "broken"
    shutil.copytree(tmp_path / "kl", broken)
    config = json.loads((broken / "config.json").read_text())
    config.update(block_out_channels=[8, 16, 32], down_block_types=["DownEncoderBlock2D"] * 3, up_block_types=["UpDecoderBlock2D"] * 3)
    (broken / "config.json").write_text(json.dumps(config))
    _one_line_refusal(export(broken), "could not rebuild AutoencoderKL", "size mismatch")

    (broken / "config.json").write_text("{not json")
    _one_line_refusal(export(broken), "config.json is not valid JSON")

    config.update(block_out_channels=[8, 16], down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2, in_channels=4)
    (broken / "config.json").write_text(json.dumps(config))
    _one_line_refusal(export(broken), "in_channels 4")

    shutil.rmtree(broken)
    broken.mkdir()
    shutil.copy(tmp_path / "kl" / "config.json", broken)  # the config without its weights
    _one_line_refusal(export(broken), "diffusion_pytorch_model.safetensors")

    _one_line_refusal(export(tmp_path / "kl", "--image-size", "64"), "--image-size does not apply to --from diffusers")
    _one_line_refusal(export(tmp_path), "is not a diffusers model folder")
    assert not (tmp_path / "b").exists() and not list(tmp_path.glob(".b.*"))
    # Python's export_from routes diffusers folders as the command does, with the same refusals.
    with pytest.raises(InvalidArgumentError, match=r"--channels does not apply to --from diffusers"):
        export_from("diffusers", str(tmp_path / "kl"), tmp_path / "b", images=folders["images"], channels=3)
    with pytest.raises(InvalidArgumentError, match=r"--fp16 applies to --from diffusers"):
        export_from("python", "x.py:f", tmp_path / "b", images=folders["images"], fp16=True)


def test_a_failing_parity_gate_writes_nothing(folders, tmp_path):
    _tiny().save_pretrained(tmp_path / "model")
    out, result = _export(tmp_path, folders, "--atol", "1e-12", "--rtol", "0")
    last = result.output.strip().splitlines()[-1]
    assert result.exit_code != 0 and "parity gate failed" in last and "worst: " in last, result.output
    assert not out.exists() and not list(tmp_path.glob(".bundle.*"))
