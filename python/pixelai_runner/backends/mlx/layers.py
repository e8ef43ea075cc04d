"""Building blocks shared by the CLIP, UNet and VAE modules.

Layout: images are NHWC (MLX's convolution layout), conv weights OHWI, linear weights (out, in) like PyTorch.
Norms compute their statistics in float32 even when the weights run in float16: GroupNorm over a 64×64×320 tensor
overflows float16 sums, which is the usual source of NaN images on Apple GPUs.
"""

from __future__ import annotations

import math

import mlx.core as mx
import mlx.nn as nn


def silu(x: mx.array) -> mx.array:
    return x * mx.sigmoid(x)


def gelu(x: mx.array) -> mx.array:
    """Exact (erf) GELU, as torch's default `F.gelu`."""
    return 0.5 * x * (1.0 + mx.erf(x / math.sqrt(2.0)))


def quick_gelu(x: mx.array) -> mx.array:
    """OpenAI CLIP's sigmoid approximation of GELU."""
    return x * mx.sigmoid(1.702 * x)


class Conv2d(nn.Module):
    """2-D convolution on NHWC input with an OHWI weight and a bias.

    `mx.conv2d` is used directly: on Linux CPU it matches PyTorch (checked by the parity tests) and an im2col + matmul
    formulation measured no faster there, because both end up in the same GEMM.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1, padding: int = 0):
        super().__init__()
        self.weight = mx.zeros((out_channels, kernel_size, kernel_size, in_channels))
        self.bias = mx.zeros((out_channels,))
        self.stride = stride
        self.padding = padding

    def __call__(self, x: mx.array) -> mx.array:
        return mx.conv2d(x, self.weight, stride=self.stride, padding=self.padding) + self.bias


class GroupNorm(nn.Module):
    """PyTorch GroupNorm semantics (groups of consecutive channels) on channels-last input."""

    def __init__(self, num_groups: int, num_channels: int, eps: float):
        super().__init__()
        self.weight = mx.ones((num_channels,))
        self.bias = mx.zeros((num_channels,))
        self.num_groups = num_groups
        self.eps = eps

    def __call__(self, x: mx.array) -> mx.array:
        dtype = x.dtype
        batch, channels = x.shape[0], x.shape[-1]
        grouped = x.astype(mx.float32).reshape(batch, -1, self.num_groups, channels // self.num_groups)
        mean = mx.mean(grouped, axis=(1, 3), keepdims=True)
        var = mx.var(grouped, axis=(1, 3), keepdims=True)
        normed = ((grouped - mean) * mx.rsqrt(var + self.eps)).reshape(x.shape)
        return (normed * self.weight.astype(mx.float32) + self.bias.astype(mx.float32)).astype(dtype)


class LayerNorm(nn.Module):
    def __init__(self, dims: int, eps: float):
        super().__init__()
        self.weight = mx.ones((dims,))
        self.bias = mx.zeros((dims,))
        self.eps = eps

    def __call__(self, x: mx.array) -> mx.array:
        dtype = x.dtype
        out = mx.fast.layer_norm(
            x.astype(mx.float32), self.weight.astype(mx.float32), self.bias.astype(mx.float32), self.eps
        )
        return out.astype(dtype)


def attention(q: mx.array, k: mx.array, v: mx.array, num_heads: int, mask: mx.array | None = None) -> mx.array:
    """Multi-head scaled dot-product attention on (B, L, heads*D) projections; returns (B, Lq, heads*D)."""
    batch, q_len, width = q.shape
    head_dim = width // num_heads

    def split(t: mx.array) -> mx.array:
        return t.reshape(batch, t.shape[1], num_heads, head_dim).transpose(0, 2, 1, 3)

    out = mx.fast.scaled_dot_product_attention(split(q), split(k), split(v), scale=head_dim**-0.5, mask=mask)
    return out.transpose(0, 2, 1, 3).reshape(batch, q_len, width)


def upsample_nearest(x: mx.array, size: tuple[int, int] | None = None) -> mx.array:
    """Nearest-neighbour resize of NHWC `x` to `size` (default: twice each side).

    Matches torch's `interpolate(mode="nearest")`.
    """
    height, width = x.shape[1], x.shape[2]
    if size is None or size == (2 * height, 2 * width):
        return mx.repeat(mx.repeat(x, 2, axis=1), 2, axis=2)
    rows = mx.array([(i * height) // size[0] for i in range(size[0])])
    cols = mx.array([(j * width) // size[1] for j in range(size[1])])
    return x[:, rows][:, :, cols]
