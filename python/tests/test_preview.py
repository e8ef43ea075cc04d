"""Step previews: the latent→RGB approximation, the preview files, and both engines producing them on request."""

from __future__ import annotations

import hashlib
import itertools
from pathlib import Path

import numpy as np
import pytest
from mlx_fixtures import PROMPT, converted_sd, converted_sdxl, mlx_out_root  # noqa: F401  (fixtures)
from PIL import Image
from pixelai_runner import preview
from pixelai_runner.backends.base import GenerateRequest
from runner_client import RunnerProcess

HERE = Path(__file__).resolve().parent
_ids = itertools.count(1)


def test_preview_due_every_n_steps():
    assert [k for k in range(1, 9) if preview.preview_due(k, 3)] == [3, 6]
    assert [k for k in range(1, 4) if preview.preview_due(k, 1)] == [1, 2, 3]
    assert not any(preview.preview_due(k, every) for k in range(1, 5) for every in (None, 0, -2))


def test_zero_latents_are_mid_grey_for_sd_and_the_bias_for_sdxl():
    zeros = np.zeros((1, 4, 2, 3), dtype=np.float32)
    sd = np.asarray(preview.latents_to_rgb(zeros, "sd"))
    assert sd.shape == (2, 3, 3) and (sd == 128).all()  # (0 + 1) * 127.5 rounds to 128
    sdxl = np.asarray(preview.latents_to_rgb(zeros, "sdxl"))
    expected = ((preview.SDXL_BIAS + 1) * 127.5).round().astype(np.uint8)
    assert (sdxl == expected).all()


def test_each_channel_follows_its_row_of_the_matrix_and_saturates():
    latents = np.zeros((1, 4, 1, 1), dtype=np.float32)
    latents[0, 0] = 1.0
    rgb = np.asarray(preview.latents_to_rgb(latents, "sd"))[0, 0]
    assert list(rgb) == [round((v + 1) * 127.5) for v in preview.SD_FACTORS[0]]
    latents[0, 3] = 100.0  # far outside the decoder's range: clipped, not wrapped
    assert list(np.asarray(preview.latents_to_rgb(latents, "sd"))[0, 0]) == [0, 0, 0]


def test_nchw_and_nhwc_give_the_same_picture_and_other_latent_spaces_none():
    rng = np.random.default_rng(0)
    nchw = rng.standard_normal((1, 4, 5, 7)).astype(np.float32)
    a = preview.latents_to_rgb(nchw, "sd", "nchw")
    b = preview.latents_to_rgb(nchw.transpose(0, 2, 3, 1), "sd", "nhwc")
    assert a.size == (7, 5) and np.array_equal(np.asarray(a), np.asarray(b))
    assert preview.latents_to_rgb(np.zeros((1, 16, 4, 4)), "sd") is None


def test_big_latents_are_capped_to_keep_previews_small():
    image = preview.latents_to_rgb(np.zeros((1, 4, 256, 192), dtype=np.float32), "sdxl")
    assert image.size == (96, 128)


def test_emit_step_adds_a_preview_only_on_the_asked_steps_and_reads_latents_only_then():
    calls, reads = [], []
    latents = np.zeros((1, 4, 3, 5), dtype=np.float32)

    def read():
        reads.append(1)
        return latents

    for step in range(1, 5):
        preview.emit_step(lambda *args: calls.append(args), step, 4, 2, read, "sd", "nchw")
    assert [len(c) for c in calls] == [2, 3, 2, 3]  # two-argument callers never see a preview step's third argument
    assert [c[:2] for c in calls] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert calls[1][2].size == (5, 3) and len(reads) == 2
    preview.emit_step(lambda *args: calls.append(args), 1, 1, None, read, "sd", "nchw")
    assert calls[-1] == (1, 1) and len(reads) == 2
    # latents no map exists for (16 channels) are reported without a preview
    preview.emit_step(lambda *args: calls.append(args), 2, 2, 1, lambda: np.zeros((1, 16, 2, 2)), "sd", "nchw")
    assert calls[-1] == (2, 2)


def test_write_preview_names_the_step_and_hashes_the_file(tmp_path):
    image = Image.new("RGB", (8, 8), (10, 20, 30))
    path, digest = preview.write_preview(image, str(tmp_path), 3)
    assert Path(path) == tmp_path / "preview-0003.png"
    assert digest == hashlib.sha256(Path(path).read_bytes()).hexdigest()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["preview-0003.png"]  # no .partial left behind


@pytest.fixture(scope="module")
def torch_runner(tmp_path_factory):
    logs = tmp_path_factory.mktemp("preview-runner-logs")
    proc = RunnerProcess([str(HERE / "noisy_runner.py"), "--engine", "torch", "--device", "cpu"], logs / "stderr.log")
    proc.next_message(lambda m: m.get("event") == "ready", timeout=120)
    yield proc
    proc.close()


@pytest.mark.parametrize("model", ["sd", "sdxl"])
def test_torch_runner_sends_preview_files_on_the_asked_steps(torch_runner, tiny_sd, tiny_sdxl, tmp_path, model):
    out = tmp_path / "job"
    out.mkdir()
    params = {
        "jobId": "preview-job",
        "modelSource": str(tiny_sd if model == "sd" else tiny_sdxl),
        "prompt": PROMPT,
        "width": 64,
        "height": 48,
        "steps": 4,
        "guidanceScale": 5.0,
        "seed": 3,
        "outputDir": str(out),
        "pixel": None,
        "removeBackground": False,
        "lora": None,
        "previewEvery": 2,
    }
    rid = f"gen-preview-{next(_ids)}"
    torch_runner.send({"id": rid, "op": "generate", "params": params})
    progress, final = torch_runner.events(rid, 120)
    assert final["event"] == "result", final
    with_preview = [p for p in progress if "previewPath" in p]
    assert [p["step"] for p in progress] == [1, 2, 3, 4]
    assert [p["step"] for p in with_preview] == [2, 4]
    for p in with_preview:
        data = Path(p["previewPath"]).read_bytes()
        assert Path(p["previewPath"]).parent == out
        assert hashlib.sha256(data).hexdigest() == p["previewSha256"]
        with Image.open(p["previewPath"]) as img:  # the latent resolution: 1/8 of 64x48
            assert img.format == "PNG" and img.size == (8, 6) == (p["previewWidth"], p["previewHeight"])


def test_probe_says_both_engines_make_step_previews():
    from pixelai_runner.backends.mlx import MLXBackend
    from pixelai_runner.backends.torch_backend import TorchBackend

    assert MLXBackend().probe()["features"]["stepPreview"] is True
    assert TorchBackend().probe()["features"]["stepPreview"] is True


def test_mlx_engine_hands_previews_to_on_step(converted_sd):
    from pixelai_runner.backends.mlx import MLXBackend

    req = GenerateRequest.from_params(
        dict(
            jobId="j-preview",
            modelSource=str(converted_sd),
            prompt=PROMPT,
            width=64,
            height=64,
            steps=3,
            guidanceScale=7.5,
            seed=11,
            outputDir="/tmp",
            scheduler="euler",
            initNoise="torch",
            previewEvery=1,
        )
    )
    seen = []
    MLXBackend().generate(req, lambda k, n, image=None: seen.append((k, n, image)), lambda: None)
    assert [(k, n) for k, n, _ in seen] == [(1, 3), (2, 3), (3, 3)]
    assert all(isinstance(image, Image.Image) and image.size == (8, 8) for _, _, image in seen)
    # later steps are less noisy: the previews change as the latents are denoised
    assert np.asarray(seen[0][2]).tobytes() != np.asarray(seen[2][2]).tobytes()
