"""LoRAs on the torch engine with the tiny seeded LoRAs of scripts/make_tiny_lora.py.

Whether a LoRA fits a model is decided once, by the server before it queues a job (src/models/safetensors-header.ts,
src/models/lora-fit.ts); here the engine shows what it does with one that fits, and with one that does not.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import load_script
from pixelai_runner.backends.base import GenerateRequest
from pixelai_runner.backends.torch_backend import TorchBackend
from pixelai_runner.device import DeviceInfo
from pixelai_runner.errors import RunnerError
from safetensors import safe_open

FILES = {"tiny-sd-lora": "diffusers", "tiny-sd-lora-kohya": "kohya", "tiny-sdxl-lora": "diffusers"}


@pytest.fixture(scope="module")
def lora_script():
    return load_script("make_tiny_lora")


@pytest.fixture(scope="module")
def loras(lora_script, tiny_models, tmp_path_factory) -> dict[str, Path]:
    # Built into a temp dir from whichever tiny models the session uses: a test run never writes into the repo.
    return lora_script.build_tiny_loras(tiny_models["tiny-sd"].parent, tmp_path_factory.mktemp("loras"))


@pytest.fixture(scope="module")
def backend():
    return TorchBackend(device_info=DeviceInfo("cpu", "test cpu", "float32"))


def _generate(backend, model: Path, lora=None, seed: int = 7, steps: int = 4):
    req = GenerateRequest(
        job_id="lora-test",
        model_source=str(model),
        prompt="a pixel art knight",
        width=64,
        height=64,
        steps=steps,
        guidance_scale=5.0,
        seed=seed,
        output_dir="/nonexistent",
        lora=lora,
    )
    return backend.generate(req, lambda step, total: None, lambda: None)


def _image(backend, model: Path, lora=None, seed: int = 7) -> bytes:
    return _generate(backend, model, lora, seed).image.tobytes()


def _mean_abs_diff(a: bytes, b: bytes) -> float:
    return sum(abs(x - y) for x, y in zip(a, b, strict=True)) / len(a)


# ---- the builder ----------------------------------------------------------------------------------------------------


def test_builder_is_seeded_idempotent_and_tagged(lora_script, tiny_models, loras, tmp_path):
    assert {name: path.name for name, path in loras.items()} == {name: f"{name}.safetensors" for name in FILES}
    first = {name: path.read_bytes() for name, path in loras.items()}
    stamps = {name: path.stat().st_mtime_ns for name, path in loras.items()}
    again = lora_script.build_tiny_loras(tiny_models["tiny-sd"].parent, next(iter(loras.values())).parent)
    assert {name: path.stat().st_mtime_ns for name, path in again.items()} == stamps, (
        "up-to-date files are not rewritten"
    )

    fresh = lora_script.build_tiny_loras(tiny_models["tiny-sd"].parent, tmp_path, force=True)
    assert {name: path.read_bytes() for name, path in fresh.items()} == first, "same seed, same bytes"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        f"{name}.safetensors" for name in FILES
    )  # no temp files

    for name, path in loras.items():
        with safe_open(str(path), "np") as fh:
            meta = fh.metadata()
            keys = list(fh.keys())
        sdxl = name.startswith("tiny-sdxl")
        assert meta["pixelai.base_architecture"] == ("sdxl" if sdxl else "sd")
        assert meta["pixelai.cross_attention_dim"] == ("64" if sdxl else "32")
        if FILES[name] == "kohya":
            assert all(
                k.startswith("lora_unet_") and k.endswith((".lora_down.weight", ".lora_up.weight", ".alpha"))
                for k in keys
            )
        else:
            assert all(k.startswith("unet.") and k.endswith((".lora_A.weight", ".lora_B.weight")) for k in keys)
        # All eight attention projections of the transformer blocks are covered.
        for proj in (
            "attn1.to_q",
            "attn1.to_k",
            "attn1.to_v",
            "attn1.to_out.0",
            "attn2.to_q",
            "attn2.to_k",
            "attn2.to_v",
            "attn2.to_out.0",
        ):
            flat = proj.replace(".", "_")
            assert any(proj + ".lora_" in k or flat + ".lora_" in k for k in keys), proj


# ---- the torch engine -----------------------------------------------------------------------------------------------


def test_each_format_changes_the_image_and_strength_zero_does_not(backend, tiny_sd, loras):
    plain = _image(backend, tiny_sd)
    images = {}
    for name in ("tiny-sd-lora", "tiny-sd-lora-kohya"):
        images[name] = _image(backend, tiny_sd, {"source": str(loras[name]), "strength": 1.0})
        # Visibly: several grey levels per channel on average, not a rounding flicker.
        assert _mean_abs_diff(images[name], plain) > 3.0, name
        assert _image(backend, tiny_sd, {"source": str(loras[name]), "strength": 0.0}) == plain, name
    # Same numbers in two key formats: diffusers' kohya conversion must land on exactly the same adapter.
    assert images["tiny-sd-lora"] == images["tiny-sd-lora-kohya"]
    half = _image(backend, tiny_sd, {"source": str(loras["tiny-sd-lora"]), "strength": 0.5})
    assert half not in (plain, images["tiny-sd-lora"])


def _weights(backend, model: Path) -> dict:
    pipe = backend.ensure_loaded(str(model)).pipe
    modules = {
        "unet": pipe.unet,
        "text_encoder": pipe.text_encoder,
        "text_encoder_2": getattr(pipe, "text_encoder_2", None),
    }
    return {
        f"{name}.{key}": value.detach().clone()
        for name, module in modules.items()
        if module is not None
        for key, value in module.state_dict().items()
    }


def _same_weights(before: dict, after: dict) -> bool:
    return before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_a_job_without_lora_after_one_with_it_is_unchanged(backend, tiny_sd, tiny_sdxl, loras):
    # The weights must come back bit for bit. The image is compared within 1/255: once MLX tests have run in the same
    # process, a plain job after a LoRA differed from the one before it in 2 bytes by 1 (never when this module runs
    # alone), with equal weights. The likely path is the system OpenBLAS cpu_blas.py loads RTLD_GLOBAL for MLX, then
    # also serving torch's sgemm, whose kernels may round a reallocated buffer differently; a runner never has both.
    plain = _image(backend, tiny_sd, seed=21)
    weights = _weights(backend, tiny_sd)
    assert _image(backend, tiny_sd, {"source": str(loras["tiny-sd-lora-kohya"]), "strength": 1.0}, seed=21) != plain
    again = _image(backend, tiny_sd, seed=21)
    assert _same_weights(weights, _weights(backend, tiny_sd))
    assert max(abs(x - y) for x, y in zip(again, plain, strict=True)) <= 1

    plain_xl = _image(backend, tiny_sdxl, seed=21)
    weights_xl = _weights(backend, tiny_sdxl)
    assert (
        _mean_abs_diff(
            _image(backend, tiny_sdxl, {"source": str(loras["tiny-sdxl-lora"]), "strength": 1.0}, seed=21), plain_xl
        )
        > 3.0
    )
    again_xl = _image(backend, tiny_sdxl, seed=21)
    assert _same_weights(weights_xl, _weights(backend, tiny_sdxl))
    assert max(abs(x - y) for x, y in zip(again_xl, plain_xl, strict=True)) <= 1


def test_a_lora_for_another_model_is_refused_and_leaves_the_pipeline_usable(backend, tiny_sd, tiny_sdxl, loras):
    plain_xl = _image(backend, tiny_sdxl, seed=5)
    for name in ("tiny-sd-lora", "tiny-sd-lora-kohya"):
        with pytest.raises(RunnerError) as info:
            _image(backend, tiny_sdxl, {"source": str(loras[name]), "strength": 1.0}, seed=5)
        assert info.value.code == "INVALID_REQUEST" and "does not fit" in info.value.message, name
        assert len(info.value.message) < 600  # one line for the API, not torch's per-tensor dump
    assert _image(backend, tiny_sdxl, seed=5) == plain_xl
    # The failed load left no half-registered adapter behind: the right LoRA still loads under the same name.
    assert _image(backend, tiny_sdxl, {"source": str(loras["tiny-sdxl-lora"]), "strength": 1.0}, seed=5) != plain_xl
    with pytest.raises(RunnerError) as info:
        _image(backend, tiny_sd, {"source": str(loras["tiny-sdxl-lora"]), "strength": 1.0})
    assert info.value.code == "INVALID_REQUEST"


def test_a_lora_naming_modules_the_model_lacks_does_not_fit(backend, tiny_sd, tmp_path):
    import numpy as np
    from safetensors.numpy import save_file

    path = tmp_path / "alien.safetensors"
    save_file(
        {
            "unet.no_such_block.to_q.lora_A.weight": np.ones((4, 8), np.float32),
            "unet.no_such_block.to_q.lora_B.weight": np.ones((8, 4), np.float32),
        },
        str(path),
    )
    with pytest.raises(RunnerError) as info:
        _image(backend, tiny_sd, {"source": str(path), "strength": 1.0})
    assert info.value.code == "INVALID_REQUEST" and "does not fit" in info.value.message


def test_a_missing_lora_file_is_lora_not_found(backend, tiny_sd, tmp_path):
    with pytest.raises(RunnerError) as info:
        _image(backend, tiny_sd, {"source": str(tmp_path / "absent.safetensors"), "strength": 1.0})
    assert info.value.code == "LORA_NOT_FOUND"


def test_a_lora_switched_in_or_out_counts_as_loading_and_a_kept_one_does_not(backend, tiny_sd, loras):
    def load_ms(lora=None, strength: float = 1.0) -> float:
        spec = None if lora is None else {"source": str(lora), "strength": strength}
        return _generate(backend, tiny_sd, spec, seed=3, steps=2).load_ms

    load_ms()  # the pipeline warm and without a LoRA
    assert load_ms() == 0.0
    assert load_ms(loras["tiny-sd-lora"]) > 0.0  # loaded into the warm pipeline
    assert load_ms(loras["tiny-sd-lora"], strength=0.5) == 0.0  # same file: only its strength changes
    assert load_ms() > 0.0  # unloaded again
