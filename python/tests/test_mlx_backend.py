"""MLXBackend: probe, verified loading with an LRU, GenerateRequest handling, the float16 → float32 fallback."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from mlx_fixtures import (  # noqa: F401  (fixtures)
    PROMPT,
    converted_sd,
    converted_sdxl,
    diffusers_image,
    mlx_out_root,
    torch_sd,
)
from pixelai_runner.backends.base import FEATURES, GenerateRequest
from pixelai_runner.backends.mlx import MLXBackend
from pixelai_runner.backends.mlx import backend as B
from pixelai_runner.backends.mlx import manifest as M
from pixelai_runner.errors import RunnerError
from pixelai_runner.settings import RunnerSettings


def _request(source, **overrides) -> GenerateRequest:
    params = dict(
        jobId="j1",
        modelSource=str(source),
        prompt=PROMPT,
        width=64,
        height=64,
        steps=3,
        guidanceScale=7.5,
        seed=11,
        outputDir="/tmp",
        scheduler="euler",
        initNoise="torch",
    )
    params.update(overrides)
    return GenerateRequest.from_params(params)


def _run(backend, req):
    steps = []
    out = backend.generate(req, lambda k, n: steps.append((k, n)), lambda: None)
    return out, steps


def test_probe_reports_cpu_engine():
    info = MLXBackend().probe()
    assert info["engine"] == "mlx" and info["available"] is True
    assert info["device"] == "cpu" and info["dtype"] == "float32"
    assert info["chip"]
    assert set(info["features"]) == set(FEATURES)
    assert info["features"]["sdxl"] is True and info["features"]["lora"] is True
    assert info["schedulers"] == ["euler", "euler_a", "ddim", "dpmpp_2m", "dpmpp_2m_karras"]
    assert info["versions"]["mlx"] and info["versions"]["python"]


def test_dtype_defaults_and_override():
    assert B.default_dtype_name("gpu") == "float16"
    assert B.default_dtype_name("cpu") == "float32"
    assert B.default_dtype_name("cpu", "float16") == "float16"
    with pytest.raises(RunnerError):
        B.default_dtype_name("cpu", "float8")
    with pytest.raises(RunnerError):
        MLXBackend(dtype="float8")  # refused at start-up, not at the first job
    forced = MLXBackend.from_settings(RunnerSettings(engine="mlx", mlx_dtype="float16", pipeline_cache=3)).probe()
    assert forced["dtype"] == "float16" and forced["cacheSize"] == 3


def test_generate_with_torch_noise_matches_diffusers(converted_sd, torch_sd):
    backend = MLXBackend()
    out, steps = _run(backend, _request(converted_sd, negativePrompt="ugly"))
    reference = diffusers_image(torch_sd, "euler", PROMPT, "ugly", 64, 64, 3, 7.5, seed=11)
    assert out.image.size == (64, 64) and out.image.mode == "RGB"
    assert np.abs(np.array(out.image).astype(int) - reference.astype(int)).max() <= 2
    assert steps == [(1, 3), (2, 3), (3, 3)]
    assert out.device == "cpu" and out.dtype == "float32"


def test_generate_sdxl_request(converted_sdxl):
    out, steps = _run(MLXBackend(), _request(converted_sdxl, scheduler="ddim", width=96, initNoise=None))
    assert out.image.size == (96, 64) and len(steps) == 3


def test_same_seed_same_image_native_noise(converted_sd):
    backend = MLXBackend()
    first, _ = _run(backend, _request(converted_sd, initNoise="native", seed=3, scheduler="euler_a"))
    second, _ = _run(backend, _request(converted_sd, initNoise="native", seed=3, scheduler="euler_a"))
    third, _ = _run(backend, _request(converted_sd, initNoise="native", seed=4, scheduler="euler_a"))
    assert np.array_equal(np.array(first.image), np.array(second.image))
    assert not np.array_equal(np.array(first.image), np.array(third.image))


def test_unconverted_folder_and_damaged_files_fail_cleanly(tiny_sd, converted_sd, tmp_path):
    backend = MLXBackend()
    with pytest.raises(RunnerError) as info:
        backend.generate(_request(tiny_sd), lambda k, n: None, lambda: None)
    assert info.value.code == "MODEL_NOT_CONVERTED" and "scripts/convert_to_mlx.py" in info.value.message

    copy = tmp_path / "copy"
    shutil.copytree(converted_sd, copy)
    weights = copy / "text_encoder" / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(RunnerError) as info:
        backend.ensure_loaded(str(copy))
    assert info.value.code == "HASH_MISMATCH"


def test_request_validation(converted_sd):
    backend = MLXBackend()
    cases = [
        (dict(lora={"source": "x", "strength": 1.0}), "LORA_NOT_FOUND"),  # relative: never resolved against cwd
        (dict(scheduler="dpmpp_3m_sde"), "INVALID_REQUEST"),
        (dict(width=60), "INVALID_REQUEST"),
        (dict(steps=0), "INVALID_REQUEST"),
        (dict(initNoise="cuda"), "INVALID_REQUEST"),
    ]
    for overrides, code in cases:
        with pytest.raises(RunnerError) as info:
            backend.generate(_request(converted_sd, **overrides), lambda k, n: None, lambda: None)
        assert info.value.code == code, overrides


def test_lru_cache_reuses_and_evicts(converted_sd, converted_sdxl, tmp_path, monkeypatch):
    backend = MLXBackend(cache_size=1)
    first = backend.ensure_loaded(str(converted_sd))
    assert backend.ensure_loaded(str(converted_sd)) is first
    hashed = []
    real = M.sha256_file
    monkeypatch.setattr(M, "sha256_file", lambda path: hashed.append(path) or real(path))
    backend.ensure_loaded(str(converted_sd))
    assert hashed == []  # warm job: manifest verified from the (path, mtime, size) cache
    backend.ensure_loaded(str(converted_sdxl))
    assert backend.ensure_loaded(str(converted_sd)) is not first  # evicted by the SDXL model
    assert backend.unload() == sorted([str(converted_sd.resolve())])
    assert backend.unload() == []


def test_float16_non_finite_falls_back_to_float32(converted_sd, monkeypatch, capsys):
    from pixelai_runner.backends.mlx import pipeline as P

    real_denoise = P.StableDiffusion.denoise
    dtypes = []

    def flaky_denoise(self, *args, **kwargs):
        dtypes.append(str(self.dtype))
        if self.dtype != P.mx.float32:
            raise P.NonFiniteError("non-finite latents at step 1/3 in float16")
        return real_denoise(self, *args, **kwargs)

    monkeypatch.setattr(P.StableDiffusion, "denoise", flaky_denoise)
    backend = MLXBackend(dtype="float16")
    out, steps = _run(backend, _request(converted_sd))
    assert out.dtype == "float32" and dtypes == ["mlx.core.float16", "mlx.core.float32"]
    assert "float32" in capsys.readouterr().err
    again, _ = _run(backend, _request(converted_sd))  # the model now stays in float32: no second failure
    assert again.dtype == "float32" and dtypes[-1] == "mlx.core.float32" and len(dtypes) == 3


@pytest.mark.parametrize(
    "model,scheduler,negative",
    [("sd", "euler", "blurry"), ("sd", "euler_a", None), ("sdxl", "ddim", ""), ("sdxl", "euler_a", "dark")],
)
def test_same_request_same_image_on_torch_and_mlx_engines(
    tiny_sd, tiny_sdxl, converted_sd, converted_sdxl, model, scheduler, negative
):
    """The cross-engine promise: one request with initNoise "torch" gives the same picture on both engines."""
    from pixelai_runner.backends.torch_backend import TorchBackend

    diffusers_folder, mlx_folder = (tiny_sd, converted_sd) if model == "sd" else (tiny_sdxl, converted_sdxl)
    overrides = dict(scheduler=scheduler, negativePrompt=negative, width=64, height=96, seed=2024)
    torch_out, _ = _run(TorchBackend(), _request(diffusers_folder, **overrides))
    mlx_out, _ = _run(MLXBackend(), _request(mlx_folder, **overrides))
    a, b = np.array(torch_out.image).astype(int), np.array(mlx_out.image).astype(int)
    assert a.shape == b.shape == (96, 64, 3) and a.std() > 5
    assert np.abs(a - b).max() <= 2
