"""MLX samplers vs diffusers' EulerDiscrete / EulerAncestralDiscrete / DDIM / DPMSolverMultistep schedulers on the same
config and steps."""

from __future__ import annotations

import diffusers
import mlx.core as mx
import numpy as np
import pytest
import torch
from pixelai_runner.backends.mlx.sampler import make_sampler

SD_CONFIG = dict(  # the published SD 1.5 / SDXL scheduler shape
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    prediction_type="epsilon",
    timestep_spacing="leading",
    steps_offset=1,
)
CONFIGS = {
    "sd-leading": SD_CONFIG,
    "linspace": dict(SD_CONFIG, timestep_spacing="linspace", steps_offset=0),
    "trailing": dict(SD_CONFIG, timestep_spacing="trailing"),
    "linear-betas-v": dict(
        SD_CONFIG, beta_schedule="linear", beta_start=0.0001, beta_end=0.02, prediction_type="v_prediction"
    ),
    "karras": dict(SD_CONFIG, use_karras_sigmas=True),
    "zero-snr-trailing": dict(SD_CONFIG, rescale_betas_zero_snr=True, timestep_spacing="trailing"),
    "pndm-style-sd15": dict(SD_CONFIG, skip_prk_steps=True, set_alpha_to_one=False, clip_sample=False),
}
CLASSES = {
    "euler": diffusers.EulerDiscreteScheduler,
    "euler_a": diffusers.EulerAncestralDiscreteScheduler,
    "ddim": diffusers.DDIMScheduler,
}


# the torch engine's make_scheduler builds these two from the model's config the same way
DPM = {
    "dpmpp_2m": dict(algorithm_type="dpmsolver++", solver_order=2),
    "dpmpp_2m_karras": dict(algorithm_type="dpmsolver++", solver_order=2, use_karras_sigmas=True),
}
ALL = ["euler", "euler_a", "ddim", *DPM]


def _reference(name, config, steps):
    if name in DPM:
        scheduler = diffusers.DPMSolverMultistepScheduler.from_config(config, **DPM[name])
    else:
        scheduler = CLASSES[name].from_config(config)
    scheduler.set_timesteps(steps)
    return scheduler


def _applicable(name, config_name):
    # karras sigmas are an option of EulerDiscrete and DPMSolverMultistep only
    return not (config_name == "karras" and name not in ("euler", *DPM))


@pytest.mark.parametrize("config_name", sorted(CONFIGS))
@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("steps", [1, 4, 15, 30])
def test_schedule_matches_diffusers(name, config_name, steps):
    if not _applicable(name, config_name):
        return
    config = CONFIGS[config_name]
    reference = _reference(name, config, steps)
    ours = make_sampler(name, config, steps, noise_fn=lambda shape: mx.zeros(shape))
    if config_name == "karras" and name == "euler":  # timesteps interpolated back from sigmas: float32 rounding
        assert np.allclose(ours.timesteps, reference.timesteps.numpy(), rtol=1e-5, atol=1e-5)
    else:
        assert np.array_equal(ours.timesteps, reference.timesteps.numpy().astype(np.float32))
    assert ours.init_noise_sigma == pytest.approx(float(reference.init_noise_sigma), rel=1e-6)
    if name == "ddim":
        assert ours.schedule.sigmas is None
    else:
        assert np.allclose(ours.schedule.sigmas, reference.sigmas.numpy(), rtol=1e-6, atol=0)
        assert ours.schedule.sigmas[-1] == reference.sigmas.numpy()[-1]


@pytest.mark.parametrize(
    "config_name", ["sd-leading", "linspace", "linear-betas-v", "pndm-style-sd15", "zero-snr-trailing", "karras"]
)
@pytest.mark.parametrize("name", ALL)
def test_full_trajectory_matches_diffusers(name, config_name):
    """Drive both with the same fake model output for every step; the latents must track each other."""
    if not _applicable(name, config_name):
        return
    config = CONFIGS[config_name]
    steps = 6
    reference = _reference(name, config, steps)
    gen = torch.Generator().manual_seed(0)
    noise_gen = torch.Generator().manual_seed(1)

    def draw(shape_nhwc):  # euler_a: the same noise diffusers draws from its generator
        b, h, w, c = shape_nhwc
        return mx.array(torch.randn((b, c, h, w), generator=noise_gen).numpy().transpose(0, 2, 3, 1))

    ours = make_sampler(name, config, steps, noise_fn=draw)
    start = torch.randn((1, 4, 5, 6), generator=gen)
    ref_x = start * reference.init_noise_sigma
    our_x = mx.array(start.numpy().transpose(0, 2, 3, 1)) * ours.init_noise_sigma
    ref_gen = torch.Generator().manual_seed(1)
    for index, t in enumerate(reference.timesteps):
        model_out = torch.randn((1, 4, 5, 6), generator=gen)
        ref_in = reference.scale_model_input(ref_x, t)
        our_in = ours.scale_input(our_x, index)
        # bounded by the state's magnitude (as the step below): zero-SNR schedules start at σ ≈ 4096
        in_scale = max(float(ref_in.abs().max()), 1.0)
        assert np.abs(np.array(our_in).transpose(0, 3, 1, 2) - ref_in.numpy()).max() <= 1e-5 * in_scale
        ref_x = reference.step(model_out, t, ref_x, generator=ref_gen).prev_sample
        our_x = ours.step(mx.array(model_out.numpy().transpose(0, 2, 3, 1)), index, our_x)
        scale = float(ref_x.abs().max())
        assert np.abs(np.array(our_x).transpose(0, 3, 1, 2) - ref_x.numpy()).max() <= 1e-5 * max(scale, 1.0)


def test_ddim_reads_missing_keys_with_ddim_defaults():
    """An Euler config has no clip_sample/set_alpha_to_one.

    DDIM must then use its own defaults (True/True), like diffusers.
    """
    ours = make_sampler("ddim", SD_CONFIG, 4)
    assert ours.cfg["clip_sample"] is True and ours.cfg["set_alpha_to_one"] is True
    assert ours.final_alpha_cumprod == 1.0


def test_unknown_scheduler_is_rejected():
    with pytest.raises(ValueError):
        make_sampler("dpmpp_3m_sde", SD_CONFIG, 4)
