#!/usr/bin/env python3
"""Build the repositories the local stand-in hub (test/support/fake-hub.py) serves, fully offline.

Each repository is a plain folder `<out>/<owner>/<name>/` holding the files as the hub would list them. The real ids
are used so tests exercise exactly what users type:

    stabilityai/stable-diffusion-xl-base-1.0   the tiny SDXL pipeline (scripts/make_tiny_model.py) in the real
                                               repository's layout: per-component fp32 and `.fp16` safetensors, plus
                                               what an install must NOT fetch: a pickle `.bin` beside the UNet, a
                                               root-level single-file checkpoint, README and .gitattributes
    nerijs/pixel-art-xl                        a tiny SDXL LoRA (scripts/make_tiny_lora.py) under the real file name
                                               `pixel-art-xl.safetensors`
    pixelai-test/pickle-only-lora              a LoRA published only as pickle (`pytorch_lora_weights.bin`)
    pixelai-test/pickle-only-sd                a diffusers pipeline whose UNet exists only as pickle

Deterministic: the same bytes on every build. A marker records the build version; an up-to-date build is reused.

    python test/support/fake-hub-repos.py [--out build/fake-hub]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

REPO_ROOT = Path(__file__).resolve().parents[2]
# Bump when anything below changes what gets written; an older build is replaced.
BUILD_VERSION = 1
MARKER = "fake-hub-repos.json"

SDXL_REPO = "stabilityai/stable-diffusion-xl-base-1.0"
LORA_REPO = "nerijs/pixel-art-xl"
PICKLE_LORA_REPO = "pixelai-test/pickle-only-lora"
PICKLE_SD_REPO = "pixelai-test/pickle-only-sd"
REPOS = (SDXL_REPO, LORA_REPO, PICKLE_LORA_REPO, PICKLE_SD_REPO)

# The bytes a pickle checkpoint starts with (protocol 2 opcode); nothing ever unpickles these files.
_PICKLE_BYTES = b"\x80\x02}q\x00X\x0b\x00\x00\x00not-a-modelq\x01K\x00s." + bytes(range(256)) * 16
_GITATTRIBUTES = "*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.bin filter=lfs diff=lfs merge=lfs -text\n"


def _load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _tiny_sources(scratch: Path) -> tuple[Path, Path]:
    """(tiny-sdxl folder, tiny-sdxl LoRA file): the repo's models/ when current, else a build in `scratch`."""
    models_script = _load_script("make_tiny_model")
    shared = REPO_ROOT / "models"
    if all(models_script._is_current(shared / n) for n in models_script.MODEL_NAMES):
        models = shared
    else:
        models = models_script.build_tiny_models(scratch / "models")["tiny-sdxl"].parent
    loras = _load_script("make_tiny_lora").build_tiny_loras(models, scratch / "loras")
    return models / "tiny-sdxl", loras["tiny-sdxl-lora"]


def _fp16_copy(src: Path, dst: Path) -> None:
    """The `.fp16` variant diffusers publishes next to fp32 weights: same tensors, half precision."""
    tensors = {k: v.astype(np.float16) if v.dtype == np.float32 else v for k, v in load_file(str(src)).items()}
    save_file(tensors, str(dst), metadata={"format": "pt"})


def _build_sdxl(tiny_sdxl: Path, repo: Path) -> None:
    shutil.copytree(tiny_sdxl, repo, ignore=shutil.ignore_patterns("pixelai-tiny-model.json"))
    for weights in sorted(repo.glob("*/*.safetensors")):
        stem = weights.name[: -len(".safetensors")]
        _fp16_copy(weights, weights.with_name(f"{stem}.fp16.safetensors"))
    (repo / "unet" / "diffusion_pytorch_model.bin").write_bytes(_PICKLE_BYTES)
    # The real repository also ships the whole pipeline as one file; a diffusers install never needs it.
    shutil.copyfile(repo / "unet" / "diffusion_pytorch_model.fp16.safetensors", repo / "sd_xl_base_1.0.safetensors")
    (repo / "README.md").write_text("# stable-diffusion-xl-base-1.0 (tiny stand-in for tests)\n")
    (repo / ".gitattributes").write_text(_GITATTRIBUTES)


def _build_lora(lora_file: Path, repo: Path) -> None:
    repo.mkdir(parents=True)
    shutil.copyfile(lora_file, repo / "pixel-art-xl.safetensors")
    (repo / "README.md").write_text("# pixel-art-xl (tiny stand-in for tests)\n")
    (repo / ".gitattributes").write_text(_GITATTRIBUTES)


def _build_pickle_lora(repo: Path) -> None:
    repo.mkdir(parents=True)
    (repo / "pytorch_lora_weights.bin").write_bytes(_PICKLE_BYTES)
    (repo / "README.md").write_text("# a LoRA published only as pickle\n")


def _build_pickle_sd(tiny_sdxl: Path, repo: Path) -> None:
    repo.mkdir(parents=True)
    shutil.copyfile(tiny_sdxl / "model_index.json", repo / "model_index.json")
    for sub in ("scheduler", "tokenizer", "tokenizer_2"):
        shutil.copytree(tiny_sdxl / sub, repo / sub)
    for sub in ("unet", "vae", "text_encoder", "text_encoder_2"):
        (repo / sub).mkdir()
        shutil.copyfile(tiny_sdxl / sub / "config.json", repo / sub / "config.json")
    for weights in sorted(tiny_sdxl.glob("*/*.safetensors")):
        if weights.parent.name == "unet":
            (repo / "unet" / "diffusion_pytorch_model.bin").write_bytes(_PICKLE_BYTES)
        else:
            shutil.copyfile(weights, repo / weights.parent.name / weights.name)


def _is_current(out: Path) -> bool:
    try:
        return json.loads((out / MARKER).read_text()).get("buildVersion") == BUILD_VERSION
    except (OSError, ValueError):
        return False


def build_repos(out_dir: str | os.PathLike = REPO_ROOT / "build" / "fake-hub") -> Path:
    """Build (or reuse) every repository under `out_dir`; returns the folder to serve."""
    out = Path(out_dir).resolve()
    if _is_current(out):
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        tiny_sdxl, lora = _tiny_sources(staging / "scratch")
        root = staging / "repos"
        _build_sdxl(tiny_sdxl, root / SDXL_REPO)
        _build_lora(lora, root / LORA_REPO)
        _build_pickle_lora(root / PICKLE_LORA_REPO)
        _build_pickle_sd(tiny_sdxl, root / PICKLE_SD_REPO)
        for path in root.rglob("*"):
            path.chmod(0o755 if path.is_dir() else 0o644)
        (root / MARKER).write_text(json.dumps({"buildVersion": BUILD_VERSION, "repos": list(REPOS)}, indent=2) + "\n")
        # Swap in atomically; a concurrent builder that won the race leaves its (identical) build in place.
        if out.exists() and not _is_current(out):
            shutil.rmtree(out, ignore_errors=True)
        try:
            os.replace(root, out)
        except OSError:
            if not _is_current(out):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(REPO_ROOT / "build" / "fake-hub"), help="folder to build into")
    args = parser.parse_args(argv)
    print(build_repos(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
