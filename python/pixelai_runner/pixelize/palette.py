"""A palette for the recovered cells, built in OKLab: merge near-duplicates, then pick the requested count.

Pixel art uses a few exact colours; generated art scatters each of them (noise, per-cell drift, shading), so the
cells of one true colour form a tight cloud. In OKLab, where distance tracks visible difference:

1. near-duplicates are merged: means over a grid of MERGE_DISTANCE, two Lloyd rounds, then pairs of colours that
   are each other's nearest and closer than MERGE_DISTANCE are merged. That is the palette for `colors` = 0;
2. with a requested count, that many of those colours seed the clusters (`spread_seeds`: the heaviest first, then
   whichever is worst represented, weighing distance by size, so a rare but distinct colour such as a highlight
   gets a slot while a second copy of a common colour does not), then Lloyd rounds settle them.

Each cell takes its cluster's mean, which also averages the per-cell drift away. Deterministic: no random seeding.
"""

from __future__ import annotations

import numpy as np

from .color import oklab_to_rgb, rgb_to_oklab

MERGE_DISTANCE = 0.02  # OKLab distance under which two cell colours count as the same colour (colors = 0)
MAX_ITERATIONS = 12
MAX_CANDIDATES = 600  # colours entering the pairwise merging (its cost grows with their square)
MASS_POWER = 0.5  # see `spread_seeds`
DEDUPE_STEP = 0.008  # OKLab bucket for collapsing near-identical cell colours before clustering (speed only)


def _group(points: np.ndarray, step: float) -> np.ndarray:
    """Index of each point's cell on a grid of `step` (cells numbered in order of first appearance is not needed,
    only equality): the three cell coordinates packed into one integer, so a 1-D unique does the grouping."""
    keys = np.floor(points / step).astype(np.int64)
    keys -= keys.min(axis=0)
    span = keys.max(axis=0) + 1
    packed = (keys[:, 0] * span[1] + keys[:, 1]) * span[2] + keys[:, 2]
    return np.unique(packed, return_inverse=True)[1].reshape(-1)


def _weighted_sums(
    points: np.ndarray, weights: np.ndarray, labels: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """(per-label weighted means, per-label weight) for labels 0..k-1."""
    mass = np.bincount(labels, weights=weights, minlength=k)
    sums = np.stack([np.bincount(labels, weights=points[:, i] * weights, minlength=k) for i in range(3)], axis=1)
    return sums / np.maximum(mass, 1e-12)[:, None], mass


def _weighted_points(lab: np.ndarray, step: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(bucket means, bucket sizes, each input's bucket) of `lab` bucketed on a grid of `step`."""
    inverse = _group(lab, step)
    k = int(inverse.max()) + 1
    means, counts = _weighted_sums(lab, np.ones(len(lab)), inverse, k)
    return means, counts, inverse


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
        means, mass = _weighted_sums(points, weights, labels, len(centres))
        centres = means[mass > 0]
    return centres


def _bucket_means(points: np.ndarray, weights: np.ndarray, step: float) -> tuple[np.ndarray, np.ndarray]:
    inverse = _group(points, step)
    return _weighted_sums(points, weights, inverse, int(inverse.max()) + 1)


def near_duplicates_merged(points: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The colours with near-duplicates merged: means over a grid of MERGE_DISTANCE (coarser if that leaves over
    MAX_CANDIDATES), pairs still closer than that merged, and a Lloyd round to settle who belongs where."""
    step = MERGE_DISTANCE
    centres, mass = _bucket_means(points, weights, step)
    while len(centres) > MAX_CANDIDATES:
        step *= 1.25
        centres, mass = _bucket_means(points, weights, step)
    centres, _ = merge_close(centres, mass, MERGE_DISTANCE)
    return _lloyd(points, weights, centres, 1)


def quantize_colours(rgb: np.ndarray, budget: int) -> np.ndarray:
    """(n, 3) colours → (n, 3) uint8 colours using at most `budget` distinct values (0 = merge near-duplicates)."""
    rounded = np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
    if len(rgb) == 0:
        return rounded
    packed = (rounded[:, 0].astype(np.int32) << 16) | (rounded[:, 1].astype(np.int32) << 8) | rounded[:, 2]
    if budget > 0 and len(np.unique(packed)) <= budget:
        return rounded
    points, weights, inverse = _weighted_points(rgb_to_oklab(rgb), DEDUPE_STEP)
    means, mass = _bucket_means(points, weights, MERGE_DISTANCE)
    if 0 < budget < len(means):
        centres = _lloyd(points, weights, spread_seeds(means, mass, budget), MAX_ITERATIONS)
    else:
        centres = near_duplicates_merged(points, weights)
    labels, _ = _nearest(points, centres)
    palette = np.clip(np.rint(oklab_to_rgb(centres)), 0, 255).astype(np.uint8)
    return palette[labels[inverse]]


def merge_close(
    centres: np.ndarray, mass: np.ndarray, distance: float, rounds: int = 4
) -> tuple[np.ndarray, np.ndarray]:
    """Merge colours closer than `distance`, a few rounds of merging every pair that are each other's nearest:
    rejoins a colour a grid line split, without chaining a whole gradient into one colour. (centres, masses)."""
    for _ in range(rounds):
        if len(centres) < 2:
            break
        d2 = ((centres[:, None, :] - centres[None, :, :]) ** 2).sum(-1)
        np.fill_diagonal(d2, np.inf)
        nearest = d2.argmin(axis=1)
        idx = np.arange(len(centres))
        pair = (nearest[nearest] == idx) & (d2[idx, nearest] < distance**2) & (idx < nearest)
        if not pair.any():
            break
        a, b = idx[pair], nearest[pair]
        total = mass[a] + mass[b]
        centres = centres.copy()
        centres[a] = (centres[a] * mass[a, None] + centres[b] * mass[b, None]) / total[:, None]
        mass = mass.copy()
        mass[a] = total
        keep = np.ones(len(centres), dtype=bool)
        keep[b] = False
        centres, mass = centres[keep], mass[keep]
    return centres, mass


def spread_seeds(centres: np.ndarray, mass: np.ndarray, k: int) -> np.ndarray:
    """k of the candidate colours, picked greedily: the heaviest first, then each time the one that the chosen ones
    represent worst, by squared distance to the nearest chosen times its mass ** MASS_POWER (a rare but distinct
    colour, such as a highlight, is picked; a near-copy of a chosen colour is not)."""
    weight = mass**MASS_POWER
    chosen = [int(np.argmax(mass))]
    gap = ((centres - centres[chosen[0]]) ** 2).sum(1)
    for _ in range(1, k):
        score = gap * weight
        pick = int(np.argmax(score))
        if score[pick] <= 0:
            break
        chosen.append(pick)
        gap = np.minimum(gap, ((centres - centres[pick]) ** 2).sum(1))
    return centres[chosen]
