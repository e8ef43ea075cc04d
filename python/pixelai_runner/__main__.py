"""Entry point: `python -m pixelai_runner --engine torch|mlx [settings…]` (options: settings.py, from the schema).

stdout is claimed for the protocol before anything else is imported: torch, diffusers, MLX and their native code may
print, and a single stray byte on fd 1 would corrupt the JSON-lines stream the Node supervisor parses.
"""

from __future__ import annotations

import os
import sys
import traceback

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
    # Skip interpreter teardown, whatever main() ends with: after torch/diffusers imports it took 5-9 s on a loaded
    # 2-core machine, and it can hang for good (a finalizer waiting on a lock a daemon thread held when it was stopped,
    # seen after a write to a supervisor that had been killed). A runner whose supervisor is gone must not linger.
    exit_code = 1
    try:
        exit_code = main()
    except SystemExit as exc:  # argparse's usage errors: it has printed why
        exit_code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        try:
            traceback.print_exc()
        except OSError:
            pass
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except OSError:
                pass  # the supervisor is gone: nobody is left to read it
        os._exit(exit_code)
