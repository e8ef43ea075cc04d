"""Small synthetic pseudo pixel art for the pixelize tests: known cells painted large on an off-grid lattice.

`paint` draws a grid of cells at a real-valued pitch, the first cell starting `phase` pixels before the canvas edge,
each border nudged by up to `jitter` of a pitch, then blur, noise and optionally a JPEG round trip. Every cell's
centre lies on the canvas, so the truth is exactly the cells given.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def palette_art(cols: int, rows: int, colours: int, seed: int) -> np.ndarray:
    """(rows, cols, 3) uint8 art in `colours` well-separated colours: irregular regions (each cell takes the colour of
    its nearest random seed point) plus single-cell details, the hardest cells to recover."""
    rng = np.random.default_rng(seed)
    palette = _separated_colours(colours, rng)
    seeds = rng.uniform(0, 1, (max(colours, rows * cols // 10), 2)) * (rows, cols)
    seed_colour = np.concatenate([np.arange(colours), rng.integers(0, colours, len(seeds) - colours)])
    yy, xx = np.mgrid[0:rows, 0:cols] + 0.5
    nearest = ((yy[..., None] - seeds[:, 0]) ** 2 + (xx[..., None] - seeds[:, 1]) ** 2).argmin(axis=-1)
    index = seed_colour[nearest]
    specks = rng.random((rows, cols)) < 0.15
    index[specks] = rng.integers(0, colours, int(specks.sum()))
    return palette[index]


def _separated_colours(count: int, rng: np.random.Generator, min_distance: int = 60) -> np.ndarray:
    chosen: list[np.ndarray] = []
    while len(chosen) < count:
        c = rng.integers(0, 256, 3)
        if all(np.abs(c - o).max() >= min_distance for o in chosen):
            chosen.append(c)
    return np.array(chosen, dtype=np.uint8)


def borders(count: int, pitch: float, phase: float, jitter: float, rng: np.random.Generator) -> np.ndarray:
    b = -phase + np.arange(count + 1) * pitch
    return b + rng.uniform(-jitter, jitter, count + 1) * pitch


def paint(
    cells: np.ndarray,
    pitch: float,
    phase: tuple[float, float] = (0.0, 0.0),
    jitter: float = 0.0,
    blur: float = 0.0,
    noise: float = 0.0,
    jpeg: int | None = None,
    seed: int = 0,
) -> tuple[Image.Image, np.ndarray, np.ndarray]:
    """(picture, true column borders, true row borders). `cells` is (rows, cols, 3 or 4); alpha 0 cells paint
    transparent. blur is a Gaussian sigma as a share of the pitch; noise a per-pixel sigma in 0-255 units."""
    rng = np.random.default_rng(seed)
    rows, cols = cells.shape[:2]
    bx = borders(cols, pitch, phase[0], jitter, rng)
    by = borders(rows, pitch, phase[1], jitter, rng)
    width, height = int(round(bx[-1])), int(round(by[-1]))
    ix = np.clip(np.searchsorted(bx, np.arange(width) + 0.5, side="right") - 1, 0, cols - 1)
    iy = np.clip(np.searchsorted(by, np.arange(height) + 0.5, side="right") - 1, 0, rows - 1)
    big = cells[iy[:, None], ix[None, :]].astype(np.float32)
    if blur > 0:
        big = _gaussian(big, blur * pitch)
    if noise > 0:
        big[..., :3] += rng.normal(0, noise, big[..., :3].shape)
    out = np.clip(np.rint(big), 0, 255).astype(np.uint8)
    image = Image.fromarray(out, "RGBA" if out.shape[-1] == 4 else "RGB")
    if jpeg is not None:
        buf = io.BytesIO()
        image.convert("RGB").save(buf, "JPEG", quality=jpeg)
        image = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    return image, bx, by


def _gaussian(img: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur over the two image axes (edges extended)."""
    radius = max(1, int(np.ceil(3 * sigma)))
    x = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * (x / sigma) ** 2)
    kernel /= kernel.sum()
    for axis in (0, 1):
        padded = np.pad(img, [(radius, radius) if a == axis else (0, 0) for a in range(img.ndim)], mode="edge")
        img = sum(w * np.take(padded, np.arange(i, i + img.shape[axis]), axis=axis) for i, w in enumerate(kernel))
    return img


def accuracy(candidate: Image.Image, truth: np.ndarray, tolerance: int = 24) -> float:
    """Share of the truth's opaque cells the candidate has opaque and within `tolerance` on every channel."""
    got = np.asarray(candidate.convert("RGBA")).astype(np.int16)
    if got.shape[:2] != truth.shape[:2]:
        return 0.0
    want = truth.astype(np.int16)
    opaque = want[..., 3] > 0 if want.shape[-1] == 4 else np.ones(want.shape[:2], dtype=bool)
    close = (np.abs(got[..., :3] - want[..., :3]).max(axis=-1) <= tolerance) & (got[..., 3] > 0)
    return float(close[opaque].mean())
