"""The runtime never imports torch (nor the training-side onnx/safetensors), proven in fresh
interpreters; the torch side says what to install when it is missing."""

import subprocess
import sys
import textwrap

import pytest

HEAVY = ("torch", "onnx", "safetensors", "onnxscript")


def run_python(code: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_import_and_api_do_not_import_torch(tmp_path, tiny_vae_bundle):
    r = run_python(
        f"""
        import sys, vaesdk
        m = vaesdk.load({str(tiny_vae_bundle)!r})
        x = m.sample(4, seed=0)
        m.edit(x, dim=1, delta=1.0); m.score(x, k=2); m.traverse(seed=0)
        d = vaesdk.load()
        d.sample(2, seed=0)
        print(",".join(n for n in {HEAVY!r} if n in sys.modules) or "clean")
        """,
        tmp_path,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "clean"


def test_runtime_cli_commands_do_not_import_torch(tmp_path, tiny_vae_bundle):
    r = run_python(
        f"""
        import sys
        from typer.testing import CliRunner
        from vaesdk.cli.main import app
        runner = CliRunner()
        for args in (["sample", "--n", "4", "--seed", "0"], ["edit", "samples.png", "--dim", "1", "--delta", "2"],
                     ["info"], ["models"], ["directions"], ["reconstruct", "samples.png"],
                     ["traverse", "--seed", "1"], ["score", "samples.png", "--k", "2", "-m", {str(tiny_vae_bundle)!r}]):
            r = runner.invoke(app, args)
            assert r.exit_code == 0, (args, r.output)
        print(",".join(n for n in {HEAVY!r} if n in sys.modules) or "clean")
        """,
        tmp_path,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "clean"


def test_train_without_torch_says_what_to_install(tmp_path):
    r = run_python(
        """
        import sys, importlib.abc
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("torch", "safetensors", "onnx"):
                    raise ImportError(f"No module named {name!r}", name=name)
        sys.meta_path.insert(0, Block())
        from typer.testing import CliRunner
        from vaesdk.cli.main import app
        for args in (["train", "--limit", "10"], ["export", "run", "--out", "b"]):
            r = CliRunner().invoke(app, args)
            print(r.exit_code, r.output.strip())
        """,
        tmp_path,
    )
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 2
    for line in lines:
        assert line.startswith("7 vae: error:") and "pip install" in line and "train" in line


def test_a_missing_runtime_dependency_is_named_with_the_fix(monkeypatch):
    import importlib.util

    from vaesdk import requirements

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in ("PIL", "onnxruntime") else real(name, *a))
    with pytest.raises(ModuleNotFoundError, match=r"^vaesdk needs onnxruntime, pillow, which this Python \(.+\) lacks; install vaesdk with its dependencies: pip install \. in a source checkout, or pip install the vaesdk wheel file") as info:
        requirements.require_runtime()
    assert info.value.name == "onnxruntime" and "\n" not in str(info.value)
