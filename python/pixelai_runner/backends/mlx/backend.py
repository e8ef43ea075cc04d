"""The MLX engine behind the runner protocol: converted models only, verified against their manifest before loading.

dtype: float16 on a Metal GPU, float32 on CPU; the runner option --mlx-dtype float16|float32|bfloat16 forces one. A
float16 run whose latents or pixels go non-finite is logged and redone in float32 (the job does not fail), and that
model then stays in float32 for the rest of the process.
Initial noise: initNoise "torch" draws exactly what the torch engine draws (torch imported lazily, only for that);
otherwise MLX's own generator keyed by the seed — the same seed gives the same image either way.
LoRA: fused into the loaded model's weights for the job that asks for it (lora.py); the unfused base stays in memory,
so another LoRA, another strength or none at all costs a fuse, never a reload.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from ... import img2img, model_files, noise
from ...errors import RunnerError
from ...settings import RunnerSettings
from ..base import Backend, CancelCheck, GenerateOutput, GenerateRequest, StepCallback
from .config import SCHEDULERS
from .lora import UNSUPPORTED_RULES
from .manifest import ManifestVerifier

FEATURES = {
    "lora": True,
    "sdxl": True,
    "backgroundRemoval": False,
    "img2img": True,
    "inpaint": True,
    "stepPreview": True,
}
_DTYPE_NAMES = ("float16", "float32", "bfloat16")
DEFAULT_CACHE_SIZE = 2  # the schema's RunnerSettings.pipelineCache default


def log(message: str) -> None:
    print(f"[MLX] {message}", file=sys.stderr, flush=True)


def device_kind() -> str:
    import mlx.core as mx

    return "gpu" if mx.default_device().type == mx.DeviceType.gpu else "cpu"


def default_dtype_name(device: str, forced: str | None = None) -> str:
    if forced:
        if forced not in _DTYPE_NAMES:
            raise RunnerError("INVALID_REQUEST", f"mlx dtype {forced!r}: use one of {', '.join(_DTYPE_NAMES)}")
        return forced
    # Apple GPUs run half precision at twice the speed; MLX's CPU kernels are fastest (and exact enough) in float32.
    return "float16" if device == "gpu" else "float32"


def torch_noise(seed: int, shape_nchw: tuple, make=noise.text_noise) -> tuple[Any, Callable[[tuple], Any]]:
    """The torch engine's draws (noise.py): (initial latents NCHW as numpy, a function for the per-step noise of
    euler_a, which this engine asks for NHWC). `make`: noise.text_noise or noise.img2img_noise."""
    initial, step = make(seed, shape_nchw)

    def draw(shape_nhwc: tuple):
        import mlx.core as mx

        b, h, w, c = shape_nhwc
        return mx.array(step((b, c, h, w)).transpose(0, 2, 3, 1))

    return initial, draw


def native_noise(seed: int, shape_nhwc: tuple) -> tuple[Any, Callable[[tuple], Any]]:
    """MLX's counter-based generator: a key from the seed, split once per draw."""
    import mlx.core as mx

    state = {"key": mx.random.key(seed % (1 << 64))}

    def draw(shape: tuple):
        state["key"], sub = mx.random.split(state["key"])
        return mx.random.normal(shape, dtype=mx.float32, key=sub)

    return draw(shape_nhwc), draw


def candidate_noise(
    init_noise: str | None, seeds: list[int], shape_hwc: tuple, make=noise.text_noise
) -> tuple[Any, Callable[[tuple], Any]]:
    """The batch's noise: candidate i draws exactly what a count 1 job with seeds[i] draws (initial latents and, for
    euler_a, every step's noise), so batching never changes which noise a candidate gets. Returns (initial NHWC latents
    of batch len(seeds), a draw function for batched NHWC shapes). `make`: torch_noise's, for initNoise "torch"."""
    import mlx.core as mx

    from .pipeline import nchw_to_nhwc

    h, w, c = shape_hwc
    initials, draws = [], []
    for seed in seeds:
        if init_noise == "torch":
            initial, draw = torch_noise(seed, (1, c, h, w), make)
            initial = nchw_to_nhwc(initial)
        else:
            initial, draw = native_noise(seed, (1, h, w, c))
        initials.append(initial)
        draws.append(draw)
    if len(seeds) == 1:
        return initials[0], draws[0]

    def draw_batch(shape_nhwc: tuple):
        one = (1, *shape_nhwc[1:])
        return mx.concatenate([draw(one) for draw in draws])

    return mx.concatenate(initials), draw_batch


class MLXBackend(Backend):
    engine = "mlx"

    def __init__(self, cache_size: int = DEFAULT_CACHE_SIZE, dtype: str | None = None):
        """`dtype` forces one (None: the device's default); `cache_size` converted models stay loaded."""
        import mlx.core  # noqa: F401  (fail at construction when MLX is missing: the runner reports it unavailable)

        from . import cpu_blas

        if cpu_blas.loaded:
            log(f"CPU matmuls through {cpu_blas.loaded}")

        default_dtype_name("cpu", dtype)  # an unknown name fails here, at start-up, not at the first job
        self.forced_dtype = dtype
        self.cache_size = max(1, cache_size)
        self._cache: OrderedDict[tuple[str, str], Any] = OrderedDict()
        self._lock = threading.Lock()
        self._verifier = ManifestVerifier()
        self._fp32_only: set[str] = set()  # sources that went non-finite in half precision

    @classmethod
    def from_settings(cls, settings: RunnerSettings) -> MLXBackend:
        return cls(cache_size=settings.pipeline_cache, dtype=settings.forced_mlx_dtype)

    # --- probe --------------------------------------------------------------------------------------------------

    def probe(self) -> dict:
        from ...device import chip_name
        from ...versions import package_versions

        try:
            import mlx.core as mx

            device = device_kind()
            info = mx.device_info()
        except Exception as exc:
            return {
                "engine": self.engine,
                "available": False,
                "reason": f"mlx unusable: {type(exc).__name__}: {exc}",
                "device": "cpu",
                "chip": chip_name("cpu"),
                "dtype": "float32",
                "versions": package_versions("mlx", "numpy", "transformers", "safetensors"),
                "features": {k: False for k in FEATURES},
                "schedulers": [],
            }
        # MLX names the GPU well ("Apple M2 Pro"); for the CPU the runner's cpuinfo/sysctl lookup is more precise
        chip = str(info.get("device_name") or "") if device == "gpu" else ""
        chip = chip or chip_name("cpu")
        return {
            "engine": self.engine,
            "available": True,
            "device": device,
            "chip": chip,
            "dtype": default_dtype_name(device, self.forced_dtype),
            "versions": package_versions("mlx", "numpy", "transformers", "safetensors"),
            "features": dict(FEATURES),
            "schedulers": list(SCHEDULERS),
            "loadedModels": sorted({folder for folder, _dtype in list(self._cache)}),
            "cacheSize": self.cache_size,
            "loraUnsupported": [dict(rule) for rule in UNSUPPORTED_RULES],
        }

    # --- loading ------------------------------------------------------------------------------------------------

    def _dtype_for(self, folder: str) -> str:
        name = default_dtype_name(device_kind(), self.forced_dtype)
        return "float32" if folder in self._fp32_only else name

    def ensure_loaded(self, source: str, dtype_name: str | None = None) -> Any:
        """Verify the converted folder's manifest (cached per file), then load it or take it from the LRU."""
        import mlx.core as mx

        from .pipeline import StableDiffusion

        folder = os.path.realpath(source)
        dtype_name = dtype_name or self._dtype_for(folder)
        self._verifier.verify(folder)
        key = (folder, dtype_name)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        try:
            model = StableDiffusion(folder, getattr(mx, dtype_name))
        except (ValueError, KeyError) as exc:
            raise RunnerError("INVALID_REQUEST", f"{source} cannot run on the MLX engine: {exc}") from exc
        with self._lock:
            self._cache[key] = model
            while len(self._cache) > self.cache_size:
                evicted, _ = self._cache.popitem(last=False)
                log(f"evicted {evicted[0]} ({evicted[1]}) from the model cache")
        return model

    def unload(self, source: str | None = None) -> list[str]:
        import mlx.core as mx

        with self._lock:
            if source is None:
                keys = list(self._cache)
            else:
                folder = os.path.realpath(source)
                keys = [k for k in self._cache if k[0] == folder]
            for key in keys:
                del self._cache[key]
        mx.clear_cache()
        return sorted({k[0] for k in keys})

    # --- LoRA ---------------------------------------------------------------------------------------------------

    def _set_lora(self, model, lora: dict | None) -> None:
        """Make `model` carry exactly the requested LoRA (lora.py fuses it onto the kept base weights). The same file
        at another strength reuses the resolved factors; the base weights are never read from disk again."""
        from . import lora as L

        if not lora:
            if model.lora is not None:
                model.set_lora(None)
            return
        source, strength = str(lora["source"]), float(lora.get("strength", 1.0))
        if lora.get("commit"):
            try:
                model_files.check_pinned(source, str(lora["commit"]))
            except model_files.NotPinned as exc:
                raise RunnerError("LORA_NOT_FOUND", str(exc)) from None
        prepared = model.lora
        if prepared is not None and prepared.source == source and model.lora_strength == strength:
            return
        if prepared is None or prepared.source != source:
            prepared = L.prepare(source, L.read(source), model.base_shapes())
            log(f"LoRA {os.path.basename(source)}: {prepared.modules} weights fused")
        model.set_lora(prepared, strength)

    def _model_for(self, req: GenerateRequest, dtype_name: str | None = None):
        model = self.ensure_loaded(req.model_source, dtype_name)
        self._set_lora(model, req.lora)
        return model

    # --- generation ---------------------------------------------------------------------------------------------

    def _validate(self, req: GenerateRequest) -> None:
        if req.lora is not None and not str(req.lora.get("source") or ""):
            raise RunnerError("INVALID_REQUEST", "lora.source is required")
        if (req.scheduler or "euler") not in SCHEDULERS:
            raise RunnerError(
                "INVALID_REQUEST", f"scheduler {req.scheduler!r} is not available on MLX ({', '.join(SCHEDULERS)})"
            )
        if req.steps < 1:
            raise RunnerError("INVALID_REQUEST", "steps must be at least 1")
        if req.init_noise not in (None, "torch", "native"):
            raise RunnerError("INVALID_REQUEST", f"initNoise {req.init_noise!r} must be 'torch' or 'native'")

    def _init(self, model, req: GenerateRequest):
        """The img2img start (pipeline.Init) for a request with an init image, else None (img2img.py's rules)."""
        import mlx.core as mx

        from .pipeline import Init

        if not req.init_image_path:
            return None
        plan = img2img.plan(req.steps, req.strength, bool(req.mask_path))
        if plan.mode == "text":
            return None
        image = img2img.load_init(req.init_image_path, req.width, req.height)
        latents = model.encode_image(img2img.model_input(image))
        mask = None
        if req.mask_path:
            pixels = img2img.load_mask(req.mask_path, req.width, req.height)
            mask = mx.array(img2img.latent_mask(pixels, model.vae_scale_factor)[None, :, :, None])
        return Init(latents=latents, start=plan.start, mask=mask)

    def _run(self, model, req: GenerateRequest, on_step: StepCallback, check_cancel: CancelCheck) -> list:
        h, w, c = req.height // model.vae_scale_factor, req.width // model.vae_scale_factor, model.latent_channels
        init = self._init(model, req)
        # img2img continues the initial draw's generator for ancestral steps, as diffusers' img2img pipelines do
        make = noise.img2img_noise if init is not None else noise.text_noise
        initial, draw = candidate_noise(req.init_noise, req.candidate_seeds(), (h, w, c), make)
        # "" and None mean the same to the torch engine (it passes `negative_prompt or None`); for SDXL that is the
        # zeroed unconditional embedding, so normalise the same way to keep the engines' images equal.
        return model.generate_batch(
            req.prompt,
            req.negative_prompt or None,
            req.width,
            req.height,
            req.steps,
            req.guidance_scale,
            req.scheduler,
            initial,
            noise_fn=draw,
            on_step=on_step,
            check_cancel=check_cancel,
            preview_every=req.preview_every,
            init=init,
        )

    def generate(self, req: GenerateRequest, on_step: StepCallback, check_cancel: CancelCheck) -> GenerateOutput:
        from .pipeline import NonFiniteError

        self._validate(req)
        started = time.perf_counter()
        folder = os.path.realpath(req.model_source)
        model = self._model_for(req)
        scale = model.vae_scale_factor
        if req.width % scale or req.height % scale or req.width <= 0 or req.height <= 0:
            raise RunnerError("INVALID_REQUEST", f"width and height must be positive multiples of {scale}")
        loaded = time.perf_counter()
        dtype_name = self._dtype_for(folder)
        try:
            images = self._run(model, req, on_step, check_cancel)
        except NonFiniteError as exc:
            if dtype_name == "float32":
                raise
            log(f"{exc}; job {req.job_id}: redoing it in float32 and keeping {folder} in float32 from now on")
            self._fp32_only.add(folder)
            self.unload(req.model_source)
            model = self._model_for(req, "float32")
            dtype_name = "float32"
            images = self._run(model, req, on_step, check_cancel)
        finished = time.perf_counter()
        return GenerateOutput(
            image=images[0],
            images=images if len(images) > 1 else [],
            device=device_kind(),
            dtype=dtype_name,
            load_ms=(loaded - started) * 1000.0,
            generate_ms=(finished - loaded) * 1000.0,
            extra={"initNoise": req.init_noise or "native", "scheduler": req.scheduler or "euler"},
        )
