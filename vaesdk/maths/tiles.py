"""Overlapping tiles and their blend, for running a fully convolutional graph on an image
(or latent) too large to run at once.

An axis of length n is cut into tiles of length t that overlap by at least o: starts 0,
t - o, 2(t - o), ... and a last tile flush with the end. Each tile's output is weighted by a
ramp that rises linearly across the part it shares with a neighbour (and is flat at the
image's own edges), and the outputs are summed and divided by the summed weights: where two
tiles overlap their outputs cross-fade, so no border shows a step. Memory is that of one
tile's run plus the output being assembled.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


def starts(n: int, tile: int, overlap: int) -> list[int]:
    """Tile starts along an axis of length n: tiles of `tile` overlapping by >= `overlap`."""
    if n <= tile:
        return [0]
    step = tile - overlap
    if step < 1:
        raise ValueError(f"a tile of {tile} with an overlap of {overlap} never advances")
    out = list(range(0, n - tile, step))
    out.append(n - tile)
    return out


def ramp(length: int, fade: int, left: bool, right: bool) -> np.ndarray:
    """Weights of one tile along one axis: rising over `fade` cells on a side with a neighbour."""
    w = np.ones(length, np.float32)
    if fade > 0:
        edge = (np.arange(fade, dtype=np.float32) + 0.5) / fade
        if left:
            w[:fade] = np.minimum(w[:fade], edge)
        if right:
            w[length - fade :] = np.minimum(w[length - fade :], edge[::-1])
    return w


@dataclass(frozen=True)
class Tile:
    """One tile: its input window and which sides it shares with a neighbour."""

    y: int
    x: int
    h: int
    w: int
    top: bool
    bottom: bool
    left: bool
    right: bool

    def weights(self, height: int, width: int, fade: int) -> np.ndarray:
        """The tile's blend weights at an output size of height x width, fading over `fade` cells."""
        return ramp(height, fade, self.top, self.bottom)[:, None] * ramp(width, fade, self.left, self.right)[None, :]


def plan(height: int, width: int, tile: int, overlap: int) -> list[Tile]:
    """The tiles covering an input of height x width."""
    ys, xs = starts(height, tile, overlap), starts(width, tile, overlap)
    th, tw = min(tile, height), min(tile, width)
    return [
        Tile(y, x, th, tw, i > 0, i < len(ys) - 1, j > 0, j < len(xs) - 1)
        for i, y in enumerate(ys)
        for j, x in enumerate(xs)
    ]


def run_tiled(
    x: np.ndarray, run: Callable[[np.ndarray], list[np.ndarray]], tile: int, overlap: int, num: int = 1, den: int = 1
) -> list[np.ndarray]:
    """Run `run` (an array [1, C, h, w] -> arrays [1, C', h*num/den, w*num/den]) over the tiles
    of one input x [1, C, H, W] and blend its outputs: arrays [1, C', H*num/den, W*num/den].
    `run` gets each tile's window of x as it is (a view of uint8 pixels stays uint8, so the
    caller converts one tile at a time).

    A decoder has num = f, den = 1; an encoder num = 1, den = f (its tile, overlap and tile
    starts are then multiples of f)."""
    _, _, height, width = x.shape
    out_h, out_w = height * num // den, width * num // den
    fade = overlap * num // den
    acc: list[np.ndarray] = []
    total = np.zeros((out_h, out_w), np.float32)
    for t in plan(height, width, tile, overlap):
        outs = run(x[:, :, t.y : t.y + t.h, t.x : t.x + t.w])
        oy, ox = t.y * num // den, t.x * num // den
        oh, ow = outs[0].shape[2], outs[0].shape[3]
        weight = t.weights(oh, ow, fade)
        if not acc:
            acc = [np.zeros((1, o.shape[1], out_h, out_w), np.float32) for o in outs]
        for a, o in zip(acc, outs):
            a[:, :, oy : oy + oh, ox : ox + ow] += o * weight
        total[oy : oy + oh, ox : ox + ow] += weight
    for a in acc:
        a /= total
    return acc


def border_mask(height: int, width: int, tile: int, overlap: int, scale: int, band: int) -> np.ndarray:
    """Output cells within `band` of a tile's edge inside the image (where a seam would show),
    for an input of height x width tiled by `tile` and `overlap`, `scale` output cells per
    input cell. For measuring seams."""
    mask = np.zeros((height * scale, width * scale), bool)
    for t in plan(height, width, tile, overlap):
        edges_y = [e for e, has in ((t.y, t.top), (t.y + t.h, t.bottom)) if has]
        edges_x = [e for e, has in ((t.x, t.left), (t.x + t.w, t.right)) if has]
        for e in edges_y:
            mask[max(0, e * scale - band) : e * scale + band, :] = True
        for e in edges_x:
            mask[:, max(0, e * scale - band) : e * scale + band] = True
    return mask
