"""Architecture numbers for the MLX engine, read from the diffusers / transformers `config.json` files.

Only what the forward passes need is kept; every field keeps the default the reference class uses when a key is
missing, so an old config.json means the same thing here as in diffusers. Pure Python: no mlx import.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

# The samplers sampler.py implements, by the API's scheduler names (named here so the backend can list them without
# importing mlx).
SCHEDULERS = ("euler", "euler_a", "ddim", "dpmpp_2m", "dpmpp_2m_karras")


def read_json(path: str | Path) -> dict:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def _per_block(value, n: int) -> tuple:
    """diffusers accepts a scalar (same for every block) or one value per block."""
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise ValueError(f"expected {n} per-block values, got {list(value)}")
        return tuple(value)
    return (value,) * n


def _is_default(value, default) -> bool:
    if default is False:  # boolean flags may also come as one flag per block
        return not any(value) if isinstance(value, (list, tuple)) else not value
    return value == default


@dataclass(frozen=True)
class UNetConfig:
    in_channels: int = 4
    out_channels: int = 4
    block_out_channels: tuple = (320, 640, 1280, 1280)
    down_block_types: tuple = ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",)
    up_block_types: tuple = ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3
    layers_per_block: tuple = (2, 2, 2, 2)
    transformer_layers: tuple = (1, 1, 1, 1)  # per down block; up blocks use `up_transformer_layers`
    up_transformer_layers: tuple = (1, 1, 1, 1)
    num_heads: tuple = (8, 8, 8, 8)
    cross_attention_dim: int = 768
    norm_num_groups: int = 32
    norm_eps: float = 1e-5
    flip_sin_to_cos: bool = True
    freq_shift: int = 0
    downsample_padding: int = 1
    mid_block_scale_factor: float = 1.0
    has_mid_block: bool = True
    use_linear_projection: bool = False
    # SDXL micro-conditioning ("text_time"): time ids and pooled text embedding added to the time embedding.
    addition_embed_type: str | None = None
    addition_time_embed_dim: int | None = None
    projection_class_embeddings_input_dim: int | None = None
    sample_size: int = 64

    @property
    def time_embed_dim(self) -> int:
        return self.block_out_channels[0] * 4

    @classmethod
    def from_dict(cls, c: dict) -> UNetConfig:
        unsupported = {
            "class_embed_type": None,
            "encoder_hid_dim_type": None,
            "time_cond_proj_dim": None,
            "resnet_time_scale_shift": "default",
            "time_embedding_type": "positional",
            "dual_cross_attention": False,
            "only_cross_attention": False,
            "center_input_sample": False,
            "attention_type": "default",
            "conv_in_kernel": 3,
            "conv_out_kernel": 3,
            "resnet_skip_time_act": False,
            "resnet_out_scale_factor": 1.0,
            "timestep_post_act": None,
            "time_embedding_act_fn": None,
            "cross_attention_norm": None,
        }
        for key, default in unsupported.items():
            if not _is_default(c.get(key, default), default):
                raise ValueError(f"UNet option {key}={c[key]!r} is not supported by the MLX engine")
        addition = c.get("addition_embed_type")
        if addition not in (None, "text_time"):
            raise ValueError(f"UNet addition_embed_type={addition!r} is not supported by the MLX engine")
        mid_type = c.get("mid_block_type", "UNetMidBlock2DCrossAttn")
        if mid_type not in (None, "UNetMidBlock2DCrossAttn"):
            raise ValueError(f"UNet mid_block_type={mid_type!r} is not supported by the MLX engine")

        down = tuple(c.get("down_block_types", cls.down_block_types))
        up = tuple(c.get("up_block_types", cls.up_block_types))
        n = len(down)
        # diffusers' naming quirk: for SD 1.x `attention_head_dim` is really the number of heads.
        heads = c.get("num_attention_heads") or c.get("attention_head_dim", 8)
        tlayers = _per_block(c.get("transformer_layers_per_block", 1), n)
        reverse = c.get("reverse_transformer_layers_per_block")
        up_tlayers = tuple(reverse) if reverse is not None else tuple(reversed(tlayers))
        cross = c.get("cross_attention_dim", 768)
        if isinstance(cross, (list, tuple)):
            if len(set(cross)) != 1:
                raise ValueError("per-block cross_attention_dim is not supported by the MLX engine")
            cross = cross[0]
        return cls(
            in_channels=c.get("in_channels", 4),
            out_channels=c.get("out_channels", 4),
            block_out_channels=tuple(c.get("block_out_channels", cls.block_out_channels)),
            down_block_types=down,
            up_block_types=up,
            layers_per_block=_per_block(c.get("layers_per_block", 2), n),
            transformer_layers=tlayers,
            up_transformer_layers=up_tlayers,
            num_heads=_per_block(heads, n),
            cross_attention_dim=cross,
            norm_num_groups=c.get("norm_num_groups", 32),
            norm_eps=c.get("norm_eps", 1e-5),
            flip_sin_to_cos=c.get("flip_sin_to_cos", True),
            freq_shift=c.get("freq_shift", 0),
            downsample_padding=c.get("downsample_padding", 1),
            mid_block_scale_factor=c.get("mid_block_scale_factor", 1.0),
            has_mid_block=mid_type is not None,
            use_linear_projection=c.get("use_linear_projection", False),
            addition_embed_type=addition,
            addition_time_embed_dim=c.get("addition_time_embed_dim"),
            projection_class_embeddings_input_dim=c.get("projection_class_embeddings_input_dim"),
            sample_size=c.get("sample_size", 64),
        )


@dataclass(frozen=True)
class VAEConfig:
    in_channels: int = 3
    out_channels: int = 3
    latent_channels: int = 4
    block_out_channels: tuple = (128, 256, 512, 512)
    layers_per_block: int = 2
    norm_num_groups: int = 32
    scaling_factor: float = 0.18215
    latents_mean: tuple | None = None
    latents_std: tuple | None = None
    force_upcast: bool = True
    use_quant_conv: bool = True
    use_post_quant_conv: bool = True
    mid_block_add_attention: bool = True

    @property
    def scale_factor(self) -> int:
        """Pixels per latent cell along each side (8 for every real SD model)."""
        return 2 ** (len(self.block_out_channels) - 1)

    @classmethod
    def from_dict(cls, c: dict) -> VAEConfig:
        for key in ("down_block_types", "up_block_types"):
            kinds = set(c.get(key, []))
            if kinds - {"DownEncoderBlock2D", "UpDecoderBlock2D"}:
                raise ValueError(f"VAE {key}={sorted(kinds)} is not supported by the MLX engine")
        mean, std = c.get("latents_mean"), c.get("latents_std")
        return cls(
            in_channels=c.get("in_channels", 3),
            out_channels=c.get("out_channels", 3),
            latent_channels=c.get("latent_channels", 4),
            block_out_channels=tuple(c.get("block_out_channels", cls.block_out_channels)),
            layers_per_block=c.get("layers_per_block", 2),
            norm_num_groups=c.get("norm_num_groups", 32),
            scaling_factor=c.get("scaling_factor", 0.18215),
            latents_mean=tuple(mean) if mean is not None else None,
            latents_std=tuple(std) if std is not None else None,
            force_upcast=c.get("force_upcast", True),
            use_quant_conv=c.get("use_quant_conv", True),
            use_post_quant_conv=c.get("use_post_quant_conv", True),
            mid_block_add_attention=c.get("mid_block_add_attention", True),
        )


@dataclass(frozen=True)
class CLIPTextConfig:
    vocab_size: int = 49408
    hidden_size: int = 768
    intermediate_size: int = 3072
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    max_position_embeddings: int = 77
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5
    eos_token_id: int = 49407
    projection_dim: int | None = None  # set only for CLIPTextModelWithProjection (SDXL encoder 2)

    @classmethod
    def from_dict(cls, c: dict, with_projection: bool = False) -> CLIPTextConfig:
        if "text_config" in c:  # a full CLIPConfig: the text part is what matters
            c = {**c["text_config"], "architectures": c.get("architectures")}
        act = c.get("hidden_act", "quick_gelu")
        if act not in ("quick_gelu", "gelu"):
            raise ValueError(f"CLIP hidden_act={act!r} is not supported by the MLX engine")
        return cls(
            vocab_size=c.get("vocab_size", 49408),
            hidden_size=c.get("hidden_size", 512),
            intermediate_size=c.get("intermediate_size", 2048),
            num_hidden_layers=c.get("num_hidden_layers", 12),
            num_attention_heads=c.get("num_attention_heads", 8),
            max_position_embeddings=c.get("max_position_embeddings", 77),
            hidden_act=act,
            layer_norm_eps=c.get("layer_norm_eps", 1e-5),
            eos_token_id=c.get("eos_token_id", 2),
            projection_dim=c.get("projection_dim", 512) if with_projection else None,
        )


def is_projection_encoder(c: dict) -> bool:
    return "CLIPTextModelWithProjection" in (c.get("architectures") or [])
