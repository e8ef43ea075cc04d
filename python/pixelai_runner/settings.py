"""What a runner is configured with: command-line options built from the schema's RunnerSettings (the Node supervisor
writes them from its config, src/config.ts). The runner reads no environment variable of its own.

Standard library only: __main__ parses these before fd 1 is safe to print on.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
from dataclasses import dataclass, fields

from . import contract


@dataclass(frozen=True)
class RunnerSettings:
    engine: str = "torch"
    device: str = "auto"
    pipeline_cache: int = 2
    mlx_dtype: str = "auto"
    mlx_blas: str = "auto"
    birefnet_dir: str = ""
    auto_install: bool = False
    model_roots: str = ""
    pip_command: str = ""

    @property
    def forced_device(self) -> str | None:
        return None if self.device == "auto" else self.device

    @property
    def forced_mlx_dtype(self) -> str | None:
        return None if self.mlx_dtype == "auto" else self.mlx_dtype

    @property
    def roots(self) -> list[str]:
        return [r for r in self.model_roots.split(os.pathsep) if r]

    @property
    def pip_argv(self) -> list[str]:
        return shlex.split(self.pip_command)


def snake(name: str) -> str:
    return re.sub(r"[A-Z]", lambda m: "_" + m.group(0).lower(), name)


def option(name: str) -> str:
    """camelCase schema name → its command-line option (runnerArgv in src/backends/runner-contract.ts does the same)."""
    return "--" + re.sub(r"[A-Z]", lambda m: "-" + m.group(0).lower(), name)


def parser() -> argparse.ArgumentParser:
    """One option per RunnerSettings property, with the schema's enum as choices and its default."""
    parse = argparse.ArgumentParser(prog="python -m pixelai_runner", description="PixelAI warm inference runner")
    spec = contract.definition("RunnerSettings")
    defaults = RunnerSettings()
    for name, prop in spec["properties"].items():
        if "$ref" in prop:
            prop = contract.definition(prop["$ref"].rsplit("/", 1)[-1])
        dest = snake(name)
        default = getattr(defaults, dest)
        kind = prop.get("type")
        if kind == "boolean":
            parse.add_argument(option(name), dest=dest, action="store_true", help=prop.get("description"))
            continue
        convert = int if kind == "integer" else str
        parse.add_argument(
            option(name),
            dest=dest,
            type=convert,
            choices=prop.get("enum"),
            default=default,
            help=prop.get("description"),
        )
    return parse


def parse_args(argv: list[str] | None = None) -> RunnerSettings:
    values = vars(parser().parse_args(argv))
    try:
        contract.validate("RunnerSettings", {_camel(f.name): values[f.name] for f in fields(RunnerSettings)})
    except contract.ContractError as exc:
        parser().error(str(exc))
    return RunnerSettings(**values)


def _camel(name: str) -> str:
    return re.sub(r"_([a-z])", lambda m: m.group(1).upper(), name)


# The process's settings. Only the one choice that must be made before a library loads reads this (which BLAS mlx
# binds to, backends/mlx/__init__.py); everything else is handed its settings explicitly.
_current = RunnerSettings()


def use(settings: RunnerSettings) -> None:
    global _current
    _current = settings


def current() -> RunnerSettings:
    return _current
