"""Euler, Euler-ancestral, DDIM (η = 0) and DPM-Solver++ 2M samplers, numerically equal to diffusers' schedulers.

The schedule (betas → ᾱ → σ, timestep spacing, σ interpolation, final σ) is computed in numpy the way diffusers does:
float32 betas, a cumulative product accumulated in float64 and stored as float32 (what torch.cumprod does on CPU),
float64 interpolation. Timesteps match exactly; sigmas to float32 rounding (torch.linspace's vectorised kernel can
differ from numpy's linspace in the last bit of a beta, and that is all). Missing config keys take each diffusers
class's own default (a PNDM config of an SD 1.5 folder read as DDIM gets DDIM's clip_sample=True default, exactly as
`DDIMScheduler.from_config` would).

Latent arithmetic is done in float32, like diffusers' `sample.to(torch.float32)` upcast inside `step`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import mlx.core as mx
import numpy as np

from .config import SCHEDULERS

# diffusers' __init__ defaults of the three classes; config values override these.
_BASE_DEFAULTS = dict(
    num_train_timesteps=1000,
    beta_start=0.0001,
    beta_end=0.02,
    beta_schedule="linear",
    trained_betas=None,
    prediction_type="epsilon",
    timestep_spacing="linspace",
    steps_offset=0,
    rescale_betas_zero_snr=False,
)
CLASS_DEFAULTS = {
    "euler": dict(
        _BASE_DEFAULTS,
        interpolation_type="linear",
        use_karras_sigmas=False,
        use_exponential_sigmas=False,
        use_beta_sigmas=False,
        sigma_min=None,
        sigma_max=None,
        timestep_type="discrete",
        final_sigmas_type="zero",
    ),
    "euler_a": dict(_BASE_DEFAULTS),
    "ddim": dict(
        _BASE_DEFAULTS,
        timestep_spacing="leading",
        clip_sample=True,
        clip_sample_range=1.0,
        set_alpha_to_one=True,
        thresholding=False,
    ),
    # DPMSolverMultistepScheduler's defaults; the engines always run it as second-order DPM-Solver++ (the torch
    # engine's make_scheduler forces the same two keys), Karras sigmas for the `_karras` name
    "dpmpp_2m": dict(
        _BASE_DEFAULTS,
        solver_order=2,
        algorithm_type="dpmsolver++",
        solver_type="midpoint",
        lower_order_final=True,
        euler_at_final=False,
        use_karras_sigmas=False,
        use_exponential_sigmas=False,
        use_beta_sigmas=False,
        use_lu_lambdas=False,
        use_flow_sigmas=False,
        final_sigmas_type="zero",
        lambda_min_clipped=-float("inf"),
        variance_type=None,
        thresholding=False,
    ),
}
# what each name forces over the model's own scheduler config
_FORCED = {
    "dpmpp_2m": dict(algorithm_type="dpmsolver++", solver_order=2),
    "dpmpp_2m_karras": dict(algorithm_type="dpmsolver++", solver_order=2, use_karras_sigmas=True),
}


def resolve_config(name: str, scheduler_config: dict) -> dict:
    base = "dpmpp_2m" if name == "dpmpp_2m_karras" else name
    if base not in CLASS_DEFAULTS:
        raise ValueError(f"unknown scheduler {name!r}; MLX supports {', '.join(SCHEDULERS)}")
    cfg = dict(CLASS_DEFAULTS[base])
    cfg.update({k: v for k, v in scheduler_config.items() if k in cfg})
    cfg.update(_FORCED.get(name, {}))
    return cfg


# --- the noise schedule --------------------------------------------------------------------------------------------


def _rescale_zero_terminal_snr(betas: np.ndarray) -> np.ndarray:
    """Shift and scale √ᾱ so the last timestep has zero SNR (Lin et al. 2023, Algorithm 1)."""
    alphas_bar_sqrt = _cumprod_f32(1.0 - betas) ** 0.5
    first, last = alphas_bar_sqrt[0].copy(), alphas_bar_sqrt[-1].copy()
    alphas_bar_sqrt = (alphas_bar_sqrt - last) * (first / (first - last))
    alphas_bar = alphas_bar_sqrt**2
    alphas = np.concatenate([alphas_bar[:1], alphas_bar[1:] / alphas_bar[:-1]])
    return (1 - alphas).astype(np.float32)


def betas_for(cfg: dict) -> np.ndarray:
    n = cfg["num_train_timesteps"]
    if cfg.get("trained_betas") is not None:
        betas = np.asarray(cfg["trained_betas"], dtype=np.float32)
    elif cfg["beta_schedule"] == "linear":
        betas = np.linspace(cfg["beta_start"], cfg["beta_end"], n, dtype=np.float32)
    elif cfg["beta_schedule"] == "scaled_linear":
        # linear in √β — the latent-diffusion schedule
        betas = np.linspace(cfg["beta_start"] ** 0.5, cfg["beta_end"] ** 0.5, n, dtype=np.float32) ** 2
    elif cfg["beta_schedule"] == "squaredcos_cap_v2":

        def alpha_bar(t):
            return np.cos((t + 0.008) / 1.008 * np.pi / 2) ** 2

        t = np.arange(n)
        betas = np.minimum(1 - alpha_bar((t + 1) / n) / alpha_bar(t / n), 0.999).astype(np.float32)
    else:
        raise ValueError(f"beta_schedule {cfg['beta_schedule']!r} is not supported")
    if cfg.get("rescale_betas_zero_snr"):
        betas = _rescale_zero_terminal_snr(betas)
    return betas.astype(np.float32)


def _cumprod_f32(values: np.ndarray) -> np.ndarray:
    """float32 cumulative product accumulated in float64, as torch.cumprod on CPU."""
    return np.cumprod(values.astype(np.float64)).astype(np.float32)


def alphas_cumprod_for(cfg: dict) -> np.ndarray:
    alphas_cumprod = _cumprod_f32(1.0 - betas_for(cfg))
    if cfg.get("rescale_betas_zero_snr"):
        alphas_cumprod[-1] = 2.0**-24  # as diffusers: keeps the first sigma finite
    return alphas_cumprod


def spaced_timesteps(cfg: dict, steps: int) -> np.ndarray:
    """The training timesteps visited, high to low (float64), per `timestep_spacing` (Lin et al. 2023, Table 2)."""
    n = cfg["num_train_timesteps"]
    spacing = cfg["timestep_spacing"]
    if spacing == "linspace":
        return np.linspace(0, n - 1, steps)[::-1].copy()
    if spacing == "leading":
        ratio = n // steps
        return (np.arange(0, steps) * ratio).round()[::-1].astype(np.float64) + cfg["steps_offset"]
    if spacing == "trailing":
        return np.arange(n, 0, -n / steps).round() - 1
    raise ValueError(f"timestep_spacing {spacing!r} is not supported")


def _karras(sigmas: np.ndarray, steps: int, sigma_min, sigma_max, rho: float = 7.0) -> np.ndarray:
    """Karras et al. 2022 schedule: evenly spaced in σ^(1/ρ)."""
    lo = sigma_min if sigma_min is not None else float(sigmas[-1])
    hi = sigma_max if sigma_max is not None else float(sigmas[0])
    ramp = np.linspace(0, 1, steps)
    return (hi ** (1 / rho) + ramp * (lo ** (1 / rho) - hi ** (1 / rho))) ** rho


def _sigma_to_t(sigma: np.ndarray, log_sigmas: np.ndarray) -> np.ndarray:
    """Invert σ(t) by linear interpolation in log σ."""
    log_sigma = np.log(np.maximum(sigma, 1e-10))
    dists = log_sigma - log_sigmas[:, None]
    low = np.cumsum(dists >= 0, axis=0).argmax(axis=0).clip(max=log_sigmas.shape[0] - 2)
    w = np.clip((log_sigmas[low] - log_sigma) / (log_sigmas[low] - log_sigmas[low + 1]), 0, 1)
    return (1 - w) * low + w * (low + 1)


@dataclass
class Schedule:
    """What the denoising loop needs: the UNet timesteps and, for sigma samplers, sigmas (one more than steps)."""

    timesteps: np.ndarray  # float32, passed to the UNet
    sigmas: np.ndarray | None  # float32 (Euler family) or None (DDIM)
    init_noise_sigma: float


def euler_schedule(cfg: dict, steps: int) -> Schedule:
    alphas_cumprod = alphas_cumprod_for(cfg)
    train_sigmas = ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5  # float32, as diffusers
    timesteps = spaced_timesteps(cfg, steps).astype(np.float32)
    interpolation = cfg.get("interpolation_type", "linear")
    if interpolation == "linear":
        sigmas = np.interp(timesteps, np.arange(len(train_sigmas)), train_sigmas)
    elif interpolation == "log_linear":
        sigmas = np.exp(np.linspace(np.log(train_sigmas[-1]), np.log(train_sigmas[0]), steps + 1, dtype=np.float32))
    else:
        raise ValueError(f"interpolation_type {interpolation!r} is not supported")
    if cfg.get("use_karras_sigmas"):
        sigmas = _karras(sigmas, steps, cfg.get("sigma_min"), cfg.get("sigma_max"))
        timesteps = _sigma_to_t(sigmas, np.log(train_sigmas)).astype(np.float32)
    elif cfg.get("use_exponential_sigmas") or cfg.get("use_beta_sigmas"):
        raise ValueError("exponential / beta sigmas are not supported by the MLX engine")
    if cfg.get("timestep_type", "discrete") != "discrete":
        raise ValueError("continuous timesteps are not supported by the MLX engine")
    final = cfg.get("final_sigmas_type", "zero")
    if final == "zero":
        last = 0.0
    elif final == "sigma_min":
        last = float(train_sigmas[0])
    else:
        raise ValueError(f"final_sigmas_type {final!r} is not supported")
    sigmas = np.concatenate([sigmas, [last]]).astype(np.float32)
    max_sigma = float(sigmas.max())
    # "leading" spacing never reaches t = T, so the first input needs the extra unit variance of x_T itself
    init = (
        max_sigma
        if cfg["timestep_spacing"] in ("linspace", "trailing")
        else float(np.float32((np.float32(max_sigma) ** 2 + 1) ** 0.5))
    )
    return Schedule(timesteps=timesteps, sigmas=sigmas, init_noise_sigma=init)


def ddim_schedule(cfg: dict, steps: int) -> Schedule:
    n = cfg["num_train_timesteps"]
    if steps > n:
        raise ValueError(f"steps={steps} exceeds num_train_timesteps={n}")
    spacing = cfg["timestep_spacing"]
    if spacing == "linspace":
        timesteps = np.linspace(0, n - 1, steps).round()[::-1].astype(np.int64)
    else:
        timesteps = spaced_timesteps(cfg, steps).astype(np.int64)
    return Schedule(timesteps=timesteps.astype(np.float32), sigmas=None, init_noise_sigma=1.0)


def dpm_schedule(cfg: dict, steps: int) -> Schedule:
    """DPMSolverMultistepScheduler's timesteps (integers) and sigmas. Its samples live in the VP parameterisation
    (x = α·x₀ + σ_t·ε with α = 1/√(σ²+1)), so the first latent is the unit noise itself and the UNet input unscaled."""
    for key in ("use_exponential_sigmas", "use_beta_sigmas", "use_lu_lambdas", "use_flow_sigmas", "thresholding"):
        if cfg.get(key):
            raise ValueError(f"DPM-Solver++ with {key} is not supported by the MLX engine")
    if cfg.get("solver_type") != "midpoint" or cfg.get("variance_type") is not None:
        raise ValueError("DPM-Solver++ runs with the midpoint solver and a fixed variance on the MLX engine")
    n = cfg["num_train_timesteps"]
    alphas_cumprod = alphas_cumprod_for(cfg)
    # lambda_min_clipped cuts the schedule's noisy end (where log-SNR falls below it)
    lambdas = np.log(alphas_cumprod**0.5) - np.log((1 - alphas_cumprod) ** 0.5)
    last = n - int(np.searchsorted(lambdas[::-1], cfg["lambda_min_clipped"], side="left"))
    spacing = cfg["timestep_spacing"]
    if spacing == "linspace":
        timesteps = np.linspace(0, last - 1, steps + 1).round()[::-1][:-1].astype(np.int64)
    elif spacing == "leading":
        ratio = last // (steps + 1)
        timesteps = (np.arange(0, steps + 1) * ratio).round()[::-1][:-1].astype(np.int64) + cfg["steps_offset"]
    elif spacing == "trailing":
        timesteps = np.arange(last, 0, -n / steps).round().astype(np.int64) - 1
    else:
        raise ValueError(f"timestep_spacing {spacing!r} is not supported")
    train_sigmas = ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5
    if cfg.get("use_karras_sigmas"):
        sigmas = _karras(train_sigmas[::-1].copy(), steps, None, None)
        timesteps = _sigma_to_t(sigmas, np.log(train_sigmas))
        if cfg["beta_schedule"] != "squaredcos_cap_v2":
            timesteps = timesteps.round()
    else:
        sigmas = np.interp(timesteps, np.arange(len(train_sigmas)), train_sigmas)
    final = cfg.get("final_sigmas_type", "zero")
    if final == "zero":
        last_sigma = 0.0
    elif final == "sigma_min":
        last_sigma = float(train_sigmas[0])
    else:
        raise ValueError(f"final_sigmas_type {final!r} is not supported")
    sigmas = np.concatenate([sigmas, [last_sigma]]).astype(np.float32)
    return Schedule(timesteps=np.asarray(timesteps).astype(np.float32), sigmas=sigmas, init_noise_sigma=1.0)


# --- the update rules ---------------------------------------------------------------------------------------------


def predicted_x0_from_sigma(sample: mx.array, model_output: mx.array, sigma: float, prediction_type: str) -> mx.array:
    if prediction_type == "epsilon":
        return sample - sigma * model_output
    if prediction_type == "v_prediction":
        return model_output * (-sigma / (sigma**2 + 1) ** 0.5) + sample / (sigma**2 + 1)
    if prediction_type == "sample":
        return model_output
    raise ValueError(f"prediction_type {prediction_type!r} is not supported")


class Sampler(ABC):
    """A scheduler bound to a step count; `scale_input` before the UNet, `step` after it."""

    name = ""

    def __init__(self, cfg: dict, steps: int):
        self.cfg = cfg
        self.steps = steps
        self.schedule = self._make_schedule(cfg, steps)

    def _make_schedule(self, cfg: dict, steps: int) -> Schedule:
        return euler_schedule(cfg, steps)

    @property
    def timesteps(self) -> np.ndarray:
        return self.schedule.timesteps

    @property
    def init_noise_sigma(self) -> float:
        return self.schedule.init_noise_sigma

    def scale_input(self, sample: mx.array, index: int) -> mx.array:
        sigma = float(self.schedule.sigmas[index])
        return sample / ((sigma**2 + 1) ** 0.5)

    def add_noise(self, original: mx.array, noise: mx.array, index: int) -> mx.array:
        """Clean latents noised to the level of schedule position `index` (img2img's start, inpainting's blend), as
        the diffusers scheduler's `add_noise` does once its begin index is set: x + σ·ε for the Euler family."""
        sigma = float(self.schedule.sigmas[index])
        return original.astype(mx.float32) + noise.astype(mx.float32) * sigma

    @abstractmethod
    def step(self, model_output: mx.array, index: int, sample: mx.array) -> mx.array:
        """One denoising step from `sample` at schedule position `index` to the next; each sampler's own rule."""


class EulerSampler(Sampler):
    """Euler's method on the probability-flow ODE dx/dσ = (x − x̂₀)/σ (Karras et al. 2022), no churn."""

    name = "euler"

    def step(self, model_output: mx.array, index: int, sample: mx.array) -> mx.array:
        sigma, sigma_next = (float(s) for s in self.schedule.sigmas[index : index + 2])
        sample = sample.astype(mx.float32)
        x0 = predicted_x0_from_sigma(sample, model_output.astype(mx.float32), sigma, self.cfg["prediction_type"])
        derivative = (sample - x0) / sigma
        return sample + derivative * (sigma_next - sigma)


class EulerAncestralSampler(Sampler):
    """Euler step to σ_down, then fresh noise of σ_up: σ_down² + σ_up² = σ_next²."""

    name = "euler_a"

    def __init__(self, cfg: dict, steps: int, noise_fn: Callable[[tuple], mx.array]):
        super().__init__(cfg, steps)
        self.noise_fn = noise_fn

    def _make_schedule(self, cfg: dict, steps: int) -> Schedule:
        euler_cfg = dict(CLASS_DEFAULTS["euler"], **cfg)
        return euler_schedule(euler_cfg, steps)

    def step(self, model_output: mx.array, index: int, sample: mx.array) -> mx.array:
        sigma, sigma_next = (float(s) for s in self.schedule.sigmas[index : index + 2])
        sample = sample.astype(mx.float32)
        x0 = predicted_x0_from_sigma(sample, model_output.astype(mx.float32), sigma, self.cfg["prediction_type"])
        sigma_up = (sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2) ** 0.5
        sigma_down = (sigma_next**2 - sigma_up**2) ** 0.5
        prev = sample + (sample - x0) / sigma * (sigma_down - sigma)
        return prev + self.noise_fn(tuple(model_output.shape)) * sigma_up


class DDIMSampler(Sampler):
    """Deterministic DDIM (η = 0): x_{t−Δ} = √ᾱ_{t−Δ}·x̂₀ + √(1−ᾱ_{t−Δ})·ε̂ (Song et al. 2021, eq. 12)."""

    name = "ddim"

    def __init__(self, cfg: dict, steps: int):
        if cfg.get("thresholding"):
            raise ValueError("DDIM dynamic thresholding is not supported by the MLX engine")
        super().__init__(cfg, steps)
        self.alphas_cumprod = alphas_cumprod_for(cfg)
        self.final_alpha_cumprod = np.float32(1.0) if cfg["set_alpha_to_one"] else self.alphas_cumprod[0]

    def _make_schedule(self, cfg: dict, steps: int) -> Schedule:
        return ddim_schedule(cfg, steps)

    def scale_input(self, sample: mx.array, index: int) -> mx.array:
        return sample

    def add_noise(self, original: mx.array, noise: mx.array, index: int) -> mx.array:
        """√ᾱ_t·x + √(1−ᾱ_t)·ε at the timestep of position `index` (float32 ᾱ, as DDIMScheduler.add_noise)."""
        alpha = np.float32(self.alphas_cumprod[int(self.schedule.timesteps[index])])
        return float(alpha ** np.float32(0.5)) * original.astype(mx.float32) + float(
            (np.float32(1.0) - alpha) ** np.float32(0.5)
        ) * noise.astype(mx.float32)

    def step(self, model_output: mx.array, index: int, sample: mx.array) -> mx.array:
        t = int(self.schedule.timesteps[index])
        prev_t = t - self.cfg["num_train_timesteps"] // self.steps
        alpha = float(self.alphas_cumprod[t])
        alpha_prev = float(self.alphas_cumprod[prev_t] if prev_t >= 0 else self.final_alpha_cumprod)
        sample = sample.astype(mx.float32)
        eps_or_v = model_output.astype(mx.float32)
        kind = self.cfg["prediction_type"]
        if kind == "epsilon":
            x0, eps = (sample - (1 - alpha) ** 0.5 * eps_or_v) / alpha**0.5, eps_or_v
        elif kind == "v_prediction":
            x0 = alpha**0.5 * sample - (1 - alpha) ** 0.5 * eps_or_v
            eps = alpha**0.5 * eps_or_v + (1 - alpha) ** 0.5 * sample
        elif kind == "sample":
            x0 = eps_or_v
            eps = (sample - alpha**0.5 * x0) / (1 - alpha) ** 0.5
        else:
            raise ValueError(f"prediction_type {kind!r} is not supported")
        if self.cfg["clip_sample"]:
            bound = self.cfg["clip_sample_range"]
            x0 = mx.clip(x0, -bound, bound)
        return alpha_prev**0.5 * x0 + (1 - alpha_prev) ** 0.5 * eps


def _alpha_sigma(sigma: np.float32) -> tuple[np.float32, np.float32]:
    """σ (the Euler family's noise level) → (α_t, σ_t) of the VP parameterisation, in float32 as diffusers."""
    alpha = np.float32(1.0) / (sigma * sigma + np.float32(1.0)) ** np.float32(0.5)
    return alpha, sigma * alpha


def _log_snr(alpha: np.float32, sigma: np.float32) -> np.float32:
    with np.errstate(divide="ignore"):  # σ_t = 0 at the end: λ = +∞, and the update below reduces to x̂₀
        return np.log(alpha) - np.log(sigma)


class DPMSolverPP2MSampler(Sampler):
    """Multistep DPM-Solver++ of order 2 with the midpoint rule (Lu et al. 2022, Algorithm 2), on data predictions x̂₀.

    Each step moves in log-SNR λ: first order for the first step (no history yet) and the last (final σ = 0, where
    the exact solution is x̂₀), else a second-order correction from the previous step's x̂₀.
    """

    name = "dpmpp_2m"

    def __init__(self, cfg: dict, steps: int):
        super().__init__(cfg, steps)
        self.previous_x0: mx.array | None = None

    def _make_schedule(self, cfg: dict, steps: int) -> Schedule:
        return dpm_schedule(cfg, steps)

    def scale_input(self, sample: mx.array, index: int) -> mx.array:
        return sample

    def add_noise(self, original: mx.array, noise: mx.array, index: int) -> mx.array:
        """α_t·x + σ_t·ε in the VP parameterisation of position `index` (DPMSolverMultistepScheduler.add_noise)."""
        alpha, sigma = _alpha_sigma(self.schedule.sigmas[index])
        return float(alpha) * original.astype(mx.float32) + float(sigma) * noise.astype(mx.float32)

    def _x0(self, model_output: mx.array, sample: mx.array, alpha: np.float32, sigma: np.float32) -> mx.array:
        kind = self.cfg["prediction_type"]
        if kind == "epsilon":
            return (sample - float(sigma) * model_output) / float(alpha)
        if kind == "v_prediction":
            return float(alpha) * sample - float(sigma) * model_output
        if kind == "sample":
            return model_output
        raise ValueError(f"prediction_type {kind!r} is not supported")

    def step(self, model_output: mx.array, index: int, sample: mx.array) -> mx.array:
        sigmas = self.schedule.sigmas
        alpha_s0, sigma_s0 = _alpha_sigma(sigmas[index])
        alpha_t, sigma_t = _alpha_sigma(sigmas[index + 1])
        sample = sample.astype(mx.float32)
        x0 = self._x0(model_output.astype(mx.float32), sample, alpha_s0, sigma_s0)
        previous, self.previous_x0 = self.previous_x0, x0
        lambda_t, lambda_s0 = _log_snr(alpha_t, sigma_t), _log_snr(alpha_s0, sigma_s0)
        h = lambda_t - lambda_s0
        decay = float(alpha_t * (np.exp(-h) - np.float32(1.0)))
        last = index == len(self.timesteps) - 1
        first_order = previous is None or (
            last
            and (
                self.cfg["euler_at_final"]
                or (self.cfg["lower_order_final"] and len(self.timesteps) < 15)
                or self.cfg["final_sigmas_type"] == "zero"
            )
        )
        if first_order:
            if float(sigma_t) == 0.0:
                return x0
            return float(sigma_t / sigma_s0) * sample - decay * x0
        alpha_s1, sigma_s1 = _alpha_sigma(sigmas[index - 1])
        r0 = (lambda_s0 - _log_snr(alpha_s1, sigma_s1)) / h
        d1 = float(np.float32(1.0) / r0) * (x0 - previous)
        return float(sigma_t / sigma_s0) * sample - decay * x0 - (0.5 * decay) * d1


def make_sampler(
    name: str | None, scheduler_config: dict, steps: int, noise_fn: Callable[[tuple], mx.array] | None = None
) -> Sampler:
    name = name or "euler"
    cfg = resolve_config(name, scheduler_config)
    if steps < 1:
        raise ValueError("steps must be ≥ 1")
    if name == "euler":
        return EulerSampler(cfg, steps)
    if name == "ddim":
        return DDIMSampler(cfg, steps)
    if name in ("dpmpp_2m", "dpmpp_2m_karras"):
        return DPMSolverPP2MSampler(cfg, steps)
    if noise_fn is None:
        raise ValueError("euler_a needs a noise source")
    return EulerAncestralSampler(cfg, steps, noise_fn)
