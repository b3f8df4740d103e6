"""Build-time check of the page's onnxruntime-web files and /docs' Swagger UI files (the rest
of the build is pyproject.toml).

A wheel or sdist without web/vendor/ would install a page that cannot run (`vae serve` shows
"onnxruntime-web is not loaded"), and one without web/docs-vendor/ a blank /docs, so building
one is refused: every file pinned in each folder's vendor.json must be there with its sha256,
at the version web/package-lock.json locks.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist

ROOT = Path(__file__).resolve().parent
WEB = ROOT / "web"
FOLDERS = ("vendor", "docs-vendor")  # web/copy-vendor.mjs writes both


def fix(folder: str) -> str:
    return f"restore web/{folder}/ from git, or run `npm ci && npm run vendor` in web/"


class VendorError(SystemExit):
    pass


def check_web_vendor() -> None:
    for folder in FOLDERS:
        check_folder(folder)


def check_folder(folder: str) -> None:
    pins = WEB / folder / "vendor.json"
    if not pins.is_file():
        raise VendorError(f"vaesdk build: {pins.relative_to(ROOT)} is missing, so its files would be too; {fix(folder)}")
    record = json.loads(pins.read_text())
    lock = WEB / "package-lock.json"
    if lock.is_file():  # a source checkout or an sdist
        locked = json.loads(lock.read_text())["packages"].get(f"node_modules/{record['package']}", {})
        if (locked.get("version"), locked.get("integrity")) != (record["version"], record["integrity"]):
            raise VendorError(
                f"vaesdk build: web/{folder}/ holds {record['package']} {record['version']} but web/package-lock.json "
                f"locks {locked.get('version')}; run `npm ci && npm run vendor` in web/"
            )
    for name, pin in record["files"].items():
        path = WEB / folder / name
        if not path.is_file():
            raise VendorError(f"vaesdk build: web/{folder}/{name} is missing; {fix(folder)}")
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != pin["sha256"]:
            raise VendorError(f"vaesdk build: web/{folder}/{name} has sha256 {digest}, pinned {pin['sha256']}; {fix(folder)}")


class BuildPy(build_py):
    def run(self) -> None:
        check_web_vendor()
        super().run()


class Sdist(sdist):
    def run(self) -> None:
        check_web_vendor()
        super().run()


setup(cmdclass={"build_py": BuildPy, "sdist": Sdist})
