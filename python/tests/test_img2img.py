"""Image-to-image and inpainting on both engines (img2img.py): the VAE encoder and the samplers' noising against
diffusers, whole jobs through each backend (torch: diffusers' own img2img / inpaint pipelines), and the rules the
runner applies around them (strength 0, strength 1, pixels outside a mask)."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest
import torch
from mlx_fixtures import (  # noqa: F401  (fixtures)
    PROMPT,
    converted_sd,
    converted_sdxl,
    load_mlx_component,
    mlx_out_root,
    nchw,
    nhwc,
    rel_err,
)
from PIL import Image
from pixelai_runner import img2img
from pixelai_runner.backends.base import GenerateRequest
from pixelai_runner.backends.mlx.backend import MLXBackend
from pixelai_runner.backends.mlx.config import VAEConfig, read_json
from pixelai_runner.backends.mlx.sampler import make_sampler
from pixelai_runner.backends.mlx.vae import AutoencoderKL
from pixelai_runner.backends.torch_backend import TorchBackend, make_scheduler
from pixelai_runner.device import DeviceInfo

CPU = DeviceInfo("cpu", "test cpu", "float32")
MAX_CHANNEL_DIFF = 2  # out of 255, the engines' parity bound


# --- pieces ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["tiny_sd", "tiny_sdxl"])
def test_vae_encoder_matches_diffusers(model, request):
    import diffusers

    folder = request.getfixturevalue(model)
    reference = diffusers.AutoencoderKL.from_pretrained(str(folder / "vae")).eval()
    ours = load_mlx_component(
        AutoencoderKL(VAEConfig.from_dict(read_json(folder / "vae" / "config.json"))), folder, "vae"
    )
    images = torch.rand((1, 3, 64, 48), generator=torch.Generator().manual_seed(5)) * 2 - 1
    with torch.no_grad():
        posterior = reference.encode(images).latent_dist
    mean, logvar = ours.encode(nhwc(images.numpy()))
    assert rel_err(nchw(mean), posterior.mode().numpy()) <= 1e-4
    assert rel_err(nchw(logvar), posterior.logvar.numpy()) <= 1e-4


@pytest.mark.parametrize(
    "steps,strength,masked,expected",
    [
        (20, 0.0, False, ("copy", 20, 0)),
        (20, 0.04, False, ("copy", 20, 0)),  # int(20 × 0.04) = 0 steps left: nothing to denoise
        (20, 0.5, False, ("img2img", 10, 10)),
        (10, 0.75, False, ("img2img", 3, 7)),
        (20, 1.0, False, ("text", 0, 20)),
        (20, 1.0, True, ("img2img", 0, 20)),
    ],
)
def test_plan_truncates_the_schedule_like_diffusers(steps, strength, masked, expected):
    plan = img2img.plan(steps, strength, masked)
    assert (plan.mode, plan.start, plan.steps) == expected


@pytest.mark.parametrize("name", ["euler", "euler_a", "ddim", "dpmpp_2m", "dpmpp_2m_karras"])
@pytest.mark.parametrize("steps,strength", [(10, 0.5), (7, 0.3), (12, 0.9)])
def test_sampler_noising_matches_the_diffusers_scheduler(tiny_sd, name, steps, strength):
    """The start position and add_noise at it (and one position later, inpainting's blend) equal the diffusers
    scheduler's after set_timesteps + set_begin_index, as its img2img pipeline calls it."""
    config = read_json(tiny_sd / "scheduler" / "scheduler_config.json")
    reference = make_scheduler(name, config)
    reference.set_timesteps(steps)
    plan = img2img.plan(steps, strength, False)
    begin = plan.start * reference.order
    if hasattr(reference, "set_begin_index"):
        reference.set_begin_index(begin)
    ours = make_sampler(name, config, steps, noise_fn=lambda shape: mx.zeros(shape))
    np.testing.assert_allclose(ours.timesteps[plan.start], float(reference.timesteps[begin]), rtol=0, atol=1e-4)
    gen = torch.Generator().manual_seed(3)
    x0, eps = torch.randn((1, 4, 8, 8), generator=gen), torch.randn((1, 4, 8, 8), generator=gen)
    expected = reference.add_noise(x0, eps, reference.timesteps[begin : begin + 1]).numpy()
    got = np.array(ours.add_noise(nhwc(x0.numpy()), nhwc(eps.numpy()), plan.start)).transpose(0, 3, 1, 2)
    assert np.abs(got - expected).max() <= 1e-5


# --- whole jobs through the backends --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def torch_backend():
    return TorchBackend(device_info=CPU, cache_size=2)


@pytest.fixture(scope="module")
def mlx_backend():
    return MLXBackend(cache_size=2, dtype="float32")


def _sprite(path, size=(8, 8), seed=0):
    """A small opaque pixel-art sprite: few colours, hard edges."""
    rng = np.random.default_rng(seed)
    palette = np.array([[20, 30, 60], [200, 60, 40], [240, 220, 120], [60, 160, 80]], dtype=np.uint8)
    pixels = palette[rng.integers(0, len(palette), size=(size[1], size[0]))]
    Image.fromarray(pixels, "RGB").save(path)
    return path


def _mask(path, width, height):
    """Regenerate the right half (white), keep the left (transparent)."""
    rgba = np.zeros((height, width, 4), dtype=np.uint8)
    rgba[:, width // 2 :] = 255
    Image.fromarray(rgba, "RGBA").save(path)
    return path


def _request(folder, tmp_path, **over):
    fields = dict(
        job_id="t",
        model_source=str(folder),
        prompt=PROMPT,
        width=64,
        height=64,
        steps=6,
        guidance_scale=7.5,
        seed=99,
        output_dir=str(tmp_path),
        scheduler="euler",
        init_noise="torch",
        init_image_path=str(_sprite(tmp_path / "init.png")),
        strength=0.5,
    )
    fields.update(over)
    return GenerateRequest(**fields)


def _run(backend, req):
    steps = []
    image = backend.generate(req, lambda step, total, *_: steps.append((step, total)), lambda: None).image
    return np.asarray(image.convert("RGB")).astype(int), steps


CASES = [
    # model, scheduler, strength
    ("sd", "euler", 0.5),
    ("sd", "ddim", 0.5),
    ("sd", "euler_a", 0.5),
    ("sd", "dpmpp_2m", 0.6),
    ("sdxl", "euler", 0.5),
    ("sdxl", "euler_a", 0.5),
]


@pytest.mark.parametrize("model,scheduler,strength", CASES)
def test_engines_agree_on_img2img(model, scheduler, strength, torch_backend, mlx_backend, request, tmp_path):
    source = request.getfixturevalue("tiny_sd" if model == "sd" else "tiny_sdxl")
    converted = request.getfixturevalue("converted_sd" if model == "sd" else "converted_sdxl")
    reference, ref_steps = _run(torch_backend, _request(source, tmp_path, scheduler=scheduler, strength=strength))
    ours, our_steps = _run(mlx_backend, _request(converted, tmp_path, scheduler=scheduler, strength=strength))
    run = int(6 * strength)
    assert ref_steps == our_steps == [(i + 1, run) for i in range(run)]
    assert reference.std() > 5
    assert np.abs(ours - reference).max() <= MAX_CHANNEL_DIFF
    # and the init image mattered: text-to-image with the same seed is another picture
    text, _ = _run(torch_backend, _request(source, tmp_path, scheduler=scheduler, init_image_path=None))
    assert np.abs(text - reference).max() > 10


@pytest.mark.parametrize(
    "model,scheduler,strength",
    # strength 1 with a mask starts from pure noise, as diffusers' inpaint pipelines do, and still keeps the rest
    [("sd", "euler", 0.7), ("sd", "ddim", 1.0), ("sdxl", "euler", 0.7), ("sdxl", "euler_a", 0.9)],
)
def test_engines_agree_on_inpainting(model, scheduler, strength, torch_backend, mlx_backend, request, tmp_path):
    source = request.getfixturevalue("tiny_sd" if model == "sd" else "tiny_sdxl")
    converted = request.getfixturevalue("converted_sd" if model == "sd" else "converted_sdxl")
    mask = str(_mask(tmp_path / "mask.png", 8, 8))
    fields = dict(mask_path=mask, strength=strength, scheduler=scheduler)
    reference, _ = _run(torch_backend, _request(source, tmp_path, **fields))
    ours, _ = _run(mlx_backend, _request(converted, tmp_path, **fields))
    # the backends' raw images (the runner pastes the kept pixels back afterwards: test_runner_* below)
    assert np.abs(ours - reference).max() <= MAX_CHANNEL_DIFF


def test_strength_one_without_mask_is_text_to_image(torch_backend, mlx_backend, tiny_sd, converted_sd, tmp_path):
    for backend, folder in ((torch_backend, tiny_sd), (mlx_backend, converted_sd)):
        with_init, _ = _run(backend, _request(folder, tmp_path, strength=1.0))
        text, _ = _run(backend, _request(folder, tmp_path, init_image_path=None))
        assert np.array_equal(with_init, text)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_img2img_pipeline_shares_the_loaded_modules(tiny_sd, tmp_path, dtype):
    """from_pipe: the img2img / inpaint pipelines hold the very UNet, VAE and text encoder objects already loaded, in
    the dtype they were loaded in (from_pipe would otherwise cast the shared modules to float32)."""
    backend = TorchBackend(device_info=DeviceInfo("cpu", "test cpu", dtype), cache_size=1)
    loaded = backend.ensure_loaded(str(tiny_sd))
    for masked in (False, True):
        req = _request(tiny_sd, tmp_path, mask_path=str(_mask(tmp_path / "m.png", 8, 8)) if masked else None)
        derived = backend._img2img_pipe(loaded, req, {})
        assert derived is not loaded.pipe
        assert derived.unet is loaded.pipe.unet
        assert derived.vae is loaded.pipe.vae
        assert derived.text_encoder is loaded.pipe.text_encoder
        assert loaded.pipe.unet.dtype == loaded.pipe.vae.dtype == getattr(torch, dtype)


def test_mask_and_init_reading(tmp_path):
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[0, 0] = (255, 255, 255, 255)  # white opaque: regenerate
    rgba[0, 1] = (255, 255, 255, 0)  # white but transparent: keep
    rgba[1, 0] = (0, 0, 0, 255)  # black: keep
    rgba[1, 1] = (200, 200, 200, 255)  # light grey: regenerate
    Image.fromarray(rgba, "RGBA").save(tmp_path / "m.png")
    mask = img2img.load_mask(str(tmp_path / "m.png"), 4, 4)
    assert mask.tolist() == [[True, True, False, False]] * 2 + [[False, False, True, True]] * 2
    assert img2img.latent_mask(mask, 2).tolist() == [[1.0, 0.0], [0.0, 1.0]]
    sprite = Image.open(_sprite(tmp_path / "s.png", (3, 2)))
    scaled = img2img.load_init(str(tmp_path / "s.png"), 12, 8)
    # nearest-neighbour: every sprite pixel becomes a 4×4 block
    assert np.array_equal(np.asarray(scaled)[::4, ::4], np.asarray(sprite))
    assert np.array_equal(np.asarray(scaled), np.asarray(sprite).repeat(4, 0).repeat(4, 1))


def test_a_converted_folder_without_the_vae_encoder_is_refused_clearly(converted_sd, tmp_path):
    import shutil

    from pixelai_runner.backends.mlx.manifest import WEIGHTS_NAME
    from pixelai_runner.backends.mlx.pipeline import StableDiffusion

    folder = tmp_path / "decoder-only"
    shutil.copytree(converted_sd, folder)
    weights = folder / "vae" / WEIGHTS_NAME
    kept = {k: v for k, v in mx.load(str(weights)).items() if not k.startswith(("encoder.", "quant_conv."))}
    mx.save_safetensors(str(weights), kept)
    with pytest.raises(ValueError, match="no VAE encoder weights.*convert the model again"):
        StableDiffusion(folder)
