"""Shared fixtures: python/ on sys.path, and the tiny offline pipelines (reused from models/ when up to date)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
PYTHON_DIR = REPO_ROOT / "python"
if str(PYTHON_DIR) not in sys.path:
    sys.path.insert(0, str(PYTHON_DIR))


def load_script(name: str):
    """Imports scripts/<name>.py as a module (the scripts are CLIs, not a package)."""
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def tiny_model_script():
    return load_script("make_tiny_model")


@pytest.fixture(scope="session")
def tiny_models(tiny_model_script, tmp_path_factory) -> dict[str, Path]:
    """{"tiny-sd": Path, "tiny-sdxl": Path}: the repo's models/ when already built by this script version, else a
    fresh build in a temp dir (never writes into the repo from a test run)."""
    shared = REPO_ROOT / "models"
    if all(tiny_model_script._is_current(shared / name) for name in tiny_model_script.MODEL_NAMES):
        return {name: shared / name for name in tiny_model_script.MODEL_NAMES}
    return tiny_model_script.build_tiny_models(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="session")
def tiny_sd(tiny_models) -> Path:
    return tiny_models["tiny-sd"]


@pytest.fixture(scope="session")
def tiny_sdxl(tiny_models) -> Path:
    return tiny_models["tiny-sdxl"]
