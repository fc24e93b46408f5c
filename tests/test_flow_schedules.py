"""Flow schedules and shift (#34 item 2): every named schedule on a flow model's (shifted) grid, against diffusers
0.42's FlowMatchEulerDiscreteScheduler / FlowMatchHeunDiscreteScheduler (built from config dicts, no downloads) and
against ComfyUI's ModelSamplingDiscreteFlow / ModelSamplingFlux and its schedulers, written down here."""
import math

import numpy as np
import pytest
import torch

from comparisons.core.config import SamplerConfig, schedule
from comparisons.errors import ConfigError
from sampler_lib import (
    SAMPLERS,
    SCHEDULES,
    Denoiser,
    FlowSampling,
    flow_sampling_from_config,
    flux_mu,
    image_tokens,
    initial_noise,
)

# A flow model's schedules: those that make sense on its grid, and those refused (with the reason's words).
ON_FLOW = ("karras", "exponential", "polyexponential", "normal", "sgm_uniform", "simple", "ddim_uniform", "beta",
           "linear_quadratic", "kl_optimal", "diffusers_linspace")
REFUSED = {"align_your_steps": "fitted to SD 1.x/2.x and SDXL eps models", "vp": "variance-preserving",
           "diffusers_leading": "no timestep_spacing", "diffusers_trailing": "no timestep_spacing",
           "laplace": "centred on sigma e"}
FLUX_CONFIG = {"num_train_timesteps": 1000, "shift": 3.0, "use_dynamic_shifting": True, "base_shift": 0.5,
               "max_shift": 1.15, "base_image_seq_len": 256, "max_image_seq_len": 4096}
# diffusers configs: shift 1 (SD3-medium-like without shift), shift 3 (SD3), Flux's dynamic shift at 512² and 1024².
CONFIGS = [({"shift": 1.0}, None), ({"shift": 3.0}, None), (FLUX_CONFIG, image_tokens(512, 512)),
           (FLUX_CONFIG, image_tokens(1024, 1024))]
SAMPLINGS = [FlowSampling(), FlowSampling(shift=3.0), FlowSampling(mu=flux_mu(1024)), FlowSampling(mu=1.15),
             FlowSampling(mu=0.8, timesteps=10000)]


def test_every_schedule_is_in_one_list():
    assert sorted(ON_FLOW + tuple(REFUSED)) == sorted(SCHEDULES)


@pytest.mark.parametrize("name", ON_FLOW)
@pytest.mark.parametrize("ms", SAMPLINGS, ids=lambda ms: str(ms.card()))
def test_each_schedule_gives_n_descending_sigmas_in_0_1_ending_in_0(name, ms):
    built = 0
    for n in (1, 2, 3, 4, 5, 8, 10, 20, 25, 50, 100):
        try:
            s = SCHEDULES[name](n, ms)
        except ValueError as exc:  # only a step count the schedule cannot make (ddim_uniform's stride, beta's ties)
            assert name in ("ddim_uniform", "beta") and "steps" in str(exc), (name, n, exc)
            continue
        built += 1
        assert s.dtype == torch.float32 and len(s) == n + 1 and s[-1] == 0, (name, n)
        assert bool((s[:-1] > 0).all()) and bool((s[:-1] <= 1).all()), (name, n, s)
        assert bool((s[1:] < s[:-1]).all()), (name, n, s)
    assert built >= 8


@pytest.mark.parametrize("name, why", REFUSED.items())
def test_what_makes_no_sense_on_a_flow_grid_is_refused_saying_why(name, why):
    with pytest.raises(ValueError, match=f"cannot be built on a flow model's sigmas.*{why}"):
        SCHEDULES[name](10, FlowSampling(shift=3.0))
    cfg = SamplerConfig(schedule=name, steps=10)
    with pytest.raises(ConfigError, match=why) as info:
        schedule(cfg, FlowSampling(shift=3.0))
    assert info.value.field == "schedule"


# --- diffusers ------------------------------------------------------------------------------------------------------

def _diffusers(cls, config, tokens, n):
    sched = cls(**config)
    mu = None if tokens is None else flux_mu(tokens)
    if mu is None:
        sched.set_timesteps(n)
    else:
        sched.set_timesteps(n, mu=mu)
    return sched


@pytest.mark.parametrize("config, tokens", CONFIGS, ids=["shift1", "shift3", "flux512", "flux1024"])
def test_flow_sigmas_equal_diffusers_flow_match_euler(config, tokens):
    from diffusers import FlowMatchEulerDiscreteScheduler

    ms = flow_sampling_from_config(dict(FlowMatchEulerDiscreteScheduler(**config).config), tokens)
    for n in range(4, 51):
        theirs = _diffusers(FlowMatchEulerDiscreteScheduler, config, tokens, n).sigmas
        torch.testing.assert_close(SCHEDULES["diffusers_linspace"](n, ms), theirs, rtol=2e-6, atol=1e-7)
        torch.testing.assert_close(schedule(SamplerConfig(schedule="diffusers_linspace", steps=n), ms), theirs,
                                   rtol=2e-6, atol=1e-7)
        if tokens is None:  # constant shift: diffusers' set_timesteps is ComfyUI's normal (sigma_min shifted twice)
            torch.testing.assert_close(SCHEDULES["normal"](n, ms), theirs, rtol=2e-6, atol=1e-7)


def test_flux_pipeline_sigmas_are_simple_on_the_1000_step_grid():
    """diffusers' FluxPipeline passes sigmas linspace(1, 1/n, n), shifted by mu: ComfyUI's simple on a 1000-step grid
    wherever n divides 1000."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    for tokens in (image_tokens(512, 512), image_tokens(1024, 1024)):
        ms = flow_sampling_from_config(FLUX_CONFIG, tokens)
        for n in (4, 5, 8, 10, 20, 25, 40, 50):
            sched = FlowMatchEulerDiscreteScheduler(**FLUX_CONFIG)
            sched.set_timesteps(sigmas=np.linspace(1.0, 1 / n, n), mu=flux_mu(tokens))
            torch.testing.assert_close(SCHEDULES["simple"](n, ms), sched.sigmas, rtol=2e-6, atol=1e-7)


# --- ComfyUI, written down (comfy/model_sampling.py and comfy/samplers.py) ---------------------------------------

def comfy_time_snr_shift(alpha, t):
    if alpha == 1.0:
        return t
    return alpha * t / (1 + (alpha - 1) * t)


def comfy_flux_time_shift(mu, sigma, t):
    return math.exp(mu) / (math.exp(mu) + (1 / t - 1) ** sigma)


class ComfyDiscreteFlow:
    """ModelSamplingDiscreteFlow.set_parameters(shift, timesteps=1000, multiplier=1000)."""

    def __init__(self, shift=1.0, timesteps=1000, multiplier=1000):
        self.shift, self.multiplier = shift, multiplier
        self.sigmas = self.sigma((torch.arange(1, timesteps + 1, 1) / timesteps) * multiplier)
        self.sigma_min, self.sigma_max = self.sigmas[0], self.sigmas[-1]

    def timestep(self, sigma):
        return sigma * self.multiplier

    def sigma(self, timestep):
        return comfy_time_snr_shift(self.shift, timestep / self.multiplier)


class ComfyFlux:
    """ModelSamplingFlux.set_parameters(shift=mu, timesteps=10000)."""

    def __init__(self, shift=1.15, timesteps=10000):
        self.shift = shift
        self.sigmas = self.sigma(torch.arange(1, timesteps + 1, 1) / timesteps)
        self.sigma_min, self.sigma_max = self.sigmas[0], self.sigmas[-1]

    def timestep(self, sigma):
        return sigma

    def sigma(self, timestep):
        return comfy_flux_time_shift(self.shift, 1.0, timestep)


def comfy_simple(s, steps):
    sigs = []
    ss = len(s.sigmas) / steps
    for x in range(steps):
        sigs += [float(s.sigmas[-(1 + int(x * ss))])]
    sigs += [0.0]
    return torch.FloatTensor(sigs)


def comfy_normal(s, steps, sgm=False):
    start = s.timestep(s.sigma_max)
    end = s.timestep(s.sigma_min)
    append_zero = True
    if sgm:
        timesteps = torch.linspace(start, end, steps + 1)[:-1]
    else:
        if math.isclose(float(s.sigma(end)), 0, abs_tol=0.00001):
            steps += 1
            append_zero = False
        timesteps = torch.linspace(start, end, steps)
    sigs = [float(s.sigma(ts)) for ts in timesteps]
    if append_zero:
        sigs += [0.0]
    return torch.FloatTensor(sigs)


def comfy_beta(s, steps, alpha=0.6, beta=0.6):
    import scipy.stats

    total_timesteps = len(s.sigmas) - 1
    ts = 1 - np.linspace(0, 1, steps, endpoint=False)
    ts = np.rint(scipy.stats.beta.ppf(ts, alpha, beta) * total_timesteps)
    sigs, last_t = [], -1
    for t in ts:
        if t != last_t:
            sigs += [float(s.sigmas[int(t)])]
        last_t = t
    sigs += [0.0]
    return torch.FloatTensor(sigs)


COMFY = [(ComfyDiscreteFlow(shift=1.0), FlowSampling()), (ComfyDiscreteFlow(shift=3.0), FlowSampling(shift=3.0)),
         (ComfyDiscreteFlow(shift=6.0, multiplier=1.0), FlowSampling(shift=6.0, multiplier=1)),  # AuraFlow's kind
         (ComfyFlux(shift=flux_mu(4096)), FlowSampling(mu=flux_mu(4096), timesteps=10000, multiplier=1)),
         (ComfyFlux(shift=flux_mu(1024)), FlowSampling(mu=flux_mu(1024), timesteps=10000, multiplier=1))]


@pytest.mark.parametrize("comfy, ours", COMFY, ids=["sd3-shift1", "sd3-shift3", "aura-shift6", "flux1024", "flux512"])
def test_flow_grids_and_schedules_equal_comfyui(comfy, ours):
    torch.testing.assert_close(ours.sigmas, comfy.sigmas.float(), rtol=1e-6, atol=1e-7)
    for n in (1, 3, 4, 7, 10, 20, 33, 50):
        torch.testing.assert_close(SCHEDULES["simple"](n, ours), comfy_simple(comfy, n), rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(SCHEDULES["normal"](n, ours), comfy_normal(comfy, n), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(SCHEDULES["sgm_uniform"](n, ours), comfy_normal(comfy, n, sgm=True), rtol=1e-5,
                                   atol=1e-6)
        torch.testing.assert_close(SCHEDULES["beta"](n, ours), comfy_beta(comfy, n), rtol=1e-6, atol=1e-7)


def test_flow_shift_formulas():
    t = torch.linspace(0.001, 1, 50, dtype=torch.float64)
    torch.testing.assert_close(FlowSampling(shift=3.0).shifted(t), 3 * t / (1 + 2 * t))
    torch.testing.assert_close(FlowSampling(mu=0.7).shifted(t), math.exp(0.7) / (math.exp(0.7) + 1 / t - 1))
    assert flux_mu(256) == pytest.approx(0.5) and flux_mu(4096) == pytest.approx(1.15)
    assert flux_mu(2176) == pytest.approx((0.5 + 1.15) / 2)


def test_config_schedule_on_a_flow_model():
    """config.schedule takes the model sampling: final_zero, the sigma_min rules and explicit options on flow."""
    ms = FlowSampling(shift=3.0)
    s = schedule(SamplerConfig(schedule="karras", steps=8), ms)
    assert len(s) == 9 and float(s[0]) == 1.0 and s[-1] == 0 and float(s[-2]) == pytest.approx(float(ms.sigma_min))
    dropped = schedule(SamplerConfig(schedule="simple", steps=8, final_zero=False), ms)
    assert len(dropped) == 9 and bool((dropped > 0).all())
    raised = schedule(SamplerConfig(schedule="karras", steps=8, sigma_min_rule="penultimate_steps_plus_1"), ms)
    assert float(raised[-2]) > float(s[-2]) and raised[-1] == 0


# --- samplers on the flow parameterisation, against diffusers' flow-matching loops ------------------------------

def toy_velocity(x, t, **_):
    t = t.float().reshape(-1, *[1] * (x.ndim - 1))
    return torch.tanh(x * (0.5 + t / 1000)) - 0.3 * torch.cos(t / 137.0) + 0.1 * x


def _noise(batch=2):
    return torch.stack([initial_noise((4, 8, 8), 100 + i) for i in range(batch)])


@pytest.mark.parametrize("config, tokens", CONFIGS, ids=["shift1", "shift3", "flux512", "flux1024"])
@pytest.mark.parametrize("steps", [4, 9, 25])
def test_euler_equals_diffusers_flow_match_euler_loop(config, tokens, steps):
    from diffusers import FlowMatchEulerDiscreteScheduler

    sched = _diffusers(FlowMatchEulerDiscreteScheduler, config, tokens, steps)
    noise = _noise()
    theirs = noise.clone()
    for t in sched.timesteps:
        theirs = sched.step(toy_velocity(theirs, t.expand(len(theirs))), t, theirs).prev_sample
    ms = flow_sampling_from_config(dict(sched.config), tokens)
    sigmas = SCHEDULES["diffusers_linspace"](steps, ms)
    ours = SAMPLERS["euler"](Denoiser(toy_velocity, ms), ms.initial_latent(noise, sigmas[0]), sigmas, disable=True)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shift", [1.0, 3.0])
@pytest.mark.parametrize("steps", [4, 9, 25])
def test_heun_equals_diffusers_flow_match_heun_loop(shift, steps):
    from diffusers import FlowMatchHeunDiscreteScheduler

    sched = FlowMatchHeunDiscreteScheduler(shift=shift)
    sched.set_timesteps(steps)
    noise = _noise()
    theirs = noise.clone()
    for t in sched.timesteps:
        theirs = sched.step(toy_velocity(theirs, t.expand(len(theirs))), t, theirs).prev_sample
    ms = FlowSampling(shift=shift)
    sigmas = SCHEDULES["normal"](steps, ms)  # FlowMatchHeun's set_timesteps: a constant shift's normal
    ours = SAMPLERS["heun"](Denoiser(toy_velocity, ms), ms.initial_latent(noise, sigmas[0]), sigmas, disable=True)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
