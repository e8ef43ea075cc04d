"""Entry point: `python -m pixelai_runner --engine torch|mlx [settings…]` (options: settings.py, from the schema).

stdout is claimed for the protocol before anything else is imported: torch, diffusers, MLX and their native code may
print, and a single stray byte on fd 1 would corrupt the JSON-lines stream the Node supervisor parses.
"""

from __future__ import annotations

import os
import sys

from .protocol import ProtocolWriter, reserve_stdout_for_protocol


def main(argv=None) -> int:
    protocol_fd = reserve_stdout_for_protocol()
    from . import settings as runner_settings

    settings = runner_settings.parse_args(argv)
    # Before any backend import: the BLAS choice must be made before mlx loads (backends/mlx/__init__.py).
    runner_settings.use(settings)

    from .runner import Runner  # imports numpy/PIL; only after fd 1 is safe

    writer = ProtocolWriter(protocol_fd)
    # Line-buffered text stdin: one request per line, answered as soon as it arrives.
    stdin = open(sys.stdin.fileno(), encoding="utf-8", errors="replace", buffering=1, closefd=False)
    code = Runner(settings, writer).serve(stdin)
    writer.close()
    return code


if __name__ == "__main__":
    exit_code = main()
    # Skip interpreter teardown: after torch/diffusers imports it took 5-9 s on a loaded 2-core machine, and a runner
    # whose supervisor is gone (stdin EOF) must not linger. Everything it owes is written; flush what is buffered.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(exit_code)
