#!/usr/bin/env python3
"""Build tiny, randomly initialised SD 1.x and SDXL diffusers pipelines, fully offline.

No weights can be downloaded on the build machines, yet tests, the demo and the MLX converter need real diffusers
folders. These pipelines have the *architecture* of the real ones at toy sizes (the sizes diffusers' own tests use),
seeded so every run writes byte-identical files.

One deliberate difference from diffusers' test VAE: ours has four blocks instead of two so that the VAE scale factor is
8 like every real SD model;
the runner protocol draws initial latents of shape (1, 4, H/8, W/8) and both engines rely on it.

    python scripts/make_tiny_model.py [--out models] [--force]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from collections import Counter
from pathlib import Path

# Bump when anything below changes what gets written; existing folders with an older marker are rebuilt.
BUILD_VERSION = 1
MARKER_NAME = "pixelai-tiny-model.json"

MODEL_NAMES = ("tiny-sd", "tiny-sdxl")

VOCAB_SIZE = 1000
BOS_ID, PAD_ID, EOS_ID = 0, 1, 2
BOS_TOKEN, PAD_TOKEN, EOS_TOKEN = "<|startoftext|>", "<|pad|>", "<|endoftext|>"
MAX_LENGTH = 77

# A small word list the home-made BPE learns its merges from: pixel-art prompts are what the tiny models will see.
_BPE_CORPUS = """
a pixel art sprite of a knight with a sword and shield standing on grass
cute cat dragon wizard castle forest tree house potion sword shield chest coin
red green blue yellow orange purple black white gray brown pink gold silver
16 bit 8 bit retro game character portrait isometric tile background transparent
the an of in on at with and or for from to by small large tiny big hero enemy monster slime
warrior mage rogue archer robot spaceship planet star moon sun cloud water fire ice stone
""".split()

_NUM_MERGES = 240


def _bytes_to_unicode() -> dict[int, str]:
    """The byte -> printable character table byte-level BPE (GPT-2/CLIP) is built on.

    Printable latin-1 bytes map to themselves; the rest are shifted past 255 so every byte has a visible, unique char.
    """
    keep = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    )
    table: dict[int, str] = {}
    shifted = 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + shifted)
            shifted += 1
    return table


def _train_merges(words: list[str], num_merges: int) -> list[tuple[str, str]]:
    """Classic BPE training on `words` (CLIP style: the last symbol of a word carries `</w>`); ties break lexically."""
    byte_char = _bytes_to_unicode()
    freqs = Counter(words)
    splits: dict[str, list[str]] = {}
    for word in freqs:
        chars = [byte_char[b] for b in word.encode("utf-8")]
        chars[-1] = chars[-1] + "</w>"
        splits[word] = chars
    merges: list[tuple[str, str]] = []
    for _ in range(num_merges):
        pairs: Counter = Counter()
        for word, symbols in splits.items():
            for left, right in zip(symbols, symbols[1:], strict=False):
                pairs[(left, right)] += freqs[word]
        if not pairs:
            break
        best = min(pairs, key=lambda pair: (-pairs[pair], pair))
        merges.append(best)
        for word, symbols in splits.items():
            merged: list[str] = []
            i = 0
            while i < len(symbols):
                if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                    merged.append(symbols[i] + symbols[i + 1])
                    i += 2
                else:
                    merged.append(symbols[i])
                    i += 1
            splits[word] = merged
    return merges


def build_tokenizer_files() -> tuple[dict[str, int], list[str]]:
    """vocab (token -> id) and merges lines; ids 0/1/2 are bos/pad/eos to match the text encoders' config."""
    vocab: dict[str, int] = {BOS_TOKEN: BOS_ID, PAD_TOKEN: PAD_ID, EOS_TOKEN: EOS_ID}
    for char in _bytes_to_unicode().values():
        vocab[char] = len(vocab)
    for char in _bytes_to_unicode().values():
        vocab[char + "</w>"] = len(vocab)
    merges = _train_merges(_BPE_CORPUS, _NUM_MERGES)
    for left, right in merges:
        token = left + right
        if token not in vocab:
            vocab[token] = len(vocab)
    if len(vocab) > VOCAB_SIZE:
        raise AssertionError(f"tokenizer vocab {len(vocab)} exceeds the text encoder's {VOCAB_SIZE}")
    return vocab, [f"{left} {right}" for left, right in merges]


def _make_tokenizer(workdir: Path):
    from transformers import CLIPTokenizer

    vocab, merges = build_tokenizer_files()
    src = workdir / "tokenizer-src"
    src.mkdir(parents=True, exist_ok=True)
    (src / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False, sort_keys=True), encoding="utf-8")
    (src / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    tokenizer = CLIPTokenizer(
        vocab=vocab,
        merges=[tuple(m.split(" ")) for m in merges],
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        unk_token=EOS_TOKEN,
        model_max_length=MAX_LENGTH,
    )
    assert tokenizer.bos_token_id == BOS_ID and tokenizer.pad_token_id == PAD_ID and tokenizer.eos_token_id == EOS_ID
    return tokenizer, src


def _text_config(**extra):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        bos_token_id=BOS_ID,
        eos_token_id=EOS_ID,
        pad_token_id=PAD_ID,
        hidden_size=32,
        intermediate_size=37,
        layer_norm_eps=1e-05,
        num_attention_heads=4,
        num_hidden_layers=5,
        vocab_size=VOCAB_SIZE,
        max_position_embeddings=MAX_LENGTH,
        hidden_act="gelu",
        projection_dim=32,
        **extra,
    )


def _vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=[32, 32, 64, 64],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
        latent_channels=4,
        layers_per_block=1,
        sample_size=64,
    )


def _scheduler():
    from diffusers import EulerDiscreteScheduler

    # The SD 1.x / SDXL training schedule; "leading" spacing + offset 1 is what their published configs use.
    return EulerDiscreteScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type="epsilon",
        timestep_spacing="leading",
        steps_offset=1,
        interpolation_type="linear",
        use_karras_sigmas=False,
    )


def _seeded(seed: int):
    import torch

    torch.manual_seed(seed)


def _build_sd(workdir: Path):
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel

    tokenizer, _ = _make_tokenizer(workdir)
    _seeded(0)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=2,
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
    )
    _seeded(1)
    vae = _vae()
    _seeded(2)
    text_encoder = CLIPTextModel(_text_config())
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        image_encoder=None,
        requires_safety_checker=False,
    )


def _build_sdxl(workdir: Path):
    from diffusers import StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    tokenizer, _ = _make_tokenizer(workdir)
    addition_time_embed_dim = 8
    pooled_dim = 32  # text_encoder_2's projection_dim
    _seeded(10)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=2,
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=addition_time_embed_dim,
        transformer_layers_per_block=(1, 2),
        # SDXL conditions on 6 micro-conditioning numbers (original size, crop, target size)
        # + the pooled text embedding.
        projection_class_embeddings_input_dim=6 * addition_time_embed_dim + pooled_dim,
        # Both encoders' penultimate hidden states are concatenated: 32 + 32.
        cross_attention_dim=64,
        norm_num_groups=1,
    )
    _seeded(11)
    vae = _vae()
    _seeded(12)
    text_encoder = CLIPTextModel(_text_config())
    _seeded(13)
    text_encoder_2 = CLIPTextModelWithProjection(_text_config())
    return StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        unet=unet,
        scheduler=_scheduler(),
        add_watermarker=False,
    )


_BUILDERS = {"tiny-sd": _build_sd, "tiny-sdxl": _build_sdxl}


def _is_current(folder: Path) -> bool:
    marker = folder / MARKER_NAME
    if not (folder / "model_index.json").is_file() or not marker.is_file():
        return False
    try:
        return json.loads(marker.read_text()).get("buildVersion") == BUILD_VERSION
    except (OSError, ValueError):
        return False


def _build_one(name: str, out_dir: Path) -> Path:
    target = out_dir / name
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=out_dir))
    try:
        pipe = _BUILDERS[name](staging / "work")
        model_dir = staging / name
        pipe.save_pretrained(str(model_dir), safe_serialization=True)
        # Plain BPE files next to tokenizer.json, for engines (MLX) that tokenize without transformers' fast backend.
        for sub in ("tokenizer", "tokenizer_2"):
            if (model_dir / sub).is_dir():
                for fname in ("vocab.json", "merges.txt"):
                    shutil.copyfile(staging / "work" / "tokenizer-src" / fname, model_dir / sub / fname)
        (model_dir / MARKER_NAME).write_text(
            json.dumps({"buildVersion": BUILD_VERSION, "name": name, "builtBy": "scripts/make_tiny_model.py"}, indent=2)
            + "\n"
        )
        # safetensors writes 0600 files; models are shared read-only data, so use ordinary permissions.
        for path in model_dir.rglob("*"):
            path.chmod(0o755 if path.is_dir() else 0o644)
        # Swap in atomically: a reader never sees a half-written folder under the final name.
        old = None
        if target.exists():
            old = out_dir / f".{name}.old-{os.getpid()}"
            os.replace(target, old)
        os.replace(model_dir, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def build_tiny_models(out_dir: str | os.PathLike = "models", force: bool = False, names=MODEL_NAMES) -> dict[str, Path]:
    """Build (or reuse) the tiny pipelines under `out_dir`; returns {name: folder}."""
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    built: dict[str, Path] = {}
    for name in names:
        folder = out / name
        if force or not _is_current(folder):
            _build_one(name, out)
        built[name] = folder
    return built


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out", default="models", help="folder that receives tiny-sd/ and tiny-sdxl/ (default: models)"
    )
    parser.add_argument("--force", action="store_true", help="rebuild even if an up-to-date build exists")
    args = parser.parse_args(argv)
    for name, path in build_tiny_models(args.out, force=args.force).items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
