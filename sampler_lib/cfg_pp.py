"""ComfyUI's CFG++ samplers (Chung et al. 2024, "CFG++: manifold-constrained classifier-free guidance"): a step
lands on the guided prediction D but takes its direction back to noise from the unconditional prediction U, both
from the same network call (`Denoiser.denoised_and_uncond`, which the engine's BatchDenoiser batches and
de-duplicates alike; ComfyUI reads U through its sampler_post_cfg_function). The library's contract holds: per-item
sigmas (N+1, B), every discretization mode (an intermediate sigma that reaches the network is rounded in paper mode),
seeded noise through noise_sampler, one callback per step, and no device read inside the step loop. A denoiser
without `denoised_and_uncond` (a plain callable) has one prediction, so U = D and each sampler is its non-CFG++
sibling (tests/test_cfg_pp.py checks both against a transcription of ComfyUI's loops).

Flow models. euler_cfg_pp and euler_ancestral_cfg_pp take ComfyUI's alpha = 1 - sigma (sigma e^lambda on CONST) and
dpmpp_2s_ancestral_cfg_pp its _RF form. The others have no flow form in ComfyUI and are refused on a flow model (as
`config.check_for_model` refuses them, from their declarations): dpmpp_2m_cfg_pp, res_multistep_cfg_pp and
gradient_estimation_cfg_pp take their direction to noise as (x - U) / sigma, the eps model's, so on a flow each step
lands sigma_next (D - U) past ComfyUI's own euler_cfg_pp step (on the embedded flow model at guidance 3, 6 steps on
simple, karras and beta: final latents of std 0.54 to 0.67, euler_cfg_pp's 0.38); res_multistep_ancestral_cfg_pp
adds the eps model's ancestral noise there too.
"""
import torch
from tqdm.auto import trange

from .more_samplers import _ancestral_plan, _rf_plan
from .registry import sampler
from .samplers import (
    _need,
    _report,
    _setup,
    _t,
    _where,
    flow_sampling,
    get_ancestral_step,
    round_sigmas,
    to_d,
)
from .wrappers import append_dims

EPS_FORM_ON_FLOW = ("ComfyUI's {} has no flow form: its direction to noise, (x - U) / sigma, is the eps model's, so on "
                    "a flow model each step lands sigma_next (D - U) past ComfyUI's own euler_cfg_pp (which takes the "
                    "flow's alpha = 1 - sigma); on a flow model choose euler_cfg_pp, euler_ancestral_cfg_pp or "
                    "dpmpp_2s_ancestral_cfg_pp")
RES_ANCESTRAL_ON_FLOW = ("ComfyUI's res_multistep_ancestral_cfg_pp adds the eps model's ancestral noise (sigma_up) "
                         "on a flow model too, which leaves x off the flow's (1 - sigma) x0 + sigma noise; on a flow "
                         "model choose euler_ancestral_cfg_pp or dpmpp_2s_ancestral_cfg_pp")


def _refuse_on_flow(model, why):
    if flow_sampling(model) is not None:
        raise ValueError(why)


def _both(model):
    """The model as (x, sigma, **extra_args) -> (D, U) from one network call; a denoiser without
    `denoised_and_uncond` has one prediction, which is then both."""
    both = getattr(model, "denoised_and_uncond", None)
    if both is not None:
        return both

    def one(x, sigma, **extra_args):
        denoised = model(x, sigma, **extra_args)
        return denoised, denoised
    return one


def _dims(x):
    return lambda v: append_dims(v, x.ndim + 1)


def _alpha(sigma, flow):
    """alpha of x = alpha x0 + sigma noise: 1 on an eps model, 1 - sigma on a flow (ComfyUI's sigma e^lambda)."""
    return 1 - sigma if flow is not None else torch.ones_like(sigma)


def _ve_ancestral_step(sigma_from, sigma_to, eta):
    """get_ancestral_step on variance-exploding sigmas (sigma / alpha). From a flow's sigma 1 (sigma_from = inf) the
    limit, sigma_up = min(1, eta) sigma_to (ComfyUI's NaN there makes it sigma_to whatever eta > 0)."""
    sigma_down, sigma_up = get_ancestral_step(sigma_from, sigma_to, eta)
    if not eta:
        return sigma_down, sigma_up
    sigma_up = torch.where(torch.isinf(sigma_from), sigma_to * min(1.0, eta), sigma_up)
    return (sigma_to ** 2 - sigma_up ** 2).clamp(min=0) ** 0.5, sigma_up


@sampler("euler_cfg_pp", group="single-step", note="Euler, CFG++: re-noises along the unconditional prediction",
         calls_per_step=1, flow="rf", cfg_pp=True, after="euler")
@torch.no_grad()
def sample_euler_cfg_pp(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None):
    """Euler steps with CFG++ (ComfyUI's euler_cfg_pp: euler_ancestral_cfg_pp at eta 0); deterministic."""
    return sample_euler_ancestral_cfg_pp(model, x, sigmas, extra_args, callback, disable, eta=0.0, s_noise=0.0,
                                         noise_sampler=noise_sampler)


@sampler("euler_ancestral_cfg_pp", group="adds noise", note="Euler + fresh noise (eta), CFG++", calls_per_step=1,
         options=("eta", "s_noise"), adds_noise=True, flow="rf", cfg_pp=True, after="euler_ancestral")
@torch.no_grad()
def sample_euler_ancestral_cfg_pp(model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1.0,
                                  s_noise=1.0, noise_sampler=None):
    """Ancestral Euler with CFG++ (ComfyUI's euler_ancestral_cfg_pp, DDIM's stochastic step): x' = alpha' D +
    sigma_down eps_U + alpha' sigma_up z, with eps_U = (x - alpha U) / sigma and the ancestral split taken on sigma /
    alpha (alpha = 1 on an eps model, 1 - sigma on a flow); D into sigma = 0."""
    flow = flow_sampling(model)
    both = _both(model)
    extra_args, sigmas = _setup(model, x, sigmas, extra_args)
    sigma, sigma_next = sigmas[:-1], sigmas[1:]
    alpha, alpha_next = _alpha(sigma, flow), _alpha(sigma_next, flow)
    # Into sigma = 0 alpha' is 1 and sigma_down 0: x' = D, as ComfyUI's last step.
    ve_down, ve_up = _ve_ancestral_step(sigma / alpha, sigma_next / alpha_next, eta)
    dims = _dims(x)
    c_denoised, c_alpha, c_down = dims(alpha_next), dims(alpha), dims(alpha_next * ve_down)
    c_noise = dims(alpha_next * ve_up * s_noise)
    add_noise = ((sigma_next > 0).any(1) & bool(eta > 0 and s_noise > 0)).tolist()  # read once, before the loop
    host = sigmas.cpu()  # the noise sampler's keys
    for i in trange(len(sigmas) - 1, disable=disable):
        denoised, uncond = both(x, sigma[i], **extra_args)
        _report(callback, x, i, sigma[i], sigma[i], denoised)
        eps = to_d(x, sigma[i], c_alpha[i] * uncond)
        x = c_denoised[i] * denoised + c_down[i] * eps
        if add_noise[i]:
            x = x + _need(noise_sampler)(host[i], host[i + 1]) * c_noise[i]
    return x


@sampler("dpmpp_2s_ancestral_cfg_pp", group="adds noise", note="DPM-Solver++(2S) + fresh noise, CFG++, 2 calls a step",
         calls_per_step=2, final_calls=1, options=("eta", "s_noise"), adds_noise=True, flow="rf", cfg_pp=True,
         after="dpmpp_2s_ancestral")
@torch.no_grad()
def sample_dpmpp_2s_ancestral_cfg_pp(model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1.0,
                                     s_noise=1.0, noise_sampler=None):
    """DPM-Solver++(2S) ancestral with CFG++ (ComfyUI's dpmpp_2s_ancestral_cfg_pp): both stages on U (the second's
    call is read for its U alone), fresh noise, then the guidance D - U added back; an Euler step on U where
    sigma_down is 0. On a flow model ComfyUI's _RF form, the guidance added back times 1 - sigma_next."""
    if flow_sampling(model) is not None:
        return _dpmpp_2s_ancestral_cfg_pp_rf(model, x, sigmas, extra_args, callback, disable, eta, s_noise,
                                             noise_sampler)
    both = _both(model)
    extra_args, sigmas = _setup(model, x, sigmas, extra_args)
    sigma, sigma_next, sigma_down, sigma_up, euler, safe_down, all_euler, any_euler = _ancestral_plan(sigmas, eta)
    t, h = _t(sigma), _t(safe_down) - _t(sigma)
    # The intermediate sigma is a network input: on the training grid in paper mode.
    sigma_s = torch.stack([round_sigmas(model, row) for row in (t + h / 2).neg().exp()])
    dims = _dims(x)
    c_x2, c_u2 = dims(sigma_s / sigma), dims((t - _t(sigma_s)).expm1())
    c_x, c_u = dims(safe_down / sigma), dims((-h).expm1())
    dt_down = dims(sigma_down - sigma)
    noisy = sigma_next > 0
    any_noisy = (noisy.any(1) & bool(eta)).tolist()  # read once, before the loop
    noise_scale = dims(torch.where(noisy, sigma_up, torch.zeros_like(sigma_up)) * s_noise)
    host_sigma, host_next = sigma.cpu(), sigma_next.cpu()  # the noise sampler's keys
    for i in trange(len(sigmas) - 1, disable=disable):
        denoised, uncond = both(x, sigma[i], **extra_args)
        _report(callback, x, i, sigma[i], sigma[i], denoised)
        if all_euler[i]:
            x_new = x + to_d(x, sigma[i], uncond) * dt_down[i]
        else:
            x_2 = c_x2[i] * x - c_u2[i] * uncond
            x_new = c_x[i] * x - c_u[i] * both(x_2, sigma_s[i], **extra_args)[1]
            if any_euler[i]:
                x_new = _where(euler[i], x + to_d(x, sigma[i], uncond) * dt_down[i], x_new)
        if any_noisy[i]:
            x_new = x_new + _need(noise_sampler)(host_sigma[i], host_next[i]) * noise_scale[i]
        x = x_new + (denoised - uncond)
    return x


def _dpmpp_2s_ancestral_cfg_pp_rf(model, x, sigmas, extra_args, callback, disable, eta, s_noise, noise_sampler):
    """ComfyUI's sample_dpmpp_2s_ancestral_RF_cfg_pp: dpmpp_2s_ancestral_RF's stages on U (its stage at the lambda
    midpoint, 0.9999 from sigma = 1), the flow's re-noising, then (1 - sigma_next)(D - U) added back."""
    both = _both(model)
    extra_args, sigmas = _setup(model, x, sigmas, extra_args)
    (sigma, sigma_next, sigma_down, alpha_ratio, renoise, euler, safe_down, all_euler, any_euler,
     noisy) = _rf_plan(sigmas, eta)
    lambda_fn = lambda s: ((1 - s) / s).log()  # noqa: E731  (ComfyUI's expressions, for its rounding)
    t_i = lambda_fn(sigma)
    s_mid = t_i + (lambda_fn(safe_down) - t_i) / 2
    sigma_s = torch.where(sigma == 1.0, torch.full_like(sigma, 0.9999), (s_mid.exp() + 1) ** -1)
    sigma_s = torch.stack([round_sigmas(model, row) for row in sigma_s])  # a network input
    dims = _dims(x)
    ratio_s, ratio_down = sigma_s / sigma, sigma_down / sigma
    c_u, c_uu, c_x, c_xu = dims(ratio_s), dims(1 - ratio_s), dims(ratio_down), dims(1 - ratio_down)
    dt_down = dims(sigma_down - sigma)
    c_alpha, c_noise, c_guide = dims(alpha_ratio), dims(renoise * s_noise), dims(1 - sigma_next)
    host_sigma, host_next = sigma.cpu(), sigma_next.cpu()  # the noise sampler's keys
    for i in trange(len(sigmas) - 1, disable=disable):
        denoised, uncond = both(x, sigma[i], **extra_args)
        _report(callback, x, i, sigma[i], sigma[i], denoised)
        if all_euler[i]:
            x = x + to_d(x, sigma[i], uncond) * dt_down[i]
        else:
            u = c_u[i] * x + c_uu[i] * uncond
            x_new = c_x[i] * x + c_xu[i] * both(u, sigma_s[i], **extra_args)[1]
            x = _where(euler[i], x + to_d(x, sigma[i], uncond) * dt_down[i], x_new) if any_euler[i] else x_new
        if noisy[i]:  # items stepping into 0: alpha ratio 1, renoise 0
            x = c_alpha[i] * x + _need(noise_sampler)(host_sigma[i], host_next[i]) * c_noise[i]
        x = x + c_guide[i] * (denoised - uncond)
    return x


@sampler("dpmpp_2m_cfg_pp", group="multistep", note="DPM-Solver++(2M), CFG++: multistep, 1 call a step",
         calls_per_step=1, flow="refused: " + EPS_FORM_ON_FLOW.format("dpmpp_2m_cfg_pp"), cfg_pp=True, after="dpmpp_2m")
@torch.no_grad()
def sample_dpmpp_2m_cfg_pp(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None):
    """DPM-Solver++(2M) with CFG++ (ComfyUI's dpmpp_2m_cfg_pp): x' = D + (sigma' / sigma)(x - U), its second-order
    term -(e^-h - 1) / (2 r) (D - U_prev); deterministic, so noise_sampler is unused. Refused on a flow model."""
    _refuse_on_flow(model, EPS_FORM_ON_FLOW.format("dpmpp_2m_cfg_pp"))
    both = _both(model)
    extra_args, sigmas = _setup(model, x, sigmas, extra_args)
    # Every coefficient depends only on the schedule, as in sample_dpmpp_2m.
    t = _t(sigmas)
    h = t[1:] - t[:-1]
    h_last = torch.cat([torch.full_like(h[:1], float("nan")), h[:-1]])
    second = (sigmas[1:] > 0) & (h > 0) & (h_last > 0)
    dims = _dims(x)
    ratio = dims(t[1:].neg().exp() / t[:-1].neg().exp())
    c_old = dims(torch.where(second, (-h).expm1() * h / h_last / 2, torch.zeros_like(h)))
    any_second = second.any(1).tolist()  # read once, before the loop
    old_uncond = None
    for i in trange(len(sigmas) - 1, disable=disable):
        denoised, uncond = both(x, sigmas[i], **extra_args)
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
        x_new = denoised + ratio[i] * (x - uncond)
        if old_uncond is not None and any_second[i]:
            x_new = x_new - c_old[i] * (denoised - old_uncond)
        x, old_uncond = x_new, uncond
    return x


def _res_multistep_cfg_pp(model, x, sigmas, extra_args, callback, disable, eta, s_noise, noise_sampler):
    """ComfyUI's res_multistep(cfg_pp=True): a first-order step D + sigma_down (x - U) / sigma on the first step and
    where sigma_down is 0, else RES's second order (Zhang et al. 2023) on U and U_prev after adding D - U to x; fresh
    noise sigma_up where eta > 0."""
    both = _both(model)
    extra_args, sigmas = _setup(model, x, sigmas, extra_args)
    sigma, sigma_next = sigmas[:-1], sigmas[1:]
    sigma_down, sigma_up = get_ancestral_step(sigma, sigma_next, eta=eta)
    first = sigma_down == 0
    first[0] = True  # no history yet
    # RES's weights, for all steps at once: t = -log sigma, the previous point at c2 = (t_prev - t_down_prev) / h.
    t, t_down = _t(sigma), _t(sigma_down)
    h = t_down - t
    nan = torch.full_like(t[:1], float("nan"))
    c2 = (torch.cat([nan, t[:-1]]) - torch.cat([nan, t_down[:-1]])) / h
    phi1 = torch.expm1(-h) / -h
    phi2 = (phi1 - 1) / -h
    b1, b2 = torch.nan_to_num(phi1 - phi2 / c2, nan=0.0), torch.nan_to_num(phi2 / c2, nan=0.0)
    dims = _dims(x)
    c_euler, c_x, c_u, c_old = dims(sigma_down / sigma), dims((-h).exp()), dims(h * b1), dims(h * b2)
    all_first, any_first = first.all(1).tolist(), first.any(1).tolist()  # read once, before the loop
    noisy = sigma_next > 0
    add_noise = (noisy.any(1) & bool(eta)).tolist()
    noise_scale = dims(torch.where(noisy, sigma_up, torch.zeros_like(sigma_up)) * s_noise)
    host_sigma, host_next = sigma.cpu(), sigma_next.cpu()  # the noise sampler's keys
    old_uncond = None
    for i in trange(len(sigmas) - 1, disable=disable):
        denoised, uncond = both(x, sigma[i], **extra_args)
        _report(callback, x, i, sigma[i], sigma[i], denoised)
        x_euler = denoised + c_euler[i] * (x - uncond)
        if all_first[i]:
            x_new = x_euler
        else:
            x_new = c_x[i] * (x + (denoised - uncond)) + c_u[i] * uncond + c_old[i] * old_uncond
            if any_first[i]:
                x_new = _where(first[i], x_euler, x_new)
        if add_noise[i]:
            x_new = x_new + _need(noise_sampler)(host_sigma[i], host_next[i]) * noise_scale[i]
        x, old_uncond = x_new, uncond
    return x


@sampler("res_multistep_cfg_pp", group="multistep", note="RES multistep, CFG++: second order, 1 call a step",
         calls_per_step=1, flow="refused: " + EPS_FORM_ON_FLOW.format("res_multistep_cfg_pp"), cfg_pp=True,
         after="res_multistep")
@torch.no_grad()
def sample_res_multistep_cfg_pp(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None):
    """RES multistep with CFG++ (ComfyUI's res_multistep_cfg_pp: eta 0); deterministic. Refused on a flow model."""
    _refuse_on_flow(model, EPS_FORM_ON_FLOW.format("res_multistep_cfg_pp"))
    return _res_multistep_cfg_pp(model, x, sigmas, extra_args, callback, disable, 0.0, 0.0, noise_sampler)


@sampler("res_multistep_ancestral_cfg_pp", group="adds noise", note="RES multistep + fresh noise (eta), CFG++",
         calls_per_step=1, options=("eta", "s_noise"), adds_noise=True, flow=f"refused: {RES_ANCESTRAL_ON_FLOW}",
         cfg_pp=True, after="res_multistep_ancestral")
@torch.no_grad()
def sample_res_multistep_ancestral_cfg_pp(model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1.0,
                                          s_noise=1.0, noise_sampler=None):
    """RES multistep to the ancestral sigma_down with CFG++, then fresh noise of size sigma_up (ComfyUI's
    res_multistep_ancestral_cfg_pp); refused on a flow model."""
    _refuse_on_flow(model, RES_ANCESTRAL_ON_FLOW)
    return _res_multistep_cfg_pp(model, x, sigmas, extra_args, callback, disable, eta, s_noise, noise_sampler)


@sampler("gradient_estimation_cfg_pp", group="multistep", note="gradient estimation (ge_gamma 2), CFG++",
         calls_per_step=1, options=("ge_gamma",),
         flow="refused: " + EPS_FORM_ON_FLOW.format("gradient_estimation_cfg_pp"), cfg_pp=True,
         after="gradient_estimation")
@torch.no_grad()
def sample_gradient_estimation_cfg_pp(model, x, sigmas, extra_args=None, callback=None, disable=None, ge_gamma=2.0,
                                      noise_sampler=None):
    """Gradient estimation (Permenter & Yuan 2024) with CFG++ (ComfyUI's gradient_estimation_cfg_pp): x' = D +
    sigma' d with d = (x - U) / sigma, plus (ge_gamma - 1)(d - d_prev)(sigma' - sigma) from the second step; D into
    sigma = 0. Deterministic, so noise_sampler is unused. Refused on a flow model."""
    _refuse_on_flow(model, EPS_FORM_ON_FLOW.format("gradient_estimation_cfg_pp"))
    both = _both(model)
    extra_args, sigmas = _setup(model, x, sigmas, extra_args)
    sigma, sigma_next = sigmas[:-1], sigmas[1:]
    dims = _dims(x)
    c_d = dims(sigma_next)
    c_estimate = dims(torch.where(sigma_next == 0, torch.zeros_like(sigma), (ge_gamma - 1) * (sigma_next - sigma)))
    old_d = None
    for i in trange(len(sigmas) - 1, disable=disable):
        denoised, uncond = both(x, sigma[i], **extra_args)
        d = to_d(x, sigma[i], uncond)
        _report(callback, x, i, sigma[i], sigma[i], denoised)
        x_new = denoised + c_d[i] * d
        if old_d is not None:
            x_new = x_new + c_estimate[i] * (d - old_d)
        x, old_d = x_new, d
    return x
