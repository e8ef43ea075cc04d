"""The engine contract every backend (torch, mlx) implements; the protocol loop only talks to this."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

# Features a backend may report in `probe`; the API's capability matrix shows exactly these keys.
FEATURES = ("lora", "sdxl", "backgroundRemoval", "img2img", "inpaint", "stepPreview")


@dataclass
class PixelSpec:
    width: int
    height: int
    colors: int = 0
    fit_mode: str = "contain"
    grid: str = "auto"
    palette: tuple[str, ...] | None = None  # "#rrggbb" colours (Node resolved any built-in name)
    dither: str = "none"

    @classmethod
    def from_params(cls, pixel: dict | None) -> PixelSpec | None:
        if not pixel:
            return None
        return cls(
            width=int(pixel["width"]),
            height=int(pixel["height"]),
            colors=int(pixel.get("colors") or 0),
            fit_mode=str(pixel.get("fitMode") or "contain"),
            grid=str(pixel.get("grid") or "auto"),
            palette=tuple(pixel["palette"]) if pixel.get("palette") else None,
            dither=str(pixel.get("dither") or "none"),
        )


@dataclass
class GenerateRequest:
    """A `generate` op's params (the schema's GenerateParams, snake_case; test_contract.py keeps the two in step).
    The runner checks the params against the schema before building one (protocol.parse_request)."""

    job_id: str
    model_source: str
    prompt: str
    width: int
    height: int
    steps: int
    guidance_scale: float
    seed: int
    output_dir: str
    model_name: str = ""
    model_commit: str | None = None
    negative_prompt: str | None = None
    scheduler: str | None = None
    init_noise: str | None = None
    pixel: PixelSpec | None = None
    remove_background: Any = False
    lora: dict | None = None
    preview_every: int | None = None
    init_image_path: str | None = None
    strength: float = 1.0
    mask_path: str | None = None
    count: int = 1

    @classmethod
    def from_params(cls, p: dict) -> GenerateRequest:
        return cls(
            job_id=str(p["jobId"]),
            model_source=str(p["modelSource"]),
            model_name=str(p.get("modelName") or ""),
            model_commit=p.get("modelCommit"),
            prompt=str(p["prompt"]),
            negative_prompt=p.get("negativePrompt"),
            width=int(p["width"]),
            height=int(p["height"]),
            steps=int(p["steps"]),
            guidance_scale=float(p["guidanceScale"]),
            seed=int(p["seed"]),
            scheduler=p.get("scheduler"),
            init_noise=p.get("initNoise"),
            pixel=PixelSpec.from_params(p.get("pixel")),
            remove_background=p.get("removeBackground") or False,
            lora=p.get("lora"),
            output_dir=str(p["outputDir"]),
            preview_every=int(p["previewEvery"]) if p.get("previewEvery") else None,
            init_image_path=p.get("initImagePath"),
            strength=float(p["strength"]) if p.get("strength") is not None else 1.0,
            mask_path=p.get("maskPath"),
            count=int(p.get("count") or 1),
        )

    def candidate_seeds(self) -> list[int]:
        """Candidate i's seed: the one rule (seed + i) both engines draw noise from."""
        return [self.seed + index for index in range(self.count)]


@dataclass
class PixelizeRequest:
    """A `pixelize` op's params (the schema's PixelizeParams, snake_case): post-processing only, no model."""

    job_id: str
    input_path: str
    pixel: PixelSpec
    output_dir: str
    remove_background: Any = False

    @classmethod
    def from_params(cls, p: dict) -> PixelizeRequest:
        return cls(
            job_id=str(p["jobId"]),
            input_path=str(p["inputPath"]),
            pixel=PixelSpec.from_params(p["pixel"]),
            output_dir=str(p["outputDir"]),
            remove_background=p.get("removeBackground") or False,
        )


@dataclass
class GenerateOutput:
    image: Image.Image  # the decoded image at base resolution (RGB), before pixel-art post-processing (candidate 0)
    device: str
    dtype: str
    load_ms: float = 0.0
    generate_ms: float = 0.0
    extra: dict = field(default_factory=dict)
    # every candidate in index order when the request's count > 1 (images[0] is `image`); empty: `image` alone
    images: list[Image.Image] = field(default_factory=list)

    def candidates(self) -> list[Image.Image]:
        return self.images or [self.image]


# on_step(step, total_steps, preview_image=None, previews=None) is called after every denoising step; a backend passes
# a small PIL preview (preview.latents_to_rgb) on the steps `preview_every` asks for, and with count > 1 also the list
# of every candidate's preview (preview_image is its first).
# check_cancel() raises RunnerError("CANCELLED").
StepCallback = Callable[..., None]
CancelCheck = Callable[[], None]


class Backend(ABC):
    engine: str = ""

    @abstractmethod
    def probe(self) -> dict:
        """engine, available, reason?, device, chip, dtype, versions, features, schedulers."""

    def supports(self, feature: str) -> bool:
        return bool(self.probe().get("features", {}).get(feature, False))

    @abstractmethod
    def ensure_loaded(self, source: str) -> Any:
        """Load (or fetch from the LRU cache) the pipeline for `source`; returns the engine's handle."""

    @abstractmethod
    def generate(self, req: GenerateRequest, on_step: StepCallback, check_cancel: CancelCheck) -> GenerateOutput:
        """Run text-to-image for `req`; same seed and params give the same image."""

    def unload(self, source: str | None = None) -> list[str]:
        return []

    def unload_lora(self) -> None:
        return None
