"""The engine-neutral noise (noise.py): what it draws, and that both engines draw exactly that."""

from __future__ import annotations

import numpy as np
import torch
from pixelai_runner import noise


def test_initial_latents_are_the_documented_cpu_randn():
    shape = noise.latent_shape(4, 64, 96, 8)
    latents = noise.initial_latents(1234, shape)
    expected = torch.randn((1, 4, 8, 12), generator=torch.Generator("cpu").manual_seed(1234), dtype=torch.float32)
    assert shape == (1, 4, 8, 12)
    assert latents.dtype == torch.float32 and latents.shape == shape
    assert torch.equal(latents, expected)
    assert not torch.equal(latents, noise.initial_latents(1235, shape))


def test_step_noise_is_what_a_fresh_generator_handed_to_diffusers_draws_in_order():
    handed = noise.step_generator(9)
    expected = [torch.randn((1, 4, 2, 3), generator=handed, dtype=torch.float32).numpy() for _ in range(3)]
    draw = noise.step_noise(9)
    got = [draw((1, 4, 2, 3)) for _ in range(3)]
    assert all(g.dtype == np.float32 and np.array_equal(g, e) for g, e in zip(got, expected, strict=True))
    assert not np.array_equal(got[0], got[1])  # each step draws afresh


def test_the_mlx_engine_draws_the_same_numbers_in_its_own_layout():
    import mlx.core as mx
    from pixelai_runner.backends.mlx.backend import torch_noise

    initial, draw = torch_noise(5, (1, 4, 6, 8))
    assert np.array_equal(initial, noise.initial_latents(5, (1, 4, 6, 8)).numpy())
    steps = noise.step_noise(5)
    for _ in range(2):
        nhwc = draw((1, 6, 8, 4))
        assert isinstance(nhwc, mx.array) and nhwc.shape == (1, 6, 8, 4)
        assert np.array_equal(np.array(nhwc), steps((1, 4, 6, 8)).transpose(0, 2, 3, 1))
