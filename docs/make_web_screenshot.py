"""Regenerate docs/screenshots/web-page.png: the browser page, served by `vae serve`'s app, in
headless Chromium (needs Debian's chromium and `npm ci` in web/).

    python docs/make_web_screenshot.py
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

import vaesdk
from vaesdk.serve import create_app

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from webserver import running_app  # noqa: E402


def main() -> None:
    model = vaesdk.load(device="cpu")
    out = ROOT / "docs" / "screenshots" / "web-page.png"
    with tempfile.TemporaryDirectory() as tmp, running_app(create_app([model])) as base:
        z_file, result = Path(tmp) / "z.json", Path(tmp) / "out.json"
        z_file.write_text(json.dumps(np.zeros((1, model.latent_dim)).tolist()))
        page = ROOT / "web" / "test" / "page.mjs"
        subprocess.run(["node", str(page), f"{base}/", str(z_file), str(result), str(out)], check=True)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
