"""One colour and one alpha per grid cell, read from the cell's centre.

Near a border the picture is a blend of two cells (blur) and the border itself wobbles, so only the central part of
each cell is read: a lattice of up to 5×5 sample points spread over its middle CENTRE share. The colour is the
per-channel median of those samples (noise and a stray neighbour's pixels are outvoted), then the mean of the
samples within REJECT of that median (less noisy than the median alone, still blind to outliers). Channels are the
sRGB values as stored: gamma-encoded, so equal steps are roughly equal steps of perceived lightness, which is what
the median should be robust in. Alpha is the median of the alpha samples, made hard: 0 or 255.
"""

from __future__ import annotations

import numpy as np

CENTRE = 0.35  # share of the cell (per axis) the samples cover
MAX_SAMPLES = 5  # per axis
REJECT = 24.0  # samples further than this (max over channels) from the median are ignored in the mean


def sample_points(borders: np.ndarray, length: int) -> np.ndarray:
    """(cells, s) pixel indices: s points per cell spread over its central CENTRE share, clipped to the image."""
    widths = np.diff(borders)
    s = int(np.clip(round(CENTRE * float(np.median(widths))), 1, MAX_SAMPLES))
    fractions = 0.5 + (np.arange(s) - (s - 1) / 2) * (CENTRE / s)
    points = borders[:-1, None] + widths[:, None] * fractions[None, :]
    return np.clip(np.floor(points).astype(np.int64), 0, length - 1)


def cell_colours(channels: np.ndarray, bx: np.ndarray, by: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(Gh, Gw, 3) float colours and (Gh, Gw) bool opacity of the grid with column borders `bx` and row borders `by`,
    read from (C, H, W) uint8 planes (RGB, or RGBA when the picture has transparency)."""
    count, h, w = channels.shape
    xs, ys = sample_points(bx, w).astype(np.int32), sample_points(by, h).astype(np.int32)
    gh, gw = len(ys), len(xs)
    # Sample axis first: the sums over samples below are then whole-array adds, not reductions over a tiny last axis.
    flat = ((ys * w).T[:, None, :, None] + xs.T[None, :, None, :]).reshape(-1, gh, gw)
    samples = np.take(channels.reshape(count, -1), flat, axis=1)  # (C, samples, Gh, Gw)
    n = flat.shape[0]
    rgb = samples[:3].astype(np.float32)
    # The median by partitioning along a contiguous last axis (numpy is several times slower along any other).
    last = np.ascontiguousarray(np.moveaxis(rgb, 1, -1))
    median = np.moveaxis(np.partition(last, n // 2, axis=-1)[..., n // 2 : n // 2 + 1], -1, 1)
    near = np.abs(rgb[0] - median[0]) <= REJECT
    near &= np.abs(rgb[1] - median[1]) <= REJECT
    near &= np.abs(rgb[2] - median[2]) <= REJECT
    kept = near.sum(axis=0)
    mean = (rgb * near).sum(axis=1) / np.maximum(kept, 1)
    colours = np.where(kept > 0, mean, median[:, 0]).transpose(1, 2, 0)
    if count == 4:
        opaque = (samples[3] >= 128).sum(axis=0) * 2 > n
    else:
        opaque = np.ones((gh, gw), dtype=bool)
    return colours, opaque
