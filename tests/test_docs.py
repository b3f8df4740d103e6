"""The documentation site builds with `mkdocs build --strict` (no broken link, no missing
page or anchor, every API reference resolved), and what the pages promise about the docs
holds: the README is the short front page and links into them, every page is in the nav."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def nav_pages(nav) -> list[str]:
    out = []
    for entry in nav:
        for value in entry.values() if isinstance(entry, dict) else [entry]:
            out += nav_pages(value) if isinstance(value, list) else [value]
    return out


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    r = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert r.returncode == 0, f"mkdocs build --strict failed:\n{r.stderr[-5000:]}"
    return out


def mkdocs_config() -> dict:
    # mkdocs.yml holds no custom YAML tags, so the safe loader reads it.
    return yaml.safe_load((ROOT / "mkdocs.yml").read_text())


def test_every_page_is_in_the_nav_and_every_nav_entry_exists():
    pages = nav_pages(mkdocs_config()["nav"])
    assert len(pages) == len(set(pages))
    on_disk = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")}
    assert set(pages) == on_disk, f"in the nav only: {set(pages) - on_disk}; on disk only: {on_disk - set(pages)}"


@pytest.mark.docs
def test_the_site_builds_strictly_with_the_api_reference_and_the_openapi_document(site):
    reference = (site / "reference" / "index.html").read_text()
    for name in ("vaesdk.load", "Model", "sample", "score", "InvalidArgumentError", "read_inputs"):
        assert name in reference, f"the API reference lacks {name}"
    assert "n new images: latents drawn from" in reference  # Model.sample's docstring, rendered
    document = json.loads((site / "openapi.json").read_text())
    assert document["openapi"].startswith("3.") and "/v1/models/fashion-mnist/sample" in document["paths"]
    http = (site / "openapi" / "index.html").read_text()
    assert "/v1/models/fashion-mnist/sample" in http and "<!-- openapi-routes -->" not in http
    assert "swagger-ui" in http
    # The schema the bundle format page links is published with the site.
    schema = site / "repository" / "vaesdk" / "manifest.schema.json"
    assert json.loads(schema.read_text()) == json.loads((ROOT / "vaesdk" / "manifest.schema.json").read_text())


@pytest.mark.docs
def test_the_http_api_page_shows_every_route_of_every_bundled_model_in_full():
    import importlib.util

    import vaesdk

    spec = importlib.util.spec_from_file_location("site_hooks", DOCS / "hooks" / "site.py")
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)
    table = hooks.routes_table(hooks.openapi_document())
    for name in vaesdk.list_models():
        for route in ("", "/files/{file}", "/sample", "/decode", "/reconstruct", "/edit", "/encode", "/score"):
            assert f"`/v1/models/{name}{route}`" in table
    for row in table.splitlines()[2:]:
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", row)[1:-1]]
        assert len(cells) == 5 and cells[2].endswith("."), f"a route's description is cut: {row}"


def test_the_readme_is_the_short_front_page():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200, "the README is the front page; the guide lives in docs/"
    assert "vae sample --n 16" in readme and "./scripts/test" in readme
    assert len(re.findall(r"!\[[^\]]*\]\(([^)]+)\)", readme)) == 1, "the README shows one picture"
    linked = set(re.findall(r"\]\(docs/([a-z-]+\.md)[)#]", readme))
    assert set(nav_pages(mkdocs_config()["nav"])) - {"index.md"} <= linked, "the README's contents miss a docs page"
