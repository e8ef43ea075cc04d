"""The local stand-in hub (test/support/fake-hub.py) as a pytest fixture: the same server the TypeScript tests spawn."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SUPPORT = REPO_ROOT / "test" / "support"


def _load(name: str, filename: str):
    spec = importlib.util.spec_from_file_location(name, SUPPORT / filename)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


fake_hub_repos = _load("fake_hub_repos", "fake-hub-repos.py")


class FakeHub:
    """A running fake hub: its URL (for HF_ENDPOINT / endpoint=), its served folders, and its fault switches."""

    def __init__(self, root: Path):
        self.root = root
        self.proc = subprocess.Popen(
            [sys.executable, str(SUPPORT / "fake-hub.py"), "--root", str(root), "--exit-with-parent"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("fake hub did not start")
        self.url = json.loads(line)["url"]

    def _call(self, path: str, body: dict | None = None) -> dict:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method="GET" if body is None else "POST")
        with urllib.request.urlopen(req, timeout=10) as res:
            return json.loads(res.read())

    def faults(self, **faults) -> None:
        """Replaces every fault (no arguments: clears them)."""
        self._call("/__fake_hub/faults", faults)

    def log(self) -> dict:
        return self._call("/__fake_hub/log")

    def clear_log(self) -> None:
        self._call("/__fake_hub/log/clear", {})

    def file(self, repo_id: str, path: str) -> Path:
        return self.root / repo_id / path

    def stop(self) -> None:
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="session")
def hub_repos() -> Path:
    return fake_hub_repos.build_repos()


@pytest.fixture
def fake_hub(hub_repos):
    hub = FakeHub(hub_repos)
    try:
        yield hub
    finally:
        hub.stop()
