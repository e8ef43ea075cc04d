"""Linux CPU only: let MLX use an optimised BLAS instead of the reference BLAS its wheel bundles.

The `mlx[cpu]` Linux wheel links a vendored netlib reference BLAS; every matmul and convolution ends in its `sgemm_`,
which runs at about 4 GFLOP/s here (30–50× slower than torch on the same CPU). Loading an optimised BLAS such as
OpenBLAS with RTLD_GLOBAL *before* mlx is imported puts its `sgemm_` first in the global symbol scope, so mlx's
references bind to it — measured 0.235 s → 0.008 s for a 1024×2880·2880×320 matmul on 2 cores. Results stay within
float32 rounding of the reference BLAS (the parity tests pass either way).

The runner option --mlx-blas (RunnerSettings.mlxBlas; the server's PIXELAI_MLX_BLAS): "auto" → use a system OpenBLAS
when one is installed (Debian: `apt-get install libopenblas0-pthread`); "off" → keep the wheel's BLAS; a path → load
that library. macOS (Accelerate / Metal) is never touched.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/libopenblas.so.0",
    "/usr/lib64/libopenblas.so.0",
    "/usr/lib/libopenblas.so.0",
)

loaded: str | None = None  # the library in use, for logs


def _candidate(setting: str) -> str | None:
    if setting and setting != "auto":
        return setting
    found = ctypes.util.find_library("openblas")  # a soname the dynamic loader can resolve
    if found:
        return found
    return next((path for path in _CANDIDATES if os.path.exists(path)), None)


def prefer_optimised_blas(setting: str = "auto") -> str | None:
    """Load an optimised BLAS globally if that can still take effect; returns its path or None. Never raises."""
    global loaded
    setting = setting.strip()
    if loaded or not sys.platform.startswith("linux") or setting.lower() == "off" or "mlx.core" in sys.modules:
        return loaded
    path = _candidate(setting)
    if path is None:
        return None
    try:
        ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
    except OSError as exc:
        print(f"[MLX] could not load BLAS {path}: {exc}; keeping the wheel's reference BLAS", file=sys.stderr)
        return None
    loaded = path
    return loaded
