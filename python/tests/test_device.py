import pytest
from pixelai_runner import device


def _yes():
    return True


def _no():
    return False


def _boom():
    raise RuntimeError("probe exploded")


@pytest.mark.parametrize(
    "cuda, mps, expected",
    [(_yes, _yes, "cuda"), (_yes, _no, "cuda"), (_no, _yes, "mps"), (_no, _no, "cpu")],
)
def test_pick_device_prefers_cuda_then_mps_then_cpu(cuda, mps, expected):
    assert device.pick_device(cuda_available=cuda, mps_available=mps) == expected


def test_pick_device_does_not_probe_mps_when_cuda_wins():
    assert device.pick_device(cuda_available=_yes, mps_available=_boom) == "cuda"


def test_pick_device_real_probes_on_this_machine():
    assert device.pick_device() in ("cuda", "mps", "cpu")


@pytest.mark.parametrize("dev, dtype", [("cuda", "float16"), ("mps", "float16"), ("cpu", "float32")])
def test_dtype_per_device(dev, dtype):
    assert device.dtype_name_for(dev) == dtype
    assert str(device.torch_dtype_for(dev)) == f"torch.{dtype}"


def test_chip_name_cuda_uses_device_name():
    name = device.chip_name("cuda", system="Linux", cuda_name=lambda: "NVIDIA H100", cpuinfo=lambda: "AMD EPYC")
    assert name == "NVIDIA H100"


def test_chip_name_apple_uses_sysctl_brand():
    name = device.chip_name("mps", system="Darwin", sysctl_brand=lambda: "Apple M2 Pro", processor=lambda: "arm")
    assert name == "Apple M2 Pro"


def test_chip_name_falls_back_when_sources_fail():
    name = device.chip_name("cpu", system="Linux", cpuinfo=_boom, processor=lambda: "x86_64")
    assert name == "x86_64"
    assert device.chip_name("cpu", system="Darwin", sysctl_brand=_boom, processor=lambda: "") != ""


def test_cpuinfo_model_name_parses_file(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Gold 6338\n")
    assert device._cpuinfo_model_name(str(info)) == "Intel(R) Xeon(R) Gold 6338"


def test_detect_with_fakes():
    info = device.detect(cuda_available=_no, mps_available=_no)
    assert info.device == "cpu" and info.dtype == "float32" and info.chip
