"""Fixed palettes and dithering (pixelize/palette_map.py) and their use by the pixel-art step."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from pixelai_runner.backends.base import PixelSpec
from pixelai_runner.errors import RunnerError
from pixelai_runner.pixelize.color import rgb_to_oklab
from pixelai_runner.pixelize.palette_map import choose, map_to_palette, parse_hex
from pixelai_runner.postprocess import postprocess

PICO8 = [
    "#000000", "#1d2b53", "#7e2553", "#008751", "#ab5236", "#5f574f", "#c2c3c7", "#fff1e8",
    "#ff004d", "#ffa300", "#ffec27", "#00e436", "#29adff", "#83769c", "#ff77a8", "#ffccaa",
]  # fmt: skip
BLACK_WHITE = np.array([[0, 0, 0], [255, 255, 255]], dtype=np.uint8)


def colours_of(image: np.ndarray, opaque: np.ndarray | None = None) -> set[tuple[int, ...]]:
    pixels = image[opaque] if opaque is not None else image.reshape(-1, image.shape[-1])
    return {tuple(int(v) for v in p) for p in pixels}


def test_parse_hex_drops_duplicates_in_order():
    assert parse_hex(["#ff0000", "#00ff00", "#ff0000"]).tolist() == [[255, 0, 0], [0, 255, 0]]


def test_nearest_is_taken_in_oklab_not_rgb():
    palette = parse_hex(PICO8)
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (400, 3)).astype(np.float64)
    by_rgb = ((rgb[:, None, :] - palette[None].astype(np.float64)) ** 2).sum(-1).argmin(1)
    by_lab = ((rgb_to_oklab(rgb)[:, None, :] - rgb_to_oklab(palette)[None]) ** 2).sum(-1).argmin(1)
    assert (by_rgb != by_lab).sum() > 20  # the two metrics really disagree on these colours
    out = map_to_palette(rgb.reshape(20, 20, 3), np.ones((20, 20), bool), palette)
    assert out.reshape(-1, 3).tolist() == palette[by_lab].tolist()


def test_transparent_pixels_stay_zero_and_every_opaque_one_is_a_palette_colour():
    rng = np.random.default_rng(5)
    rgb = rng.integers(0, 256, (16, 16, 3))
    opaque = rng.random((16, 16)) > 0.3
    palette = parse_hex(PICO8)
    for dither in ("none", "ordered", "floyd-steinberg"):
        out = map_to_palette(rgb, opaque, palette, dither)
        assert colours_of(out, opaque) <= {tuple(c) for c in palette.tolist()}
        assert not out[~opaque].any()


def test_ordered_dither_mixes_the_two_nearest_colours_in_a_fixed_pattern():
    grey = np.full((8, 8, 3), 118.0)  # about halfway between black and white in OKLab lightness
    out = map_to_palette(grey, np.ones((8, 8), bool), BLACK_WHITE, "ordered")
    white = (out[..., 0] == 255).mean()
    assert 0.25 < white < 0.75
    assert np.array_equal(out[:4, :4], out[4:, 4:])  # the 4×4 pattern tiles
    flat = map_to_palette(np.full((8, 8, 3), 255.0), np.ones((8, 8), bool), BLACK_WHITE, "ordered")
    assert (flat == 255).all()  # a colour on a palette entry stays flat
    plain = map_to_palette(grey, np.ones((8, 8), bool), BLACK_WHITE, "none")
    assert len(colours_of(plain)) == 1


def test_floyd_steinberg_keeps_the_average_lightness():
    ramp = np.repeat(np.linspace(0, 255, 32)[None, :, None], 32, axis=0).repeat(3, axis=2)
    out = map_to_palette(ramp, np.ones((32, 32), bool), BLACK_WHITE, "floyd-steinberg")
    left, right = (out[:, :8, 0] == 255).mean(), (out[:, -8:, 0] == 255).mean()
    assert left < 0.3 and right > 0.8  # dark end mostly black, light end mostly white (OKLab lightness)
    lightness_in = rgb_to_oklab(ramp)[..., 0].mean()
    lightness_out = rgb_to_oklab(out.astype(np.float64))[..., 0].mean()
    assert abs(lightness_in - lightness_out) < 0.03


def test_choose_keeps_the_most_used_palette_colours():
    palette = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255]], dtype=np.uint8)
    rgb = np.array([[250, 10, 10]] * 5 + [[10, 10, 250]] * 3 + [[10, 250, 10]], dtype=np.float64)
    assert choose(rgb, palette, 2).tolist() == [[255, 0, 0], [0, 0, 255]]
    assert choose(rgb, palette, 0).tolist() == palette.tolist()


@pytest.mark.parametrize("grid", ["auto", "fixed"])
@pytest.mark.parametrize("dither", ["none", "ordered", "floyd-steinberg"])
def test_postprocess_output_uses_only_the_given_colours(grid, dither):
    rng = np.random.default_rng(11)
    cells = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    image = Image.fromarray(np.repeat(np.repeat(cells, 8, 0), 8, 1), "RGB")
    spec = PixelSpec(width=16, height=16, grid=grid, palette=tuple(PICO8), dither=dither)
    out = np.array(postprocess(image, spec))
    assert out.shape == (16, 16, 4)
    assert colours_of(out[..., :3]) <= {tuple(c) for c in parse_hex(PICO8).tolist()}


def test_palette_with_colors_keeps_that_many_of_its_colours():
    rng = np.random.default_rng(12)
    image = Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), "RGB")
    out = np.array(postprocess(image, PixelSpec(width=32, height=32, grid="fixed", colors=4, palette=tuple(PICO8))))
    assert len(colours_of(out[..., :3])) <= 4
    assert colours_of(out[..., :3]) <= {tuple(c) for c in parse_hex(PICO8).tolist()}


def test_dither_without_a_palette_dithers_onto_the_pictures_own_colours():
    ramp = np.repeat(np.linspace(0, 255, 32)[None, :, None], 32, axis=0).repeat(3, axis=2).astype(np.uint8)
    image = Image.fromarray(ramp, "RGB")
    plain = np.array(postprocess(image, PixelSpec(width=32, height=32, grid="fixed", colors=3)))
    dithered = np.array(postprocess(image, PixelSpec(width=32, height=32, grid="fixed", colors=3, dither="ordered")))
    assert colours_of(dithered[..., :3]) <= colours_of(plain[..., :3])
    assert not np.array_equal(plain, dithered)


def test_unknown_dither_is_refused():
    with pytest.raises(RunnerError) as err:
        postprocess(Image.new("RGB", (8, 8)), PixelSpec(width=8, height=8, dither="bayer"))
    assert err.value.code == "INVALID_REQUEST"
