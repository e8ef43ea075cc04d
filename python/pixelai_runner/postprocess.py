"""The pixel-art step that turns a decoded image into the final sprite. Engine-independent, pure functions.

Order: BiRefNet matte (if asked) → pixel grid → colour-key background removal → palette → RGBA out. The BiRefNet
matte is computed on the full decoded image, since the model needs the detail the pixel grid loses; the grid step
then carries that alpha along.

Grid modes (`pixel.grid`, default "auto"):
  * "auto": find the implied pixel grid the model painted (pixelize/), read one colour per cell, key the background
    on those cells, palette by clustering in OKLab; the requested width×height is used as the cell count when the
    picture has a grid of that size, else the art recovered at its own size is scaled to it with nearest-neighbour.
    A picture without a detectable grid is handled as "fixed". What happened is reported (see `postprocess_report`).
  * "fixed": the whole canvas is taken as width×height pixels at phase 0 (NEAREST resize as `fit_mode` says), then
    the fixed colour key and a median-cut palette. Fitting first keeps the later steps cheap and lets the colour key
    treat the transparent letterbox of `contain` as background.

Palette rule (`colors` = N, 1..256; 0 = keep every colour, in "auto" after merging near-duplicates; with a fixed
`palette`, every opaque pixel takes one of its colours, nearest in OKLab, and N > 0 keeps the N it uses most; `dither`
as pixelize/palette_map.py says):
  * alpha is made binary (< 128 → fully transparent) so a palette slot can stand for "transparent";
  * if any pixel is transparent, that slot is taken and the opaque pixels get at most N-1 distinct colours;
    otherwise they get at most N. N = 1 with transparency is the one exception: 1 opaque colour + transparent;
  * every transparent pixel is written as (0, 0, 0, 0), so the PNG counts at most N distinct RGBA values
    (N = 1 with transparency: 2).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image

from . import pixelize
from .backends.base import PixelSpec
from .errors import RunnerError
from .pixelize.keying import dominant_border_colour, flood_from_border
from .pixelize.palette_map import DITHER_MODES, parse_hex, reduce
from .pixelize.pipeline import MAX_COLORS, palette_budget

FIT_MODES = ("contain", "cover", "stretch")
GRID_MODES = ("auto", "fixed")
DEFAULT_GRID = "auto"
BACKGROUND_MODES = (False, "color-key", "birefnet")
DEFAULT_KEY_TOLERANCE = 48.0  # Euclidean RGB distance; diffusion backgrounds are flat-ish, never exactly flat
BIREFNET_UNAVAILABLE = "removeBackground 'birefnet' is not available on this runner"

# image → the same image as RGBA with the background made (softly) transparent; background.BiRefNetRemover is one.
BackgroundRemover = Callable[[Image.Image], Image.Image]


def validate(pixel: PixelSpec | None, remove_background, birefnet_missing: str | None = BIREFNET_UNAVAILABLE) -> None:
    """Reject options the post-process cannot honour before any expensive generation starts.

    `birefnet_missing` is None when this runner can run BiRefNet, otherwise why it cannot: a missing model is the
    engine's shortfall, not a bad request, hence ENGINE_UNAVAILABLE.
    """
    if remove_background not in BACKGROUND_MODES:
        raise RunnerError("INVALID_REQUEST", f"unknown removeBackground {remove_background!r}")
    if remove_background == "birefnet" and birefnet_missing is not None:
        raise RunnerError("ENGINE_UNAVAILABLE", birefnet_missing)
    if pixel is None:
        return
    if pixel.fit_mode not in FIT_MODES:
        raise RunnerError("INVALID_REQUEST", f"unknown fitMode {pixel.fit_mode!r} (expected one of {FIT_MODES})")
    if pixel.width < 1 or pixel.height < 1:
        raise RunnerError("INVALID_REQUEST", f"pixel size must be positive, got {pixel.width}x{pixel.height}")
    if not 0 <= pixel.colors <= MAX_COLORS:
        raise RunnerError("INVALID_REQUEST", f"colors must be 0..{MAX_COLORS}, got {pixel.colors}")
    if grid_mode(pixel) not in GRID_MODES:
        raise RunnerError("INVALID_REQUEST", f"unknown grid {grid_mode(pixel)!r} (expected one of {GRID_MODES})")
    if pixel.dither not in DITHER_MODES:
        raise RunnerError("INVALID_REQUEST", f"unknown dither {pixel.dither!r} (expected one of {DITHER_MODES})")


def target_palette(pixel: PixelSpec) -> np.ndarray | None:
    """The job's fixed palette as (k, 3) uint8, or None when the palette comes from the picture."""
    return parse_hex(list(pixel.palette)) if pixel.palette else None


def grid_mode(pixel: PixelSpec) -> str:
    """The spec's grid mode; a spec without one (the runner protocol before it carries the field) gets the default."""
    return getattr(pixel, "grid", None) or DEFAULT_GRID


def fit_to_grid(image: Image.Image, width: int, height: int, fit_mode: str = "contain") -> Image.Image:
    """Downscale to width×height with NEAREST (hard pixel edges, no blended colours); always RGBA."""
    src = image.convert("RGBA")
    sw, sh = src.size
    if fit_mode == "stretch":
        return src.resize((width, height), Image.Resampling.NEAREST)
    if fit_mode == "cover":
        scale = max(width / sw, height / sh)
        crop_w, crop_h = width / scale, height / scale
        left, top = (sw - crop_w) / 2, (sh - crop_h) / 2
        return src.resize((width, height), Image.Resampling.NEAREST, box=(left, top, left + crop_w, top + crop_h))
    if fit_mode == "contain":
        scale = min(width / sw, height / sh)
        inner_w = min(width, max(1, round(sw * scale)))
        inner_h = min(height, max(1, round(sh * scale)))
        canvas = Image.new("RGBA", (width, height), (0, 0, 0, 0))
        canvas.paste(
            src.resize((inner_w, inner_h), Image.Resampling.NEAREST), ((width - inner_w) // 2, (height - inner_h) // 2)
        )
        return canvas
    raise RunnerError("INVALID_REQUEST", f"unknown fitMode {fit_mode!r}")


def color_key(image: Image.Image, tolerance: float = DEFAULT_KEY_TOLERANCE) -> Image.Image:
    """Make the background transparent without a model.

    The key is the dominant colour on the image border; pixels within `tolerance` of it (or already transparent)
    that connect to the border become alpha 0. Enclosed areas of the same colour inside the sprite are kept.
    """
    return _color_key(image, tolerance)[0]


def _color_key(image: Image.Image, tolerance: float) -> tuple[Image.Image, dict | None]:
    """`color_key`, and what it keyed ({"colour": [r, g, b], "tolerance": t}; None when there was no border colour)."""
    rgba = np.array(image.convert("RGBA"))
    rgb, alpha = rgba[..., :3], rgba[..., 3]
    opaque = alpha > 0
    key = dominant_border_colour(rgb, opaque)
    if key is None:
        return Image.fromarray(rgba, "RGBA"), None
    distance = np.sqrt(((rgb.astype(np.float32) - key.astype(np.float32)) ** 2).sum(axis=-1))
    background = flood_from_border((distance <= tolerance) | ~opaque)
    rgba[background] = 0
    keyed = {"colour": [int(c) for c in key], "tolerance": round(float(tolerance), 1)}
    return Image.fromarray(rgba, "RGBA"), keyed


def quantize(image: Image.Image, colors: int, palette: np.ndarray | None = None, dither: str = "none") -> Image.Image:
    """Reduce to the palette rule in the module docstring: median cut (deterministic) or the given palette."""
    rgba = np.array(image.convert("RGBA"))
    transparent = rgba[..., 3] < 128
    rgba[transparent] = 0
    rgba[~transparent, 3] = 255
    if colors <= 0 and palette is None:
        return Image.fromarray(rgba, "RGBA")
    budget = palette_budget(colors, bool(transparent.any()))
    return Image.fromarray(reduce(rgba, budget, palette, dither, _median_cut), "RGBA")


def _median_cut(rgb: np.ndarray, budget: int) -> np.ndarray:
    """(n, 3) colours → at most `budget` distinct ones by PIL's median cut, no dithering."""
    rounded = np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
    if len(np.unique(rounded, axis=0)) <= budget:
        return rounded
    # Quantise only the opaque pixels, as a 1-row strip, so transparent ones neither vote nor take a palette entry.
    strip = Image.fromarray(rounded.reshape(1, -1, 3), "RGB")
    indexed = strip.quantize(colors=budget, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    palette = np.array(indexed.getpalette()[: 3 * budget], dtype=np.uint8).reshape(-1, 3)
    return palette[np.array(indexed).reshape(-1)]


def postprocess_report(
    image: Image.Image,
    pixel: PixelSpec | None = None,
    remove_background=False,
    key_tolerance: float = DEFAULT_KEY_TOLERANCE,
    remover: BackgroundRemover | None = None,
) -> tuple[Image.Image, dict]:
    """Decoded image → (final RGBA image, report), following the module docstring. `remover` runs for
    remove_background "birefnet" (without one that option is refused).

    The report, for a job result: {} without a pixel spec; else {"grid": {"mode": "fixed"}} or, in "auto",
    {"grid": {"mode": "auto", "pitch": [x, y], "phase": [x, y], "cells": [x, y], "confidence": 0..1, "fit": ...}}
    where fit is "native" (the requested size is the grid's), "nearest from WxH" (the grid's own size, scaled to
    the request) or "fixed" (no grid found: handled as grid "fixed"); color-key adds
    {"background": {"colour": [r, g, b], "tolerance": t}} when it found a border colour. The shape is the runner
    contract's PixelReport (contract/runner-protocol.schema.json)."""
    validate(pixel, remove_background, None if remover is not None else BIREFNET_UNAVAILABLE)
    out = image
    if remove_background == "birefnet":
        out = remover(out.convert("RGBA")).convert("RGBA")
    if pixel is not None and grid_mode(pixel) == "auto":
        # RGB or RGBA as it comes: the grid search reads channel planes and skips an RGBA copy of an RGB picture.
        found = pixelize.fit(
            out,
            pixel.width,
            pixel.height,
            pixel.colors,
            pixel.fit_mode,
            remove_background == "color-key",
            target_palette(pixel),
            pixel.dither,
        )
        if found is not None:
            return found.image, found.info
        image, report = _fixed(out.convert("RGBA"), pixel, remove_background, key_tolerance)
        return image, {**report, "grid": {"mode": "auto", "fit": "fixed", "confidence": 0.0}}
    return _fixed(out.convert("RGBA"), pixel, remove_background, key_tolerance)


def _fixed(
    out: Image.Image, pixel: PixelSpec | None, remove_background, key_tolerance: float
) -> tuple[Image.Image, dict]:
    keyed = None
    if pixel is not None:
        out = fit_to_grid(out, pixel.width, pixel.height, pixel.fit_mode)
    if remove_background == "color-key":
        out, keyed = _color_key(out, key_tolerance)
    if pixel is not None and (pixel.colors > 0 or pixel.palette):
        out = quantize(out, pixel.colors, target_palette(pixel), pixel.dither)
    if pixel is None:
        return out, {}
    return out, {"grid": {"mode": "fixed"}, **({"background": keyed} if keyed else {})}


def postprocess(
    image: Image.Image,
    pixel: PixelSpec | None = None,
    remove_background=False,
    key_tolerance: float = DEFAULT_KEY_TOLERANCE,
    remover: BackgroundRemover | None = None,
) -> Image.Image:
    """`postprocess_report` without the report."""
    return postprocess_report(image, pixel, remove_background, key_tolerance, remover)[0]
