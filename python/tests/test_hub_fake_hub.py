"""The stand-in hub speaks the hub's protocol as huggingface_hub reads it: listings, file metadata, ranged downloads,
errors, and its fault switches. Driven through huggingface_hub's own functions, so a mismatch fails here first."""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path

import httpx2
import pytest
from hub_fixtures import fake_hub, fake_hub_repos, hub_repos  # noqa: F401  (fixtures)
from huggingface_hub import HfApi, get_hf_file_metadata, hf_hub_url, snapshot_download
from huggingface_hub.errors import (
    HfHubHTTPError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.file_download import http_get

SDXL = fake_hub_repos.SDXL_REPO
LORA = fake_hub_repos.LORA_REPO
UNET = "unet/diffusion_pytorch_model.safetensors"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_model_info_lists_every_file_with_sizes_and_lfs_hashes(fake_hub):
    info = HfApi(endpoint=fake_hub.url).model_info(SDXL, revision="main", files_metadata=True)
    assert len(info.sha) == 40
    by_name = {s.rfilename: s for s in info.siblings}
    assert {"model_index.json", UNET, "unet/diffusion_pytorch_model.bin", "sd_xl_base_1.0.safetensors"} <= set(by_name)
    unet = by_name[UNET]
    assert unet.size == fake_hub.file(SDXL, UNET).stat().st_size
    assert unet.lfs.sha256 == _sha256(fake_hub.file(SDXL, UNET))
    assert by_name["model_index.json"].lfs is None
    # The commit pins a revision: asking for it by sha answers the same listing.
    again = HfApi(endpoint=fake_hub.url).model_info(SDXL, revision=info.sha)
    assert again.sha == info.sha


def test_snapshot_download_with_allow_patterns_fetches_only_matching_files(fake_hub, tmp_path):
    out = snapshot_download(
        SDXL, endpoint=fake_hub.url, local_dir=tmp_path / "snap", allow_patterns=["model_index.json", "unet/*.json"]
    )
    got = sorted(p.relative_to(out).as_posix() for p in Path(out).rglob("*") if p.is_file() and ".cache" not in p.parts)
    assert got == ["model_index.json", "unet/config.json"]
    assert (Path(out) / "unet/config.json").read_bytes() == fake_hub.file(SDXL, "unet/config.json").read_bytes()


def test_file_metadata_carries_commit_etag_and_size(fake_hub):
    info = HfApi(endpoint=fake_hub.url).model_info(SDXL)
    meta = get_hf_file_metadata(hf_hub_url(SDXL, UNET, revision=info.sha, endpoint=fake_hub.url))
    assert meta.commit_hash == info.sha
    assert meta.etag == _sha256(fake_hub.file(SDXL, UNET))  # X-Linked-Etag: the LFS sha256
    assert meta.size == fake_hub.file(SDXL, UNET).stat().st_size
    small = get_hf_file_metadata(hf_hub_url(SDXL, "model_index.json", revision="main", endpoint=fake_hub.url))
    data = fake_hub.file(SDXL, "model_index.json").read_bytes()
    assert small.etag == hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()  # git blob id


def test_ranged_download_resumes_from_the_given_byte(fake_hub, tmp_path):
    source = fake_hub.file(LORA, "pixel-art-xl.safetensors").read_bytes()
    part = tmp_path / "part"
    part.write_bytes(source[:1000])
    with open(part, "r+b") as fh:
        fh.seek(0, 2)
        http_get(
            hf_hub_url(LORA, "pixel-art-xl.safetensors", endpoint=fake_hub.url),
            fh,
            resume_size=1000,
            expected_size=len(source),
        )
    assert part.read_bytes() == source
    gets = [r for r in fake_hub.log()["requests"] if r["method"] == "GET"]
    assert [(r["rangeStart"], r["status"], r["bytesSent"]) for r in gets] == [(1000, 206, len(source) - 1000)]


@pytest.mark.parametrize(
    ("repo", "revision", "filename", "error"),
    [
        ("nobody/nothing", "main", "model_index.json", RepositoryNotFoundError),
        (SDXL, "no-such-branch", "model_index.json", RevisionNotFoundError),
        (SDXL, "main", "unet/missing.safetensors", RemoteEntryNotFoundError),
    ],
)
def test_errors_carry_the_hubs_error_codes(fake_hub, repo, revision, filename, error):
    with pytest.raises(error):
        get_hf_file_metadata(hf_hub_url(repo, filename, revision=revision, endpoint=fake_hub.url))


def test_down_switch_answers_503_until_cleared(fake_hub):
    api = HfApi(endpoint=fake_hub.url)
    fake_hub.faults(down=True)
    with pytest.raises(HfHubHTTPError) as err:
        api.model_info(LORA)
    assert err.value.response.status_code == 503
    fake_hub.faults()
    assert api.model_info(LORA).sha


def test_stall_switch_holds_a_download_mid_file_until_cleared(fake_hub, tmp_path):
    size = fake_hub.file(SDXL, UNET).stat().st_size
    fake_hub.faults(stall={"file": f"{SDXL}/{UNET}", "afterBytes": 100_000})
    url = hf_hub_url(SDXL, UNET, endpoint=fake_hub.url)
    received = []

    def download():
        with httpx2.stream("GET", url, timeout=30) as res:
            for chunk in res.iter_bytes():
                received.append(len(chunk))

    thread = threading.Thread(target=download)
    thread.start()
    deadline = time.time() + 10
    while not fake_hub.log()["stalled"]:
        assert time.time() < deadline, "the download never reached the stall"
        time.sleep(0.05)
    time.sleep(0.3)
    assert sum(received) == 100_000 and thread.is_alive()
    fake_hub.faults()
    thread.join(timeout=10)
    assert sum(received) == size
