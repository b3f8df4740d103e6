"""Doubling layers computed at the input's resolution (vaesdk.export.upsample): the same output
as repeating pixels 2x2 and convolving, and only the layers that compute exactly that are replaced."""

from __future__ import annotations

import copy

import pytest

pytestmark = pytest.mark.train

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

import numpy as np  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from vaesdk.export.onnx import export_graphs  # noqa: E402
from vaesdk.export.upsample import NearestUpsampleConv, fold_doubling  # noqa: E402
from vaesdk.training.config import ModelConfig  # noqa: E402
from vaesdk.training.model import VAE  # noqa: E402


@pytest.mark.parametrize("shape", [(2, 3, 4, 6), (1, 5, 1, 1), (3, 2, 7, 2), (1, 4, 9, 9)])
@pytest.mark.parametrize("bias", [True, False])
def test_four_small_convolutions_equal_repeating_then_convolving(shape, bias):
    torch.manual_seed(0)
    conv = nn.Conv2d(shape[1], 6, 3, padding=1, bias=bias).double()
    x = torch.randn(*shape, dtype=torch.float64)
    expected = conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
    got = NearestUpsampleConv(conv)(x)
    assert got.shape == expected.shape == (shape[0], 6, 2 * shape[2], 2 * shape[3])
    assert torch.allclose(got, expected, rtol=0, atol=1e-12)


def _doubling(conv: nn.Module, mode: str = "nearest", scale: float = 2.0) -> nn.Sequential:
    return nn.Sequential(nn.SiLU(), nn.Upsample(scale_factor=scale, mode=mode), conv)


@pytest.mark.parametrize(
    "layers",
    [
        _doubling(nn.Conv2d(3, 4, 5, padding=2)),  # a 5x5 kernel
        _doubling(nn.Conv2d(3, 4, 3, padding=0)),  # no padding
        _doubling(nn.Conv2d(3, 4, 3, padding=1, stride=2)),
        _doubling(nn.Conv2d(3, 3, 3, padding=1, groups=3)),
        _doubling(nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect")),
        _doubling(nn.Conv2d(3, 4, 3, padding=1), mode="bilinear"),
        _doubling(nn.Conv2d(3, 4, 3, padding=1), scale=3.0),
        nn.Sequential(nn.Upsample(scale_factor=2.0), nn.SiLU(), nn.Conv2d(3, 4, 3, padding=1)),  # not adjacent
    ],
)
def test_layers_that_compute_something_else_are_left_alone(layers):
    before = [type(m) for m in layers]
    assert fold_doubling(layers) == 0
    assert [type(m) for m in layers] == before


@pytest.mark.parametrize("upsample,expected", [("resize", 2), ("transpose", 0)])
def test_the_trainers_decoder_folds_and_decodes_the_same(upsample, expected):
    torch.manual_seed(0)
    model = VAE(ModelConfig(image_size=16, channels=3, latent_dim=8, widths=(8, 16, 16), res_blocks=1, upsample=upsample)).eval()
    z = torch.randn(5, 8)
    with torch.no_grad():
        reference = model.decoder(z)
        assert fold_doubling(model.decoder) == expected
        folded = model.decoder(z)
    for a, b in zip(folded, reference):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)


def test_the_exported_decoder_has_no_repeated_image(tmp_path):
    import onnxruntime as ort

    torch.manual_seed(0)
    model = VAE(ModelConfig(image_size=16, channels=1, latent_dim=8, widths=(8, 16, 16), covariance="diagonal", rank=0)).eval()
    paths, folded = export_graphs(model, tmp_path)
    assert folded == 2
    ops = {n.op_type for n in onnx.load(str(paths["decoder"])).graph.node}
    assert "Resize" not in ops and "Conv" in ops
    z = np.random.default_rng(0).standard_normal((3, 8)).astype(np.float32)
    session = ort.InferenceSession(str(paths["decoder"]), providers=["CPUExecutionProvider"])
    mean = session.run(["mean"], {"z": z})[0]
    with torch.no_grad():
        expected = model.decoder(torch.from_numpy(z))[0].numpy()
    assert np.allclose(mean, expected, rtol=1e-5, atol=1e-6)
    assert all(type(m) is not NearestUpsampleConv for m in model.modules())  # the model itself is unchanged


# ---- a bundle's decoder exported again from its run (scripts/refresh_decoder.py) ---------------


def _with_unfolded_decoder(trained_vae_bundle, tmp_path):
    """A copy of the trained bundle whose decoder.onnx comes from the exporter before folding:
    the repeated image and a 3x3 convolution at the doubled size."""
    import hashlib
    import json
    import shutil

    from vaesdk.bundle.editing import write_manifest
    from vaesdk.export.onnx import export_module
    from vaesdk.training.train import load_checkpoint

    old = tmp_path / "old"
    shutil.copytree(trained_vae_bundle, old)
    model, _ = load_checkpoint(trained_vae_bundle.parent / "run-vae")
    manifest = json.loads((old / "manifest.json").read_text())
    names = [o["name"] for o in manifest["decoder"]["outputs"]]
    with torch.no_grad():
        export_module(model.decoder.eval(), torch.randn(2, model.config.latent_dim), "z", names, old / "decoder.onnx")
    blob = (old / "decoder.onnx").read_bytes()
    manifest["decoder"] = {**manifest["decoder"], "sha256": hashlib.sha256(blob).hexdigest(), "bytes": len(blob)}
    write_manifest(old, manifest)
    assert "Resize" in {n.op_type for n in onnx.load(str(old / "decoder.onnx")).graph.node}
    return old


def test_refreshing_a_decoder_keeps_everything_but_the_graph(trained_vae_bundle, tmp_path):
    import json
    import shutil

    import vaesdk
    from vaesdk.export.pipeline import refresh_decoder, remeasure

    old = _with_unfolded_decoder(trained_vae_bundle, tmp_path)
    run = trained_vae_bundle.parent / "run-vae"
    change = refresh_decoder(old, run, out=tmp_path / "new")
    new = tmp_path / "new"
    assert {n.op_type for n in onnx.load(str(new / "decoder.onnx")).graph.node}.isdisjoint({"Resize"})
    before, after = (json.loads((b / "manifest.json").read_text()) for b in (old, new))
    assert after["onnx"]["decoder_refreshed"] == change and after["onnx"]["doubling_layers_folded"] == 2
    assert 0 < max(change["max_abs_change"].values()) < 1e-4, change  # float32 rounding, not another model
    assert after["decoder"]["sha256"] != before["decoder"]["sha256"]
    kept = ("encoder", "latent", "likelihood", "image", "training", "directions")
    assert {k: after.get(k) for k in kept} == {k: before.get(k) for k in kept}
    # What the manifest says of the decoder's outputs is the new graph's: measuring it again
    # changes nothing; and it was measured on the same images, with the same settings.
    shutil.copytree(new, tmp_path / "again")
    remeasure(tmp_path / "again")
    assert json.loads((tmp_path / "again" / "manifest.json").read_text()) == after
    new_calibration, old_calibration = after["anomaly"]["calibration"], before["anomaly"]["calibration"]
    assert {k: new_calibration[k] for k in ("source", "n", "prior")} == {k: old_calibration[k] for k in ("source", "n", "prior")}
    assert after["metrics"].keys() == before["metrics"].keys()
    for key in ("dataset", "split", "images", "seed", "iw_samples", "probe_train_images", "active_dims"):
        assert after["metrics"][key] == before["metrics"][key], key
    assert after["metrics"]["elbo_bpd"] == pytest.approx(before["metrics"]["elbo_bpd"], abs=1e-4)
    assert (new / "encoder.onnx").read_bytes() == (old / "encoder.onnx").read_bytes()
    a, b = vaesdk.load(old, device="cpu"), vaesdk.load(new, device="cpu")
    assert np.abs(a.sample(8, seed=3).astype(int) - b.sample(8, seed=3).astype(int)).max() <= 1


def test_measuring_a_bundle_again_gives_what_export_recorded(trained_vae_bundle, tmp_path):
    """`remeasure` reproduces export's calibration and evaluation from the manifest alone: on
    a bundle whose graphs have not changed, every figure comes out as recorded."""
    import json
    import shutil

    from vaesdk.export.pipeline import remeasure

    copy = tmp_path / "copy"
    shutil.copytree(trained_vae_bundle, copy)
    before = json.loads((copy / "manifest.json").read_text())
    before["metrics"]["quality"] = {"kept": "as it was"}  # benchmarks/fid/frechet.py's figures are not measured here
    (copy / "manifest.json").write_text(json.dumps(before))
    metrics = remeasure(copy)
    after = json.loads((copy / "manifest.json").read_text())
    assert metrics == after["metrics"]
    assert after == before


def test_measuring_again_refuses_a_bundle_without_a_run(bundle_copy):
    import json

    from vaesdk.base.errors import InvalidArgumentError
    from vaesdk.export.pipeline import remeasure

    before = (bundle_copy / "manifest.json").read_bytes()
    data = json.loads(before)
    data.pop("training", None)
    (bundle_copy / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(InvalidArgumentError, match="records no training run"):
        remeasure(bundle_copy)
    assert sorted(p.name for p in bundle_copy.parent.iterdir()) == ["bundle"]  # no copy left behind


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d["anomaly"]["calibration"].update(source="image folder held-out/"), "calibrated on image folder held-out/.*vae calibrate"),
        (lambda d: d["metrics"].update(dataset="image folder", split="my-test-images/"), "measured on image folder \\(my-test-images/\\)"),
        (lambda d: d["training"]["dataset"].update(train_images=2000), "not the data its run recorded"),
    ],
    ids=["calibrated-on-other-images", "measured-on-other-images", "other-data-found"],
)
def test_measuring_again_refuses_figures_it_cannot_reproduce(trained_vae_bundle, tmp_path, change, message):
    """A score calibrated on a folder of the user's (`vae calibrate --held-out`), metrics
    measured on other images (`vae export --data FOLDER`), or a run whose data has changed
    since: nothing is measured again on the wrong images."""
    import json
    import shutil

    from vaesdk.base.errors import InvalidArgumentError
    from vaesdk.export.pipeline import remeasure

    copy = tmp_path / "copy"
    shutil.copytree(trained_vae_bundle, copy)
    data = json.loads((copy / "manifest.json").read_text())
    change(data)
    (copy / "manifest.json").write_text(json.dumps(data))
    before = (copy / "manifest.json").read_bytes()
    with pytest.raises(InvalidArgumentError, match=message):
        remeasure(copy)
    assert (copy / "manifest.json").read_bytes() == before


def test_a_failed_measurement_leaves_the_bundle_as_it_was(trained_vae_bundle, tmp_path, monkeypatch):
    import shutil

    import vaesdk.export.pipeline as pipeline

    copy = tmp_path / "copy"
    shutil.copytree(trained_vae_bundle, copy)
    before = {p.name: p.read_bytes() for p in copy.iterdir()}

    def broken(*args, **kwargs):
        raise RuntimeError("the evaluation failed")

    monkeypatch.setattr(pipeline, "_add_evaluation", broken)  # after the calibration was written to the copy
    with pytest.raises(RuntimeError, match="the evaluation failed"):
        pipeline.remeasure(copy)
    assert {p.name: p.read_bytes() for p in copy.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy"]  # the partial copy is gone


def test_a_direction_added_while_measuring_again_is_kept(trained_vae_bundle, tmp_path, monkeypatch):
    """A manifest write made while a bundle is measured again (here a direction, added between
    the bundle's reading and the swap) is never lost: the swap is refused, the bundle keeps it,
    and no copy is left behind."""
    import json
    import shutil

    import vaesdk.export.pipeline as pipeline
    from vaesdk.base.errors import OutputError
    from vaesdk.bundle.editing import add_direction

    copy = tmp_path / "copy"
    shutil.copytree(trained_vae_bundle, copy)
    evaluate = pipeline._add_evaluation

    def meanwhile(*args, **kwargs):
        add_direction(copy, "added-meanwhile", np.ones(json.loads((copy / "manifest.json").read_text())["latent"]["dim"]))
        return evaluate(*args, **kwargs)

    monkeypatch.setattr(pipeline, "_add_evaluation", meanwhile)
    with pytest.raises(OutputError, match="manifest.json changed while this ran.*run the command again"):
        pipeline.remeasure(copy)
    assert "added-meanwhile" in json.loads((copy / "manifest.json").read_text())["directions"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy"]


def test_refreshing_refuses_another_run_and_an_existing_copy(trained_vae_bundle, trained_lowrank_bundle, tmp_path):
    from vaesdk.base.errors import InvalidArgumentError, OutputError
    from vaesdk.export.pipeline import refresh_decoder

    old = _with_unfolded_decoder(trained_vae_bundle, tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(OutputError, match="already exists"):
        refresh_decoder(old, trained_vae_bundle.parent / "run-vae", out=old)
    with pytest.raises(InvalidArgumentError, match="not the run"):
        refresh_decoder(old, trained_lowrank_bundle.parent / "run-lowrank", out=tmp_path / "new")
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written, nothing left behind


def test_folding_is_kept_only_where_it_saves_enough():
    from vaesdk.export.upsample import MIN_SAVING, folded_copy, multiply_adds

    torch.manual_seed(0)
    trainer = VAE(ModelConfig(image_size=16, channels=1, latent_dim=8, widths=(8, 16, 16), covariance="diagonal", rank=0)).eval().decoder
    z = torch.randn(2, 8)
    folded, count = folded_copy(trainer, z)
    assert count == 2 and folded is not trainer
    assert 1 - multiply_adds(folded, z) / multiply_adds(trainer, z) > 0.5  # 16/36 of nearly all its work
    # A decoder whose doubling layers are a small part of its work keeps them: a resize up block
    # followed by six more 3x3 convolutions at the doubled size.
    small = nn.Sequential(nn.Upsample(scale_factor=2.0), nn.Conv2d(4, 4, 3, padding=1), *[nn.Conv2d(4, 4, 3, padding=1) for _ in range(6)])
    x = torch.randn(1, 4, 5, 5)
    trial = copy.deepcopy(small)
    assert fold_doubling(trial) == 1
    assert 1 - multiply_adds(trial, x) / multiply_adds(small, x) < MIN_SAVING  # 20/36 of one layer in seven
    assert folded_copy(small, x) == (small, 0)


def test_diffusers_doubling_layers_fold_and_export_at_any_size(tmp_path):
    import onnxruntime as ort

    diffusers = pytest.importorskip("diffusers")
    from vaesdk.export.diffusers import Decoder
    from vaesdk.export.onnx import export_module

    torch.manual_seed(0)
    kl = diffusers.AutoencoderKL(
        block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4, latent_channels=4,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
    ).eval()  # fmt: skip
    tiny = diffusers.AutoencoderTiny(
        encoder_block_out_channels=(8, 8, 8), decoder_block_out_channels=(8, 8, 8), num_encoder_blocks=(1, 1, 1), num_decoder_blocks=(1, 1, 1), latent_channels=4
    ).eval()  # fmt: skip
    for model, count in ((kl, 1), (tiny, 2)):
        decoder = Decoder(model).eval()
        folded = copy.deepcopy(decoder)
        assert fold_doubling(folded) == count
        path = tmp_path / f"{type(model).__name__}.onnx"
        with torch.no_grad():
            export_module(folded, torch.randn(2, 4, 4, 3), "z", ["mean"], path, sides=1)
        assert "Resize" not in {n.op_type for n in onnx.load(str(path)).graph.node}
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        for h, w in ((5, 7), (8, 8), (1, 2)):
            z = torch.randn(1, 4, h, w)
            with torch.no_grad():
                expected = decoder(z)[0].numpy()
            got = session.run(["mean"], {"z": z.numpy()})[0]
            assert got.shape == expected.shape and np.allclose(got, expected, rtol=1e-4, atol=1e-5)
