"""Step previews: a cheap look at the latents while they are denoised, without running the VAE.

Stable Diffusion's 4 latent channels map roughly linearly onto RGB, so a fixed 4x3 matrix plus a bias gives a
recognisable (blurry, colour-shifted) picture at the latent resolution (1/8 of the image). This is an APPROXIMATION
that costs one small matrix product per preview: the final image always comes from the real VAE decode. The
coefficients are least-squares fits of latent → decoded-RGB published by the community for each latent space; SDXL's
VAE has its own latent space, hence its own matrix.

Both engines report each step through `emit_step`, handing it plain numpy (NCHW from torch, NHWC from MLX), so the
mapping and the on_step calling convention are shared.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable

import numpy as np
from PIL import Image

# rows: latent channel 0..3; columns: R, G, B. Applied to the latents as the sampler holds them (VAE-scaled space).
SD_FACTORS = np.array(
    [
        [0.298, 0.207, 0.208],
        [0.187, 0.286, 0.173],
        [-0.158, 0.189, 0.264],
        [-0.184, -0.271, -0.473],
    ],
    dtype=np.float32,
)
SD_BIAS = np.zeros(3, dtype=np.float32)
SDXL_FACTORS = np.array(
    [
        [0.3651, 0.4232, 0.4341],
        [-0.2533, -0.0042, 0.1068],
        [0.1076, 0.1111, -0.0362],
        [-0.3165, -0.2492, -0.2188],
    ],
    dtype=np.float32,
)
SDXL_BIAS = np.array([0.1084, -0.0175, -0.0011], dtype=np.float32)

# Largest preview side: the latent resolution up to SDXL at 1024 (128); bigger latents are downscaled so a preview
# stays a few KiB on its way through Redis and the WebSocket.
MAX_SIDE = 128


def preview_due(step: int, every: int | None) -> bool:
    """True on the steps a preview is asked for: every `every`-th step (1-based). None/0: never."""
    return bool(every) and every > 0 and step % every == 0


def latents_to_rgb(latents: np.ndarray, architecture: str, layout: str = "nchw") -> Image.Image | None:
    """One sample's latents (batch 1, 4 channels) → an RGB image at latent resolution; None when not 4 channels."""
    array = np.asarray(latents, dtype=np.float32)
    if array.ndim == 4:
        array = array[0]
    hwc = array.transpose(1, 2, 0) if layout == "nchw" else array
    if hwc.ndim != 3 or hwc.shape[2] != 4:
        return None  # another latent space (e.g. 16 channels): no coefficients for it
    factors, bias = (SDXL_FACTORS, SDXL_BIAS) if architecture == "sdxl" else (SD_FACTORS, SD_BIAS)
    rgb = hwc @ factors + bias  # roughly the decoder's [-1, 1] range
    rgb = np.nan_to_num(rgb, nan=0.0, posinf=1.0, neginf=-1.0)
    pixels = ((np.clip(rgb, -1.0, 1.0) + 1.0) * 127.5).round().astype(np.uint8)
    image = Image.fromarray(pixels)
    if max(image.size) > MAX_SIDE:
        scale = MAX_SIDE / max(image.size)
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.BILINEAR)
    return image


def emit_step(
    on_step: Callable[..., None],
    step: int,
    total: int,
    every: int | None,
    latents: Callable[[], np.ndarray],
    architecture: str,
    layout: str,
) -> None:
    """Reports a finished denoising step: on_step(step, total), plus the preview image on the steps `every` asks for.

    The one way both engines emit steps. `latents` is called only on a preview step: copying the latents off the
    device is the preview's only cost besides the small matrix product. A batch of candidates (count > 1) gets one
    preview per sample: on_step(step, total, first, [every candidate's]).
    """
    if not preview_due(step, every):
        on_step(step, total)  # callers that never ask for previews take two arguments
        return
    array = np.asarray(latents(), dtype=np.float32)
    samples = array if array.ndim == 4 else array[None]
    images = [latents_to_rgb(samples[index : index + 1], architecture, layout) for index in range(samples.shape[0])]
    if images[0] is None:
        on_step(step, total)
    elif len(images) == 1:
        on_step(step, total, images[0])
    else:
        on_step(step, total, images[0], images)


def write_preview(image: Image.Image, output_dir: str, step: int, index: int = 0) -> tuple[str, str]:
    """Writes `preview-<step>.png` (candidate `index` > 0: `preview-<step>-<index>.png`) atomically (Node may read it
    while the next step runs); returns (path, sha256).

    One file per step, so a slow reader never sees a file replaced under it; Node deletes each after reading.
    """
    suffix = f"-{index}" if index else ""
    path = os.path.join(output_dir, f"preview-{step:04d}{suffix}.png")
    partial = path + ".partial"
    image.save(partial, format="PNG")
    os.replace(partial, path)
    with open(path, "rb") as fh:
        digest = hashlib.sha256(fh.read()).hexdigest()
    return path, digest
