"""JSON-lines framing for the runner's stdio protocol (docs/runner-protocol.md). Standard library only, on purpose:
it is imported before fd 1 is redirected, so it must not pull in anything that could print."""

from __future__ import annotations

import json
import os
import sys
import threading
from typing import Any

from . import contract

# The ops and the shape of each request come from the schema (RunnerOps), so a new op is declared there once.
OPS = tuple(contract.definition("RunnerOps")["properties"])


class ProtocolError(Exception):
    """A request line we cannot act on; answered with INVALID_REQUEST, the runner keeps going."""

    def __init__(self, message: str, request_id: Any = None):
        super().__init__(message)
        self.request_id = request_id


def reserve_stdout_for_protocol() -> int:
    """Keep a private duplicate of fd 1 for protocol lines and point fd 1 (and sys.stdout) at stderr.

    Done at the fd level, not just sys.stdout, because native code (CUDA, MLX, C printf) writes to fd 1 directly.
    Returns the protocol fd; it is not inherited by child processes.
    """
    sys.stdout.flush()
    protocol_fd = os.dup(1)
    os.set_inheritable(protocol_fd, False)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return protocol_fd


class ProtocolWriter:
    """Writes one JSON object per line to the protocol fd; safe to call from the reader and worker threads."""

    def __init__(self, fd: int):
        self._stream = os.fdopen(fd, "w", encoding="utf-8", buffering=1, newline="\n")
        self._lock = threading.Lock()

    def send(self, message: dict) -> None:
        line = json.dumps(message, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        with self._lock:
            self._stream.write(line + "\n")
            self._stream.flush()

    def event(self, request_id: Any, event: str, **fields: Any) -> None:
        self.send({"id": request_id, "event": event, **fields})

    def error(self, request_id: Any, code: str, message: str) -> None:
        self.send(error_line(request_id, code, message))

    def close(self) -> None:
        with self._lock:
            try:
                self._stream.close()
            except OSError:
                pass  # a line the supervisor can no longer read (it is gone) is not worth failing the exit over


def error_line(request_id: Any, code: str, message: str) -> dict:
    """The ErrorEvent a request ends with when it fails."""
    return {"id": request_id, "event": "error", "code": code, "message": message}


def parse_request(line: str) -> dict:
    """Decode and check one request line against its op's schema; raises ProtocolError (naming the bad field) with
    whatever id could be recovered."""
    try:
        message = json.loads(line)
    except ValueError as exc:
        raise ProtocolError(f"unparsable request line: {exc}") from None
    if not isinstance(message, dict):
        raise ProtocolError("a request must be a JSON object")
    request_id: Any | None = message.get("id")
    if not isinstance(request_id, (str, int)) or isinstance(request_id, bool) or request_id == "":
        raise ProtocolError(
            "a request needs a non-empty string or integer id", request_id if _plain(request_id) else None
        )
    op = message.get("op")
    if op not in OPS:
        raise ProtocolError(f"unknown op {op!r} (expected one of {', '.join(OPS)})", request_id)
    try:
        contract.validate(request_definition(op), message)
    except contract.ContractError as exc:
        raise ProtocolError(f"bad {op} request: {exc}", request_id) from None
    return message


def request_definition(op: str) -> str:
    """The schema's $defs name of `op`'s request (RunnerOps.<op>.request)."""
    op_ref = contract.definition("RunnerOps")["properties"][op]["$ref"]
    return contract.definition(op_ref.rsplit("/", 1)[-1])["properties"]["request"]["$ref"].rsplit("/", 1)[-1]


def _plain(value: Any) -> bool:
    return isinstance(value, (str, int, float)) and not isinstance(value, bool)
