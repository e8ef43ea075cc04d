"""Colour-key background removal: the shared flood fill, and the adaptive key used on recovered cells.

Both make transparent what is close to the dominant colour of the image border *and* connected to the border, so a
sprite's enclosed areas of the background colour stay. The fixed key (postprocess.color_key) uses one tolerance on
the picture's pixels. The cell key works on one colour per cell, where the noise is mostly gone, so it can measure
how much the background itself varies and key only that much: a painted background is rarely flat (lighting ramps
across it, each painted pixel drifts), and a fixed tolerance wide enough for that eats sprite pixels whose colour is
merely near the background's.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

COARSE_TOLERANCE = 48.0  # border cells this close to the key colour are taken as background samples
MIN_TOLERANCE = 12.0
MAX_TOLERANCE = 48.0
TOLERANCE_MARGIN = 1.25  # × the 98th percentile of the background samples' distance from the model


def dominant_border_colour(rgb: np.ndarray, opaque: np.ndarray) -> np.ndarray | None:
    """Most common colour along the opaque border, robust to noise: vote in coarse buckets, then take the median."""
    border = np.zeros(opaque.shape, dtype=bool)
    border[0, :] = border[-1, :] = border[:, 0] = border[:, -1] = True
    candidates = np.clip(rgb[border & opaque], 0, 255).astype(np.int32)
    if len(candidates) == 0:
        return None
    buckets = candidates >> 4
    keys = buckets[:, 0] * 256 + buckets[:, 1] * 16 + buckets[:, 2]
    winner = Counter(keys.tolist()).most_common(1)[0][0]
    return np.median(candidates[keys == winner], axis=0)


def _spread_along_rows(reached: np.ndarray, passable: np.ndarray) -> np.ndarray:
    """Grow `reached` to cover every horizontal run of passable pixels it touches (vectorised, no per-pixel loop)."""
    starts = passable.copy()
    starts[:, 1:] &= ~passable[:, :-1]
    run_ids = np.where(passable, np.cumsum(starts.ravel()).reshape(passable.shape), 0)
    touched = np.zeros(int(run_ids.max()) + 1, dtype=bool)
    touched[run_ids[reached & passable]] = True
    touched[0] = False
    return touched[run_ids]


def flood_from_border(passable: np.ndarray) -> np.ndarray:
    """4-connected flood fill of `passable` seeded from every border pixel.

    Alternating row and column run-spreading reaches the fixed point in as many passes as the fill path has turns,
    which is a handful for real backgrounds.
    """
    reached = np.zeros_like(passable)
    reached[0, :] = passable[0, :]
    reached[-1, :] = passable[-1, :]
    reached[:, 0] |= passable[:, 0]
    reached[:, -1] |= passable[:, -1]
    while True:
        grown = _spread_along_rows(reached, passable)
        grown = _spread_along_rows(grown.T, passable.T).T
        if np.array_equal(grown, reached):
            return reached
        reached = grown


def _background_model(rgb: np.ndarray, samples: np.ndarray) -> np.ndarray:
    """Per-channel plane a + b·x + c·y fitted to the background samples (a lighting ramp), evaluated everywhere."""
    gh, gw = samples.shape
    yy, xx = np.mgrid[0:gh, 0:gw]
    design = np.stack([np.ones(samples.sum()), xx[samples], yy[samples]], axis=1).astype(np.float64)
    coef, *_ = np.linalg.lstsq(design, rgb[samples].astype(np.float64), rcond=None)
    full = np.stack([np.ones(gh * gw), xx.ravel(), yy.ravel()], axis=1) @ coef
    return full.reshape(gh, gw, 3)


def key_cells(rgb: np.ndarray, opaque: np.ndarray) -> tuple[np.ndarray, dict | None]:
    """(opacity after removing the background, what was keyed: colour and tolerance) for a grid of cell colours."""
    key = dominant_border_colour(rgb, opaque)
    if key is None:
        return opaque, None
    border = np.zeros(opaque.shape, dtype=bool)
    border[0, :] = border[-1, :] = border[:, 0] = border[:, -1] = True
    samples = border & opaque & (np.sqrt(((rgb - key) ** 2).sum(-1)) <= COARSE_TOLERANCE)
    if samples.sum() >= 6:
        model = _background_model(rgb, samples)
        spread = np.sqrt(((rgb - model) ** 2).sum(-1))
        tolerance = float(np.clip(TOLERANCE_MARGIN * np.percentile(spread[samples], 98), MIN_TOLERANCE, MAX_TOLERANCE))
    else:
        model = np.broadcast_to(key, rgb.shape)
        spread = np.sqrt(((rgb - model) ** 2).sum(-1))
        tolerance = MAX_TOLERANCE
    background = flood_from_border((spread <= tolerance) | ~opaque)
    return opaque & ~background, {"colour": [int(round(c)) for c in key], "tolerance": round(tolerance, 1)}
