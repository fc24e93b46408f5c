"""More of the samplers practitioners pick (k-diffusion's and ComfyUI's names), with this library's contract:
per-item sigmas of shape (N+1, B), every discretization mode (a sigma that reaches the network is rounded in
`paper` mode), the seeded Brownian noise for stochastic ones, the callback. Each matches k-diffusion 0.1.1 on the
same sigmas and noise (tests/test_samplers.py). On a flow model (`samplers.flow_sampling`) the ones that add noise take
ComfyUI's rectified-flow formulas (dpm_2_ancestral_RF, dpmpp_2s_ancestral_RF; dpmpp_sde and dpmpp_3m_sde in
half-log-SNR with alpha = 1 - sigma), checked against a transcription of its loops (tests/test_flow_samplers.py)."""
import numpy as np
import torch
from tqdm.auto import trange

from .registry import sampler
from .samplers import (
    _need,
    _report,
    _setup,
    _t,
    _where,
    flow_sampling,
    get_ancestral_step,
    get_ancestral_step_rf,
    half_log_snr,
    offset_first_sigma,
    round_sigmas,
    sample_euler,
    to_d,
)
from .wrappers import append_dims


def _ancestral_plan(sigmas, eta):
    """Schedule-only quantities of an ancestral step, for all steps at once: sigma_down, sigma_up, which items take
    an Euler step (sigma_down = 0), and a safe sigma_down (sigma itself where it is 0) for the second stage."""
    sigma, sigma_next = sigmas[:-1], sigmas[1:]
    sigma_down, sigma_up = get_ancestral_step(sigma, sigma_next, eta=eta)
    euler = sigma_down == 0
    safe_down = torch.where(euler, sigma, sigma_down)
    return sigma, sigma_next, sigma_down, sigma_up, euler, safe_down, euler.all(1).tolist(), euler.any(1).tolist()


@sampler("dpm_2_ancestral", group="adds noise", note="DPM-Solver-2 + fresh noise, 2 calls a step",
         calls_per_step=2, final_calls=1, options=("eta", "s_noise"), adds_noise=True, flow="rf",
         after="euler_ancestral")
@torch.no_grad()
def sample_dpm_2_ancestral(model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1.0, s_noise=1.0,
                           noise_sampler=None):
    """Ancestral sampling with DPM-Solver-2 steps to sigma_down (Lu et al. 2022; k-diffusion's dpm_2_ancestral):
    a midpoint in log sigma, then fresh noise of size sigma_up; an Euler step where sigma_down is 0. On a flow model
    ComfyUI's dpm_2_ancestral_RF: the same steps to the flow's sigma_down, then its re-noising."""
    if flow_sampling(model) is not None:
        return _dpm_2_ancestral_rf(model, x, sigmas, extra_args, callback, disable, eta, s_noise, noise_sampler)
    extra_args, sigmas = _setup(model, x, sigmas, extra_args)
    sigma, sigma_next, sigma_down, sigma_up, euler, safe_down, all_euler, any_euler = _ancestral_plan(sigmas, eta)
    # The midpoint is a network input, so paper mode keeps it on the training grid.
    sigma_mid = torch.stack([round_sigmas(model, row) for row in sigma.log().lerp(safe_down.log(), 0.5).exp()])
    dims = lambda v: append_dims(v, x.ndim + 1)  # noqa: E731
    dt_down, dt_mid, noise_scale = dims(sigma_down - sigma), dims(sigma_mid - sigma), dims(sigma_up * s_noise)
    host_sigma, host_next = sigma.cpu(), sigma_next.cpu()  # the noise sampler's keys, read once
    for i in trange(len(sigmas) - 1, disable=disable):
        denoised = model(x, sigma[i], **extra_args)
        _report(callback, x, i, sigma[i], sigma[i], denoised)
        d = to_d(x, sigma[i], denoised)
        if all_euler[i]:
            x = x + d * dt_down[i]
            continue
        x_2 = x + d * dt_mid[i]
        d_2 = to_d(x_2, sigma_mid[i], model(x_2, sigma_mid[i], **extra_args))
        x_new = x + d_2 * dt_down[i] + _need(noise_sampler)(host_sigma[i], host_next[i]) * noise_scale[i]
        x = _where(euler[i], x + d * dt_down[i], x_new) if any_euler[i] else x_new
    return x


def _rf_plan(sigmas, eta):
    """The flow's ancestral split for all steps at once (get_ancestral_step_rf): sigma, sigma_next, sigma_down, the
    re-noising's alpha ratio and size, which items take an Euler step (sigma_down = 0), a safe sigma_down, and the
    host-read flags all_euler, any_euler, any_noisy (eta 0: never noisy)."""
    sigma, sigma_next = sigmas[:-1], sigmas[1:]
    sigma_down, alpha_ratio, renoise = get_ancestral_step_rf(sigma, sigma_next, eta)
    euler = sigma_down == 0
    safe_down = torch.where(euler, sigma, sigma_down)
    noisy = ((sigma_next > 0).any(1) & bool(eta)).tolist()
    return (sigma, sigma_next, sigma_down, alpha_ratio, renoise, euler, safe_down, euler.all(1).tolist(),
            euler.any(1).tolist(), noisy)


def _dpm_2_ancestral_rf(model, x, sigmas, extra_args, callback, disable, eta, s_noise, noise_sampler):
    """ComfyUI's sample_dpm_2_ancestral_RF: DPM-Solver-2 in Karras form (log-sigma midpoint) to the flow's sigma_down,
    then x <- (alpha_next / alpha_down) x + renoise z; an Euler step where sigma_down is 0 (into sigma = 0)."""
    extra_args, sigmas = _setup(model, x, sigmas, extra_args)
    (sigma, sigma_next, sigma_down, alpha_ratio, renoise, euler, safe_down, all_euler, any_euler,
     noisy) = _rf_plan(sigmas, eta)
    sigma_mid = torch.stack([round_sigmas(model, row) for row in sigma.log().lerp(safe_down.log(), 0.5).exp()])
    dims = lambda v: append_dims(v, x.ndim + 1)  # noqa: E731
    dt_down, dt_mid = dims(sigma_down - sigma), dims(sigma_mid - sigma)
    c_alpha, c_noise = dims(alpha_ratio), dims(renoise * s_noise)
    host_sigma, host_next = sigma.cpu(), sigma_next.cpu()  # the noise sampler's keys, read once
    for i in trange(len(sigmas) - 1, disable=disable):
        denoised = model(x, sigma[i], **extra_args)
        _report(callback, x, i, sigma[i], sigma[i], denoised)
        d = to_d(x, sigma[i], denoised)
        if all_euler[i]:
            x = x + d * dt_down[i]
        else:
            x_2 = x + d * dt_mid[i]
            d_2 = to_d(x_2, sigma_mid[i], model(x_2, sigma_mid[i], **extra_args))
            x_new = x + d_2 * dt_down[i]
            x = _where(euler[i], x + d * dt_down[i], x_new) if any_euler[i] else x_new
        if noisy[i]:  # items stepping into 0: alpha ratio 1, renoise 0
            x = c_alpha[i] * x + _need(noise_sampler)(host_sigma[i], host_next[i]) * c_noise[i]
    return x


@sampler("dpmpp_2s_ancestral", group="adds noise", note="DPM-Solver++(2S) + fresh noise, 2 calls a step",
         calls_per_step=2, final_calls=1, options=("eta", "s_noise"), adds_noise=True, flow="rf")
@torch.no_grad()
def sample_dpmpp_2s_ancestral(model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1.0, s_noise=1.0,
                              noise_sampler=None):
    """Ancestral sampling with DPM-Solver++(2S) steps (Lu et al. 2022, single-step second order at r = 1/2) to
    sigma_down, then fresh noise of size sigma_up; an Euler step where sigma_down is 0 (k-diffusion's). On a flow
    model ComfyUI's dpmpp_2s_ancestral_RF."""
    if flow_sampling(model) is not None:
        return _dpmpp_2s_ancestral_rf(model, x, sigmas, extra_args, callback, disable, eta, s_noise, noise_sampler)
    extra_args, sigmas = _setup(model, x, sigmas, extra_args)
    sigma, sigma_next, sigma_down, sigma_up, euler, safe_down, all_euler, any_euler = _ancestral_plan(sigmas, eta)
    t, h = _t(sigma), _t(safe_down) - _t(sigma)
    # The intermediate sigma is a network input: on the training grid in paper mode.
    sigma_s = torch.stack([round_sigmas(model, row) for row in (t + h / 2).neg().exp()])
    dims = lambda v: append_dims(v, x.ndim + 1)  # noqa: E731
    c_x2, c_d2 = dims(sigma_s / sigma), dims((t - _t(sigma_s)).expm1())
    c_x, c_d = dims(safe_down / sigma), dims((-h).expm1())
    dt_down = dims(sigma_down - sigma)
    noisy = sigma_next > 0
    any_noisy = noisy.any(1).tolist()
    noise_scale = dims(torch.where(noisy, sigma_up, torch.zeros_like(sigma_up)) * s_noise)
    host_sigma, host_next = sigma.cpu(), sigma_next.cpu()  # the noise sampler's keys, read once
    for i in trange(len(sigmas) - 1, disable=disable):
        denoised = model(x, sigma[i], **extra_args)
        _report(callback, x, i, sigma[i], sigma[i], denoised)
        if all_euler[i]:
            x_new = x + to_d(x, sigma[i], denoised) * dt_down[i]
        else:
            x_2 = c_x2[i] * x - c_d2[i] * denoised
            x_new = c_x[i] * x - c_d[i] * model(x_2, sigma_s[i], **extra_args)
            if any_euler[i]:
                x_new = _where(euler[i], x + to_d(x, sigma[i], denoised) * dt_down[i], x_new)
        if any_noisy[i]:
            x_new = x_new + _need(noise_sampler)(host_sigma[i], host_next[i]) * noise_scale[i]
        x = x_new
    return x


def _dpmpp_2s_ancestral_rf(model, x, sigmas, extra_args, callback, disable, eta, s_noise, noise_sampler):
    """ComfyUI's sample_dpmpp_2s_ancestral_RF: DPM-Solver++(2S) to the flow's sigma_down with its stage at the midpoint
    in lambda = log((1 - sigma) / sigma) (0.9999 from sigma = 1, where lambda is -inf), each stage
    x <- (s / sigma) x + (1 - s / sigma) D, then the flow's re-noising; an Euler step where sigma_down is 0."""
    extra_args, sigmas = _setup(model, x, sigmas, extra_args)
    (sigma, sigma_next, sigma_down, alpha_ratio, renoise, euler, safe_down, all_euler, any_euler,
     noisy) = _rf_plan(sigmas, eta)
    lambda_fn = lambda s: ((1 - s) / s).log()  # noqa: E731  (ComfyUI's expressions, for its rounding)
    t_i = lambda_fn(sigma)
    s_mid = t_i + (lambda_fn(safe_down) - t_i) / 2
    sigma_s = torch.where(sigma == 1.0, torch.full_like(sigma, 0.9999), (s_mid.exp() + 1) ** -1)
    # The stage's sigma is a network input: on the training grid in paper mode.
    sigma_s = torch.stack([round_sigmas(model, row) for row in sigma_s])
    dims = lambda v: append_dims(v, x.ndim + 1)  # noqa: E731
    ratio_s, ratio_down = sigma_s / sigma, sigma_down / sigma
    c_u, c_ud, c_x, c_xd = dims(ratio_s), dims(1 - ratio_s), dims(ratio_down), dims(1 - ratio_down)
    dt_down = dims(sigma_down - sigma)
    c_alpha, c_noise = dims(alpha_ratio), dims(renoise * s_noise)
    host_sigma, host_next = sigma.cpu(), sigma_next.cpu()  # the noise sampler's keys, read once
    for i in trange(len(sigmas) - 1, disable=disable):
        denoised = model(x, sigma[i], **extra_args)
        _report(callback, x, i, sigma[i], sigma[i], denoised)
        if all_euler[i]:
            x = x + to_d(x, sigma[i], denoised) * dt_down[i]
        else:
            u = c_u[i] * x + c_ud[i] * denoised
            x_new = c_x[i] * x + c_xd[i] * model(u, sigma_s[i], **extra_args)
            x = _where(euler[i], x + to_d(x, sigma[i], denoised) * dt_down[i], x_new) if any_euler[i] else x_new
        if noisy[i]:  # items stepping into 0: alpha ratio 1, renoise 0
            x = c_alpha[i] * x + _need(noise_sampler)(host_sigma[i], host_next[i]) * c_noise[i]
    return x


@sampler("dpmpp_sde", group="adds noise", note="DPM-Solver++ SDE: two noisy half-steps, 2 calls a step",
         calls_per_step=2, final_calls=1, options=("eta", "s_noise", "r"), adds_noise=True, flow="rf")
@torch.no_grad()
def sample_dpmpp_sde(model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1.0, s_noise=1.0,
                     noise_sampler=None, r=0.5):
    """DPM-Solver++ SDE (k-diffusion's dpmpp_sde): two ancestral half-steps per step — to sigma_s = sigma^(1-r)
    sigma_next^r with fresh noise, a second network call there, then to sigma_next with the blended denoised and
    fresh noise; an Euler step into sigma = 0. sigma_s is a network input: on the training grid in paper mode. On a
    flow model ComfyUI's, in half-log-SNR (_dpmpp_sde_rf)."""
    flow = flow_sampling(model)
    if flow is not None:
        return _dpmpp_sde_rf(model, flow, x, sigmas, extra_args, callback, disable, eta, s_noise, noise_sampler, r)
    extra_args, sigmas = _setup(model, x, sigmas, extra_args)
    sigma, sigma_next = sigmas[:-1], sigmas[1:]
    last = sigma_next == 0
    safe_next = torch.where(last, sigma, sigma_next)
    t, t_next = _t(sigma), _t(safe_next)
    sigma_s = torch.stack([round_sigmas(model, row) for row in (t + (t_next - t) * r).neg().exp()])
    fac = 1 / (2 * r)
    down_1, up_1 = get_ancestral_step(sigma, sigma_s, eta)
    down_2, up_2 = get_ancestral_step(sigma, safe_next, eta)
    dims = lambda v: append_dims(v, x.ndim + 1)  # noqa: E731
    c1_x, c1_d = dims(down_1 / sigma), dims((t - _t(down_1)).expm1())
    c2_x, c2_d = dims(down_2 / sigma), dims((t - _t(down_2)).expm1())
    n1, n2 = dims(up_1 * s_noise), dims(up_2 * s_noise)
    dt = dims(sigma_next - sigma)
    all_last, any_last = last.all(1).tolist(), last.any(1).tolist()
    host_sigma, host_s, host_next = sigma.cpu(), sigma_s.cpu(), safe_next.cpu()  # the noise sampler's keys
    for i in trange(len(sigmas) - 1, disable=disable):
        denoised = model(x, sigma[i], **extra_args)
        _report(callback, x, i, sigma[i], sigma[i], denoised)
        x_euler = x + to_d(x, sigma[i], denoised) * dt[i] if any_last[i] else None
        if all_last[i]:
            x = x_euler
            continue
        noise = _need(noise_sampler)
        x_2 = c1_x[i] * x - c1_d[i] * denoised + noise(host_sigma[i], host_s[i]) * n1[i]
        denoised_2 = model(x_2, sigma_s[i], **extra_args)
        denoised_d = (1 - fac) * denoised + fac * denoised_2
        x_new = c2_x[i] * x - c2_d[i] * denoised_d + noise(host_sigma[i], host_next[i]) * n2[i]
        x = _where(last[i], x_euler, x_new) if any_last[i] else x_new
    return x


def _dpmpp_sde_rf(model, flow, x, sigmas, extra_args, callback, disable, eta, s_noise, noise_sampler, r):
    """ComfyUI's sample_dpmpp_sde on a CONST model: lambda = log((1 - sigma) / sigma), alpha = sigma e^lambda (1 -
    sigma); each half-step x <- (alpha_1 / alpha) e^-h' x - alpha_1 expm1(-h') D + alpha_1 su z, with sd, su the eps
    ancestral split of e^-lambda (the flow's sigma / alpha) and h' = -log sd - lambda; a first sigma of 1 moved to
    1 - 1e-4 of the way; the step into sigma = 0 returns D."""
    extra_args, sigmas = _setup(model, x, sigmas, extra_args)
    sigmas = offset_first_sigma(sigmas, flow)
    sigma, sigma_next = sigmas[:-1], sigmas[1:]
    last = sigma_next == 0
    safe_next = torch.where(last, sigma, sigma_next)
    lambda_s, lambda_t = half_log_snr(sigma, flow), half_log_snr(safe_next, flow)
    lambda_1 = lambda_s + r * (lambda_t - lambda_s)
    raw_1 = lambda_1.neg().sigmoid()
    sigma_1 = torch.stack([round_sigmas(model, row) for row in raw_1])  # a network input: on the grid in paper mode
    lambda_1 = torch.where(sigma_1 == raw_1, lambda_1, half_log_snr(sigma_1, flow))
    alpha_s, alpha_1, alpha_t = sigma * lambda_s.exp(), sigma_1 * lambda_1.exp(), safe_next * lambda_t.exp()
    fac = 1 / (2 * r)
    dims = lambda v: append_dims(v, x.ndim + 1)  # noqa: E731

    def half_step(alpha_to, lambda_to):
        sd, su = get_ancestral_step(lambda_s.neg().exp(), lambda_to.neg().exp(), eta)
        h = sd.log().neg() - lambda_s
        return dims(alpha_to / alpha_s * (-h).exp()), dims(alpha_to * (-h).expm1()), dims(alpha_to * su * s_noise)

    (c1_x, c1_d, n1), (c2_x, c2_d, n2) = half_step(alpha_1, lambda_1), half_step(alpha_t, lambda_t)
    noisy = bool(eta) and s_noise > 0
    all_last, any_last = last.all(1).tolist(), last.any(1).tolist()
    host_sigma, host_1, host_next = sigma.cpu(), sigma_1.cpu(), safe_next.cpu()  # the noise sampler's keys
    for i in trange(len(sigmas) - 1, disable=disable):
        denoised = model(x, sigma[i], **extra_args)
        _report(callback, x, i, sigma[i], sigma[i], denoised)
        if all_last[i]:
            x = denoised
            continue
        x_2 = c1_x[i] * x - c1_d[i] * denoised
        if noisy:
            x_2 = x_2 + _need(noise_sampler)(host_sigma[i], host_1[i]) * n1[i]
        denoised_2 = model(x_2, sigma_1[i], **extra_args)
        x_new = c2_x[i] * x - c2_d[i] * ((1 - fac) * denoised + fac * denoised_2)
        if noisy:
            x_new = x_new + _need(noise_sampler)(host_sigma[i], host_next[i]) * n2[i]
        x = _where(last[i], denoised, x_new) if any_last[i] else x_new
    return x


@sampler("dpmpp_3m_sde", group="adds noise", note="DPM-Solver++(3M) SDE (eta)", calls_per_step=1,
         options=("eta", "s_noise"), adds_noise=True, flow="rf", after="dpmpp_2m_sde")
@torch.no_grad()
def sample_dpmpp_3m_sde(model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1.0, s_noise=1.0,
                        noise_sampler=None):
    """DPM-Solver++(3M) SDE (k-diffusion's): exponential integrator with up to two past denoised outputs, noise of
    size sigma_next sqrt(1 - exp(-2 h eta)); the step into sigma = 0 returns the denoised image. A zero-length step
    (two equal rounded sigmas in paper mode) changes nothing and is not used as history. On a flow model ComfyUI's:
    h in lambda = log((1 - sigma) / sigma), x scaled by (sigma_next / sigma) e^(-h eta), the denoised terms times
    alpha_next = 1 - sigma_next, a first sigma of 1 moved to 1 - 1e-4 of the way."""
    flow = flow_sampling(model)
    extra_args, sigmas = _setup(model, x, sigmas, extra_args)
    sigmas = offset_first_sigma(sigmas, flow)
    sigma, sigma_next = sigmas[:-1], sigmas[1:]
    # Every coefficient depends only on the schedule: computed for all steps at once.
    last = sigma_next == 0
    safe_next = torch.where(last, sigma, sigma_next)
    lambda_next = half_log_snr(safe_next, flow)
    h = lambda_next - half_log_snr(sigma, flow)
    moving = h > 0
    h = torch.where(moving, h, torch.zeros_like(h))
    h_safe = torch.where(moving, h, torch.ones_like(h))
    h_1, h_2 = torch.roll(h, 1, 0), torch.roll(h, 2, 0)
    h_1[:1], h_2[:2] = 0, 0
    third = moving & (h_1 > 0) & (h_2 > 0)
    second = moving & (h_1 > 0) & ~third
    h_eta = h_safe * (eta + 1)
    phi_2 = (-h_eta).expm1() / h_eta + 1
    phi_3 = phi_2 / h_eta - 0.5
    r0 = torch.where(third | second, h_1, h_safe) / h_safe
    r1 = torch.where(third, h_2, h_safe) / h_safe
    dims = lambda v: append_dims(v, x.ndim + 1)  # noqa: E731
    zero = torch.zeros_like(h)
    c_x, c_d = (-h_eta).exp(), (-h_eta).expm1().neg()
    c_d1, c_d2 = torch.where(third, phi_2, zero), torch.where(third, phi_3, zero)
    c_2 = torch.where(second, phi_2, zero) / r0
    if flow is not None:  # ComfyUI's: x times (sigma_next / sigma) e^(-h eta), the rest times alpha_next
        alpha_next = safe_next * lambda_next.exp()
        c_x = safe_next / sigma * (-h_safe * eta).exp()
        c_d, c_d1, c_d2, c_2 = (alpha_next * c for c in (c_d, c_d1, c_d2, c_2))
    c_x, c_d, c_d1, c_d2, c_2 = (dims(c) for c in (c_x, c_d, c_d1, c_d2, c_2))
    k_r = dims(r0 / (r0 + r1))
    inv_r0, inv_r1, inv_rr = dims(1 / r0), dims(1 / r1), dims(1 / (r0 + r1))
    noise_scale = dims(torch.where(moving, safe_next * (-2 * h_safe * eta).expm1().neg().sqrt(), zero) * s_noise)
    flags = [m.tolist() for m in (last.all(1), last.any(1), moving.all(1), third.any(1), second.any(1))]
    host_sigma, host_next = sigma.cpu(), safe_next.cpu()  # the noise sampler's keys, read once
    denoised_1 = denoised_2 = None
    for i in trange(len(sigmas) - 1, disable=disable):
        denoised = model(x, sigma[i], **extra_args)
        _report(callback, x, i, sigma[i], sigma[i], denoised)
        all_last, any_last, all_moving, any_third, any_second = (f[i] for f in flags)
        if all_last:
            x = denoised
        else:
            x_new = c_x[i] * x + c_d[i] * denoised
            if any_third:
                d1_0 = (denoised - denoised_1) * inv_r0[i]
                d1_1 = (denoised_1 - denoised_2) * inv_r1[i]
                x_new = x_new + c_d1[i] * (d1_0 + (d1_0 - d1_1) * k_r[i]) - c_d2[i] * (d1_0 - d1_1) * inv_rr[i]
            if any_second:
                x_new = x_new + c_2[i] * (denoised - denoised_1)
            if eta:
                x_new = x_new + _need(noise_sampler)(host_sigma[i], host_next[i]) * noise_scale[i]
            if not all_moving:
                x_new = _where(moving[i], x_new, x)
            x = _where(last[i], denoised, x_new) if any_last else x_new
        denoised_1, denoised_2 = denoised, denoised_1
    return x


def lms_coefficients(sigmas, order=4):
    """(N, order, B) weights of linear multistep (Adams–Bashforth in sigma): the integral over [sigma_i, sigma_i+1]
    of each Lagrange basis polynomial through the last min(i + 1, order) sigmas. The basis has degree < order, so
    Gauss–Legendre with `order` nodes integrates it exactly; computed for every step at once, per distinct column."""
    columns, inverse = torch.unique(sigmas.T.double().cpu(), dim=0, return_inverse=True)
    n = sigmas.shape[0] - 1
    nodes, node_weights = np.polynomial.legendre.leggauss(order)
    out = np.zeros((len(columns), n, order))
    steps = np.arange(n)
    for c, t in enumerate(columns.numpy()):
        half, mid = (t[1:] - t[:-1]) / 2, (t[1:] + t[:-1]) / 2
        tau = mid[:, None] + half[:, None] * nodes[None]                      # (n, nodes)
        # Point k of step i is t[i - k]; it takes part while k < min(i + 1, order) and the points before it are
        # distinct (paper mode can round two sigmas to one: interpolation through a repeated point is undefined).
        points = np.stack([t[np.clip(steps - k, 0, None)] for k in range(order)], 1)  # (n, order)
        used = np.arange(order)[None] < np.minimum(steps + 1, order)[:, None]
        used[:, 1:] &= points[:, 1:] != points[:, :-1]
        used = np.cumprod(used, 1).astype(bool)
        for j in range(order):
            basis = np.ones_like(tau)
            for k in range(order):
                if k != j:
                    both = used[:, k:k + 1] & used[:, j:j + 1]
                    gap = np.where(both, points[:, j:j + 1] - points[:, k:k + 1], 1.0)
                    basis *= np.where(both, (tau - points[:, k:k + 1]) / gap, 1.0)
            out[c, :, j] = np.where(used[:, j], half * (basis * node_weights).sum(1), 0.0)
    return torch.as_tensor(out[inverse.numpy()], dtype=sigmas.dtype).permute(1, 2, 0)


@sampler("lms", group="multistep", note="linear multistep in sigma, order 4 (k-diffusion)", calls_per_step=1,
         options=("order", "final"), after="dpmpp_2m")
@torch.no_grad()
def sample_lms(model, x, sigmas, extra_args=None, callback=None, disable=None, order=4, noise_sampler=None,
               final="integrate"):
    """Linear multistep (k-diffusion's lms): dx/dsigma from the last `order` steps, integrated exactly over each
    step; deterministic, so noise_sampler is unused. final="denoised": a step into sigma 0 returns the denoised
    image instead (ComfyUI's sample_lms)."""
    if final not in ("integrate", "denoised"):
        raise ValueError(f"final must be 'integrate' or 'denoised' (got {final!r})")
    extra_args, sigmas = _setup(model, x, sigmas, extra_args)
    # Which items step into 0, read once before the loop.
    into_zero = sigmas[1:] == 0
    all_zero, any_zero = (into_zero.all(1).tolist(), into_zero.any(1).tolist()) if final == "denoised" else \
        ([False] * len(into_zero),) * 2
    coeffs = lms_coefficients(sigmas, order)
    # One schedule for the whole batch (the usual case): plain Python weights, as cheap as k-diffusion's.
    shared = bool((sigmas == sigmas[:, :1]).all())
    weights = coeffs[:, :, 0].tolist() if shared else append_dims(coeffs.to(x.device), x.ndim + 2)
    ds = []
    for i in trange(len(sigmas) - 1, disable=disable):
        denoised = model(x, sigmas[i], **extra_args)
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
        ds.append(to_d(x, sigmas[i], denoised))
        if len(ds) > order:
            ds.pop(0)
        x_next = x + sum(weights[i][j] * d for j, d in enumerate(reversed(ds)))
        if any_zero[i]:
            x_next = denoised if all_zero[i] else torch.where(append_dims(into_zero[i], x.ndim), denoised, x_next)
        x = x_next
    return x


@sampler("ddim", group="single-step", note="DDIM, eta 0: Euler's step in sigma (as ComfyUI)", calls_per_step=1,
         after="euler")
@torch.no_grad()
def sample_ddim(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None):
    """DDIM with eta = 0 (Song et al. 2021). With x = x_t / sqrt(alpha_bar_t) and sigma = sqrt((1 - alpha_bar) /
    alpha_bar), its update x' = D + (sigma' / sigma)(x - D) is exactly Euler's step on the probability-flow ODE
    (Karras et al. 2022, sec. 3); ComfyUI's ddim is its euler too. Equal to diffusers' DDIMScheduler (tested)."""
    return sample_euler(model, x, sigmas, extra_args=extra_args, callback=callback, disable=disable)
