"""BiRefNet background removal: find the weights folder, load the model once, turn an image into a soft alpha matte.

The folder is the hub repository ZhengPeng7/BiRefNet as a user downloads it: a config.json whose `auto_map` names
AutoModelForImageSegmentation, the remote-code .py files that map points at, and model.safetensors. It is loaded
through transformers' remote-code path with `local_files_only`, so nothing is fetched at run time and any folder laid
out like the hub one (other BiRefNet variants included) loads the same way.

Only the torch runner runs the model (the MLX runner has no torch at inference), but the matte is applied to the
decoded image whichever engine made it, so the module holds no engine state of its own.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from typing import Any

import numpy as np
from PIL import Image

from .errors import RunnerError

AUTO_CLASS = "AutoModelForImageSegmentation"
# BiRefNet is trained at 1024×1024 with ImageNet normalisation; other sizes work but segment worse.
INPUT_SIZE = 1024
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def weights_present(folder: str) -> bool:
    """Cheap check for the probe: a config.json whose auto_map names AutoModelForImageSegmentation. Nothing is loaded,
    so a folder with broken weights still shows up here and fails at the first job with the loader's reason.
    `folder` is the runner's --birefnet-dir (the server passes `<modelsRoot>/birefnet`); empty means none."""
    if not folder:
        return False
    try:
        with open(os.path.join(folder, "config.json"), encoding="utf-8") as fh:
            config = json.load(fh)
    except (OSError, ValueError):
        return False
    auto_map = config.get("auto_map") if isinstance(config, dict) else None
    return isinstance(auto_map, dict) and AUTO_CLASS in auto_map


def missing_reason(folder: str) -> str:
    """Why the torch runner cannot run BiRefNet, naming where the weights go."""
    if not folder:
        return (
            "removeBackground 'birefnet' needs BiRefNet weights, and this runner has no --birefnet-dir (the server "
            "passes <modelsRoot>/birefnet); use 'color-key' instead"
        )
    return (
        f"removeBackground 'birefnet' needs BiRefNet weights in {folder}: put the files of the hub repository "
        f"ZhengPeng7/BiRefNet there (config.json with auto_map {AUTO_CLASS}, its .py files, model.safetensors), "
        "or use 'color-key'"
    )


class BiRefNetRemover:
    """One BiRefNet model, loaded on first use and kept; callable as image → RGBA image with the matte as alpha."""

    def __init__(self, folder: str, device: str = "cpu", dtype: str = "float32", input_size: int = INPUT_SIZE):
        self.folder = folder
        self.device = device
        # Half precision only on CUDA: BiRefNet's attention is known to produce NaNs in fp16 on MPS, and CPUs gain
        # nothing from it.
        self.dtype = dtype if device == "cuda" else "float32"
        self.input_size = input_size
        self._model: Any = None
        self._lock = threading.Lock()

    def model(self) -> Any:
        with self._lock:
            if self._model is None:
                self._model = self._load()
            return self._model

    def _load(self) -> Any:
        import torch
        from transformers import AutoModelForImageSegmentation

        started = time.perf_counter()
        if not weights_present(self.folder):
            raise RunnerError("ENGINE_UNAVAILABLE", missing_reason(self.folder))
        try:
            # Loaded in the checkpoint's own dtype and cast afterwards, so the remote code never sees a dtype kwarg
            # it may not expect.
            model = AutoModelForImageSegmentation.from_pretrained(
                self.folder, trust_remote_code=True, local_files_only=True
            )
        except (OSError, ValueError, ImportError, KeyError, AttributeError, TypeError) as exc:
            # A folder that looks right but cannot be loaded is a setup problem, like a missing one.
            raise RunnerError(
                "ENGINE_UNAVAILABLE", f"cannot load BiRefNet from {self.folder}: {type(exc).__name__}: {exc}"
            ) from None
        model = model.to(device=self.device, dtype=getattr(torch, self.dtype)).eval()
        elapsed = (time.perf_counter() - started) * 1000.0
        # stderr: stdout belongs to the protocol.
        print(
            f"[RUNNER] BiRefNet model loaded from {self.folder} on {self.device}/{self.dtype} in {elapsed:.0f}ms",
            file=sys.stderr,
            flush=True,
        )
        return model

    def matte(self, image: Image.Image) -> np.ndarray:
        """Soft foreground probability for `image`, as uint8 (0 = background) at the image's own size."""
        import torch
        import torch.nn.functional as F

        model = self.model()
        size = self.input_size
        rgb = image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
        pixels = torch.from_numpy(np.asarray(rgb, dtype=np.float32) / 255.0).permute(2, 0, 1).unsqueeze(0)
        mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, dtype=torch.float32).view(1, 3, 1, 1)
        batch = ((pixels - mean) / std).to(device=self.device, dtype=getattr(torch, self.dtype))
        with torch.inference_mode():
            output = model(batch)
            logits = _final_logits(output)
            # sigmoid and resize in fp32: fp16 rounding would band the soft edge.
            probability = torch.sigmoid(logits.float())
            probability = F.interpolate(
                probability, size=(image.height, image.width), mode="bilinear", align_corners=False
            )
        alpha = probability[0, 0].clamp(0.0, 1.0).mul(255.0).round().to(torch.uint8).cpu().numpy()
        return alpha

    def __call__(self, image: Image.Image) -> Image.Image:
        """`image` with the matte as alpha; pixels already transparent stay so. The alpha stays soft here: the palette
        step is what makes it binary."""
        rgba = np.array(image.convert("RGBA"))
        rgba[..., 3] = np.minimum(rgba[..., 3], self.matte(image))
        return Image.fromarray(rgba, "RGBA")


def _final_logits(output: Any) -> Any:
    """BiRefNet returns its predictions as a list, coarse to fine; the last one is the full-resolution logits map.
    A ModelOutput-style object with `logits` is accepted too."""
    logits = getattr(output, "logits", None)
    if logits is None:
        logits = output
    if isinstance(logits, (list, tuple)):
        if not logits:
            raise RunnerError("ENGINE_INTERNAL", "BiRefNet returned no prediction")
        logits = logits[-1]
    if logits.dim() == 3:  # (batch, H, W): add the channel axis interpolate expects
        logits = logits.unsqueeze(1)
    if logits.dim() != 4:
        raise RunnerError("ENGINE_INTERNAL", f"BiRefNet returned logits of shape {tuple(logits.shape)}")
    return logits[:, :1]
