"""The converted-model folder layout and its integrity manifest (pure Python: usable without mlx).

    models/mlx/<safe_name>/
      manifest.json                    name, source, sourceRevision, files{relpath: {sha256, size}}, dtype,
                                       quantize ({bits, groupSize, components} or null, quantize.py),
                                       architecture (sd|sdxl, model_files.py), converterVersion, createdAt
      model_index.json                 copied from the diffusers folder (pipeline class, force_zeros_for_empty_prompt)
      unet/config.json                 copied diffusers config
      unet/weights.safetensors         MLX names and layouts (weights.py), stored dtype = manifest dtype; a quantized
                                       linear layer holds packed uint32 `weight` plus `scales` and `biases`
      vae/config.json, vae/weights.safetensors
      text_encoder/config.json, text_encoder/weights.safetensors
      text_encoder_2/…                 SDXL only (CLIPTextModelWithProjection)
      tokenizer/…, tokenizer_2/…       tokenizer files copied as they are (vocab.json, merges.txt, tokenizer.json, …)
      scheduler/scheduler_config.json

Every file except manifest.json is listed in `files`; the runner checks sizes and sha256 before loading and caches a
good result per (path, mtime, size) so a warm second job does not hash gigabytes again. ManifestVerifier is the only
check of a converted folder: the converter uses it to tell an intact earlier conversion, and the server asks it through
`python -m pixelai_runner.model_files verify-mlx` (it only reads what the converter wrote).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from pathlib import Path

from ...errors import RunnerError

MANIFEST_NAME = "manifest.json"
WEIGHTS_NAME = "weights.safetensors"
CONVERTER_VERSION = "1"
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
CONVERT_COMMAND = "python scripts/convert_to_mlx.py <source> --name <name>"

_HASH_CHUNK = 4 * 1024 * 1024


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_HASH_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_safe_name(name: str) -> None:
    if not isinstance(name, str) or not SAFE_NAME.match(name) or ".." in name:
        raise ValueError(f"invalid model name {name!r}: use 1-64 of A-Z a-z 0-9 . _ - (starting alphanumeric, no '..')")


def resolve_under(root: str | Path, name: str) -> Path:
    """`root/name`, refusing names that could escape `root` (also through symlinks)."""
    check_safe_name(name)
    root_real = Path(os.path.realpath(root))
    target = Path(os.path.realpath(root_real / name))
    if target.parent != root_real:
        raise ValueError(f"model name {name!r} resolves outside {root_real}")
    return target


def read_manifest(folder: str | Path) -> dict:
    path = Path(folder) / MANIFEST_NAME
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def not_converted(folder: Path) -> RunnerError:
    guess = folder.name if SAFE_NAME.match(folder.name) else "<name>"
    return RunnerError(
        "MODEL_NOT_CONVERTED",
        f"{folder} is not a converted MLX model (no {MANIFEST_NAME}); convert it first with "
        f"`python scripts/convert_to_mlx.py <source> --name {guess}`",
    )


class ManifestVerifier:
    """Checks a converted folder against its manifest; remembers files already proven good by (path, mtime, size)."""

    def __init__(self) -> None:
        self._good: dict[str, tuple[int, int, str]] = {}
        self._lock = threading.Lock()

    def verify(self, folder: str | Path) -> dict:
        folder = Path(folder)
        if not folder.is_dir():
            raise RunnerError("MODEL_NOT_FOUND", f"MLX model folder {folder} does not exist")
        if not (folder / MANIFEST_NAME).is_file():
            raise not_converted(folder)
        try:
            manifest = read_manifest(folder)
            files = manifest["files"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise RunnerError("HASH_MISMATCH", f"{folder / MANIFEST_NAME} is unreadable: {exc}") from exc
        for relpath, expected in sorted(files.items()):
            self._verify_file(folder, relpath, expected)
        return manifest

    def _verify_file(self, folder: Path, relpath: str, expected: dict) -> None:
        path = folder / relpath
        if Path(relpath).is_absolute() or ".." in Path(relpath).parts:
            raise RunnerError("HASH_MISMATCH", f"manifest lists an unsafe path {relpath!r}")
        try:
            stat = path.stat()
        except OSError:
            raise RunnerError("HASH_MISMATCH", f"{relpath} is missing from {folder}") from None
        if stat.st_size != expected["size"]:
            raise RunnerError(
                "HASH_MISMATCH", f"{relpath} in {folder} has {stat.st_size} bytes, the manifest says {expected['size']}"
            )
        key = str(path)
        stamp = (stat.st_mtime_ns, stat.st_size, expected["sha256"])
        with self._lock:
            if self._good.get(key) == stamp:
                return
        actual = sha256_file(path)
        if actual != expected["sha256"]:
            with self._lock:
                self._good.pop(key, None)
            raise RunnerError("HASH_MISMATCH", f"{relpath} in {folder} does not match its manifest sha256")
        with self._lock:
            self._good[key] = stamp

    def forget(self, folder: str | Path | None = None) -> None:
        with self._lock:
            if folder is None:
                self._good.clear()
            else:
                prefix = str(Path(folder)) + os.sep
                for key in [k for k in self._good if k.startswith(prefix)]:
                    del self._good[key]
