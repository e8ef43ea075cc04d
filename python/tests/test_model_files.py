"""model_files: the one reading of what a model folder is (architecture, text width) and whether a converted MLX
folder is intact, as the engines use it and as the server asks for it on the command line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from mlx_fixtures import converted_sd, converted_sdxl, mlx_out_root  # noqa: F401  (fixtures)
from pixelai_runner import model_files

PYTHON_DIR = Path(__file__).resolve().parents[1]


def _folder(root: Path, name: str, index: dict | None, unet: dict | None = None, dirs: tuple = ()) -> Path:
    folder = root / name
    folder.mkdir()
    if index is not None:
        (folder / "model_index.json").write_text(json.dumps(index))
    if unet is not None:
        (folder / "unet").mkdir()
        (folder / "unet" / "config.json").write_text(json.dumps(unet))
    for d in dirs:
        (folder / d).mkdir()
    return folder


SD_PARTS = {"unet": ["diffusers", "UNet2DConditionModel"], "text_encoder": ["transformers", "CLIPTextModel"]}


def test_the_tiny_models_and_their_conversions(tiny_sd, tiny_sdxl, converted_sd, converted_sdxl):
    assert model_files.inspect(tiny_sd) == {"architecture": "sd", "crossAttentionDim": 32}
    assert model_files.inspect(tiny_sdxl) == {"architecture": "sdxl", "crossAttentionDim": 64}
    # a converted folder keeps model_index.json and unet/config.json: the same answer, so no second rule is needed
    assert model_files.inspect(converted_sd) == model_files.inspect(tiny_sd)
    assert model_files.inspect(converted_sdxl) == model_files.inspect(tiny_sdxl)
    assert json.loads((converted_sdxl / "manifest.json").read_text())["architecture"] == "sdxl"


def test_architecture_rules(tmp_path):
    xl_class = _folder(tmp_path, "xl-class", {"_class_name": "StableDiffusionXLImg2ImgPipeline", **SD_PARTS})
    second_encoder = _folder(tmp_path, "te2", {"_class_name": "Custom", **SD_PARTS, "text_encoder_2": ["t", "C"]})
    te2_folder = _folder(tmp_path, "te2-dir", {"_class_name": "Custom", **SD_PARTS}, dirs=("text_encoder_2",))
    refiner_like = _folder(
        tmp_path, "sd2", {"_class_name": "StableDiffusionPipeline", **SD_PARTS, "text_encoder_2": [None, None]}
    )
    assert [model_files.architecture_of(f) for f in (xl_class, second_encoder, te2_folder, refiner_like)] == [
        "sdxl",
        "sdxl",
        "sdxl",
        "sd",
    ]
    with pytest.raises(model_files.NotAModel, match="FluxPipeline pipeline"):
        model_files.architecture_of(
            _folder(tmp_path, "flux", {"_class_name": "FluxPipeline", "transformer": ["d", "F"]})
        )
    with pytest.raises(model_files.NoModelIndex):
        model_files.architecture_of(_folder(tmp_path, "empty", None))
    with pytest.raises(model_files.NoModelIndex):
        model_files.architecture_of(tmp_path / "missing")


def test_cross_attention_dim_reads_the_unet_config(tmp_path):
    assert model_files.cross_attention_dim(_folder(tmp_path, "a", SD_PARTS, {"cross_attention_dim": 768})) == 768
    assert (
        model_files.cross_attention_dim(_folder(tmp_path, "b", SD_PARTS, {"cross_attention_dim": [1024, 1024]})) == 1024
    )
    assert model_files.cross_attention_dim(_folder(tmp_path, "c", SD_PARTS, {})) is None
    assert model_files.cross_attention_dim(_folder(tmp_path, "d", SD_PARTS)) is None


def _cli(*args: str) -> list[dict]:
    env = {**os.environ, "PYTHONPATH": str(PYTHON_DIR)}
    done = subprocess.run(
        [sys.executable, "-m", "pixelai_runner.model_files", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_cli_inspect_answers_one_line_per_folder(tiny_sd, tiny_sdxl, tmp_path):
    lines = _cli("inspect", str(tiny_sd), str(tiny_sdxl), str(tmp_path))
    assert lines[0] == {"path": str(tiny_sd), "architecture": "sd", "crossAttentionDim": 32}
    assert lines[1]["architecture"] == "sdxl"
    assert lines[2]["path"] == str(tmp_path) and "no model_index.json" in lines[2]["error"]


def test_cli_verify_mlx_uses_the_engines_manifest_check(converted_sd, tiny_sd, tmp_path):
    copy = tmp_path / "tiny-sd"
    shutil.copytree(converted_sd, copy)
    assert _cli("verify-mlx", str(copy), str(tiny_sd)) == [
        {"path": str(copy), "converted": True, "verified": True},
        {"path": str(tiny_sd), "converted": False, "verified": False, "problem": "not converted"},
    ]
    weights = copy / "unet" / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01
    weights.write_bytes(bytes(data))
    [tampered] = _cli("verify-mlx", str(copy))
    assert tampered["verified"] is False and "unet/weights.safetensors" in tampered["problem"]
    assert "sha256" in tampered["problem"]


def test_cli_usage():
    env = {**os.environ, "PYTHONPATH": str(PYTHON_DIR)}
    bad = subprocess.run(
        [sys.executable, "-m", "pixelai_runner.model_files", "guess", "x"], capture_output=True, env=env
    )
    assert bad.returncode == 2 and b"usage" in bad.stderr


def test_check_pinned_needs_the_install_record_naming_the_commit(tmp_path):
    commit = "a" * 40
    snapshot = tmp_path / ".hub" / "owner" / "name" / commit
    (snapshot / "unet").mkdir(parents=True)
    weights = snapshot / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(b"x")
    with pytest.raises(model_files.NotPinned, match="not a complete hub snapshot"):
        model_files.check_pinned(snapshot, commit)  # a half-written snapshot has no record yet
    (snapshot / model_files.INSTALL_RECORD).write_text(json.dumps({"commit": commit, "kind": "base"}))
    assert model_files.check_pinned(snapshot, commit)["kind"] == "base"
    assert model_files.check_pinned(weights, commit)["commit"] == commit  # a file inside finds its snapshot's record
    with pytest.raises(model_files.NotPinned, match="pinned to commit"):
        model_files.check_pinned(snapshot, "b" * 40)


def test_weights_variant_takes_fp16_where_the_device_runs_it_or_nothing_else_is_there(tmp_path):
    (tmp_path / "unet").mkdir()
    (tmp_path / "unet" / "diffusion_pytorch_model.fp16.safetensors").write_bytes(b"x")
    assert model_files.weights_variant(tmp_path, prefer_fp16=True) == "fp16"
    assert model_files.weights_variant(tmp_path, prefer_fp16=False) == "fp16"  # only fp16 files: take them anyway
    (tmp_path / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"x")
    assert model_files.weights_variant(tmp_path, prefer_fp16=False) is None
    assert model_files.weights_variant(tmp_path, prefer_fp16=True) == "fp16"
    plain = tmp_path / "plain"
    (plain / "text_encoder").mkdir(parents=True)
    (plain / "text_encoder" / "model-00001-of-00002.safetensors").write_bytes(b"x")
    assert model_files.weights_variant(plain, prefer_fp16=True) is None


def test_containment_follows_links_at_every_level_and_walks_linked_folders(tmp_path):
    root, outside = tmp_path / "models", tmp_path / "outside"
    snapshot, blobs = root / "hub" / "snapshots" / "abc", root / "hub" / "blobs"
    for d in (snapshot / "unet", blobs, outside):
        d.mkdir(parents=True)
    (blobs / "w").write_bytes(b"x")
    # the hub's own layout: snapshot files link into the blob store, inside the root
    (snapshot / "unet" / "weights.safetensors").symlink_to(blobs / "w")
    model_files.assert_inside_roots(snapshot, [str(root)])
    # a linked folder inside the root is walked: a link deeper inside it that leaves the root is still found
    (outside / "secret").write_text("s")
    (blobs / "nested").mkdir()
    (blobs / "nested" / "leak").symlink_to(outside / "secret")
    (snapshot / "vae").symlink_to(blobs / "nested")
    with pytest.raises(model_files.OutsideRoots, match="outside the model roots"):
        model_files.assert_inside_roots(snapshot, [str(root)])
    # a sibling folder whose name starts like the root's is not inside it
    (tmp_path / "models-evil").mkdir()
    with pytest.raises(model_files.OutsideRoots):
        model_files.assert_inside_roots(tmp_path / "models-evil", [str(root)])
    # another root admits it; no roots means no check
    model_files.assert_inside_roots(tmp_path / "models-evil", [str(root), str(tmp_path / "models-evil")])
    model_files.assert_inside_roots(outside, [])
