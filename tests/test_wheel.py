"""A user's install of the released files: the sdist and wheel built from a clean clone of the
repository at HEAD carry the page's onnxruntime-web runtime, and `pip install 'WHEEL[serve]'`
into a fresh environment + `vae serve` gives a page that draws samples for every bundled model
in headless Chromium, with no npm, no repository and no network behind the page.

The fast tests check the committed web/vendor/ against its pins; the slow one builds, installs
and drives the page (a few minutes: a build, an install and one Chromium)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WEB = ROOT / "web"
VENDOR = WEB / "vendor"
PINS = json.loads((VENDOR / "vendor.json").read_text())
DOCS_VENDOR = WEB / "docs-vendor"  # Swagger UI for `vae serve`'s /docs
DOCS_PINS = json.loads((DOCS_VENDOR / "vendor.json").read_text())
# The wheel must stay small enough for a second bundled model of about 25 MB (docs/performance.md).
MAX_WHEEL_MB = 40


def run(*args, cwd=None, env=None, timeout=900) -> subprocess.CompletedProcess:
    r = subprocess.run([str(a) for a in args], capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout)
    assert r.returncode == 0, f"{' '.join(map(str, args))} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---- the committed files against their pins (fast) ---------------------------------------------


def test_vendor_holds_the_locked_onnxruntime_web_with_its_licence():
    lock = json.loads((WEB / "package-lock.json").read_text())["packages"][f"node_modules/{PINS['package']}"]
    assert (PINS["package"], PINS["version"], PINS["integrity"]) == ("onnxruntime-web", lock["version"], lock["integrity"])
    on_disk = sorted(p.name for p in VENDOR.iterdir() if p.name != "vendor.json")
    assert on_disk == sorted(PINS["files"]), "web/vendor/ holds files vendor.json does not pin (or lacks pinned ones)"
    for name, pin in PINS["files"].items():
        data = (VENDOR / name).read_bytes()
        assert (sha256(data), len(data)) == (pin["sha256"], pin["bytes"]), f"web/vendor/{name} is not the pinned file"
    licence = (VENDOR / "LICENSE").read_text()
    assert licence.startswith("MIT License") and "Copyright (c) Microsoft Corporation" in licence
    assert f"ONNX Runtime Web v{PINS['version']}" in (VENDOR / "ort.wasm.min.js").read_text()[:200]


def test_docs_vendor_holds_the_locked_swagger_ui_with_its_licence():
    lock = json.loads((WEB / "package-lock.json").read_text())["packages"][f"node_modules/{DOCS_PINS['package']}"]
    assert (DOCS_PINS["package"], DOCS_PINS["version"], DOCS_PINS["integrity"]) == ("swagger-ui-dist", lock["version"], lock["integrity"])
    on_disk = sorted(p.name for p in DOCS_VENDOR.iterdir() if p.name != "vendor.json")
    assert on_disk == sorted(DOCS_PINS["files"]), "web/docs-vendor/ holds files vendor.json does not pin (or lacks pinned ones)"
    for name, pin in DOCS_PINS["files"].items():
        data = (DOCS_VENDOR / name).read_bytes()
        assert (sha256(data), len(data)) == (pin["sha256"], pin["bytes"]), f"web/docs-vendor/{name} is not the pinned file"
    assert "Apache License" in (DOCS_VENDOR / "LICENSE").read_text()


def test_the_page_loads_only_vendored_runtime_files():
    """index.html's script and the wasm files vae.js points onnxruntime-web at are all vendored."""
    html = (WEB / "index.html").read_text()
    assert '<script src="vendor/ort.wasm.min.js"></script>' in html
    assert 'wasmPaths = new URL("vendor/"' in (WEB / "vae.js").read_text()
    assert {"ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm"} <= set(PINS["files"])


@pytest.mark.web
@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed (scripts/test installs npm)")
def test_the_vendor_check_refuses_a_changed_file(tmp_path):
    site = tmp_path / "web"
    site.mkdir()
    for name in ("copy-vendor.mjs", "package-lock.json"):
        shutil.copy(WEB / name, site / name)
    shutil.copytree(VENDOR, site / "vendor")
    shutil.copytree(DOCS_VENDOR, site / "docs-vendor")
    assert run("node", site / "copy-vendor.mjs", "--check").stdout.splitlines() == [
        f"vendor/ holds onnxruntime-web {PINS['version']} as locked", f"docs-vendor/ holds swagger-ui-dist {DOCS_PINS['version']} as locked",
    ]  # fmt: skip
    with open(site / "vendor" / "ort.wasm.min.js", "a") as f:
        f.write("\n")
    r = subprocess.run(["node", str(site / "copy-vendor.mjs"), "--check"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and r.stderr.startswith("web/copy-vendor.mjs: vendor/ort.wasm.min.js has sha256 ")
    assert "restore it from git or run `npm run vendor` in web/" in r.stderr


# ---- build from a clean clone, install, serve, open the page (slow) ----------------------------


def head_commit() -> str:
    return run("git", "-C", ROOT, "rev-parse", "HEAD").stdout.strip()


@pytest.fixture(scope="module")
def clean_clone(tmp_path_factory) -> Path:
    """The repository at HEAD as `git clone` gives it: no node_modules, no build outputs, no
    files git ignores."""
    clone = tmp_path_factory.mktemp("clone") / "vaesdk"
    run("git", "clone", "--quiet", "--no-checkout", ROOT, clone)
    run("git", "-C", clone, "checkout", "--quiet", head_commit())
    assert not (clone / "web" / "node_modules").exists()
    return clone


@pytest.fixture(scope="module")
def built(clean_clone, tmp_path_factory) -> dict[str, Path]:
    """`python -m build` on the clone: the sdist, then the wheel built from that sdist."""
    out = tmp_path_factory.mktemp("dist")
    run(sys.executable, "-m", "build", "--outdir", out, clean_clone, timeout=1200)
    (wheel,) = out.glob("vaesdk-*.whl")
    (sdist,) = out.glob("vaesdk-*.tar.gz")
    return {"wheel": wheel, "sdist": sdist}


@pytest.mark.slow
def test_the_wheel_and_sdist_carry_the_pinned_runtime(built):
    with zipfile.ZipFile(built["wheel"]) as whl:
        for name, pin in PINS["files"].items():
            assert sha256(whl.read(f"vaesdk/web/vendor/{name}")) == pin["sha256"], name
        for name, pin in DOCS_PINS["files"].items():
            assert sha256(whl.read(f"vaesdk/web/docs-vendor/{name}")) == pin["sha256"], name
        names = whl.namelist()
    assert not [n for n in names if n.startswith("vaesdk/web/") and ("node_modules" in n or n.endswith("package-lock.json"))]
    with tarfile.open(built["sdist"]) as sdist:
        (top,) = {m.name.split("/")[0] for m in sdist.getmembers()}
        for name, pin in PINS["files"].items():
            assert sha256(sdist.extractfile(f"{top}/web/vendor/{name}").read()) == pin["sha256"], name
        for name, pin in DOCS_PINS["files"].items():
            assert sha256(sdist.extractfile(f"{top}/web/docs-vendor/{name}").read()) == pin["sha256"], name
    size_mb = built["wheel"].stat().st_size / 1e6
    assert size_mb <= MAX_WHEEL_MB, f"the wheel is {size_mb:.1f} MB; keep it within {MAX_WHEEL_MB} MB"


@pytest.mark.slow
def test_a_build_without_the_vendored_runtime_is_refused(clean_clone, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(clean_clone, broken, ignore=shutil.ignore_patterns(".git"))
    (broken / "web" / "vendor" / "ort-wasm-simd-threaded.wasm").unlink()
    for target in ("--wheel", "--sdist"):
        r = subprocess.run(
            [sys.executable, "-m", "build", "--no-isolation", target, "--outdir", str(tmp_path / "out"), str(broken)],
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert r.returncode != 0, f"{target} built without web/vendor/ort-wasm-simd-threaded.wasm"
        assert "vaesdk build: web/vendor/ort-wasm-simd-threaded.wasm is missing; restore web/vendor/ from git" in r.stdout + r.stderr
    assert not list(tmp_path.glob("out/vaesdk-*")), "a refused build left a file behind"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, server: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"vae serve exited with {server.returncode}:\n{server.stderr.read()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"vae serve did not answer {url} within {seconds} s")


@pytest.mark.slow
@pytest.mark.web
def test_the_installed_wheel_serves_a_working_page_for_every_bundled_model(built, tmp_path):
    if not (Path("/usr/bin/chromium").exists() or os.environ.get("CHROMIUM")):
        pytest.fail("the page test needs Chromium (/usr/bin/chromium; Debian package chromium); ./scripts/test installs it")
    if not (WEB / "node_modules" / "playwright-core").is_dir():
        pytest.fail("the page test drives Chromium with web/node_modules/playwright-core; run `npm ci` in web/ (./scripts/test does)")
    venv = tmp_path / "venv"
    run(getattr(sys, "_base_executable", sys.executable), "-m", "venv", venv)
    py, vae = venv / "bin" / "python", venv / "bin" / "vae"
    run(py, "-m", "pip", "install", "-q", "--disable-pip-version-check", f"{built['wheel']}[serve]", timeout=1800)
    site = Path(run(py, "-c", "import vaesdk.web, os; print(os.path.dirname(vaesdk.web.__file__))", cwd=tmp_path).stdout.strip())
    assert site.is_relative_to(venv), site  # the installed copy, not this checkout
    assert (site / "vendor" / "ort-wasm-simd-threaded.wasm").is_file()
    models = json.loads(run(vae, "models", "--json", cwd=tmp_path).stdout)["models"]
    assert models, "the wheel bundles no model"
    port = free_port()
    # Outside the checkout, so nothing can come from it: the page and the models are the wheel's.
    args = [str(vae), "serve", "--port", str(port)] + [a for m in models for a in ("-m", m)]
    server = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(f"{base}/healthz", server)
        with urllib.request.urlopen(f"{base}/v1/models", timeout=10) as r:
            assert [m["name"] for m in json.load(r)["models"]] == models
        out = tmp_path / "page.json"
        run("node", WEB / "test" / "served.mjs", base, out, *models, timeout=300)
    finally:
        server.terminate()
        server.wait(timeout=60)
    seen = json.loads(out.read_text())
    assert [s["model"] for s in seen] == models
    for s in seen:
        assert s["errors"] == [], (s["model"], s["errors"])
        assert s["status"].startswith("ready:"), (s["model"], s["status"])
        assert "error" not in s["body"].lower(), (s["model"], s["body"][:500])
        assert s["title"].startswith(f"{s['model']} (") and s["priors"], (s["title"], s["priors"])
        assert len(s["samples"]) == 16 and min(s["samples"]) > 5, (s["model"], s["samples"])  # 16 drawn, none blank
