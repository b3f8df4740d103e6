"""Reading the conformance vectors of conformance/vN/ from Python: the index, its arrays, the
bundle cases laid out as folders, and a numpy Generator that replays a vector's noise.

Each format version that added rules has its own folder: v2/ (versions 1 and 2) and v3/ (what
version 3 added). A reader of version 3 passes both.

Used by conformance/make_vectors.py (which writes the vectors) and tests/test_conformance.py
(which holds the runtime to them). Another language needs none of this: index.json says
where everything is, and docs/bundle-format.md ("Conformance vectors") says what each field means.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
VERSIONS = (2, 3)
ROOTS = {v: HERE / f"v{v}" for v in VERSIONS}
INDEX = "index.json"


def load_index(root: Path) -> dict[str, Any]:
    return json.loads((root / INDEX).read_text())


def array(root: Path, name: str) -> np.ndarray:
    """One .npy of the vectors (plain little-endian arrays, never pickled)."""
    return np.load(root / name, allow_pickle=False)


def bundle_path(root: Path, index: dict[str, Any], name: str) -> Path:
    return (root / index["bundles"][name]["path"]).resolve()


def materialize(root: Path, index: dict[str, Any], case: dict[str, Any], dest: Path) -> Path:
    """Lay out a bundle case in `dest`: the base bundle's files, then the case's overlay, each
    entry name -> null (remove the file), {"file": path in the vectors} or {"copy": another
    file of the base bundle}."""
    base = bundle_path(root, index, case["base"])
    dest.mkdir(parents=True)
    for f in base.iterdir():
        shutil.copyfile(f, dest / f.name)
    for name, source in case.get("overlay", {}).items():
        target = dest / name
        if source is None:
            target.unlink(missing_ok=True)
        elif "file" in source:
            shutil.copyfile(root / source["file"], target)
        else:
            shutil.copyfile(base / source["copy"], target)
    return dest


class ReplayGenerator(np.random.Generator):
    """A numpy Generator whose draws come from a vector's noise instead of a bit generator:
    `standard_normal` returns the next values of `normals` (float32, in order), `random` and
    `choice` use the next values of `uniforms` (choice by the format's rule: the first
    component whose cumulative weight exceeds u). `spawn` hands on `children`. Any other draw,
    or running out of noise, raises, so a vector pins every number the runtime draws."""

    def __init__(self, normals=(), uniforms=(), children=()):
        super().__init__(np.random.PCG64(0))
        self._normals = np.asarray(normals, np.float32).ravel()
        self._uniforms = np.asarray(uniforms, np.float64).ravel()
        self._children = list(children)
        self.normals_used = 0
        self.uniforms_used = 0

    def _take(self, which: str, count: int) -> np.ndarray:
        source, used = (self._normals, self.normals_used) if which == "normals" else (self._uniforms, self.uniforms_used)
        if used + count > len(source):
            raise AssertionError(f"the vector's {which} ran out: {used} used, {count} more wanted, {len(source)} given")
        out = source[used : used + count]
        if which == "normals":
            self.normals_used += count
        else:
            self.uniforms_used += count
        return out.copy()

    def standard_normal(self, size=None, dtype=np.float64, out=None):
        assert dtype in (np.float32, "float32") and out is None, "the runtime draws float32 normals"
        shape = () if size is None else (size,) if np.isscalar(size) else tuple(size)
        return self._take("normals", int(np.prod(shape))).reshape(shape)

    def random(self, size=None, dtype=np.float64, out=None):
        shape = () if size is None else (size,) if np.isscalar(size) else tuple(size)
        return self._take("uniforms", int(np.prod(shape))).reshape(shape).astype(dtype)

    def choice(self, a, size=None, replace=True, p=None, shuffle=True):
        cdf = np.cumsum(np.asarray(p, np.float64))
        cdf /= cdf[-1]
        return np.searchsorted(cdf, self.random(size), side="right")

    def spawn(self, n_children):
        assert n_children <= len(self._children), "the vector gives no noise for another stream"
        out, self._children = self._children[:n_children], self._children[n_children:]
        return out

    def __getattribute__(self, name):
        allowed = {"standard_normal", "random", "choice", "spawn", "_take", "_normals", "_uniforms", "_children",
                   "normals_used", "uniforms_used", "__class__", "__dict__", "__init__", "__setattr__"}  # fmt: skip
        if not name.startswith("__") and name not in allowed:
            raise AssertionError(f"the runtime drew with Generator.{name}, which the format does not define")
        return super().__getattribute__(name)
