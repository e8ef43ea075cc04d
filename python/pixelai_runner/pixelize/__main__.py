"""python -m pixelai_runner.pixelize INPUT.png OUTPUT.png [--size WxH | --auto] [--colors K] [--remove-background ...]

Cleans up pseudo pixel art from anywhere with the code a job's post-processing runs. --size is the implied grid's
cell count (the output is exactly that size); --auto (the default) finds it. Prints one JSON line to stdout: the
grid found (pitch and phase per axis in source pixels, cells, confidence 0..1), the output size, the background key
and the time taken. Bad arguments or an unreadable input exit with status 2 and a JSON error on stderr, with the
same error codes the API uses.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time

from PIL import Image, UnidentifiedImageError

from ..errors import RunnerError
from .pipeline import MAX_COLORS, pixelize

MAX_INPUT_PIXELS = 4096 * 4096


def _size(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"(\d+)[xX](\d+)", text)
    if not match or int(match[1]) < 1 or int(match[2]) < 1:
        raise argparse.ArgumentTypeError(f"expected WxH with positive integers, got {text!r}")
    return int(match[1]), int(match[2])


class _BadArguments(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse would print usage text and exit; callers get the JSON error instead
        raise _BadArguments(message)


def _parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="python -m pixelai_runner.pixelize", description=__doc__.split("\n\n")[1])
    ap.add_argument("input", help="PNG (or any image Pillow reads) to clean up")
    ap.add_argument("output", help="where the pixel art PNG goes")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--size", type=_size, metavar="WxH", help="cells across x down (output exactly that size)")
    mode.add_argument("--auto", action="store_true", help="find the grid's cell count (default)")
    ap.add_argument(
        "--colors", type=int, default=0, metavar="K", help=f"palette size incl. transparency, 0-{MAX_COLORS}"
    )
    ap.add_argument("--remove-background", choices=("color-key", "none"), default="none")
    return ap


def _fail(code: str, message: str) -> int:
    print(json.dumps({"error": {"code": code, "message": message}}), file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except _BadArguments as exc:
        return _fail("INVALID_REQUEST", f"{exc} (see --help)")
    if not 0 <= args.colors <= MAX_COLORS:
        return _fail("INVALID_REQUEST", f"--colors must be 0..{MAX_COLORS}, got {args.colors}")
    try:
        with Image.open(args.input) as opened:
            if opened.width * opened.height > MAX_INPUT_PIXELS:
                return _fail("PAYLOAD_TOO_LARGE", f"{opened.width}x{opened.height} is over {MAX_INPUT_PIXELS} pixels")
            opened.load()
            image = opened.copy()
    except (OSError, UnidentifiedImageError) as exc:
        return _fail("INVALID_REQUEST", f"cannot read {args.input}: {exc}")
    started = time.perf_counter()
    try:
        result = pixelize(image, args.size, args.colors, args.remove_background == "color-key")
    except RunnerError as exc:
        return _fail(exc.code, exc.message)
    elapsed = (time.perf_counter() - started) * 1000.0
    result.image.save(args.output)
    report = {**result.info, "size": list(result.image.size), "ms": round(elapsed, 1)}
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
