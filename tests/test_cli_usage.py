"""What a newcomer meets first: --version, usage errors as one line, messages in command-line
words, install hints that work from a source checkout, `vae info` from the model's description."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import vaesdk
from vaesdk.cli.main import app
from vaesdk.base.errors import require_train_extra

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def vae(*args):
    return runner.invoke(app, [str(a) for a in args])


def one_error_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("vae: error: "), output
    return lines[0]


def test_version():
    r = vae("--version")
    assert r.exit_code == 0 and r.output.strip() == f"vae (vaesdk) {vaesdk.__version__}"


@pytest.mark.parametrize(
    "args,words",
    [
        (["sample", "--n", "abc"], ["--n", "'abc' is not a valid int", "vae sample -h"]),
        (["interpolate"], ["Missing argument", "vae interpolate -h"]),
        (["sample", "--bogus"], ["--bogus"]),
        (["no-such-command"], ["no-such-command"]),
        # Above the warm-up's fixed log-variance (-4.6) the run could not start; -inf would be NaN.
        (["train", "--logvar-min=-1"], ["--logvar-min", "-1", "-4.6"]),
        (["train", "--logvar-min=-inf"], ["--logvar-min", "-inf", "-30"]),
    ],
)
def test_usage_errors_are_one_line_with_exit_code_2(args, words):
    r = vae(*args)
    line = one_error_line(r.output)
    assert r.exit_code == 2
    for w in words:
        assert w in line


def test_usage_error_from_the_installed_command_is_one_line():
    done = subprocess.run([sys.executable, "-m", "vaesdk.cli.main", "sample", "--n", "abc"], capture_output=True, text=True)
    assert done.returncode == 2 and done.stdout == ""
    one_error_line(done.stderr)


def test_messages_use_command_line_words(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("taken.png").write_bytes(b"x")
    r = vae("sample", "--n", "1", "--seed", "0", "--out", "taken.png")
    line = one_error_line(r.output)
    assert r.exit_code == 6 and "--force" in line and "overwrite=True" not in line
    with pytest.raises(vaesdk.OutputError, match="overwrite=True"):  # the API's words for the API
        vaesdk.save_png("taken.png", np.zeros((2, 2, 1), np.uint8))


def test_install_hints_work_from_a_source_checkout():
    # vaesdk is not on PyPI: an extra is installed from the checkout or the wheel.
    message = str(require_train_extra(ImportError("no torch", name="torch")))
    assert "pip install '.[train]'" in message and f"vaesdk-{vaesdk.__version__}-py3-none-any.whl[train]" in message
    assert "vaesdk[train]" not in message and "\n" not in message


def test_every_command_summary_is_one_complete_line():
    """The command lists of `vae --help` and `vae directions --help` show each command's
    first paragraph: one line, a whole sentence."""
    import typer.main

    def commands(group, path):
        for name, command in getattr(group, "commands", {}).items():
            yield f"{path} {name}", command
            yield from commands(command, f"{path} {name}")

    for path, command in commands(typer.main.get_command(app), "vae"):
        summary = (command.short_help or command.help or "").strip().split("\n\n")[0]
        assert "\n" not in summary and summary.endswith("."), f"{path}: {summary!r}"
        assert len(summary) <= 100, f"{path}: {len(summary)} characters"


def test_traverse_range_reversed_gives_reversed_columns(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shirt = ROOT / "docs" / "images" / "inputs" / "shirt.png"
    up = vae("traverse", shirt, "--dims", "9", "--range", "-3", "3", "--steps", "3", "--scale", "1", "--out", "up.png")
    down = vae("traverse", shirt, "--dims", "9", "--range", "3", "-3", "--steps", "3", "--scale", "1", "--out", "down.png")
    assert up.exit_code == 0 and down.exit_code == 0, down.output
    a, b = (np.asarray(Image.open(p)) for p in ("up.png", "down.png"))
    # One row of three 28-pixel frames with 2-pixel padding: the frames come in reverse order.
    frames = lambda g: [g[2:30, 2 + 30 * i : 30 + 30 * i] for i in range(3)]  # noqa: E731
    assert all(np.array_equal(x, y) for x, y in zip(frames(a), frames(b)[::-1]))
    assert not np.array_equal(frames(a)[0], frames(a)[2])


def test_info_prints_the_model_description():
    r = vae("info", "--json", "--device", "cpu")
    assert r.exit_code == 0
    shown = json.loads(r.output)
    described = vaesdk.load(device="cpu").describe()
    for key in ("name", "kind", "latent_dim", "dims_by_usage", "priors", "default_prior", "active_dims", "directions"):
        assert shown[key] == json.loads(json.dumps(described[key]))
    text = vae("info", "--device", "cpu").output
    assert f"active dims {described['active_dims']} of {described['latent_dim']}" in text


def test_serve_without_its_extra_names_the_install(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_fastapi(name, *args, **kwargs):
        if name == "vaesdk.serve" or name.startswith("fastapi"):
            raise ImportError("No module named 'fastapi'", name="fastapi")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_fastapi)
    r = vae("serve")
    line = one_error_line(r.output)
    assert r.exit_code == 7 and "pip install '.[serve]'" in line


def test_the_server_stack_is_imported_only_by_vae_serve():
    code = "import sys, vaesdk, vaesdk.cli.main; print(sorted(m for m in ('fastapi', 'uvicorn', 'starlette', 'multipart', 'jsonschema') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
