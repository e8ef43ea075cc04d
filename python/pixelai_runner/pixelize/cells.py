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
    _, h, w = channels.shape
    xs, ys = sample_points(bx, w), sample_points(by, h)
    gh, gw = len(ys), len(xs)
    flat = (ys[:, None, :, None] * w + xs[None, :, None, :]).reshape(gh, gw, -1)
    samples = [plane.ravel()[flat].astype(np.float32) for plane in channels]  # each (Gh, Gw, samples)
    middle = flat.shape[-1] // 2
    medians = [np.partition(s, middle, axis=-1)[..., middle] for s in samples[:3]]
    far = np.zeros(flat.shape, dtype=bool)
    for s, m in zip(samples[:3], medians, strict=True):
        far |= np.abs(s - m[..., None]) > REJECT
    near = ~far
    count = near.sum(axis=-1)
    colours = np.stack(
        [
            np.where(count > 0, (s * near).sum(axis=-1) / np.maximum(count, 1), m)
            for s, m in zip(samples[:3], medians, strict=True)
        ],
        axis=-1,
    )
    if len(samples) == 4:
        opaque = np.partition(samples[3], middle, axis=-1)[..., middle] >= 128
    else:
        opaque = np.ones((gh, gw), dtype=bool)
    return colours, opaque
