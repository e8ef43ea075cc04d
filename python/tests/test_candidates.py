"""count > 1: one batch through the UNet whose candidate i is the count 1 image of seed + i, on both engines.

Batched matrix products round differently from single ones (the BLAS picks other kernels for other batch sizes), so at
full resolution a candidate may differ from its count 1 twin by 1/255 in a few pixels; the pixel-art reduction
absorbs that. These tests pin both facts.
"""

from __future__ import annotations

import numpy as np
import pytest
from mlx_fixtures import (  # noqa: F401  (fixtures)
    PROMPT,
    converted_sd,
    converted_sdxl,
    mlx_out_root,
)
from pixelai_runner import postprocess, preview
from pixelai_runner.backends.base import GenerateRequest, PixelSpec
from pixelai_runner.backends.mlx import MLXBackend
from pixelai_runner.backends.torch_backend import TorchBackend

PIXEL = PixelSpec(width=32, height=32, colors=16)


def _request(source, **overrides) -> GenerateRequest:
    params = dict(
        jobId="c1",
        modelSource=str(source),
        prompt=PROMPT,
        width=64,
        height=64,
        steps=3,
        guidanceScale=7.5,
        seed=40,
        outputDir="/tmp",
        scheduler="euler",
        initNoise="torch",
    )
    params.update(overrides)
    return GenerateRequest.from_params(params)


def _generate(backend, req):
    steps = []
    out = backend.generate(req, lambda *args: steps.append(args), lambda: None)
    return out, steps


@pytest.fixture(scope="module")
def torch_backend():
    return TorchBackend()


@pytest.mark.parametrize("engine", ["torch", "mlx"])
@pytest.mark.parametrize("model,scheduler", [("sd", "euler"), ("sd", "euler_a"), ("sdxl", "dpmpp_2m")])
def test_candidate_i_is_the_count_1_image_of_seed_plus_i(
    engine, model, scheduler, tiny_sd, tiny_sdxl, converted_sd, converted_sdxl, torch_backend
):
    if engine == "torch":
        backend, source = torch_backend, (tiny_sd if model == "sd" else tiny_sdxl)
    else:
        backend, source = MLXBackend(), (converted_sd if model == "sd" else converted_sdxl)
    batch, steps = _generate(backend, _request(source, count=4, scheduler=scheduler))
    images = batch.candidates()
    assert len(images) == 4 and batch.image is images[0]
    assert len(steps) == 3  # progress stays per step, not per candidate
    arrays = [np.array(image).astype(int) for image in images]
    assert len({a.tobytes() for a in arrays}) == 4, "every candidate differs"
    for index, candidate in enumerate(arrays):
        single, _ = _generate(backend, _request(source, seed=40 + index, scheduler=scheduler))
        alone = np.array(single.image).astype(int)
        assert np.abs(candidate - alone).max() <= 1, f"candidate {index} vs its count 1 twin at full resolution"
        pixel_batch, _ = postprocess.postprocess_report(images[index], PIXEL)
        pixel_alone, _ = postprocess.postprocess_report(single.image, PIXEL)
        assert np.array_equal(np.array(pixel_batch), np.array(pixel_alone)), f"candidate {index} after pixelization"


def test_previews_come_per_candidate(torch_backend, tiny_sd):
    _, steps = _generate(torch_backend, _request(tiny_sd, count=3, previewEvery=2, steps=4))
    with_preview = [args for args in steps if len(args) > 2]
    assert [args[0] for args in with_preview] == [2, 4]
    for _step, _total, first, previews in with_preview:
        assert len(previews) == 3 and previews[0] is first
        assert len({p.tobytes() for p in previews}) == 3


def test_emit_step_splits_a_batch_into_one_preview_per_sample():
    calls = []
    latents = np.random.default_rng(1).standard_normal((2, 4, 8, 8)).astype(np.float32)
    preview.emit_step(lambda *a: calls.append(a), 2, 4, 2, lambda: latents, "sd", "nchw")
    ((step, total, first, previews),) = calls
    assert (step, total) == (2, 4) and len(previews) == 2 and previews[0] is first
    assert np.array_equal(np.array(previews[1]), np.array(preview.latents_to_rgb(latents[1:2], "sd", "nchw")))


class _ShortOfMemory:
    """The tiny pipeline on a device that holds at most `limit` candidates: a bigger batch raises what torch raises."""

    def __init__(self, pipe, limit: int):
        object.__setattr__(self, "_pipe", pipe)
        object.__setattr__(self, "_limit", limit)
        object.__setattr__(self, "batches", [])

    def __getattr__(self, name):
        return getattr(self._pipe, name)

    def __setattr__(self, name, value):
        setattr(self._pipe, name, value)

    def __call__(self, **kwargs):
        import torch

        self.batches.append(kwargs["num_images_per_prompt"])
        if kwargs["num_images_per_prompt"] > self._limit:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self._pipe(**kwargs)


def test_a_batch_the_device_cannot_hold_is_split_in_halves(tiny_sd):
    backend = TorchBackend()
    loaded = backend.ensure_loaded(str(tiny_sd))
    short = _ShortOfMemory(loaded.pipe, limit=2)
    loaded.pipe = short
    out, steps = _generate(backend, _request(tiny_sd, count=4, scheduler="euler_a", previewEvery=3))
    assert short.batches == [4, 2, 2]
    images = out.candidates()
    assert len(images) == 4
    # each half reports its own steps; only the half holding candidate 0 sends a preview, and never a partial list
    assert [args[0] for args in steps] == [1, 2, 3, 1, 2, 3]
    assert [len(args) for args in steps] == [2, 2, 3, 2, 2, 2]
    for index in (0, 3):
        single, _ = _generate(backend, _request(tiny_sd, seed=40 + index, scheduler="euler_a"))
        assert np.abs(np.array(images[index]).astype(int) - np.array(single.image).astype(int)).max() <= 1
    one = _ShortOfMemory(short._pipe, limit=0)
    loaded.pipe = one
    with pytest.raises(RuntimeError, match="out of memory"):
        _generate(backend, _request(tiny_sd, count=2))
    assert one.batches == [2, 1]


@pytest.mark.parametrize("engine", ["torch", "mlx"])
@pytest.mark.parametrize("masked", [False, True])
def test_img2img_candidates_share_the_init_image_and_match_their_count_1_twins(
    engine, masked, tiny_sd, converted_sd, torch_backend, tmp_path
):
    from PIL import Image
    from pixelai_runner.runner import Runner

    rng = np.random.default_rng(8)
    init_path, mask_path = tmp_path / "init.png", tmp_path / "mask.png"
    Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8), "RGB").save(init_path)
    mask = np.zeros((16, 16, 4), np.uint8)
    mask[4:12, 4:12] = 255
    Image.fromarray(mask, "RGBA").save(mask_path)
    backend, source = (torch_backend, tiny_sd) if engine == "torch" else (MLXBackend(), converted_sd)
    extra = dict(
        initImagePath=str(init_path), strength=0.6, steps=5, **({"maskPath": str(mask_path)} if masked else {})
    )

    # the runner's own img2img wrapping (the mask's paste-back is per candidate), around the real backend
    runner = Runner.__new__(Runner)
    runner.backend = backend
    batch = runner._generate_image(_request(source, count=3, **extra), lambda *a: None, lambda: None)
    images = [np.array(image).astype(int) for image in batch.candidates()]
    assert len(images) == 3 and len({a.tobytes() for a in images}) == 3
    for index, candidate in enumerate(images):
        single = runner._generate_image(_request(source, seed=40 + index, **extra), lambda *a: None, lambda: None)
        assert np.abs(candidate - np.array(single.image).astype(int)).max() <= 1, f"candidate {index}"
    if masked:
        init = np.array(Image.open(init_path).convert("RGB").resize((64, 64), Image.Resampling.NEAREST)).astype(int)
        outside = np.ones((64, 64), bool)
        outside[16:48, 16:48] = False
        for candidate in images:
            assert np.array_equal(candidate[outside], init[outside])
