"""BiRefNet background removal: the folder check, the real remote-code loader on a tiny BiRefNet-shaped model, the
post-process order, and the runner end to end (subprocess) with and without the weights folder."""

from __future__ import annotations

import itertools
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from birefnet_fixture import build_tiny_birefnet
from PIL import Image
from pixelai_runner import background
from pixelai_runner.backends.base import PixelSpec
from pixelai_runner.errors import RunnerError
from pixelai_runner.postprocess import postprocess, validate
from runner_client import RunnerProcess

_ids = itertools.count(1)


@pytest.fixture(scope="module")
def birefnet_dir(tmp_path_factory) -> Path:
    return build_tiny_birefnet(tmp_path_factory.mktemp("models") / "birefnet")


@pytest.fixture
def modules_cache(tmp_path, monkeypatch):
    """transformers copies remote code into HF_MODULES_CACHE (read at import time): point it at a temp dir so tests
    never write into the user's ~/.cache."""
    import transformers.dynamic_module_utils as dynamic

    monkeypatch.setattr(sys, "path", list(sys.path))  # the loader appends the cache dir to sys.path
    monkeypatch.setattr(dynamic, "HF_MODULES_CACHE", str(tmp_path / "hf-modules"))
    return tmp_path / "hf-modules"


def _gradient(width: int, height: int) -> Image.Image:
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :].repeat(height, 0)
    y = np.linspace(255, 0, height, dtype=np.float32)[:, None].repeat(width, 1)
    return Image.fromarray(np.stack([x, y, (x + y) / 2], axis=-1).astype(np.uint8), "RGB")


# ---- folder check ------------------------------------------------------------------------------------------------


def test_weights_present_needs_a_config_naming_the_segmentation_auto_class(tmp_path, birefnet_dir, monkeypatch):
    assert background.weights_present(str(birefnet_dir))
    assert not background.weights_present(str(tmp_path / "absent"))
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "config.json").write_text(
        json.dumps({"model_type": "bert", "auto_map": {"AutoModel": "x.Y"}})
    )
    assert not background.weights_present(str(tmp_path / "plain"))
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")
    assert not background.weights_present(str(tmp_path / "broken"))

    assert not background.weights_present("")  # a runner started without --birefnet-dir
    assert "--birefnet-dir" in background.missing_reason("")
    assert str(tmp_path / "absent") in background.missing_reason(str(tmp_path / "absent"))


# ---- the model ---------------------------------------------------------------------------------------------------


def test_remover_loads_through_remote_code_once_and_mattes_the_middle(birefnet_dir, modules_cache):
    remover = background.BiRefNetRemover(str(birefnet_dir), "cpu", "float32")
    model = remover.model()
    # Loaded from the folder's own .py file via transformers' remote-code path, in eval mode.
    assert type(model).__module__.startswith("transformers_modules.") and type(model).__name__ == "BiRefNetTiny"
    assert not model.training
    assert any(modules_cache.rglob("birefnet_tiny.py"))

    alpha = remover.matte(_gradient(96, 64))
    assert alpha.shape == (64, 96) and alpha.dtype == np.uint8  # back at the image's size, not 1024²
    assert alpha[32, 48] == 255  # centre: foreground (the coarse, inverted map would make it 0)
    border = np.concatenate([alpha[0], alpha[-1], alpha[:, 0], alpha[:, -1]])
    assert border.max() == 0
    soft = alpha[32, :]
    assert ((soft > 0) & (soft < 255)).any()  # a soft edge, not thresholded here
    assert remover.model() is model  # loaded once

    letterboxed = Image.new("RGBA", (96, 64), (10, 20, 30, 255))
    letterboxed.paste((0, 0, 0, 0), (40, 28, 56, 36))  # a transparent hole in the middle stays transparent
    out = np.array(remover(letterboxed))
    assert out[32, 48, 3] == 0 and out[32, 30, 3] == 255 and out[0, 0, 3] == 0


def test_a_folder_that_cannot_load_is_engine_unavailable(tmp_path, birefnet_dir, modules_cache):
    broken = tmp_path / "birefnet"
    broken.mkdir()
    (broken / "config.json").write_text((birefnet_dir / "config.json").read_text())  # code and weights missing
    with pytest.raises(RunnerError) as info:
        background.BiRefNetRemover(str(broken)).model()
    assert info.value.code == "ENGINE_UNAVAILABLE" and str(broken) in info.value.message


def test_half_precision_only_on_cuda():
    assert background.BiRefNetRemover("x", "cuda", "float16").dtype == "float16"
    assert background.BiRefNetRemover("x", "mps", "float16").dtype == "float32"
    assert background.BiRefNetRemover("x", "cpu", "float32").dtype == "float32"


# ---- post-processing ---------------------------------------------------------------------------------------------


def test_postprocess_mattes_before_fitting_and_binarises_alpha(birefnet_dir, modules_cache):
    remover = background.BiRefNetRemover(str(birefnet_dir))
    out = postprocess(_gradient(128, 128), PixelSpec(32, 32, 8, "contain"), "birefnet", remover=remover)
    rgba = np.array(out)
    assert out.mode == "RGBA" and out.size == (32, 32)
    assert set(np.unique(rgba[..., 3]).tolist()) == {0, 255}
    assert rgba[16, 16, 3] == 255 and rgba[0, 0, 3] == 0 and rgba[31, 31, 3] == 0
    assert len({tuple(p) for p in rgba.reshape(-1, 4)}) <= 8


def test_birefnet_without_a_model_is_engine_unavailable():
    with pytest.raises(RunnerError) as info:
        validate(None, "birefnet")
    assert info.value.code == "ENGINE_UNAVAILABLE"
    with pytest.raises(RunnerError) as info:
        postprocess(_gradient(16, 16), None, "birefnet")
    assert info.value.code == "ENGINE_UNAVAILABLE"
    validate(None, "birefnet", birefnet_missing=None)  # a runner that has the model accepts it


# ---- the runner as Node drives it --------------------------------------------------------------------------------


def _runner(tmp_path: Path, birefnet: str) -> RunnerProcess:
    argv = ["-m", "pixelai_runner", "--engine", "torch", "--device", "cpu", "--birefnet-dir", birefnet]
    proc = RunnerProcess(argv, tmp_path / "stderr.log", env={"HF_MODULES_CACHE": str(tmp_path / "hf-modules")})
    proc.next_message(lambda m: m.get("event") == "ready", timeout=120)
    return proc


def _params(tiny_sd: Path, out: Path, **overrides) -> dict:
    out.mkdir()
    params = {
        "jobId": out.name,
        "modelSource": str(tiny_sd),
        "modelName": "tiny-sd",
        "prompt": "a pixel art knight",
        "width": 64,
        "height": 64,
        "steps": 2,
        "guidanceScale": 5.0,
        "seed": 7,
        "initNoise": "torch",
        "pixel": {"width": 32, "height": 32, "colors": 16, "fitMode": "contain"},
        "removeBackground": "birefnet",
        "outputDir": str(out),
    }
    params.update(overrides)
    return params


def test_runner_with_weights_reports_the_feature_and_removes_the_background(tmp_path, birefnet_dir, tiny_sd):
    proc = _runner(tmp_path, str(birefnet_dir))
    try:
        probe = proc.request({"id": f"p{next(_ids)}", "op": "probe"})
        assert probe["features"]["backgroundRemoval"] is True
        final = proc.request(
            {"id": f"g{next(_ids)}", "op": "generate", "params": _params(tiny_sd, tmp_path / "job")}, timeout=180
        )
        assert final["event"] == "result", final
        with Image.open(final["imagePath"]) as img:
            assert img.mode == "RGBA" and img.size == (32, 32)
            rgba = np.array(img)
        border = np.concatenate([rgba[0], rgba[-1], rgba[:, 0], rgba[:, -1]])
        assert (border[:, 3] == 0).all()
        assert (rgba[12:20, 12:20, 3] == 255).all()
        # A second job reuses the loaded model (no second load message from transformers' loader).
        again = proc.request(
            {"id": f"g{next(_ids)}", "op": "generate", "params": _params(tiny_sd, tmp_path / "job2", seed=8)},
            timeout=180,
        )
        assert again["event"] == "result", again
        assert proc.stderr_tail(200_000).count("BiRefNet model loaded") == 1
    finally:
        assert proc.close() == 0


def test_runner_without_weights_refuses_birefnet_naming_the_folder(tmp_path, tiny_sd):
    missing = tmp_path / "models" / "birefnet"
    proc = _runner(tmp_path, str(missing))
    try:
        probe = proc.request({"id": f"p{next(_ids)}", "op": "probe"})
        assert probe["features"]["backgroundRemoval"] is False
        final = proc.request({"id": f"g{next(_ids)}", "op": "generate", "params": _params(tiny_sd, tmp_path / "job")})
        assert final["event"] == "error" and final["code"] == "ENGINE_UNAVAILABLE", final
        assert str(missing) in final["message"]
        assert not os.listdir(tmp_path / "job")  # refused before any generation
    finally:
        assert proc.close() == 0


def test_a_runner_whose_engine_lacks_the_feature_says_birefnet_is_torch_only(tmp_path):
    """The MLX runner keeps backgroundRemoval false (no torch at inference), whatever --birefnet-dir says."""
    from pixelai_runner.backends.base import Backend
    from pixelai_runner.runner import Runner
    from pixelai_runner.settings import RunnerSettings
    from test_runner_loop import CollectingWriter

    class NoMatteBackend(Backend):
        engine = "mlx"

        def probe(self) -> dict:
            return {"engine": "mlx", "available": True, "device": "cpu", "features": {"backgroundRemoval": False}}

        def ensure_loaded(self, source):
            return source

        def generate(self, req, on_step, check_cancel):
            raise AssertionError("a refused job must never generate")

    writer = CollectingWriter()
    request = {"id": "g", "op": "generate", "params": _params(Path("unused"), tmp_path / "job")}
    settings = RunnerSettings(engine="mlx", birefnet_dir=str(tmp_path))
    Runner(settings, writer, backend_factory=lambda _settings: NoMatteBackend()).serve(
        iter([json.dumps(request) + "\n"])
    )
    error = writer.messages[-1]
    assert error["event"] == "error" and error["code"] == "ENGINE_UNAVAILABLE"
    assert "torch engine only" in error["message"]
