"""web/vae.js, the page's implementation of the bundle format, passes every conformance vector
of conformance/v2/ and conformance/v3/ that applies to it (all but the score figures, which the
page does not compute, and the float16 decoder's files, which it does not read), under Node with
onnxruntime-web's wasm build; and ajv in strict mode compiles the manifest schema and gives each
manifest vector the verdict Python's jsonschema gives (conformance/run-vae-js.mjs).

Needs node, `npm ci` in web/ and in conformance/ (scripts/test runs both)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.web

ROOT = Path(__file__).resolve().parents[1]
CONFORMANCE = ROOT / "conformance"


def test_vae_js_passes_the_conformance_vectors(tmp_path):
    missing = [what for what, ok in (
        ("node", shutil.which("node")),
        ("web/node_modules/onnxruntime-web (run `npm ci` in web/)", (ROOT / "web" / "node_modules" / "onnxruntime-web").is_dir()),
        ("conformance/node_modules/ajv (run `npm ci` in conformance/)", (CONFORMANCE / "node_modules" / "ajv").is_dir()),
    ) if not ok]  # fmt: skip
    assert not missing, f"the harness needs: {', '.join(missing)}; ./scripts/test installs them"
    out = tmp_path / "results.json"
    done = subprocess.run(
        ["node", "--disable-warning=MODULE_TYPELESS_PACKAGE_JSON", str(CONFORMANCE / "run-vae-js.mjs"), str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    results = json.loads(out.read_text())
    index = json.loads((CONFORMANCE / "v2" / "index.json").read_text())
    index3 = json.loads((CONFORMANCE / "v3" / "index.json").read_text())
    # Not for vae.js: scores (the page computes none), pixel draws from uniforms (Bernoulli,
    # continuous Bernoulli) and the bundle cases of the float16 decoder's file; every other
    # vector, each likelihood kind's decode and encode and every section of v3/ included.
    skipped = len(index["scores"]) + sum("eps" not in c for c in index["pixel_draws"])
    skipped3 = sum(c.get("variant") == "fp16" for c in index3["bundle_cases"])
    total = sum(len(v) for i in (index, index3) for v in i.values() if isinstance(v, list))
    assert results["failed"] == 0 and results["failures"] == []
    assert results["passed"] == total - skipped - skipped3, results["by_section"]
    assert results["not_applicable"] == skipped + skipped3
    assert results["by_section"]["v2/pixel_draws"]["passed"] == 4  # three Gaussians and the fixed-sigma one
    for section in (k for k, v in index3.items() if isinstance(v, list)):
        assert results["by_section"][f"v3/{section}"]["passed"] > 0, section
