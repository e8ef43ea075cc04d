"""Builds a tiny folder laid out like the hub's ZhengPeng7/BiRefNet, so tests take the exact remote-code loading path
real weights take: config.json with auto_map → a .py file in the folder → model.safetensors written by
save_pretrained.

The model is written for these tests (not BiRefNet's architecture): a learned low-resolution "prior" logits map that is
strongly foreground in the middle and background at the edges, plus a weak 1×1 convolution over the normalised input
so the input really flows through it. Like BiRefNet, forward returns a list of logits maps, coarse to fine; the coarse
one is deliberately the inverse, so a caller that does not take the last element gets an inverted matte.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

MODULE_NAME = "birefnet_tiny"
PRIOR_SIZE = 8

MODEL_SOURCE = '''\
"""A tiny image-segmentation model with BiRefNet's calling convention, for PixelAI's tests."""

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel, PretrainedConfig


class BiRefNetTinyConfig(PretrainedConfig):
    model_type = "birefnet_tiny"

    def __init__(self, prior_size=8, **kwargs):
        self.prior_size = prior_size
        super().__init__(**kwargs)


class BiRefNetTiny(PreTrainedModel):
    config_class = BiRefNetTinyConfig
    main_input_name = "x"

    def __init__(self, config):
        super().__init__(config)
        self.pixel = nn.Conv2d(3, 1, kernel_size=1)
        self.prior = nn.Parameter(torch.zeros(1, 1, config.prior_size, config.prior_size))
        self.post_init()

    def _init_weights(self, module):
        pass  # every weight comes from model.safetensors

    def forward(self, x):
        fine = F.interpolate(self.prior.to(x.dtype), size=x.shape[-2:], mode="bilinear", align_corners=False)
        fine = fine + self.pixel(x)
        coarse = -F.avg_pool2d(fine, 4)
        return [coarse, fine]
'''


def _import_model_module(folder: Path):
    spec = importlib.util.spec_from_file_location(
        f"_pixelai_test_{MODULE_NAME}_{abs(hash(str(folder)))}", folder / f"{MODULE_NAME}.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # PreTrainedModel machinery looks the class's module up by name
    spec.loader.exec_module(module)
    return module


def build_tiny_birefnet(folder: Path) -> Path:
    """Write the tiny model folder at `folder` (created) and return it. Same bytes every time (weights are set, not
    drawn)."""
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{MODULE_NAME}.py").write_text(MODEL_SOURCE, encoding="utf-8")
    module = _import_model_module(folder)
    config = module.BiRefNetTinyConfig(prior_size=PRIOR_SIZE)
    config.auto_map = {
        "AutoConfig": f"{MODULE_NAME}.BiRefNetTinyConfig",
        "AutoModelForImageSegmentation": f"{MODULE_NAME}.BiRefNetTiny",
    }
    model = module.BiRefNetTiny(config)
    with torch.no_grad():
        prior = torch.full((PRIOR_SIZE, PRIOR_SIZE), -8.0)
        quarter = PRIOR_SIZE // 4
        prior[quarter:-quarter, quarter:-quarter] = 8.0  # the middle half (each way) is foreground
        model.prior.copy_(prior.view(1, 1, PRIOR_SIZE, PRIOR_SIZE))
        model.pixel.weight.fill_(0.05)
        model.pixel.bias.zero_()
    model.save_pretrained(folder)
    config_path = folder / "config.json"
    saved = json.loads(config_path.read_text(encoding="utf-8"))
    assert saved.get("auto_map", {}).get("AutoModelForImageSegmentation"), saved  # what the probe looks for
    assert (folder / "model.safetensors").is_file()
    return folder
