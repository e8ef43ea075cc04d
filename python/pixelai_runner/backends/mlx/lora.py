"""LoRAs on the MLX engine: fused into the weights when a job asks for one, W' = W + strength · scale · B·A.

scale = alpha / rank when the file gives an alpha for the module, else 1 (what diffusers/peft do with such files).

Read formats:
  * diffusers/peft   `unet.<module>.lora_A.weight` / `.lora_B.weight` (also `text_encoder.`, `text_encoder_2.`),
                     the older `.lora.down.weight` / `.lora.up.weight`, optional `<module>.alpha`;
  * kohya            `lora_unet_<module, dots as _>.lora_down.weight` / `.lora_up.weight` / `.alpha`, and
                     `lora_te_` (or `lora_te1_`), `lora_te2_` for the text encoders; UNet modules named either the
                     diffusers way (down_blocks_1_attentions_0_…) or with the original SD block names that kohya's
                     SDXL trainer writes (input_blocks_4_1_…, middle_block_1_…, output_blocks_0_1_…).
A module is found by renaming the model's own MLX keys back to diffusers names (weights.diffusers_keys, and
weights.sgm_unet_key for the original block names) and B·A is laid out by weights.MAPPERS, the converter's table, so a
LoRA lands exactly where the converter put the weight it adapts: linear (out, in); 1×1 and 3×3 conv LoRAs (down (r,
in, kh, kw), up (out, r, 1, 1)) become OHWI convolutions, or linears where the converter squeezed a 1×1 conv.

What cannot run here is refused with LORA_UNSUPPORTED_ENGINE, naming it: LyCORIS variants (LoHa, LoKr, full diffs) and
DoRA magnitudes; tensors under other names are refused the same way (no rule for them goes out in the probe, so such a
file fails in the runner, not at submit). A LoRA for another model (unknown modules, other shapes) is INVALID_REQUEST,
as on the torch engine.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from ...errors import RunnerError
from . import weights as W

# (prefix, component, kohya): the key prefixes that say which component a LoRA tensor adapts
_PREFIXES = [
    ("lora_unet_", "unet", True),
    ("lora_te1_", "text_encoder", True),
    ("lora_te2_", "text_encoder_2", True),
    ("lora_te_", "text_encoder", True),
    ("unet.", "unet", False),
    ("text_encoder_2.", "text_encoder_2", False),
    ("text_encoder.", "text_encoder", False),
]
# (down suffix, up suffix)
_PAIRS = [
    (".lora_A.weight", ".lora_B.weight"),
    (".lora_down.weight", ".lora_up.weight"),
    (".lora.down.weight", ".lora.up.weight"),
]
_ALPHA = ".alpha"
_UNSUPPORTED = [
    (re.compile(r"\.hada_"), "LoHa (hada_*) tensors"),
    (re.compile(r"\.lokr_"), "LoKr (lokr_*) tensors"),
    (re.compile(r"(dora_scale|lora_magnitude_vector)"), "DoRA magnitude vectors"),
    (re.compile(r"\.diff(_b)?$"), "full weight differences (.diff)"),
]


# Published in the probe (loraUnsupported) so the server refuses such a file when the job is submitted.
UNSUPPORTED_RULES = [{"pattern": pattern.pattern, "what": what} for pattern, what in _UNSUPPORTED]


def _unsupported(source: str, what: str, key: str) -> RunnerError:
    return RunnerError(
        "LORA_UNSUPPORTED_ENGINE",
        f"LoRA {os.path.basename(source)!r} holds {what} (e.g. {key}); the MLX engine fuses plain low-rank LoRAs "
        "(lora_A/lora_B or lora_down/lora_up)",
    )


@dataclass
class _Module:
    component: str
    name: str  # diffusers module name, or kohya's flattened one
    kohya: bool
    down: np.ndarray | None = None
    up: np.ndarray | None = None
    alpha: float | None = None


@dataclass
class PreparedLora:
    """A LoRA resolved against one model: per component, MLX weight key → the module's factors. Only the low-rank
    factors are kept; each dense scale · B·A is made when fused and dropped after, so a LoRA costs its file's size
    in memory plus the fused copies of the weights it adapts. Strength multiplies at fuse time: no re-read."""

    source: str
    modules_by_key: dict[str, dict[str, _Module]] = field(default_factory=dict)

    @property
    def modules(self) -> int:
        return sum(len(d) for d in self.modules_by_key.values())

    def deltas(self, component: str) -> Iterator[tuple[str, np.ndarray]]:
        """(MLX weight key, scale · B·A in that weight's MLX layout, float32) for each weight of `component`."""
        for key, module in self.modules_by_key.get(component, {}).items():
            yield key, _delta(component, key, module)


def _delta(component: str, key: str, module: _Module) -> np.ndarray:
    """scale · B·A laid out by the converter's table for the weight `key` (its canonical diffusers name)."""
    scale = module.alpha / module.down.shape[0] if module.alpha is not None else 1.0
    name = W.diffusers_keys(component, key)[0]
    ((mapped_key, delta),) = W.MAPPERS[component]({name: _product(module)}).items()
    if mapped_key != key:  # the table's inverse and forward disagree: a bug, not a bad file
        raise RuntimeError(f"LoRA key table: {name} maps to {mapped_key}, expected {key}")
    return (delta * np.float32(scale)).astype(np.float32, copy=False)


def _split(key: str) -> tuple[str, bool, str] | None:
    for prefix, component, kohya in _PREFIXES:
        if key.startswith(prefix):
            return component, kohya, key[len(prefix) :]
    return None


def _group(source: str, tensors: dict[str, np.ndarray]) -> list[_Module]:
    modules: dict[tuple[str, str], _Module] = {}
    for key, value in tensors.items():
        for pattern, what in _UNSUPPORTED:
            if pattern.search(key):
                raise _unsupported(source, what, key)
        where = _split(key)
        if where is None:
            raise _unsupported(source, "tensors with unknown names", key)
        component, kohya, rest = where
        for down_suffix, up_suffix in _PAIRS:
            if rest.endswith(down_suffix) or rest.endswith(up_suffix):
                name = rest[: -len(down_suffix)] if rest.endswith(down_suffix) else rest[: -len(up_suffix)]
                module = modules.setdefault((component, name), _Module(component, name, kohya))
                if rest.endswith(down_suffix):
                    module.down = np.asarray(value, dtype=np.float32)
                else:
                    module.up = np.asarray(value, dtype=np.float32)
                break
        else:
            if rest.endswith(_ALPHA):
                name = rest[: -len(_ALPHA)]
                module = modules.setdefault((component, name), _Module(component, name, kohya))
                module.alpha = float(np.asarray(value, dtype=np.float64).reshape(-1)[0])
            else:
                raise _unsupported(source, "tensors with unknown names", key)
    for module in modules.values():
        if module.down is None or module.up is None:
            raise RunnerError(
                "INVALID_REQUEST", f"LoRA {os.path.basename(source)!r}: {module.name} has no down/up pair"
            )
    return list(modules.values())


def _index(component: str, base_keys) -> tuple[dict[str, str], dict[str, str]]:
    """Every spelling of a module name → MLX weight key: diffusers' (weights.diffusers_keys) and, for the UNet, the
    original SD block names (weights.sgm_unet_key); and the same keyed by kohya's flattening (ambiguous ones dropped).
    layers_per_block is read off the UNet's own weights (resnets in its first down block)."""
    names: dict[str, list[str]] = {}
    for key in base_keys:
        if key.endswith(".weight"):
            names[key] = [name[: -len(".weight")] for name in W.diffusers_keys(component, key)]
    if component == "unet":
        canonical = [spellings[0] for spellings in names.values()]
        layers_per_block = 1 + max(
            (int(m.group(1)) for n in canonical if (m := re.match(r"down_blocks\.0\.resnets\.(\d+)\.", n + "."))),
            default=0,
        )
        with_attention = {int(m.group(1)) for n in canonical if (m := re.match(r"up_blocks\.(\d+)\.attentions\.", n))}
        for spellings in names.values():
            sgm = W.sgm_unet_key(spellings[0], layers_per_block, with_attention)
            if sgm is not None:
                spellings.append(sgm)
    dotted: dict[str, str] = {}
    flat: dict[str, str | None] = {}
    for key, spellings in names.items():
        for name in spellings:
            dotted[name] = key
            flat_name = name.replace(".", "_")
            flat[flat_name] = None if flat.get(flat_name, key) != key else key
    return dotted, {k: v for k, v in flat.items() if v is not None}


def _product(module: _Module) -> np.ndarray:
    """B·A in PyTorch layout: (out, in) for linears, (out, in, kh, kw) for convolutions."""
    down, up = module.down, module.up
    rank = down.shape[0]
    if up.shape[1] != rank or up.ndim not in (2, 4) or up.ndim != down.ndim:
        raise RunnerError(
            "INVALID_REQUEST",
            f"LoRA module {module.name}: up {tuple(up.shape)} and down {tuple(down.shape)} do not multiply",
        )
    return (up.reshape(up.shape[0], rank) @ down.reshape(rank, -1)).reshape((up.shape[0],) + down.shape[1:])


def prepare(source: str, tensors: dict[str, np.ndarray], base: dict[str, dict[str, tuple]]) -> PreparedLora:
    """Resolve a LoRA's tensors against a model. `base`: component → {MLX weight key: shape}."""
    label = os.path.basename(source)
    prepared = PreparedLora(source)
    indexes = {component: _index(component, keys) for component, keys in base.items()}
    for module in _group(source, tensors):
        if module.component not in indexes:
            raise RunnerError(
                "INVALID_REQUEST", f"LoRA {label!r} adapts {module.component}, which this model does not have"
            )
        dotted, flat = indexes[module.component]
        key = (flat if module.kohya else dotted).get(module.name)
        if key is None:
            raise RunnerError(
                "INVALID_REQUEST",
                f"LoRA {label!r} does not fit this model: it adapts {module.component} module {module.name}, "
                "which the model does not have",
            )
        made = _delta(module.component, key, module).shape  # made once here to check it, then dropped
        expected = tuple(base[module.component][key])
        if made != expected:
            raise RunnerError(
                "INVALID_REQUEST",
                f"LoRA {label!r} does not fit this model: {module.component} {key} is {expected} in MLX layout, "
                f"the LoRA makes {made}",
            )
        prepared.modules_by_key.setdefault(module.component, {})[key] = module
    if not prepared.modules:
        raise RunnerError("INVALID_REQUEST", f"LoRA {label!r} holds no LoRA tensors")
    return prepared


def read(source: str) -> dict[str, np.ndarray]:
    """The LoRA file's tensors; a missing file is LORA_NOT_FOUND (local files only, as on the torch engine)."""
    if not os.path.isabs(source) or not os.path.isfile(source):
        raise RunnerError(
            "LORA_NOT_FOUND",
            f"LoRA file {source} does not exist (the runner loads local files only; hub LoRAs are installed "
            "by the server first)",
        )
    try:
        return W.read_safetensors(source)
    except (OSError, ValueError, KeyError) as exc:
        raise RunnerError("LORA_NOT_FOUND", f"cannot load LoRA {source!r}: {exc}") from None
