"""Drives a real runner subprocess over its stdio protocol, with timeouts, for the protocol tests."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

PYTHON_DIR = Path(__file__).resolve().parents[1]


class RunnerProcess:
    def __init__(self, argv: list[str], stderr_path: Path, env: dict | None = None):
        full_env = dict(os.environ)
        full_env["PYTHONPATH"] = str(PYTHON_DIR) + os.pathsep + full_env.get("PYTHONPATH", "")
        full_env.update(env or {})
        self.stderr_path = stderr_path
        self._stderr = open(stderr_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, *argv], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, env=full_env
        )
        self.raw_lines: list[bytes] = []
        self._lines: queue.Queue[dict | None] = queue.Queue()
        self._backlog: list[dict] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for raw in self.proc.stdout:
            self.raw_lines.append(raw)
            # Every stdout line must be a JSON object; anything else is a protocol corruption the tests catch.
            self._lines.put(json.loads(raw))
        self._lines.put(None)

    def send(self, message: Any) -> None:
        data = message if isinstance(message, (str, bytes)) else json.dumps(message)
        if isinstance(data, str):
            data = data.encode()
        self.proc.stdin.write(data + b"\n")
        self.proc.stdin.flush()

    def next_message(self, predicate, timeout: float = 60.0) -> dict:
        for i, message in enumerate(self._backlog):
            if predicate(message):
                return self._backlog.pop(i)
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no matching message in {timeout}s; stderr tail:\n{self.stderr_tail()}")
            message = self._lines.get(timeout=remaining)
            if message is None:
                raise EOFError(f"runner closed stdout; stderr tail:\n{self.stderr_tail()}")
            if predicate(message):
                return message
            self._backlog.append(message)

    def final(self, request_id: Any, timeout: float = 60.0) -> dict:
        """The result or error line for `request_id`."""
        return self.next_message(lambda m: m.get("id") == request_id and m.get("event") in ("result", "error"), timeout)

    def events(self, request_id: Any, timeout: float = 60.0) -> tuple[list[dict], dict]:
        """(progress events, final event) for `request_id`, in order."""
        progress = []
        while True:
            message = self.next_message(lambda m: m.get("id") == request_id, timeout)
            if message["event"] == "progress":
                progress.append(message)
            else:
                return progress, message

    def request(self, message: dict, timeout: float = 60.0) -> dict:
        self.send(message)
        return self.final(message["id"], timeout)

    def stderr_tail(self, size: int = 4000) -> str:
        self._stderr.flush()
        return self.stderr_path.read_bytes()[-size:].decode(errors="replace")

    def close(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._stderr.close()
        return self.proc.returncode
