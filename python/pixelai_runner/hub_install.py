"""Install a base model or a LoRA from the hub into a pinned, local snapshot folder.

    python -m pixelai_runner.hub_install --repo owner/name --kind base|lora --dest DIR
        [--revision main] [--variant fp16|none] [--weight-name FILE] [--chunk-bytes N] [--exit-with-parent]

The hub (`HF_ENDPOINT`, `HF_TOKEN`, `HF_HUB_OFFLINE`, read by huggingface_hub itself) is asked for the revision's commit
and file list once; everything after is pinned to that commit and lands in `DIR/<owner>/<name>/<commit>/`, which is
complete only once `.pixelai-install.json` is written there.

- Only what the pipeline needs: for a base model, `model_index.json` and each component's configs, tokenizer files and
  weights; for a LoRA, one weights file. Safetensors only: a component or LoRA published only as pickle (`.bin`,
  `.ckpt`, `.pt`, `.pth`, `.pkl`) is refused (UNSAFE_WEIGHTS) and pickle files are never fetched. The `fp16` variant is
  taken where asked for and published.
- Disk space is checked before the first byte (INSUFFICIENT_STORAGE).
- Resumable across kills: huggingface_hub 2.4.0's own downloads write to a per-process temporary file that a new
  process never reuses (file_download.py `_download_to_tmp_and_move`), so each file is fetched here into a stable
  `<file>.incomplete` with huggingface_hub's `http_get(resume_size=…)`, which asks for the missing bytes only
  (`Range: bytes=N-`). Every finished file is verified (sha256 of LFS files, git blob id of the others) before it is
  moved into place; a file in place is never fetched again.
- Progress is JSON lines on stdout: `resolved` (commit, files, bytes already present), `progress` (bytesDone/bytesTotal,
  filesDone/filesTotal, rateBps, etaSeconds, file) at most twice a second, then `done` (path, commit, variant,
  weightName) or `error` (code from the shared taxonomy, message, hint).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import glob
import hashlib
import json
import os
import re
import shutil
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx2
from huggingface_hub import HfApi, constants, get_hf_file_metadata, hf_hub_url
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    HFValidationError,
    OfflineModeIsEnabled,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.file_download import http_get
from huggingface_hub.utils import build_hf_headers, filter_repo_objects, validate_repo_id

from .errors import RunnerError
from .model_files import INSTALL_RECORD

MARKER = INSTALL_RECORD
PICKLE_SUFFIXES = (".bin", ".ckpt", ".pt", ".pth", ".pkl")
# Weights the torch runner never loads (it builds SD pipelines with safety_checker=None): not worth gigabytes.
SKIPPED_COMPONENTS = frozenset({"safety_checker"})
DEFAULT_LORA_FILE = "pytorch_lora_weights.safetensors"  # what diffusers' save_lora_weights writes
# `diffusion_pytorch_model.safetensors`, `model.fp16.safetensors`, `….fp16-00001-of-00002.safetensors`
_WEIGHTS = re.compile(r"^(?P<stem>[^./]+)(?:\.(?P<variant>\w+))?(?:-\d{5}-of-\d{5})?\.safetensors$")
# `diffusion_pytorch_model.safetensors.index.json`, `….safetensors.index.fp16.json`
_INDEX = re.compile(r"^(?P<stem>[^./]+)\.safetensors\.index(?:\.(?P<variant>\w+))?\.json$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
# A pipeline component is a folder name (`unet`, `text_encoder_2`); anything else in model_index.json is not fetched.
_COMPONENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_]*$")
# Configs and tokenizer files of a component (`.model` is a sentencepiece tokenizer).
_SMALL_FILES = (".json", ".txt", ".model")
DISK_HEADROOM = 16 * 1024 * 1024
PROGRESS_EVERY_S = 0.5

HINT_OFFLINE = (
    "check the network; set HF_ENDPOINT to a reachable hub mirror; or, offline, put the diffusers folder under "
    "models/ (a LoRA file under loras/) and use it by name (HF_HUB_OFFLINE=1 keeps everything local)"
)


class InstallError(RunnerError):
    """A taxonomy error with a hint: what the user can do about it."""

    def __init__(self, code: str, message: str, hint: str = ""):
        super().__init__(code, message)
        self.hint = hint


@dataclass(frozen=True)
class RepoEntry:
    path: str
    size: int
    sha256: str | None = None  # LFS files
    blob_id: str | None = None  # git blob id (every file)


@dataclass
class Selection:
    allow_patterns: list[str]
    files: list[RepoEntry]
    variant: str | None = None
    weight_name: str | None = None


# -- which files ----------------------------------------------------------------------------------------------------


def _is_pickle(path: str) -> bool:
    return path.endswith(PICKLE_SUFFIXES)


def _weights_variant(name: str) -> tuple[bool, str | None]:
    """(is a safetensors weights or index file, its variant or None)."""
    m = _WEIGHTS.match(name) or _INDEX.match(name)
    return (m is not None, m.group("variant") if m else None)


def select_base(entries: list[RepoEntry], model_index: dict, variant: str | None) -> Selection:
    """The files a diffusers pipeline loads: model_index.json, then per component its small files and one set of
    safetensors weights (the `variant` set where published, else the plain one)."""
    paths = {e.path for e in entries}
    patterns = ["model_index.json"]
    used_variant: str | None = None
    for component, spec in sorted(model_index.items()):
        if component.startswith("_") or component in SKIPPED_COMPONENTS or not _COMPONENT.match(component):
            continue
        if not (isinstance(spec, list) and len(spec) == 2 and spec[0] and spec[1]):
            continue  # an optional component the pipeline does not use (e.g. [null, null])
        children = [
            p[len(component) + 1 :]
            for p in paths
            if p.startswith(component + "/") and "/" not in p[len(component) + 1 :]
        ]
        sets: dict[str | None, list[str]] = {}
        pickles = []
        for name in children:
            is_weights, name_variant = _weights_variant(name)
            if is_weights:
                sets.setdefault(name_variant, []).append(name)
            elif _is_pickle(name):
                pickles.append(name)
            elif name.endswith(_SMALL_FILES) and ".bin.index" not in name:
                patterns.append(f"{glob.escape(component)}/{glob.escape(name)}")
        if variant in sets:
            chosen, chosen_variant = sets[variant], variant
        elif None in sets:
            chosen, chosen_variant = sets[None], None
        elif sets:
            # Only variant weights are published (e.g. fp16 only): take those rather than nothing.
            chosen_variant = sorted(sets, key=str)[0]
            chosen = sets[chosen_variant]
        elif pickles:
            raise InstallError(
                "UNSAFE_WEIGHTS",
                f"component {component!r} is published only as pickle ({', '.join(sorted(pickles))}); "
                "only safetensors weights are installed, because loading pickle runs code from the file",
                "pick a repository (or revision) that publishes .safetensors weights",
            )
        else:
            chosen, chosen_variant = [], None
        if chosen_variant is not None:
            used_variant = chosen_variant
        patterns.extend(f"{glob.escape(component)}/{glob.escape(name)}" for name in sorted(chosen))
    files = list(filter_repo_objects(entries, allow_patterns=patterns, key=lambda e: e.path))
    return Selection(allow_patterns=patterns, files=sorted(files, key=lambda e: e.path), variant=used_variant)


def select_lora(entries: list[RepoEntry], weight_name: str | None) -> Selection:
    """One LoRA weights file: the one named, else diffusers' default name, else the only safetensors file."""
    paths = sorted(e.path for e in entries)
    safetensors = [p for p in paths if p.endswith(".safetensors")]
    if weight_name:
        if weight_name not in paths:
            raise InstallError("HUB_NOT_FOUND", f"the repository has no file {weight_name!r}", "see its file list")
        if not weight_name.endswith(".safetensors"):
            raise InstallError(
                "UNSAFE_WEIGHTS" if _is_pickle(weight_name) else "HUB_REPO_UNSUPPORTED",
                f"{weight_name!r} is not a safetensors file; only safetensors LoRAs are installed",
                "name a .safetensors file",
            )
        chosen = weight_name
    elif DEFAULT_LORA_FILE in safetensors:
        chosen = DEFAULT_LORA_FILE
    else:
        top = [p for p in safetensors if "/" not in p]
        candidates = top or safetensors
        if len(candidates) == 1:
            chosen = candidates[0]
        elif candidates:
            raise InstallError(
                "HUB_REPO_UNSUPPORTED",
                f"the repository holds several LoRA files ({', '.join(candidates[:8])}); name the one to install",
                "pass weightName",
            )
        elif any(_is_pickle(p) for p in paths):
            raise InstallError(
                "UNSAFE_WEIGHTS",
                f"the LoRA is published only as pickle ({', '.join(p for p in paths if _is_pickle(p))}); "
                "only safetensors weights are installed, because loading pickle runs code from the file",
                "pick a LoRA published as .safetensors",
            )
        else:
            raise InstallError("HUB_REPO_UNSUPPORTED", "the repository holds no LoRA weights (.safetensors)", "")
    patterns = [glob.escape(chosen)]
    files = list(filter_repo_objects(entries, allow_patterns=patterns, key=lambda e: e.path))
    return Selection(allow_patterns=patterns, files=files, weight_name=chosen)


# -- how files are fetched ------------------------------------------------------------------------------------------


def classify(exc: BaseException) -> InstallError:
    """Hub and disk failures as taxonomy codes with a hint (order matters: GatedRepoError is a RepositoryNotFoundError,
    and every HfHubHTTPError is an OSError)."""
    if isinstance(exc, InstallError):
        return exc
    if isinstance(exc, HFValidationError):
        return InstallError("INVALID_REQUEST", f"invalid hub id: {exc}", "use owner/name")
    if isinstance(exc, OfflineModeIsEnabled):
        return InstallError("HUB_UNREACHABLE", "HF_HUB_OFFLINE is set, so nothing can be downloaded", HINT_OFFLINE)
    if isinstance(exc, GatedRepoError):
        return InstallError(
            "HUB_ACCESS_DENIED",
            "the repository is gated",
            "accept its terms on the hub page, then set HF_TOKEN for the worker",
        )
    if isinstance(exc, RepositoryNotFoundError):
        return InstallError(
            "HUB_NOT_FOUND", "no such repository on the hub", "check the id; a private repository needs HF_TOKEN"
        )
    if isinstance(exc, RevisionNotFoundError):
        return InstallError("HUB_NOT_FOUND", "the repository has no such revision", "check the branch, tag or commit")
    if isinstance(exc, RemoteEntryNotFoundError):
        return InstallError("HUB_NOT_FOUND", f"a file vanished from the hub: {exc}", "try again, or pin a commit")
    if isinstance(exc, HfHubHTTPError):
        status = exc.response.status_code if exc.response is not None else 0
        if status in (401, 403):
            return InstallError("HUB_ACCESS_DENIED", f"the hub refused access ({status})", "set HF_TOKEN")
        if status == 429 or status >= 500:
            return InstallError("HUB_UNREACHABLE", f"the hub answered {status}", f"try again later; {HINT_OFFLINE}")
        return InstallError("INSTALL_FAILED", f"the hub answered {status}: {exc}", "")
    if isinstance(exc, httpx2.TransportError | ConnectionError | TimeoutError):
        return InstallError("HUB_UNREACHABLE", f"cannot reach the hub: {type(exc).__name__}: {exc}", HINT_OFFLINE)
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return InstallError("INSUFFICIENT_STORAGE", f"the disk filled up: {exc}", "free space and install again")
    return InstallError("INSTALL_FAILED", f"{type(exc).__name__}: {exc}", "install again: finished bytes are kept")


def _file_digest(path: Path, entry: RepoEntry) -> tuple[str, str]:
    """(what was expected, what the file holds): sha256 for LFS files, git's blob id for the others."""
    if entry.sha256:
        h = hashlib.sha256()
        expected = entry.sha256
    else:
        h = hashlib.sha1(b"blob %d\0" % path.stat().st_size)
        expected = entry.blob_id or ""
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return expected, h.hexdigest()


class _CountingFile:
    """The file http_get writes into; reports each chunk so progress follows the bytes as they land."""

    def __init__(self, fh, on_write: Callable[[int, int], None]):
        self._fh = fh
        self._on_write = on_write

    def write(self, data: bytes) -> int:
        n = self._fh.write(data)
        self._on_write(len(data), self._fh.tell())
        return n

    def __getattr__(self, name):
        return getattr(self._fh, name)


@dataclass
class Progress:
    emit: Callable[[dict], None]
    bytes_total: int
    files_total: int
    bytes_done_files: int = 0  # bytes of files already complete
    files_done: int = 0
    current_file: str = ""
    current_bytes: int = 0
    _window: deque = field(default_factory=lambda: deque(maxlen=64))
    _session_bytes: int = 0
    _last_emit: float = 0.0

    def file_started(self, path: str, present: int) -> None:
        self.current_file, self.current_bytes = path, present
        self.report(force=True)

    def on_write(self, n: int, position: int) -> None:
        self._session_bytes += n
        self.current_bytes = position
        self.report()

    def file_done(self, size: int) -> None:
        self.bytes_done_files += size
        self.files_done += 1
        self.current_file, self.current_bytes = "", 0
        self.report(force=True)

    def report(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_emit < PROGRESS_EVERY_S:
            return
        self._last_emit = now
        self._window.append((now, self._session_bytes))
        while len(self._window) > 2 and now - self._window[0][0] > 10:
            self._window.popleft()
        t0, b0 = self._window[0]
        rate = (self._session_bytes - b0) / (now - t0) if now - t0 >= 0.2 else None
        done = self.bytes_done_files + self.current_bytes
        remaining = max(0, self.bytes_total - done)
        self.emit(
            {
                "event": "progress",
                "bytesDone": done,
                "bytesTotal": self.bytes_total,
                "filesDone": self.files_done,
                "filesTotal": self.files_total,
                "rateBps": round(rate) if rate is not None else None,
                "etaSeconds": round(remaining / rate) if rate else None,
                "file": self.current_file or None,
            }
        )


def _present_bytes(target: Path, entry: RepoEntry) -> int:
    if target.is_file() and target.stat().st_size == entry.size:
        return entry.size
    part = target.with_name(target.name + ".incomplete")
    return min(part.stat().st_size, entry.size) if part.is_file() else 0


def _inside(snapshot: Path, rel: str) -> Path:
    """`snapshot/rel`, refusing a listed path that would land elsewhere (a hub or mirror is not trusted with paths)."""
    parts = rel.split("/")
    if not rel or "\\" in rel or rel.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise InstallError("INSTALL_FAILED", f"the hub listed an unsafe file path {rel!r}", "")
    return snapshot.joinpath(*parts)


def _fetch(repo_id: str, commit: str, entry: RepoEntry, target: Path, endpoint: str | None, progress: Progress):
    """One file into `target`, resuming `<target>.incomplete`; verified before it is moved into place."""
    if target.is_file() and target.stat().st_size == entry.size:
        progress.file_done(entry.size)
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".incomplete")
    url = hf_hub_url(repo_id, entry.path, revision=commit, endpoint=endpoint)
    meta = get_hf_file_metadata(url)
    if meta.commit_hash and meta.commit_hash != commit:
        raise InstallError(
            "INSTALL_FAILED", f"the hub served {entry.path} from commit {meta.commit_hash}, not {commit}"
        )
    headers = build_hf_headers()
    location = meta.location or url
    if urlsplit(location).netloc != urlsplit(url).netloc:
        headers.pop("authorization", None)  # a signed CDN URL: the token stays with the hub
    have = part.stat().st_size if part.is_file() else 0
    if have > entry.size:
        part.unlink()
        have = 0
    progress.file_started(entry.path, have)
    with open(part, "r+b" if have else "wb") as fh:
        fh.seek(have)
        fh.truncate()
        http_get(
            location, _CountingFile(fh, progress.on_write), resume_size=have, headers=headers, expected_size=entry.size
        )
        fh.flush()
        os.fsync(fh.fileno())
    expected, actual = _file_digest(part, entry)
    if expected and expected != actual:
        part.unlink()
        raise InstallError("HASH_MISMATCH", f"{entry.path}: expected {expected}, got {actual}", "install again")
    os.replace(part, target)
    progress.file_done(entry.size)


# -- the install ----------------------------------------------------------------------------------------------------


def _entries(info) -> list[RepoEntry]:
    out = []
    for s in info.siblings or []:
        sha = s.lfs.sha256 if s.lfs is not None else None
        size = s.lfs.size if s.lfs is not None else s.size
        out.append(RepoEntry(path=s.rfilename, size=int(size or 0), sha256=sha, blob_id=s.blob_id))
    return out


def _check_disk(folder: Path, needed: int) -> None:
    free = shutil.disk_usage(folder).free
    if needed + DISK_HEADROOM > free:
        raise InstallError(
            "INSUFFICIENT_STORAGE",
            f"the install needs {needed / 1e6:.1f} MB more but {folder} has {free / 1e6:.1f} MB free",
            "free disk space, or point PIXELAI_MODELS_DIR at a bigger disk, then install again",
        )


@contextlib.contextmanager
def _repo_lock(folder: Path, emit: Callable[[dict], None]):
    """One installer per repository at a time (two would write the same .incomplete files)."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; the queue already runs one install per repository
        yield
        return
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".install.lock", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            emit({"event": "waiting", "message": "another install of this repository is running"})
            fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def install(
    repo_id: str,
    kind: str,
    dest: str | os.PathLike,
    *,
    revision: str = "main",
    variant: str | None = None,
    weight_name: str | None = None,
    endpoint: str | None = None,
    chunk_bytes: int = 1 << 20,
    emit: Callable[[dict], None] = lambda event: None,
) -> dict:
    """Installs `repo_id` at `revision` under `dest`; returns the `done` event (also emitted)."""
    validate_repo_id(repo_id)
    if repo_id.count("/") != 1:
        raise InstallError("INVALID_REQUEST", f"hub id must be owner/name, got {repo_id!r}")
    if kind not in ("base", "lora"):
        raise InstallError("INVALID_REQUEST", f"kind must be base or lora, got {kind!r}")
    # http_get reads the body in chunks of this size and writes each once complete: it bounds both how often progress
    # moves and how much a killed download loses (10 MiB by default).
    constants.DOWNLOAD_CHUNK_SIZE = chunk_bytes
    info = HfApi(endpoint=endpoint).model_info(repo_id, revision=revision, files_metadata=True)
    commit = info.sha or ""
    if not _COMMIT.match(commit):
        raise InstallError("INSTALL_FAILED", f"the hub answered an invalid commit id {commit!r}")
    entries = _entries(info)
    repo_dir = Path(dest).resolve() / repo_id
    snapshot = repo_dir / commit
    with _repo_lock(repo_dir, emit):
        marker = snapshot / MARKER
        if marker.is_file():
            done = json.loads(marker.read_text())
            same = done.get("variant") == variant if kind == "base" else weight_name in (None, done.get("weightName"))
            if done.get("kind") == kind and same:
                event = {"event": "done", **done, "path": str(snapshot), "reused": True}
                emit(event)
                return event
        snapshot.mkdir(parents=True, exist_ok=True)
        if kind == "base":
            if "model_index.json" not in {e.path for e in entries}:
                raise InstallError(
                    "HUB_REPO_UNSUPPORTED",
                    f"{repo_id} is not a diffusers pipeline (no model_index.json)",
                    "a LoRA is installed with kind lora; a single-file checkpoint must be converted to diffusers first",
                )
            # The component list decides what else to fetch; its bytes count again (as present) in the totals below.
            index_entry = next(e for e in entries if e.path == "model_index.json")
            _fetch(
                repo_id, commit, index_entry, snapshot / "model_index.json", endpoint, Progress(lambda e: None, 0, 1)
            )
            selection = select_base(entries, json.loads((snapshot / "model_index.json").read_text()), variant)
        else:
            selection = select_lora(entries, weight_name)
        present = {e.path: _present_bytes(_inside(snapshot, e.path), e) for e in selection.files}
        total = sum(e.size for e in selection.files)
        _check_disk(snapshot, total - sum(present.values()))
        emit(
            {
                "event": "resolved",
                "repo": repo_id,
                "revision": revision,
                "commit": commit,
                "kind": kind,
                "variant": selection.variant,
                "weightName": selection.weight_name,
                "allowPatterns": selection.allow_patterns,
                "files": [{"path": e.path, "size": e.size} for e in selection.files],
                "bytesTotal": total,
                "filesTotal": len(selection.files),
                "bytesPresent": sum(present.values()),
            }
        )
        progress = Progress(emit, total, len(selection.files))
        for entry in selection.files:
            _fetch(repo_id, commit, entry, _inside(snapshot, entry.path), endpoint, progress)
        record = {
            "repo": repo_id,
            "revision": revision,
            "commit": commit,
            "kind": kind,
            "variant": selection.variant,
            "weightName": selection.weight_name,
            "files": {e.path: {"size": e.size, "sha256": e.sha256} for e in selection.files},
            "bytesTotal": total,
            "filesTotal": len(selection.files),
        }
        tmp = snapshot / (MARKER + ".tmp")
        tmp.write_text(json.dumps(record, indent=2) + "\n")
        os.replace(tmp, marker)
    event = {"event": "done", **record, "path": str(snapshot), "reused": False}
    emit(event)
    return event


def _exit_when_parent_goes() -> None:
    """Our stdin is the worker's pipe: end of file means the worker died, so stop downloading for it."""
    try:
        while sys.stdin.buffer.read(4096):
            pass
    finally:
        os._exit(3)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", required=True, help="hub id owner/name")
    parser.add_argument("--revision", default="main", help="branch, tag or commit (default: main)")
    parser.add_argument("--kind", required=True, choices=("base", "lora"))
    parser.add_argument("--dest", required=True, help="folder that receives <owner>/<name>/<commit>/")
    parser.add_argument("--variant", default="none", help="weights variant to prefer (fp16), or none")
    parser.add_argument("--weight-name", default=None, help="LoRA: the weights file to install")
    parser.add_argument("--chunk-bytes", type=int, default=1 << 20, help="download chunk (progress granularity)")
    parser.add_argument("--exit-with-parent", action="store_true", help="exit when stdin closes")
    args = parser.parse_args(argv)
    if args.exit_with_parent:
        threading.Thread(target=_exit_when_parent_goes, daemon=True).start()
    lock = threading.Lock()

    def emit(event: dict) -> None:
        with lock:
            sys.stdout.write(json.dumps(event) + "\n")
            sys.stdout.flush()

    try:
        install(
            args.repo,
            args.kind,
            args.dest,
            revision=args.revision,
            variant=None if args.variant == "none" else args.variant,
            weight_name=args.weight_name,
            chunk_bytes=args.chunk_bytes,
            emit=emit,
        )
        return 0
    except Exception as exc:  # noqa: BLE001 - every failure leaves as one taxonomy line
        err = classify(exc)
        emit({"event": "error", "code": err.code, "message": err.message, "hint": err.hint})
        return 1


if __name__ == "__main__":
    sys.exit(main())
