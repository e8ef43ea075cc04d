#!/usr/bin/env python3
"""A local stand-in for the model hub, for tests: serves repository folders over HTTP on 127.0.0.1.

`<root>/<owner>/<name>/` is one repository (test/support/fake-hub-repos.py builds the standard ones). Clients reach
it through `HF_ENDPOINT=http://127.0.0.1:<port>`, so huggingface_hub talks to it exactly as to the real hub. What is
served, and which huggingface_hub 2.4.0 code reads it:

- `GET /api/models/{repo}` and `/api/models/{repo}/revision/{rev}`: `sha` (the commit) and `siblings`
  (`rfilename`; with `?blobs=true` also `size`, `blobId`, `lfs{sha256,size,pointerSize}`) — hf_api.py
  `HfApi.model_info` and `ModelInfo.__init__`.
- `GET /api/models/{repo}/tree/{rev}[/{path}]?recursive=`: files and folders (`type`, `oid`, `size`, `path`, `lfs`) —
  hf_api.py `HfApi._iter_repo_tree_pages` / `RepoFile` / `RepoFolder`; what `snapshot_download` lists.
- `HEAD`/`GET /{repo}/resolve/{rev}/{file}`: `X-Repo-Commit`, `ETag`, and for LFS files `X-Linked-Etag` (sha256) and
  `X-Linked-Size` — file_download.py `get_hf_file_metadata`; `Content-Length`, and `Range: bytes=N-` answered `206`
  with `Content-Range` — file_download.py `http_get` (resumes with `_adjust_range_header`) and
  `_get_file_length_from_http_response`.
- Errors as the hub sends them: `404` with `X-Error-Code: RepoNotFound | RevisionNotFound | EntryNotFound` and
  `X-Error-Message` — utils/_http.py `hf_raise_for_status`; `EntryNotFound` carries `X-Repo-Commit`
  (file_download.py `_get_metadata_or_catch_error` reads it).

Fault switches for tests, on the same port under `/__fake_hub/`:

- `POST /__fake_hub/faults` `{"down": true}`: every hub route answers `503` (the hub is down) until cleared;
  `{"stall": {"file": "<repo>/<path>", "afterBytes": N}}`: a download of that file sends N bytes, then stalls until
  the fault is cleared (a worker can be killed mid-file); `{"throttleBps": N}`: file bodies at about N bytes/s.
  Each POST replaces all faults; `{}` clears them.
- `GET /__fake_hub/log`: every file request (`method`, `path`, `rangeStart`, `status`, `bytesSent`), and `stalled`
  (a download is held by a stall right now). `POST /__fake_hub/log/clear` empties it.

    python test/support/fake-hub.py --root build/fake-hub [--port 0] [--exit-with-parent]

Prints one JSON line `{"event": "listening", "url": ...}` when ready.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

# Extensions the hub stores through LFS (the real repos declare them in .gitattributes).
LFS_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt", ".pth", ".pkl", ".onnx", ".msgpack", ".h5")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
CHUNK = 16 * 1024


class RepoFileInfo:
    def __init__(self, path: str, full: Path):
        data = full.read_bytes()
        self.path = path
        self.full = full
        self.size = len(data)
        self.sha256 = hashlib.sha256(data).hexdigest()
        # git's blob id: what the hub reports as `oid`/`blobId` and as ETag of a non-LFS file.
        self.blob_id = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        self.lfs = path.endswith(LFS_SUFFIXES)

    def etag(self) -> str:
        return self.sha256 if self.lfs else self.blob_id


class Repo:
    """One repository folder, read once: its files, and a commit id derived from their content."""

    def __init__(self, repo_id: str, folder: Path):
        self.repo_id = repo_id
        self.files: dict[str, RepoFileInfo] = {}
        for full in sorted(folder.rglob("*")):
            if full.is_file():
                rel = full.relative_to(folder).as_posix()
                self.files[rel] = RepoFileInfo(rel, full)
        digest = hashlib.sha1(b"pixelai-fake-hub\n")
        for rel, info in self.files.items():
            digest.update(f"{rel} {info.sha256}\n".encode())
        self.sha = digest.hexdigest()

    def resolve(self, revision: str) -> str | None:
        return self.sha if revision in ("main", self.sha) else None


class HubState:
    def __init__(self, root: Path):
        self.root = root
        self.repos: dict[str, Repo] = {}
        self.lock = threading.Lock()
        self.faults: dict = {}
        self.log: list[dict] = []
        self.stalled = 0

    def repo(self, owner: str, name: str) -> Repo | None:
        if not (_NAME.match(owner) and _NAME.match(name)):
            return None
        repo_id = f"{owner}/{name}"
        with self.lock:
            if repo_id not in self.repos:
                folder = self.root / owner / name
                if not folder.is_dir():
                    return None
                self.repos[repo_id] = Repo(repo_id, folder)
            return self.repos[repo_id]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fake-hub/1"
    state: HubState

    def log_message(self, format, *args):  # noqa: A002 - the base class's signature
        pass

    # -- plumbing --------------------------------------------------------------------------------------------------
    def _send(self, status: int, body: bytes = b"", headers: dict | None = None, content_type="application/json"):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, obj, headers: dict | None = None):
        self._send(status, json.dumps(obj).encode(), headers)

    def _hub_error(self, code: str, message: str, headers: dict | None = None):
        self._json(404, {"error": message}, {"X-Error-Code": code, "X-Error-Message": message, **(headers or {})})

    def do_HEAD(self):
        self._route()

    def do_GET(self):
        self._route()

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        url = urlsplit(self.path)
        if url.path == "/__fake_hub/faults":
            faults = json.loads(body or b"{}")
            with self.state.lock:
                self.state.faults = faults
            return self._json(200, {"faults": faults})
        if url.path == "/__fake_hub/log/clear":
            with self.state.lock:
                self.state.log.clear()
            return self._json(200, {"cleared": True})
        self._json(404, {"error": "no such route"})

    # -- routes ----------------------------------------------------------------------------------------------------
    def _route(self):
        url = urlsplit(self.path)
        if url.path == "/__fake_hub/log":
            with self.state.lock:
                return self._json(200, {"requests": list(self.state.log), "stalled": self.state.stalled > 0})
        with self.state.lock:
            down = bool(self.state.faults.get("down"))
        if down:
            return self._send(503, b"Service Unavailable", content_type="text/plain")
        parts = url.path.split("/")[1:]  # still percent-encoded: a revision may hold an encoded '/'
        query = parse_qs(url.query)
        if len(parts) >= 3 and parts[0] == "api" and parts[1] == "models":
            return self._api(parts[2:], query)
        if len(parts) >= 5 and parts[2] == "resolve":
            return self._resolve(parts[0], parts[1], unquote(parts[3]), unquote("/".join(parts[4:])))
        self._json(404, {"error": "no such route"})

    def _api(self, rest: list[str], query: dict):
        if len(rest) < 2:
            return self._json(404, {"error": "no such route"})
        repo = self.state.repo(rest[0], rest[1])
        if repo is None:
            return self._hub_error("RepoNotFound", "Repository not found")
        tail = rest[2:]
        if not tail or (tail[0] == "revision" and len(tail) == 2):
            revision = unquote(tail[1]) if tail else "main"
            sha = repo.resolve(revision)
            if sha is None:
                return self._hub_error("RevisionNotFound", f"Invalid rev id: {revision}")
            return self._json(200, self._model_info(repo, sha, query.get("blobs", [""])[0].lower() == "true"))
        if tail[0] == "tree" and len(tail) >= 2:
            revision = unquote(tail[1])
            if repo.resolve(revision) is None:
                return self._hub_error("RevisionNotFound", f"Invalid rev id: {revision}")
            prefix = unquote("/".join(tail[2:])).strip("/")
            recursive = query.get("recursive", [""])[0].lower() in ("true", "1")
            return self._json(200, self._tree(repo, prefix, recursive))
        self._json(404, {"error": "no such route"})

    @staticmethod
    def _model_info(repo: Repo, sha: str, blobs: bool) -> dict:
        siblings = []
        for info in repo.files.values():
            sibling: dict = {"rfilename": info.path}
            if blobs:
                sibling.update(size=info.size, blobId=info.blob_id)
                if info.lfs:
                    sibling["lfs"] = {"sha256": info.sha256, "size": info.size, "pointerSize": 134}
            siblings.append(sibling)
        return {
            "_id": sha[:24],
            "id": repo.repo_id,
            "modelId": repo.repo_id,
            "author": repo.repo_id.split("/")[0],
            "sha": sha,
            "private": False,
            "gated": False,
            "disabled": False,
            "tags": [],
            "siblings": siblings,
        }

    @staticmethod
    def _tree(repo: Repo, prefix: str, recursive: bool) -> list[dict]:
        entries: dict[str, dict] = {}
        for info in repo.files.values():
            if prefix and not info.path.startswith(prefix + "/"):
                continue
            rel = info.path[len(prefix) + 1 :] if prefix else info.path
            segments = rel.split("/")
            for depth in range(1, len(segments)):
                folder = "/".join(([prefix] if prefix else []) + segments[:depth])
                if recursive or depth == 1:
                    entries.setdefault(folder, {"type": "directory", "oid": "0" * 40, "size": 0, "path": folder})
            if recursive or len(segments) == 1:
                entry = {"type": "file", "oid": info.blob_id, "size": info.size, "path": info.path}
                if info.lfs:
                    entry["lfs"] = {"oid": info.sha256, "size": info.size, "pointerSize": 134}
                entries[info.path] = entry
        return [entries[k] for k in sorted(entries)]

    def _resolve(self, owner: str, name: str, revision: str, path: str):
        repo = self.state.repo(owner, name)
        if repo is None:
            return self._hub_error("RepoNotFound", "Repository not found")
        sha = repo.resolve(revision)
        if sha is None:
            return self._hub_error("RevisionNotFound", f"Invalid rev id: {revision}")
        info = repo.files.get(path)
        if info is None:
            return self._hub_error("EntryNotFound", f"{path} does not exist", {"X-Repo-Commit": sha})
        headers = {"X-Repo-Commit": sha, "ETag": f'"{info.etag()}"', "Accept-Ranges": "bytes"}
        if info.lfs:
            headers.update({"X-Linked-Etag": f'"{info.sha256}"', "X-Linked-Size": str(info.size)})
        start = 0
        m = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", "") or "")
        if m:
            start = int(m.group(1))
            if start >= info.size:
                return self._send(416, b"", {**headers, "Content-Range": f"bytes */{info.size}"})
        entry = {"method": self.command, "path": f"{repo.repo_id}/{path}", "rangeStart": start if m else None}
        status = 206 if m else 200
        entry["status"] = status
        entry["bytesSent"] = 0
        with self.state.lock:
            self.state.log.append(entry)
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(info.size - start))
        if m:
            self.send_header("Content-Range", f"bytes {start}-{info.size - 1}/{info.size}")
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command == "HEAD":
            return
        self._stream(info, start, entry, f"{repo.repo_id}/{path}")

    def _stream(self, info: RepoFileInfo, start: int, entry: dict, key: str):
        with open(info.full, "rb") as fh:
            fh.seek(start)
            offset = start
            try:
                while offset < info.size:
                    with self.state.lock:
                        faults = dict(self.state.faults)
                    stall = faults.get("stall") or {}
                    limit = info.size
                    if stall.get("file") == key and offset < int(stall.get("afterBytes", 0)):
                        limit = int(stall["afterBytes"])
                    elif stall.get("file") == key:
                        self._hold(key)
                        continue
                    chunk = fh.read(min(CHUNK, limit - offset))
                    self.wfile.write(chunk)
                    self.wfile.flush()
                    offset += len(chunk)
                    with self.state.lock:
                        entry["bytesSent"] += len(chunk)
                    if faults.get("throttleBps"):
                        time.sleep(len(chunk) / float(faults["throttleBps"]))
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True

    def _hold(self, key: str):
        """Keeps the response open, sending nothing, while the stall fault for `key` stands."""
        with self.state.lock:
            self.state.stalled += 1
        try:
            while True:
                with self.state.lock:
                    if (self.state.faults.get("stall") or {}).get("file") != key:
                        return
                time.sleep(0.05)
        finally:
            with self.state.lock:
                self.state.stalled -= 1


def _exit_when_parent_goes() -> None:
    """Our stdin is the parent's pipe: end of file means the parent died, so do not outlive it."""
    try:
        while sys.stdin.buffer.read(4096):
            pass
    finally:
        os._exit(0)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", required=True, help="folder of <owner>/<name>/ repositories")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--exit-with-parent", action="store_true", help="exit when stdin closes")
    args = parser.parse_args(argv)
    Handler.state = HubState(Path(args.root).resolve())
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    if args.exit_with_parent:
        threading.Thread(target=_exit_when_parent_goes, daemon=True).start()
    print(json.dumps({"event": "listening", "url": f"http://127.0.0.1:{server.server_address[1]}"}), flush=True)
    try:
        server.serve_forever(poll_interval=0.1)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
