#!/usr/bin/env python3
"""Build tiny, seeded LoRAs for the tiny offline models (scripts/make_tiny_model.py), fully offline.

Real LoRAs cannot be downloaded on the build machines, yet the LoRA path (loading, strength, unloading, the "does this
LoRA fit this model" check) needs files in the formats people actually use:

    loras/tiny-sd-lora.safetensors        diffusers/peft keys for tiny-sd   (unet.<module>.lora_A/lora_B.weight)
    loras/tiny-sd-lora-kohya.safetensors  kohya keys for tiny-sd            (lora_unet_<module_with_>.lora_down/
                                                                             lora_up.weight + .alpha)
    loras/tiny-sdxl-lora.safetensors      diffusers/peft keys for tiny-sdxl

Each LoRA has rank 4 on attn1/attn2 to_q/to_k/to_v/to_out.0 of every UNet transformer block; the module list and
shapes are read from the model's UNet safetensors header, so the LoRAs follow the models if their architecture
changes. The two tiny-sd files hold the same numbers (kohya alpha = rank, i.e. scale 1), so both formats must produce
the same image. Weights are big on purpose: strength 1 has to change a 64x64, 4-step image visibly.

Determinism: weights come from numpy's PCG64 raw 64-bit stream (whose output is fixed across numpy versions, unlike
its distributions), seeded per module, and the safetensors file is serialised here with a sorted JSON header, so every
run writes byte-identical files. No torch needed.

    python scripts/make_tiny_lora.py [--models models] [--out loras] [--force]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import struct
import sys
import tempfile
import zlib
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "python"))
from pixelai_runner.model_files import architecture_of, cross_attention_dim  # noqa: E402

# Bump when anything below changes what gets written; files with an older value are rebuilt.
BUILD_VERSION = 1
RANK = 4
# Uniform in [-SCALE, SCALE): with rank 4 the product B·A has entries of about 0.2, a few times the tiny UNet's own
# attention weights (≈ 1/sqrt(64)), so the change is plain to see at strength 1 and still finite in float16.
SCALE_A = 0.6
SCALE_B = 0.6
MODEL_MARKER = "pixelai-tiny-model.json"  # written by make_tiny_model.py

# name -> (model folder, key format, base seed)
LORAS = {
    "tiny-sd-lora": ("tiny-sd", "diffusers", 100),
    "tiny-sd-lora-kohya": ("tiny-sd", "kohya", 100),  # same seed as tiny-sd-lora: same weights, other format
    "tiny-sdxl-lora": ("tiny-sdxl", "diffusers", 200),
}

_TARGET = re.compile(r"^(.*\.attn[12]\.(?:to_q|to_k|to_v|to_out\.0))\.weight$")


def read_safetensors_header(path: Path) -> dict:
    """The JSON header of a safetensors file (tensor name -> dtype/shape/offsets, plus __metadata__)."""
    with open(path, "rb") as fh:
        (size,) = struct.unpack("<Q", fh.read(8))
        return json.loads(fh.read(size))


def write_safetensors(path: Path, tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> None:
    """Serialise float32 tensors in name order with a sorted header; write to a temp file, then rename (atomic)."""
    header: dict = {"__metadata__": dict(sorted(metadata.items()))}
    chunks, offset = [], 0
    for name in sorted(tensors):
        data = np.ascontiguousarray(tensors[name], dtype="<f4").tobytes()
        header[name] = {
            "dtype": "F32",
            "shape": list(tensors[name].shape),
            "data_offsets": [offset, offset + len(data)],
        }
        chunks.append(data)
        offset += len(data)
    raw = json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)  # the format pads the header with spaces so tensor data starts 8-byte aligned
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(struct.pack("<Q", len(raw)))
            fh.write(raw)
            for chunk in chunks:
                fh.write(chunk)
        os.chmod(tmp, 0o644)  # shared read-only data, like the models
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _uniform(seed: int, module: str, part: str, shape: tuple[int, int], scale: float) -> np.ndarray:
    """Uniform [-scale, scale) from PCG64's raw stream.

    Keyed by module and part, so the order of modules is irrelevant.
    """
    key = zlib.crc32(f"{module}/{part}".encode())
    raw = np.random.PCG64([seed, key]).random_raw(shape[0] * shape[1])
    unit = (raw >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))  # 53 random bits -> [0, 1)
    return ((unit * 2.0 - 1.0) * scale).astype(np.float32).reshape(shape)


def target_modules(model_dir: Path) -> dict[str, tuple[int, int]]:
    """UNet attention projections -> (out_features, in_features), from the UNet weights' header."""
    header = read_safetensors_header(model_dir / "unet" / "diffusion_pytorch_model.safetensors")
    found = {}
    for key, info in header.items():
        match = _TARGET.match(key)
        if match:
            out_features, in_features = info["shape"]
            found[match.group(1)] = (out_features, in_features)
    if not found:
        raise ValueError(f"{model_dir}: no attn1/attn2 projections in the UNet weights")
    return dict(sorted(found.items()))


def lora_tensors(model_dir: Path, key_format: str, seed: int) -> dict[str, np.ndarray]:
    tensors: dict[str, np.ndarray] = {}
    for module, (out_features, in_features) in target_modules(model_dir).items():
        down = _uniform(seed, module, "down", (RANK, in_features), SCALE_A)
        up = _uniform(seed, module, "up", (out_features, RANK), SCALE_B)
        if key_format == "diffusers":
            tensors[f"unet.{module}.lora_A.weight"] = down
            tensors[f"unet.{module}.lora_B.weight"] = up
        else:
            # kohya flattens the module path with "_"; alpha = rank makes its scale alpha/rank exactly 1.
            prefix = "lora_unet_" + module.replace(".", "_")
            tensors[f"{prefix}.lora_down.weight"] = down
            tensors[f"{prefix}.lora_up.weight"] = up
            tensors[f"{prefix}.alpha"] = np.array(float(RANK), dtype=np.float32)
    return tensors


def _model_build(model_dir: Path) -> str:
    try:
        return str(json.loads((model_dir / MODEL_MARKER).read_text()).get("buildVersion", "?"))
    except (OSError, ValueError):
        return "?"


def _metadata(model_dir: Path) -> dict[str, str]:
    return {
        "format": "pt",
        "pixelai.base_architecture": architecture_of(model_dir),
        "pixelai.cross_attention_dim": str(cross_attention_dim(model_dir)),
        "pixelai.base_model": model_dir.name,
        "pixelai.model_build": _model_build(model_dir),
        "pixelai.rank": str(RANK),
        "pixelai.lora_build": str(BUILD_VERSION),
        "pixelai.built_by": "scripts/make_tiny_lora.py",
    }


def _is_current(path: Path, metadata: dict[str, str]) -> bool:
    try:
        return read_safetensors_header(path).get("__metadata__") == metadata
    except (OSError, ValueError, struct.error):
        return False


def build_tiny_loras(
    models_dir: str | os.PathLike = "models", out_dir: str | os.PathLike = "loras", force: bool = False
) -> dict[str, Path]:
    """Build (or reuse) the tiny LoRAs under `out_dir` from the tiny models in `models_dir`; returns {name: file}."""
    models = Path(models_dir).resolve()
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    built: dict[str, Path] = {}
    for name, (model, key_format, seed) in LORAS.items():
        model_dir = models / model
        if not (model_dir / "model_index.json").is_file():
            raise FileNotFoundError(f"{model_dir} is missing: run scripts/make_tiny_model.py first")
        target = out / f"{name}.safetensors"
        metadata = _metadata(model_dir)
        # Same metadata means same build version, model and architecture, hence the same bytes: nothing to do.
        if force or not _is_current(target, metadata):
            write_safetensors(target, lora_tensors(model_dir, key_format, seed), metadata)
        built[name] = target
    return built


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="models", help="folder holding tiny-sd/ and tiny-sdxl/ (default: models)")
    parser.add_argument("--out", default="loras", help="folder that receives the .safetensors files (default: loras)")
    parser.add_argument("--force", action="store_true", help="rewrite even if up-to-date files exist")
    args = parser.parse_args(argv)
    for name, path in build_tiny_loras(args.models, args.out, force=args.force).items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
