"""Quantized MLX conversions (quantize.py): what is stored, that the manifest verifies, that they load and run, and
how far their images are from float32 (reported, not held to parity: quantization changes the output)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from mlx_fixtures import PROMPT, converted_sd, mlx_out_root  # noqa: F401  (fixtures)
from pixelai_runner.backends.base import GenerateRequest
from pixelai_runner.backends.mlx import MLXBackend
from pixelai_runner.backends.mlx.convert import convert
from pixelai_runner.backends.mlx.manifest import WEIGHTS_NAME, ManifestVerifier
from pixelai_runner.errors import RunnerError
from safetensors import safe_open


def _request(source) -> GenerateRequest:
    return GenerateRequest.from_params(
        dict(
            jobId="q",
            modelSource=str(source),
            prompt=PROMPT,
            width=64,
            height=64,
            steps=3,
            guidanceScale=7.5,
            seed=11,
            outputDir="/tmp",
            initNoise="torch",
        )
    )


def _pixels(backend, folder) -> np.ndarray:
    out = backend.generate(_request(folder), lambda k, n: None, lambda: None)
    return np.asarray(out.image, dtype=np.int16)


@pytest.mark.parametrize("bits", [8, 4])
def test_quantized_conversion_stores_packed_linear_layers_verifies_loads_and_runs(
    tiny_sd, tmp_path, converted_sd, bits
):
    result = convert(str(tiny_sd), "q", dtype="float32", out_root=tmp_path, quantize=bits, group_size=32)
    folder = tmp_path / "q"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["quantize"] == {"bits": bits, "groupSize": 32, "components": ["unet", "text_encoder"]}
    ManifestVerifier().verify(folder)

    with safe_open(str(folder / "unet" / WEIGHTS_NAME), "np") as f:
        keys = set(f.keys())
        packed = [k for k in keys if k.endswith(".scales")]
        assert packed, "no layer was quantized"
        for scales in packed:
            layer = scales[: -len(".scales")]
            assert f"{layer}.biases" in keys and f.get_tensor(f"{layer}.weight").dtype == np.uint32
        # convolutions stay float (MLX quantizes matmul layers only)
        assert all(
            f.get_tensor(k).dtype == np.float32 for k in keys if k.endswith(".weight") and f.get_tensor(k).ndim == 4
        )
    with safe_open(str(folder / "vae" / WEIGHTS_NAME), "np") as f:
        assert not any(k.endswith(".scales") for k in f.keys())
    float_unet = converted_sd / "unet" / WEIGHTS_NAME
    assert (folder / "unet" / WEIGHTS_NAME).stat().st_size < float_unet.stat().st_size

    backend = MLXBackend()
    quantized, reference = _pixels(backend, folder), _pixels(backend, converted_sd)
    assert quantized.shape == reference.shape == (64, 64, 3)
    diff = np.abs(quantized - reference)
    print(f"int{bits} vs float32 on tiny SD: max {diff.max()}/255, mean {diff.mean():.2f}/255")
    assert diff.mean() < 32  # the same picture, not noise: a sanity bound, the benchmark reports the figures

    again = convert(str(tiny_sd), "q", dtype="float32", out_root=tmp_path, quantize=bits, group_size=32)
    assert again["unchanged"] is True and again["manifest"] == result["manifest"]
    plain = convert(str(tiny_sd), "q", dtype="float32", out_root=tmp_path)
    assert plain["unchanged"] is False and plain["manifest"]["quantize"] is None


@pytest.mark.parametrize("quantize, group_size", [(3, 64), (8, 48), (16, 64)])
def test_bad_quantization_options_are_refused(tiny_sd, tmp_path, quantize, group_size):
    with pytest.raises(RunnerError) as info:
        convert(str(tiny_sd), "bad", out_root=tmp_path, quantize=quantize, group_size=group_size)
    assert info.value.code == "INVALID_REQUEST"
    assert not (tmp_path / "bad").exists()


def test_tampering_with_a_packed_weight_is_a_hash_mismatch(tiny_sd, tmp_path):
    convert(str(tiny_sd), "t", dtype="float32", out_root=tmp_path, quantize=8, group_size=32)
    weights = tmp_path / "t" / "unet" / WEIGHTS_NAME
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(RunnerError) as info:
        MLXBackend().ensure_loaded(str(tmp_path / "t"))
    assert info.value.code == "HASH_MISMATCH"


def test_a_lora_fuses_onto_quantized_layers_and_switches_back_exactly(tiny_sd, tmp_path, converted_sd):
    from conftest import load_script

    built = dict(load_script("make_tiny_lora").build_tiny_loras(tiny_sd.parent, tmp_path / "loras"))
    convert(str(tiny_sd), "ql", dtype="float32", out_root=tmp_path, quantize=8, group_size=32)
    backend = MLXBackend()

    def image(folder, lora=None):
        req = _request(folder)
        req.lora = lora
        return np.asarray(backend.generate(req, lambda k, n: None, lambda: None).image, dtype=np.int16)

    lora = {"source": str(built["tiny-sd-lora"]), "strength": 1.0}
    plain_q = image(tmp_path / "ql")
    lora_q = image(tmp_path / "ql", lora)
    lora_f = image(converted_sd, lora)
    assert np.abs(lora_q - plain_q).mean() > 5, "the LoRA changed the quantized model's picture"
    diff = np.abs(lora_q - lora_f)
    print(f"int8 + LoRA vs float32 + LoRA: max {diff.max()}/255, mean {diff.mean():.2f}/255")
    # the tiny LoRA's deltas are ~10x the random base weights, so int8 steps sized to the fused range move the picture
    # more than plain int8 does (max 2/255): the fused weights themselves are within int8 rounding of float32's
    assert diff.mean() < 16
    assert np.array_equal(image(tmp_path / "ql"), plain_q), "back to the stored quantized weights exactly"
