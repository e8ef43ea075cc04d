"""Cell colours, palettes and background keying on recovered cells."""

import numpy as np
import pytest
from PIL import Image
from pixelai_runner.pixelize import pixelize
from pixelai_runner.pixelize.cells import cell_colours
from pixelai_runner.pixelize.color import oklab_to_rgb, rgb_to_oklab
from pixelai_runner.pixelize.grid import planes
from pixelai_runner.pixelize.palette import quantize_colours
from pixelai_runner.postprocess import color_key
from pixelize_cases import accuracy, paint, palette_art

TRUE = np.array([[20, 20, 30], [200, 40, 40], [40, 180, 60], [230, 220, 90], [90, 90, 220], [250, 250, 250]], float)


def _noisy_samples(counts, sigma, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(counts)), counts)
    return np.clip(TRUE[labels] + rng.normal(0, sigma, (len(labels), 3)), 0, 255), labels


def test_oklab_round_trip():
    rgb = np.random.default_rng(1).uniform(0, 255, (500, 3))
    assert np.abs(oklab_to_rgb(rgb_to_oklab(rgb)) - rgb).max() < 1e-6
    assert np.allclose(rgb_to_oklab(np.array([255.0, 255, 255])), [1, 0, 0], atol=1e-4)


def test_requested_palette_finds_each_true_colour_including_a_rare_one():
    samples, labels = _noisy_samples([400, 300, 200, 150, 100, 3], sigma=8)
    out = quantize_colours(samples, len(TRUE))
    assert len(np.unique(out, axis=0)) <= len(TRUE)
    # every sample lands on a colour within 6 of its true colour: the clusters' means average the noise away
    assert np.abs(out.astype(float) - TRUE[labels]).max() <= 6


def test_palette_never_exceeds_the_budget_and_is_deterministic():
    rgb = np.random.default_rng(2).uniform(0, 255, (3000, 3))
    for budget in (1, 2, 7, 32):
        a, b = quantize_colours(rgb, budget), quantize_colours(rgb, budget)
        assert len(np.unique(a, axis=0)) <= budget
        assert np.array_equal(a, b)


def test_budget_above_the_distinct_colours_keeps_them():
    rgb = TRUE[[0, 1, 2, 1, 0]]
    assert np.array_equal(quantize_colours(rgb, 8), rgb.astype(np.uint8))


def test_zero_budget_merges_near_duplicates_only():
    samples, labels = _noisy_samples([300, 300, 300, 300, 300, 300], sigma=2, seed=3)
    out = quantize_colours(samples, 0)
    kept = len(np.unique(out, axis=0))
    assert len(TRUE) <= kept <= 2 * len(TRUE)
    assert np.abs(out.astype(float) - TRUE[labels]).max() <= 8


def test_cell_colour_ignores_blur_and_outliers_near_the_borders():
    cells = palette_art(20, 20, 6, seed=4)
    image, bx, by = paint(cells, 12.0, (0.0, 0.0), blur=0.2, noise=6, seed=5)
    rgba = np.asarray(image.convert("RGBA")).copy()
    rgba[::7, ::5, :3] = 255  # stray bright pixels, as a JPEG ringing or a sparkle would leave
    colours, opaque = cell_colours(planes(rgba), bx, by)
    assert opaque.all()
    assert np.abs(colours - cells).max() <= 20


def test_transparent_background_gives_hard_alpha():
    cells = np.zeros((30, 30, 4), np.uint8)
    cells[6:24, 8:22, :3] = palette_art(14, 18, 5, seed=6)
    cells[6:24, 8:22, 3] = 255
    image, _, _ = paint(cells, 9.4, (2.0, 3.0), jitter=0.04, blur=0.15, noise=3, seed=7)
    out = pixelize(image, colors=6).image
    alpha = np.asarray(out)[..., 3]
    assert out.size == (30, 30) and set(np.unique(alpha)) <= {0, 255}
    assert np.array_equal(alpha > 0, cells[..., 3] > 0)
    assert len(np.unique(np.asarray(out).reshape(-1, 4), axis=0)) <= 6


def _sprite_near_background():
    """A 20×20 sprite on a painted background lit by a ramp; its outer ring is a colour ~35 away from the background
    (a light grey-blue on a light blue), which a generous fixed key eats."""
    background = np.array([200, 215, 235])
    cells = np.zeros((40, 40, 3), np.uint8)
    yy, xx = np.mgrid[0:40, 0:40]
    cells[:] = np.clip(background + ((xx + yy) - 40)[..., None] * 0.5, 0, 255)  # ±20 ramp across the picture
    inner = palette_art(16, 16, 6, seed=8)
    sprite = np.zeros((20, 20, 3), np.uint8)
    sprite[:] = (178, 190, 214)
    sprite[2:18, 2:18] = inner
    cells[10:30, 10:30] = sprite
    mask = np.zeros((40, 40), bool)
    mask[10:30, 10:30] = True
    return cells, mask


def test_colour_key_on_cells_keeps_sprite_colours_near_the_background():
    cells, mask = _sprite_near_background()
    image, _, _ = paint(cells, 10.6, (3.0, 2.0), jitter=0.04, blur=0.15, noise=4, seed=9)
    result = pixelize(image, colors=0, key=True)
    alpha = np.asarray(result.image)[..., 3] > 0
    assert result.image.size == (40, 40)
    assert alpha[mask].mean() >= 0.99, "sprite cells kept"
    assert (~alpha[~mask]).mean() >= 0.97, "background cells removed"
    assert result.info["background"]["tolerance"] < 35
    # the fixed key with its default tolerance, on the same picture fitted the old way, loses the outer ring
    fixed = np.asarray(color_key(image.resize((40, 40), Image.Resampling.NEAREST)))[..., 3] > 0
    assert fixed[mask].mean() < 0.9


@pytest.mark.parametrize("colors", [4, 7])
def test_pixelize_respects_the_palette_rule_with_transparency(colors):
    cells, _ = _sprite_near_background()
    image, _, _ = paint(cells, 10.6, (3.0, 2.0), noise=4, seed=10)
    out = np.asarray(pixelize(image, colors=colors, key=True).image).reshape(-1, 4)
    assert len(np.unique(out, axis=0)) <= colors
    assert (out[out[:, 3] == 0] == 0).all()


def test_opaque_art_keeps_its_colours_exactly_when_clean():
    cells = palette_art(24, 24, 5, seed=11)
    image, _, _ = paint(cells, 8.5, (1.0, 1.0), seed=12)
    assert accuracy(pixelize(image, colors=5).image, cells, tolerance=0) == 1.0
