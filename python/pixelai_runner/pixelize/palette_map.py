"""Mapping a picture onto a given palette (the artist's, or a built-in one), with optional dithering.

Distances are taken in OKLab (pixelize/color.py): nearest-in-RGB picks visibly wrong colours for darks and
saturated hues, which is exactly where small pixel-art palettes have few entries. Only opaque pixels are mapped;
transparent ones neither take a colour nor receive diffused error.

Dither modes:
  * "none": each pixel takes its nearest palette colour.
  * "ordered": each pixel picks between its two nearest palette colours by where it lies on the segment between them
    (in OKLab), against a 4×4 Bayer threshold at its position. Flat areas stay flat when they sit on a palette colour;
    the pattern is stable (no noise) and tiles, as hand-made pixel art dithering does.
  * "floyd-steinberg": classic error diffusion (7/16, 3/16, 5/16, 1/16) of the OKLab error, left to right.

`limit` > 0 keeps only that many palette colours: the ones most used by a plain nearest mapping, so a 256-colour
sprite palette can still yield a 16-colour sprite drawn from it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .color import rgb_to_oklab

DITHER_MODES = ("none", "ordered", "floyd-steinberg")
# 4×4 Bayer matrix as thresholds in (0, 1): (index + 0.5) / 16
_BAYER4 = (np.array([[0, 8, 2, 10], [12, 4, 14, 6], [3, 11, 1, 9], [15, 7, 13, 5]], dtype=np.float64) + 0.5) / 16.0


def parse_hex(colours: list[str]) -> np.ndarray:
    """["#rrggbb", …] → (k, 3) uint8, duplicates removed (first occurrence kept)."""
    out: list[tuple[int, int, int]] = []
    for c in colours:
        rgb = (int(c[1:3], 16), int(c[3:5], 16), int(c[5:7], 16))
        if rgb not in out:
            out.append(rgb)
    return np.array(out, dtype=np.uint8).reshape(-1, 3)


def _nearest_two(lab: np.ndarray, pal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For (n, 3) points: index of the nearest palette entry and of the second nearest (the same with one entry)."""
    d = ((lab[:, None, :] - pal[None, :, :]) ** 2).sum(-1)
    if pal.shape[0] == 1:
        zero = np.zeros(len(lab), dtype=np.int64)
        return zero, zero
    rows = np.arange(len(lab))
    order = np.argpartition(d, 1, axis=1)[:, :2]
    swap = d[rows, order[:, 0]] > d[rows, order[:, 1]]
    first = np.where(swap, order[:, 1], order[:, 0])
    second = np.where(swap, order[:, 0], order[:, 1])
    return first, second


def choose(rgb: np.ndarray, palette: np.ndarray, limit: int) -> np.ndarray:
    """The `limit` palette colours a nearest mapping of the (n, 3) colours `rgb` uses most (all when limit <= 0 or the
    palette is no bigger); ties keep palette order."""
    if limit <= 0 or len(palette) <= limit or len(rgb) == 0:
        return palette
    first, _ = _nearest_two(rgb_to_oklab(rgb), rgb_to_oklab(palette))
    used = np.bincount(first, minlength=len(palette))
    keep = np.sort(np.argsort(-used, kind="stable")[:limit])
    return palette[keep]


def map_to_palette(rgb: np.ndarray, opaque: np.ndarray, palette: np.ndarray, dither: str = "none") -> np.ndarray:
    """(h, w, 3) colours (0..255, any float or int) → (h, w, 3) uint8 where every opaque pixel is a palette colour.
    Transparent pixels come back as 0."""
    if dither not in DITHER_MODES:
        raise ValueError(f"unknown dither {dither!r}")
    h, w = opaque.shape
    out = np.zeros((h, w, 3), dtype=np.uint8)
    if not opaque.any() or len(palette) == 0:
        return out
    pal_lab = rgb_to_oklab(palette.astype(np.float64))
    lab = rgb_to_oklab(np.asarray(rgb, dtype=np.float64))
    if dither == "floyd-steinberg":
        index = _diffuse(lab, opaque, pal_lab)
        out[opaque] = palette[index[opaque]]
        return out
    ys, xs = np.nonzero(opaque)
    points = lab[ys, xs]
    first, second = _nearest_two(points, pal_lab)
    pick = first
    if dither == "ordered":
        a, b = pal_lab[first], pal_lab[second]
        seg = b - a
        length2 = (seg**2).sum(-1)
        # where the pixel sits between its two nearest colours: 0 at the nearest, 1 at the second
        t = np.where(length2 > 0, ((points - a) * seg).sum(-1) / np.maximum(length2, 1e-12), 0.0)
        pick = np.where(np.clip(t, 0.0, 1.0) > _BAYER4[ys % 4, xs % 4], second, first)
    out[ys, xs] = palette[pick]
    return out


def _diffuse(lab: np.ndarray, opaque: np.ndarray, pal_lab: np.ndarray) -> np.ndarray:
    """Floyd–Steinberg over the opaque pixels in OKLab; (h, w) palette indices (meaningless where transparent).
    Sequential by nature: the error travels in Python lists (far cheaper than numpy element access), the nearest
    colour is one small numpy product per pixel."""
    h, w = opaque.shape
    work = lab.copy()
    mask = opaque.tolist()
    norms = (pal_lab**2).sum(-1)
    twice = 2.0 * pal_lab
    pal = pal_lab.tolist()
    index = np.zeros((h, w), dtype=np.int64)
    below = work[0].tolist()
    for y in range(h):
        row, picks = below, [0] * w
        below = work[y + 1].tolist() if y + 1 < h else None
        for x in range(w):
            if not mask[y][x]:
                continue
            colour = row[x]
            k = int(np.argmin(norms - twice @ colour))  # |p|² − 2 p·c orders the palette like |p − c|²
            picks[x] = k
            err = [colour[i] - pal[k][i] for i in range(3)]
            targets = [(row, y, x + 1, 7 / 16)]
            if below is not None:
                targets += [(below, y + 1, x - 1, 3 / 16), (below, y + 1, x, 5 / 16), (below, y + 1, x + 1, 1 / 16)]
            for line, yy, xx, weight in targets:
                if 0 <= xx < w and mask[yy][xx]:
                    for i in range(3):
                        line[xx][i] += err[i] * weight
        index[y] = picks
    return index


def reduce(
    rgba: np.ndarray,
    budget: int,
    palette: np.ndarray | None,
    dither: str,
    derive: Callable[[np.ndarray, int], np.ndarray],
) -> np.ndarray:
    """(h, w, 4) colours → (h, w, 4) uint8 with hard alpha (< 128 → (0, 0, 0, 0)) and the opaque pixels reduced:
    onto `palette` (at most `budget` of its colours when budget > 0), or, without one, by `derive(rgb (n, 3),
    budget) → (n, 3) uint8` (the picture's own palette; budget 0 = the deriver's choice). With a dither mode and a
    derived palette of a given budget, the derived colours become the palette the picture is dithered onto."""
    opaque = rgba[..., 3] >= 128
    out = np.zeros(rgba.shape[:2] + (4,), np.uint8)
    out[opaque, 3] = 255
    rgb = np.asarray(rgba[..., :3], dtype=np.float64)
    if not opaque.any():
        return out
    if palette is None:
        derived = derive(rgb[opaque], budget)
        if dither == "none" or budget <= 0:  # no colour budget: nothing to dither towards
            out[opaque, :3] = derived
            return out
        palette = np.unique(derived, axis=0)
    else:
        palette = choose(rgb[opaque], palette, budget)
    out[..., :3] = map_to_palette(rgb, opaque, palette, dither)
    return out
