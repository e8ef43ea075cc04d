"""LoRAs on the MLX engine (backends/mlx/lora.py): key resolution through the converter's table, conv layouts, what is
refused, switching without reloading the base, and parity with the torch engine carrying the same LoRA."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from conftest import load_script
from mlx_fixtures import PROMPT, converted_sd, converted_sdxl, mlx_out_root  # noqa: F401  (fixtures)
from pixelai_runner.backends.base import GenerateRequest
from pixelai_runner.backends.mlx import MLXBackend
from pixelai_runner.backends.mlx import lora as L
from pixelai_runner.backends.mlx import pipeline as P
from pixelai_runner.backends.mlx import weights as W
from pixelai_runner.errors import RunnerError


@pytest.fixture(scope="module")
def lora_script():
    return load_script("make_tiny_lora")


@pytest.fixture(scope="module")
def loras(lora_script, tiny_sd, tmp_path_factory) -> dict[str, Path]:
    """The three tiny LoRAs, plus a kohya-keyed copy of the SDXL one (same numbers, kohya names, alpha = rank)."""
    out = tmp_path_factory.mktemp("loras")
    built = dict(lora_script.build_tiny_loras(tiny_sd.parent, out))
    sdxl_kohya = out / "tiny-sdxl-lora-kohya.safetensors"
    seed = lora_script.LORAS["tiny-sdxl-lora"][2]
    lora_script.write_safetensors(
        sdxl_kohya, lora_script.lora_tensors(tiny_sd.parent / "tiny-sdxl", "kohya", seed), {"format": "pt"}
    )
    built["tiny-sdxl-lora-kohya"] = sdxl_kohya
    # kohya's SDXL trainer names UNet modules with the original SD blocks; for tiny-sdxl (2 layers per block, attention
    # in down block 1, up block 0 and the middle) those are input_blocks.4+p.1, middle_block.1, output_blocks.p.1
    sgm = {}
    for key, value in lora_script.lora_tensors(tiny_sd.parent / "tiny-sdxl", "kohya", seed).items():
        key = re.sub(
            r"^lora_unet_down_blocks_1_attentions_(\d+)_", lambda m: f"lora_unet_input_blocks_{4 + int(m[1])}_1_", key
        )
        key = re.sub(r"^lora_unet_up_blocks_0_attentions_(\d+)_", lambda m: f"lora_unet_output_blocks_{m[1]}_1_", key)
        key = key.replace("lora_unet_mid_block_attentions_0_", "lora_unet_middle_block_1_")
        sgm[key] = value
    assert all(re.match(r"lora_unet_(input_blocks|middle_block|output_blocks)_", key) for key in sgm)
    built["tiny-sdxl-lora-sgm"] = Path(_write(lora_script, out / "tiny-sdxl-lora-sgm.safetensors", sgm))
    return built


def _request(source, lora=None, **overrides) -> GenerateRequest:
    params = dict(
        jobId="lora",
        modelSource=str(source),
        prompt=PROMPT,
        width=64,
        height=64,
        steps=4,
        guidanceScale=5.0,
        seed=7,
        outputDir="/tmp",
        scheduler="euler",
        initNoise="torch",
    )
    if lora is not None:
        params["lora"] = lora
    params.update(overrides)
    return GenerateRequest.from_params(params)


def _image(backend, req) -> np.ndarray:
    return np.array(backend.generate(req, lambda k, n: None, lambda: None).image).astype(int)


def _write(lora_script, path: Path, tensors: dict[str, np.ndarray]) -> str:
    lora_script.write_safetensors(path, tensors, {"format": "pt"})
    return str(path)


def _rand(rng, *shape) -> np.ndarray:
    return rng.uniform(-0.5, 0.5, shape).astype(np.float32)


# ---- the key table ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["tiny-sd", "tiny-sdxl"])
def test_diffusers_key_inverts_the_converters_renames(tiny_models, model):
    folder = tiny_models[model]
    components = ["unet", "text_encoder"] + (["text_encoder_2"] if model == "tiny-sdxl" else [])
    for component in components:
        original = {}
        for path in W.component_weight_files(folder / component, component):
            original.update(W.read_safetensors(path))
        mapped = W.MAPPERS[component]({k: np.zeros(1) for k in original})
        spellings = {k: W.diffusers_keys(component, k) for k in mapped}
        back = {name for names in spellings.values() for name in names}
        assert {k for k in original if not k.endswith("position_ids")} <= back, component
        assert all(names[0].startswith(("text_model.", "text_projection.")) for names in spellings.values()) or (
            component == "unet"
        ), "text encoders: the transformers-4 spelling (the one LoRA files use) comes first"
        assert component != "unet" or set(mapped) != set(original), "the table renames something on these UNets"


def test_original_sd_block_names_of_the_sdxl_unet():
    """SDXL base (2 layers per block, attention in up blocks 0 and 1): the names its original checkpoints use."""
    expected = {
        "conv_in": "input_blocks.0.0",
        "down_blocks.0.resnets.1.conv1": "input_blocks.2.0.conv1",
        "down_blocks.0.downsamplers.0.conv": "input_blocks.3.0.op",
        "down_blocks.1.attentions.0.transformer_blocks.0.attn1": "input_blocks.4.1.transformer_blocks.0.attn1",
        "down_blocks.2.attentions.1.proj_in": "input_blocks.8.1.proj_in",
        "mid_block.attentions.0.transformer_blocks.9.ff.net.2": "middle_block.1.transformer_blocks.9.ff.net.2",
        "mid_block.resnets.1": "middle_block.2",
        "up_blocks.0.attentions.2.proj_out": "output_blocks.2.1.proj_out",
        "up_blocks.1.upsamplers.0.conv": "output_blocks.5.2.conv",
        "up_blocks.2.resnets.0": "output_blocks.6.0",
        "add_embedding.linear_2": "label_emb.0.2",
        "conv_out": "out.2",
    }
    assert {name: W.sgm_unet_key(name, 2, {0, 1}) for name in expected} == expected
    assert W.sgm_unet_key("up_blocks.1.upsamplers.0.conv", 2, {0}) == "output_blocks.5.1.conv"  # no attention there
    assert W.sgm_unet_key("encoder.layers.0", 2, {0}) is None


# ---- resolution and layouts ---------------------------------------------------------------------------------------


def test_conv_and_text_encoder_loras_land_in_mlx_layout(converted_sd, tiny_sd, lora_script, tmp_path):
    """kohya LoCon-style LoRAs on a 3×3 conv, on the SD 1.x proj_in (a 1×1 conv the converter squeezes to a linear), on
    a downsampler (renamed by the converter), and a diffusers text-encoder LoRA: each fused weight is what the layer
    computes with the torch-layout W + scale · B·A."""
    import mlx.core as mx
    import torch

    rng = np.random.default_rng(3)
    raw = W.read_safetensors(tiny_sd / "unet" / "diffusion_pytorch_model.safetensors")
    text = W.read_safetensors(tiny_sd / "text_encoder" / "model.safetensors")
    conv = "down_blocks.0.resnets.0.conv1"
    proj_in = "down_blocks.1.attentions.0.proj_in"
    down_conv = "down_blocks.0.downsamplers.0.conv"
    q_proj = "text_model.encoder.layers.0.self_attn.q_proj"
    rank = 2
    tensors, expected = {}, {}
    for name, alpha in ((conv, 1.0), (proj_in, 4.0), (down_conv, None)):
        w = raw[f"{name}.weight"]
        down = _rand(rng, rank, *w.shape[1:])
        up = _rand(rng, w.shape[0], rank, *([1, 1] if w.ndim == 4 else []))
        prefix = "lora_unet_" + name.replace(".", "_")
        tensors[f"{prefix}.lora_down.weight"], tensors[f"{prefix}.lora_up.weight"] = down, up
        if alpha is not None:
            tensors[f"{prefix}.alpha"] = np.array(alpha, dtype=np.float32)
        expected[name] = (w, down, up, (alpha / rank) if alpha is not None else 1.0)
    qw = text["encoder.layers.0.self_attn.q_proj.weight"]  # transformers 5 writes no text_model. level
    q_down, q_up = _rand(rng, rank, qw.shape[1]), _rand(rng, qw.shape[0], rank)
    tensors[f"text_encoder.{q_proj}.lora_A.weight"] = q_down
    tensors[f"text_encoder.{q_proj}.lora_B.weight"] = q_up
    source = _write(lora_script, tmp_path / "locon.safetensors", tensors)

    model = P.StableDiffusion(converted_sd)
    model.set_lora(L.prepare(source, L.read(source), model.base_shapes()), strength=0.5)

    # the 3×3 conv: MLX conv on NHWC with the fused OHWI weight == torch conv with W plus the LoRA branch
    w, down, up, scale = expected[conv]
    x = rng.standard_normal((1, w.shape[1], 6, 5)).astype(np.float32)
    tx = torch.from_numpy(x)
    reference = torch.nn.functional.conv2d(tx, torch.tensor(w), padding=1) + 0.5 * scale * torch.nn.functional.conv2d(
        torch.nn.functional.conv2d(tx, torch.from_numpy(down), padding=1), torch.from_numpy(up)
    )
    fused = model.unet.down_blocks[0].resnets[0].conv1.weight
    got = mx.conv2d(mx.array(x.transpose(0, 2, 3, 1)), fused, padding=1)
    np.testing.assert_allclose(np.array(got).transpose(0, 3, 1, 2), reference.numpy(), atol=2e-5)

    # the 1×1 conv that MLX holds as a linear, and the renamed downsampler conv
    w, down, up, scale = expected[proj_in]
    delta = (up.reshape(up.shape[0], rank) @ down.reshape(rank, -1)) * scale
    np.testing.assert_allclose(
        np.array(model.unet.down_blocks[1].attentions[0].proj_in.weight),
        w.reshape(delta.shape) + 0.5 * delta,
        atol=1e-6,
    )
    w, down, up, scale = expected[down_conv]
    delta = np.einsum("or,rihw->oihw", up.reshape(up.shape[0], rank), down) * scale
    np.testing.assert_allclose(
        np.array(model.unet.down_blocks[0].downsampler.conv.weight), W.conv_to_mlx(w + 0.5 * delta), atol=1e-6
    )
    np.testing.assert_allclose(
        np.array(model.text_encoders[0].encoder.layers[0].self_attn.q_proj.weight),
        qw + 0.5 * (q_up @ q_down),
        atol=1e-6,
    )

    # kohya names the text encoder lora_te_<flattened>: the same module
    flat = {
        "lora_te_" + q_proj.replace(".", "_") + ".lora_down.weight": q_down,
        "lora_te_" + q_proj.replace(".", "_") + ".lora_up.weight": q_up,
    }
    kohya = _write(lora_script, tmp_path / "te-kohya.safetensors", flat)
    prepared = L.prepare(kohya, L.read(kohya), model.base_shapes())
    assert list(prepared.modules_by_key) == ["text_encoder"]
    assert [key for key, _ in prepared.deltas("text_encoder")] == ["encoder.layers.0.self_attn.q_proj.weight"]


def test_what_the_mlx_engine_refuses(converted_sd, loras, lora_script, tmp_path):
    model = P.StableDiffusion(converted_sd)
    shapes = model.base_shapes()
    rng = np.random.default_rng(0)

    def refused(name: str, tensors: dict) -> RunnerError:
        source = _write(lora_script, tmp_path / name, tensors)
        with pytest.raises(RunnerError) as info:
            L.prepare(source, L.read(source), shapes)
        return info.value

    loha = refused("loha.safetensors", {"lora_unet_x.hada_w1_a": _rand(rng, 2, 2)})
    assert loha.code == "LORA_UNSUPPORTED_ENGINE" and "LoHa" in loha.message and "hada_w1_a" in loha.message
    dora = refused(
        "dora.safetensors",
        {"unet.a.lora_A.weight": _rand(rng, 2, 2), "unet.a.lora_magnitude_vector": _rand(rng, 2)},
    )
    assert dora.code == "LORA_UNSUPPORTED_ENGINE" and "DoRA" in dora.message
    # the same rules go out in the probe, for the server to refuse such files before queueing a job
    rules = MLXBackend().probe()["loraUnsupported"]
    assert rules == L.UNSUPPORTED_RULES
    for error in (loha, dora):
        assert any(rule["what"] in error.message for rule in rules), error.message

    # a LoRA made for SDXL on the SD model: does not fit, as on the torch engine
    with pytest.raises(RunnerError) as info:
        L.prepare(str(loras["tiny-sdxl-lora"]), L.read(str(loras["tiny-sdxl-lora"])), shapes)
    assert info.value.code == "INVALID_REQUEST" and "does not fit" in info.value.message
    with pytest.raises(RunnerError) as info:
        L.read(str(tmp_path / "missing.safetensors"))
    assert info.value.code == "LORA_NOT_FOUND"


# ---- switching between jobs ---------------------------------------------------------------------------------------


def test_switching_lora_and_strength_never_reloads_the_base(converted_sd, loras, monkeypatch):
    from mlx.utils import tree_flatten

    reads = []
    real_load = P.mx.load
    monkeypatch.setattr(P.mx, "load", lambda path, *a, **k: reads.append(path) or real_load(path, *a, **k))
    backend = MLXBackend()
    plain = _image(backend, _request(converted_sd))
    model = backend.ensure_loaded(str(converted_sd))
    base = {k: np.array(v) for k, v in tree_flatten(model.unet.parameters())}
    loaded_reads = len(reads)
    assert loaded_reads == 3  # unet, vae, text encoder

    diffusers_lora = {"source": str(loras["tiny-sd-lora"]), "strength": 1.0}
    full = _image(backend, _request(converted_sd, diffusers_lora))
    half = _image(backend, _request(converted_sd, dict(diffusers_lora, strength=0.5)))
    kohya = _image(backend, _request(converted_sd, {"source": str(loras["tiny-sd-lora-kohya"]), "strength": 1.0}))
    zero = _image(backend, _request(converted_sd, dict(diffusers_lora, strength=0.0)))
    again = _image(backend, _request(converted_sd))

    assert len(reads) == loaded_reads, "no base weights read from disk while switching"
    assert np.abs(full - plain).mean() > 5 and np.abs(half - plain).mean() > 1
    assert np.abs(full - half).mean() > 1
    assert np.abs(kohya - full).max() <= 1, "both files hold the same LoRA"
    assert np.array_equal(zero, plain) and np.array_equal(again, plain)
    after = dict(tree_flatten(backend.ensure_loaded(str(converted_sd)).unet.parameters()))
    assert all(np.array_equal(np.array(after[k]), v) for k, v in base.items()), "base weights are bit-identical"


# ---- parity with the torch engine ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def torch_backend():
    from pixelai_runner.backends.torch_backend import TorchBackend

    return TorchBackend()


@pytest.fixture(scope="module")
def mlx_backend():
    return MLXBackend()


@pytest.mark.parametrize("strength", [0.5, 1.0])
@pytest.mark.parametrize(
    "model,lora",
    [
        ("sd", "tiny-sd-lora"),
        ("sd", "tiny-sd-lora-kohya"),
        ("sdxl", "tiny-sdxl-lora"),
        ("sdxl", "tiny-sdxl-lora-kohya"),
        ("sdxl", "tiny-sdxl-lora-sgm"),
    ],
)
def test_same_lora_same_image_on_torch_and_mlx(
    tiny_sd, tiny_sdxl, converted_sd, converted_sdxl, loras, torch_backend, mlx_backend, model, lora, strength
):
    diffusers_folder, mlx_folder = (tiny_sd, converted_sd) if model == "sd" else (tiny_sdxl, converted_sdxl)
    spec = {"source": str(loras[lora]), "strength": strength}
    overrides = dict(width=64, height=96, seed=2024, negativePrompt="blurry")
    a = _image(torch_backend, _request(diffusers_folder, spec, **overrides))
    b = _image(mlx_backend, _request(mlx_folder, spec, **overrides))
    plain = _image(mlx_backend, _request(mlx_folder, **overrides))
    assert a.shape == b.shape == (96, 64, 3) and a.std() > 5
    assert np.abs(b - plain).mean() > 1, "the LoRA changes the image"
    diff = np.abs(a - b)
    print(f"{model} {lora} strength {strength}: max {diff.max()}/255, mean {diff.mean():.4f}/255")
    assert diff.max() <= 2


def test_half_precision_model_fuses_in_float32_and_keeps_its_dtype(converted_sd, loras):
    """A float16 model (the Metal default) gets W + strength · delta summed in float32, stored back as float16."""
    import mlx.core as mx
    from mlx.utils import tree_flatten

    model = P.StableDiffusion(converted_sd, mx.float16)
    source = str(loras["tiny-sd-lora"])
    prepared = L.prepare(source, L.read(source), model.base_shapes())
    key, delta = next(prepared.deltas("unet"))
    base = np.array(model._base["unet"][key].astype(mx.float32))
    model.set_lora(prepared, 0.5)
    fused = dict(tree_flatten(model.unet.parameters()))[key]
    assert fused.dtype == mx.float16
    np.testing.assert_array_equal(np.array(fused), (base + 0.5 * delta).astype(np.float16))
