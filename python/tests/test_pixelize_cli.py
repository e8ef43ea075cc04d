"""`python -m pixelai_runner.pixelize`: the command line, run as a real subprocess."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pixelize_cases import accuracy, paint, palette_art

PYTHON_DIR = Path(__file__).resolve().parents[1]


def _run(*args):
    env = dict(os.environ, PYTHONPATH=str(PYTHON_DIR))
    return subprocess.run(
        [sys.executable, "-m", "pixelai_runner.pixelize", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


@pytest.fixture(scope="module")
def sprite_png(tmp_path_factory):
    cells = np.zeros((36, 36, 3), np.uint8)
    cells[:] = (236, 232, 240)
    cells[6:30, 6:30] = palette_art(24, 24, 7, seed=1)
    image, _, _ = paint(cells, 10.7, (3.0, 4.0), jitter=0.05, blur=0.15, noise=4, seed=2)
    path = tmp_path_factory.mktemp("cli") / "sprite.png"
    image.save(path)
    return path, cells


def test_auto_finds_the_grid_and_reports_it(sprite_png, tmp_path):
    src, cells = sprite_png
    out = tmp_path / "out.png"
    done = _run(src, out, "--auto", "--colors", 9, "--remove-background", "color-key")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["size"] == [36, 36] and report["grid"]["cells"] == [36, 36]
    assert abs(report["grid"]["pitch"][0] - 10.7) < 0.1 and report["grid"]["confidence"] > 0.3
    assert "colour" in report["background"] and report["ms"] > 0
    result = Image.open(out)
    assert result.mode == "RGBA" and result.size == (36, 36)
    alpha = np.asarray(result)[..., 3]
    assert alpha[0, 0] == 0 and alpha[18, 18] == 255
    sprite = np.dstack([cells[6:30, 6:30], np.full((24, 24), 255, np.uint8)])
    assert accuracy(result.crop((6, 6, 30, 30)), sprite) >= 0.97
    assert len(np.unique(np.asarray(result).reshape(-1, 4), axis=0)) <= 9


def test_size_gives_exactly_that_size(sprite_png, tmp_path):
    src, _ = sprite_png
    out = tmp_path / "out.png"
    done = _run(src, out, "--size", "35x37")
    assert done.returncode == 0, done.stderr
    assert Image.open(out).size == (35, 37)
    assert json.loads(done.stdout)["size"] == [35, 37]


@pytest.mark.parametrize(
    "args, code",
    [
        (["--size", "0x10"], "INVALID_REQUEST"),
        (["--size", "ten"], "INVALID_REQUEST"),
        (["--colors", "300"], "INVALID_REQUEST"),
        (["--remove-background", "birefnet"], "INVALID_REQUEST"),
        (["--size", "8x8", "--auto"], "INVALID_REQUEST"),
    ],
)
def test_bad_arguments_are_json_errors(sprite_png, tmp_path, args, code):
    src, _ = sprite_png
    done = _run(src, tmp_path / "out.png", *args)
    assert done.returncode == 2
    assert json.loads(done.stderr)["error"]["code"] == code
    assert not (tmp_path / "out.png").exists()


def test_unreadable_input_is_a_json_error(tmp_path):
    bad = tmp_path / "not-an-image.png"
    bad.write_bytes(b"plain text")
    done = _run(bad, tmp_path / "out.png")
    assert done.returncode == 2
    error = json.loads(done.stderr)["error"]
    assert error["code"] == "INVALID_REQUEST" and "cannot read" in error["message"]
