"""Text-to-image with the MLX modules, step for step what diffusers' StableDiffusion(XL)Pipeline does.

encode prompt (+ negative for classifier-free guidance) → initial latents × init σ → per step: scale input, UNet on
[uncond, cond], guidance mix, sampler step (callback + cancel check) → unscale → VAE decode → uint8 RGB image.
Latents are NHWC here; callers that hand in NCHW noise (the torch-compatible draw) are transposed once at the start.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import mlx.core as mx
import numpy as np
from mlx.utils import tree_flatten
from PIL import Image

from ... import preview
from ...model_files import architecture_of
from .clip import CLIPTextModel
from .config import CLIPTextConfig, UNetConfig, VAEConfig, is_projection_encoder, read_json
from .lora import PreparedLora
from .manifest import MANIFEST_NAME, WEIGHTS_NAME
from .quantize import quantize_like_file
from .sampler import make_sampler
from .unet import UNet2DConditionModel, sdxl_time_ids
from .vae import AutoencoderKL, scale_latents, unscale_latents


class NonFiniteError(RuntimeError):
    """NaN/inf appeared in the latents or the image (float16 overflow); the backend retries in float32."""


def component_module(component: str, raw_config: dict):
    """The MLX module of a pipeline component, built from its diffusers/transformers config.json."""
    if component == "unet":
        return UNet2DConditionModel(UNetConfig.from_dict(raw_config))
    if component == "vae":
        return AutoencoderKL(VAEConfig.from_dict(raw_config))
    if component in ("text_encoder", "text_encoder_2"):
        return CLIPTextModel(CLIPTextConfig.from_dict(raw_config, with_projection=is_projection_encoder(raw_config)))
    raise ValueError(f"unknown component {component!r}")


def load_module(module, weights_path: Path, dtype, quantization: dict | None = None):
    """Load MLX-layout safetensors into `module` (every parameter must be present) and cast floats to `dtype`;
    layers stored quantized (quantize.py) are loaded as quantized layers, their packed integers left as they are."""
    weights = mx.load(str(weights_path))
    quantize_like_file(module, weights, quantization)
    module.load_weights(list(weights.items()), strict=True)
    module.set_dtype(dtype)
    mx.eval(module.parameters())
    return module


def load_tokenizer(folder: Path):
    # transformers' CLIP tokenizer is pure text processing (no torch import); it reads tokenizer.json or vocab+merges.
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(str(folder))


@dataclass
class Init:
    """An img2img start: clean init latents (NHWC, diffusion-space), the schedule position to start from, and the
    latent-resolution inpainting mask (NHWC, 1 = regenerate) or None."""

    latents: mx.array
    start: int
    mask: mx.array | None = None


@dataclass
class Conditioning:
    context: mx.array  # (B, 77, cross_attention_dim); B = 2 with guidance: [negative, positive]
    text_embeds: mx.array | None = None  # SDXL pooled embeddings
    time_ids: mx.array | None = None  # SDXL micro-conditioning

    def repeated(self, count: int) -> Conditioning:
        """For a batch of `count` latents: each row repeated count times in place ([neg…, pos…] with guidance), the
        order the UNet input [latents, latents] has."""
        if count == 1:
            return self

        def rep(x: mx.array | None) -> mx.array | None:
            return None if x is None else mx.repeat(x, count, axis=0)

        return Conditioning(rep(self.context), rep(self.text_embeds), rep(self.time_ids))


class StableDiffusion:
    """A loaded SD 1.x/2.x or SDXL model in MLX."""

    def __init__(self, folder: str | Path, dtype=mx.float32):
        self.folder = Path(folder)
        self.dtype = dtype
        model_index = read_json(self.folder / "model_index.json")
        self.architecture = architecture_of(self.folder)
        self.force_zeros_for_empty_prompt = bool(model_index.get("force_zeros_for_empty_prompt", True))
        self.scheduler_config = read_json(self.folder / "scheduler" / "scheduler_config.json")
        manifest = self.folder / MANIFEST_NAME
        self.quantization = read_json(manifest).get("quantize") if manifest.is_file() else None

        self.unet_config = UNetConfig.from_dict(read_json(self.folder / "unet" / "config.json"))
        self.unet = load_module(
            UNet2DConditionModel(self.unet_config), self.folder / "unet" / WEIGHTS_NAME, dtype, self.quantization
        )
        self.vae_config = VAEConfig.from_dict(read_json(self.folder / "vae" / "config.json"))
        # The SD/SDXL VAEs overflow float16 at high resolution (their configs say force_upcast): decode in float32.
        self.vae_dtype = mx.float32 if self.vae_config.force_upcast else dtype
        vae_weights = self.folder / "vae" / WEIGHTS_NAME
        _require_vae_encoder(vae_weights)
        self.vae = load_module(AutoencoderKL(self.vae_config), vae_weights, self.vae_dtype)

        names = ["text_encoder", "text_encoder_2"] if self.architecture == "sdxl" else ["text_encoder"]
        self.text_encoders = []
        self.tokenizers = []
        for index, name in enumerate(names):
            raw = read_json(self.folder / name / "config.json")
            cfg = CLIPTextConfig.from_dict(raw, with_projection=is_projection_encoder(raw))
            weights = self.folder / name / WEIGHTS_NAME
            self.text_encoders.append(load_module(CLIPTextModel(cfg), weights, dtype, self.quantization))
            self.tokenizers.append(load_tokenizer(self.folder / ("tokenizer" if index == 0 else "tokenizer_2")))

        # The unfused weights a LoRA is fused onto. MLX arrays are immutable, so these references stay exactly the
        # loaded weights while the modules carry fused copies; switching LoRA or strength never reads the disk again.
        self._adaptable = {"unet": self.unet, **dict(zip(names, self.text_encoders, strict=True))}
        self._base = {name: dict(tree_flatten(module.parameters())) for name, module in self._adaptable.items()}
        self._fused: dict[str, list[str]] = {}
        self.lora: PreparedLora | None = None
        self.lora_strength = 0.0

    def base_shapes(self) -> dict[str, dict[str, tuple]]:
        """component → {MLX weight key: shape}, what a LoRA is resolved against (lora.prepare); a quantized layer
        answers with its unpacked (out, in) shape."""
        return {name: {k: self._logical_shape(base, k) for k in base} for name, base in self._base.items()}

    def _logical_shape(self, base: dict, key: str) -> tuple:
        shape = tuple(base[key].shape)
        if self._quantized(base, key):
            return (*shape[:-1], shape[-1] * 32 // int(self.quantization["bits"]))
        return shape

    @staticmethod
    def _quantized(base: dict, key: str) -> bool:
        return key.endswith(".weight") and f"{key[: -len('.weight')]}.scales" in base

    def _fuse(self, base: dict, key: str, delta: np.ndarray, strength: float) -> list[tuple[str, mx.array]]:
        """W + strength · delta for one weight. A quantized layer is unpacked, fused and quantized again with its
        group size and bits (so a LoRA on a quantized model carries that quantization's rounding too)."""
        if not self._quantized(base, key):
            fused = (base[key].astype(mx.float32) + strength * mx.array(delta)).astype(base[key].dtype)
            mx.eval(fused)  # one dense delta alive at a time
            return [(key, fused)]
        layer = key[: -len(".weight")]
        group, bits = int(self.quantization["groupSize"]), int(self.quantization["bits"])
        scales, biases = base[f"{layer}.scales"], base[f"{layer}.biases"]
        weight = mx.dequantize(base[key], scales, biases, group_size=group, bits=bits).astype(mx.float32)
        packed, new_scales, new_biases = mx.quantize(weight + strength * mx.array(delta), group_size=group, bits=bits)
        mx.eval(packed, new_scales, new_biases)
        return [
            (key, packed),
            (f"{layer}.scales", new_scales.astype(scales.dtype)),
            (f"{layer}.biases", new_biases.astype(biases.dtype)),
        ]

    def set_lora(self, lora: PreparedLora | None, strength: float = 1.0) -> None:
        """Carry exactly `lora` at `strength` (None: the base weights): W' = W + strength · delta, summed in float32
        and cast back to the weight's dtype. The previously fused weights go back to the kept base arrays first."""
        for name, keys in self._fused.items():
            self._adaptable[name].load_weights([(k, self._base[name][k]) for k in keys], strict=False)
        self._fused = {}
        self.lora, self.lora_strength = None, 0.0
        if lora is None:
            return
        for name in lora.modules_by_key:
            base = self._base[name]
            updates = []
            for key, delta in lora.deltas(name):
                updates.extend(self._fuse(base, key, delta, strength))
            self._adaptable[name].load_weights(updates, strict=False)
            self._fused[name] = [key for key, _ in updates]
        self.lora, self.lora_strength = lora, strength

    @property
    def latent_channels(self) -> int:
        return self.unet_config.in_channels

    @property
    def vae_scale_factor(self) -> int:
        return self.vae_config.scale_factor

    # --- text ---------------------------------------------------------------------------------------------------

    def _tokenize(self, tokenizer, text: str, max_length: int | None = None) -> np.ndarray:
        return tokenizer(
            [text],
            padding="max_length",
            max_length=max_length or tokenizer.model_max_length,
            truncation=True,
            return_tensors="np",
        )["input_ids"]

    def _encode_sd(self, text: str, max_length: int | None = None) -> mx.array:
        ids = self._tokenize(self.tokenizers[0], text, max_length)
        return self.text_encoders[0](ids).last_hidden_state

    def _encode_sdxl(self, text: str, max_length: int | None = None) -> tuple[mx.array, mx.array]:
        """Penultimate hidden states of both encoders side by side; pooled = projection of encoder 2's end token."""
        states, pooled = [], None
        for tokenizer, encoder in zip(self.tokenizers, self.text_encoders, strict=True):
            out = encoder(self._tokenize(tokenizer, text, max_length))
            states.append(out.penultimate_hidden_state)
            if out.text_embeds is not None:
                pooled = out.text_embeds
        return mx.concatenate(states, axis=-1), pooled

    def encode(self, prompt: str, negative_prompt: str | None, guidance: bool, height: int, width: int) -> Conditioning:
        if self.architecture == "sd":
            positive = self._encode_sd(prompt)
            if not guidance:
                return Conditioning(positive.astype(self.dtype))
            negative = self._encode_sd(negative_prompt or "", max_length=positive.shape[1])
            return Conditioning(mx.concatenate([negative, positive]).astype(self.dtype))

        positive, pooled = self._encode_sdxl(prompt)
        time_ids = mx.array([sdxl_time_ids((height, width), (0, 0), (height, width))], dtype=mx.float32)
        if not guidance:
            return Conditioning(positive.astype(self.dtype), pooled.astype(self.dtype), time_ids)
        if negative_prompt is None and self.force_zeros_for_empty_prompt:
            # SDXL was trained with zeroed conditioning as "unconditional" when no negative prompt is given
            negative, negative_pooled = mx.zeros_like(positive), mx.zeros_like(pooled)
        else:
            negative, negative_pooled = self._encode_sdxl(negative_prompt or "", max_length=positive.shape[1])
        return Conditioning(
            mx.concatenate([negative, positive]).astype(self.dtype),
            mx.concatenate([negative_pooled, pooled]).astype(self.dtype),
            mx.concatenate([time_ids, time_ids]),
        )

    # --- denoising and decoding ---------------------------------------------------------------------------------

    def denoise(
        self,
        latents: mx.array,
        cond: Conditioning,
        steps: int,
        guidance_scale: float,
        scheduler: str | None,
        noise_fn: Callable[[tuple], mx.array] | None = None,
        on_step: Callable[[int, int], None] | None = None,
        check_cancel: Callable[[], None] | None = None,
        preview_every: int | None = None,
        init: Init | None = None,
    ) -> mx.array:
        """latents: NHWC standard-normal noise. Returns the final latents (float32, diffusion-space scaled).
        Every `preview_every` steps on_step also gets an approximate RGB preview (preview.py).
        With `init` (img2img): the schedule runs from position init.start on the init latents noised to that level,
        and, with a mask, latents outside it are reset after each step to the init latents noised to the next level
        (clean after the last), as diffusers' inpaint pipelines do with a 4-channel UNet."""
        sampler = make_sampler(scheduler, self.scheduler_config, steps, noise_fn)
        guided = cond.context.shape[0] == 2
        cond = cond.repeated(latents.shape[0])
        noise = latents.astype(mx.float32)
        start = 0 if init is None else init.start
        if init is None or start == 0:
            latents = noise * sampler.init_noise_sigma  # strength 1 with a mask: pure noise too, as diffusers
        else:
            # one init image for every candidate: its (1, …) latents broadcast against the batch's noise
            latents = sampler.add_noise(init.latents, noise, start)
        run = steps - start
        for index in range(start, steps):
            timestep = sampler.timesteps[index]
            if check_cancel is not None:
                check_cancel()
            model_in = mx.concatenate([latents, latents]) if guided else latents
            model_in = sampler.scale_input(model_in, index).astype(self.dtype)
            noise_pred = self.unet(model_in, float(timestep), cond.context, cond.text_embeds, cond.time_ids)
            if guided:
                uncond, text = mx.split(noise_pred, 2)
                noise_pred = uncond + guidance_scale * (text - uncond)
            latents = sampler.step(noise_pred, index, latents)
            if init is not None and init.mask is not None:
                kept = init.latents if index == steps - 1 else sampler.add_noise(init.latents, noise, index + 1)
                latents = (1 - init.mask) * kept + init.mask * latents
            mx.eval(latents)
            if self.dtype != mx.float32 and not bool(mx.all(mx.isfinite(latents))):
                raise NonFiniteError(f"non-finite latents at step {index + 1}/{steps} in {self.dtype}")
            if on_step is not None:
                # NHWC, straight from the sampler; read only on a preview step
                preview.emit_step(
                    on_step,
                    index - start + 1,
                    run,
                    preview_every,
                    lambda latents=latents: np.array(latents.astype(mx.float32)),
                    self.architecture,
                    "nhwc",
                )
        return latents

    def encode_image(self, images: np.ndarray) -> mx.array:
        """(1, H, W, 3) in [-1, 1] → diffusion-space latents, NHWC float32: the posterior's mode (its mean, no sample:
        img2img.py), scaled as diffusers' img2img pipelines scale init latents."""
        mean, _logvar = self.vae.encode(mx.array(images).astype(self.vae_dtype))
        return scale_latents(mean.astype(mx.float32), self.vae_config)

    def decode(self, latents: mx.array) -> np.ndarray:
        """Final latents of one sample → (H, W, 3) uint8, rounding like diffusers' numpy_to_pil."""
        images = self.vae.decode(unscale_latents(latents.astype(self.vae_dtype), self.vae_config))
        images = mx.clip(images.astype(mx.float32) / 2 + 0.5, 0.0, 1.0)
        mx.eval(images)
        if not bool(mx.all(mx.isfinite(images))):
            raise NonFiniteError("non-finite pixels after VAE decode")
        return (np.array(images[0]) * 255).round().astype(np.uint8)

    def generate(
        self,
        prompt: str,
        negative_prompt: str | None,
        width: int,
        height: int,
        steps: int,
        guidance_scale: float,
        scheduler: str | None,
        initial_noise: mx.array,
        noise_fn: Callable[[tuple], mx.array] | None = None,
        on_step: Callable[[int, int], None] | None = None,
        check_cancel: Callable[[], None] | None = None,
        preview_every: int | None = None,
        init: Init | None = None,
    ) -> Image.Image:
        """initial_noise: standard-normal latents, NHWC (1, H/f, W/f, C)."""
        return self.generate_batch(
            prompt,
            negative_prompt,
            width,
            height,
            steps,
            guidance_scale,
            scheduler,
            initial_noise,
            noise_fn,
            on_step,
            check_cancel,
            preview_every,
            init,
        )[0]

    def generate_batch(
        self,
        prompt: str,
        negative_prompt: str | None,
        width: int,
        height: int,
        steps: int,
        guidance_scale: float,
        scheduler: str | None,
        initial_noise: mx.array,
        noise_fn: Callable[[tuple], mx.array] | None = None,
        on_step: Callable[[int, int], None] | None = None,
        check_cancel: Callable[[], None] | None = None,
        preview_every: int | None = None,
        init: Init | None = None,
    ) -> list[Image.Image]:
        """initial_noise: NHWC (N, H/f, W/f, C), one sample per candidate, denoised as one batch through the UNet;
        each is decoded on its own (the VAE's activations at full resolution are the large ones)."""
        cond = self.encode(prompt, negative_prompt, guidance_scale > 1.0, height, width)
        latents = self.denoise(
            initial_noise, cond, steps, guidance_scale, scheduler, noise_fn, on_step, check_cancel, preview_every, init
        )
        return [Image.fromarray(self.decode(latents[index : index + 1])) for index in range(latents.shape[0])]


def _require_vae_encoder(weights: Path) -> None:
    """img2img encodes with the VAE's encoder: a converted folder must carry it (and quant_conv) beside the decoder.
    A folder written without them says what to do instead of failing on a list of missing parameters."""
    from safetensors import safe_open

    with safe_open(str(weights), framework="numpy") as handle:
        keys = set(handle.keys())
    if not any(key.startswith("encoder.") for key in keys):
        raise ValueError(
            f"{weights} has no VAE encoder weights (a conversion that kept only the decoder); convert the model again"
        )


def nchw_to_nhwc(x: np.ndarray) -> mx.array:
    return mx.array(np.ascontiguousarray(np.asarray(x, dtype=np.float32).transpose(0, 2, 3, 1)))
