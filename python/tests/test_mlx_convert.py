"""diffusers → MLX conversion: manifest, integrity checks, idempotence, names, atomicity, the CLI's output."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import load_script
from mlx_fixtures import REPO_ROOT, converted_sd, mlx_out_root  # noqa: F401  (fixtures)
from pixelai_runner.backends.mlx import manifest as M
from pixelai_runner.backends.mlx.convert import convert
from pixelai_runner.errors import RunnerError


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture()
def fresh_copy(converted_sd, tmp_path) -> Path:
    """A private copy of the converted tiny SD, safe to damage."""
    target = tmp_path / "mlx" / "tiny-sd"
    shutil.copytree(converted_sd, target)
    return target


def test_manifest_fields_and_hashes(converted_sd, tiny_sd):
    manifest = json.loads((converted_sd / "manifest.json").read_text())
    assert manifest["name"] == "tiny-sd"
    assert manifest["source"] == str(Path(tiny_sd).resolve())
    assert manifest["sourceRevision"].startswith("sha256:") and len(manifest["sourceRevision"]) == 7 + 64
    assert manifest["dtype"] == "float32"
    assert manifest["architecture"] == "sd"
    assert manifest["converterVersion"] == M.CONVERTER_VERSION
    assert manifest["createdAt"].endswith("Z")
    on_disk = sorted(p.relative_to(converted_sd).as_posix() for p in converted_sd.rglob("*") if p.is_file())
    assert sorted(manifest["files"]) == [p for p in on_disk if p != "manifest.json"]
    for relpath, entry in manifest["files"].items():
        path = converted_sd / relpath
        assert entry == {"sha256": _sha(path), "size": path.stat().st_size}
    for required in (
        "unet/weights.safetensors",
        "vae/weights.safetensors",
        "text_encoder/weights.safetensors",
        "unet/config.json",
        "scheduler/scheduler_config.json",
        "tokenizer/vocab.json",
        "model_index.json",
    ):
        assert required in manifest["files"]


def test_sdxl_architecture_and_float16_weights(tiny_sdxl, tmp_path):
    from safetensors.numpy import load_file

    result = convert(str(tiny_sdxl), "xl", "float16", tmp_path)
    manifest = result["manifest"]
    assert manifest["architecture"] == "sdxl" and manifest["dtype"] == "float16"
    assert "text_encoder_2/weights.safetensors" in manifest["files"] and "tokenizer_2/vocab.json" in manifest["files"]
    weights = load_file(str(Path(result["path"]) / "unet" / "weights.safetensors"))
    assert {str(v.dtype) for v in weights.values()} == {"float16"}


def test_rerun_on_unchanged_source_is_a_noop(converted_sd, tiny_sd, mlx_out_root):
    before = (converted_sd / "manifest.json").read_bytes()
    stamp = (converted_sd / "unet" / "weights.safetensors").stat().st_mtime_ns
    result = convert(str(tiny_sd), "tiny-sd", "float32", mlx_out_root)
    assert result["unchanged"] is True
    assert (converted_sd / "manifest.json").read_bytes() == before
    assert (converted_sd / "unet" / "weights.safetensors").stat().st_mtime_ns == stamp


def test_changed_dtype_reconverts_in_place(tiny_sd, tmp_path):
    first = convert(str(tiny_sd), "m", "float32", tmp_path)
    second = convert(str(tiny_sd), "m", "float16", tmp_path)
    assert second["unchanged"] is False and second["manifest"]["dtype"] == "float16"
    assert first["manifest"]["sourceRevision"] == second["manifest"]["sourceRevision"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no temp or old folders left behind
    assert M.ManifestVerifier().verify(tmp_path / "m")["dtype"] == "float16"


def test_damaged_conversion_is_redone_by_a_rerun(tiny_sd, tmp_path):
    convert(str(tiny_sd), "m", "float32", tmp_path)
    weights = tmp_path / "m" / "vae" / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])
    assert convert(str(tiny_sd), "m", "float32", tmp_path)["unchanged"] is False
    M.ManifestVerifier().verify(tmp_path / "m")


@pytest.mark.parametrize("damage", ["flip_byte", "truncate", "delete"])
def test_damaged_file_is_hash_mismatch(fresh_copy, damage):
    target = fresh_copy / "unet" / "weights.safetensors"
    data = bytearray(target.read_bytes())
    if damage == "flip_byte":
        data[len(data) // 2] ^= 0x01
        target.write_bytes(bytes(data))
    elif damage == "truncate":
        target.write_bytes(bytes(data[:-1]))
    else:
        target.unlink()
    with pytest.raises(RunnerError) as info:
        M.ManifestVerifier().verify(fresh_copy)
    assert info.value.code == "HASH_MISMATCH"
    assert "unet/weights.safetensors" in info.value.message


def test_folder_without_manifest_is_not_converted(tiny_sd):
    with pytest.raises(RunnerError) as info:
        M.ManifestVerifier().verify(tiny_sd)
    assert info.value.code == "MODEL_NOT_CONVERTED"
    assert "python scripts/convert_to_mlx.py <source> --name tiny-sd" in info.value.message


def test_missing_folder_is_model_not_found(tmp_path):
    with pytest.raises(RunnerError) as info:
        M.ManifestVerifier().verify(tmp_path / "nope")
    assert info.value.code == "MODEL_NOT_FOUND"


def test_verification_is_cached_until_a_file_changes(fresh_copy, monkeypatch):
    verifier = M.ManifestVerifier()
    verifier.verify(fresh_copy)
    calls = []
    real = M.sha256_file
    monkeypatch.setattr(M, "sha256_file", lambda path: calls.append(path) or real(path))
    verifier.verify(fresh_copy)
    assert calls == []  # warm: nothing re-hashed
    target = fresh_copy / "vae" / "config.json"
    target.write_text(target.read_text().replace("0.18215", "0.18216"))  # same size, new content and mtime
    with pytest.raises(RunnerError) as info:
        verifier.verify(fresh_copy)
    assert info.value.code == "HASH_MISMATCH" and len(calls) == 1


@pytest.mark.parametrize(
    "name", ["", "..", "../evil", "a/b", "/abs", ".hidden", "-dash", "a..b", "x" * 65, "nul\0", "spa ce"]
)
def test_bad_names_are_rejected(tiny_sd, tmp_path, name):
    with pytest.raises(RunnerError) as info:
        convert(str(tiny_sd), name, "float32", tmp_path / "out")
    assert info.value.code == "INVALID_REQUEST"
    assert not any((tmp_path / "out").iterdir())


def test_name_through_a_symlink_escaping_the_root_is_rejected(tiny_sd, tmp_path):
    root = tmp_path / "out"
    root.mkdir()
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", root / "link")
    with pytest.raises(RunnerError) as info:
        convert(str(tiny_sd), "link", "float32", root)
    assert info.value.code == "INVALID_REQUEST"


def test_failure_leaves_no_half_model(tiny_sd, tmp_path, monkeypatch):
    from pixelai_runner.backends.mlx import weights as W

    original = W.load_component

    def failing(folder, component):
        if component == "vae":  # after the UNet was already written
            raise OSError("disk full")
        return original(folder, component)

    monkeypatch.setattr(W, "load_component", failing)
    with pytest.raises(RunnerError) as info:
        convert(str(tiny_sd), "m", "float32", tmp_path)
    assert info.value.code == "CONVERSION_FAILED" and "disk full" in info.value.message
    assert list(tmp_path.iterdir()) == []


def test_missing_source_is_model_not_found(tmp_path):
    with pytest.raises(RunnerError) as info:
        convert(str(tmp_path / "does-not-exist"), "m", "float32", tmp_path / "out")
    assert info.value.code == "MODEL_NOT_FOUND"


def test_cli_prints_progress_and_done_json(tiny_sd, tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "scripts" / "convert_to_mlx.py"),
            str(tiny_sd),
            "--name",
            "cli",
            "--dtype",
            "float32",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=str(tmp_path),
    )
    assert proc.returncode == 0, proc.stderr
    progress = [line.split() for line in proc.stderr.splitlines() if line.startswith("PROGRESS ")]
    assert progress and progress[-1][1] == progress[-1][2]
    assert [int(p[1]) for p in progress] == list(range(1, len(progress) + 1))
    last = json.loads(proc.stdout.strip().splitlines()[-1])
    assert last["event"] == "done" and last["path"] == str((tmp_path / "cli").resolve())
    assert last["manifest"] == json.loads((tmp_path / "cli" / "manifest.json").read_text())


def test_cli_reports_errors_as_json(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "scripts" / "convert_to_mlx.py"),
            str(tmp_path),
            "--name",
            "../x",
            "--out",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert json.loads(proc.stdout.strip().splitlines()[-1])["code"] == "INVALID_REQUEST"


def test_convert_is_importable_from_the_script(tiny_sd, tmp_path):
    module = load_script("convert_to_mlx")
    ticks = []
    result = module.convert(str(tiny_sd), "imp", "float32", tmp_path, on_progress=lambda d, t: ticks.append((d, t)))
    assert result["manifest"]["name"] == "imp" and ticks[-1][0] == ticks[-1][1]
