"""diffusers folder (or hub id) → converted MLX model folder with a manifest. numpy + safetensors only, and mlx for a
quantized conversion (quantize.py).

The folder layout is documented in manifest.py. Conversion writes into a temporary folder next to the target and swaps
it in with renames, so a failure or a crash never leaves a half-written model under the final name. Re-running on an
unchanged source (same sourceRevision, dtype, quantization and converterVersion, files intact) is a no-op that leaves
the existing manifest byte-identical.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from ...errors import RunnerError
from ...model_files import architecture_of
from . import weights as W
from .manifest import (
    CONVERTER_VERSION,
    MANIFEST_NAME,
    WEIGHTS_NAME,
    ManifestVerifier,
    resolve_under,
    sha256_file,
)
from .quantize import COMPONENTS as QUANTIZABLE
from .quantize import QuantizeSpec, quantize_component

DTYPES = {"float16": np.float16, "float32": np.float32}
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
_SNAPSHOT_COMMIT = re.compile(r"[/\\]snapshots[/\\]([0-9a-f]{40})(?:[/\\]|$)")

ProgressFn = Callable[[int, int], None]


def _components(source: Path) -> list[str]:
    return [name for name in W.COMPONENT_KINDS if (source / name / "config.json").is_file()]


def _tokenizer_dirs(source: Path) -> list[str]:
    return [name for name in ("tokenizer", "tokenizer_2") if (source / name).is_dir()]


def plan_source_files(source: Path) -> list[Path]:
    """Every source file the conversion reads (the content that determines the output)."""
    files = [source / "model_index.json", source / "scheduler" / "scheduler_config.json"]
    for component in _components(source):
        files.append(source / component / "config.json")
        files.extend(W.component_weight_files(source / component, component))
    for tok in _tokenizer_dirs(source):
        files.extend(sorted(p for p in (source / tok).iterdir() if p.is_file() and not p.name.startswith(".")))
    missing = [str(p) for p in files if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"source is missing {', '.join(missing)}")
    return files


def content_revision(source: Path, files: list[Path]) -> str:
    """sha256 over (relative path, file sha256) of every file read: a revision id for a plain folder."""
    digest = hashlib.sha256()
    for path in sorted(files, key=lambda p: p.relative_to(source).as_posix()):
        digest.update(f"{path.relative_to(source).as_posix()}\0{sha256_file(path)}\n".encode())
    return "sha256:" + digest.hexdigest()


def resolve_source(source: str) -> tuple[Path, str, str | None]:
    """(local folder, recorded source, hub commit or None). Hub ids only work where a hub is reachable."""
    path = Path(source).expanduser()
    if path.is_dir():
        resolved = path.resolve()
        commit = _SNAPSHOT_COMMIT.search(str(resolved))
        return resolved, str(resolved), commit.group(1) if commit else None
    if _HUB_ID.match(source) and not path.exists():
        try:
            from huggingface_hub import snapshot_download

            local = snapshot_download(
                source,
                allow_patterns=["*.json", "*.txt", "*.safetensors", "tokenizer*/*", "scheduler/*"],
                ignore_patterns=["*.bin", "*.ckpt", "*.onnx", "*.msgpack", "*.h5"],
            )
        except Exception as exc:  # offline, unknown repo, gated model …
            raise RunnerError("MODEL_NOT_FOUND", f"could not download {source!r} from the hub: {exc}") from exc
        commit = _SNAPSHOT_COMMIT.search(local)
        return Path(local), source, commit.group(1) if commit else None
    raise RunnerError("MODEL_NOT_FOUND", f"source {source!r} is neither a local diffusers folder nor a hub id")


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _convert_into(
    staging: Path, source: Path, components: list[str], dtype, tick: Callable[[], None], quantize: QuantizeSpec | None
) -> None:
    from safetensors.numpy import save_file

    shutil.copyfile(source / "model_index.json", staging / "model_index.json")
    (staging / "scheduler").mkdir()
    shutil.copyfile(source / "scheduler" / "scheduler_config.json", staging / "scheduler" / "scheduler_config.json")
    tick()
    for component in components:
        (staging / component).mkdir()
        shutil.copyfile(source / component / "config.json", staging / component / "config.json")
        tensors = W.cast_floats(W.load_component(source / component, component), dtype)
        if quantize is not None and component in QUANTIZABLE:
            from .pipeline import component_module

            module = component_module(component, json.loads((source / component / "config.json").read_text()))
            tensors = quantize_component(module, tensors, quantize)
        save_file(
            {k: np.ascontiguousarray(v) for k, v in tensors.items()},
            str(staging / component / WEIGHTS_NAME),
            metadata={"format": "mlx", "converter": f"pixelai {CONVERTER_VERSION}"},
        )
        del tensors
        tick()
    for tok in _tokenizer_dirs(source):
        shutil.copytree(source / tok, staging / tok, ignore=shutil.ignore_patterns(".*"))
        tick()


def _file_table(folder: Path) -> dict:
    table = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        if rel != MANIFEST_NAME:
            table[rel] = {"sha256": sha256_file(path), "size": path.stat().st_size}
    return table


def _swap_in(staging: Path, target: Path) -> None:
    """Replace `target` by `staging` with renames only (same filesystem)."""
    old = None
    if target.exists() or target.is_symlink():
        old = target.parent / f".{target.name}.old-{os.getpid()}"
        os.replace(target, old)
    os.replace(staging, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _unchanged(target: Path, revision: str, dtype_name: str, quantize: dict | None) -> dict | None:
    """The existing manifest when the target is already this exact conversion and intact, else None."""
    if not (target / MANIFEST_NAME).is_file():
        return None
    try:
        manifest = json.loads((target / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    same = (
        manifest.get("sourceRevision") == revision
        and manifest.get("dtype") == dtype_name
        and manifest.get("quantize") == quantize
        and manifest.get("converterVersion") == CONVERTER_VERSION
    )
    if not same:
        return None
    try:
        ManifestVerifier().verify(target)
    except RunnerError:
        return None  # damaged: convert again
    return manifest


def convert(
    source: str,
    name: str,
    dtype: str = "float16",
    out_root: str | os.PathLike = "models/mlx",
    on_progress: ProgressFn | None = None,
    quantize: int | None = None,
    group_size: int = 64,
) -> dict:
    """Convert `source` into `out_root/name`; returns {"path", "manifest", "unchanged"}. `quantize` 4 or 8 stores the
    linear layers of the UNet and text encoders as that many bits per weight, in groups of `group_size`.

    Raises RunnerError: INVALID_REQUEST (bad name/dtype/quantization), MODEL_NOT_FOUND (no source), CONVERSION_FAILED.
    """
    if dtype not in DTYPES:
        raise RunnerError("INVALID_REQUEST", f"dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")
    try:
        spec = QuantizeSpec(quantize, group_size) if quantize is not None else None
    except ValueError as exc:
        raise RunnerError("INVALID_REQUEST", str(exc)) from exc
    out_root = Path(out_root)
    out_root.mkdir(parents=True, exist_ok=True)
    try:
        target = resolve_under(out_root, name)
    except ValueError as exc:
        raise RunnerError("INVALID_REQUEST", str(exc)) from exc

    local, recorded_source, commit = resolve_source(source)
    if not (local / "model_index.json").is_file():
        raise RunnerError("CONVERSION_FAILED", f"{local} is not a diffusers pipeline folder (no model_index.json)")
    try:
        files = plan_source_files(local)
    except FileNotFoundError as exc:
        raise RunnerError("CONVERSION_FAILED", str(exc)) from exc
    components = _components(local)
    if "unet" not in components or "vae" not in components or "text_encoder" not in components:
        raise RunnerError("CONVERSION_FAILED", f"{local} lacks a unet, vae or text_encoder")
    revision = commit or content_revision(local, files)

    quantized = [c for c in components if c in QUANTIZABLE]
    quantize_entry = spec.manifest_entry(quantized) if spec is not None else None
    existing = _unchanged(target, revision, dtype, quantize_entry)
    if existing is not None:
        return {"path": str(target), "manifest": existing, "unchanged": True}

    total = 1 + len(components) + len(_tokenizer_dirs(local)) + 1
    done = 0

    def tick() -> None:
        nonlocal done
        done += 1
        if on_progress is not None:
            on_progress(done, total)

    staging = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=target.parent))
    try:
        _convert_into(staging, local, components, DTYPES[dtype], tick, spec)
        manifest = {
            "name": name,
            "source": recorded_source,
            "sourceRevision": revision,
            "files": _file_table(staging),
            "dtype": dtype,
            "quantize": quantize_entry,
            "architecture": architecture_of(staging),
            "converterVersion": CONVERTER_VERSION,
            "createdAt": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        _write_json(staging / MANIFEST_NAME, manifest)
        # mkdtemp and safetensors create owner-only entries; a model store is shared read-only data
        staging.chmod(0o755)
        for path in staging.rglob("*"):
            path.chmod(0o755 if path.is_dir() else 0o644)
        _swap_in(staging, target)
        tick()
    except RunnerError:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    except Exception as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise RunnerError("CONVERSION_FAILED", f"converting {source} failed: {type(exc).__name__}: {exc}") from exc
    return {"path": str(target), "manifest": manifest, "unchanged": False}
