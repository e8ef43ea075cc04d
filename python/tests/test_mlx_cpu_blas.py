"""cpu_blas: the optional optimised-BLAS preload for mlx on Linux never breaks start-up and respects its switch
(the runner option --mlx-blas, which the runner sets before it imports the mlx package)."""

from __future__ import annotations

import json
import subprocess
import sys

from mlx_fixtures import PYTHON_DIR

PROBE = """
import json, sys
from pixelai_runner import settings
settings.use(settings.RunnerSettings(engine="mlx", mlx_blas=sys.argv[1]))
from pixelai_runner.backends.mlx import cpu_blas
import mlx.core as mx
a = mx.ones((64, 64))
print(json.dumps({"loaded": cpu_blas.loaded, "sum": float((a @ a).sum())}))
"""


def _run(setting: str = "auto", code: str = PROBE) -> dict:
    import os

    env = dict(os.environ, PYTHONPATH=str(PYTHON_DIR))
    proc = subprocess.run([sys.executable, "-c", code, setting], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), "stderr": proc.stderr}


def test_off_keeps_the_bundled_blas():
    result = _run("off")
    assert result["loaded"] is None and result["sum"] == 64 * 64 * 64


def test_unloadable_library_is_reported_not_fatal(tmp_path):
    bogus = tmp_path / "libnot-a-blas.so"
    bogus.write_bytes(b"not an ELF file")
    result = _run(str(bogus))
    assert result["loaded"] is None and result["sum"] == 64 * 64 * 64
    assert "could not load BLAS" in result["stderr"]


def test_too_late_once_mlx_is_imported():
    code = "import mlx.core\n" + PROBE
    assert _run("auto", code)["loaded"] is None


def test_default_uses_a_system_openblas_when_present_and_results_agree():
    from pixelai_runner.backends.mlx import cpu_blas

    result = _run("auto")
    assert result["sum"] == 64 * 64 * 64
    expected = cpu_blas._candidate("auto") if sys.platform.startswith("linux") else None
    assert result["loaded"] == expected  # None where no OpenBLAS is installed: the wheel's BLAS then serves
