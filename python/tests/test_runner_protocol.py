"""The runner as Node sees it: a real subprocess speaking JSON lines, driving the tiny offline pipelines."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pixelai_runner import contract
from pixelize_cases import accuracy, paint, palette_art
from runner_client import RunnerProcess

HERE = Path(__file__).resolve().parent
# Pinned so results are comparable everywhere (a Mac would otherwise pick mps/fp16); set to cuda/mps to test those.
DEVICE = os.environ.get("PIXELAI_TEST_DEVICE", "cpu")
DTYPE = "float32" if DEVICE == "cpu" else "float16"
_ids = itertools.count(1)


def _rid(prefix: str) -> str:
    return f"{prefix}-{next(_ids)}"


@pytest.fixture(scope="module")
def runner(tmp_path_factory):
    logs = tmp_path_factory.mktemp("runner-logs")
    proc = RunnerProcess(
        # No --birefnet-dir: the probe below expects backgroundRemoval false.
        [str(HERE / "noisy_runner.py"), "--engine", "torch", "--device", DEVICE],
        logs / "stderr.log",
    )
    ready = proc.next_message(lambda m: m.get("event") == "ready", timeout=120)
    proc.ready = ready
    yield proc
    proc.close()


@pytest.fixture
def make_params(tmp_path, tiny_sd):
    counter = itertools.count()

    def make(**overrides) -> dict:
        out = tmp_path / f"job-{next(counter)}"
        out.mkdir()
        params = {
            "jobId": f"job-{out.name}",
            "modelSource": str(tiny_sd),
            "modelName": "tiny-sd",
            "prompt": "a pixel art knight with a sword",
            "negativePrompt": "blurry",
            "width": 64,
            "height": 64,
            "steps": 4,
            "guidanceScale": 5.0,
            "seed": 42,
            "scheduler": None,
            "initNoise": "torch",
            "pixel": {"width": 32, "height": 32, "colors": 16, "fitMode": "contain"},
            "removeBackground": False,
            "lora": None,
            "outputDir": str(out),
            "previewEvery": None,
        }
        params.update(overrides)
        return params

    return make


def _generate(runner, params, timeout=120):
    rid = _rid("gen")
    runner.send({"id": rid, "op": "generate", "params": params})
    return runner.events(rid, timeout)


def _ok(final: dict) -> dict:
    assert final["event"] == "result", final
    return final


def test_ready_line_and_native_noise_stays_off_the_protocol(runner):
    assert runner.ready["event"] == "ready" and runner.ready["engine"] == "torch"
    assert runner.ready["pid"] == runner.proc.pid and runner.ready["available"] is True
    assert (runner.ready["device"], runner.ready["dtype"]) == (DEVICE, DTYPE) and runner.ready["chip"]
    assert json.loads(runner.raw_lines[0]) == runner.ready
    runner.request({"id": _rid("probe"), "op": "probe"})  # make sure start-up noise has been flushed by now
    stderr = runner.stderr_tail(200_000)
    for noise in ("NOISE raw fd-1 write", "NOISE libc printf", "NOISE python print"):
        assert noise in stderr
    assert not any(b"NOISE" in line for line in runner.raw_lines)


def test_probe_reports_engine_capabilities(runner):
    rid = _rid("probe")
    result = runner.request({"id": rid, "op": "probe"})
    assert result["id"] == rid and result["event"] == "result"
    assert result["engine"] == "torch" and result["available"] is True
    assert result["device"] == DEVICE and result["chip"] and result["dtype"] == DTYPE
    assert {"python", "torch", "diffusers"} <= set(result["versions"])
    assert result["features"] == {
        "lora": True,
        "sdxl": True,
        "backgroundRemoval": False,
        "img2img": True,
        "inpaint": True,
        "stepPreview": True,
    }
    assert set(result["schedulers"]) == {"euler", "euler_a", "ddim", "dpmpp_2m", "dpmpp_2m_karras"}


def test_bad_lines_get_invalid_request_and_the_runner_keeps_going(runner):
    runner.send("this is not json {")
    error = runner.next_message(lambda m: m.get("event") == "error" and m.get("id") is None)
    assert error["code"] == "INVALID_REQUEST"
    runner.send(json.dumps([1, 2, 3]))
    assert runner.next_message(lambda m: m.get("event") == "error" and m.get("id") is None)["code"] == "INVALID_REQUEST"
    rid = _rid("weird")
    assert runner.request({"id": rid, "op": "teleport"})["code"] == "INVALID_REQUEST"
    assert runner.request({"id": _rid("probe"), "op": "probe"})["event"] == "result"


def test_generate_invalid_params_are_rejected_at_once(runner, make_params, tmp_path):
    params = make_params()
    del params["prompt"]
    _, final = _generate(runner, params)
    assert final["code"] == "INVALID_REQUEST"
    _, final = _generate(runner, make_params(outputDir=str(tmp_path / "missing")))
    assert final["code"] == "INVALID_REQUEST"
    _, final = _generate(runner, make_params(pixel={"width": 8, "height": 8, "colors": 4, "fitMode": "zoom"}))
    assert final["code"] == "INVALID_REQUEST"
    _, final = _generate(runner, make_params(scheduler="plms"))
    assert final["code"] == "INVALID_REQUEST"


def test_missing_model_is_model_not_found(runner, make_params, tmp_path):
    progress, final = _generate(runner, make_params(modelSource=str(tmp_path / "no-such-model")))
    assert progress == [] and final["code"] == "MODEL_NOT_FOUND"


def test_generate_streams_progress_then_writes_the_png(runner, make_params):
    params = make_params(removeBackground="color-key")
    progress, final = _generate(runner, params)
    assert [(p["step"], p["totalSteps"]) for p in progress] == [(k, 4) for k in range(1, 5)]
    result = _ok(final)
    path = Path(result["imagePath"])
    assert path == Path(params["outputDir"]) / "result.png" and path.is_file()
    assert result["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    with Image.open(path) as img:
        assert img.format == "PNG" and img.mode == "RGBA" and img.size == (32, 32)
        assert len(set(img.get_flattened_data())) <= 16
    assert (result["width"], result["height"]) == (32, 32)
    assert result["seed"] == 42 and result["engine"] == "torch"
    assert result["device"] == DEVICE and result["dtype"] == DTYPE
    assert set(result["timings"]) == {"loadMs", "generateMs", "postprocessMs"}


def test_without_pixel_spec_the_png_has_the_base_size(runner, make_params):
    result = _ok(_generate(runner, make_params(pixel=None, width=64, height=48))[1])
    with Image.open(result["imagePath"]) as img:
        assert img.mode == "RGBA" and img.size == (64, 48)
        assert len(set(img.get_flattened_data())) > 16, "random weights must still give a varied image"


def test_same_seed_same_bytes_and_warm_cache(runner, make_params):
    first = _ok(_generate(runner, make_params(seed=7))[1])
    second = _ok(_generate(runner, make_params(seed=7))[1])
    other = _ok(_generate(runner, make_params(seed=8))[1])
    assert first["sha256"] == second["sha256"]
    assert Path(first["imagePath"]).read_bytes() == Path(second["imagePath"]).read_bytes()
    assert other["sha256"] != first["sha256"]
    assert second["timings"]["loadMs"] == 0 and other["timings"]["loadMs"] == 0


@pytest.mark.parametrize("scheduler", ["euler", "euler_a", "ddim", "dpmpp_2m", "dpmpp_2m_karras"])
def test_every_scheduler_runs_deterministically(runner, make_params, scheduler):
    a = _ok(_generate(runner, make_params(scheduler=scheduler, seed=3))[1])
    b = _ok(_generate(runner, make_params(scheduler=scheduler, seed=3))[1])
    assert a["sha256"] == b["sha256"]


def test_cancel_mid_generation_then_next_job_works(runner, make_params):
    rid = _rid("long")
    runner.send({"id": rid, "op": "generate", "params": make_params(steps=400)})
    runner.next_message(lambda m: m.get("id") == rid and m.get("event") == "progress" and m["step"] >= 2)
    assert runner.request({"id": _rid("cancel"), "op": "cancel", "target": rid})["cancelled"] is True
    progress, final = runner.events(rid)
    assert final["event"] == "error" and final["code"] == "CANCELLED"
    assert all(p["step"] < 400 for p in progress)
    assert runner.request({"id": _rid("cancel"), "op": "cancel", "target": rid})["cancelled"] is False
    _ok(_generate(runner, make_params())[1])


def test_probe_and_cancel_of_a_queued_job_are_answered_while_generating(runner, make_params):
    running, queued = _rid("running"), _rid("queued")
    runner.send({"id": running, "op": "generate", "params": make_params(steps=400)})
    runner.send({"id": queued, "op": "generate", "params": make_params()})
    runner.next_message(lambda m: m.get("id") == running and m.get("event") == "progress")
    assert runner.request({"id": _rid("probe"), "op": "probe"})["available"] is True
    assert runner.request({"id": _rid("cancel"), "op": "cancel", "target": queued})["cancelled"] is True
    assert runner.request({"id": _rid("cancel"), "op": "cancel", "target": running})["cancelled"] is True
    assert runner.events(running)[1]["code"] == "CANCELLED"
    progress, final = runner.events(queued)
    assert progress == [] and final["code"] == "CANCELLED"


def test_tiny_sdxl_generates(runner, make_params, tiny_sdxl):
    params = make_params(modelSource=str(tiny_sdxl), modelName="tiny-sdxl", pixel=None)
    progress, final = _generate(runner, params)
    assert len(progress) == 4
    with Image.open(_ok(final)["imagePath"]) as img:
        assert img.size == (64, 64) and len(set(img.get_flattened_data())) > 16


def test_lora_changes_the_image_and_unloads_cleanly(runner, make_params, tiny_sd, tmp_path):
    import torch
    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    torch.manual_seed(0)
    pipe = StableDiffusionPipeline.from_pretrained(str(tiny_sd), safety_checker=None, requires_safety_checker=False)
    pipe.unet.add_adapter(
        LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"], init_lora_weights=False)
    )
    lora_dir = tmp_path / "lora"
    StableDiffusionPipeline.save_lora_weights(str(lora_dir), unet_lora_layers=get_peft_model_state_dict(pipe.unet))
    lora_file = lora_dir / "pytorch_lora_weights.safetensors"
    assert lora_file.is_file()

    plain = _ok(_generate(runner, make_params(seed=11))[1])
    with_lora = _ok(_generate(runner, make_params(seed=11, lora={"source": str(lora_file), "strength": 1.0}))[1])
    again = _ok(_generate(runner, make_params(seed=11, lora={"source": str(lora_file), "strength": 1.0}))[1])
    after = _ok(_generate(runner, make_params(seed=11))[1])
    assert with_lora["sha256"] != plain["sha256"]
    assert again["sha256"] == with_lora["sha256"]
    assert after["sha256"] == plain["sha256"], "a job without LoRA must not inherit the previous job's LoRA"
    _, missing = _generate(runner, make_params(lora={"source": str(tmp_path / "nope.safetensors"), "strength": 1.0}))
    assert missing["code"] == "LORA_NOT_FOUND"


@pytest.mark.parametrize("grid", ["fixed", "auto"])
def test_pixel_grid_mode_reaches_post_processing(runner, make_params, grid):
    pixel = {"width": 32, "height": 32, "colors": 8, "fitMode": "contain", "grid": grid}
    result = _ok(_generate(runner, make_params(pixel=pixel))[1])
    with Image.open(result["imagePath"]) as img:
        assert img.size == (32, 32) and len(set(img.get_flattened_data())) <= 8


def test_generate_result_carries_the_pixel_report(runner, make_params):
    for grid in ("fixed", "auto"):
        pixel = {"width": 32, "height": 32, "colors": 8, "fitMode": "contain", "grid": grid}
        final = _ok(_generate(runner, make_params(pixel=pixel, removeBackground="color-key"))[1])
        contract.validate_event(final, "generate")
        report = final["pixel"]
        assert report["grid"]["mode"] == grid
        if grid == "auto":  # the tiny model paints noise: either a grid was found or the canvas was fitted whole
            assert report["grid"]["fit"] in ("native", "fixed") or report["grid"]["fit"].startswith("nearest from")
        assert set(report["background"]) == {"colour", "tolerance"}
    without = _ok(_generate(runner, make_params(pixel=None))[1])
    assert "pixel" not in without


def _art_png(path: Path, **paint_options) -> np.ndarray:
    """Writes pseudo pixel art of known 16×12 cells to `path` (RGB PNG); returns the true cells."""
    cells = palette_art(16, 12, 6, seed=5)
    image, _, _ = paint(cells, **{"pitch": 9.5, "phase": (3.0, 5.0), "blur": 0.08, "noise": 4.0, **paint_options})
    image.save(path, format="PNG")
    return cells


def _pixelize(runner, params: dict, timeout: float = 60) -> dict:
    rid = _rid("pix")
    runner.send({"id": rid, "op": "pixelize", "params": params})
    final = runner.final(rid, timeout)
    contract.validate_event(final, "pixelize")
    return final


def test_pixelize_recovers_the_art_and_reports_the_grid(runner, tmp_path):
    cells = _art_png(tmp_path / "input.png")
    params = {
        "jobId": "pix-1",
        "inputPath": str(tmp_path / "input.png"),
        "pixel": {"width": 16, "height": 12, "colors": 0},
        "outputDir": str(tmp_path),
    }
    final = _ok(_pixelize(runner, params))
    assert (final["width"], final["height"], final["engine"], final["device"]) == (16, 12, "torch", "cpu")
    assert final["imagePath"] == str(tmp_path / "result.png") and final["timings"]["postprocessMs"] > 0
    assert hashlib.sha256(Path(final["imagePath"]).read_bytes()).hexdigest() == final["sha256"]
    grid = final["pixel"]["grid"]
    assert (grid["mode"], grid["fit"], grid["cells"]) == ("auto", "native", [16, 12])
    assert grid["pitch"] == pytest.approx([9.5, 9.5], abs=0.2) and grid["confidence"] > 0.3
    with Image.open(final["imagePath"]) as out:
        assert accuracy(out, cells) >= 0.98


def test_pixelize_keys_the_background_and_keeps_the_palette(runner, tmp_path):
    cells = palette_art(16, 12, 5, seed=9).copy()
    cells[:, :2] = cells[:, -2:] = cells[:2, :] = cells[-2:, :] = (20, 200, 40)  # a flat border: the background
    image, _, _ = paint(cells, pitch=8.0)
    image.save(tmp_path / "input.png")
    params = {
        "jobId": "pix-2",
        "inputPath": str(tmp_path / "input.png"),
        "pixel": {"width": 16, "height": 12, "colors": 4, "grid": "auto"},
        "removeBackground": "color-key",
        "outputDir": str(tmp_path),
    }
    final = _ok(_pixelize(runner, params))
    assert final["pixel"]["background"]["colour"] == pytest.approx([20, 200, 40], abs=3)
    with Image.open(final["imagePath"]) as out:
        rgba = np.asarray(out.convert("RGBA"))
    assert (rgba[0, 0] == 0).all() and (rgba[6, 8, 3] == 255)
    assert len({tuple(p) for p in rgba.reshape(-1, 4)}) <= 4


def test_pixelize_bad_input_is_invalid_request(runner, tmp_path):
    (tmp_path / "input.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    params = {"jobId": "pix-3", "inputPath": str(tmp_path / "input.png"), "pixel": {"width": 8, "height": 8}}
    bad = _pixelize(runner, {**params, "outputDir": str(tmp_path)})
    assert (bad["event"], bad["code"]) == ("error", "INVALID_REQUEST") and "PNG" in bad["message"]
    missing = _pixelize(runner, {**params, "inputPath": str(tmp_path / "nope.png"), "outputDir": str(tmp_path)})
    assert missing["code"] == "INVALID_REQUEST" and "inputPath" in missing["message"]
    no_pixel = _pixelize(runner, {k: v for k, v in params.items() if k != "pixel"} | {"outputDir": str(tmp_path)})
    assert no_pixel["code"] == "INVALID_REQUEST" and "params.pixel" in no_pixel["message"]


def _sprite_png(path: Path, width: int, height: int, seed: int = 3) -> np.ndarray:
    cells = palette_art(width, height, 4, seed=seed)
    Image.fromarray(np.asarray(cells, dtype=np.uint8), "RGB").save(path)
    return np.asarray(cells, dtype=np.uint8)


def test_img2img_strength_zero_is_the_init_sprite_after_pixelization(runner, make_params):
    params = make_params(strength=0.0, pixel={"width": 16, "height": 16, "colors": 0})
    sprite = _sprite_png(Path(params["outputDir"]) / "init.png", 16, 16)
    progress, final = _generate(runner, {**params, "initImagePath": str(Path(params["outputDir"]) / "init.png")})
    assert progress == []  # nothing denoised
    with Image.open(_ok(final)["imagePath"]) as out:
        assert np.array_equal(np.asarray(out.convert("RGB")), sprite)


def test_img2img_mask_keeps_the_pixels_outside_it(runner, make_params):
    params = make_params(strength=0.8, pixel=None)
    out_dir = Path(params["outputDir"])
    sprite = _sprite_png(out_dir / "init.png", 8, 8)
    mask = np.zeros((8, 8, 4), dtype=np.uint8)
    mask[2:6, 2:6] = 255  # regenerate the middle 4x4 cells only
    Image.fromarray(mask, "RGBA").save(out_dir / "mask.png")
    progress, final = _generate(
        runner, {**params, "initImagePath": str(out_dir / "init.png"), "maskPath": str(out_dir / "mask.png")}
    )
    assert [(p["step"], p["totalSteps"]) for p in progress] == [(k, 3) for k in range(1, 4)]  # int(4 x 0.8)
    with Image.open(_ok(final)["imagePath"]) as out:
        rgb = np.asarray(out.convert("RGB")).astype(int)
    scaled = sprite.repeat(8, 0).repeat(8, 1).astype(int)
    keep = np.ones((64, 64), dtype=bool)
    keep[16:48, 16:48] = False
    assert np.array_equal(rgb[keep], scaled[keep])
    assert np.abs(rgb[~keep] - scaled[~keep]).max() > 20  # the masked part was generated


def test_img2img_bad_paths_are_invalid_request(runner, make_params):
    params = make_params(strength=0.5)
    missing = _generate(runner, {**params, "initImagePath": params["outputDir"] + "/nope.png"})[1]
    assert missing["code"] == "INVALID_REQUEST" and "initImagePath" in missing["message"]
    out_dir = Path(params["outputDir"])
    _sprite_png(out_dir / "init.png", 8, 8)
    no_init = _generate(runner, {**params, "maskPath": str(out_dir / "init.png")})[1]
    assert no_init["code"] == "INVALID_REQUEST" and "maskPath" in no_init["message"]
    too_strong = _generate(runner, {**params, "initImagePath": str(out_dir / "init.png"), "strength": 1.5})[1]
    assert too_strong["code"] == "INVALID_REQUEST" and "strength" in too_strong["message"]


def test_a_queued_pixelize_can_be_cancelled(runner, make_params, tmp_path):
    _art_png(tmp_path / "input.png")
    gen = _rid("gen")
    runner.send({"id": gen, "op": "generate", "params": make_params(steps=30)})
    pix = _rid("pix")
    params = {"jobId": "pix-4", "inputPath": str(tmp_path / "input.png"), "pixel": {"width": 16, "height": 12}}
    runner.send({"id": pix, "op": "pixelize", "params": {**params, "outputDir": str(tmp_path)}})
    assert runner.request({"id": _rid("cancel"), "op": "cancel", "target": pix})["cancelled"] is True
    assert runner.final(pix, 120)["code"] == "CANCELLED"
    _ok(runner.final(gen, 120))


# Shuts the module runner down: keep it the last test that uses `runner`.
def test_unload_then_shutdown(runner, tiny_sd):
    result = runner.request({"id": _rid("unload"), "op": "unload", "model": str(tiny_sd)})
    assert result["unloaded"] == [str(tiny_sd)]
    assert str(tiny_sd) not in runner.request({"id": _rid("probe"), "op": "probe"})["loadedModels"]
    rid = _rid("bye")
    assert runner.request({"id": rid, "op": "shutdown"}) == {"id": rid, "event": "result"}
    assert runner.proc.wait(30) == 0


def test_pixel_grid_defaults_to_auto_and_is_carried_as_given():
    from pixelai_runner.backends.base import GenerateRequest

    base = {
        "jobId": "j",
        "modelSource": "/m",
        "modelName": "m",
        "prompt": "p",
        "width": 64,
        "height": 64,
        "steps": 1,
        "guidanceScale": 1.0,
        "seed": 1,
        "outputDir": "/tmp",
    }
    assert GenerateRequest.from_params({**base, "pixel": {"width": 8, "height": 8}}).pixel.grid == "auto"
    fixed = GenerateRequest.from_params({**base, "pixel": {"width": 8, "height": 8, "grid": "fixed"}})
    assert fixed.pixel.grid == "fixed"


def test_a_runner_whose_supervisor_is_killed_mid_job_exits(make_params, tmp_path):
    # A SIGKILLed worker leaves its runner with stdin at end of file and a protocol stream nobody reads: the runner
    # stops the job and must exit by itself, although the answer it then owes can no longer be written.
    import subprocess
    import sys
    import time

    env = dict(os.environ, PYTHONPATH=str(HERE.parent) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    with open(tmp_path / "stderr.log", "wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pixelai_runner", "--engine", "torch", "--device", DEVICE],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=env,
        )
        try:
            assert json.loads(proc.stdout.readline())["event"] == "ready"
            request = {"id": "orphan-1", "op": "generate", "params": make_params(steps=60, previewEvery=None)}
            proc.stdin.write((json.dumps(request) + "\n").encode())
            proc.stdin.flush()
            assert json.loads(proc.stdout.readline())["event"] == "progress"  # the job is running
            proc.stdout.close()  # nobody reads the protocol stream any more...
            proc.stdin.close()  # ...and stdin ends, as when the worker is killed
            started = time.monotonic()
            code = proc.wait(timeout=60)
            assert time.monotonic() - started < 30, "the runner lingered after its supervisor was gone"
            assert code == 0, f"exit code {code}: the runner did not leave through its own exit path"
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
