"""What a LoRA file is, from its safetensors header alone: `python -m pixelai_runner.lora_info FILE.safetensors`.

Prints one JSON line: {"format", "rank", "crossAttentionDim", "architecture", "keys"}. Only the header is read (8-byte
little-endian length, then that many bytes of JSON); no tensor data, no torch, so it is instant even on a 2 GB file.
Exit status 1 with a message on stderr when the file is not a readable safetensors LoRA.

The rules (the TypeScript side reads the same header and must apply the same ones before it queues a job):

- format: "kohya" when any key starts with `lora_unet_` / `lora_te` or holds `.lora_down.` / `.lora_up.`;
  "diffusers" when any key holds `.lora_A.` / `.lora_B.` (peft) or `.lora.down.` / `.lora.up.` (older diffusers);
  anything else is not a LoRA.
- rank: the first dimension of a down / A weight (the first in sorted key order).
- crossAttentionDim: the second (input) dimension of the UNet's attn2 to_k down / A weight, i.e. the width of the text
  embeddings the LoRA was trained against (SD 1.x 768, SD 2.x 1024, SDXL 2048; the tiny test models 32 and 64);
  null when the LoRA does not touch attn2.to_k.
- architecture: "sdxl" when crossAttentionDim is 2048, or there are second-text-encoder keys (`lora_te2_`,
  `text_encoder_2.`), or the metadata says `pixelai.base_architecture: sdxl`; otherwise "sd".
- keys: the number of tensors.

A LoRA fits a model when its crossAttentionDim is null or equals the model UNet's `cross_attention_dim`
(unet/config.json), and its architecture equals the model's (StableDiffusionXLPipeline → "sdxl", else "sd").
Loading one that does not fit fails in the runner with INVALID_REQUEST ("does not fit"); checking first saves a queue
slot and a model load.
"""

from __future__ import annotations

import json
import struct
import sys
from typing import Any

# safetensors itself refuses headers above 100 MB; a larger length means this is not a safetensors file.
MAX_HEADER_BYTES = 100 * 1024 * 1024


class NotALora(ValueError):
    pass


def read_header(path: str) -> dict:
    with open(path, "rb") as fh:
        prefix = fh.read(8)
        if len(prefix) != 8:
            raise NotALora(f"{path}: too short for a safetensors file")
        (size,) = struct.unpack("<Q", prefix)
        if size == 0 or size > MAX_HEADER_BYTES:
            raise NotALora(f"{path}: header length {size} is not plausible for safetensors")
        raw = fh.read(size)
    if len(raw) != size:
        raise NotALora(f"{path}: truncated safetensors header")
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise NotALora(f"{path}: header is not JSON ({exc})") from None
    if not isinstance(header, dict):
        raise NotALora(f"{path}: header is not a JSON object")
    return header


def _is_down(key: str) -> bool:
    return any(part in key for part in (".lora_down.", ".lora_A.", ".lora.down."))


def describe(header: dict) -> dict[str, Any]:
    metadata = header.get("__metadata__") or {}
    tensors = {k: v for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)}
    keys = sorted(tensors)
    if any(k.startswith(("lora_unet_", "lora_te")) or ".lora_down." in k or ".lora_up." in k for k in keys):
        fmt = "kohya"
    elif any(part in k for k in keys for part in (".lora_A.", ".lora_B.", ".lora.down.", ".lora.up.")):
        fmt = "diffusers"
    else:
        raise NotALora("no LoRA keys (lora_A/lora_B or lora_down/lora_up) in this file")

    downs = [k for k in keys if _is_down(k) and len(tensors[k].get("shape", [])) >= 2]
    rank: int | None = int(tensors[downs[0]]["shape"][0]) if downs else None

    cross_dim: int | None = None
    for key in downs:
        # kohya flattens module paths with "_" (…_attn2_to_k.lora_down…); diffusers keeps dots (…attn2.to_k.lora_A…).
        if "attn2_to_k." in key or "attn2.to_k." in key:
            cross_dim = int(tensors[key]["shape"][1])
            break

    second_encoder = any(k.startswith(("lora_te2_", "text_encoder_2.")) for k in keys)
    sdxl = cross_dim == 2048 or second_encoder or str(metadata.get("pixelai.base_architecture", "")).lower() == "sdxl"
    return {
        "format": fmt,
        "rank": rank,
        "crossAttentionDim": cross_dim,
        "architecture": "sdxl" if sdxl else "sd",
        "keys": len(keys),
    }


def fits(info: dict[str, Any], cross_attention_dim: int | None, architecture: str) -> bool:
    """The rule above: may a LoRA described by `info` be loaded into a model with this UNet cross_attention_dim and
    architecture ("sd" | "sdxl")?"""
    if info["architecture"] != architecture:
        return False
    return (
        info["crossAttentionDim"] is None
        or cross_attention_dim is None
        or info["crossAttentionDim"] == cross_attention_dim
    )


def lora_info(path: str) -> dict[str, Any]:
    return describe(read_header(path))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0] in ("-h", "--help"):
        print("usage: python -m pixelai_runner.lora_info FILE.safetensors", file=sys.stderr)
        return 2
    try:
        info = lora_info(args[0])
    except (OSError, NotALora) as exc:
        print(f"lora_info: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(info, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
