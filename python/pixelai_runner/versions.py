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


if __name__ == "__main__":  # `python -m pixelai_runner.versions torch mlx …`: one JSON line, for the Node benches
    import json
    import sys

    print(json.dumps(package_versions(*sys.argv[1:])))
