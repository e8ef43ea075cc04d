"""Pseudo pixel art → true pixel art: find the grid, read one colour per cell, key the background, reduce the palette.

`pixelize` recovers the art at the grid's own size (the CLI's --auto) or at a given cell count (--size). `fit` is
what a job with a requested pixel size runs (grid "auto"): the requested size is used as the cell count when the
picture has a grid of that size; otherwise the art is recovered at its own size and then scaled to the request with
nearest-neighbour (no new colours); a picture without a detectable grid is fitted as a whole, as grid "fixed" does.
The result says which of the three happened.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from .cells import cell_colours
from .grid import MIN_CONFIDENCE, Grid, detect, edge_profiles, jpeg_blocks, planes
from .keying import key_cells
from .palette import quantize_colours
from .palette_map import reduce

MAX_COLORS = 256
# The requested size wins over the grid found freely when its lattice stands out at least this much as well.
REQUESTED_SHARE = 0.6
# A grid of another size than requested is only trusted (the art rescaled to the request) above this confidence: a
# few strong edges, as any picture has, can line up with some lattice by chance.
FREE_CONFIDENCE = 0.3
# A grid at the requested size this clear is taken without looking for one of another size (saves the wider search).
SURE_CONFIDENCE = 0.3


@dataclass
class Pixelized:
    image: Image.Image  # RGBA, alpha 0 or 255, transparent pixels (0, 0, 0, 0)
    grid: Grid | None
    info: dict = field(default_factory=dict)  # what the job result reports about the grid and what was done


class GridFinder:
    """An image's edge profiles, computed once, for any number of grid searches (free, or at a given size)."""

    def __init__(self, channels: np.ndarray):
        self.px, self.py = edge_profiles(channels)
        self.jpeg = jpeg_blocks(channels)

    def find(self, size: tuple[int, int] | None = None) -> Grid:
        return detect(self.px, self.py, size, self.jpeg)


def palette_budget(colors: int, any_transparent: bool) -> int:
    """Opaque colours allowed: the transparent slot takes one of `colors` (but at least one opaque colour is kept)."""
    if colors <= 0:
        return 0
    return max(1, min(colors, MAX_COLORS) - (1 if any_transparent else 0))


def apply_palette(
    rgba: np.ndarray, colors: int, palette: np.ndarray | None = None, dither: str = "none"
) -> Image.Image:
    """RGBA array → image with hard alpha, transparent pixels (0, 0, 0, 0), opaque colours within the budget: the
    picture's own palette clustered in OKLab, or the given palette (palette_map.py)."""
    budget = palette_budget(colors, bool((rgba[..., 3] < 128).any()))
    return Image.fromarray(reduce(rgba, budget, palette, dither, quantize_colours), "RGBA")


def recover(channels: np.ndarray, grid: Grid, key: bool) -> tuple[np.ndarray, dict]:
    """The art on `grid` as an RGBA float array: one colour per cell, alpha 0/255, background keyed out if asked."""
    colours, opaque = cell_colours(channels, grid.x.borders, grid.y.borders)
    info: dict = {}
    if key:
        opaque, keyed = key_cells(colours, opaque)
        if keyed is not None:
            info["background"] = keyed
    cells = np.concatenate([colours, np.where(opaque, 255.0, 0.0)[..., None]], axis=-1)
    return cells, info


def _planes(image: Image.Image) -> np.ndarray:
    """The picture as uint8 channel planes; RGB pictures skip the round trip through RGBA."""
    if image.mode not in ("RGB", "RGBA"):
        image = image.convert("RGBA" if "A" in image.getbands() or "transparency" in image.info else "RGB")
    return planes(np.asarray(image))


def pixelize(
    image: Image.Image,
    size: tuple[int, int] | None = None,
    colors: int = 0,
    key: bool = False,
    palette: np.ndarray | None = None,
    dither: str = "none",
) -> Pixelized:
    """Recover the art at the grid's own size, or with exactly `size` = (cells across, cells down)."""
    channels = _planes(image)
    grid = GridFinder(channels).find(size)
    cells, info = recover(channels, grid, key)
    return Pixelized(apply_palette(cells, colors, palette, dither), grid, {"grid": grid.summary(), **info})


def fit(
    image: Image.Image,
    width: int,
    height: int,
    colors: int,
    fit_mode: str,
    key: bool,
    palette: np.ndarray | None = None,
    dither: str = "none",
) -> Pixelized | None:
    """Art recovered for a requested width×height (see the module docstring); None when the image has no grid to
    speak of, so the caller fits it as a whole."""
    channels = _planes(image)
    finder = GridFinder(channels)
    wanted = finder.find((width, height))
    found = wanted if wanted.confidence >= SURE_CONFIDENCE else finder.find()
    if wanted.confidence >= max(MIN_CONFIDENCE, REQUESTED_SHARE * found.confidence):
        cells, info = recover(channels, wanted, key)
        return Pixelized(
            apply_palette(cells, colors, palette, dither),
            wanted,
            {"grid": {**wanted.summary(), "mode": "auto", "fit": "native"}, **info},
        )
    if found.confidence < FREE_CONFIDENCE:
        return None
    cells, info = recover(channels, found, key)
    from ..postprocess import fit_to_grid  # postprocess imports this module at its top

    native = Image.fromarray(np.clip(np.rint(cells), 0, 255).astype(np.uint8), "RGBA")
    out = apply_palette(np.asarray(fit_to_grid(native, width, height, fit_mode)), colors, palette, dither)
    summary = {**found.summary(), "mode": "auto", "fit": f"nearest from {found.x.cells}x{found.y.cells}"}
    return Pixelized(out, found, {"grid": summary, **info})
