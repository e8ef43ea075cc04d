"""Turn pseudo pixel art (a large picture painted on an implied, wobbly, blurred pixel grid) into true pixel art.

grid.py finds the grid, cells.py reads one colour per cell, keying.py removes a painted background, palette.py
reduces the colours, pipeline.py puts them together; `python -m pixelai_runner.pixelize` is the command line.
"""

from .pipeline import Pixelized, fit, pixelize

__all__ = ["Pixelized", "fit", "pixelize"]
