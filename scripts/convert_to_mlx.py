#!/usr/bin/env python3
"""Convert a diffusers Stable Diffusion / SDXL pipeline into the MLX engine's folder format.

    python scripts/convert_to_mlx.py SOURCE [--name NAME] [--dtype float16|float32] [--out models/mlx]
                                     [--quantize 8|4 [--group-size 32|64|128]]

SOURCE is a local diffusers folder, or a hub id (downloaded with huggingface_hub; only where a hub is reachable).
Writes models/mlx/<NAME>/ with per-component safetensors in MLX layout and a manifest.json (file sha256s and sizes);
layout in python/pixelai_runner/backends/mlx/manifest.py. Re-running on an unchanged source is a no-op.

Machine-readable output for the Node conversion worker:
  stderr: `PROGRESS <done> <total>` lines (plus a tqdm bar for people)
  stdout: one final JSON line, {"event":"done","path":…,"manifest":…,"unchanged":bool}
          or {"event":"error","code":…,"message":…} with exit status 1.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "python"))

from pixelai_runner.backends.mlx.convert import DTYPES  # noqa: E402
from pixelai_runner.backends.mlx.convert import convert as _convert  # noqa: E402
from pixelai_runner.backends.mlx.quantize import BITS, GROUP_SIZES  # noqa: E402
from pixelai_runner.errors import RunnerError  # noqa: E402


def convert(source, name, dtype="float16", out_root="models/mlx", on_progress=None, quantize=None, group_size=64):
    """Importable entry point: see pixelai_runner.backends.mlx.convert.convert."""
    return _convert(
        source,
        name,
        dtype=dtype,
        out_root=out_root,
        on_progress=on_progress,
        quantize=quantize,
        group_size=group_size,
    )


def default_name(source: str) -> str:
    """A safe folder name from the source's last path component (hub ids: the repo name)."""
    base = Path(source.rstrip("/\\")).name or "model"
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", base).lstrip("._-").replace("..", ".")
    return (cleaned or "model")[:64]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", help="local diffusers folder or hub id")
    parser.add_argument("--name", help="folder name under --out (default: from the source)")
    parser.add_argument("--dtype", default="float16", choices=sorted(DTYPES))
    parser.add_argument("--out", default="models/mlx", help="root of converted models (default: models/mlx)")
    parser.add_argument("--quantize", type=int, choices=BITS, help="bits per linear-layer weight (default: none)")
    parser.add_argument("--group-size", type=int, default=64, choices=GROUP_SIZES, help="weights sharing one scale")
    args = parser.parse_args(argv)

    from tqdm import tqdm

    # The bar only draws on a terminal (disable=None); a pipe (the Node worker) gets clean PROGRESS lines only.
    bar = tqdm(total=None, desc="convert", unit="part", file=sys.stderr, disable=None)

    def on_progress(done: int, total: int) -> None:
        if bar.disable:
            print(f"PROGRESS {done} {total}", file=sys.stderr, flush=True)
        else:
            tqdm.write(f"PROGRESS {done} {total}", file=sys.stderr)
        bar.total = total
        bar.n = done
        bar.refresh()

    try:
        name = args.name or default_name(args.source)
        result = convert(args.source, name, args.dtype, args.out, on_progress, args.quantize, args.group_size)
    except RunnerError as exc:
        bar.close()
        print(json.dumps({"event": "error", "code": exc.code, "message": exc.message}), flush=True)
        return 1
    bar.close()
    print(json.dumps({"event": "done", **result}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
