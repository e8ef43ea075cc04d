"""Image-to-image and inpainting rules both engines share: what the init image and mask become before a model sees
them, how many steps a strength leaves, and what the pixels outside a mask end as.

- Init image: read from the PNG Node wrote, composited over white where it is transparent, then scaled to the
  generation size with nearest-neighbour (pixel art keeps hard edges; PIL's NEAREST replicates pixels exactly on
  integer factors).
- Strength: like diffusers' img2img, `int(steps * strength)` of the schedule's last steps run. None left (strength 0,
  or so small that no step remains) → the scaled init image is the result, untouched by the VAE. Strength 1 without
  a mask → the text-to-image job with the same seed (the init image is not used at all).
- Encoding: the VAE posterior's mode (its mean), never a sample, so no random draw depends on the encoder and both
  engines start from the same latents. The noise added to them is the text-to-image job's initial noise: the first
  draw of the seed's generator (noise.py); ancestral steps continue that generator.
- Mask: white (opaque, light) = regenerate, black or transparent = keep; luminance × alpha ≥ 128 after the same
  nearest scaling. At latent resolution the UNet's mask is every `scale`-th pixel (what torch's nearest interpolate
  picks); latents outside it are replaced after each step by the init latents noised to the next step's level, and
  after decoding every pixel outside the mask is the init pixel exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import RunnerError


@dataclass(frozen=True)
class Plan:
    """What a generation with an init image runs: `copy` (the init image is the result), `text` (plain text-to-image)
    or `img2img` (the last `steps` of the schedule, from position `start`)."""

    mode: str
    start: int
    steps: int


def plan(total_steps: int, strength: float, masked: bool) -> Plan:
    init_steps = min(int(total_steps * strength), total_steps)
    if init_steps <= 0:
        return Plan("copy", total_steps, 0)
    if init_steps >= total_steps and not masked:
        return Plan("text", 0, total_steps)
    return Plan("img2img", total_steps - init_steps, init_steps)


def _open(path: str, what: str) -> Image.Image:
    try:
        with Image.open(path, formats=["PNG"]) as opened:
            opened.load()
            return opened.convert("RGBA")
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as exc:
        raise RunnerError("INVALID_REQUEST", f"{what} is not a readable PNG: {exc}") from None


def load_init(path: str, width: int, height: int) -> Image.Image:
    """The init image as RGB at width × height."""
    rgba = _open(path, "initImagePath")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    rgb = Image.alpha_composite(white, rgba).convert("RGB")
    return rgb.resize((width, height), Image.Resampling.NEAREST)


def load_mask(path: str, width: int, height: int) -> np.ndarray:
    """(height, width) bool, True where the image is regenerated."""
    rgba = np.asarray(_open(path, "maskPath").resize((width, height), Image.Resampling.NEAREST), dtype=np.float32)
    luminance = rgba[..., 0] * 0.299 + rgba[..., 1] * 0.587 + rgba[..., 2] * 0.114
    return luminance * (rgba[..., 3] / 255.0) >= 128.0


def model_input(image: Image.Image) -> np.ndarray:
    """(1, H, W, 3) float32 in [-1, 1], as diffusers' image processor normalises a PIL image."""
    return (np.asarray(image, dtype=np.float32) / 255.0 * 2.0 - 1.0)[None]


def latent_mask(mask: np.ndarray, scale: int) -> np.ndarray:
    """(H/scale, W/scale) float32 of 0/1: the pixel at (scale·y, scale·x) for each latent."""
    return mask[::scale, ::scale].astype(np.float32)


def mask_image(mask: np.ndarray) -> Image.Image:
    """The mask as the "L" image diffusers' inpaint pipelines take (255 = regenerate)."""
    return Image.fromarray(mask.astype(np.uint8) * 255, mode="L")


def paste_outside(generated: Image.Image, init: Image.Image, mask: np.ndarray | None) -> Image.Image:
    """`generated` inside the mask, the init image's own pixels outside it."""
    if mask is None:
        return generated
    out = np.where(mask[..., None], np.asarray(generated.convert("RGB")), np.asarray(init))
    return Image.fromarray(out.astype(np.uint8))
