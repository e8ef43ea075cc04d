"""The torch engine: diffusers SD 1.x / SDXL pipelines kept warm in a small LRU cache."""

from __future__ import annotations

import os
import sys
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import torch

from .. import background, img2img, model_files, noise, preview
from .. import device as devices
from ..errors import RunnerError, classify_exception
from ..settings import RunnerSettings
from ..versions import package_versions
from .base import Backend, CancelCheck, GenerateOutput, GenerateRequest, StepCallback

SCHEDULERS = ("euler", "euler_a", "ddim", "dpmpp_2m", "dpmpp_2m_karras")
DEFAULT_SCHEDULER = "euler"
DEFAULT_CACHE_SIZE = 2  # the schema's RunnerSettings.pipelineCache default
LORA_ADAPTER = "pixelai_lora"


def make_scheduler(name: str | None, base_config: Any):
    """A fresh scheduler of the requested kind, configured like the one the model shipped with."""
    from diffusers import (
        DDIMScheduler,
        DPMSolverMultistepScheduler,
        EulerAncestralDiscreteScheduler,
        EulerDiscreteScheduler,
    )

    kind = name or DEFAULT_SCHEDULER
    if kind == "euler":
        return EulerDiscreteScheduler.from_config(base_config)
    if kind == "euler_a":
        return EulerAncestralDiscreteScheduler.from_config(base_config)
    if kind == "ddim":
        return DDIMScheduler.from_config(base_config)
    if kind in ("dpmpp_2m", "dpmpp_2m_karras"):
        # second-order DPM-Solver++; "_karras" spaces its noise levels as Karras et al. 2022 do
        return DPMSolverMultistepScheduler.from_config(
            base_config, algorithm_type="dpmsolver++", solver_order=2, use_karras_sigmas=kind == "dpmpp_2m_karras"
        )
    raise RunnerError("INVALID_REQUEST", f"unknown scheduler {kind!r} (expected one of {SCHEDULERS})")


@dataclass
class _Loaded:
    pipe: Any
    kind: str  # "sd" | "sdxl"
    base_scheduler_config: Any
    lora: tuple[str, float] | None = None  # (source, strength) of the adapter active on the pipe
    # One scheduler of each kind per pipeline, kept: building one from the config costs about 2 ms a job, and diffusers'
    # pipelines are meant to be called again with theirs (set_timesteps resets every per-run state at each call).
    schedulers: dict[str, Any] = field(default_factory=dict)

    def scheduler(self, name: str | None) -> Any:
        kind = name or DEFAULT_SCHEDULER
        if kind not in self.schedulers:
            self.schedulers[kind] = make_scheduler(kind, self.base_scheduler_config)
        return self.schedulers[kind]


class TorchBackend(Backend):
    engine = "torch"

    def __init__(
        self,
        device_info: devices.DeviceInfo | None = None,
        cache_size: int = DEFAULT_CACHE_SIZE,
        birefnet_dir: str = "",
    ):
        self.info = device_info or devices.detect()
        self.torch_dtype = getattr(torch, self.info.dtype)
        self.cache_size = max(1, cache_size)
        self.birefnet_dir = birefnet_dir
        self._cache: OrderedDict[str, _Loaded] = OrderedDict()
        # Serialises generation, loading and unloading; `probe` never takes it so it answers during a generation.
        self._lock = threading.RLock()
        self._loaded_names: tuple[str, ...] = ()
        self.last_load_ms = 0.0
        self._versions = package_versions("torch", "diffusers", "transformers", "peft", "accelerate", "pillow")

    @classmethod
    def from_settings(cls, settings: RunnerSettings) -> TorchBackend:
        forced = settings.forced_device
        info = devices.detect() if forced is None else devices.forced(forced)
        return cls(info, cache_size=settings.pipeline_cache, birefnet_dir=settings.birefnet_dir)

    # ---- contract -------------------------------------------------------------------------------------------
    def probe(self) -> dict:
        return {
            "engine": self.engine,
            "available": True,
            "device": self.info.device,
            "chip": self.info.chip,
            "dtype": self.info.dtype,
            "versions": dict(self._versions),
            "features": {
                "lora": True,
                "sdxl": True,
                # BiRefNet ("birefnet"); color-key is plain post-processing and works on every engine. A file check
                # only, so probes stay cheap: the model loads with the first job that asks for it.
                "backgroundRemoval": background.weights_present(self.birefnet_dir),
                "img2img": True,
                # the model's own 4-channel UNet, latents outside the mask reset each step (img2img.py)
                "inpaint": True,
                "stepPreview": True,
            },
            "schedulers": list(SCHEDULERS),
            "loadedModels": list(self._loaded_names),
            "cacheSize": self.cache_size,
        }

    def ensure_loaded(self, source: str) -> _Loaded:
        with self._lock:
            cached = self._cache.get(source)
            if cached is not None:
                self._cache.move_to_end(source)
                self.last_load_ms = 0.0
                return cached
            started = time.perf_counter()
            loaded = self._load(source)
            self._cache[source] = loaded
            while len(self._cache) > self.cache_size:
                _, evicted = self._cache.popitem(last=False)
                self._release(evicted)
            self._loaded_names = tuple(self._cache)
            self.last_load_ms = (time.perf_counter() - started) * 1000.0
            return loaded

    def unload(self, source: str | None = None) -> list[str]:
        with self._lock:
            names = [source] if source is not None else list(self._cache)
            unloaded = []
            for name in names:
                loaded = self._cache.pop(name, None)
                if loaded is not None:
                    self._release(loaded)
                    unloaded.append(name)
            self._loaded_names = tuple(self._cache)
            return unloaded

    def unload_lora(self) -> None:
        with self._lock:
            for loaded in self._cache.values():
                self._set_lora(loaded, None)

    def generate(self, req: GenerateRequest, on_step: StepCallback, check_cancel: CancelCheck) -> GenerateOutput:
        with self._lock:
            _check_pinned(req.model_source, req.model_commit, "MODEL_NOT_FOUND")
            if req.lora and req.lora.get("commit"):
                _check_pinned(str(req.lora.get("source") or ""), str(req.lora["commit"]), "LORA_NOT_FOUND")
            loaded = self.ensure_loaded(req.model_source)
            load_ms = self.last_load_ms
            pipe = loaded.pipe
            scale = int(getattr(pipe, "vae_scale_factor", 8))
            if req.width % scale or req.height % scale:
                raise RunnerError("INVALID_REQUEST", f"width and height must be multiples of {scale}")
            # No part of the engine's work goes untimed (the MLX engine counts alike): a LoRA switched in or out is
            # loading, the job's scheduler and latent set-up is generating.
            switching = time.perf_counter()
            switched = self._set_lora(loaded, req.lora)
            started = time.perf_counter()
            if switched:
                load_ms += (started - switching) * 1000.0
            else:
                started = switching
            pipe.scheduler = loaded.scheduler(req.scheduler)
            check_cancel()
            shape = noise.latent_shape(pipe.unet.config.in_channels, req.height, req.width, scale)
            images = self._candidates(loaded, req, shape, req.candidate_seeds(), on_step, check_cancel)
            generate_ms = (time.perf_counter() - started) * 1000.0
        return GenerateOutput(
            image=images[0],
            images=images if len(images) > 1 else [],
            device=self.info.device,
            dtype=self.info.dtype,
            load_ms=load_ms,
            generate_ms=generate_ms,
            extra={"pipeline": loaded.kind, "scheduler": req.scheduler or DEFAULT_SCHEDULER},
        )

    def _candidates(
        self,
        loaded: _Loaded,
        req: GenerateRequest,
        shape: tuple[int, ...],
        seeds: list[int],
        on_step: StepCallback,
        check_cancel: CancelCheck,
    ) -> list[Any]:
        """The images of `seeds`, denoised as one batch: candidate i starts from (and, ancestral, steps with) the draws
        of its seed, exactly what a count 1 job with that seed gets. A batch the device has no memory for is split in
        two halves run one after the other (down to one candidate, whose OOM is the job's); each half reports its steps
        again from 1, and only candidate 0's preview while split."""
        pipe, kind = loaded.pipe, loaded.kind
        whole = len(seeds) == req.count
        plan = img2img.plan(req.steps, req.strength, bool(req.mask_path)) if req.init_image_path else None
        total = req.steps if plan is None or plan.mode == "text" else plan.steps
        report = on_step if whole else _first_preview_only(on_step, seeds[0] == req.seed)

        def on_step_end(_pipe, step_index, _timestep, callback_kwargs):
            # the sampler's current latents, as the approximate latent→RGB map expects them (no VAE decode)
            now = callback_kwargs["latents"]
            preview.emit_step(
                report,
                step_index + 1,
                total,
                req.preview_every,
                lambda: now.detach().float().cpu().numpy(),
                kind,
                "nchw",
            )
            check_cancel()  # raising here aborts the denoising loop between steps
            return callback_kwargs

        kwargs = dict(
            prompt=req.prompt,
            negative_prompt=req.negative_prompt or None,
            width=req.width,
            height=req.height,
            num_inference_steps=req.steps,
            guidance_scale=req.guidance_scale,
            num_images_per_prompt=len(seeds),
            # Only ancestral samplers draw noise mid-run; a seeded CPU generator keeps them reproducible too. A list
            # gives each sample of the batch its own generator (diffusers' randn_tensor draws per sample then).
            generator=noise.step_generator(seeds[0]) if len(seeds) == 1 else [noise.step_generator(s) for s in seeds],
            output_type="pil",
            callback_on_step_end=on_step_end,
        )
        if req.scheduler == "ddim":
            kwargs["eta"] = 0.0
        try:
            with torch.inference_mode():
                if plan is None or plan.mode == "text":
                    latents = torch.cat([noise.initial_latents(seed, shape) for seed in seeds])
                    kwargs["latents"] = latents.to(device=self.info.device, dtype=self.torch_dtype)
                    runner = pipe
                else:
                    # one init image for every candidate: the pipeline repeats its latents per image, and each
                    # candidate's generator draws that candidate's noise (img2img.py)
                    runner = self._img2img_pipe(loaded, req, kwargs)
                # the VAE decodes one sample at a time (enable_slicing at load), as a count 1 job does
                return [image.convert("RGB") for image in runner(**kwargs).images]
        except RuntimeError as exc:  # torch.OutOfMemoryError is one
            if len(seeds) == 1 or classify_exception(exc, self.info.device).code not in ("CUDA_OOM", "MPS_OOM"):
                raise
        del kwargs
        self._empty_cache()
        half = len(seeds) // 2
        print(
            f"[TORCH] a batch of {len(seeds)} candidates ran out of memory; running {half} + {len(seeds) - half}",
            file=sys.stderr,
            flush=True,
        )
        first = self._candidates(loaded, req, shape, seeds[:half], on_step, check_cancel)
        return first + self._candidates(loaded, req, shape, seeds[half:], on_step, check_cancel)

    def _empty_cache(self) -> None:
        if self.info.device == "cuda":
            torch.cuda.empty_cache()
        elif self.info.device == "mps" and hasattr(torch, "mps"):
            torch.mps.empty_cache()

    # ---- img2img ------------------------------------------------------------------------------------------------
    def _img2img_pipe(self, loaded: _Loaded, req: GenerateRequest, kwargs: dict) -> Any:
        """diffusers' img2img (or, with a mask, inpaint) pipeline on the loaded pipeline's own modules (from_pipe: no
        second copy of any weight), and the arguments it takes on top of `kwargs`. The init image goes in as latents
        this engine encoded (the posterior's mode: img2img.py), so the pipeline's generator draws nothing but noise."""
        from diffusers import (
            StableDiffusionImg2ImgPipeline,
            StableDiffusionInpaintPipeline,
            StableDiffusionXLImg2ImgPipeline,
            StableDiffusionXLInpaintPipeline,
        )

        pipe = loaded.pipe
        masked = bool(req.mask_path)
        if loaded.kind == "sdxl":
            cls = StableDiffusionXLInpaintPipeline if masked else StableDiffusionXLImg2ImgPipeline
        else:
            cls = StableDiffusionInpaintPipeline if masked else StableDiffusionImg2ImgPipeline
        # from_pipe casts the modules it shares to its dtype argument (float32 when none is given): the loaded
        # pipeline's own dtype leaves them as they are.
        derived = cls.from_pipe(pipe, dtype=self.torch_dtype)
        # A fresh one after construction: the SD pipelines' __init__ rewrites a DDIM scheduler's config it is handed
        # (clip_sample → False), which text-to-image never sees; the engines and both job kinds keep it as configured.
        derived.scheduler = make_scheduler(req.scheduler, loaded.base_scheduler_config)
        derived.set_progress_bar_config(disable=True)
        latents = self.encode_init(pipe, img2img.load_init(req.init_image_path, req.width, req.height))
        # one copy per candidate: diffusers would repeat a single image itself, but only with a deprecation warning
        latents = latents.repeat(int(kwargs.get("num_images_per_prompt") or 1), 1, 1, 1)
        kwargs.update(image=latents, strength=req.strength)
        if masked:
            mask = img2img.load_mask(req.mask_path, req.width, req.height)
            kwargs.update(mask_image=img2img.mask_image(mask), masked_image_latents=latents)
        return derived

    def encode_init(self, pipe: Any, image: Any) -> Any:
        """PIL RGB → diffusion-space latents (NCHW, the UNet's dtype): the VAE posterior's mode, scaled as diffusers'
        img2img pipelines scale encoded init images. The VAE runs in float32 when its config asks for it."""
        vae = pipe.vae
        upcast = bool(getattr(vae.config, "force_upcast", False)) and vae.dtype != torch.float32
        dtype = torch.float32 if upcast else vae.dtype
        pixels = torch.from_numpy(img2img.model_input(image)).permute(0, 3, 1, 2).to(self.info.device, dtype)
        if upcast:
            vae.to(torch.float32)
        try:
            mean = vae.encode(pixels).latent_dist.mode()
        finally:
            if upcast:
                vae.to(self.torch_dtype)
        config = vae.config
        if getattr(config, "latents_mean", None) is not None and getattr(config, "latents_std", None) is not None:
            shift = torch.tensor(config.latents_mean).view(1, -1, 1, 1).to(mean)
            spread = torch.tensor(config.latents_std).view(1, -1, 1, 1).to(mean)
            scaled = (mean - shift) * config.scaling_factor / spread
        else:
            scaled = mean * config.scaling_factor
        return scaled.to(self.torch_dtype)

    # ---- loading --------------------------------------------------------------------------------------------
    def _load(self, source: str) -> _Loaded:
        """Loads a diffusers folder: a local model or an installed hub snapshot. The runner never fetches anything, so a
        source that is not an existing absolute folder (a hub id above all) is refused, not looked up online."""
        from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

        if not os.path.isabs(source) or not os.path.isdir(source):
            raise RunnerError(
                "MODEL_NOT_FOUND",
                f"model folder {source} does not exist (the runner loads local folders only; hub models are "
                "installed by the server first)",
            )
        try:
            kind = model_files.architecture_of(source)
        except model_files.NoModelIndex as exc:
            raise RunnerError("MODEL_NOT_FOUND", str(exc)) from None
        except model_files.NotAModel as exc:
            raise RunnerError("INVALID_REQUEST", f"{exc} (SD 1.x / SDXL only)") from None
        options: dict[str, Any] = {"dtype": self.torch_dtype}
        if os.path.isfile(os.path.join(source, model_files.INSTALL_RECORD)):
            # An installed hub snapshot: its installer fetched safetensors only, and a pickle file slipped in later must
            # never be unpickled; fp16 variant weights where the snapshot holds them (model_files.weights_variant).
            options["use_safetensors"] = True
            variant = model_files.weights_variant(source, prefer_fp16=self.torch_dtype == torch.float16)
            if variant:
                options["variant"] = variant
        try:
            if kind == "sdxl":
                pipe = StableDiffusionXLPipeline.from_pretrained(source, **options)
            else:
                pipe = StableDiffusionPipeline.from_pretrained(
                    source, safety_checker=None, requires_safety_checker=False, **options
                )
        except (OSError, ValueError) as exc:
            raise RunnerError("MODEL_NOT_FOUND", f"cannot load the model folder {source}: {exc}") from None
        pipe = pipe.to(self.info.device)
        pipe.set_progress_bar_config(disable=True)
        if self.info.device == "mps":
            # Helps unified-memory Macs; on CUDA with SDPA it only slows things down.
            pipe.enable_attention_slicing()
        pipe.vae.enable_slicing()
        return _Loaded(pipe=pipe, kind=kind, base_scheduler_config=dict(pipe.scheduler.config))

    def _release(self, loaded: _Loaded) -> None:
        loaded.pipe = None
        self._empty_cache()

    # ---- LoRA -----------------------------------------------------------------------------------------------
    def _set_lora(self, loaded: _Loaded, lora: dict | None) -> bool:
        """Make `loaded` carry exactly the requested LoRA (or none); a same-source request only changes strength.
        True when adapter weights were loaded or unloaded (time the job's timings count as loading)."""
        wanted = None if not lora else (str(lora.get("source") or ""), float(lora.get("strength", 1.0)))
        if wanted is not None and not wanted[0]:
            raise RunnerError("INVALID_REQUEST", "lora.source is required")
        current = loaded.lora
        switched = False
        if current is not None and (wanted is None or wanted[0] != current[0]):
            loaded.pipe.unload_lora_weights()
            loaded.lora = None
            switched = True
        if wanted is None:
            return switched
        if loaded.lora is None:
            switched = True
            source = wanted[0]
            # A file on disk only: a hub id here would make diffusers fetch it mid-generation.
            if not os.path.isabs(source) or not os.path.isfile(source):
                raise RunnerError(
                    "LORA_NOT_FOUND",
                    f"LoRA file {source} does not exist (the runner loads local files only; hub LoRAs are installed "
                    "by the server first)",
                )
            try:
                loaded.pipe.load_lora_weights(
                    os.path.dirname(source),
                    weight_name=os.path.basename(source),
                    adapter_name=LORA_ADAPTER,
                    use_safetensors=True,
                )
            except (OSError, ValueError, RuntimeError) as exc:
                self._drop_partial_adapter(loaded)
                mismatch = _lora_mismatch(exc)
                if mismatch:
                    raise RunnerError(
                        "INVALID_REQUEST",
                        f"LoRA {os.path.basename(source)!r} does not fit the {loaded.kind} model "
                        f"it was used with: {mismatch}",
                    ) from None
                if isinstance(exc, RuntimeError):
                    raise
                raise RunnerError("LORA_NOT_FOUND", f"cannot load LoRA {source!r}: {exc}") from None
        loaded.pipe.set_adapters([LORA_ADAPTER], adapter_weights=[wanted[1]])
        loaded.lora = wanted
        return switched

    @staticmethod
    def _drop_partial_adapter(loaded: _Loaded) -> None:
        """A load that failed half-way may leave the adapter name registered, which would block the next load."""
        try:
            loaded.pipe.delete_adapters(LORA_ADAPTER)
        except Exception:  # nothing was registered: the usual case
            pass


def _first_preview_only(on_step: StepCallback, has_first: bool) -> StepCallback:
    """A part of a split batch: its steps, and candidate 0's preview when the part holds it (a list of previews that
    is not the job's whole set would put pictures under the wrong candidates)."""

    def report(step: int, total: int, image: Any = None, _previews: Any = None) -> None:
        if image is not None and has_first:
            on_step(step, total, image)
        else:
            on_step(step, total)

    return report


def _check_pinned(source: str, commit: str | None, code: str) -> None:
    """A hub snapshot is used only while its install record names the commit the registry pinned (every load)."""
    if not commit:
        return
    try:
        model_files.check_pinned(source, commit)
    except model_files.NotPinned as exc:
        raise RunnerError(code, str(exc)) from None


def _lora_mismatch(exc: BaseException) -> str | None:
    """A short reason when `exc` says the LoRA was made for another architecture, else None.

    peft injects the adapter and then loads its tensors: a LoRA for another model either names modules this UNet lacks
    (peft's NoMatchingPeftModuleError, a ValueError) or has other shapes (torch's load_state_dict "size mismatch"
    RuntimeError, one line per tensor). Both mean "wrong base model", not "file missing".
    """
    text = str(exc)
    if isinstance(exc, RuntimeError) and "size mismatch" in text:
        lines = [line.strip() for line in text.splitlines() if line.strip().startswith("size mismatch")]
        more = f" (and {len(lines) - 1} more tensors)" if len(lines) > 1 else ""
        return (lines[0] if lines else text.splitlines()[0]) + more
    if isinstance(exc, ValueError) and (
        type(exc).__name__ == "NoMatchingPeftModuleError" or "not found in the base model" in text
    ):
        return text.splitlines()[0] if text else type(exc).__name__
    return None


__all__ = ["TorchBackend", "SCHEDULERS", "make_scheduler"]
