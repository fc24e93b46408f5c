"""Karras-style samplers with k-diffusion's signatures, plus EDM's round_sigma and per-item schedules.

`sigmas` is (N+1,) for the whole batch or (N+1, B) with one schedule per batch item, so two arms of a
comparison can run in lockstep in one batch. A model with `round_sigma` (paper-mode discretization)
gets every nonzero schedule sigma and every churned `sigma_hat` rounded before it is used.

Flow models. A deterministic sampler needs nothing of the model's family: on a rectified flow
(x = (1 - sigma) x0 + sigma noise) dx/dsigma = (x - D) / sigma holds as on an eps model, so every ODE step here
integrates it as it stands. A sampler that adds noise does: before its loop it asks `flow_sampling(model)` (the
denoiser's `model_sampling`, as ComfyUI asks for CONST) and, on a flow model, takes ComfyUI's rectified-flow
formulas (`get_ancestral_step_rf`; the SDE samplers in half-log-SNR lambda = log((1 - sigma) / sigma) with
alpha = 1 - sigma). Karras churn has no flow formula: refused on a flow model.
"""
from typing import NamedTuple

import torch
from tqdm.auto import trange

from ._checks import check_sigmas
from .registry import sampler
from .wrappers import append_dims


def to_d(x, sigma, denoised):
    """Karras ODE derivative dx/dsigma = (x - D(x; sigma)) / sigma (eq. 3)."""
    return (x - denoised) / append_dims(sigma, x.ndim)


def round_sigmas(model, sigmas):
    """Apply the model's round_sigma to every nonzero sigma; 0 is never rounded."""
    round_sigma = getattr(model, "round_sigma", None)
    if round_sigma is None:
        return sigmas
    return torch.where(sigmas > 0, round_sigma(sigmas).to(sigmas), sigmas)


def _setup(model, x, sigmas, extra_args):
    check_sigmas(sigmas)
    if sigmas.ndim == 1:
        sigmas = sigmas[:, None].expand(-1, x.shape[0])
    elif sigmas.shape[1] != x.shape[0]:
        raise ValueError(f"per-item sigmas have {sigmas.shape[1]} columns for a batch of {x.shape[0]}; "
                         "give one schedule column per batch item")
    sigmas = sigmas.to(x.device)
    if getattr(model, "round_sigma", None) is not None:
        # Rounded row by row so a per-item round_sigma sees one (B,) vector at a time.
        sigmas = torch.stack([round_sigmas(model, row) for row in sigmas])
    return ({} if extra_args is None else extra_args), sigmas


def flow_sampling(model):
    """The model's FlowSampling when the denoiser samples a rectified flow (ComfyUI's CONST), else None. Read once,
    before a sampler's loop, from the denoiser's `model_sampling` (sampler_lib's Denoiser and the engine's batch
    denoiser expose it); a denoiser without one is an eps model, as k-diffusion's are."""
    sampling = getattr(model, "model_sampling", None)
    return sampling if getattr(sampling, "kind", None) == "flow" else None


def half_log_snr(sigma, flow):
    """lambda = log(alpha / sigma): -log sigma on an eps model, log((1 - sigma) / sigma) on a flow (ComfyUI's
    sigma_to_half_log_snr)."""
    return sigma.logit().neg() if flow is not None else sigma.log().neg()


FLOW_START_OFFSET = 1e-4  # ComfyUI's offset_first_sigma_for_snr: percent_to_sigma(1e-4)


def offset_first_sigma(sigmas, flow):
    """On a flow model, a first sigma of 1 (lambda = -inf) moved to the model's sigma at 1 - 1e-4 of the way (ComfyUI's
    offset_first_sigma_for_snr for its SDE samplers); unchanged on an eps model."""
    if flow is None:
        return sigmas
    start = float(flow.shifted(torch.tensor(1.0 - FLOW_START_OFFSET, dtype=torch.float64)))
    return torch.cat([torch.where(sigmas[:1] >= 1, torch.full_like(sigmas[:1], start), sigmas[:1]), sigmas[1:]])


def get_ancestral_step_rf(sigma_from, sigma_to, eta=1.0):
    """ComfyUI's rectified-flow ancestral split (sample_euler_ancestral_RF): step down deterministically to
    sigma_down = sigma_to (1 + (sigma_to / sigma_from - 1) eta), then re-noise with the flow's own scaling,
    x <- (alpha_to / alpha_down) x + renoise z with alpha = 1 - sigma and renoise = sqrt(sigma_to^2 - (sigma_down
    alpha_to / alpha_down)^2), so x is again (1 - sigma_to) x0 + sigma_to noise. Where eta > 1 would take sigma_down
    below 0 it stays at 0 (ComfyUI's goes negative). Returns (sigma_down, alpha_to / alpha_down, renoise)."""
    sigma_down = sigma_to * (1 + (sigma_to / sigma_from - 1) * eta).clamp(min=0)
    alpha_to, alpha_down = 1 - sigma_to, 1 - sigma_down
    renoise = (sigma_to ** 2 - sigma_down ** 2 * alpha_to ** 2 / alpha_down ** 2).clamp(min=0) ** 0.5
    return sigma_down, alpha_to / alpha_down, renoise


def _need(noise_sampler):
    if noise_sampler is None:
        raise ValueError("this sampler adds noise: pass noise_sampler=BrownianNoiseSampler(x, seed, "
                         "sigma_max) so the randomness is explicit and reproducible")
    return noise_sampler


CHURN_ON_FLOW = ("s_churn (Karras churn) has no rectified-flow formula: its sigma_hat = sigma (1 + gamma) can pass a "
                 "flow's largest sigma, 1, and its noise is the eps form's; set s_churn to 0 on a flow model, or "
                 "choose an ancestral or SDE sampler for fresh noise")


class Churn(NamedTuple):
    """Karras Algorithm 2's churn, planned for every step before the loop (so no step waits on the device)."""
    sigma_hat: torch.Tensor  # (N, B): round(sigma (1 + gamma)) inside [s_tmin, s_tmax], else sigma
    churned: list  # per step: does any item churn (read once, on the host)
    host_sigma: torch.Tensor  # host copies the noise sampler is keyed on
    host_hat: torch.Tensor
    s_noise: float
    noise_sampler: object


def _churn_plan(model, sigmas, s_churn, s_tmin, s_tmax, s_noise, noise_sampler):
    """Algorithm 2, lines 4-5, for all steps at once: gamma = min(s_churn / N, sqrt 2 - 1) in the window."""
    sigma, n = sigmas[:-1], len(sigmas) - 1
    if s_churn > 0 and flow_sampling(model) is not None:
        raise ValueError(CHURN_ON_FLOW)
    gamma = min(s_churn / n, 2 ** 0.5 - 1) if s_churn > 0 else 0.0
    in_window = (sigma >= s_tmin) & (sigma <= s_tmax)
    if gamma == 0:
        return Churn(sigma, [False] * n, None, None, s_noise, noise_sampler)
    # Rounded row by row so a per-item round_sigma sees one (B,) vector at a time.
    sigma_hat = torch.where(in_window, torch.stack([round_sigmas(model, row * (gamma + 1)) for row in sigma]), sigma)
    return Churn(sigma_hat, in_window.any(1).tolist(), sigma.cpu(), sigma_hat.cpu(), s_noise, noise_sampler)


def _churn(x, sigma, i, churn):
    """Algorithm 2, line 6: x_hat = x + sqrt(sigma_hat^2 - sigma^2) eps (the seeded noise over [sigma, sigma_hat])."""
    if not churn.churned[i]:
        return x, sigma
    sigma_hat = churn.sigma_hat[i]
    eps = _need(churn.noise_sampler)(churn.host_sigma[i], churn.host_hat[i]) * churn.s_noise
    return x + eps * append_dims((sigma_hat ** 2 - sigma ** 2) ** 0.5, x.ndim), sigma_hat


def _euler_stage(model, x, sigmas, i, extra_args, callback, churn):
    """Algorithm 2, lines 4-8: churn to sigma_hat, denoise there, Euler step to sigmas[i + 1]."""
    x, sigma_hat = _churn(x, sigmas[i], i, churn)
    denoised = model(x, sigma_hat, **extra_args)
    d = to_d(x, sigma_hat, denoised)
    _report(callback, x, i, sigmas[i], sigma_hat, denoised)
    return x, sigma_hat, d, x + d * append_dims(sigmas[i + 1] - sigma_hat, x.ndim)


def _report(callback, x, i, sigma, sigma_hat, denoised):
    if callback is not None:
        callback({"x": x, "i": i, "sigma": sigma, "sigma_hat": sigma_hat, "denoised": denoised})


def _where(mask, a, b):
    return torch.where(append_dims(mask, a.ndim), a, b)


@sampler("euler", group="single-step", note="first order (Karras Alg. 2 without the correction)",
         calls_per_step=1, options=("s_churn", "s_tmin", "s_tmax", "s_noise"))
@torch.no_grad()
def sample_euler(model, x, sigmas, extra_args=None, callback=None, disable=None, s_churn=0.0,
                 s_tmin=0.0, s_tmax=float("inf"), s_noise=1.0, noise_sampler=None):
    """Karras et al. (2022) Algorithm 2 with first-order (Euler) steps."""
    extra_args, sigmas = _setup(model, x, sigmas, extra_args)
    churn = _churn_plan(model, sigmas, s_churn, s_tmin, s_tmax, s_noise, noise_sampler)
    for i in trange(len(sigmas) - 1, disable=disable):
        x = _euler_stage(model, x, sigmas, i, extra_args, callback, churn)[3]
    return x


@sampler("heun", group="single-step", note="second order, 2 calls a step (Karras Alg. 2)", calls_per_step=2,
         final_calls=1, options=("s_churn", "s_tmin", "s_tmax", "s_noise"))
@torch.no_grad()
def sample_heun(model, x, sigmas, extra_args=None, callback=None, disable=None, s_churn=0.0,
                s_tmin=0.0, s_tmax=float("inf"), s_noise=1.0, noise_sampler=None):
    """Karras et al. (2022) Algorithm 2: Heun's 2nd-order steps, an Euler step into sigma = 0."""
    extra_args, sigmas = _setup(model, x, sigmas, extra_args)
    churn = _churn_plan(model, sigmas, s_churn, s_tmin, s_tmax, s_noise, noise_sampler)
    into_zero = (sigmas[1:] == 0).all(1).tolist()  # read once: no host sync inside the loop
    for i in trange(len(sigmas) - 1, disable=disable):
        x, sigma_hat, d, x_euler = _euler_stage(model, x, sigmas, i, extra_args, callback, churn)
        sigma_next = sigmas[i + 1]
        dt = append_dims(sigma_next - sigma_hat, x.ndim)
        last = sigma_next == 0
        if into_zero[i]:
            x = x_euler
            continue
        # Items stepping into 0 keep the Euler step; their correction is evaluated at a safe sigma.
        sigma_eval = torch.where(last, sigma_hat, sigma_next)
        d_2 = to_d(x_euler, sigma_eval, model(x_euler, sigma_eval, **extra_args))
        x = _where(last, x_euler, x + (d + d_2) / 2 * dt)
    return x


@sampler("dpm_2", group="single-step", note="DPM-Solver-2: log-sigma midpoint, 2 calls a step", calls_per_step=2,
         final_calls=1, options=("s_churn", "s_tmin", "s_tmax", "s_noise"))
@torch.no_grad()
def sample_dpm_2(model, x, sigmas, extra_args=None, callback=None, disable=None, s_churn=0.0,
                 s_tmin=0.0, s_tmax=float("inf"), s_noise=1.0, noise_sampler=None):
    """DPM-Solver-2 (Lu et al. 2022) in Karras form: a midpoint in log sigma (rounded in paper mode)."""
    extra_args, sigmas = _setup(model, x, sigmas, extra_args)
    churn = _churn_plan(model, sigmas, s_churn, s_tmin, s_tmax, s_noise, noise_sampler)
    into_zero = (sigmas[1:] == 0).all(1).tolist()  # read once: no host sync inside the loop
    for i in trange(len(sigmas) - 1, disable=disable):
        x, sigma_hat, d, x_euler = _euler_stage(model, x, sigmas, i, extra_args, callback, churn)
        sigma_next = sigmas[i + 1]
        last = sigma_next == 0
        if into_zero[i]:
            x = x_euler
            continue
        safe_next = torch.where(last, sigma_hat, sigma_next)
        # The midpoint is a network input too, so paper mode keeps it on the training grid.
        sigma_mid = round_sigmas(model, sigma_hat.log().lerp(safe_next.log(), 0.5).exp())
        x_2 = x + d * append_dims(sigma_mid - sigma_hat, x.ndim)
        d_2 = to_d(x_2, sigma_mid, model(x_2, sigma_mid, **extra_args))
        x = _where(last, x_euler, x + d_2 * append_dims(sigma_next - sigma_hat, x.ndim))
    return x


def get_ancestral_step(sigma_from, sigma_to, eta=1.0):
    """Split a step into a deterministic part to sigma_down and fresh noise of size sigma_up."""
    if not eta:
        return sigma_to, torch.zeros_like(sigma_to)
    sigma_up = torch.minimum(sigma_to, eta * (sigma_to ** 2 * (sigma_from ** 2 - sigma_to ** 2)
                                              / sigma_from ** 2) ** 0.5)
    sigma_down = (sigma_to ** 2 - sigma_up ** 2) ** 0.5
    return sigma_down, sigma_up


@sampler("euler_ancestral", group="adds noise", note="Euler + fresh noise each step (eta)", calls_per_step=1,
         options=("eta", "s_noise"), adds_noise=True, flow="rf")
@torch.no_grad()
def sample_euler_ancestral(model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1.0,
                           s_noise=1.0, noise_sampler=None):
    """Ancestral sampling with Euler steps (k-diffusion's euler_a); on a flow model ComfyUI's euler_ancestral_RF."""
    if flow_sampling(model) is not None:
        return _euler_ancestral_rf(model, x, sigmas, extra_args, callback, disable, eta, s_noise, noise_sampler)
    extra_args, sigmas = _setup(model, x, sigmas, extra_args)
    # Step sizes depend only on the schedule: computed for all steps at once.
    sigma_down, sigma_up = get_ancestral_step(sigmas[:-1], sigmas[1:], eta=eta)
    noisy = sigmas[1:] > 0
    add_noise = (noisy.any(1) & bool(eta)).tolist()
    dims = lambda v: append_dims(v, x.ndim + 1)  # noqa: E731
    dt = dims(sigma_down - sigmas[:-1])
    noise_scale = dims(torch.where(noisy, sigma_up, torch.zeros_like(sigma_up)) * s_noise)
    host = sigmas.cpu()  # the noise sampler is keyed on host values: no step waits on the device
    for i in trange(len(sigmas) - 1, disable=disable):
        denoised = model(x, sigmas[i], **extra_args)
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
        x = x + to_d(x, sigmas[i], denoised) * dt[i]
        if add_noise[i]:
            x = x + _need(noise_sampler)(host[i], host[i + 1]) * noise_scale[i]
    return x


def _euler_ancestral_rf(model, x, sigmas, extra_args, callback, disable, eta, s_noise, noise_sampler):
    """ComfyUI's sample_euler_ancestral_RF: an Euler step to sigma_down (x <- (sigma_down / sigma) x + (1 -
    sigma_down / sigma) D), then the flow's re-noising to sigma_next (get_ancestral_step_rf); D into sigma = 0."""
    extra_args, sigmas = _setup(model, x, sigmas, extra_args)
    sigma, sigma_next = sigmas[:-1], sigmas[1:]
    sigma_down, alpha_ratio, renoise = get_ancestral_step_rf(sigma, sigma_next, eta)
    dims = lambda v: append_dims(v, x.ndim + 1)  # noqa: E731
    ratio = sigma_down / sigma
    c_x, c_denoised, c_alpha, c_noise = dims(ratio), dims(1 - ratio), dims(alpha_ratio), dims(renoise * s_noise)
    add_noise = ((sigma_next > 0).any(1) & bool(eta)).tolist()  # read once: no host sync inside the loop
    host = sigmas.cpu()  # the noise sampler's keys
    for i in trange(len(sigmas) - 1, disable=disable):
        denoised = model(x, sigma[i], **extra_args)
        _report(callback, x, i, sigma[i], sigma[i], denoised)
        x = c_x[i] * x + c_denoised[i] * denoised
        if add_noise[i]:
            x = c_alpha[i] * x + _need(noise_sampler)(host[i], host[i + 1]) * c_noise[i]
    return x


def _t(sigma):
    """DPM-Solver's time t = -log sigma (so sigma(t) = exp(-t))."""
    return sigma.log().neg()


@sampler("dpmpp_2m", group="multistep", note="DPM-Solver++(2M): multistep, 1 call a step", calls_per_step=1)
@torch.no_grad()
def sample_dpmpp_2m(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None):
    """DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2); deterministic, so noise_sampler is unused."""
    extra_args, sigmas = _setup(model, x, sigmas, extra_args)
    # Every coefficient depends only on the schedule: compute them for all steps at once.
    t = _t(sigmas)
    h = t[1:] - t[:-1]
    h_last = torch.cat([torch.full_like(h[:1], float("nan")), h[:-1]])
    # Second order needs two finite, nonzero steps (a paper-mode duplicate sigma is a no-op).
    second = (sigmas[1:] > 0) & (h > 0) & (h_last > 0)
    half_inv_r = torch.where(second, h / h_last / 2, torch.zeros_like(h))
    dims = lambda v: append_dims(v, x.ndim + 1)  # noqa: E731
    ratio, coef = dims(t[1:].neg().exp() / t[:-1].neg().exp()), dims((-h).expm1())
    weight_new, weight_old = dims(1 + half_inv_r), dims(half_inv_r)
    any_second = second.any(1).tolist()  # read once: no host sync inside the loop
    old_denoised = None
    for i in trange(len(sigmas) - 1, disable=disable):
        denoised = model(x, sigmas[i], **extra_args)
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
        denoised_d = denoised
        if old_denoised is not None and any_second[i]:
            denoised_d = weight_new[i] * denoised - weight_old[i] * old_denoised
        x = ratio[i] * x - coef[i] * denoised_d
        old_denoised = denoised
    return x


@sampler("dpmpp_2m_sde", group="adds noise", note="DPM-Solver++(2M) SDE (eta)", calls_per_step=1,
         options=("eta", "s_noise", "solver_type"), adds_noise=True, flow="rf", after="dpmpp_sde")
@torch.no_grad()
def sample_dpmpp_2m_sde(model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1.0,
                        s_noise=1.0, noise_sampler=None, solver_type="midpoint"):
    """DPM-Solver++(2M) SDE (Lu et al. 2022; k-diffusion's variant, midpoint or heun correction). On a flow model
    ComfyUI's: h in lambda = log((1 - sigma) / sigma), the denoised terms times alpha_next = 1 - sigma_next, and a
    first sigma of 1 moved to 1 - 1e-4 of the way (offset_first_sigma)."""
    if solver_type not in ("heun", "midpoint"):
        raise ValueError(f"solver_type must be 'heun' or 'midpoint' (got {solver_type!r})")
    flow = flow_sampling(model)
    extra_args, sigmas = _setup(model, x, sigmas, extra_args)
    sigmas = offset_first_sigma(sigmas, flow)
    sigma, sigma_next = sigmas[:-1], sigmas[1:]
    # Every coefficient depends only on the schedule: computed for all steps at once. A step into
    # sigma = 0 returns the denoised image; it gets a safe stand-in sigma so nothing is inf or NaN.
    last = sigma_next == 0
    safe_next = torch.where(last, sigma, sigma_next)
    lambda_next = half_log_snr(safe_next, flow)
    h = lambda_next - half_log_snr(sigma, flow)
    eta_h = eta * h
    h_last = torch.cat([torch.full_like(h[:1], float("nan")), h[:-1]])
    second = ~last & (h > 0) & (h_last > 0)
    keep = (-h - eta_h).expm1().neg()
    if solver_type == "heun":
        coef = keep / (-h - eta_h) + 1
    else:
        coef = 0.5 * keep
    dims = lambda v: append_dims(v, x.ndim + 1)  # noqa: E731
    c_second = torch.where(second, coef * h / h_last, torch.zeros_like(h))
    if flow is not None:  # alpha_next = sigma_next e^lambda_next (1 - sigma_next), as ComfyUI computes it
        alpha_next = safe_next * lambda_next.exp()
        keep, c_second = alpha_next * keep, alpha_next * c_second
    c_x, c_denoised, c_second = dims(safe_next / sigma * (-eta_h).exp()), dims(keep), dims(c_second)
    c_noise = dims(safe_next * (-2 * eta_h).expm1().neg().sqrt() * s_noise)
    all_last, any_second = last.all(1).tolist(), second.any(1).tolist()
    host_sigma, host_next = sigma.cpu(), safe_next.cpu()  # the noise sampler's keys, read once
    old_denoised = None
    for i in trange(len(sigmas) - 1, disable=disable):
        denoised = model(x, sigma[i], **extra_args)
        _report(callback, x, i, sigma[i], sigma[i], denoised)
        if all_last[i]:
            x = denoised
            continue
        x_new = c_x[i] * x + c_denoised[i] * denoised
        if any_second[i]:
            x_new = x_new + c_second[i] * (denoised - old_denoised)
        if eta:
            x_new = x_new + _need(noise_sampler)(host_sigma[i], host_next[i]) * c_noise[i]
        x = _where(last[i], denoised, x_new)
        old_denoised = denoised
    return x
