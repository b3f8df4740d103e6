"""Image folders built inside tests: real Fashion-MNIST images as PNG files, with unreadable
files among them (for the folder, job and Ray tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vaesdk.imaging.images import save_png


def png_folder(root: Path, images: np.ndarray, broken: dict[str, bytes]) -> Path:
    """images[i] as root/img{i:04d}.png, plus each of `broken` (file name -> bytes)."""
    for i, image in enumerate(images):
        save_png(root / f"img{i:04d}.png", image)
    for name, data in broken.items():
        (root / name).write_bytes(data)
    return root
