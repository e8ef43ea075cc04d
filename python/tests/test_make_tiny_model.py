"""scripts/make_tiny_model.py: reproducible bytes, idempotence, a tokenizer that fits the text encoders."""

from __future__ import annotations

import json

from transformers import CLIPTokenizer


def _files(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_build_is_byte_identical_and_leaves_no_temp_dirs(tiny_model_script, tiny_sd, tmp_path):
    built = tiny_model_script.build_tiny_models(tmp_path, names=("tiny-sd",))
    assert _files(built["tiny-sd"]) == _files(tiny_sd)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny-sd"]


def test_rebuild_is_skipped_unless_forced_or_outdated(tiny_model_script, tmp_path):
    folder = tiny_model_script.build_tiny_models(tmp_path, names=("tiny-sd",))["tiny-sd"]
    stamp = (folder / "model_index.json").stat().st_mtime_ns
    tiny_model_script.build_tiny_models(tmp_path, names=("tiny-sd",))
    assert (folder / "model_index.json").stat().st_mtime_ns == stamp
    marker = folder / tiny_model_script.MARKER_NAME
    marker.write_text(json.dumps({"buildVersion": -1}))
    assert not tiny_model_script._is_current(folder)
    tiny_model_script.build_tiny_models(tmp_path, names=("tiny-sd",))
    assert json.loads(marker.read_text())["buildVersion"] == tiny_model_script.BUILD_VERSION


def test_pipelines_declare_the_expected_classes(tiny_sd, tiny_sdxl):
    assert json.loads((tiny_sd / "model_index.json").read_text())["_class_name"] == "StableDiffusionPipeline"
    sdxl_index = json.loads((tiny_sdxl / "model_index.json").read_text())
    assert sdxl_index["_class_name"] == "StableDiffusionXLPipeline"
    assert sdxl_index["text_encoder_2"] == ["transformers", "CLIPTextModelWithProjection"]
    unet = json.loads((tiny_sdxl / "unet" / "config.json").read_text())
    assert unet["addition_embed_type"] == "text_time"
    vae = json.loads((tiny_sd / "vae" / "config.json").read_text())
    assert 2 ** (len(vae["block_out_channels"]) - 1) == 8, "latents are H/8 x W/8 like real SD"


def test_tokenizer_ids_fit_the_text_encoder(tiny_sd):
    text_config = json.loads((tiny_sd / "text_encoder" / "config.json").read_text())
    for tokenizer in (
        CLIPTokenizer.from_pretrained(str(tiny_sd), subfolder="tokenizer"),
        CLIPTokenizer(
            vocab=str(tiny_sd / "tokenizer" / "vocab.json"),
            merges=str(tiny_sd / "tokenizer" / "merges.txt"),
            pad_token="<|pad|>",
        ),
    ):
        assert (tokenizer.bos_token_id, tokenizer.pad_token_id, tokenizer.eos_token_id) == (0, 1, 2)
        assert (text_config["bos_token_id"], text_config["pad_token_id"], text_config["eos_token_id"]) == (0, 1, 2)
        ids = tokenizer("A Pixel-Art knight, 16 bit! ünïcödé ✨", padding="max_length", max_length=77)["input_ids"]
        assert len(ids) == 77 and ids[0] == 0 and 2 in ids and ids[-1] == 1
        assert max(ids) < text_config["vocab_size"]
        # Learned merges make common prompt words shorter than their characters.
        assert len(tokenizer("knight")["input_ids"]) - 2 < len("knight")
    assert CLIPTokenizer.from_pretrained(str(tiny_sd), subfolder="tokenizer").model_max_length == 77
