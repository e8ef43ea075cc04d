"""UNet2DConditionModel (SD 1.x / 2.x / SDXL) in MLX, NHWC.

Down path: conv_in, then per block `layers_per_block` × (ResNet [+ spatial transformer]) and a stride-2 conv, every
intermediate kept as a skip. Mid: ResNet, transformer, ResNet. Up path: per block `layers_per_block + 1` × (concat a
skip, ResNet [+ transformer]) and a nearest ×2 upsample + conv. Every ResNet adds a projection of the timestep
embedding; SDXL also adds an embedding of (pooled text, original size, crop, target size) to it.
"""

from __future__ import annotations

import math

import mlx.core as mx
import mlx.nn as nn

from .config import UNetConfig
from .layers import Conv2d, GroupNorm, LayerNorm, attention, gelu, silu, upsample_nearest


def timestep_embedding(
    timesteps: mx.array, dim: int, flip_sin_to_cos: bool, freq_shift: float, max_period: float = 10000.0
) -> mx.array:
    """Sinusoidal embedding of (fractional) timesteps, frequencies geometric from 1 to 1/max_period."""
    half = dim // 2
    exponent = -math.log(max_period) * mx.arange(half, dtype=mx.float32) / (half - freq_shift)
    args = timesteps.astype(mx.float32)[:, None] * mx.exp(exponent)[None, :]
    sin, cos = mx.sin(args), mx.cos(args)
    emb = mx.concatenate([cos, sin] if flip_sin_to_cos else [sin, cos], axis=-1)
    if dim % 2 == 1:
        emb = mx.pad(emb, [(0, 0), (0, 1)])
    return emb


class TimestepMLP(nn.Module):
    """Linear → SiLU → Linear, lifting a sinusoidal embedding to the model's time-embedding width."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.linear_1 = nn.Linear(in_dim, out_dim)
        self.linear_2 = nn.Linear(out_dim, out_dim)

    def __call__(self, x: mx.array) -> mx.array:
        return self.linear_2(silu(self.linear_1(x)))


class ResnetBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, with the time embedding added between; 1×1 conv on the skip when widths differ."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        temb_dim: int | None,
        groups: int,
        eps: float,
        output_scale_factor: float = 1.0,
    ):
        super().__init__()
        self.norm1 = GroupNorm(groups, in_ch, eps)
        self.conv1 = Conv2d(in_ch, out_ch, 3, padding=1)
        if temb_dim is not None:
            self.time_emb_proj = nn.Linear(temb_dim, out_ch)
        self.norm2 = GroupNorm(groups, out_ch, eps)
        self.conv2 = Conv2d(out_ch, out_ch, 3, padding=1)
        if in_ch != out_ch:
            self.conv_shortcut = Conv2d(in_ch, out_ch, 1)
        self.has_shortcut = in_ch != out_ch
        self.output_scale_factor = output_scale_factor

    def __call__(self, x: mx.array, temb: mx.array | None = None) -> mx.array:
        h = self.conv1(silu(self.norm1(x)))
        if temb is not None:
            h = h + self.time_emb_proj(silu(temb))[:, None, None, :]
        h = self.conv2(silu(self.norm2(h)))
        skip = self.conv_shortcut(x) if self.has_shortcut else x
        out = skip + h
        return out if self.output_scale_factor == 1.0 else out / self.output_scale_factor


class Attention(nn.Module):
    """Multi-head attention; keys/values come from `context` (cross-attention) or from `x` itself."""

    def __init__(self, query_dim: int, context_dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.to_q = nn.Linear(query_dim, query_dim, bias=False)
        self.to_k = nn.Linear(context_dim, query_dim, bias=False)
        self.to_v = nn.Linear(context_dim, query_dim, bias=False)
        self.to_out = nn.Linear(query_dim, query_dim)

    def __call__(self, x: mx.array, context: mx.array | None = None) -> mx.array:
        context = x if context is None else context
        return self.to_out(attention(self.to_q(x), self.to_k(context), self.to_v(context), self.num_heads))


class GEGLUFeedForward(nn.Module):
    """Linear to 2×(4·dim), gate one half with GELU of the other, Linear back to dim."""

    def __init__(self, dim: int, mult: int = 4):
        super().__init__()
        self.proj_in = nn.Linear(dim, dim * mult * 2)
        self.proj_out = nn.Linear(dim * mult, dim)

    def __call__(self, x: mx.array) -> mx.array:
        hidden, gate = mx.split(self.proj_in(x), 2, axis=-1)
        return self.proj_out(hidden * gelu(gate))


class BasicTransformerBlock(nn.Module):
    """Pre-LayerNorm: self-attention, cross-attention on the text, GEGLU feed-forward, each residual."""

    def __init__(self, dim: int, context_dim: int, num_heads: int):
        super().__init__()
        self.norm1 = LayerNorm(dim, 1e-5)
        self.attn1 = Attention(dim, dim, num_heads)
        self.norm2 = LayerNorm(dim, 1e-5)
        self.attn2 = Attention(dim, context_dim, num_heads)
        self.norm3 = LayerNorm(dim, 1e-5)
        self.ff = GEGLUFeedForward(dim)

    def __call__(self, x: mx.array, context: mx.array) -> mx.array:
        x = x + self.attn1(self.norm1(x))
        x = x + self.attn2(self.norm2(x), context)
        return x + self.ff(self.norm3(x))


class Transformer2D(nn.Module):
    """Spatial transformer: GroupNorm, project in, `depth` transformer blocks over the H·W tokens, project
    out, residual.

    SD 1.x stores proj_in/proj_out as 1×1 convolutions, SD 2.x/SDXL as linears; a 1×1 conv on channels-last data
    *is* a linear over channels, so weights.py turns both into linears and this module has one code path.
    """

    def __init__(self, channels: int, context_dim: int, num_heads: int, depth: int, groups: int):
        super().__init__()
        self.norm = GroupNorm(groups, channels, 1e-6)
        self.proj_in = nn.Linear(channels, channels)
        self.transformer_blocks = [BasicTransformerBlock(channels, context_dim, num_heads) for _ in range(depth)]
        self.proj_out = nn.Linear(channels, channels)

    def __call__(self, x: mx.array, context: mx.array) -> mx.array:
        batch, height, width, channels = x.shape
        h = self.proj_in(self.norm(x).reshape(batch, height * width, channels))
        for block in self.transformer_blocks:
            h = block(h, context)
        return x + self.proj_out(h).reshape(batch, height, width, channels)


class Downsample(nn.Module):
    def __init__(self, channels: int, padding: int):
        super().__init__()
        self.conv = Conv2d(channels, channels, 3, stride=2, padding=padding)

    def __call__(self, x: mx.array) -> mx.array:
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = Conv2d(channels, channels, 3, padding=1)

    def __call__(self, x: mx.array, size: tuple[int, int] | None = None) -> mx.array:
        return self.conv(upsample_nearest(x, size))


class DownBlock(nn.Module):
    def __init__(self, cfg: UNetConfig, index: int, in_ch: int, out_ch: int, with_attention: bool, is_final: bool):
        super().__init__()
        layers = cfg.layers_per_block[index]
        temb_dim, groups, eps = cfg.time_embed_dim, cfg.norm_num_groups, cfg.norm_eps
        self.resnets = [ResnetBlock(in_ch if i == 0 else out_ch, out_ch, temb_dim, groups, eps) for i in range(layers)]
        if with_attention:
            heads, depth = cfg.num_heads[index], cfg.transformer_layers[index]
            self.attentions = [
                Transformer2D(out_ch, cfg.cross_attention_dim, heads, depth, groups) for _ in range(layers)
            ]
        self.with_attention = with_attention
        if not is_final:
            self.downsampler = Downsample(out_ch, cfg.downsample_padding)
        self.is_final = is_final

    def __call__(self, x: mx.array, temb: mx.array, context: mx.array) -> tuple[mx.array, list[mx.array]]:
        skips = []
        for i, resnet in enumerate(self.resnets):
            x = resnet(x, temb)
            if self.with_attention:
                x = self.attentions[i](x, context)
            skips.append(x)
        if not self.is_final:
            x = self.downsampler(x)
            skips.append(x)
        return x, skips


class UpBlock(nn.Module):
    def __init__(
        self,
        cfg: UNetConfig,
        index: int,
        prev_ch: int,
        out_ch: int,
        skip_in_ch: int,
        with_attention: bool,
        is_final: bool,
    ):
        super().__init__()
        down_index = len(cfg.block_out_channels) - 1 - index
        layers = cfg.layers_per_block[down_index] + 1
        temb_dim, groups, eps = cfg.time_embed_dim, cfg.norm_num_groups, cfg.norm_eps
        self.resnets = []
        for i in range(layers):
            # the last ResNet of a block takes the skip that entered the matching down block (narrower)
            skip_ch = skip_in_ch if i == layers - 1 else out_ch
            resnet_in = prev_ch if i == 0 else out_ch
            self.resnets.append(ResnetBlock(resnet_in + skip_ch, out_ch, temb_dim, groups, eps))
        if with_attention:
            heads, depth = cfg.num_heads[down_index], cfg.up_transformer_layers[index]
            self.attentions = [
                Transformer2D(out_ch, cfg.cross_attention_dim, heads, depth, groups) for _ in range(layers)
            ]
        self.with_attention = with_attention
        if not is_final:
            self.upsampler = Upsample(out_ch)
        self.is_final = is_final

    def __call__(
        self,
        x: mx.array,
        skips: list[mx.array],
        temb: mx.array,
        context: mx.array,
        upsample_size: tuple[int, int] | None,
    ) -> mx.array:
        for i, resnet in enumerate(self.resnets):
            x = resnet(mx.concatenate([x, skips.pop()], axis=-1), temb)
            if self.with_attention:
                x = self.attentions[i](x, context)
        if not self.is_final:
            x = self.upsampler(x, upsample_size)
        return x


class MidBlock(nn.Module):
    def __init__(self, cfg: UNetConfig):
        super().__init__()
        ch = cfg.block_out_channels[-1]
        temb_dim, groups, eps = cfg.time_embed_dim, cfg.norm_num_groups, cfg.norm_eps
        scale = cfg.mid_block_scale_factor
        self.resnets = [ResnetBlock(ch, ch, temb_dim, groups, eps, scale) for _ in range(2)]
        self.attentions = [
            Transformer2D(ch, cfg.cross_attention_dim, cfg.num_heads[-1], cfg.transformer_layers[-1], groups)
        ]

    def __call__(self, x: mx.array, temb: mx.array, context: mx.array) -> mx.array:
        x = self.resnets[0](x, temb)
        return self.resnets[1](self.attentions[0](x, context), temb)


def sdxl_time_ids(original_size: tuple[int, int], crop_top_left: tuple[int, int], target_size: tuple[int, int]) -> list:
    """SDXL micro-conditioning: (orig h, orig w, crop top, crop left, target h, target w)."""
    return [*original_size, *crop_top_left, *target_size]


class UNet2DConditionModel(nn.Module):
    def __init__(self, cfg: UNetConfig):
        super().__init__()
        self.config = cfg
        channels = cfg.block_out_channels
        time_dim = cfg.time_embed_dim
        self.conv_in = Conv2d(cfg.in_channels, channels[0], 3, padding=1)
        self.time_embedding = TimestepMLP(channels[0], time_dim)
        if cfg.addition_embed_type == "text_time":
            self.add_embedding = TimestepMLP(cfg.projection_class_embeddings_input_dim, time_dim)

        self.down_blocks = []
        out_ch = channels[0]
        for i, kind in enumerate(cfg.down_block_types):
            in_ch, out_ch = out_ch, channels[i]
            self.down_blocks.append(
                DownBlock(cfg, i, in_ch, out_ch, kind.startswith("CrossAttn"), is_final=i == len(channels) - 1)
            )
        if cfg.has_mid_block:
            self.mid_block = MidBlock(cfg)

        reversed_channels = list(reversed(channels))
        self.up_blocks = []
        out_ch = reversed_channels[0]
        for i, kind in enumerate(cfg.up_block_types):
            prev_ch, out_ch = out_ch, reversed_channels[i]
            skip_in_ch = reversed_channels[min(i + 1, len(channels) - 1)]
            self.up_blocks.append(
                UpBlock(
                    cfg, i, prev_ch, out_ch, skip_in_ch, kind.startswith("CrossAttn"), is_final=i == len(channels) - 1
                )
            )
        self.conv_norm_out = GroupNorm(cfg.norm_num_groups, channels[0], cfg.norm_eps)
        self.conv_out = Conv2d(channels[0], cfg.out_channels, 3, padding=1)

    def time_conditioning(
        self, timesteps: mx.array, dtype, text_embeds: mx.array | None, time_ids: mx.array | None
    ) -> mx.array:
        cfg = self.config
        t_emb = timestep_embedding(timesteps, cfg.block_out_channels[0], cfg.flip_sin_to_cos, cfg.freq_shift)
        emb = self.time_embedding(t_emb.astype(dtype))
        if cfg.addition_embed_type == "text_time":
            if text_embeds is None or time_ids is None:
                raise ValueError("an SDXL UNet needs text_embeds and time_ids")
            batch = time_ids.shape[0]
            ids_emb = timestep_embedding(
                time_ids.reshape(-1), cfg.addition_time_embed_dim, cfg.flip_sin_to_cos, cfg.freq_shift
            ).reshape(batch, -1)
            added = mx.concatenate([text_embeds, ids_emb.astype(text_embeds.dtype)], axis=-1)
            emb = emb + self.add_embedding(added.astype(dtype))
        return emb

    def __call__(
        self,
        sample: mx.array,
        timestep,
        context: mx.array,
        text_embeds: mx.array | None = None,
        time_ids: mx.array | None = None,
    ) -> mx.array:
        """sample: (B, H, W, C) latents; timestep: scalar or (B,); context: (B, 77, cross_attention_dim)."""
        batch = sample.shape[0]
        timesteps = mx.broadcast_to(mx.array(timestep, dtype=mx.float32).reshape(-1), (batch,))
        temb = self.time_conditioning(timesteps, sample.dtype, text_embeds, time_ids)

        x = self.conv_in(sample)
        skips = [x]
        for block in self.down_blocks:
            x, block_skips = block(x, temb, context)
            skips.extend(block_skips)
        if self.config.has_mid_block:
            x = self.mid_block(x, temb, context)
        for block in self.up_blocks:
            block_skips = [skips.pop() for _ in block.resnets][::-1]
            # odd latent sizes: upsample to the next skip's size, not blindly ×2
            upsample_size = tuple(skips[-1].shape[1:3]) if skips else None
            x = block(x, block_skips, temb, context, upsample_size)
        return self.conv_out(silu(self.conv_norm_out(x)))
