"""`vae triton` and vaesdk.bundle.triton: a Triton model repository of a bundle's graphs.

The layout, the graphs copied byte for byte, every refusal (nothing written, nothing left
behind), and the command line. The `clients` test parses each config.pbtxt with protobuf's
text format into Triton's own ModelConfig message (tritonclient, in .venv-clients, so in a
subprocess), holds the parsed names, types and dims to the ONNX graphs, and runs each written
model.onnx with onnxruntime on a batch of 3 of the declared shapes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from typer.testing import CliRunner

import vaesdk
from vaesdk.base.errors import BundleError, InvalidArgumentError, ModelNotFoundError, OutputError
from vaesdk.bundle import triton
from vaesdk.bundle.onnx_proto import inspect_model
from vaesdk.bundle.reading import read_manifest
from vaesdk.bundle.registry import resolve
from vaesdk.bundle.triton import TritonSettings, write_triton_repository
from vaesdk.cli.main import app

ROOT = Path(__file__).resolve().parents[1]
CLIENTS_PYTHON = ROOT / ".venv-clients" / "bin" / "python"
BUNDLED = ["fashion-mnist", "emoji"]
ROLES = ("encoder", "decoder")

runner = CliRunner()


def vae(*args):
    return runner.invoke(app, [str(a) for a in args])


def files_under(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


def leftovers(parent: Path, keep: set[str]) -> list[str]:
    """Entries of `parent` other than `keep`: a partial or old folder left behind."""
    return sorted(p.name for p in parent.iterdir() if p.name not in keep)


@pytest.mark.parametrize("model", BUNDLED)
def test_the_layout_holds_the_bundles_graphs_byte_for_byte(model, tmp_path):
    out = tmp_path / "repo"
    repo = write_triton_repository(model, out)
    assert repo.path == out and [m.name for m in repo.models] == [f"{model}-encoder", f"{model}-decoder"]
    assert files_under(out) == {f"{model}-{role}/{f}" for role in ROLES for f in ("config.pbtxt", "1/model.onnx")}
    bundle = resolve(model)
    manifest = read_manifest(bundle)
    for role in ROLES:
        assert (out / f"{model}-{role}" / "1" / "model.onnx").read_bytes() == (bundle / manifest.file(role)["file"]).read_bytes()
        config = (out / f"{model}-{role}" / "config.pbtxt").read_text()
        assert f'name: "{model}-{role}"' in config and 'backend: "onnxruntime"' in config
    assert leftovers(tmp_path, {"repo"}) == []
    # Permissions by the umask, like any file the package writes (not the private temporary folder's).
    mask = os.umask(0o022)
    os.umask(mask)
    assert out.stat().st_mode & 0o777 == 0o777 & ~mask
    assert (out / f"{model}-encoder" / "1" / "model.onnx").stat().st_mode & 0o777 == 0o666 & ~mask


def test_a_bundle_of_spatial_latents_declares_open_sides(tmp_path):
    bundle = Path(__file__).resolve().parent / "data" / "tiny-kl"
    write_triton_repository(str(bundle), tmp_path / "repo")
    decoder = (tmp_path / "repo" / "tiny-kl-decoder" / "config.pbtxt").read_text()
    encoder = (tmp_path / "repo" / "tiny-kl-encoder" / "config.pbtxt").read_text()
    assert "dims: [ 4, -1, -1 ]" in decoder and "dims: [ 3, -1, -1 ]" in decoder and "dims: [ 3, -1, -1 ]" in encoder
    assert "(H and W multiples of 8) as float32 p * float32(1/255) * 2 - 1" in encoder and "pixel means in [-1, 1]" in decoder


def test_the_configuration_text_follows_the_settings(tmp_path):
    settings = TritonSettings(max_batch_size=8, instances=3, kind="gpu", queue_delay_us=0)
    repo = write_triton_repository("fashion-mnist", tmp_path / "repo", settings, name="fm.v2")
    assert [m.name for m in repo.models] == ["fm.v2-encoder", "fm.v2-decoder"]
    lines = {line.strip() for line in (tmp_path / "repo" / "fm.v2-decoder" / "config.pbtxt").read_text().splitlines()}
    for line in ("max_batch_size: 8", "count: 3", "kind: KIND_GPU", "max_queue_delay_microseconds: 0", 'name: "fm.v2-decoder"'):
        assert line in lines, line
    # The decoder's low-rank factor is declared with its rank: [R, C, H, W] without the batch axis.
    assert "dims: [ 16, 1, 28, 28 ]" in lines


@pytest.mark.parametrize("model", BUNDLED)
def test_the_client_steps_the_docs_give_around_the_raw_graphs_reproduce_vaesdk(model, tmp_path):
    # What a Triton client does (docs: pixels in, the raw graphs, pixels out), run here with
    # onnxruntime on the written model.onnx files, against the SDK's own encode and decode.
    sdk = vaesdk.load(model, device="cpu")
    images = sdk.sample(5, seed=0)  # uint8 [N, H, W, C]
    write_triton_repository(model, tmp_path / "repo")
    graphs = [tmp_path / "repo" / f"{model}-{role}" / "1" / "model.onnx" for role in ROLES]
    encoder, decoder = (ort.InferenceSession(str(g), providers=["CPUExecutionProvider"]) for g in graphs)
    x = (images.astype(np.float32) * np.float32(1 / 255)).transpose(0, 3, 1, 2)
    (z,) = encoder.run(["mean"], {"x": x})
    np.testing.assert_allclose(z, sdk.encode(images).mean, rtol=0, atol=1e-5)
    (mean,) = decoder.run(["mean"], {"z": z})
    pixels = np.rint(np.clip(mean, 0, 1) * np.float32(255)).astype(np.uint8).transpose(0, 2, 3, 1)
    np.testing.assert_array_equal(pixels, sdk.decode(z))


# ---- refusals: one error naming the value and the fix, nothing written or left behind ----------


def test_an_existing_folder_is_refused_without_force_and_replaced_with_it(tmp_path):
    out = tmp_path / "repo"
    write_triton_repository("emoji", out)
    before = files_under(out)
    with pytest.raises(OutputError, match="already exists and is not empty; pass force=True") as e:
        write_triton_repository("fashion-mnist", out)
    assert str(out) in str(e.value) and "--force" in e.value.cli_message
    assert files_under(out) == before
    write_triton_repository("fashion-mnist", out, force=True)
    assert {p.name for p in out.iterdir()} == {"fashion-mnist-encoder", "fashion-mnist-decoder"}
    assert leftovers(tmp_path, {"repo"}) == []


def test_an_empty_folder_is_filled(tmp_path):
    out = tmp_path / "repo"
    out.mkdir()
    write_triton_repository("fashion-mnist", out)
    assert len(files_under(out)) == 4


def test_force_replaces_only_a_model_repository(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(OutputError, match="holds 'notes.txt', which is not a Triton model folder"):
        write_triton_repository("fashion-mnist", out, force=True)
    assert (out / "notes.txt").read_text() == "keep me" and files_under(out) == {"notes.txt"}
    assert leftovers(tmp_path, {"mine"}) == []


def test_a_file_or_a_symbolic_link_at_out_is_refused(tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(OutputError, match="is a file"):
        write_triton_repository("fashion-mnist", a_file, force=True)
    assert a_file.read_text() == "x"
    target = tmp_path / "target"
    target.mkdir()
    link = tmp_path / "link"
    link.symlink_to(target)
    with pytest.raises(OutputError, match="symbolic link"):
        write_triton_repository("fashion-mnist", link)
    assert list(target.iterdir()) == [] and leftovers(tmp_path, {"file", "target", "link"}) == []


@pytest.mark.parametrize("out", [".", "sub/.."])
def test_a_path_that_names_no_folder_of_its_own_is_refused(out, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    with pytest.raises(OutputError, match="names no folder of its own; give a path that ends in the folder's name"):
        write_triton_repository("fashion-mnist", out)
    assert [p.name for p in tmp_path.iterdir()] == ["sub"] and list((tmp_path / "sub").iterdir()) == []


def test_an_unknown_model_lists_the_bundled_ones(tmp_path):
    with pytest.raises(ModelNotFoundError, match="unknown model 'no-such-model'; bundled models: .*fashion-mnist"):
        write_triton_repository("no-such-model", tmp_path / "repo")
    assert list(tmp_path.iterdir()) == []


def test_a_bundle_that_fails_its_checks_writes_nothing(bundle_copy, tmp_path):
    graph = bundle_copy / "encoder.onnx"
    data = bytearray(graph.read_bytes())
    data[-1] ^= 0xFF
    graph.write_bytes(bytes(data))
    parent = tmp_path / "out"
    parent.mkdir()
    with pytest.raises(BundleError, match="does not match its manifest"):
        write_triton_repository(bundle_copy, parent / "repo")
    assert list(parent.iterdir()) == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_batch_size": 0}, "max_batch_size must be in 1..65536, got 0"),
        ({"instances": True}, "instances must be an integer in 1..256, got True"),
        ({"kind": "tpu"}, "kind must be one of auto, cpu, gpu, got 'tpu'"),
        ({"queue_delay_us": -1}, "queue_delay_us must be in 0..10000000, got -1"),
    ],
)
def test_bad_settings_are_refused_by_name(kwargs, message):
    with pytest.raises(InvalidArgumentError, match=re.escape(message)):
        TritonSettings(**kwargs)


def test_a_bad_name_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(InvalidArgumentError, match=r"name '\.\./x' must be 1-64 letters"):
        write_triton_repository("fashion-mnist", tmp_path / "repo", name="../x")
    assert list(tmp_path.iterdir()) == []


def test_a_failure_while_writing_leaves_nothing_behind(tmp_path, monkeypatch):
    calls = []
    real = triton.write_atomic

    def failing(path, data, overwrite=False):
        calls.append(path)
        if len(calls) == 3:  # the decoder's config, after the whole encoder folder
            raise OutputError(f"cannot write {path}: No space left on device")
        return real(path, data, overwrite)

    monkeypatch.setattr(triton, "write_atomic", failing)
    out = tmp_path / "new" / "deeper" / "repo"
    with pytest.raises(OutputError, match="No space left"):
        write_triton_repository("fashion-mnist", out)
    assert len(calls) == 3 and list(tmp_path.iterdir()) == []  # the parents it made are gone too


def test_a_failure_while_replacing_keeps_the_old_repository(tmp_path, monkeypatch):
    out = tmp_path / "repo"
    write_triton_repository("emoji", out)
    before = {p: (out / p).read_bytes() for p in files_under(out)}
    real_rename = os.rename

    def failing_rename(src, dst):
        if Path(dst) == out:
            raise OSError(5, "Input/output error")
        return real_rename(src, dst)

    monkeypatch.setattr(triton.os, "rename", failing_rename)
    with pytest.raises(OutputError, match=f"cannot write {out}: Input/output error"):
        write_triton_repository("fashion-mnist", out, force=True)
    assert {p: (out / p).read_bytes() for p in files_under(out)} == before
    assert leftovers(tmp_path, {"repo"}) == []


# ---- the command line ------------------------------------------------------------------------


def test_the_command_writes_the_repository_and_says_how_to_serve_it(tmp_path):
    out = tmp_path / "repo"
    r = vae("triton", "fashion-mnist", "--out", out, "--kind", "cpu", "--instances", "2", "--max-batch-size", "16")
    assert r.exit_code == 0, r.output
    assert "fashion-mnist-encoder: x [1, 28, 28] -> mean [64], logvar [64]" in r.output
    assert "fashion-mnist-decoder: z [64] -> mean [1, 28, 28], logvar [1, 28, 28], factor [16, 1, 28, 28]" in r.output
    assert f"tritonserver --model-repository={out.resolve()}" in r.output
    config = (out / "fashion-mnist-encoder" / "config.pbtxt").read_text()
    assert "kind: KIND_CPU" in config and "count: 2" in config and "max_batch_size: 16" in config


def test_the_command_reports_json(tmp_path):
    r = vae("triton", str(ROOT / "tests" / "data" / "tiny-ae"), "--out", tmp_path / "repo", "--name", "tiny", "--json")
    assert r.exit_code == 0, r.output
    report = json.loads(r.output)
    assert report["repository"] == str(tmp_path / "repo") and report["kind"] == "auto" and report["max_batch_size"] == 64
    encoder, decoder = report["models"]
    assert encoder == {"name": "tiny-encoder", "role": "encoder", "inputs": [{"name": "x", "data_type": "TYPE_FP32", "dims": [1, 28, 28]}],
                       "outputs": [{"name": "mean", "data_type": "TYPE_FP32", "dims": [8]}]}  # fmt: skip
    assert [t["name"] for t in decoder["outputs"]] == ["mean"]


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--kind", "tpu"], 2, "'tpu' is not one of 'auto', 'cpu', 'gpu'"),
        (["--max-batch-size", "0"], 2, "0 is not in the range 1<=x<=65536"),
        (["--name", "a b"], 2, "name 'a b' must be 1-64 letters"),
    ],
)
def test_the_command_refuses_bad_options_in_one_line(tmp_path, args, code, message):
    r = vae("triton", "fashion-mnist", "--out", tmp_path / "repo", *args)
    assert r.exit_code == code and message in r.output and r.output.count("\n") == 1, r.output
    assert list(tmp_path.iterdir()) == []


def test_the_command_refuses_an_existing_repository_without_force(tmp_path):
    out = tmp_path / "repo"
    assert vae("triton", "emoji", "--out", out).exit_code == 0
    r = vae("triton", "fashion-mnist", "--out", out)
    assert r.exit_code == 6 and r.output == f"vae: error: {out} already exists and is not empty; pass --force to replace it, or choose another --out\n"
    assert vae("triton", "fashion-mnist", "--out", out, "--force").exit_code == 0
    assert sorted(p.name for p in out.iterdir()) == ["fashion-mnist-decoder", "fashion-mnist-encoder"]


def test_the_command_needs_no_torch_onnx_or_triton_package(tmp_path):
    # A wheel user writes a repository with the runtime alone: block the heavy packages and run it.
    script = f"""
import sys, importlib.abc
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "onnx", "tritonclient", "google"):
            raise ImportError(f"No module named {{name!r}}", name=name)
sys.meta_path.insert(0, Block())
from typer.testing import CliRunner
from vaesdk.cli.main import app
r = CliRunner().invoke(app, ["triton", "emoji", "--out", {str(tmp_path / "repo")!r}])
print(r.exit_code, r.output.splitlines()[0])
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == f"0 wrote a Triton model repository to {tmp_path / 'repo'}"
    assert len(files_under(tmp_path / "repo")) == 4


# ---- Triton's own reading of the configurations ------------------------------------------------

PARSE = """
import json, sys
from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2
out = {}
for path in sys.argv[1:]:
    with open(path, encoding="utf-8") as f:
        config = text_format.Parse(f.read(), model_config_pb2.ModelConfig())  # unknown fields raise
    out[path] = json_format.MessageToDict(config, preserving_proto_field_name=True)
print(json.dumps(out))
"""
# Triton's data types as numpy and onnxruntime name them (independent of the module's table).
NUMPY_TYPES = {"TYPE_FP32": (np.float32, "tensor(float)")}


def parsed_configs(paths: list[Path]) -> dict[str, dict]:
    if not CLIENTS_PYTHON.exists():
        pytest.fail(f"{CLIENTS_PYTHON} is missing: make it with scripts/test (tests/protocol-clients.txt)")
    done = subprocess.run([str(CLIENTS_PYTHON), "-c", PARSE, *map(str, paths)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


@pytest.mark.clients
@pytest.mark.parametrize(
    ("model", "settings"),
    [
        ("fashion-mnist", TritonSettings()),
        ("emoji", TritonSettings(max_batch_size=4, instances=2, kind="gpu", queue_delay_us=0)),
        (str(ROOT / "tests" / "data" / "tiny-ae"), TritonSettings(kind="cpu")),
    ],
)
def test_triton_reads_each_configuration_as_the_graph_it_describes(model, settings, tmp_path):
    out = tmp_path / "repo"
    repo = write_triton_repository(model, out, settings)
    configs = parsed_configs([out / m.name / "config.pbtxt" for m in repo.models])
    for m in repo.models:
        config = configs[str(out / m.name / "config.pbtxt")]
        graph = (out / m.name / "1" / "model.onnx").read_bytes()
        info = inspect_model(graph)
        assert config["name"] == m.name  # Triton wants the folder's name
        assert config["backend"] == "onnxruntime" and config.get("default_model_filename") == "model.onnx"
        assert config["max_batch_size"] == settings.max_batch_size
        # Proto3 leaves defaults out of the dict: KIND_AUTO is kind's 0, a delay of 0 is absent.
        (group,) = config["instance_group"]
        assert (group["count"], group.get("kind", "KIND_AUTO")) == (settings.instances, f"KIND_{settings.kind.upper()}")
        assert int(config["dynamic_batching"].get("max_queue_delay_microseconds", 0)) == settings.queue_delay_us
        for side, specs in (("input", info.inputs), ("output", info.outputs)):
            declared = [(t["name"], t["data_type"], [int(d) for d in t["dims"]]) for t in config[side]]
            # Every graph tensor in order, float32, with the batch axis left to max_batch_size.
            assert declared == [(s.name, "TYPE_FP32", list(s.shape[1:])) for s in specs], (m.name, side)
            assert all(s.dtype == "float32" and isinstance(s.shape[0], str) for s in specs)

        # The declared shapes and types run: a batch of 3 of the declared input, outputs as declared.
        assert settings.max_batch_size >= 3
        session = ort.InferenceSession(graph, providers=["CPUExecutionProvider"])
        assert [(i.name, i.type) for i in session.get_inputs()] == [(t["name"], NUMPY_TYPES[t["data_type"]][1]) for t in config["input"]]
        rng = np.random.default_rng(0)
        feed = {t["name"]: rng.random((3, *map(int, t["dims"]))).astype(NUMPY_TYPES[t["data_type"]][0]) for t in config["input"]}
        names = [t["name"] for t in config["output"]]
        results = session.run(names, feed)
        for t, value in zip(config["output"], results):
            assert value.dtype == NUMPY_TYPES[t["data_type"]][0] and value.shape == (3, *map(int, t["dims"])), (m.name, t["name"])
            assert np.isfinite(value).all()


@pytest.mark.clients
def test_tritons_parser_refuses_a_misspelt_field(tmp_path):
    # The check above would pass anything if the parser ignored what it does not know.
    bad = tmp_path / "config.pbtxt"
    bad.write_text('name: "m"\nbackend: "onnxruntime"\nmax_batch_sise: 8\n')
    done = subprocess.run([str(CLIENTS_PYTHON), "-c", PARSE, str(bad)], capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and "max_batch_sise" in done.stderr
