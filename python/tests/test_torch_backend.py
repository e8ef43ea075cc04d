"""TorchBackend pieces that need no subprocess: LRU policy, schedulers (the shared noise is test_noise.py)."""

from __future__ import annotations

import pytest
from pixelai_runner.backends.torch_backend import TorchBackend, _Loaded, make_scheduler
from pixelai_runner.device import DeviceInfo
from pixelai_runner.errors import RunnerError
from pixelai_runner.settings import RunnerSettings, parse_args

CPU = DeviceInfo("cpu", "test cpu", "float32")


@pytest.fixture
def counting_backend(monkeypatch):
    loads: list[str] = []

    def fake_load(self, source):
        loads.append(source)
        return _Loaded(pipe=object(), kind="sd", base_scheduler_config={})

    monkeypatch.setattr(TorchBackend, "_load", fake_load)
    return TorchBackend(device_info=CPU, cache_size=2), loads


def test_lru_keeps_the_most_recent_pipelines(counting_backend):
    backend, loads = counting_backend
    assert backend.cache_size == 2
    for source in ("a", "b", "a", "c", "a", "b"):
        backend.ensure_loaded(source)
    # "a" stays warm because it was used again before "c" arrived; "b" was evicted by "c", then "c" by "b".
    assert loads == ["a", "b", "c", "b"]
    assert backend.probe()["loadedModels"] == ["a", "b"]
    assert backend.unload("a") == ["a"] and backend.unload() == ["b"] and backend.unload() == []


def test_cache_hit_reports_zero_load_time(counting_backend):
    backend, _ = counting_backend
    backend.ensure_loaded("a")
    backend.ensure_loaded("a")
    assert backend.last_load_ms == 0.0


@pytest.mark.parametrize("argv, size", [([], 2), (["--pipeline-cache", "1"], 1), (["--pipeline-cache", "5"], 5)])
def test_cache_size_from_the_runner_option(argv, size):
    backend = TorchBackend.from_settings(parse_args(["--device", "cpu", *argv]))
    assert backend.cache_size == size and backend.probe()["cacheSize"] == size


@pytest.mark.parametrize("bad", [["--pipeline-cache", "junk"], ["--pipeline-cache", "0"], ["--device", "tpu"]])
def test_bad_runner_options_stop_the_runner_with_usage(bad, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_args(bad)
    assert exit_info.value.code == 2 and "usage:" in capsys.readouterr().err


def test_schedulers_are_built_from_the_model_config(tiny_sd):
    from diffusers import EulerDiscreteScheduler

    base = EulerDiscreteScheduler.from_pretrained(str(tiny_sd), subfolder="scheduler").config
    expected = {
        None: "EulerDiscreteScheduler",
        "euler": "EulerDiscreteScheduler",
        "euler_a": "EulerAncestralDiscreteScheduler",
        "ddim": "DDIMScheduler",
        "dpmpp_2m": "DPMSolverMultistepScheduler",
        "dpmpp_2m_karras": "DPMSolverMultistepScheduler",
    }
    for name, cls in expected.items():
        scheduler = make_scheduler(name, base)
        assert type(scheduler).__name__ == cls
        assert scheduler.config.beta_schedule == "scaled_linear" and scheduler.config.beta_end == pytest.approx(0.012)
    assert make_scheduler("dpmpp_2m", base).config.algorithm_type == "dpmsolver++"
    assert make_scheduler("dpmpp_2m", base).config.use_karras_sigmas is False
    assert make_scheduler("dpmpp_2m_karras", base).config.use_karras_sigmas is True
    with pytest.raises(RunnerError):
        make_scheduler("plms", base)


def test_device_option_forces_the_device():
    backend = TorchBackend.from_settings(RunnerSettings(engine="torch", device="cpu"))
    assert backend.info.device == "cpu" and backend.info.dtype == "float32" and backend.probe()["device"] == "cpu"


@pytest.mark.parametrize("source", ["stabilityai/stable-diffusion-xl-base-1.0", "models/tiny-sd", "/no/such/folder"])
def test_load_never_treats_a_hub_id_or_relative_path_as_something_to_fetch(source, monkeypatch):
    import huggingface_hub

    def no_network(*args, **kwargs):
        raise AssertionError("the runner must not fetch anything")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", no_network)
    backend = TorchBackend(device_info=CPU, cache_size=1)
    with pytest.raises(RunnerError) as err:
        backend._load(source)
    assert err.value.code == "MODEL_NOT_FOUND"
    assert "local folders only" in err.value.message


def test_a_hub_snapshot_is_used_only_at_its_pinned_commit(tmp_path):
    from pixelai_runner import model_files
    from pixelai_runner.backends.torch_backend import _check_pinned

    (tmp_path / model_files.INSTALL_RECORD).write_text('{"commit": "' + "a" * 40 + '"}')
    _check_pinned(str(tmp_path), "a" * 40, "MODEL_NOT_FOUND")
    _check_pinned(str(tmp_path), None, "MODEL_NOT_FOUND")  # a local model: nothing to check
    with pytest.raises(RunnerError) as err:
        _check_pinned(str(tmp_path), "b" * 40, "LORA_NOT_FOUND")
    assert err.value.code == "LORA_NOT_FOUND"


def test_a_hub_snapshot_with_only_fp16_weights_loads_them_safetensors_only(tiny_sd, tmp_path):
    """An installed snapshot (install record present) holding `*.fp16.safetensors` only: the fp32 CPU runner loads it
    with variant="fp16"; a pickle file dropped beside the weights is never read (use_safetensors=True)."""
    import json
    import shutil

    from pixelai_runner import model_files

    commit = "c" * 40
    snapshot = tmp_path / ".hub" / "owner" / "tiny" / commit
    shutil.copytree(tiny_sd, snapshot)
    for weights in snapshot.glob("*/*.safetensors"):
        weights.rename(weights.with_name(weights.name.replace(".safetensors", ".fp16.safetensors")))
    (snapshot / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"not a pickle: reading it would fail")
    (snapshot / model_files.INSTALL_RECORD).write_text(json.dumps({"commit": commit, "kind": "base"}))
    backend = TorchBackend(device_info=CPU, cache_size=1)
    loaded = backend._load(str(snapshot))
    assert loaded.kind == "sd"
    assert next(loaded.pipe.unet.parameters()).dtype == backend.torch_dtype  # fp16 files, loaded at the device's dtype


def test_a_kept_scheduler_gives_what_a_fresh_one_gives(tiny_sd):
    """Schedulers are kept per pipeline and kind (_Loaded.scheduler): a job after other jobs, on other schedulers and
    seeds, must come out exactly as the same job on a backend that never ran anything."""
    import numpy as np
    from pixelai_runner.backends.base import GenerateRequest

    def request(scheduler: str, seed: int) -> GenerateRequest:
        return GenerateRequest.from_params(
            dict(
                jobId=f"{scheduler}-{seed}",
                modelSource=str(tiny_sd),
                prompt="a knight",
                width=64,
                height=64,
                steps=3,
                guidanceScale=7.5,
                seed=seed,
                outputDir="/tmp",
                scheduler=scheduler,
                initNoise="torch",
            )
        )

    def pixels(backend: TorchBackend, req: GenerateRequest) -> np.ndarray:
        return np.asarray(backend.generate(req, lambda *args: None, lambda: None).image)

    warm = TorchBackend(device_info=CPU)
    names = ["euler", "euler_a", "ddim", "dpmpp_2m", "dpmpp_2m_karras"]
    for name in names:  # every kind used once, so each is kept with its state from a run
        pixels(warm, request(name, 3))
    loaded = warm.ensure_loaded(str(tiny_sd))
    kept = dict(loaded.schedulers)
    assert sorted(kept) == sorted(names)
    for name in names:
        again = pixels(warm, request(name, 11))
        assert loaded.schedulers[name] is kept[name]  # the same object served the second job
        fresh = pixels(TorchBackend(device_info=CPU), request(name, 11))
        assert np.array_equal(again, fresh), name
