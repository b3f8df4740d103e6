"""Golden outputs: seeded commands on each bundled model give exactly the pinned pixels and
scores (tests/golden/<model>.json), and the docs' pictures are what
docs/make_examples.sh makes today. After a deliberate model change, run
`scripts/regenerate-golden`."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from golden import MODEL_CASES, SCORE_FIELDS, SCORE_RTOL, compute, golden_path, pixels_from_record
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
REGENERATE = "the bundled model's outputs changed; if that is intended, run scripts/regenerate-golden and commit the result"


MODEL_NAMES = list(MODEL_CASES)


@pytest.fixture(scope="module", params=MODEL_NAMES)
def model_name(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def golden(model_name) -> dict:
    return json.loads(golden_path(model_name).read_text())


@pytest.fixture(scope="module")
def now(model_name) -> dict:
    return compute(model_name)


def test_every_bundled_model_has_golden_outputs():
    import vaesdk

    assert sorted(vaesdk.list_models()) == sorted(MODEL_NAMES)
    assert sorted(p.stem for p in golden_path().parent.glob("*.json")) == sorted(MODEL_NAMES)


def test_golden_outputs_belong_to_the_bundled_model(golden, now, model_name):
    for key in ("model", "encoder_sha256", "decoder_sha256", "dims_by_usage", "inputs"):
        assert now[key] == golden[key], f"{key}: {REGENERATE}"
    assert sorted(golden["commands"]) == sorted(MODEL_CASES[model_name])


CASE_IDS = [(m, c) for m, cases in MODEL_CASES.items() for c in cases if "--json" not in cases[c]]


@pytest.mark.parametrize("model_name, case", CASE_IDS, ids=[f"{m}-{c}" for m, c in CASE_IDS], indirect=["model_name"])
def test_seeded_images_match_the_golden_pixels(golden, now, case):
    want, got = golden["commands"][case], now["commands"][case]
    assert got["command"] == want["command"]
    if got["sha256"] != want["sha256"]:
        a, b = pixels_from_record(want), pixels_from_record(got)
        if a.shape != b.shape:
            raise AssertionError(f"{want['command']}: shape {b.shape}, pinned {a.shape}; {REGENERATE}")
        diff = np.abs(a.astype(int) - b.astype(int))
        raise AssertionError(
            f"{want['command']}: {np.count_nonzero(diff)} of {diff.size} pixels differ (at most {diff.max()} levels); {REGENERATE}"
        )


def test_seeded_scores_match_the_golden_figures(golden, now):
    want, got = golden["commands"]["score"], now["commands"]["score"]
    assert [s["file"] for s in got["scores"]] == [s["file"] for s in want["scores"]]
    for w, g in zip(want["scores"], got["scores"]):
        for key in SCORE_FIELDS:
            assert key in w, f"the golden figures lack {key}: {REGENERATE}"
            assert g[key] == pytest.approx(w[key], rel=SCORE_RTOL), f"{g['file']} {key}: {REGENERATE}"


def test_golden_pixels_are_decoded_from_their_hash(golden):
    """The stored pixels are the ones hashed (a hand-edited JSON cannot pass)."""
    import hashlib

    for case, entry in golden["commands"].items():
        if "sha256" in entry:
            assert hashlib.sha256(pixels_from_record(entry).tobytes()).hexdigest() == entry["sha256"], case


@pytest.mark.skipif(shutil.which("bash") is None, reason="docs/make_examples.sh is a bash script")
def test_docs_pictures_are_what_the_documented_commands_make(tmp_path):
    """docs/make_examples.sh, run into a fresh folder, makes every picture in docs/images pixel
    for pixel (the README and the docs' Command line page show those files)."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", "PYTHON": sys.executable}
    r = subprocess.run(["bash", str(ROOT / "docs" / "make_examples.sh"), str(tmp_path)], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr
    committed = sorted(p.relative_to(ROOT / "docs" / "images") for p in (ROOT / "docs" / "images").rglob("*.png"))
    made = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.png"))
    assert made == committed, "docs/images and docs/make_examples.sh disagree on the files; run scripts/regenerate-golden"
    for rel in committed:
        with Image.open(ROOT / "docs" / "images" / rel) as a, Image.open(tmp_path / rel) as b:
            assert np.array_equal(np.asarray(a), np.asarray(b)), f"docs/images/{rel} is stale; {REGENERATE}"
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    shown = {m for page in pages for m in re.findall(r"\((?:docs/)?images/([^)]+\.png)\)", page.read_text())}
    assert "sample.png" in shown and len(shown) > 10, "the docs' Command line page no longer shows the pictures"
    assert shown <= {rel.as_posix() for rel in made}, f"the docs show pictures the script does not make: {shown - {rel.as_posix() for rel in made}}"
