"""pixelai_runner.hub_install against the stand-in hub: what is fetched (and what never is), pinning, resuming after a
SIGKILL, and every failure as a taxonomy code with a hint."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hub_fixtures import fake_hub, fake_hub_repos, hub_repos  # noqa: F401  (fixtures)
from huggingface_hub import HfApi
from pixelai_runner import hub_install
from pixelai_runner.hub_install import InstallError, RepoEntry, classify, install, select_base, select_lora

REPO_ROOT = Path(__file__).resolve().parents[2]
SDXL = fake_hub_repos.SDXL_REPO
LORA = fake_hub_repos.LORA_REPO
UNET = "unet/diffusion_pytorch_model.safetensors"
BASE_FILES = [
    "model_index.json",
    "scheduler/scheduler_config.json",
    "text_encoder/config.json",
    "text_encoder/model.safetensors",
    "text_encoder_2/config.json",
    "text_encoder_2/model.safetensors",
    "tokenizer/merges.txt",
    "tokenizer/tokenizer.json",
    "tokenizer/tokenizer_config.json",
    "tokenizer/vocab.json",
    "tokenizer_2/merges.txt",
    "tokenizer_2/tokenizer.json",
    "tokenizer_2/tokenizer_config.json",
    "tokenizer_2/vocab.json",
    "unet/config.json",
    UNET,
    "vae/config.json",
    "vae/diffusion_pytorch_model.safetensors",
]


def _files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and p.name[0] != ".")


def _gets(hub) -> list[dict]:
    return [r for r in hub.log()["requests"] if r["method"] == "GET"]


def _run_cli(hub_url: str | None, *args: str, env: dict | None = None) -> tuple[int, list[dict]]:
    full_env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "python"), **(env or {})}
    if hub_url:
        full_env["HF_ENDPOINT"] = hub_url
    res = subprocess.run(
        [sys.executable, "-m", "pixelai_runner.hub_install", *args],
        env=full_env,
        capture_output=True,
        timeout=120,
    )
    return res.returncode, [json.loads(line) for line in res.stdout.decode().splitlines() if line.strip()]


def test_base_install_fetches_only_the_pipelines_safetensors_pinned_to_the_commit(fake_hub, tmp_path):
    events = []
    done = install(SDXL, "base", tmp_path, endpoint=fake_hub.url, chunk_bytes=64 * 1024, emit=events.append)
    commit = HfApi(endpoint=fake_hub.url).model_info(SDXL).sha
    snapshot = tmp_path / SDXL / commit
    assert done["commit"] == commit and done["path"] == str(snapshot) and done["variant"] is None
    assert _files(snapshot) == BASE_FILES
    for rel in BASE_FILES:
        assert (snapshot / rel).read_bytes() == fake_hub.file(SDXL, rel).read_bytes()
    fetched = {r["path"].removeprefix(SDXL + "/") for r in _gets(fake_hub)}
    assert fetched == set(BASE_FILES)  # no .bin, no single-file checkpoint, no README, no fp16 copies
    kinds = [e["event"] for e in events]
    assert kinds[0] == "resolved" and kinds[-1] == "done"
    resolved = events[0]
    assert resolved["commit"] == commit and resolved["filesTotal"] == len(BASE_FILES)
    assert resolved["bytesTotal"] == sum(fake_hub.file(SDXL, f).stat().st_size for f in BASE_FILES)
    progress = [e for e in events if e["event"] == "progress"]
    assert progress[-1]["bytesDone"] == resolved["bytesTotal"] and progress[-1]["filesDone"] == len(BASE_FILES)
    done_bytes = [e["bytesDone"] for e in progress]
    assert done_bytes == sorted(done_bytes) and len(set(done_bytes)) > 10  # it moves, chunk by chunk, never back
    assert json.loads((snapshot / hub_install.MARKER).read_text())["commit"] == commit


def test_fp16_variant_is_taken_where_published(fake_hub, tmp_path):
    done = install(SDXL, "base", tmp_path, variant="fp16", endpoint=fake_hub.url)
    snapshot = Path(done["path"])
    assert done["variant"] == "fp16"
    weights = [f for f in _files(snapshot) if f.endswith(".safetensors")]
    assert weights == [
        "text_encoder/model.fp16.safetensors",
        "text_encoder_2/model.fp16.safetensors",
        "unet/diffusion_pytorch_model.fp16.safetensors",
        "vae/diffusion_pytorch_model.fp16.safetensors",
    ]


def test_a_second_install_of_the_same_commit_fetches_nothing(fake_hub, tmp_path):
    install(LORA, "lora", tmp_path, endpoint=fake_hub.url)
    fake_hub.clear_log()
    again = install(LORA, "lora", tmp_path, endpoint=fake_hub.url)
    assert again["reused"] is True
    assert _gets(fake_hub) == []


def test_lora_install_takes_the_one_safetensors_file(fake_hub, tmp_path):
    done = install(LORA, "lora", tmp_path, endpoint=fake_hub.url)
    assert done["weightName"] == "pixel-art-xl.safetensors"
    assert _files(Path(done["path"])) == ["pixel-art-xl.safetensors"]


@pytest.mark.parametrize(
    ("repo", "kind"), [(fake_hub_repos.PICKLE_LORA_REPO, "lora"), (fake_hub_repos.PICKLE_SD_REPO, "base")]
)
def test_pickle_only_weights_are_refused_and_never_fetched(fake_hub, tmp_path, repo, kind):
    code, events = _run_cli(fake_hub.url, "--repo", repo, "--kind", kind, "--dest", str(tmp_path))
    assert code == 1
    assert events[-1]["event"] == "error" and events[-1]["code"] == "UNSAFE_WEIGHTS"
    assert ".bin" in events[-1]["message"] and events[-1]["hint"]
    assert not [r for r in _gets(fake_hub) if r["path"].endswith(".bin")]


def test_a_killed_install_resumes_without_refetching_finished_bytes(fake_hub, tmp_path):
    size = fake_hub.file(SDXL, UNET).stat().st_size
    fake_hub.faults(stall={"file": f"{SDXL}/{UNET}", "afterBytes": 1_000_000})
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "python"), "HF_ENDPOINT": fake_hub.url}
    args = ["--repo", SDXL, "--kind", "base", "--dest", str(tmp_path), "--chunk-bytes", "65536"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "pixelai_runner.hub_install", *args], env=env, stdout=subprocess.PIPE
    )
    deadline = time.time() + 60
    while not fake_hub.log()["stalled"]:
        assert time.time() < deadline and proc.poll() is None, "the install never reached the stalled file"
        time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = next(tmp_path.rglob("diffusion_pytorch_model.safetensors.incomplete"))
    kept = partial.stat().st_size
    assert 0 < kept <= 1_000_000
    finished_before = {r["path"] for r in _gets(fake_hub) if r["bytesSent"] and r["path"] != f"{SDXL}/{UNET}"}

    fake_hub.faults()
    fake_hub.clear_log()
    code, events = _run_cli(fake_hub.url, *args)
    assert code == 0, events[-1]
    resolved = next(e for e in events if e["event"] == "resolved")
    assert resolved["bytesPresent"] >= kept
    gets = _gets(fake_hub)
    unet = [r for r in gets if r["path"] == f"{SDXL}/{UNET}"]
    assert [(r["rangeStart"], r["status"], r["bytesSent"]) for r in unet] == [(kept, 206, size - kept)]
    # Files finished before the kill are not fetched again.
    assert finished_before and not finished_before & {r["path"] for r in gets}
    snapshot = Path(events[-1]["path"])
    assert (snapshot / UNET).read_bytes() == fake_hub.file(SDXL, UNET).read_bytes()


def test_a_corrupt_partial_file_fails_verification_and_is_discarded(fake_hub, tmp_path):
    commit = HfApi(endpoint=fake_hub.url).model_info(LORA).sha
    target = tmp_path / LORA / commit / "pixel-art-xl.safetensors.incomplete"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"\xff" * 5000)
    with pytest.raises(InstallError) as err:
        install(LORA, "lora", tmp_path, endpoint=fake_hub.url)
    assert err.value.code == "HASH_MISMATCH"
    assert not target.exists()
    assert install(LORA, "lora", tmp_path, endpoint=fake_hub.url)["weightName"] == "pixel-art-xl.safetensors"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("how", ["down", "no-listener", "offline"])
def test_an_unreachable_hub_is_HUB_UNREACHABLE_with_a_hint(fake_hub, tmp_path, how):
    url, env = fake_hub.url, {}
    if how == "down":
        fake_hub.faults(down=True)
    elif how == "no-listener":
        url = f"http://127.0.0.1:{_closed_port()}"
    else:
        env = {"HF_HUB_OFFLINE": "1"}
    code, events = _run_cli(url, "--repo", SDXL, "--kind", "base", "--dest", str(tmp_path), env=env)
    assert code == 1
    error = events[-1]
    assert error["event"] == "error" and error["code"] == "HUB_UNREACHABLE"
    assert "models/" in error["hint"] and "HF_ENDPOINT" in error["hint"]


@pytest.mark.parametrize(
    ("repo", "revision"), [("nobody/nothing", "main"), (SDXL, "no-such-branch")], ids=["repo", "revision"]
)
def test_unknown_repositories_and_revisions_are_HUB_NOT_FOUND(fake_hub, tmp_path, repo, revision):
    code, events = _run_cli(
        fake_hub.url, "--repo", repo, "--revision", revision, "--kind", "base", "--dest", str(tmp_path)
    )
    assert (code, events[-1]["code"]) == (1, "HUB_NOT_FOUND")


def test_a_base_install_of_a_lora_repository_is_HUB_REPO_UNSUPPORTED(fake_hub, tmp_path):
    code, events = _run_cli(fake_hub.url, "--repo", LORA, "--kind", "base", "--dest", str(tmp_path))
    assert (code, events[-1]["code"]) == (1, "HUB_REPO_UNSUPPORTED")
    assert "kind lora" in events[-1]["hint"]


def test_not_enough_disk_space_is_refused_before_the_weights(fake_hub, tmp_path, monkeypatch):
    real = shutil.disk_usage
    monkeypatch.setattr(hub_install.shutil, "disk_usage", lambda p: real(p)._replace(free=1_000_000))
    with pytest.raises(InstallError) as err:
        install(SDXL, "base", tmp_path, endpoint=fake_hub.url)
    assert err.value.code == "INSUFFICIENT_STORAGE" and "MB free" in err.value.message
    assert [r["path"] for r in _gets(fake_hub)] == [f"{SDXL}/model_index.json"]


def test_hub_ids_that_escape_are_refused_before_any_request(fake_hub, tmp_path):
    for bad in ("../etc", "a/../../b", "a/b/c", "/abs/x", "a\\b"):
        with pytest.raises(Exception) as err:
            install(bad, "base", tmp_path, endpoint=fake_hub.url)
        assert classify(err.value).code == "INVALID_REQUEST", bad
    code, events = _run_cli(fake_hub.url, "--repo", "../../etc", "--kind", "base", "--dest", str(tmp_path))
    assert (code, events[-1]["code"]) == (1, "INVALID_REQUEST")
    assert fake_hub.log()["requests"] == []
    assert list(tmp_path.iterdir()) == []


def _entries(*paths: str) -> list[RepoEntry]:
    return [RepoEntry(p, 10) for p in paths]


def test_selection_handles_sharded_and_variant_weights():
    index = {"_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet"], "safety_checker": ["x", "Y"]}
    entries = _entries(
        "model_index.json",
        "unet/config.json",
        "unet/diffusion_pytorch_model-00001-of-00002.safetensors",
        "unet/diffusion_pytorch_model-00002-of-00002.safetensors",
        "unet/diffusion_pytorch_model.safetensors.index.json",
        "unet/diffusion_pytorch_model.fp16-00001-of-00001.safetensors",
        "unet/diffusion_pytorch_model.safetensors.index.fp16.json",
        "unet/diffusion_pytorch_model.bin",
        "unet/pytorch_model.bin.index.json",
        "safety_checker/model.safetensors",
    )
    plain = [e.path for e in select_base(entries, index, None).files]
    assert plain == [
        "model_index.json",
        "unet/config.json",
        "unet/diffusion_pytorch_model-00001-of-00002.safetensors",
        "unet/diffusion_pytorch_model-00002-of-00002.safetensors",
        "unet/diffusion_pytorch_model.safetensors.index.json",
    ]
    fp16 = select_base(entries, index, "fp16")
    assert fp16.variant == "fp16"
    assert [e.path for e in fp16.files][2:] == [
        "unet/diffusion_pytorch_model.fp16-00001-of-00001.safetensors",
        "unet/diffusion_pytorch_model.safetensors.index.fp16.json",
    ]


def test_paths_from_the_hub_cannot_leave_the_snapshot(tmp_path):
    index = {"unet": ["diffusers", "UNet"], "../evil": ["diffusers", "UNet"], "a/b": ["x", "Y"]}
    entries = _entries("model_index.json", "unet/config.json", "../evil/x.safetensors", "a/b/c.safetensors")
    assert [e.path for e in select_base(entries, index, None).files] == ["model_index.json", "unet/config.json"]
    for bad in ("../x", "a/../../x", "/etc/passwd", "a\\..\\x", "a//b", "./x", ""):
        with pytest.raises(InstallError):
            hub_install._inside(tmp_path, bad)
    assert hub_install._inside(tmp_path, "unet/config.json") == tmp_path / "unet" / "config.json"


def test_lora_selection_prefers_the_named_then_the_default_file():
    entries = _entries("a.safetensors", "pytorch_lora_weights.safetensors", "b.bin")
    assert select_lora(entries, None).weight_name == "pytorch_lora_weights.safetensors"
    assert select_lora(entries, "a.safetensors").weight_name == "a.safetensors"
    with pytest.raises(InstallError) as err:
        select_lora(entries, "b.bin")
    assert err.value.code == "UNSAFE_WEIGHTS"
    with pytest.raises(InstallError) as err:
        select_lora(_entries("a.safetensors", "c.safetensors"), None)
    assert err.value.code == "HUB_REPO_UNSUPPORTED" and "weightName" in err.value.hint


def test_every_install_code_is_in_the_shared_taxonomy():
    from pixelai_runner.errors import ERROR_CODES

    source = (REPO_ROOT / "python" / "pixelai_runner" / "hub_install.py").read_text()
    used = set(re.findall(r'InstallError\(\s*"([A-Z_]+)"', source))
    assert used and used <= set(ERROR_CODES)
