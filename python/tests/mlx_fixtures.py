"""Fixtures and helpers shared by the MLX engine tests (test_mlx_*.py import what they use from here).

The tiny diffusers pipelines come from conftest's `tiny_sd` / `tiny_sdxl`; here they are converted (float32, into a
temp dir, never into the repo) and the reference torch modules are loaded once per session.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

PYTHON_DIR = Path(__file__).resolve().parents[1]
if str(PYTHON_DIR) not in sys.path:
    sys.path.insert(0, str(PYTHON_DIR))

REPO_ROOT = PYTHON_DIR.parent

# Import the engine package before any test module imports mlx.core: on Linux it may swap in an optimised BLAS,
# which only takes effect before mlx loads (cpu_blas.py). The tests pass with either BLAS.
import pixelai_runner.backends.mlx  # noqa: E402,F401

PROMPT = "a pixel art knight with a sword"


def rel_err(actual, expected) -> float:
    """max |a − e| / max |e|: the UNet/VAE parity measure (scale-free, robust to near-zero elements)."""
    actual, expected = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    return float(np.abs(actual - expected).max() / max(np.abs(expected).max(), 1e-12))


def nhwc(x) -> object:
    import mlx.core as mx

    return mx.array(np.ascontiguousarray(np.asarray(x, dtype=np.float32).transpose(0, 2, 3, 1)))


def nchw(x) -> np.ndarray:
    return np.asarray(x).transpose(0, 3, 1, 2)


def load_mlx_component(module, source: Path, component: str):
    """Map a diffusers component's safetensors with weights.py and load it strictly, float32."""
    import mlx.core as mx
    from pixelai_runner.backends.mlx import weights as W

    tensors = W.load_component(source / component, component)
    module.load_weights([(k, mx.array(v)) for k, v in tensors.items()], strict=True)
    return module


@pytest.fixture(scope="session")
def mlx_out_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("mlx-models")


@pytest.fixture(scope="session")
def converted_sd(tiny_sd, mlx_out_root) -> Path:
    from pixelai_runner.backends.mlx.convert import convert

    return Path(convert(str(tiny_sd), "tiny-sd", "float32", mlx_out_root)["path"])


@pytest.fixture(scope="session")
def converted_sdxl(tiny_sdxl, mlx_out_root) -> Path:
    from pixelai_runner.backends.mlx.convert import convert

    return Path(convert(str(tiny_sdxl), "tiny-sdxl", "float32", mlx_out_root)["path"])


def _diffusers_pipeline(cls_name: str, folder: Path):
    import diffusers

    pipe = getattr(diffusers, cls_name).from_pretrained(str(folder))
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="session")
def torch_sd(tiny_sd):
    return _diffusers_pipeline("StableDiffusionPipeline", tiny_sd)


@pytest.fixture(scope="session")
def torch_sdxl(tiny_sdxl):
    return _diffusers_pipeline("StableDiffusionXLPipeline", tiny_sdxl)


@pytest.fixture(scope="session")
def mlx_sd(converted_sd):
    from pixelai_runner.backends.mlx.pipeline import StableDiffusion

    return StableDiffusion(converted_sd)


@pytest.fixture(scope="session")
def mlx_sdxl(converted_sdxl):
    from pixelai_runner.backends.mlx.pipeline import StableDiffusion

    return StableDiffusion(converted_sdxl)


_ORIGINAL_SCHEDULER_CONFIG: dict = {}


def diffusers_image(
    pipe, scheduler: str, prompt: str, negative, width: int, height: int, steps: int, guidance: float, seed: int
) -> np.ndarray:
    """The reference: diffusers with the named scheduler (from the pipeline's own config), called the way the torch
    engine calls it — latents drawn from a CPU generator seeded with `seed`, and a second freshly seeded CPU generator
    for ancestral noise."""
    import diffusers
    import torch

    classes = {
        "euler": diffusers.EulerDiscreteScheduler,
        "euler_a": diffusers.EulerAncestralDiscreteScheduler,
        "ddim": diffusers.DDIMScheduler,
    }
    # always derive from the folder's own scheduler config, not from whichever scheduler a previous test swapped in
    original = _ORIGINAL_SCHEDULER_CONFIG.setdefault(id(pipe), dict(pipe.scheduler.config))
    pipe.scheduler = classes[scheduler].from_config(original)
    factor = pipe.vae_scale_factor
    shape = (1, pipe.unet.config.in_channels, height // factor, width // factor)
    latents = torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed), dtype=torch.float32)
    out = pipe(
        prompt,
        negative_prompt=negative,
        width=width,
        height=height,
        num_inference_steps=steps,
        guidance_scale=guidance,
        latents=latents,
        generator=torch.Generator("cpu").manual_seed(seed),
        output_type="np",
    )
    return (out.images[0] * 255).round().astype(np.uint8)
