"""CLIP text encoder (transformers' CLIPTextModel / CLIPTextModelWithProjection) in MLX.

A pre-norm transformer with a causal mask over 77 token positions. SD 1.x conditions the UNet on the final
(layer-normed) hidden states; SDXL on the penultimate layer's raw hidden states of both encoders, concatenated, plus the
projected pooled state of encoder 2.
"""

from __future__ import annotations

from dataclasses import dataclass

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from .config import CLIPTextConfig
from .layers import LayerNorm, attention, gelu, quick_gelu


@dataclass
class TextEncoderOutput:
    last_hidden_state: mx.array  # after final_layer_norm
    penultimate_hidden_state: mx.array  # output of layer N-1, before any norm (SDXL's conditioning)
    pooled: mx.array  # final-normed state at the end-of-text position
    text_embeds: mx.array | None  # pooled @ text_projection (encoder with projection only)


class CLIPEmbeddings(nn.Module):
    def __init__(self, cfg: CLIPTextConfig):
        super().__init__()
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.position_embedding = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)

    def __call__(self, input_ids: mx.array) -> mx.array:
        positions = mx.arange(input_ids.shape[1])
        return self.token_embedding(input_ids) + self.position_embedding(positions)[None]


class CLIPAttention(nn.Module):
    def __init__(self, cfg: CLIPTextConfig):
        super().__init__()
        dim = cfg.hidden_size
        self.num_heads = cfg.num_attention_heads
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def __call__(self, x: mx.array, mask: mx.array) -> mx.array:
        out = attention(self.q_proj(x), self.k_proj(x), self.v_proj(x), self.num_heads, mask=mask)
        return self.out_proj(out)


class CLIPMLP(nn.Module):
    def __init__(self, cfg: CLIPTextConfig):
        super().__init__()
        self.fc1 = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.fc2 = nn.Linear(cfg.intermediate_size, cfg.hidden_size)
        self.act = quick_gelu if cfg.hidden_act == "quick_gelu" else gelu

    def __call__(self, x: mx.array) -> mx.array:
        return self.fc2(self.act(self.fc1(x)))


class CLIPEncoderLayer(nn.Module):
    def __init__(self, cfg: CLIPTextConfig):
        super().__init__()
        self.layer_norm1 = LayerNorm(cfg.hidden_size, cfg.layer_norm_eps)
        self.self_attn = CLIPAttention(cfg)
        self.layer_norm2 = LayerNorm(cfg.hidden_size, cfg.layer_norm_eps)
        self.mlp = CLIPMLP(cfg)

    def __call__(self, x: mx.array, mask: mx.array) -> mx.array:
        x = x + self.self_attn(self.layer_norm1(x), mask)
        return x + self.mlp(self.layer_norm2(x))


class CLIPEncoder(nn.Module):
    def __init__(self, cfg: CLIPTextConfig):
        super().__init__()
        self.layers = [CLIPEncoderLayer(cfg) for _ in range(cfg.num_hidden_layers)]


def causal_mask(length: int, dtype) -> mx.array:
    """Additive mask: position i may attend to positions ≤ i only."""
    blocked = mx.triu(mx.ones((length, length)), k=1)
    return (blocked * mx.array(-1e9 if dtype == mx.float32 else -6e4)).astype(dtype)


def eos_positions(input_ids: np.ndarray, eos_token_id: int) -> np.ndarray:
    """Where each sequence's pooled state is read, with transformers' exact rule.

    Configs with eos_token_id == 2 predate transformers PR #24773 and pool at the largest token id (the real CLIP
    vocabulary puts end-of-text last); newer ones pool at the first end-of-text token.
    """
    if eos_token_id == 2:
        return np.argmax(input_ids, axis=-1)
    return np.argmax(input_ids == eos_token_id, axis=-1)


class CLIPTextModel(nn.Module):
    def __init__(self, cfg: CLIPTextConfig):
        super().__init__()
        self.config = cfg
        self.embeddings = CLIPEmbeddings(cfg)
        self.encoder = CLIPEncoder(cfg)
        self.final_layer_norm = LayerNorm(cfg.hidden_size, cfg.layer_norm_eps)
        if cfg.projection_dim is not None:
            self.text_projection = nn.Linear(cfg.hidden_size, cfg.projection_dim, bias=False)

    def __call__(self, input_ids: np.ndarray) -> TextEncoderOutput:
        ids = np.asarray(input_ids, dtype=np.int64)
        x = self.embeddings(mx.array(ids.astype(np.int32)))
        mask = causal_mask(ids.shape[1], x.dtype)
        penultimate = x
        for index, layer in enumerate(self.encoder.layers):
            x = layer(x, mask)
            if index == len(self.encoder.layers) - 2:
                penultimate = x
        last = self.final_layer_norm(x)
        pooled = last[mx.arange(ids.shape[0]), mx.array(eos_positions(ids, self.config.eos_token_id))]
        text_embeds = self.text_projection(pooled) if self.config.projection_dim is not None else None
        return TextEncoderOutput(last, penultimate, pooled, text_embeds)
