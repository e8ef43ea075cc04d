"""The MLX engine: Stable Diffusion 1.x/2.x and SDXL written in mlx.core/mlx.nn, numerically matching diffusers.

Modules: config (architecture numbers), weights (every checkpoint key/layout mapping), clip, unet, vae, sampler,
pipeline, manifest (folder layout + integrity), convert (diffusers → MLX folder), backend (the runner engine).
Importing this package does not import mlx; constructing MLXBackend does. It does, on Linux, load an optimised
system BLAS for mlx's CPU kernels first when one is installed (see cpu_blas.py) — that only works before mlx loads.
"""

from ...settings import current as _current_settings
from .cpu_blas import prefer_optimised_blas

# The runner sets its settings before it imports any backend (__main__.py); this is the last moment the choice counts.
prefer_optimised_blas(_current_settings().mlx_blas)

from .backend import MLXBackend  # noqa: E402

__all__ = ["MLXBackend"]
