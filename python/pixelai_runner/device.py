"""Which accelerator the torch engine runs on, what it is called, and which dtype suits it.

Every probe is injectable so tests can simulate a CUDA box or a Mac on a CPU-only machine.
"""

from __future__ import annotations

import platform
import subprocess
from collections.abc import Callable
from dataclasses import dataclass

Probe = Callable[[], bool]


def _cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def _mps_available() -> bool:
    import torch

    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def pick_device(cuda_available: Probe | None = None, mps_available: Probe | None = None) -> str:
    """cuda → mps → cpu: the first accelerator that answers wins."""
    if (cuda_available or _cuda_available)():
        return "cuda"
    if (mps_available or _mps_available)():
        return "mps"
    return "cpu"


def dtype_name_for(device: str) -> str:
    # Half precision is what SD runs in on GPUs; CPU kernels for fp16 are slow or missing, so CPU stays fp32.
    return "float16" if device in ("cuda", "mps") else "float32"


def torch_dtype_for(device: str):
    import torch

    return getattr(torch, dtype_name_for(device))


def _cuda_name() -> str:
    import torch

    return torch.cuda.get_device_name(0)


def _sysctl_brand() -> str:
    out = subprocess.run(
        ["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True, timeout=5, check=True
    )
    return out.stdout.strip()


def _cpuinfo_model_name(path: str = "/proc/cpuinfo") -> str:
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                return value.strip()
    return ""


def chip_name(
    device: str,
    system: str | None = None,
    cuda_name: Callable[[], str] = _cuda_name,
    sysctl_brand: Callable[[], str] = _sysctl_brand,
    processor: Callable[[], str] = platform.processor,
    cpuinfo: Callable[[], str] = _cpuinfo_model_name,
) -> str:
    """A human name for the hardware ("NVIDIA H100", "Apple M2 Pro", "AMD EPYC …"); never raises."""
    system = system or platform.system()
    sources: list[Callable[[], str]] = []
    if device == "cuda":
        sources.append(cuda_name)
    if system == "Darwin":
        # Apple silicon reports its marketing name here; platform.processor() only says "arm".
        sources.append(sysctl_brand)
    if system == "Linux":
        # platform.processor() is usually just "x86_64" on Linux; cpuinfo has the real model name.
        sources.append(cpuinfo)
    sources.append(processor)
    for source in sources:
        try:
            name = (source() or "").strip()
        except Exception:  # a missing sysctl or unreadable cpuinfo only costs us the pretty name
            continue
        if name:
            return name
    return platform.machine() or "unknown"


@dataclass(frozen=True)
class DeviceInfo:
    device: str
    chip: str
    dtype: str


def detect(cuda_available: Probe | None = None, mps_available: Probe | None = None) -> DeviceInfo:
    device = pick_device(cuda_available, mps_available)
    return DeviceInfo(device=device, chip=chip_name(device), dtype=dtype_name_for(device))


def forced(device: str) -> DeviceInfo:
    """The DeviceInfo for a device the operator chose (runner option --device), without probing for others."""
    if device not in ("cuda", "mps", "cpu"):
        raise ValueError(f"device must be cuda, mps or cpu, got {device!r}")
    return DeviceInfo(device=device, chip=chip_name(device), dtype=dtype_name_for(device))
