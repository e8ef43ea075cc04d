"""sRGB ↔ OKLab for cell colours and palettes.

OKLab (Björn Ottosson, 2020) is close to perceptually uniform, so Euclidean distances in it behave like "how different
do these look", which is what clustering a palette and merging near-duplicate colours need. Only small arrays (one
colour per cell) pass through here, so plain float64 numpy is fast enough.
"""

from __future__ import annotations

import numpy as np

_RGB_TO_LMS = np.array(
    [
        [0.4122214708, 0.5363325363, 0.0514459929],
        [0.2119034982, 0.6806995451, 0.1073969566],
        [0.0883024619, 0.2817188376, 0.6299787005],
    ]
)
_LMS_TO_LAB = np.array(
    [
        [0.2104542553, 0.7936177850, -0.0040720468],
        [1.9779984951, -2.4285922050, 0.4505937099],
        [0.0259040371, 0.7827717662, -0.8086757660],
    ]
)
_LAB_TO_LMS = np.linalg.inv(_LMS_TO_LAB)
_LMS_TO_RGB = np.linalg.inv(_RGB_TO_LMS)


def _to_linear(srgb01: np.ndarray) -> np.ndarray:
    return np.where(srgb01 <= 0.04045, srgb01 / 12.92, ((srgb01 + 0.055) / 1.055) ** 2.4)


def _to_srgb(linear: np.ndarray) -> np.ndarray:
    linear = np.clip(linear, 0.0, 1.0)
    return np.where(linear <= 0.0031308, linear * 12.92, 1.055 * linear ** (1 / 2.4) - 0.055)


def rgb_to_oklab(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) sRGB in 0..255 → (..., 3) OKLab (L in 0..1)."""
    lms = _to_linear(np.asarray(rgb, dtype=np.float64) / 255.0) @ _RGB_TO_LMS.T
    return np.cbrt(lms) @ _LMS_TO_LAB.T


def oklab_to_rgb(lab: np.ndarray) -> np.ndarray:
    """(..., 3) OKLab → (..., 3) sRGB as float 0..255 (out-of-gamut values clipped)."""
    lms = (np.asarray(lab, dtype=np.float64) @ _LAB_TO_LMS.T) ** 3
    return _to_srgb(lms @ _LMS_TO_RGB.T) * 255.0
