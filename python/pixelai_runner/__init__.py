"""PixelAI's Python runner: `python -m pixelai_runner --engine torch|mlx` (see docs/runner-protocol.md).

Deliberately empty: `python -m` imports this before __main__ has moved fd 1 out of the way, so nothing here may import
a library that could write to stdout.
"""
