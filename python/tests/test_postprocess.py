import numpy as np
import pytest
from PIL import Image
from pixelai_runner.backends.base import PixelSpec
from pixelai_runner.errors import RunnerError
from pixelai_runner.postprocess import color_key, fit_to_grid, postprocess, postprocess_report, quantize, validate
from pixelize_cases import paint, palette_art

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


def _bands(width=100, height=50) -> Image.Image:
    """Left quarter red, middle half green, right quarter blue."""
    arr = np.zeros((height, width, 3), dtype=np.uint8)
    arr[:, : width // 4] = RED
    arr[:, width // 4 : 3 * width // 4] = GREEN
    arr[:, 3 * width // 4 :] = BLUE
    return Image.fromarray(arr, "RGB")


def _noise(size=64, seed=0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8), "RGB")


def _opaque_colors(img: Image.Image) -> set:
    arr = np.array(img)
    return {tuple(p) for p in arr[arr[..., 3] > 0][:, :3]}


def _rgba_colors(img: Image.Image) -> set:
    return {tuple(p) for p in np.array(img).reshape(-1, 4)}


def test_contain_letterboxes_onto_transparent():
    out = fit_to_grid(_bands(), 32, 32, "contain")
    arr = np.array(out)
    assert out.mode == "RGBA" and out.size == (32, 32)
    # 100x50 → 32x16, centred vertically: 8 transparent rows above and below.
    assert (arr[:8, :, 3] == 0).all() and (arr[24:, :, 3] == 0).all()
    assert (arr[8:24, :, 3] == 255).all()
    assert tuple(arr[16, 0, :3]) == RED and tuple(arr[16, 31, :3]) == BLUE


def test_cover_center_crops_without_transparency():
    out = fit_to_grid(_bands(), 32, 32, "cover")
    arr = np.array(out)
    assert out.size == (32, 32) and (arr[..., 3] == 255).all()
    # The centred 50x50 crop of 100x50 is exactly the green half.
    assert _opaque_colors(out) == {GREEN}


def test_stretch_keeps_everything_distorted():
    out = fit_to_grid(_bands(), 16, 40, "stretch")
    arr = np.array(out)
    assert out.size == (16, 40) and (arr[..., 3] == 255).all()
    assert tuple(arr[0, 0, :3]) == RED and tuple(arr[0, 15, :3]) == BLUE and tuple(arr[20, 8, :3]) == GREEN


def test_nearest_downscale_introduces_no_new_colours():
    for mode in ("contain", "cover", "stretch"):
        assert _opaque_colors(fit_to_grid(_bands(), 13, 7, mode)) <= {RED, GREEN, BLUE}


@pytest.mark.parametrize("colors", [1, 2, 8, 16, 64, 256])
def test_quantize_opaque_image_uses_at_most_colors(colors):
    out = quantize(_noise(), colors)
    assert out.mode == "RGBA" and out.size == (64, 64)
    assert 1 <= len(_rgba_colors(out)) <= colors


@pytest.mark.parametrize("colors", [2, 8, 32])
def test_quantize_keeps_a_slot_for_transparency(colors):
    img = _noise().convert("RGBA")
    arr = np.array(img)
    arr[:10, :, 3] = 0
    out = quantize(Image.fromarray(arr, "RGBA"), colors)
    assert len(_opaque_colors(out)) <= colors - 1
    assert len(_rgba_colors(out)) <= colors
    assert (np.array(out)[:10] == 0).all(), "transparent pixels are canonical (0,0,0,0)"


def test_quantize_single_colour_with_transparency_keeps_one_opaque_colour():
    arr = np.array(_noise().convert("RGBA"))
    arr[:, :5, 3] = 0
    out = quantize(Image.fromarray(arr, "RGBA"), 1)
    assert len(_opaque_colors(out)) == 1


def test_quantize_zero_keeps_colours_and_binarises_alpha():
    arr = np.array(_noise().convert("RGBA"))
    arr[0, 0, 3] = 100
    arr[0, 1, 3] = 200
    out = np.array(quantize(Image.fromarray(arr, "RGBA"), 0))
    assert tuple(out[0, 0]) == (0, 0, 0, 0) and out[0, 1, 3] == 255
    assert (out[1:, :, :3] == arr[1:, :, :3]).all()


def test_quantize_is_deterministic():
    a = quantize(_noise(seed=3), 12).tobytes()
    b = quantize(_noise(seed=3), 12).tobytes()
    assert a == b


def _sprite_on_flat_background(size=64) -> tuple[Image.Image, np.ndarray, np.ndarray]:
    """A red ring (with a background-coloured hole) on a slightly noisy blue background."""
    rng = np.random.default_rng(1)
    bg = np.array([40, 120, 200])
    arr = np.clip(bg + rng.integers(-8, 9, (size, size, 3)), 0, 255).astype(np.uint8)
    yy, xx = np.mgrid[:size, :size]
    radius = np.hypot(yy - size / 2, xx - size / 2)
    ring = (radius < 20) & (radius >= 8)
    hole = radius < 8
    arr[ring] = (220, 30, 30)
    return Image.fromarray(arr, "RGB"), ring, hole


def test_color_key_removes_connected_background_only():
    img, ring, hole = _sprite_on_flat_background()
    alpha = np.array(color_key(img))[..., 3]
    outside = ~(ring | hole)
    assert (alpha[outside] == 0).all()
    assert (alpha[ring] == 255).all()
    assert (alpha[hole] == 255).all(), "enclosed background-coloured areas belong to the sprite"


def test_color_key_passes_through_letterbox_transparency():
    img, ring, _ = _sprite_on_flat_background()
    letterboxed = fit_to_grid(img.crop((0, 8, 64, 56)), 32, 32, "contain")
    alpha = np.array(color_key(letterboxed))[..., 3]
    assert alpha[0, 0] == 0 and alpha[16, 1] == 0 and alpha[16, 16] == 255


def test_postprocess_pipeline_sizes_colours_and_alpha():
    img, _, _ = _sprite_on_flat_background(128)
    out = postprocess(img, PixelSpec(width=32, height=32, colors=4, fit_mode="contain"), "color-key")
    assert out.mode == "RGBA" and out.size == (32, 32)
    assert len(_rgba_colors(out)) <= 4
    alpha = np.array(out)[..., 3]
    assert alpha[0, 0] == 0 and alpha[16, 16] == 255 and set(np.unique(alpha)) == {0, 255}


def test_postprocess_without_pixel_spec_keeps_size_and_is_rgba():
    out = postprocess(_noise(48), None, False)
    assert out.mode == "RGBA" and out.size == (48, 48)


@pytest.mark.parametrize(
    "pixel, background",
    [
        (PixelSpec(32, 32, 8, "zoom"), False),
        (PixelSpec(0, 32, 8, "contain"), False),
        (PixelSpec(32, 32, 257, "contain"), False),
        (None, "chroma"),
    ],
)
def test_validate_rejects_what_cannot_be_honoured(pixel, background):
    with pytest.raises(RunnerError) as info:
        validate(pixel, background)
    assert info.value.code == "INVALID_REQUEST"


# ---- grid modes: "auto" (the default) finds the implied grid, "fixed" is the whole-canvas resize above ----


def _spec(width, height, colors=0, fit_mode="contain", grid=None):
    """A PixelSpec, with a grid mode when given (set as an attribute: the spec gains the field with the protocol)."""
    spec = PixelSpec(width=width, height=height, colors=colors, fit_mode=fit_mode)
    if grid is not None:
        spec.grid = grid
    return spec


def _painted_sprite(cols=30, rows=30, pitch=10.4):
    cells = palette_art(cols, rows, 6, seed=21)
    image, _, _ = paint(cells, pitch, (2.0, 3.0), jitter=0.05, blur=0.15, noise=4, seed=22)
    return image, cells


def test_auto_grid_uses_the_requested_size_as_the_cell_count():
    image, cells = _painted_sprite()
    out, report = postprocess_report(image, _spec(30, 30, colors=6))
    assert out.size == (30, 30)
    assert report["grid"]["mode"] == "auto" and report["grid"]["fit"] == "native"
    assert report["grid"]["cells"] == [30, 30] and abs(report["grid"]["pitch"][0] - 10.4) < 0.1
    got = np.asarray(out)[..., :3].astype(int)
    assert (np.abs(got - cells).max(axis=-1) <= 24).mean() >= 0.97


def test_auto_grid_scales_the_art_found_to_another_requested_size():
    image, cells = _painted_sprite()
    out, report = postprocess_report(image, _spec(60, 60, colors=6))
    assert out.size == (60, 60) and report["grid"]["fit"] == "nearest from 30x30"
    # nearest-neighbour ×2: every recovered cell is a 2×2 block
    arr = np.asarray(out)
    assert (arr[::2, ::2] == arr[1::2, 1::2]).all()
    assert len(_rgba_colors(out)) <= 6


def test_fixed_grid_is_the_whole_canvas_resize():
    image, _ = _painted_sprite()
    spec = _spec(30, 30, colors=6, grid="fixed")
    out, report = postprocess_report(image, spec)
    assert report == {"grid": {"mode": "fixed"}}
    expected = quantize(fit_to_grid(image, 30, 30, "contain"), 6)
    assert out.tobytes() == expected.tobytes()


def test_auto_grid_falls_back_to_fixed_without_a_grid():
    out, report = postprocess_report(_noise(64), _spec(32, 32, colors=8))
    assert report["grid"] == {"mode": "auto", "fit": "fixed", "confidence": 0.0}
    assert out.tobytes() == quantize(fit_to_grid(_noise(64), 32, 32, "contain"), 8).tobytes()


def test_auto_grid_with_colour_key_reports_the_key():
    img, ring, _ = _sprite_on_flat_background(128)
    out, report = postprocess_report(img, _spec(32, 32, colors=4), "color-key")
    alpha = np.asarray(out)[..., 3]
    assert out.size == (32, 32) and set(np.unique(alpha)) <= {0, 255}
    assert alpha[0, 0] == 0 and alpha[16, 16] == 255
    assert len(_rgba_colors(out)) <= 4


def test_validate_rejects_an_unknown_grid_mode():
    with pytest.raises(RunnerError) as info:
        validate(_spec(32, 32, grid="magic"), False)
    assert info.value.code == "INVALID_REQUEST" and "grid" in info.value.message
