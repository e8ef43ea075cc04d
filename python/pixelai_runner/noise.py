"""Engine-neutral noise (`initNoise: "torch"`): the draws the torch engine makes, defined once so every engine can
make exactly the same ones and the same seed gives the same image everywhere (within float rounding).

- Initial latents: `torch.randn` of shape (1, C, H/f, W/f), float32, from a CPU generator seeded with the seed.
- Per-step noise of ancestral samplers (euler_a): a second CPU generator, freshly seeded with the same seed, is what
  the torch engine hands diffusers as `generator=`; each step draws NCHW float32 from it in order.
- Image-to-image (img2img.py): one CPU generator seeded with the seed, handed to diffusers' img2img / inpaint
  pipelines; its first draw is the noise added to the init latents (the same numbers as text-to-image's initial
  latents), and ancestral steps draw from it after that.

torch is imported on first use only: the MLX engine needs it just for this, and only when a job asks for it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np


def latent_shape(channels: int, height: int, width: int, scale: int) -> tuple[int, int, int, int]:
    """NCHW shape of one sample's latents for an image of height x width and a VAE that downscales by `scale`."""
    return (1, channels, height // scale, width // scale)


def step_generator(seed: int) -> Any:
    """The CPU generator ancestral steps draw from (a torch.Generator)."""
    import torch

    return torch.Generator("cpu").manual_seed(seed)


def initial_latents(seed: int, shape_nchw: tuple[int, ...]) -> Any:
    """The starting latents as a float32 CPU torch.Tensor."""
    import torch

    return torch.randn(shape_nchw, generator=torch.Generator("cpu").manual_seed(seed), dtype=torch.float32)


def step_noise(seed: int) -> Callable[[tuple[int, ...]], np.ndarray]:
    """Draws the per-step noise in order, NCHW float32 numpy, as the torch engine's ancestral sampler receives it."""
    import torch

    generator = step_generator(seed)

    def draw(shape_nchw: tuple[int, ...]) -> np.ndarray:
        return torch.randn(shape_nchw, generator=generator, dtype=torch.float32).numpy()

    return draw


def text_noise(seed: int, shape_nchw: tuple[int, ...]) -> tuple[np.ndarray, Callable[[tuple[int, ...]], np.ndarray]]:
    """Text-to-image: (initial latents as numpy, the per-step draws of a second, fresh generator)."""
    return initial_latents(seed, shape_nchw).numpy(), step_noise(seed)


def img2img_noise(seed: int, shape_nchw: tuple[int, ...]) -> tuple[np.ndarray, Callable[[tuple[int, ...]], np.ndarray]]:
    """Image-to-image: (the first draw of the seed's generator, then later draws of that same generator)."""
    import torch

    generator = step_generator(seed)
    first = torch.randn(shape_nchw, generator=generator, dtype=torch.float32).numpy()

    def draw(shape: tuple[int, ...]) -> np.ndarray:
        return torch.randn(shape, generator=generator, dtype=torch.float32).numpy()

    return first, draw
