"""Find the implied pixel grid of pseudo pixel art: pitch and phase per axis, then cell borders snapped to the edges.

Pixel art painted large changes colour mostly where one implied pixel meets the next, so the strength of the colour
change across x, summed down every column, is a 1-D "edge profile" that peaks at the vertical cell borders (likewise
for y). The borders recur every `pitch` pixels, a real number, so the profile is nearly periodic. Per axis:

1. Edge profile: rows are averaged in blocks of 4 (noise halves, borders running along them stay sharp), colour
   differences are taken across 3 pixels (a blurred border is a ramp, not a step) and capped at a high percentile,
   so one strong outline cannot drown the weaker borders inside a sprite. Noise needs no threshold: it lifts the
   profile evenly, and everything below works on contrasts.
2. JPEG: its 8×8 blocks leave a step at every block border, a competing grid (`jpeg_blocks` recognises them on
   single-pixel steps). Then the profile is rescaled so each position mod 8 has the same mean, which evens out the
   blocks and leaves any other period alone, and lattices lying on the block borders are not candidates.
3. Candidates: the strongest peaks of the profile's spectrum (absolute, and relative to their surroundings, since a
   sprite's outline makes a broad low-frequency hump), each with its double, triple and half, since a peak may be a
   harmonic. Each is refined by a least-squares fit of the lattice through the edges found near its lines.
4. Choice: the candidate whose lattice lines stand out most against the points halfway between them, counted as one
   vote per line (see `_Axis.contrast`). That vote is also the confidence reported: ~1 for a crisp grid, ~0.3-0.7
   for a blurred and noisy one, below ~0.1 when there is no grid to speak of.
5. Borders: every lattice line is moved to the strongest edge near it (generated art wobbles), keeping the lattice
   position where no clear edge is; cells are those whose centre is on the image.

Both axes are searched alike; when they disagree, the weaker may follow the stronger (`detect`: pixels are square).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MIN_PITCH = 2.0
MAX_PITCH = 64.0
ALONG = 4  # pixels averaged along the borders' direction before differencing
SPAN = 3  # differences are taken across this many pixels
JPEG_BLOCK = 8
JPEG_RAISED = 0.8  # share of block borders with a larger step than inside their block, for JPEG
JPEG_EXCESS = 1.2  # JPEG raises its block borders ~1.5-2.5x over the steps inside its blocks at quality 60-85 ...
CRISP_EXCESS = 4.0  # ... a crisp 8 px grid sharing those borders raises them far more, and is not mistaken for JPEG
FFT_SIZE = 1 << 15  # zero-padded: spectral peaks land within ~1 % of the pitch, the lattice fit does the rest
PEAKS = 4  # spectral peaks taken by each of the two rankings
CONTRAST_WINDOW = 0.1  # a line's strength is the profile's maximum within ± this share of a pitch
PRIOR_VOTES = 6  # phantom zero votes: a lattice with few lines can hit a few strong edges by chance
SNAP_WINDOW = 0.35  # borders are snapped to an edge within ± this share of a pitch from the lattice
MIN_CONFIDENCE = 0.1
SQUARE_SHARE = 0.7  # see `detect`
PAD = 128  # zeros around a profile: lattices reach a pitch (≤ 64) plus a window (≤ 0.35 pitch) past its ends


@dataclass(frozen=True)
class AxisGrid:
    """One axis of a detected grid. `borders` has cells + 1 entries, in pixels, increasing; the first and last may lie
    outside the image (an edge cell is kept when its centre is on the image)."""

    pitch: float
    phase: float
    borders: np.ndarray
    confidence: float
    jpeg: bool = False

    @property
    def cells(self) -> int:
        return len(self.borders) - 1


@dataclass(frozen=True)
class Grid:
    x: AxisGrid
    y: AxisGrid

    @property
    def size(self) -> tuple[int, int]:
        return self.x.cells, self.y.cells

    @property
    def confidence(self) -> float:
        return min(self.x.confidence, self.y.confidence)

    def summary(self) -> dict:
        """Pitch and phase (first border mod pitch) in source pixels, cells across and down, confidence 0..1."""
        return {
            "pitch": [round(float(self.x.pitch), 3), round(float(self.y.pitch), 3)],
            "phase": [round(float(self.x.phase), 3), round(float(self.y.phase), 3)],
            "cells": [self.x.cells, self.y.cells],
            "confidence": round(float(max(0.0, self.confidence)), 3),
        }


def planes(rgba: np.ndarray) -> np.ndarray:
    """(H, W, C) uint8 → contiguous (C', H, W) channel planes, without an alpha channel that is opaque throughout.
    Planar layout keeps every later pass over the picture a run over contiguous memory."""
    if rgba.shape[-1] == 4 and int(rgba[..., 3].min()) == 255:
        rgba = rgba[..., :3]  # an opaque alpha channel carries no edges
    return np.ascontiguousarray(np.moveaxis(rgba, -1, 0))


def edge_profiles(channels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(C, H, W) uint8 planes → (profile over x, length W+1; profile over y, length H+1). Entry i is the edge strength
    at the border between pixels i-1 and i."""
    _, height, width = channels.shape
    along = ALONG if min(height, width) >= 16 * ALONG else 1
    across_x = across_y = None
    for plane in channels:
        # Sums of `along` uint8 values fit int16, and so do their differences summed over 4 channels.
        rows = plane[0 : height // along * along : along].astype(np.int16)
        cols = plane[:, 0 : width // along * along : along].astype(np.int16)
        for i in range(1, along):
            rows += plane[i : height // along * along : along]
            cols += plane[:, i : width // along * along : along]
        dx, dy = _differences(rows, 1), _differences(cols, 0)
        across_x = dx if across_x is None else across_x + dx
        across_y = dy if across_y is None else across_y + dy
    return _profile(across_x, 1, width), _profile(across_y, 0, height)


def _differences(img: np.ndarray, axis: int) -> np.ndarray:
    span = SPAN if img.shape[axis] > 4 * SPAN else 1
    if axis == 1:
        return np.abs(img[:, span:] - img[:, :-span])
    return np.abs(img[span:] - img[:-span])


def _profile(diff: np.ndarray, axis: int, n: int) -> np.ndarray:
    # Capped at a high percentile so that one strong outline cannot drown the weaker borders inside a sprite.
    if diff.size == 0:
        return np.zeros(n + 1)
    sample = diff[::5, ::5] if diff.size > 40_000 else diff
    cap = max(int(np.percentile(sample, 99)), 1)
    strength = np.minimum(diff, cap).sum(axis=1 - axis, dtype=np.int64).astype(np.float64)
    span = n - len(strength)
    out = np.zeros(n + 1)
    start = 1 + (span - 1) // 2  # a difference across `span` pixels belongs to the border in its middle
    out[start : start + len(strength)] = strength
    return out


def jpeg_blocks(channels: np.ndarray) -> tuple[bool, bool]:
    """Per axis: does the picture carry JPEG's 8×8 block grid? Measured on single-pixel steps (every 8th row or
    column): across nearly every block border the step is larger than the typical step inside the block, by a factor
    JPEG keeps between about 1.3 and 3. A real 8 px pixel grid at phase 0 either raises those borders far more (crisp
    cells are flat inside) or not at every block."""
    return _blocky_steps(channels[:, ::8, :]), _blocky_steps(channels[:, :, ::8].transpose(0, 2, 1))


def _blocky_steps(planes: np.ndarray) -> bool:
    n = planes.shape[2] // JPEG_BLOCK * JPEG_BLOCK
    if n < 4 * JPEG_BLOCK:
        return False
    steps = np.abs(np.diff(planes[:, :, :n].astype(np.int16), axis=2)).sum(axis=(0, 1), dtype=np.int64)
    blocks = np.concatenate([[0], steps]).reshape(-1, JPEG_BLOCK)[1:]  # row k: steps into pixels 8k .. 8k+7
    border = blocks[:, 0].astype(np.float64)
    inside = blocks[:, 2:7].mean(axis=1)
    seen = (border + inside) > 0
    if seen.sum() < 4:
        return False
    raised = float(np.mean(border[seen] > inside[seen]))
    ratio = float(np.median(border[seen] / np.maximum(inside[seen], 1e-9)))
    return raised >= JPEG_RAISED and JPEG_EXCESS < ratio < CRISP_EXCESS


def without_block_grid(profile: np.ndarray) -> np.ndarray:
    """The profile with every position mod 8 scaled to the same mean (JPEG's block pattern taken out)."""
    out = profile.copy()
    overall = float(out[1:-1].mean())
    for r in range(JPEG_BLOCK):
        part = out[r or JPEG_BLOCK : len(out) - 1 : JPEG_BLOCK]
        level = float(part.mean()) if len(part) else 0.0
        if level > 0:
            part *= overall / level
    return out


class _Axis:
    """One profile with what every candidate's evaluation reuses."""

    def __init__(self, profile: np.ndarray):
        self.profile = profile
        self.length = len(profile) - 1
        # Baseline-free profile: noise and flat areas sit at the low percentiles.
        inner = profile[1:-1]
        self.base = np.maximum(profile - (np.percentile(inner, 10) if len(inner) else 0.0), 0.0)
        # For locating edges: a crisp edge is a 3-sample plateau after the 3-pixel difference, this puts its peak in
        # the middle.
        self.peaks = np.convolve(self.base, [0.25, 0.5, 0.25], mode="same")
        self.base_padded = np.pad(self.base, PAD)
        self.peaks_padded = np.pad(self.peaks, PAD)
        self.x = np.arange(len(profile), dtype=np.float64)
        total = self.base.sum()
        self.centre = float((self.x * self.base).sum() / total) if total > 0 else self.length / 2
        self.spectrum = np.fft.rfft(profile - profile.mean(), FFT_SIZE)

    def candidates(self, lo: float, hi: float) -> list[float]:
        """Pitches in [lo, hi] at the spectrum's strongest local maxima, by magnitude and by magnitude relative to
        the mean within ±20 % in frequency, each refined to sub-bin precision with a parabola."""
        mag = np.abs(self.spectrum)
        k = np.arange(max(int(np.ceil(FFT_SIZE / hi)), 1), min(int(np.floor(FFT_SIZE / lo)), len(mag) - 2) + 1)
        if len(k) < 3:
            return [float(np.clip(self.length / 2, lo, hi))]
        m = mag[k]
        peaks = np.flatnonzero((m[1:-1] >= m[:-2]) & (m[1:-1] > m[2:])) + 1
        if len(peaks) == 0:
            peaks = np.array([int(np.argmax(m))])
        freq = k / FFT_SIZE
        csum = np.concatenate([[0.0], np.cumsum(m)])
        lo_i, hi_i = np.searchsorted(freq, freq / 1.2), np.searchsorted(freq, freq * 1.2)
        local = (csum[hi_i] - csum[lo_i]) / np.maximum(hi_i - lo_i, 1)
        picks: list[int] = []
        for key in (m, m / (local + 1e-9)):
            picks.extend(int(i) for i in peaks[np.argsort(-key[peaks])][:PEAKS])
        out = []
        for i in dict.fromkeys(picks):
            kb = int(k[i])
            a, b, c = mag[kb - 1], mag[kb], mag[kb + 1]
            denom = a - 2 * b + c
            out.append(FFT_SIZE / (kb + (0.5 * (a - c) / denom if denom < 0 else 0.0)))
        return out

    def phase(self, pitch: float) -> float:
        """Border position mod pitch from the Fourier coefficient at 1/pitch (read off the zero-padded spectrum),
        referred to the edges' centre of mass so that a slightly wrong pitch misplaces the lattice least where the
        edges are."""
        coeff = self.spectrum[int(round(FFT_SIZE / pitch))] * np.exp(2j * np.pi * self.centre / pitch)
        return float((self.centre - np.angle(coeff) * pitch / (2 * np.pi)) % pitch)

    def _lines(self, pitch: float, phase: float) -> np.ndarray:
        k = np.arange(int(np.ceil(-phase / pitch)), int(np.floor((self.length - phase) / pitch)) + 1)
        return phase + k * pitch

    def _window_max(self, positions: np.ndarray, radius: int, peaks: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(maximum of the baseline-free profile within ±radius of each position, where it is). The profiles are
        padded with zeros, so windows reaching past the ends need no clipping."""
        idx = (np.rint(positions).astype(np.int64) + PAD)[:, None] + np.arange(-radius, radius + 1)
        window = (self.peaks_padded if peaks else self.base_padded)[idx]
        best = window.argmax(axis=1)
        rows = np.arange(len(positions))
        return window[rows, best], idx[rows, best] - PAD

    def refine(self, pitch: float, phase: float, rounds: int = 2) -> tuple[float, float]:
        """Least-squares lattice through the strongest edge near each line, weighted by its strength: the spectrum
        places the pitch to about a pixel over a sprite's width, the edges pin it down."""
        for _ in range(rounds):
            lines = self._lines(pitch, phase)
            if len(lines) < 3:
                break
            k = np.rint((lines - phase) / pitch)
            weight, pos = self._window_max(lines, max(1, int(round(0.3 * pitch))), peaks=True)
            if np.count_nonzero(weight) < 3:
                break
            w = weight / weight.sum()
            km, pm = float(w @ k), float(w @ pos)
            var = float(w @ (k - km) ** 2)
            if var <= 0:
                break
            fitted = float(w @ ((k - km) * (pos - pm))) / var
            if not 0.9 * pitch < fitted < 1.1 * pitch:
                break
            pitch, phase = fitted, (pm - km * fitted) % fitted
        return pitch, phase

    def contrast(self, pitch: float, phase: float) -> float:
        """Mean over the lines in the busy part of the axis of (line - mid) / (line + mid), where `line` is the
        profile's maximum near a lattice line and `mid` the same halfway to the next one.

        One vote per line, not sums, so a few huge edges cannot carry a lattice that merely passes through them;
        empty lines vote 0, so a lattice at a third of the pitch (a border on every third line) scores low. A true
        grid scores high, its double pitch ~0 (its mid-lines are borders too), its half ~0 (every other line is a
        cell's middle, below its mid-points' blurred edges), an unrelated pitch ~0."""
        lines = self._lines(pitch, phase)
        if len(lines) < 3:
            return 0.0
        radius = max(1, int(round(CONTRAST_WINDOW * pitch)))
        line = self._window_max(lines[:-1], radius)[0]
        mid = self._window_max(lines[:-1] + pitch / 2, radius)[0]
        span = np.maximum(line, mid)
        if not np.any(span > 0):
            return 0.0
        positive = span[span > 0]
        typical = np.partition(positive, len(positive) // 2)[len(positive) // 2]
        busy = np.convolve(span, np.ones(5))[2:-2] > 0.25 * typical
        total = line + mid
        votes = np.where(total > 0, (line - mid) / np.where(total > 0, total, 1.0), 0.0)
        return float(votes[busy].sum() / (busy.sum() + PRIOR_VOTES))

    def best(self, lo: float, hi: float, skip=None) -> tuple[float, float, float]:
        """(pitch, phase, contrast) of the best candidate in [lo, hi]: every candidate gets a quick fit, the three
        best a thorough one."""
        scored = []
        tried: list[float] = []
        for base in self.candidates(lo, hi):
            for factor in (1.0, 2.0, 3.0, 0.5):
                pitch = base * factor
                if not lo <= pitch <= hi or any(abs(pitch - t) < 0.005 * t for t in tried):
                    continue
                tried.append(pitch)
                pitch, phase = self.refine(pitch, self.phase(pitch), rounds=1)
                if lo <= pitch <= hi and not (skip and skip(pitch, phase)):
                    scored.append((self.contrast(pitch, phase), pitch, phase))
        best = (float(np.clip(self.length / 2, lo, hi)), 0.0, 0.0)
        for _, pitch, phase in sorted(scored, reverse=True)[:3]:
            pitch, phase = self.refine(pitch, phase, rounds=2)
            score = self.contrast(pitch, phase) if lo <= pitch <= hi and not (skip and skip(pitch, phase)) else -1.0
            if score > best[2]:
                best = (pitch, phase, score)
        return best

    def snap(self, pitch: float, phase: float) -> np.ndarray:
        """Lattice borders from the last at or before 0 to the first at or after the end, each moved to the strongest
        edge within ±SNAP_WINDOW pitch (to sub-pixel precision); where none stands out (weaker than twice the
        profile's median) or one disagrees with its neighbours by over 0.2 pitch, the neighbours' offset is used."""
        k = np.arange(int(np.floor(-phase / pitch)), int(np.ceil((self.length - phase) / pitch)) + 1)
        lattice = phase + k * pitch
        strength, pos = self._window_max(lattice, max(1, int(round(SNAP_WINDOW * pitch))), peaks=True)
        inner = (pos > 0) & (pos < self.length)
        # Sub-pixel: centroid of the peak and its two neighbours (a flat-topped crisp edge lands in its middle).
        left = self.peaks[np.clip(pos - 1, 0, self.length)]
        right = self.peaks[np.clip(pos + 1, 0, self.length)]
        mass = left + strength + right
        pos = pos + np.where(inner & (mass > 0), (right - left) / np.where(mass > 0, mass, 1.0), 0.0)
        positive = self.peaks[self.peaks > 0]
        floor = 2.0 * float(np.median(positive)) if len(positive) else np.inf
        known = (strength > floor) & inner
        if not known.any():
            return lattice
        offsets = np.interp(np.arange(len(lattice)), np.flatnonzero(known), (pos - lattice)[known])
        steady = _running_median(offsets, 5)
        offsets = np.where(np.abs(offsets - steady) > 0.2 * pitch, steady, offsets)
        return np.maximum.accumulate(lattice + offsets)


def _running_median(values: np.ndarray, width: int) -> np.ndarray:
    padded = np.pad(values, width // 2, mode="edge")
    return np.median(np.lib.stride_tricks.sliding_window_view(padded, width), axis=1)


def pitch_range(length: int, count: int | None) -> tuple[float, float]:
    """Pitches worth trying: 2-64 px (at most half the axis), or what `count` ± 2 cells on `length` px allow: count
    cells whose centres are on the axis span (count ± 1) pitches, and a count one off (a user's guess of the model's
    grid) should still find the grid, then get an edge cell added or dropped."""
    if count is not None:
        lo, hi = length / (count + 2.0), length / max(count - 2.0, 0.5)
    else:
        lo, hi = MIN_PITCH, min(MAX_PITCH, length / 2.0)
    return max(lo, MIN_PITCH), max(min(hi, float(length)), MIN_PITCH + 1e-6)


def cells_on_image(borders: np.ndarray, length: int, count: int | None = None) -> np.ndarray:
    """The borders of the cells whose centre lies on [0, length); with `count`, exactly that many cells: the edge
    cell least on the image is dropped, or a cell added on the side with more room."""
    centres = (borders[:-1] + borders[1:]) / 2
    inside = np.flatnonzero((centres >= 0) & (centres < length))
    if len(inside) == 0:
        return np.array([0.0, float(length)])
    first, last = int(inside[0]), int(inside[-1])
    if count is None:
        return borders[first : last + 2].astype(np.float64)
    while last - first + 1 > count:
        left_share = min(borders[first + 1], length) - max(borders[first], 0)
        right_share = min(borders[last + 1], length) - max(borders[last], 0)
        if left_share < right_share:
            first += 1
        else:
            last -= 1
    out = list(borders[first : last + 2].astype(np.float64))
    pitch = float(np.median(np.diff(borders))) if len(borders) > 1 else float(length)
    while len(out) - 1 < count:
        if out[0] > length - out[-1]:
            out.insert(0, out[0] - pitch)
        else:
            out.append(out[-1] + pitch)
    return np.array(out)


def _search(profile: np.ndarray, lo: float, hi: float, jpeg: bool) -> tuple[_Axis, float, float, float]:
    """(the profile searched, pitch, phase, contrast) of the best lattice with pitch in [lo, hi]."""
    axis = _Axis(profile)
    pitch, phase, contrast = axis.best(lo, hi)
    if jpeg:
        # Search again with the block pattern evened out and block-aligned lattices left out; the first answer stays
        # only if nothing else stands out at all.
        clean = _Axis(without_block_grid(profile))
        c_pitch, c_phase, c_contrast = clean.best(lo, hi, skip=_block_aligned)
        if c_contrast >= MIN_CONFIDENCE or not _block_aligned(pitch, phase):
            return clean, c_pitch, c_phase, c_contrast
    return axis, pitch, phase, contrast


def detect_axis(profile: np.ndarray, count: int | None = None, jpeg: bool = False) -> AxisGrid:
    """The grid along one axis from its edge profile; `count` = the number of cells it must have, if known; `jpeg`:
    the picture carries JPEG's block grid along this axis (`jpeg_blocks`)."""
    length = len(profile) - 1
    axis, pitch, phase, contrast = _search(profile, *pitch_range(length, count), jpeg)
    return _axis_grid(axis, pitch, phase, contrast, count, jpeg)


def _axis_grid(axis: _Axis, pitch: float, phase: float, contrast: float, count: int | None, jpeg: bool) -> AxisGrid:
    borders = cells_on_image(axis.snap(pitch, phase), axis.length, count)
    return AxisGrid(pitch=pitch, phase=phase, borders=borders, confidence=contrast, jpeg=jpeg)


def detect(
    px: np.ndarray, py: np.ndarray, size: tuple[int, int] | None = None, jpeg: tuple[bool, bool] = (False, False)
) -> Grid:
    """The grid from both axes' profiles. Found freely, the two axes usually share a pitch (square pixels): when
    they disagree, each is also searched within 3 % of the other's pitch, and that answer is taken when its lattice
    stands out nearly as well (a weak axis is more often misled by a sprite's shapes than given odd pixels)."""
    nx, ny = size if size is not None else (None, None)
    found = []
    for profile, count, blocks in ((px, nx, jpeg[0]), (py, ny, jpeg[1])):
        found.append(_search(profile, *pitch_range(len(profile) - 1, count), blocks))
    if size is None:
        (ax, pxx, phx, cx), (ay, pyy, phy, cy) = found
        if abs(pxx - pyy) > 0.03 * min(pxx, pyy):
            alt_x = _search(px, 0.97 * pyy, 1.03 * pyy, jpeg[0])
            alt_y = _search(py, 0.97 * pxx, 1.03 * pxx, jpeg[1])
            # the weaker axis follows the stronger when it can do nearly as well at that pitch
            if cx >= cy and alt_y[3] >= SQUARE_SHARE * cy:
                found[1] = alt_y
            elif cy > cx and alt_x[3] >= SQUARE_SHARE * cx:
                found[0] = alt_x
    (ax, pxx, phx, cx), (ay, pyy, phy, cy) = found
    return Grid(
        x=_axis_grid(ax, pxx, phx, cx, nx, jpeg[0]),
        y=_axis_grid(ay, pyy, phy, cy, ny, jpeg[1]),
    )


def _block_aligned(pitch: float, phase: float) -> bool:
    """A lattice JPEG's blocks alone would make: pitch 4, 8, 16 or 32 px (to 1 %), lines on the block borders."""
    on_blocks = min(phase % JPEG_BLOCK, -phase % JPEG_BLOCK) < 1.0
    return on_blocks and any(abs(pitch - JPEG_BLOCK * f) < 0.01 * JPEG_BLOCK * f for f in (0.5, 1, 2, 4))


def detect_grid(rgba: np.ndarray, size: tuple[int, int] | None = None) -> Grid:
    """The implied grid of an (H, W, 3|4) uint8 image; `size` = (cells across, cells down) when they are known."""
    channels = planes(rgba)
    return detect(*edge_profiles(channels), size, jpeg_blocks(channels))
