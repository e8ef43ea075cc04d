"""A palette for the recovered cells, built in OKLab: merge near-duplicates, then merge down to the requested count.

Pixel art uses a few exact colours; generated art scatters each of them (noise, per-cell drift, shading), so the
cells of one true colour form a tight cloud. In OKLab, where distance tracks visible difference:

1. near-duplicates are merged (means over a grid of MERGE_DISTANCE, a couple of Lloyd rounds, then any two colours
   still closer than MERGE_DISTANCE are merged): this is the palette for `colors` = 0;
2. with a requested count, the cheapest pairs are merged until that many remain (`agglomerate`: closeness weighted
   by the smaller side's size, so a rare but distinct colour such as a highlight keeps its slot while a noisy cloud
   that was split in two is rejoined), then Lloyd rounds settle the clusters.

Each cell takes its cluster's mean, which also averages the per-cell drift away. Deterministic: no random seeding.
"""

from __future__ import annotations

import numpy as np

from .color import oklab_to_rgb, rgb_to_oklab

MERGE_DISTANCE = 0.03  # OKLab distance under which two cell colours count as the same colour (colors = 0)
MAX_ITERATIONS = 12
MAX_CANDIDATES = 600  # colours entering the pairwise merging (its cost grows with their square)
MASS_POWER = 0.5  # see `agglomerate`
DEDUPE_STEP = 0.004  # OKLab bucket for collapsing near-identical cell colours before clustering (speed only)


def _weighted_points(lab: np.ndarray, step: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(bucket means, bucket sizes, each input's bucket) of `lab` bucketed on a grid of `step`."""
    keys = np.floor(lab / step).astype(np.int64)
    _, inverse, counts = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    sums = np.zeros((len(counts), 3))
    np.add.at(sums, inverse, lab)
    return sums / counts[:, None], counts.astype(np.float64), inverse


def _nearest(points: np.ndarray, centres: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    d = (points**2).sum(1)[:, None] - 2 * points @ centres.T + (centres**2).sum(1)[None, :]
    labels = d.argmin(axis=1)
    return labels, np.maximum(d[np.arange(len(points)), labels], 0.0)


def _lloyd(points: np.ndarray, weights: np.ndarray, centres: np.ndarray, rounds: int) -> np.ndarray:
    labels = None
    for _ in range(rounds):
        new_labels, _ = _nearest(points, centres)
        if labels is not None and np.array_equal(new_labels, labels):
            break
        labels = new_labels
        sums = np.zeros_like(centres)
        np.add.at(sums, labels, points * weights[:, None])
        mass = np.bincount(labels, weights=weights, minlength=len(centres))
        used = mass > 0
        centres = sums[used] / mass[used, None]
    return centres


def _bucket_means(points: np.ndarray, weights: np.ndarray, step: float) -> tuple[np.ndarray, np.ndarray]:
    keys = np.floor(points / step).astype(np.int64)
    _, inverse = np.unique(keys, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    mass = np.bincount(inverse, weights=weights)
    sums = np.zeros((len(mass), 3))
    np.add.at(sums, inverse, points * weights[:, None])
    return sums / mass[:, None], mass


def candidate_colours(points: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The picture's colours with near-duplicates merged: means over a grid of MERGE_DISTANCE (coarser if that leaves
    over MAX_CANDIDATES), then merged pairwise while any two are closer than MERGE_DISTANCE (a grid line can split
    one colour). Returns (centres, masses)."""
    step = MERGE_DISTANCE
    centres, mass = _bucket_means(points, weights, step)
    while len(centres) > MAX_CANDIDATES:
        step *= 1.25
        centres, mass = _bucket_means(points, weights, step)
    centres = _lloyd(points, weights, centres, 2)
    labels, _ = _nearest(points, centres)
    mass = np.bincount(labels, weights=weights, minlength=len(centres))
    centres, mass = centres[mass > 0], mass[mass > 0]
    return agglomerate(centres, mass, distance=MERGE_DISTANCE)


def quantize_colours(rgb: np.ndarray, budget: int) -> np.ndarray:
    """(n, 3) colours → (n, 3) uint8 colours using at most `budget` distinct values (0 = merge near-duplicates)."""
    rounded = np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
    if len(rgb) == 0 or (budget > 0 and len(np.unique(rounded, axis=0)) <= budget):
        return rounded
    points, weights, inverse = _weighted_points(rgb_to_oklab(rgb), DEDUPE_STEP)
    centres, mass = candidate_colours(points, weights)
    if 0 < budget < len(centres):
        centres, _ = agglomerate(centres, mass, k=budget, power=MASS_POWER)
        centres = _lloyd(points, weights, centres, MAX_ITERATIONS)
    labels, _ = _nearest(points, centres)
    palette = np.clip(np.rint(oklab_to_rgb(centres)), 0, 255).astype(np.uint8)
    return palette[labels[inverse]]


def agglomerate(centres: np.ndarray, mass: np.ndarray, k: int = 1, distance: float = np.inf, power: float = 0.0):
    """Merge clusters pairwise, cheapest first, until k remain or (power 0) no two are closer than `distance`. The
    cost of a merge is the squared distance times the smaller cluster's mass ** power; power 1 is close to Ward, which
    readily sacrifices a small but distinct colour to split a big noisy one, power 0 is centroid linkage, which keeps
    every stray in-between colour. Returns (centres, masses)."""
    centres = centres.astype(np.float64).copy()
    mass = mass.astype(np.float64).copy()
    n = len(centres)
    alive = np.ones(n, dtype=bool)
    d2 = ((centres[:, None, :] - centres[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d2, np.inf)
    cost = d2 * np.minimum(mass[:, None], mass[None, :]) ** power
    for _ in range(n - max(k, 1)):
        a, b = divmod(int(np.argmin(cost)), n)
        if d2[a, b] >= distance**2:
            break
        total = mass[a] + mass[b]
        centres[a] = (centres[a] * mass[a] + centres[b] * mass[b]) / total
        mass[a], mass[b] = total, 0.0
        alive[b] = False
        row = ((centres - centres[a]) ** 2).sum(-1)
        row[~alive] = np.inf
        row[a] = np.inf
        d2[b, :] = d2[:, b] = np.inf
        d2[a, :] = d2[:, a] = row
        merged = np.full(n, np.inf)
        others = alive & (np.arange(n) != a)
        merged[others] = row[others] * np.minimum(mass[others], total) ** power
        cost[b, :] = cost[:, b] = np.inf
        cost[a, :] = cost[:, a] = merged
    return centres[alive], mass[alive]
