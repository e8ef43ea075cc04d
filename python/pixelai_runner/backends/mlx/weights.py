"""Every key rename and layout change between diffusers/transformers checkpoints and the MLX modules, in one place.

Pure numpy (no torch, no mlx), so the converter and the parity tests share it.

Layout changes
  * convolutions: PyTorch OIHW → MLX OHWI (MLX convolves channels-last images);
  * SD 1.x spatial-transformer proj_in/proj_out are 1×1 convs (use_linear_projection=false): squeezed to (out, in)
    linears — on channels-last data a 1×1 conv is exactly a linear over channels;
  * legacy VAE attention stored as 1×1 convs: squeezed to linears too.
Renames (diffusers → MLX module attribute)
  * `downsamplers.0.` → `downsampler.`, `upsamplers.0.` → `upsampler.`, `to_out.0.` → `to_out.`
  * GEGLU feed-forward `ff.net.0.proj.` → `ff.proj_in.`, `ff.net.2.` → `ff.proj_out.` (the GEGLU projection stays one
    matrix; the module splits its output into value and gate halves);
  * legacy VAE attention `query/key/value/proj_attn` → `to_q/to_k/to_v/to_out`;
  * transformers' CLIP `text_model.` prefix dropped, the `position_ids` buffer dropped.
The same table read backwards (diffusers_keys), plus the original SD block names of a UNet (sgm_unet_key), tells the
MLX LoRA loader (lora.py) which converted weight a LoRA tensor adapts.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

COMPONENT_KINDS = ("unet", "vae", "text_encoder", "text_encoder_2")

# (diffusers fragment, MLX fragment). The converter renames left → right; a LoRA names the modules it adapts the
# diffusers way, so the LoRA loader (lora.py) finds them by renaming a model's MLX keys right → left (diffusers_keys).
_COMMON_RENAMES = [(".downsamplers.0.", ".downsampler."), (".upsamplers.0.", ".upsampler."), (".to_out.0.", ".to_out.")]
_UNET_RENAMES = [(".ff.net.0.proj.", ".ff.proj_in."), (".ff.net.2.", ".ff.proj_out.")]
_VAE_LEGACY_ATTENTION = [
    (re.compile(r"(attentions\.\d+)\.query\."), r"\1.to_q."),
    (re.compile(r"(attentions\.\d+)\.key\."), r"\1.to_k."),
    (re.compile(r"(attentions\.\d+)\.value\."), r"\1.to_v."),
    (re.compile(r"(attentions\.\d+)\.proj_attn\."), r"\1.to_out."),
]
# Linear layers that some checkpoints store as 1×1 convolutions.
_UNET_LINEAR_AS_CONV = re.compile(r"attentions\.\d+\.proj_(in|out)\.weight$")
_VAE_LINEAR_AS_CONV = re.compile(r"attentions\.\d+\.to_(q|k|v|out)\.weight$")


def _rename(key: str, pairs) -> str:
    for diffusers_part, mlx_part in pairs:
        key = key.replace(diffusers_part, mlx_part)
    return key


def _rename_back(key: str, pairs) -> str:
    for diffusers_part, mlx_part in reversed(pairs):
        key = key.replace(mlx_part, diffusers_part)
    return key


def _rename_vae_legacy(key: str) -> str:
    for pattern, replacement in _VAE_LEGACY_ATTENTION:
        key = pattern.sub(replacement, key)
    return key


def conv_to_mlx(weight: np.ndarray) -> np.ndarray:
    """OIHW → OHWI."""
    return np.ascontiguousarray(weight.transpose(0, 2, 3, 1))


def pointwise_conv_to_linear(weight: np.ndarray) -> np.ndarray:
    """(out, in, 1, 1) → (out, in); linears pass through."""
    return weight.reshape(weight.shape[0], weight.shape[1]) if weight.ndim == 4 else weight


def map_unet(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = {}
    for key, value in tensors.items():
        new_key = _rename(key, _COMMON_RENAMES + _UNET_RENAMES)
        if _UNET_LINEAR_AS_CONV.search(new_key):
            value = pointwise_conv_to_linear(value)
        elif value.ndim == 4:
            value = conv_to_mlx(value)
        out[new_key] = value
    return out


def map_vae(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = {}
    for key, value in tensors.items():
        new_key = _rename(_rename_vae_legacy(key), _COMMON_RENAMES)
        if _VAE_LINEAR_AS_CONV.search(new_key):
            value = pointwise_conv_to_linear(value)
        elif value.ndim == 4:
            value = conv_to_mlx(value)
        out[new_key] = value
    return out


_CLIP_PREFIX = "text_model."
_CLIP_TOP_LEVEL = ("text_projection.",)  # CLIPTextModelWithProjection's projection sits beside text_model


def map_clip(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = {}
    for key, value in tensors.items():
        new_key = key[len(_CLIP_PREFIX) :] if key.startswith(_CLIP_PREFIX) else key
        if new_key.endswith("position_ids"):
            continue  # a buffer of 0..76, recomputed at run time
        out[new_key] = value
    return out


def diffusers_keys(component: str, mlx_key: str) -> list[str]:
    """The diffusers/transformers names of a converted UNet or text-encoder weight (the inverse of the renames above),
    canonical spelling first. Text encoders have two: with the `text_model.` level (transformers 4 and the LoRA files
    made with it) and without (transformers 5 checkpoints).

    The VAE is left out: no LoRA adapts it, and its legacy attention names have two diffusers spellings."""
    if component == "unet":
        return [_rename_back(mlx_key, _COMMON_RENAMES + _UNET_RENAMES)]
    if component in ("text_encoder", "text_encoder_2"):
        return [mlx_key] if mlx_key.startswith(_CLIP_TOP_LEVEL) else [_CLIP_PREFIX + mlx_key, mlx_key]
    raise ValueError(f"no LoRA key mapping for component {component!r}")


_SGM_TOP_LEVEL = {
    "conv_in": "input_blocks.0.0",
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "add_embedding.linear_1": "label_emb.0.0",
    "add_embedding.linear_2": "label_emb.0.2",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
    "mid_block.resnets.0": "middle_block.0",
    "mid_block.attentions.0": "middle_block.1",
    "mid_block.resnets.1": "middle_block.2",
}
_DIFFUSERS_BLOCK = re.compile(r"^(down|up)_blocks\.(\d+)\.(resnets|attentions|downsamplers|upsamplers)\.(\d+)(\..*|)$")


def sgm_unet_key(name: str, layers_per_block: int, up_blocks_with_attention: set[int]) -> str | None:
    """The original Stable Diffusion (SGM/LDM) spelling of a diffusers UNet module or weight name, as kohya's SDXL
    trainer writes LoRA keys: the block structure only (input_blocks.N.M / middle_block.N / output_blocks.N.M); names
    inside a block stay diffusers' (transformer_blocks…, proj_in), as diffusers' own SGM LoRA reader expects.
    None when the name has no such spelling."""
    for diffusers_name, sgm_name in _SGM_TOP_LEVEL.items():
        if name == diffusers_name or name.startswith(diffusers_name + "."):
            return sgm_name + name[len(diffusers_name) :]
    match = _DIFFUSERS_BLOCK.match(name)
    if not match:
        return None
    direction, block, kind, index, rest = (
        match.group(1),
        int(match.group(2)),
        match.group(3),
        int(match.group(4)),
        match.group(5),
    )
    per_block = layers_per_block + 1  # resnet(+attention) layers, then the down/upsampler, per SGM block
    if direction == "down":
        if kind == "downsamplers":  # SGM names the downsampling conv `op`
            return f"input_blocks.{1 + block * per_block + layers_per_block}.0.op" + rest.removeprefix(".conv")
        return f"input_blocks.{1 + block * per_block + index}.{0 if kind == 'resnets' else 1}{rest}"
    if kind == "upsamplers":
        position = 2 if block in up_blocks_with_attention else 1
        return f"output_blocks.{block * per_block + layers_per_block}.{position}{rest}"
    return f"output_blocks.{block * per_block + index}.{0 if kind == 'resnets' else 1}{rest}"


MAPPERS: dict[str, Callable[[dict], dict]] = {
    "unet": map_unet,
    "vae": map_vae,
    "text_encoder": map_clip,
    "text_encoder_2": map_clip,
}


# --- reading diffusers / transformers safetensors without torch -------------------------------------------------

_ST_DTYPES = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U8": np.uint8,
    "BOOL": np.bool_,
}


def read_safetensors(path: str | Path) -> dict[str, np.ndarray]:
    """Read a .safetensors file into numpy arrays, including bfloat16 (widened to float32, exactly).

    The format is an 8-byte little-endian header length, a JSON header {name: {dtype, shape, data_offsets}}, then the
    raw little-endian tensor bytes. Parsing it here avoids torch and handles BF16, which numpy cannot represent.
    """
    data = np.memmap(path, dtype=np.uint8, mode="r")
    (header_len,) = struct.unpack("<Q", bytes(data[:8]))
    header = json.loads(bytes(data[8 : 8 + header_len]).decode("utf-8"))
    base = 8 + header_len
    tensors: dict[str, np.ndarray] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        raw = data[base + start : base + end]
        shape = tuple(info["shape"])
        if info["dtype"] == "BF16":
            bits = np.frombuffer(raw.tobytes(), dtype="<u2").astype(np.uint32) << 16
            tensors[name] = bits.view(np.float32).reshape(shape)
        elif info["dtype"] in _ST_DTYPES:
            tensors[name] = np.frombuffer(
                raw.tobytes(), dtype=np.dtype(_ST_DTYPES[info["dtype"]]).newbyteorder("<")
            ).reshape(shape)
        else:
            raise ValueError(f"{path}: tensor {name} has unsupported dtype {info['dtype']}")
    del data
    return tensors


_WEIGHT_NAMES = {
    "unet": "diffusion_pytorch_model",
    "vae": "diffusion_pytorch_model",
    "text_encoder": "model",
    "text_encoder_2": "model",
}


def component_weight_files(folder: Path, component: str) -> list[Path]:
    """The safetensors file(s) holding a component's weights: plain, fp16 variant, or sharded with an index."""
    stem = _WEIGHT_NAMES[component]
    for variant in ("", ".fp16"):
        single = folder / f"{stem}{variant}.safetensors"
        if single.is_file():
            return [single]
        index = folder / f"{stem}.safetensors.index{variant}.json"
        if not index.is_file():
            index = folder / f"{stem}{variant}.safetensors.index.json"
        if index.is_file():
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            return [folder / shard for shard in shards]
    pickled = sorted(p.name for p in folder.glob("*.bin"))
    hint = (
        f" (found {', '.join(pickled)}: pickled PyTorch weights are not read; save the model with safetensors)"
        if pickled
        else ""
    )
    raise FileNotFoundError(f"no safetensors weights for {component} in {folder}{hint}")


def load_component(folder: Path, component: str) -> dict[str, np.ndarray]:
    """Read a component's checkpoint (all shards) and map it to MLX names and layouts."""
    tensors: dict[str, np.ndarray] = {}
    for path in component_weight_files(folder, component):
        tensors.update(read_safetensors(path))
    return MAPPERS[component](tensors)


def cast_floats(tensors: dict[str, np.ndarray], dtype) -> dict[str, np.ndarray]:
    return {k: (v.astype(dtype) if np.issubdtype(v.dtype, np.floating) else v) for k, v in tensors.items()}


def torch_state_dict_to_numpy(items: Iterable) -> dict[str, np.ndarray]:
    """For tests: (name, torch tensor) pairs → float32 numpy, without importing torch here."""
    return {name: tensor.detach().float().cpu().numpy() for name, tensor in items}
