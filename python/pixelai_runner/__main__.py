"""Entry point: `python -m pixelai_runner --engine torch|mlx`.

stdout is claimed for the protocol before anything else is imported: torch, diffusers, MLX and their native code may
print, and a single stray byte on fd 1 would corrupt the JSON-lines stream the Node supervisor parses.
"""

from __future__ import annotations

import argparse
import sys

from .protocol import ProtocolWriter, reserve_stdout_for_protocol


def main(argv=None) -> int:
    protocol_fd = reserve_stdout_for_protocol()
    parser = argparse.ArgumentParser(prog="python -m pixelai_runner", description="PixelAI warm inference runner")
    parser.add_argument("--engine", choices=("torch", "mlx"), default="torch")
    args = parser.parse_args(argv)

    from .runner import Runner  # imports numpy/PIL; only after fd 1 is safe

    writer = ProtocolWriter(protocol_fd)
    # Line-buffered text stdin: one request per line, answered as soon as it arrives.
    stdin = open(sys.stdin.fileno(), encoding="utf-8", errors="replace", buffering=1, closefd=False)
    code = Runner(args.engine, writer).serve(stdin)
    writer.close()
    return code


if __name__ == "__main__":
    sys.exit(main())
