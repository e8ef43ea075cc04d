"""Installed package versions for `probe`, read from metadata so nothing heavy (or broken) gets imported."""

from __future__ import annotations

import platform
from importlib import metadata


def package_versions(*names: str) -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions
