"""Grid detection, one synthetic case per way generated pixel art defeats a naive grid: non-integer pitch and phase,
wobbly borders, a painted (opaque) background, a fully opaque texture, JPEG's 8 px block grid."""

import numpy as np
import pytest
from pixelai_runner.pixelize import pixelize
from pixelai_runner.pixelize.grid import detect_grid
from pixelize_cases import accuracy, paint, palette_art


def _rgba(image):
    return np.asarray(image.convert("RGBA"))


@pytest.mark.parametrize("pitch, phase", [(10.37, (3.1, 1.4)), (7.62, (0.0, 2.9)), (13.55, (5.0, 0.5))])
def test_non_integer_pitch_and_phase_are_found(pitch, phase):
    truth = palette_art(30, 26, 8, seed=1)
    image, bx, by = paint(truth, pitch, phase, jitter=0.03, blur=0.1, noise=3, seed=2)
    grid = detect_grid(_rgba(image))
    assert grid.size == (30, 26)
    assert abs(grid.x.pitch - pitch) < 0.01 * pitch and abs(grid.y.pitch - pitch) < 0.01 * pitch
    assert np.abs(grid.x.borders - bx).max() < 0.2 * pitch
    result = pixelize(image, colors=0)
    assert accuracy(result.image, truth) >= 0.98


def test_whole_canvas_resize_misses_a_wobbly_blurred_grid():
    """What grid detection is for: resizing the whole canvas to the right cell count samples near the (wobbly,
    blurred) borders of many cells; reading each detected cell's centre does not."""
    truth = palette_art(48, 40, 8, seed=1)
    image, _, _ = paint(truth, 10.37, (4.5, 4.5), jitter=0.08, blur=0.15, noise=4, seed=2)
    image = image.crop((0, 0, image.width - 4, image.height - 4))  # last column and row 60 % on the canvas
    naive = accuracy(image.resize((48, 40), resample=0), truth)
    ours = pixelize(image)
    assert ours.image.size == (48, 40)
    assert accuracy(ours.image, truth) >= 0.98 and naive < 0.9


def test_wobbly_borders_are_snapped_to_the_edges():
    truth = palette_art(40, 40, 10, seed=3)
    pitch = 9.3
    image, bx, _ = paint(truth, pitch, (2.0, 2.0), jitter=0.12, blur=0.1, noise=2, seed=4)
    grid = detect_grid(_rgba(image), (40, 40))
    lattice = (
        grid.x.phase + (np.arange(41) + np.round((grid.x.borders[0] - grid.x.phase) / grid.x.pitch)) * grid.x.pitch
    )
    snapped_error = np.abs(grid.x.borders - bx)[1:-1].mean()
    rigid_error = np.abs(lattice - bx)[1:-1].mean()
    assert snapped_error < 0.6 * rigid_error
    assert snapped_error < 0.05 * pitch


def test_painted_background_grid_is_found_from_the_sprite_alone():
    """Only the sprite carries borders; the flat painted background around it has none."""
    cells = np.zeros((44, 44, 3), np.uint8)
    cells[:] = (200, 215, 230)
    cells[10:34, 12:36] = palette_art(24, 24, 9, seed=5)
    image, _, _ = paint(cells, 11.4, (4.0, 5.0), jitter=0.05, blur=0.15, noise=5, seed=6)
    assert image.mode == "RGB"
    grid = detect_grid(_rgba(image))
    assert grid.size == (44, 44)
    assert abs(grid.x.pitch - 11.4) < 0.1


def test_fully_opaque_texture():
    texture = palette_art(56, 48, 6, seed=7)
    image, _, _ = paint(texture, 9.65, (1.0, 4.0), jitter=0.04, blur=0.15, noise=4, seed=8)
    grid = detect_grid(_rgba(image))
    assert grid.size == (56, 48)
    assert accuracy(pixelize(image, colors=6).image, texture) >= 0.97


@pytest.mark.parametrize("pitch, seed", [(15.6, 0), (7.7, 1), (10.2, 2)])
def test_jpeg_block_grid_is_not_taken_for_the_pixel_grid(pitch, seed):
    """A sprite on a flat painted background, saved as JPEG: the blocks cover the whole picture, the sprite's borders
    only its middle, and a naive search locks onto 8 (or 16) px."""
    cells = np.zeros((60, 60, 3), np.uint8)
    cells[:] = (180, 190, 200)
    cells[14:46, 14:46] = palette_art(32, 32, 10, seed=seed)
    image, _, _ = paint(cells, pitch, (1.0, 2.0), jitter=0.06, blur=0.2, noise=5, jpeg=60, seed=seed + 100)
    grid = detect_grid(_rgba(image))
    assert grid.x.jpeg and grid.y.jpeg
    assert abs(grid.x.pitch - pitch) < 0.02 * pitch and abs(grid.y.pitch - pitch) < 0.02 * pitch
    assert grid.size == (60, 60)


def test_a_true_8px_grid_is_still_found():
    """The JPEG guard must not reject an 8 px grid that is really there (crisp, or blurred, at phase 0)."""
    truth = palette_art(32, 32, 8, seed=11)
    for blur in (0.0, 0.15):
        image, _, _ = paint(truth, 8.0, (0.0, 0.0), blur=blur, noise=2, seed=12)
        grid = detect_grid(_rgba(image))
        assert grid.size == (32, 32), blur
        assert abs(grid.x.pitch - 8.0) < 0.05


def test_known_cell_count_gives_exactly_that_size():
    truth = palette_art(33, 21, 7, seed=13)
    image, _, _ = paint(truth, 12.2, (5.0, 3.0), jitter=0.05, blur=0.15, noise=4, seed=14)
    grid = detect_grid(_rgba(image), (33, 21))
    assert grid.size == (33, 21)
    result = pixelize(image, (33, 21), colors=7)
    assert result.image.size == (33, 21)
    assert accuracy(result.image, truth) >= 0.97


def test_confidence_separates_grids_from_noise():
    rng = np.random.default_rng(15)
    noise = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
    crisp, _, _ = paint(palette_art(24, 24, 6, seed=16), 10.5, (1.0, 1.0), seed=17)
    assert detect_grid(noise).confidence < 0.2
    assert detect_grid(_rgba(crisp)).confidence > 0.6
    summary = detect_grid(_rgba(crisp)).summary()
    assert set(summary) == {"pitch", "phase", "cells", "confidence"} and summary["cells"] == [24, 24]


def test_tiny_images_do_not_break_detection():
    for size in ((1, 1), (3, 17), (40, 9)):
        grid = detect_grid(np.zeros(size[::-1] + (3,), np.uint8))
        assert grid.size[0] >= 1 and grid.size[1] >= 1
