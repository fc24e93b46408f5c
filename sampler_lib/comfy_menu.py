"""The rest of ComfyUI's KSampler menu that is not CFG++ nor a half-log-SNR solver (sde_solvers.py): res_multistep's
ancestral form, the gradient-estimation sampler, dpmpp_2m_sde with its Heun correction as a menu name, and the `_gpu`
names. ComfyUI's `_gpu` samplers differ from their namesakes only in drawing the Brownian tree on the GPU; this
library's noise sampler is one seeded path whatever the device, so they are aliases. Checked against a scalar
transcription of ComfyUI's loops (tests/test_comfy_menu.py)."""
import math

import torch
from tqdm.auto import trange

from . import more_samplers  # noqa: F401  (registers dpmpp_sde and dpmpp_3m_sde, two of the _gpu names' targets)
from .registry import alias, sampler
from .samplers import _report, _setup, _where, flow_sampling, sample_dpmpp_2m_sde, to_d
from .sde_solvers import moving_history, run_planned, schedule_columns
from .wrappers import append_dims

ANCESTRAL_ON_FLOW = ("res_multistep_ancestral adds k-diffusion's eps-form ancestral noise (ComfyUI's does so on a flow "
                     "model too, which leaves x off the flow's (1 - sigma) x0 + sigma noise); on a flow model choose "
                     "euler_ancestral or dpmpp_2m_sde (rectified-flow noise), or res_multistep")


def _ancestral_step(sigma, sigma_next, eta):
    """k-diffusion's get_ancestral_step on host floats: (sigma_down, sigma_up)."""
    if not eta:
        return sigma_next, 0.0
    sigma_up = min(sigma_next, eta * math.sqrt(sigma_next ** 2 * (sigma ** 2 - sigma_next ** 2) / sigma ** 2))
    return math.sqrt(sigma_next ** 2 - sigma_up ** 2), sigma_up


def _res_ancestral_column(col, eta, s_noise):
    """ComfyUI's res_multistep (eta > 0: ancestral) on one column: per step (a, {step: weight}, noise scale) of x' =
    a x + sum weight D + scale z. An Euler step to sigma_down on the first moving step or where sigma_down is 0; else
    RES's second-order step (Zhang et al. 2023) to sigma_down with c2 = (t_prev - t_old) / h, t = -log sigma, t_prev
    the previous step's sigma and t_old its sigma_down, as ComfyUI computes it; then noise of size sigma_up."""
    t = lambda s: -math.log(s)  # noqa: E731
    steps, downs = [], {}
    for i, moving in enumerate(moving_history(col)):
        if moving is None:
            steps.append((1.0, {}, 0.0))
            continue
        sigma, sigma_next = float(col[i]), float(col[i + 1])
        sigma_down, sigma_up = _ancestral_step(sigma, sigma_next, eta)
        downs[i] = sigma_down
        earlier = moving[1]
        if sigma_down == 0 or not earlier:
            ratio = sigma_down / sigma
            a, w = ratio, {i: 1 - ratio}
        else:
            j = earlier[0]
            h = t(sigma_down) - t(sigma)
            c2 = (t(col[j]) - t(downs[j])) / h
            phi_1 = math.expm1(-h) / -h
            phi_2 = (phi_1 - 1) / -h
            a, w = math.exp(-h), {i: h * (phi_1 - phi_2 / c2), j: h * phi_2 / c2}
        steps.append((a, w, sigma_up * s_noise if sigma_next > 0 else 0.0))
    return steps


@sampler("res_multistep_ancestral", group="adds noise", note="RES multistep + fresh noise each step (eta)",
         calls_per_step=1, options=("eta", "s_noise"), adds_noise=True, flow="refused: " + ANCESTRAL_ON_FLOW)
@torch.no_grad()
def sample_res_multistep_ancestral(model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1.0,
                                   s_noise=1.0, noise_sampler=None):
    """RES multistep, ancestral (ComfyUI's res_multistep_ancestral): RES's second-order step to the ancestral
    sigma_down, then fresh noise of size sigma_up; eta 0 is res_multistep. A zero-length step (paper mode) changes
    nothing and is not history. Refused on a flow model (ANCESTRAL_ON_FLOW) unless eta is 0."""
    if flow_sampling(model) is not None and eta:
        raise ValueError(ANCESTRAL_ON_FLOW)
    extra_args, sigmas = _setup(model, x, sigmas, extra_args)
    columns, inverse = schedule_columns(sigmas)
    plans = [_res_ancestral_column(col, eta, s_noise) for col in columns]
    return run_planned(model, x, sigmas, plans, inverse, extra_args, callback, disable, noise_sampler)


GE_GAMMA = 2.0  # ComfyUI's KSampler default


@sampler("gradient_estimation", group="multistep", note="Euler + a gradient estimate from the last step (gamma 2)",
         calls_per_step=1, after="res_multistep")
@torch.no_grad()
def sample_gradient_estimation(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None):
    """Gradient estimation (Permenter & Yuan 2024, openreview o2ND9v0CeK; ComfyUI's gradient_estimation, ge_gamma 2):
    an Euler step plus (gamma - 1)(d - d_prev) dt from the second step on; the step into sigma = 0 returns the
    denoised image. Deterministic, so noise_sampler is unused."""
    extra_args, sigmas = _setup(model, x, sigmas, extra_args)
    last = sigmas[1:] == 0
    dt = append_dims(sigmas[1:] - sigmas[:-1], x.ndim + 1)
    all_last, any_last = last.all(1).tolist(), last.any(1).tolist()  # read once: no host sync inside the loop
    old_d = None
    for i in trange(len(sigmas) - 1, disable=disable):
        denoised = model(x, sigmas[i], **extra_args)
        d = to_d(x, sigmas[i], denoised)
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
        if all_last[i]:
            x = denoised
        else:
            x_new = x + d * dt[i]
            if old_d is not None:
                x_new = x_new + (GE_GAMMA - 1) * (d - old_d) * dt[i]
            x = _where(last[i], denoised, x_new) if any_last[i] else x_new
        old_d = d
    return x


@sampler("dpmpp_2m_sde_heun", group="adds noise", note="DPM-Solver++(2M) SDE, Heun's correction (eta)",
         calls_per_step=1, options=("eta", "s_noise"), adds_noise=True, flow="rf", after="dpmpp_2m_sde")
@torch.no_grad()
def sample_dpmpp_2m_sde_heun(model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1.0, s_noise=1.0,
                             noise_sampler=None):
    """DPM-Solver++(2M) SDE with the Heun correction (ComfyUI's dpmpp_2m_sde_heun: dpmpp_2m_sde, solver_type heun)."""
    return sample_dpmpp_2m_sde(model, x, sigmas, extra_args=extra_args, callback=callback, disable=disable, eta=eta,
                               s_noise=s_noise, noise_sampler=noise_sampler, solver_type="heun")


_GPU = "ComfyUI's {} with its Brownian noise drawn on the GPU: here the same seeded path on any device"
for _name in ("dpmpp_sde", "dpmpp_2m_sde", "dpmpp_2m_sde_heun", "dpmpp_3m_sde"):
    alias(_name + "_gpu", _name, note=_GPU.format(_name))
