"""AutoencoderKL (the SD image ↔ latent autoencoder) in MLX, NHWC.

Encoder: conv_in, per block ResNets + a stride-2 conv (asymmetric zero pad), mid (ResNet, single-head self-attention,
ResNet), norm-SiLU-conv to mean and log-variance. Decoder mirrors it with nearest ×2 upsampling. No time embedding.
"""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn

from .config import VAEConfig
from .layers import Conv2d, GroupNorm, attention, silu
from .unet import ResnetBlock, Upsample

VAE_EPS = 1e-6


class VAEAttention(nn.Module):
    """Single-head self-attention over all H·W positions, GroupNorm before, residual after."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.group_norm = GroupNorm(groups, channels, VAE_EPS)
        self.to_q = nn.Linear(channels, channels)
        self.to_k = nn.Linear(channels, channels)
        self.to_v = nn.Linear(channels, channels)
        self.to_out = nn.Linear(channels, channels)

    def __call__(self, x: mx.array) -> mx.array:
        batch, height, width, channels = x.shape
        h = self.group_norm(x).reshape(batch, height * width, channels)
        out = self.to_out(attention(self.to_q(h), self.to_k(h), self.to_v(h), num_heads=1))
        return x + out.reshape(batch, height, width, channels)


class VAEMidBlock(nn.Module):
    def __init__(self, channels: int, groups: int, with_attention: bool):
        super().__init__()
        self.resnets = [ResnetBlock(channels, channels, None, groups, VAE_EPS) for _ in range(2)]
        if with_attention:
            self.attentions = [VAEAttention(channels, groups)]
        self.with_attention = with_attention

    def __call__(self, x: mx.array) -> mx.array:
        x = self.resnets[0](x)
        if self.with_attention:
            x = self.attentions[0](x)
        return self.resnets[1](x)


class EncoderDownsample(nn.Module):
    """Stride-2 3×3 conv after padding only right and bottom by one (diffusers' `padding=0` Downsample2D)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = Conv2d(channels, channels, 3, stride=2, padding=0)

    def __call__(self, x: mx.array) -> mx.array:
        return self.conv(mx.pad(x, [(0, 0), (0, 1), (0, 1), (0, 0)]))


class EncoderBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, layers: int, groups: int, downsample: bool):
        super().__init__()
        self.resnets = [ResnetBlock(in_ch if i == 0 else out_ch, out_ch, None, groups, VAE_EPS) for i in range(layers)]
        if downsample:
            self.downsampler = EncoderDownsample(out_ch)
        self.downsample = downsample

    def __call__(self, x: mx.array) -> mx.array:
        for resnet in self.resnets:
            x = resnet(x)
        return self.downsampler(x) if self.downsample else x


class DecoderBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, layers: int, groups: int, upsample: bool):
        super().__init__()
        self.resnets = [ResnetBlock(in_ch if i == 0 else out_ch, out_ch, None, groups, VAE_EPS) for i in range(layers)]
        if upsample:
            self.upsampler = Upsample(out_ch)
        self.upsample = upsample

    def __call__(self, x: mx.array) -> mx.array:
        for resnet in self.resnets:
            x = resnet(x)
        return self.upsampler(x) if self.upsample else x


class Encoder(nn.Module):
    def __init__(self, cfg: VAEConfig):
        super().__init__()
        channels, groups = cfg.block_out_channels, cfg.norm_num_groups
        self.conv_in = Conv2d(cfg.in_channels, channels[0], 3, padding=1)
        self.down_blocks = [
            EncoderBlock(channels[max(i - 1, 0)], ch, cfg.layers_per_block, groups, downsample=i < len(channels) - 1)
            for i, ch in enumerate(channels)
        ]
        self.mid_block = VAEMidBlock(channels[-1], groups, cfg.mid_block_add_attention)
        self.conv_norm_out = GroupNorm(groups, channels[-1], VAE_EPS)
        self.conv_out = Conv2d(channels[-1], 2 * cfg.latent_channels, 3, padding=1)

    def __call__(self, x: mx.array) -> mx.array:
        x = self.conv_in(x)
        for block in self.down_blocks:
            x = block(x)
        return self.conv_out(silu(self.conv_norm_out(self.mid_block(x))))


class Decoder(nn.Module):
    def __init__(self, cfg: VAEConfig):
        super().__init__()
        channels, groups = list(reversed(cfg.block_out_channels)), cfg.norm_num_groups
        self.conv_in = Conv2d(cfg.latent_channels, channels[0], 3, padding=1)
        self.mid_block = VAEMidBlock(channels[0], groups, cfg.mid_block_add_attention)
        self.up_blocks = [
            DecoderBlock(channels[max(i - 1, 0)], ch, cfg.layers_per_block + 1, groups, upsample=i < len(channels) - 1)
            for i, ch in enumerate(channels)
        ]
        self.conv_norm_out = GroupNorm(groups, channels[-1], VAE_EPS)
        self.conv_out = Conv2d(channels[-1], cfg.out_channels, 3, padding=1)

    def __call__(self, z: mx.array) -> mx.array:
        x = self.mid_block(self.conv_in(z))
        for block in self.up_blocks:
            x = block(x)
        return self.conv_out(silu(self.conv_norm_out(x)))


class AutoencoderKL(nn.Module):
    def __init__(self, cfg: VAEConfig):
        super().__init__()
        self.config = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        if cfg.use_quant_conv:
            self.quant_conv = Conv2d(2 * cfg.latent_channels, 2 * cfg.latent_channels, 1)
        if cfg.use_post_quant_conv:
            self.post_quant_conv = Conv2d(cfg.latent_channels, cfg.latent_channels, 1)

    def encode(self, images: mx.array) -> tuple[mx.array, mx.array]:
        """images in [-1, 1], NHWC → (mean, logvar) of the latent Gaussian, NHWC."""
        moments = self.encoder(images)
        if self.config.use_quant_conv:
            moments = self.quant_conv(moments)
        mean, logvar = mx.split(moments, 2, axis=-1)
        return mean, mx.clip(logvar, -30.0, 20.0)

    def decode(self, latents: mx.array) -> mx.array:
        """Unscaled latents, NHWC → images in about [-1, 1], NHWC."""
        if self.config.use_post_quant_conv:
            latents = self.post_quant_conv(latents)
        return self.decoder(latents)


def unscale_latents(latents: mx.array, cfg: VAEConfig) -> mx.array:
    """Undo the diffusion-space scaling before decoding, as the SD/SDXL pipelines do.

    SD: ÷ scaling_factor. VAEs that publish per-channel latents_mean/std (some SDXL fine-tunes) are de-standardised.
    """
    if cfg.latents_mean is not None and cfg.latents_std is not None:
        mean = mx.array(cfg.latents_mean, dtype=latents.dtype)
        std = mx.array(cfg.latents_std, dtype=latents.dtype)
        return latents * std / cfg.scaling_factor + mean
    return latents / cfg.scaling_factor


def scale_latents(latents: mx.array, cfg: VAEConfig) -> mx.array:
    """The inverse of unscale_latents: encoder latents into diffusion space, as diffusers' img2img pipelines do."""
    if cfg.latents_mean is not None and cfg.latents_std is not None:
        mean = mx.array(cfg.latents_mean, dtype=latents.dtype)
        std = mx.array(cfg.latents_std, dtype=latents.dtype)
        return (latents - mean) * cfg.scaling_factor / std
    return latents * cfg.scaling_factor
