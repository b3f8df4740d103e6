"""MkDocs hooks for the documentation site (mkdocs.yml: `hooks:`).

- openapi.json: the service's OpenAPI document, generated at build time from the app that
  `vae serve` runs (serving every bundled model, as it does when given no --model), as it
  serves it at /openapi.json, so the HTTP API page always shows the routes as serve/app.py
  declares them, each model's own; the page renders it with Swagger UI and a route table.
- Links from a page to a repository file outside docs/ ("../vaesdk/manifest.schema.json")
  publish that file under repository/ in the site and point the link there, so every link
  works on the site and `mkdocs build --strict` still refuses links to files that do not exist.
"""

from __future__ import annotations

import json
import posixpath
import re
from pathlib import Path

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[2]
OPENAPI = "openapi.json"
ROUTES_MARKER = "<!-- openapi-routes -->"
# A Markdown link or image whose target climbs out of docs/: ](../path) or ](../path#anchor).
OUTSIDE_LINK = re.compile(r"\]\((\.\./[^)\s#]+)(#[^)\s]*)?\)")
_document: dict | None = None


def openapi_document() -> dict:
    global _document
    if _document is None:
        import vaesdk
        from vaesdk.serve import create_app
        from vaesdk.serve.settings import bundled_names

        _document = create_app([vaesdk.load(name, device="cpu") for name in bundled_names()]).openapi()
    return _document


def repository_target(page_src: str, link: str) -> str | None:
    """The repository path a ../ link from page_src names, if it is a file outside docs/."""
    inside_docs = posixpath.normpath(posixpath.join(posixpath.dirname(page_src), link))
    target = posixpath.normpath(posixpath.join("docs", inside_docs))
    if target.startswith("../") or target.startswith("docs/"):
        return None
    return target if (ROOT / target).is_file() else None


def on_files(files: Files, config) -> Files:
    files.append(File.generated(config, OPENAPI, content=json.dumps(openapi_document(), indent=1)))
    published: set[str] = set()
    for page in [f for f in files if f.src_uri.endswith(".md") and f.abs_src_path]:
        text = Path(page.abs_src_path).read_text(encoding="utf-8")
        for link, _ in OUTSIDE_LINK.findall(text):
            target = repository_target(page.src_uri, link)
            if target and target not in published:
                published.add(target)
                files.append(File.generated(config, f"repository/{target}", abs_src_path=str(ROOT / target)))
    return files


def on_page_markdown(markdown: str, page, config, files) -> str:
    src = page.file.src_uri

    def rewrite(m: re.Match) -> str:
        target = repository_target(src, m.group(1))
        if target is None:
            return m.group(0)  # left as written: the strict build reports it if it is broken
        rel = posixpath.relpath(f"repository/{target}", posixpath.dirname(src) or ".")
        return f"]({rel}{m.group(2) or ''})"

    markdown = OUTSIDE_LINK.sub(rewrite, markdown)
    if ROUTES_MARKER in markdown:
        markdown = markdown.replace(ROUTES_MARKER, routes_table(openapi_document()))
    return markdown


def _media(content: dict | None) -> str:
    return ", ".join(f"`{t}`" for t in (content or {})) or "-"


def route_summary(op: dict) -> str:
    """What a route does, for a Markdown table cell: its docstring (FastAPI's description,
    which says more than the summary made from its name), whose first paragraph may span
    several source lines, joined into one line, its pipes escaped."""
    what = (op.get("description") or op.get("summary") or "").strip()
    return " ".join(what.split("\n\n")[0].split()).replace("|", "\\|")


def routes_table(doc: dict) -> str:
    """One row per route: method, path, summary, the request body's media types and every
    status the document declares with its media types."""
    rows = ["| method | path | what it does | request body | answers |", "|---|---|---|---|---|"]
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method not in {"get", "post", "put", "patch", "delete"}:
                continue
            body = _media(op.get("requestBody", {}).get("content")) if "requestBody" in op else "-"
            answers = "; ".join(f"{code} {_media(r.get('content'))}" for code, r in op.get("responses", {}).items())
            rows.append(f"| `{method.upper()}` | `{path}` | {route_summary(op)} | {body} | {answers} |")
    return "\n".join(rows)
