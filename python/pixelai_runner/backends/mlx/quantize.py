"""Quantized MLX weights: MLX's own affine quantization (`mlx.nn.quantize`) of the linear layers.

What is quantized: every `nn.Linear` of the UNet and the text encoders whose input width is a multiple of the group
size (attention projections, feed-forwards, time and text projections) — the bulk of the parameters. Convolutions
(MLX quantizes matmul layers only), norms, embeddings and the whole VAE stay in the float dtype: they are a small
share of the bytes and the VAE decides the final pixels.

A converted folder records `{"bits", "groupSize", "components"}` as `quantize` in its manifest; a layer was quantized
iff its weights file holds `<layer>.scales`, so loading rebuilds exactly the same layers from the file itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BITS = (4, 8)
GROUP_SIZES = (32, 64, 128)
COMPONENTS = ("unet", "text_encoder", "text_encoder_2")


@dataclass(frozen=True)
class QuantizeSpec:
    bits: int
    group_size: int = 64

    def __post_init__(self):
        if self.bits not in BITS:
            raise ValueError(f"quantize must be one of {BITS}, not {self.bits!r}")
        if self.group_size not in GROUP_SIZES:
            raise ValueError(f"groupSize must be one of {GROUP_SIZES}, not {self.group_size!r}")

    def manifest_entry(self, components: list[str]) -> dict:
        return {"bits": self.bits, "groupSize": self.group_size, "components": components}


def quantize_component(module, tensors: dict[str, np.ndarray], spec: QuantizeSpec) -> dict[str, np.ndarray]:
    """Load float `tensors` (MLX layout) into `module`, quantize its linear layers, return every parameter as numpy."""
    import mlx.core as mx
    import mlx.nn as nn
    from mlx.utils import tree_flatten

    module.load_weights([(k, mx.array(v)) for k, v in tensors.items()], strict=True)

    def linear(_path: str, layer) -> bool:
        return isinstance(layer, nn.Linear) and layer.weight.shape[-1] % spec.group_size == 0

    nn.quantize(module, group_size=spec.group_size, bits=spec.bits, class_predicate=linear)
    params = dict(tree_flatten(module.parameters()))
    mx.eval(params)
    return {k: np.array(v) for k, v in params.items()}


def quantize_like_file(module, weights: dict, quantization: dict | None) -> None:
    """Turn the layers the weights file holds quantized (`<layer>.scales`) into quantized layers before loading."""
    if not quantization:
        return
    import mlx.nn as nn

    nn.quantize(
        module,
        group_size=int(quantization["groupSize"]),
        bits=int(quantization["bits"]),
        class_predicate=lambda path, _layer: f"{path}.scales" in weights,
    )
