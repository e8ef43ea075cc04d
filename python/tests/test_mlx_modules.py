"""MLX modules vs diffusers/transformers on the same weights, float32 on CPU."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest
import torch
from mlx_fixtures import PROMPT, load_mlx_component, nchw, nhwc, rel_err
from pixelai_runner.backends.mlx import weights as W
from pixelai_runner.backends.mlx.clip import CLIPTextModel
from pixelai_runner.backends.mlx.config import (
    CLIPTextConfig,
    UNetConfig,
    VAEConfig,
    is_projection_encoder,
    read_json,
)
from pixelai_runner.backends.mlx.layers import Conv2d
from pixelai_runner.backends.mlx.unet import UNet2DConditionModel
from pixelai_runner.backends.mlx.vae import AutoencoderKL


def _tokenize(folder, texts):
    from transformers import CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(str(folder))
    return tok(texts, padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="np")[
        "input_ids"
    ]


# --- layers -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stride,padding,kernel", [(1, 1, 3), (2, 1, 3), (2, 0, 3), (1, 0, 1)])
def test_conv2d_matches_torch(stride, padding, kernel):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 16, 9, 11)).astype(np.float32)
    w = rng.standard_normal((24, 16, kernel, kernel)).astype(np.float32) * 0.1
    b = rng.standard_normal(24).astype(np.float32)
    ref = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b), stride, padding)
    conv = Conv2d(16, 24, kernel, stride=stride, padding=padding)
    conv.weight = mx.array(W.conv_to_mlx(w))
    conv.bias = mx.array(b)
    assert rel_err(nchw(conv(nhwc(x))), ref.numpy()) < 1e-5


# --- CLIP -------------------------------------------------------------------------------------------------------


def _clip_pair(folder, component):
    import transformers

    raw = read_json(folder / component / "config.json")
    with_projection = is_projection_encoder(raw)
    cls = transformers.CLIPTextModelWithProjection if with_projection else transformers.CLIPTextModel
    reference = cls.from_pretrained(str(folder / component)).eval()
    ours = load_mlx_component(CLIPTextModel(CLIPTextConfig.from_dict(raw, with_projection)), folder, component)
    return reference, ours


def test_clip_sd_text_encoder_hidden_states_and_pooled(tiny_sd):
    reference, ours = _clip_pair(tiny_sd, "text_encoder")
    ids = _tokenize(tiny_sd / "tokenizer", [PROMPT, ""])
    with torch.no_grad():
        ref = reference(torch.from_numpy(ids), output_hidden_states=True)
    out = ours(ids)
    assert np.abs(np.array(out.last_hidden_state) - ref.last_hidden_state.numpy()).max() < 1e-4
    assert np.abs(np.array(out.pooled) - ref.pooler_output.numpy()).max() < 1e-4
    assert np.abs(np.array(out.penultimate_hidden_state) - ref.hidden_states[-2].numpy()).max() < 1e-4


def test_clip_sdxl_penultimate_states_and_projected_pooled(tiny_sdxl):
    ids = _tokenize(tiny_sdxl / "tokenizer", [PROMPT, "blurry"])
    for component in ("text_encoder", "text_encoder_2"):
        reference, ours = _clip_pair(tiny_sdxl, component)
        with torch.no_grad():
            ref = reference(torch.from_numpy(ids), output_hidden_states=True)
        out = ours(ids)
        assert np.abs(np.array(out.penultimate_hidden_state) - ref.hidden_states[-2].numpy()).max() < 1e-4
        if component == "text_encoder_2":
            assert out.text_embeds is not None
            assert np.abs(np.array(out.text_embeds) - ref.text_embeds.numpy()).max() < 1e-4


def test_clip_pooling_rule_follows_eos_token_id():
    from pixelai_runner.backends.mlx.clip import eos_positions

    ids = np.array([[0, 5, 900, 2, 1, 1], [0, 2, 1, 1, 1, 1]])
    # legacy configs (eos_token_id == 2) pool at the largest id, new ones at the first end-of-text token
    assert eos_positions(ids, 2).tolist() == [2, 1]
    assert eos_positions(ids, 1).tolist() == [4, 2]


# --- UNet -------------------------------------------------------------------------------------------------------


def _unet_pair(folder):
    import diffusers

    reference = diffusers.UNet2DConditionModel.from_pretrained(str(folder / "unet")).eval()
    cfg = UNetConfig.from_dict(read_json(folder / "unet" / "config.json"))
    return reference, load_mlx_component(UNet2DConditionModel(cfg), folder, "unet")


@pytest.mark.parametrize("latent_hw", [(8, 8), (5, 7)])  # 5×7: odd sizes exercise upsample-to-skip-size
def test_unet_sd_single_call(tiny_sd, latent_hw):
    reference, ours = _unet_pair(tiny_sd)
    gen = torch.Generator().manual_seed(0)
    sample = torch.randn((2, 4, *latent_hw), generator=gen)
    context = torch.randn((2, 77, reference.config.cross_attention_dim), generator=gen)
    with torch.no_grad():
        ref = reference(sample, torch.tensor(801.0), context).sample.numpy()
    out = nchw(ours(nhwc(sample.numpy()), 801.0, mx.array(context.numpy())))
    assert rel_err(out, ref) <= 1e-4


def test_unet_sdxl_single_call_with_text_time_conditioning(tiny_sdxl):
    reference, ours = _unet_pair(tiny_sdxl)
    gen = torch.Generator().manual_seed(1)
    sample = torch.randn((2, 4, 8, 12), generator=gen)
    context = torch.randn((2, 77, reference.config.cross_attention_dim), generator=gen)
    text_embeds = torch.randn((2, 32), generator=gen)
    time_ids = torch.tensor([[64.0, 96.0, 0.0, 0.0, 64.0, 96.0]] * 2)
    with torch.no_grad():
        ref = reference(
            sample, torch.tensor(499.0), context, added_cond_kwargs={"text_embeds": text_embeds, "time_ids": time_ids}
        ).sample.numpy()
    out = ours(
        nhwc(sample.numpy()),
        499.0,
        mx.array(context.numpy()),
        mx.array(text_embeds.numpy()),
        mx.array(time_ids.numpy()),
    )
    assert rel_err(nchw(out), ref) <= 1e-4


def test_unet_sd15_style_transformer_depth_and_heads():
    """A UNet built from an SD-1.5-shaped config (3 cross-attn down blocks, 1×1-conv projections) with tiny widths."""
    import diffusers

    torch.manual_seed(3)
    config = dict(
        block_out_channels=(16, 32, 32),
        layers_per_block=1,
        norm_num_groups=8,
        cross_attention_dim=24,
        attention_head_dim=4,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        transformer_layers_per_block=(1, 2, 1),
    )
    reference = diffusers.UNet2DConditionModel(**config).eval()
    state = W.torch_state_dict_to_numpy(reference.state_dict().items())
    ours = UNet2DConditionModel(UNetConfig.from_dict(dict(reference.config)))
    ours.load_weights([(k, mx.array(v)) for k, v in W.map_unet(state).items()], strict=True)
    sample, context = torch.randn(1, 4, 8, 8), torch.randn(1, 77, 24)
    with torch.no_grad():
        ref = reference(sample, torch.tensor(10.0), context).sample.numpy()
    assert rel_err(nchw(ours(nhwc(sample.numpy()), 10.0, mx.array(context.numpy()))), ref) <= 1e-4


# --- VAE --------------------------------------------------------------------------------------------------------


def _vae_pair(folder):
    import diffusers

    reference = diffusers.AutoencoderKL.from_pretrained(str(folder / "vae")).eval()
    cfg = VAEConfig.from_dict(read_json(folder / "vae" / "config.json"))
    return reference, load_mlx_component(AutoencoderKL(cfg), folder, "vae")


def test_vae_decode_and_encode(tiny_sd):
    reference, ours = _vae_pair(tiny_sd)
    gen = torch.Generator().manual_seed(2)
    latents = torch.randn((1, 4, 6, 8), generator=gen)
    images = torch.rand((1, 3, 48, 64), generator=gen) * 2 - 1
    with torch.no_grad():
        ref_decoded = reference.decode(latents).sample.numpy()
        ref_mean = reference.encode(images).latent_dist.mean.numpy()
    assert rel_err(nchw(ours.decode(nhwc(latents.numpy()))), ref_decoded) <= 1e-4
    mean, _ = ours.encode(nhwc(images.numpy()))
    assert rel_err(nchw(mean), ref_mean) <= 1e-4


def test_vae_legacy_attention_keys_are_mapped(tiny_sd):
    """Old checkpoints name the mid-block attention query/key/value/proj_attn and may store 1×1 convs."""
    import diffusers

    reference = diffusers.AutoencoderKL.from_pretrained(str(tiny_sd / "vae")).eval()
    legacy = {}
    for key, value in W.torch_state_dict_to_numpy(reference.state_dict().items()).items():
        for new, old in (
            (".to_q.", ".query."),
            (".to_k.", ".key."),
            (".to_v.", ".value."),
            (".to_out.0.", ".proj_attn."),
        ):
            if "attentions" in key and new in key:
                key = key.replace(new, old)
                if value.ndim == 2:
                    value = value[:, :, None, None]
        legacy[key] = value
    assert any(".proj_attn." in k for k in legacy)
    ours = AutoencoderKL(VAEConfig.from_dict(dict(reference.config)))
    ours.load_weights([(k, mx.array(v)) for k, v in W.map_vae(legacy).items()], strict=True)
    latents = torch.randn(1, 4, 4, 4)
    with torch.no_grad():
        ref = reference.decode(latents).sample.numpy()
    assert rel_err(nchw(ours.decode(nhwc(latents.numpy()))), ref) <= 1e-4


def test_weight_mapping_layouts():
    rng = np.random.default_rng(0)
    conv = rng.standard_normal((8, 4, 3, 3)).astype(np.float32)
    proj = rng.standard_normal((8, 8, 1, 1)).astype(np.float32)
    mapped = W.map_unet(
        {
            "conv_in.weight": conv,
            "down_blocks.1.attentions.0.proj_in.weight": proj,
            "down_blocks.1.attentions.0.transformer_blocks.0.ff.net.0.proj.weight": np.zeros((16, 8), np.float32),
            "down_blocks.1.attentions.0.transformer_blocks.0.ff.net.2.bias": np.zeros(8, np.float32),
            "down_blocks.0.downsamplers.0.conv.bias": np.zeros(8, np.float32),
            "up_blocks.0.upsamplers.0.conv.bias": np.zeros(8, np.float32),
            "mid_block.attentions.0.transformer_blocks.0.attn1.to_out.0.bias": np.zeros(8, np.float32),
        }
    )
    assert mapped["conv_in.weight"].shape == (8, 3, 3, 4)
    assert np.array_equal(mapped["conv_in.weight"][:, 1, 2, 3], conv[:, 3, 1, 2])
    assert mapped["down_blocks.1.attentions.0.proj_in.weight"].shape == (8, 8)
    assert set(mapped) >= {
        "down_blocks.1.attentions.0.transformer_blocks.0.ff.proj_in.weight",
        "down_blocks.1.attentions.0.transformer_blocks.0.ff.proj_out.bias",
        "down_blocks.0.downsampler.conv.bias",
        "up_blocks.0.upsampler.conv.bias",
        "mid_block.attentions.0.transformer_blocks.0.attn1.to_out.bias",
    }
    clip = W.map_clip(
        {
            "text_model.embeddings.position_ids": np.arange(77),
            "text_model.final_layer_norm.weight": np.ones(4),
            "text_projection.weight": np.ones((2, 4)),
        }
    )
    assert set(clip) == {"final_layer_norm.weight", "text_projection.weight"}


def test_safetensors_reader_handles_bfloat16(tmp_path):
    from safetensors.torch import save_file

    values = torch.randn(3, 5)
    save_file({"a": values.to(torch.bfloat16), "b": values}, str(tmp_path / "w.safetensors"))
    read = W.read_safetensors(tmp_path / "w.safetensors")
    assert read["a"].dtype == np.float32 and np.array_equal(read["a"], values.to(torch.bfloat16).float().numpy())
    assert np.array_equal(read["b"], values.numpy())
