"""What a model folder is and whether a converted one is intact, read from its files: the one place these rules live.

The torch engine, the MLX converter and the MLX engine call the functions; the Node server asks through the command
line, one JSON line per folder on stdout (exit status 0 even when a folder is bad: the line says why):

    python -m pixelai_runner.model_files inspect DIR...
        {"path", "architecture": "sd"|"sdxl", "crossAttentionDim": int|null}  or  {"path", "error"}
    python -m pixelai_runner.model_files verify-mlx DIR...
        {"path", "converted": bool, "verified": bool, "problem"?: str}

Rules:
- A Stable Diffusion diffusers folder has a model_index.json naming a `unet` and a `text_encoder`; anything else
  (another kind of pipeline, or no model_index.json) is not a model this server runs.
- architecture: "sdxl" when the pipeline class names XL or the folder has a second text encoder (`text_encoder_2` in
  model_index.json or as a folder), else "sd" (1.x and 2.x share one pipeline).
- crossAttentionDim: `cross_attention_dim` of unet/config.json (the first when given per block), the width of the
  text embeddings the UNet takes; null when the config does not say. The LoRA fit rule compares it with a LoRA's.
- An installed hub snapshot (src/installs, hub_install.py) is complete once its install record
  (`.pixelai-install.json`, at the snapshot's top) is written; the record names the commit it is pinned to. Its weights
  variant is `fp16` when its weights are `<name>.fp16.safetensors` (taken when the device runs fp16, or when there are
  no plain weights beside them), else the plain weights.
- Containment: everything a loader could open under a model folder or LoRA file resolves, after following symlinks at
  every level, inside one of the runner's model roots (`--model-roots`); the Node server checks the same at
  registration (src/models/safe-paths.ts), and the runner again right before each load, since files may change between.
- A converted MLX folder is verified by its manifest (backends/mlx/manifest.py): every listed file present with the
  recorded size and sha256.

Standard library only at import (the MLX manifest check imports its module lazily), so a question costs one quick
interpreter start.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Any

MODEL_INDEX = "model_index.json"
INSTALL_RECORD = ".pixelai-install.json"
# `diffusion_pytorch_model.fp16.safetensors`, `model.fp16-00001-of-00002.safetensors`
_FP16_WEIGHTS = re.compile(r"^[^./]+\.fp16(?:-\d{5}-of-\d{5})?\.safetensors$")
_PLAIN_WEIGHTS = re.compile(r"^[^./]+(?:-\d{5}-of-\d{5})?\.safetensors$")


# More entries than any model folder holds: the walk stops there rather than hang on a hostile tree.
_MAX_TREE_ENTRIES = 100_000


class OutsideRoots(ValueError):
    """A model or LoRA path, or something linked from inside it, resolves outside every model root."""


def assert_inside_roots(target: str | Path, roots: list[str]) -> None:
    """Raise OutsideRoots unless `target` and every entry under it (symlinked folders walked too) resolve under a
    root. No roots: nothing to check (a runner started by hand)."""
    if not roots:
        return
    real_roots = [os.path.realpath(r) for r in roots]

    def inside(real: str) -> bool:
        return any(real == r or real.startswith(r.rstrip(os.sep) + os.sep) for r in real_roots)

    real_target = os.path.realpath(target)
    if not inside(real_target):
        raise OutsideRoots(f"{target} resolves outside the model roots ({real_target})")
    # Only links need resolving: an entry that is no link, in a folder already resolved, is where its path says. This
    # runs before every job, so it costs one directory read per folder plus one realpath per link (hub snapshots link
    # every file into the blob store), not a realpath per entry.
    pending = [real_target] if os.path.isdir(real_target) else []
    seen: set[str] = set()
    entries = 0
    while pending:
        folder = pending.pop()
        if folder in seen:
            continue
        seen.add(folder)
        with os.scandir(folder) as listing:
            for entry in listing:
                entries += 1
                if entries > _MAX_TREE_ENTRIES:
                    raise OutsideRoots(f"{target} holds more than {_MAX_TREE_ENTRIES} entries")
                if entry.is_symlink():
                    real = os.path.realpath(entry.path)
                    if not inside(real):
                        raise OutsideRoots(f"{entry.path} resolves outside the model roots ({real})")
                    if os.path.isdir(real):
                        pending.append(real)
                elif entry.is_dir(follow_symlinks=False):
                    pending.append(entry.path)


class NotAModel(ValueError):
    """The folder is not a Stable Diffusion diffusers pipeline this server can run."""


class NoModelIndex(NotAModel):
    """Not a diffusers folder at all (no readable model_index.json): the model is missing rather than unsupported."""


def _model_index(folder: Path) -> dict:
    path = folder / MODEL_INDEX
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, NotADirectoryError):
        raise NoModelIndex(f"{folder} is not a diffusers folder (no {MODEL_INDEX})") from None
    except (OSError, ValueError) as exc:
        raise NoModelIndex(f"cannot read {path}: {exc}") from None
    if not isinstance(index, dict):
        raise NotAModel(f"{path} is not a JSON object")
    return index


def _lists(index: dict, component: str) -> bool:
    """model_index.json names the component with a (library, class) pair; [null, null] means "not part of it"."""
    entry = index.get(component)
    return isinstance(entry, list) and any(entry)


def architecture_of(folder: str | Path) -> str:
    """'sd' or 'sdxl' for a Stable Diffusion diffusers folder (a source or a converted MLX folder); NotAModel else."""
    folder = Path(folder)
    index = _model_index(folder)
    class_name = str(index.get("_class_name", ""))
    if not (_lists(index, "unet") and _lists(index, "text_encoder")):
        raise NotAModel(f"{folder} holds a {class_name or 'nameless'} pipeline, not Stable Diffusion 1.x/2.x or SDXL")
    if "XL" in class_name or _lists(index, "text_encoder_2") or (folder / "text_encoder_2").is_dir():
        return "sdxl"
    return "sd"


def cross_attention_dim(folder: str | Path) -> int | None:
    path = Path(folder) / "unet" / "config.json"
    try:
        dim = json.loads(path.read_text(encoding="utf-8")).get("cross_attention_dim")
    except (OSError, ValueError, AttributeError):
        return None
    if isinstance(dim, list):
        dim = dim[0] if dim else None
    return dim if isinstance(dim, int) and not isinstance(dim, bool) else None


class NotPinned(ValueError):
    """A path given as an installed hub snapshot has no install record, or one for another commit."""


def check_pinned(path: str | Path, commit: str) -> dict:
    """The install record of the snapshot holding `path` (a snapshot folder or a file inside one), when it names
    `commit`; NotPinned otherwise. A half-written snapshot has no record yet, so it is never loaded."""
    start = Path(path)
    for folder in [start, *start.parents] if start.is_dir() else list(start.parents):
        record_path = folder / INSTALL_RECORD
        if record_path.is_file():
            try:
                record = json.loads(record_path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise NotPinned(f"cannot read {record_path}: {exc}") from None
            if not isinstance(record, dict) or record.get("commit") != commit:
                got = record.get("commit") if isinstance(record, dict) else None
                raise NotPinned(f"{folder} is pinned to commit {got!r}, not the {commit} the registry recorded")
            return record
    raise NotPinned(f"{start} is not a complete hub snapshot (no {INSTALL_RECORD})")


def weights_variant(folder: str | Path, prefer_fp16: bool) -> str | None:
    """'fp16' when the folder's components hold fp16 variant weights and either the device runs fp16 or there are no
    plain weights to take instead; None (the plain weights) otherwise."""
    names = [p.name for p in Path(folder).glob("*/*.safetensors")]
    has_fp16 = any(_FP16_WEIGHTS.match(n) for n in names)
    has_plain = any(_PLAIN_WEIGHTS.match(n) for n in names)
    return "fp16" if has_fp16 and (prefer_fp16 or not has_plain) else None


def inspect(folder: str | Path) -> dict[str, Any]:
    return {"architecture": architecture_of(folder), "crossAttentionDim": cross_attention_dim(folder)}


def verify_mlx(folder: str | Path) -> dict[str, Any]:
    """A converted MLX folder checked against its manifest, as the MLX engine checks it before loading."""
    from .backends.mlx.manifest import MANIFEST_NAME, ManifestVerifier
    from .errors import RunnerError

    folder = Path(folder)
    if not (folder / MANIFEST_NAME).is_file():
        return {"converted": False, "verified": False, "problem": "not converted"}
    try:
        ManifestVerifier().verify(folder)
    except RunnerError as exc:
        return {"converted": True, "verified": False, "problem": exc.message}
    return {"converted": True, "verified": True}


def _answer(command: str, folder: str) -> dict[str, Any]:
    if command == "inspect":
        try:
            return {"path": folder, **inspect(folder)}
        except NotAModel as exc:
            return {"path": folder, "error": str(exc)}
    return {"path": folder, **verify_mlx(folder)}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 2 or args[0] not in ("inspect", "verify-mlx"):
        print("usage: python -m pixelai_runner.model_files inspect|verify-mlx DIR...", file=sys.stderr)
        return 2
    for folder in args[1:]:
        print(json.dumps(_answer(args[0], folder), separators=(",", ":")), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
