"""The `vae` command line through typer's CliRunner: exit codes, messages and the files written."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from vaesdk.cli.main import app
from vaesdk.base.errors import InvalidArgumentError
from vaesdk.imaging.images import save_png

runner = CliRunner()


def vae(*args, input=None):
    return runner.invoke(app, [str(a) for a in args], input=input)


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="module")
def pictures(fashion_test, tmp_path_factory):
    """A folder of three real test images as PNG files."""
    folder = tmp_path_factory.mktemp("pictures")
    for i in range(3):
        save_png(folder / f"item{i}.png", fashion_test.images[i])
    return folder


def png(path):
    with Image.open(path) as im:
        im.load()
        return np.asarray(im)


def test_sample_writes_a_grid_and_never_overwrites_by_default(workdir, tiny_vae_bundle):
    r = vae("sample", "--n", 16, "--seed", 0, "-m", tiny_vae_bundle, "--scale", 1)
    assert r.exit_code == 0, r.output
    grid = png(workdir / "samples.png")
    assert grid.shape == (4 * 28 + 5 * 2, 4 * 28 + 5 * 2)
    assert "samples.png" in r.output
    again = vae("sample", "--n", 16, "--seed", 0, "-m", tiny_vae_bundle, "--scale", 1)
    assert again.exit_code == 0 and (workdir / "samples-1.png").exists()
    np.testing.assert_array_equal(png(workdir / "samples-1.png"), grid)  # same seed, same picture


def test_sample_out_dir_writes_one_file_per_image(workdir, tiny_vae_bundle):
    r = vae("sample", "--n", 5, "--seed", 1, "--out-dir", "many", "-m", tiny_vae_bundle, "--json")
    assert r.exit_code == 0, r.output
    payload = json.loads(r.stdout)
    assert payload["seed"] == 1 and len(payload["outputs"]) == 5
    assert sorted(p.name for p in (workdir / "many").iterdir()) == [f"sample-{i}.png" for i in range(5)]
    assert png(workdir / "many" / "sample-0.png").shape == (28, 28)


def test_sample_without_seed_prints_the_seed_it_drew(workdir, tiny_vae_bundle):
    r = vae("sample", "--n", 2, "-m", tiny_vae_bundle)
    assert r.exit_code == 0 and "pass --seed" in r.output


def test_explicit_output_is_not_overwritten_without_force(workdir, tiny_vae_bundle):
    (workdir / "mine.png").write_bytes(b"precious")
    r = vae("sample", "--n", 2, "--seed", 0, "-o", "mine.png", "-m", tiny_vae_bundle)
    assert r.exit_code == 6 and "--force" in r.output
    assert (workdir / "mine.png").read_bytes() == b"precious"
    assert vae("sample", "--n", 2, "--seed", 0, "-o", "mine.png", "-m", tiny_vae_bundle, "--force").exit_code == 0
    assert png(workdir / "mine.png").ndim == 2


@pytest.mark.parametrize(
    "args,code,needle",
    [
        (["sample", "--n", "0"], 2, "--n must be at least 1"),
        (["sample", "--n", "5000"], 2, "--out-dir"),
        (["sample", "--temperature", "nan"], 2, "temperature"),
        (["sample", "--truncation", "-1"], 2, "truncation"),
        (["sample", "-m", "no-such-model"], 4, "unknown model 'no-such-model'"),
        (["sample", "--device", "tpu"], 2, "device must be"),
        (["sample", "-o", "grid.jpg"], 2, "must end in .png"),
        (["traverse", "--dims", "0,99", "--seed", "0"], 2, "out of range"),
        (["traverse", "--dims", "a,b"], 2, "comma-separated"),
    ],
)
def test_bad_arguments_give_one_line_errors(workdir, tiny_vae_bundle, args, code, needle):
    if "-m" not in args:
        args = [*args, "-m", str(tiny_vae_bundle)]
    r = vae(*args)
    assert r.exit_code == code, r.output
    assert needle in r.output
    assert "Traceback" not in r.output
    assert r.output.strip().count("\n") <= 1


def test_debug_switch_lets_the_error_through_and_does_not_leak_into_the_next_run(workdir, tiny_vae_bundle):
    """With --debug the SDK's exception itself leaves the command (its traceback is shown);
    without it, the same error is a one-line message and exit code 2. The stderr of a real
    process is tested in test_arguments.py."""
    r = vae("--debug", "sample", "--n", "0", "-m", tiny_vae_bundle)
    assert isinstance(r.exception, InvalidArgumentError) and "--n must be at least 1" in str(r.exception)
    r = vae("sample", "--n", "0", "-m", tiny_vae_bundle)
    assert isinstance(r.exception, SystemExit) and r.exit_code == 2
    assert r.output == "vae: error: --n must be at least 1, got 0\n"


def test_edit_writes_next_to_cwd_and_matches_the_api(workdir, pictures, tiny_vae_bundle):
    import vaesdk

    r = vae("edit", pictures / "item0.png", "--dim", 3, "--delta", 2, "-m", tiny_vae_bundle)
    assert r.exit_code == 0, r.output
    out = workdir / "item0.edit.png"
    assert "item0.edit.png" in r.output
    expected = vaesdk.load(tiny_vae_bundle, device="cpu").edit(pictures / "item0.png", dim=3, delta=2.0)[0]
    np.testing.assert_array_equal(png(out), expected[:, :, 0])


def test_edit_keeps_going_past_a_bad_file(workdir, pictures, tiny_vae_bundle):
    folder = workdir / "in"
    shutil.copytree(pictures, folder)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    r = vae("edit", folder, "--dim", 0, "--delta", 1, "--out-dir", "out", "-m", tiny_vae_bundle)
    assert r.exit_code == 3
    assert "broken.png" in r.output and "3 image(s) done, 1 failed" in r.output
    assert sorted(p.name for p in (workdir / "out").iterdir()) == ["item0.edit.png", "item1.edit.png", "item2.edit.png"]


def test_edit_validates_arguments_before_reading(workdir, pictures, tiny_vae_bundle):
    r = vae("edit", pictures / "item0.png", "--dim", 99, "-m", tiny_vae_bundle)
    assert r.exit_code == 2 and "0..7" in r.output
    r = vae("edit", pictures / "item0.png", "-m", tiny_vae_bundle)
    assert r.exit_code == 2 and "--dim" in r.output
    r = vae("edit", pictures / "item0.png", pictures / "item1.png", "--dim", 1, "-o", "x.png", "-m", tiny_vae_bundle)
    assert r.exit_code == 2 and "--out-dir" in r.output


def test_edit_pipes_from_stdin_to_stdout(workdir, pictures, tiny_vae_bundle):
    data = (pictures / "item1.png").read_bytes()
    r = runner.invoke(app, ["edit", "-", "--dim", "1", "--delta", "1", "-o", "-", "-m", str(tiny_vae_bundle)], input=data)
    assert r.exit_code == 0, r.output
    assert r.stdout_bytes.startswith(b"\x89PNG")


def test_reconstruct_side_by_side(workdir, pictures, tiny_vae_bundle):
    r = vae("reconstruct", pictures / "item2.png", "--side-by-side", "-m", tiny_vae_bundle)
    assert r.exit_code == 0, r.output
    pair = png(workdir / "item2.recon.png")
    assert pair.shape == (28 + 2, 2 * 28 + 3)
    np.testing.assert_array_equal(pair[1:29, 1:29], png(pictures / "item2.png"))


def test_interpolate_and_traverse_write_strips_and_grids(workdir, pictures, tiny_vae_bundle):
    r = vae("interpolate", pictures / "item0.png", pictures / "item1.png", "--steps", 5, "--scale", 1,
            "--frames-dir", "frames", "-m", tiny_vae_bundle)  # fmt: skip
    assert r.exit_code == 0, r.output
    assert png(workdir / "interpolation.png").shape == (28 + 4, 5 * 28 + 6 * 2)
    assert len(list((workdir / "frames").iterdir())) == 5
    r = vae("traverse", pictures / "item0.png", "--dims", "0,1,2", "--steps", 4, "--scale", 1, "-m", tiny_vae_bundle, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["dims"] == [0, 1, 2]
    assert png(workdir / "traversal.png").shape == (3 * 28 + 4 * 2, 4 * 28 + 5 * 2)


def test_embed_to_csv_npy_and_npz(workdir, pictures, tiny_vae_bundle):
    import vaesdk

    m = vaesdk.load(tiny_vae_bundle, device="cpu")
    want = m.embed([pictures / f"item{i}.png" for i in range(3)])
    r = vae("embed", pictures, "-m", tiny_vae_bundle)
    assert r.exit_code == 0, r.output
    lines = r.stdout.strip().splitlines()
    assert lines[0].startswith("file,mean_0") and len(lines) == 4
    assert vae("embed", pictures, "-o", "f.npy", "--logvar", "-m", tiny_vae_bundle).exit_code == 0
    np.testing.assert_allclose(np.load(workdir / "f.npy"), want, rtol=1e-6)
    assert np.load(workdir / "f.logvar.npy").shape == (3, 8)
    assert vae("embed", pictures, "-o", "f.npz", "-m", tiny_vae_bundle).exit_code == 0
    with np.load(workdir / "f.npz") as z:
        assert list(z["files"]) == [str(pictures / f"item{i}.png") for i in range(3)]


def test_score_json_matches_the_api(workdir, pictures, tiny_vae_bundle):
    import vaesdk

    r = vae("score", pictures / "item0.png", "--k", 16, "--json", "-m", tiny_vae_bundle)
    assert r.exit_code == 0, r.output
    got = json.loads(r.stdout)["scores"][0]
    want = vaesdk.load(tiny_vae_bundle, device="cpu").score(pictures / "item0.png", k=16, seed=0)
    assert got["iw_bpd"] == pytest.approx(float(want.iw_bpd[0]))
    assert vae("score", pictures, "-o", "s.csv", "--k", 4, "-m", tiny_vae_bundle).exit_code == 0
    assert (workdir / "s.csv").read_text().splitlines()[0] == "file,elbo_bpd,iw_bpd,anomaly,p_value"


def test_plain_autoencoder_samples_from_its_fitted_gaussian_and_refuses_the_standard_prior(workdir, tiny_ae_bundle):
    r = vae("sample", "-m", tiny_ae_bundle, "--n", "2", "--seed", "0", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["prior"] == "aggregate"
    r = vae("sample", "-m", tiny_ae_bundle, "--prior", "standard")
    assert r.exit_code == 2 and "plain autoencoder" in r.output


def test_directions_list_and_add(workdir, bundle_copy, fashion_test):
    r = vae("directions", "-m", bundle_copy)
    assert r.exit_code == 0 and "trouser" in r.output
    for name, label in (("a", 0), ("b", 1)):
        d = workdir / name
        for i, img in enumerate(fashion_test.images[fashion_test.labels == label][:10]):
            save_png(d / f"{i}.png", img)
    r = vae("directions", "add", "shirt-to-trouser", "--from", "a", "--to", "b", "-m", bundle_copy)
    assert r.exit_code == 0, r.output
    assert "shirt-to-trouser" in vae("directions", "-m", bundle_copy).output
    r = vae("edit", "b/0.png", "--direction", "shirt-to-trouser", "--delta", "-1", "-m", bundle_copy)
    assert r.exit_code == 0, r.output
    r = vae("edit", "b/0.png", "--direction", "nope", "-m", bundle_copy)
    assert r.exit_code == 2 and "shirt-to-trouser" in r.output


def test_info_and_models(workdir, tiny_vae_bundle):
    r = vae("info", "-m", tiny_vae_bundle, "--json")
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout)
    assert info["device"] == "cpu" and info["latent_dim"] == 8 and "CPUExecutionProvider" in info["providers"]
    assert "runs on     cpu" in vae("info", "-m", tiny_vae_bundle).output
    r = vae("models")
    assert r.exit_code == 0 and "fashion-mnist  (default)" in r.output


def test_eval_prints_the_figures(workdir, tiny_vae_bundle):
    r = vae("eval", "--limit", 200, "--k", 4, "--json", "-m", tiny_vae_bundle)
    assert r.exit_code == 0, r.output
    result = json.loads(r.stdout)
    for key in ("elbo_bpd", "iw_bpd", "recon_mse", "recon_psnr", "probe_accuracy"):
        assert np.isfinite(result[key])
    assert result["iw_bpd"] < result["elbo_bpd"]


def test_same_stem_inputs_never_overwrite_each_other_in_one_run(workdir, pictures, tiny_vae_bundle):
    for sub in ("a", "b"):
        (workdir / sub).mkdir()
        shutil.copy(pictures / f"item{0 if sub == 'a' else 1}.png", workdir / sub / "x.png")
    r = vae("reconstruct", "a/x.png", "b/x.png", "--out-dir", "rec", "--force", "-m", tiny_vae_bundle)
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in (workdir / "rec").iterdir()) == ["x.recon-1.png", "x.recon.png"]
    assert not np.array_equal(png(workdir / "rec" / "x.recon.png"), png(workdir / "rec" / "x.recon-1.png"))


def test_seeded_edits_do_not_depend_on_the_batch_size(workdir, pictures, tiny_vae_bundle):
    args = ["edit", pictures, "--dim", 2, "--sample-latent", "--sample-pixels", "--seed", 5, "-m", tiny_vae_bundle]
    assert vae(*args, "--out-dir", "big", "--batch-size", 256).exit_code == 0
    assert vae(*args, "--out-dir", "small", "--batch-size", 1).exit_code == 0
    for i in range(3):
        np.testing.assert_array_equal(png(workdir / "big" / f"item{i}.edit.png"), png(workdir / "small" / f"item{i}.edit.png"))


def test_directions_subcommand_inherits_the_group_model(workdir, bundle_copy, pictures):
    r = vae("directions", "-m", bundle_copy, "add", "mine", "--from", pictures / "item0.png", "--to", pictures / "item1.png")
    assert r.exit_code == 0, r.output
    assert "mine" in vae("directions", "-m", bundle_copy).output


def test_score_file_format_follows_its_suffix(workdir, pictures, tiny_vae_bundle):
    r = vae("score", pictures / "item0.png", "--k", 2, "-o", "s.csv", "--json", "-m", tiny_vae_bundle)
    assert r.exit_code == 0, r.output
    assert (workdir / "s.csv").read_text().startswith("file,elbo_bpd,iw_bpd")


def test_embed_refuses_before_writing_anything_when_one_target_exists(workdir, pictures, tiny_vae_bundle):
    (workdir / "f.logvar.npy").write_bytes(b"keep")
    r = vae("embed", pictures, "-o", "f.npy", "--logvar", "-m", tiny_vae_bundle)
    assert r.exit_code == 6 and "f.logvar.npy" in r.output
    assert not (workdir / "f.npy").exists() and (workdir / "f.logvar.npy").read_bytes() == b"keep"


def test_unexpected_failures_are_one_line_with_the_debug_hint(workdir, tiny_vae_bundle, monkeypatch):
    import vaesdk.runtime.model

    def boom(self, *args, **kwargs):
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(vaesdk.runtime.model.Model, "iter_sample", boom)
    r = vae("sample", "--n", 2, "--seed", 0, "-m", tiny_vae_bundle)
    assert r.exit_code == 1
    assert r.output.strip() == "vae: internal error: RuntimeError: simulated bug (rerun as `vae --debug ...` for the traceback)"


def test_bad_argument_fails_before_a_seed_is_announced(workdir, tiny_vae_bundle):
    r = vae("sample", "--temperature", "-1", "-m", tiny_vae_bundle)
    assert r.exit_code == 2 and "seed" not in r.output and "temperature" in r.output


def test_a_folder_named_like_the_default_model_does_not_hijack_it(workdir):
    (workdir / "fashion-mnist").mkdir()  # e.g. a dataset folder
    r = vae("info", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["name"] == "fashion-mnist"
    r = vae("info", "-m", "./fashion-mnist")
    assert r.exit_code == 4 and "manifest" in r.output
