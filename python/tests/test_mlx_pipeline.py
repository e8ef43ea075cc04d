"""Whole text-to-image runs: MLX vs diffusers on the same weights, initial latents (torch draw), scheduler and steps."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest
from mlx_fixtures import (  # noqa: F401  (fixtures)
    PROMPT,
    converted_sd,
    converted_sdxl,
    diffusers_image,
    mlx_out_root,
    mlx_sd,
    mlx_sdxl,
    torch_sd,
    torch_sdxl,
)
from pixelai_runner.backends.mlx.backend import native_noise, torch_noise
from pixelai_runner.backends.mlx.pipeline import nchw_to_nhwc

MAX_CHANNEL_DIFF = 2  # out of 255


def _mlx_image(model, scheduler, negative, width, height, steps, guidance, seed):
    factor = model.vae_scale_factor
    initial, draw = torch_noise(seed, (1, model.latent_channels, height // factor, width // factor))
    return np.array(
        model.generate(
            PROMPT, negative, width, height, steps, guidance, scheduler, nchw_to_nhwc(initial), noise_fn=draw
        )
    )


CASES = [
    # scheduler, negative prompt, width, height, steps, guidance
    ("euler", None, 64, 64, 4, 7.5),
    ("ddim", "blurry, low quality", 96, 64, 3, 5.0),
    ("euler_a", "", 64, 96, 3, 7.5),
    ("euler", None, 64, 64, 2, 1.0),  # no classifier-free guidance
]


@pytest.mark.parametrize("scheduler,negative,width,height,steps,guidance", CASES)
def test_tiny_sd_matches_diffusers(torch_sd, mlx_sd, scheduler, negative, width, height, steps, guidance):
    reference = diffusers_image(torch_sd, scheduler, PROMPT, negative, width, height, steps, guidance, seed=1234)
    ours = _mlx_image(mlx_sd, scheduler, negative, width, height, steps, guidance, seed=1234)
    assert ours.shape == reference.shape == (height, width, 3)
    assert reference.std() > 5  # a real picture, not a flat field that would match trivially
    assert np.abs(ours.astype(int) - reference.astype(int)).max() <= MAX_CHANNEL_DIFF


@pytest.mark.parametrize("scheduler,negative,width,height,steps,guidance", CASES[:3])
def test_tiny_sdxl_matches_diffusers(torch_sdxl, mlx_sdxl, scheduler, negative, width, height, steps, guidance):
    # negative None exercises SDXL's zeroed unconditional embeddings (force_zeros_for_empty_prompt)
    reference = diffusers_image(torch_sdxl, scheduler, PROMPT, negative, width, height, steps, guidance, seed=77)
    ours = _mlx_image(mlx_sdxl, scheduler, negative, width, height, steps, guidance, seed=77)
    assert reference.std() > 5
    assert np.abs(ours.astype(int) - reference.astype(int)).max() <= MAX_CHANNEL_DIFF


def _native(model, seed):
    initial, draw = native_noise(seed, (1, 8, 8, model.latent_channels))
    return np.array(model.generate(PROMPT, None, 64, 64, 2, 7.5, "euler_a", initial, noise_fn=draw))


def test_native_noise_same_seed_same_image(mlx_sd):
    first, second, other = _native(mlx_sd, 5), _native(mlx_sd, 5), _native(mlx_sd, 6)
    assert np.array_equal(first, second)
    assert not np.array_equal(first, other)


def test_callbacks_and_cancel_between_steps(mlx_sd):
    from pixelai_runner.errors import RunnerError

    seen = []

    def check_cancel():
        if len(seen) == 2:
            raise RunnerError("CANCELLED", "cancelled")

    initial, _ = native_noise(0, (1, 8, 8, 4))
    with pytest.raises(RunnerError) as info:
        mlx_sd.generate(
            PROMPT,
            None,
            64,
            64,
            5,
            7.5,
            "euler",
            initial,
            on_step=lambda k, n: seen.append((k, n)),
            check_cancel=check_cancel,
        )
    assert info.value.code == "CANCELLED"
    assert seen == [(1, 5), (2, 5)]


def test_float16_run_stays_close_to_float32(converted_sd):
    """Half precision (the Metal default) must give nearly the same picture; norms and softmax stay in float32."""
    from pixelai_runner.backends.mlx.pipeline import StableDiffusion

    half = StableDiffusion(converted_sd, mx.float16)
    full = StableDiffusion(converted_sd, mx.float32)
    initial, _ = native_noise(3, (1, 8, 8, 4))
    a = np.array(half.generate(PROMPT, None, 64, 64, 3, 7.5, "euler", initial)).astype(int)
    b = np.array(full.generate(PROMPT, None, 64, 64, 3, 7.5, "euler", initial)).astype(int)
    assert np.abs(a - b).mean() < 2.0
