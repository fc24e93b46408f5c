"""Samplers whose step uses only the current state (ComfyUI's names): ddpm and lcm, which draw fresh noise each
step, and heunpp2, which looks two sigmas ahead. Each uses only the schedule's sigmas (rounded in paper mode). On a
flow model (`samplers.flow_sampling`) ddpm samples the flow's own posterior and lcm re-noises with its noise_scaling;
heunpp2's churn is refused there, as every churn is."""
import torch
from tqdm.auto import trange

from .registry import sampler
from .samplers import _churn, _churn_plan, _need, _report, _setup, _where, flow_sampling, to_d
from .wrappers import append_dims


@sampler("ddpm", group="adds noise", note="DDPM ancestral (Ho et al.): posterior noise each step", calls_per_step=1,
         options=("s_noise",), adds_noise=True, flow="rf", after="dpmpp_3m_sde")
@torch.no_grad()
def sample_ddpm(model, x, sigmas, extra_args=None, callback=None, disable=None, s_noise=1.0, noise_sampler=None):
    """DDPM ancestral sampling (Ho et al. 2020, Algorithm 2, posterior variance beta-tilde), on any schedule: with
    alpha_bar = 1 / (1 + sigma^2), the step samples q(x_s | x_t, x_0 = D) (ComfyUI's ddpm; diffusers' DDPMScheduler,
    variance fixed_small: equal, tested). On a flow model the same posterior of the flow's own noising
    (_ddpm_flow_coefficients); ComfyUI's ddpm has no flow branch."""
    flow = flow_sampling(model)
    extra_args, sigmas = _setup(model, x, sigmas, extra_args)
    if flow is not None:
        return _ddpm_flow(model, x, sigmas, extra_args, callback, disable, s_noise, noise_sampler)
    sigma, sigma_next = sigmas[:-1], sigmas[1:]
    # In Karras coordinates x = x_t / sqrt(alpha_bar): every coefficient depends only on the schedule.
    a_t, a_s = 1 / (1 + sigma ** 2), 1 / (1 + sigma_next ** 2)
    alpha = a_t / a_s
    scale = (1 + sigma_next ** 2).sqrt()
    dims = lambda v: append_dims(v, x.ndim + 1)  # noqa: E731
    c_x = dims(scale / (alpha.sqrt() * (1 + sigma ** 2).sqrt()))
    c_eps = dims(scale * (1 - alpha) / (alpha.sqrt() * (1 - a_t).sqrt()))
    c_noise = dims(torch.where(sigma_next > 0, scale * ((1 - alpha) * (1 - a_s) / (1 - a_t)).sqrt(),
                               torch.zeros_like(sigma)) * s_noise)
    noisy = (sigma_next > 0).any(1).tolist()
    host_sigma, host_next = sigma.cpu(), sigma_next.cpu()  # the noise sampler's keys, read once
    for i in trange(len(sigmas) - 1, disable=disable):
        denoised = model(x, sigma[i], **extra_args)
        _report(callback, x, i, sigma[i], sigma[i], denoised)
        x_new = c_x[i] * x - c_eps[i] * to_d(x, sigma[i], denoised)
        if noisy[i]:
            x_new = x_new + _need(noise_sampler)(host_sigma[i], host_next[i]) * c_noise[i]
        x = x_new
    return x


def ddpm_flow_coefficients(sigma, sigma_next):
    """(c_x, c_denoised, c_noise) of DDPM's posterior q(x_next | x, x0 = D) on a flow, x = alpha x0 + sigma noise with
    alpha = 1 - sigma (Kingma et al. 2021, eq. 32-33, for any alpha and sigma): with a = alpha / alpha_next and
    s2 = sigma^2 - a^2 sigma_next^2 (the forward step's variance, >= 0 since sigma / alpha grows with sigma), the mean
    is (a sigma_next^2 / sigma^2) x + (alpha_next s2 / sigma^2) D and the deviation sqrt(s2) sigma_next / sigma. At
    sigma = 1 it is alpha_next D + sigma_next z; into sigma = 0, D. With alpha = 1 it is the eps model's ddpm."""
    alpha, alpha_next = 1 - sigma, 1 - sigma_next
    a = alpha / alpha_next
    s2 = (sigma ** 2 - a ** 2 * sigma_next ** 2).clamp(min=0)
    return a * sigma_next ** 2 / sigma ** 2, alpha_next * s2 / sigma ** 2, s2.sqrt() * sigma_next / sigma


def _ddpm_flow(model, x, sigmas, extra_args, callback, disable, s_noise, noise_sampler):
    sigma, sigma_next = sigmas[:-1], sigmas[1:]
    dims = lambda v: append_dims(v, x.ndim + 1)  # noqa: E731
    c_x, c_d, c_noise = ddpm_flow_coefficients(sigma, sigma_next)
    c_x, c_d, c_noise = dims(c_x), dims(c_d), dims(c_noise * s_noise)
    noisy = (sigma_next > 0).any(1).tolist()
    host_sigma, host_next = sigma.cpu(), sigma_next.cpu()  # the noise sampler's keys, read once
    for i in trange(len(sigmas) - 1, disable=disable):
        denoised = model(x, sigma[i], **extra_args)
        _report(callback, x, i, sigma[i], sigma[i], denoised)
        x = c_x[i] * x + c_d[i] * denoised
        if noisy[i]:
            x = x + _need(noise_sampler)(host_sigma[i], host_next[i]) * c_noise[i]
    return x


@sampler("lcm", group="adds noise", note="LCM: denoise, then noise afresh to the next sigma", calls_per_step=1,
         options=("s_noise",), adds_noise=True, flow="rf")
@torch.no_grad()
def sample_lcm(model, x, sigmas, extra_args=None, callback=None, disable=None, s_noise=1.0, noise_sampler=None):
    """Latent consistency sampling (Luo et al. 2023, multistep: ComfyUI's lcm, diffusers' LCMScheduler): jump to
    the denoised image, then noise it afresh to the next sigma. The consistency boundary condition (c_skip, c_out)
    belongs to an LCM model's wrapper, not to the sampler. On a flow model the fresh noise goes in as the flow's
    noise_scaling has it (ComfyUI's lcm): x = (1 - sigma_next) D + sigma_next s_noise z."""
    flow = flow_sampling(model)
    extra_args, sigmas = _setup(model, x, sigmas, extra_args)
    sigma, sigma_next = sigmas[:-1], sigmas[1:]
    c_noise = append_dims(sigma_next * s_noise, x.ndim + 1)
    if flow is not None:
        c_noise = append_dims(sigma_next, x.ndim + 1)  # s_noise scales the draw itself (ComfyUI's order)
    noisy = (sigma_next > 0).any(1).tolist()
    host_sigma, host_next = sigma.cpu(), sigma_next.cpu()  # the noise sampler's keys, read once
    for i in trange(len(sigmas) - 1, disable=disable):
        denoised = model(x, sigma[i], **extra_args)
        _report(callback, x, i, sigma[i], sigma[i], denoised)
        x = denoised
        if noisy[i]:
            noise = _need(noise_sampler)(host_sigma[i], host_next[i])
            x = x + noise * c_noise[i] if flow is None else flow.noise_scaling(c_noise[i], noise * s_noise, denoised)
    return x


@sampler("heunpp2", group="single-step", note="Heun++: 3 calls a step, yet first order on an exact ODE",
         calls_per_step=3, tail_calls=(2, 1), options=("s_churn", "s_tmin", "s_tmax", "s_noise"))
@torch.no_grad()
def sample_heunpp2(model, x, sigmas, extra_args=None, callback=None, disable=None, s_churn=0.0, s_tmin=0.0,
                   s_tmax=float("inf"), s_noise=1.0, noise_sampler=None):
    """Heun++ (Carzit/sd-webui-samplers-scheduler, ComfyUI's heunpp2): Euler predictions to the next two sigmas,
    slopes blended with weights sigma_next / (3 sigma_0) and sigma_next2 / (3 sigma_0); Heun-like (weight
    sigma_next / (2 sigma_0)) on the step before the last, Euler on the last. Churn as Karras Alg. 2."""
    extra_args, sigmas = _setup(model, x, sigmas, extra_args)
    churn = _churn_plan(model, sigmas, s_churn, s_tmin, s_tmax, s_noise, noise_sampler)
    n = len(sigmas) - 1
    s_end, s_0 = sigmas[-1], sigmas[0]
    dims = lambda v: append_dims(v, x.ndim)  # noqa: E731
    # Which stage each item takes at each step depends only on the schedule: read once, before the loop.
    sigma_2s = torch.cat([sigmas[2:], s_end[None]])
    euler_steps = sigmas[1:] == s_end
    plus_steps = ~euler_steps & (sigma_2s != s_end)
    all_euler, any_plus = euler_steps.all(1).tolist(), plus_steps.any(1).tolist()
    for i in trange(n, disable=disable):
        x, sigma_hat = _churn(x, sigmas[i], i, churn)
        denoised = model(x, sigma_hat, **extra_args)
        d = to_d(x, sigma_hat, denoised)
        _report(callback, x, i, sigmas[i], sigma_hat, denoised)
        sigma_1 = sigmas[i + 1]
        dt = dims(sigma_1 - sigma_hat)
        x_euler = x + d * dt
        euler = euler_steps[i]
        if all_euler[i]:
            x = x_euler
            continue
        # Items on their last step keep Euler; the others evaluate at a safe stand-in where they are done.
        safe_1 = torch.where(euler, sigma_hat, sigma_1)
        d_2 = to_d(x_euler, safe_1, model(x_euler, safe_1, **extra_args))
        w2 = sigma_1 / (2 * s_0)
        x_heun = x + (d * dims(1 - w2) + d_2 * dims(w2)) * dt
        sigma_2, plus = sigma_2s[i], plus_steps[i]
        if any_plus[i]:
            safe_2 = torch.where(plus, sigma_2, safe_1)
            x_3 = x_euler + d_2 * dims(safe_2 - safe_1)
            d_3 = to_d(x_3, safe_2, model(x_3, safe_2, **extra_args))
            w2, w3 = sigma_1 / (3 * s_0), safe_2 / (3 * s_0)
            x_plus = x + (d * dims(1 - w2 - w3) + d_2 * dims(w2) + d_3 * dims(w3)) * dt
            x_heun = _where(plus, x_plus, x_heun)
        x = _where(euler, x_euler, x_heun)
    return x
