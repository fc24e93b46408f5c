"""The samplers beyond k-diffusion's core, each against its reference: diffusers 0.42 (uni_pc, uni_pc_bh2, ddpm, lcm)
and k-diffusion 0.1.1 (dpm_fast, dpm_adaptive) on the same sigmas and noise; ComfyUI's (ipndm, ipndm_v, deis,
res_multistep, heunpp2; ComfyUI is not installable from PyPI) as a literal scalar transcription of its loop in
comfy/k_diffusion/sampling.py, and on a model with a known exact solution."""
import math

import numpy as np
import pytest
import torch

from sampler_lib import SAMPLERS, BrownianNoiseSampler, DiscreteEpsDenoiser, get_sigmas_karras, initial_noise
from tests.conftest import load_kdiffusion, toy_eps
from tests.test_samplers import Gaussian, start

DIFFUSERS_BETAS = dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)


class Replay:
    """The same standard normal draws, in order, for a diffusers scheduler (as randn_tensor) and for our sampler
    (as noise_sampler): the two consume one draw per noisy step."""

    def __init__(self, shape, n, seed=3):
        g = torch.Generator().manual_seed(seed)
        self.draws = [torch.randn(shape, generator=g) for _ in range(n)]
        self.ours = self.theirs = 0

    def randn_tensor(self, *args, **kwargs):
        self.theirs += 1
        return self.draws[self.theirs - 1]

    def __call__(self, sigma, sigma_next):
        self.ours += 1
        return self.draws[self.ours - 1]


def run_diffusers(sched, x_t):
    for t in sched.timesteps:
        x_t = sched.step(toy_eps(x_t, t.expand(1)), t, x_t).prev_sample
    return x_t


def sigma_of(alphas_cumprod, timesteps):
    a = alphas_cumprod[torch.as_tensor(timesteps).long()]
    return ((1 - a) / a) ** 0.5


@pytest.mark.parametrize("name, variant, final", [("uni_pc", "bh1", "sigma_min"), ("uni_pc_bh2", "bh2", "sigma_min"),
                                                  ("uni_pc_bh2", "bh2", "zero")])
@pytest.mark.parametrize("order", [2, 3])
@pytest.mark.parametrize("steps", [5, 12])
def test_uni_pc_matches_diffusers(name, variant, final, order, steps, sd_alphas_cumprod):
    """UniPCMultistepScheduler's own sigmas (diffusers' bh1 gives NaN into a final 0, its B(h) = -inf times 0:
    checked ending at sigma_min; ours gives the denoised image there)."""
    from diffusers import UniPCMultistepScheduler
    sched = UniPCMultistepScheduler(**DIFFUSERS_BETAS, solver_order=order, solver_type=variant,
                                    final_sigmas_type=final)
    sched.set_timesteps(steps)
    x_t = initial_noise((3, 8, 8), 4)[None]
    theirs = run_diffusers(sched, x_t.clone())
    sigmas = sched.sigmas.float()
    den = DiscreteEpsDenoiser(toy_eps, sd_alphas_cumprod)
    ours = SAMPLERS[name](den, x_t * (1 + sigmas[0] ** 2) ** 0.5, sigmas, disable=True, order=order)
    torch.testing.assert_close(ours / (1 + sigmas[-1] ** 2) ** 0.5, theirs, rtol=1e-4, atol=1e-4)


def noisy_against_diffusers(name, scheduler, module, steps, seed, alphas_cumprod, monkeypatch):
    """(ours, theirs) on the scheduler's own timesteps and the same noise; each draws once per noisy step."""
    scheduler.set_timesteps(steps)
    replay = Replay((1, 3, 8, 8), steps)
    monkeypatch.setattr(module, "randn_tensor", replay.randn_tensor)
    x_t = initial_noise((3, 8, 8), seed)[None]
    theirs = run_diffusers(scheduler, x_t.clone())
    sigmas = torch.cat([sigma_of(alphas_cumprod, scheduler.timesteps), torch.zeros(1)]).float()
    den = DiscreteEpsDenoiser(toy_eps, alphas_cumprod)
    ours = SAMPLERS[name](den, x_t * (1 + sigmas[0] ** 2) ** 0.5, sigmas, disable=True, noise_sampler=replay)
    assert replay.ours == replay.theirs == steps - 1  # no noise on the step into t = 0
    return ours, theirs


@pytest.mark.parametrize("steps", [4, 10])
def test_ddpm_matches_diffusers(steps, sd_alphas_cumprod, monkeypatch):
    from diffusers import DDPMScheduler
    from diffusers.schedulers import scheduling_ddpm
    sched = DDPMScheduler(**DIFFUSERS_BETAS, clip_sample=False, variance_type="fixed_small")
    ours, theirs = noisy_against_diffusers("ddpm", sched, scheduling_ddpm, steps, 5, sd_alphas_cumprod, monkeypatch)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("steps", [2, 4, 8])
def test_lcm_matches_diffusers(steps, sd_alphas_cumprod, monkeypatch):
    """diffusers' LCMScheduler also applies the consistency boundary condition (c_skip < 1e-6 at its timesteps),
    a property of an LCM model's wrapper: within the tolerance here."""
    from diffusers import LCMScheduler
    from diffusers.schedulers import scheduling_lcm
    ours, theirs = noisy_against_diffusers("lcm", LCMScheduler(**DIFFUSERS_BETAS), scheduling_lcm, steps, 6,
                                           sd_alphas_cumprod, monkeypatch)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("n", [2, 3, 8, 10])
@pytest.mark.parametrize("zero", [True, False])
def test_dpm_fast_matches_k_diffusion(n, zero, sd_alphas_cumprod):
    """ComfyUI's call: sigma_min = the last nonzero sigma, sigma_max = the first, N = the schedule's steps."""
    kd, ext = load_kdiffusion()
    den = DiscreteEpsDenoiser(toy_eps, sd_alphas_cumprod)
    sigmas = get_sigmas_karras(n, float(den.sigma_min), float(den.sigma_max), append_zero=zero)
    x = start(den)
    last = sigmas[-2] if zero else sigmas[-1]
    theirs = kd.sample_dpm_fast(ext.DiscreteEpsDDPMDenoiser(toy_eps, sd_alphas_cumprod, False), x, float(last),
                                float(sigmas[0]), len(sigmas) - 1, disable=True)
    calls = []
    ours = SAMPLERS["dpm_fast"](den, x, sigmas, disable=True, callback=calls.append)
    torch.testing.assert_close(ours, theirs, rtol=2e-5, atol=2e-5)
    assert [c["i"] for c in calls] == list(range(len(sigmas) - 1))  # one callback per network call


@pytest.mark.parametrize("order", [2, 3])
def test_dpm_adaptive_matches_k_diffusion_per_item(order, sd_alphas_cumprod):
    """k-diffusion controls one step size for the whole batch; ours one per item, so each item equals k-diffusion
    run on it alone, and the callback still comes N times."""
    kd, ext = load_kdiffusion()
    den = DiscreteEpsDenoiser(toy_eps, sd_alphas_cumprod)
    sigmas = get_sigmas_karras(10, float(den.sigma_min), float(den.sigma_max))
    x = start(den, batch=3)
    calls = []
    ours = SAMPLERS["dpm_adaptive"](den, x, sigmas, disable=True, order=order, callback=calls.append)
    nfe = []
    theirs_den = ext.DiscreteEpsDDPMDenoiser(toy_eps, sd_alphas_cumprod, False)
    for i in range(3):
        theirs, info = kd.sample_dpm_adaptive(theirs_den, x[i:i + 1], float(sigmas[-2]), float(sigmas[0]),
                                              order=order, disable=True, return_info=True)
        nfe.append(info["nfe"])
        torch.testing.assert_close(ours[i:i + 1], theirs, rtol=2e-5, atol=2e-5)
    assert len(calls) == 10 and min(nfe) > 10  # it chose its own steps


def test_dpm_adaptive_refuses_a_bad_order(sd_alphas_cumprod):
    den = DiscreteEpsDenoiser(toy_eps, sd_alphas_cumprod)
    with pytest.raises(ValueError, match="order must be 2 or 3"):
        SAMPLERS["dpm_adaptive"](den, start(den), get_sigmas_karras(4, 0.1, 10.0), order=4, disable=True)


# --- ComfyUI's loops, transcribed for one schedule (comfy/k_diffusion/sampling.py, deis.py) ---

def comfy_ipndm(model, x, sigmas, variable):
    buffer = []
    t = sigmas.tolist()
    for i in range(len(t) - 1):
        denoised = model(x, sigmas[i].expand(x.shape[0]))
        d = (x - denoised) / t[i]
        order = min(4, i + 1)
        if t[i + 1] == 0:
            x = denoised
        elif order == 1:
            x = x + (t[i + 1] - t[i]) * d
        elif not variable:
            c = [[3 / 2, -1 / 2], [23 / 12, -16 / 12, 5 / 12], [55 / 24, -59 / 24, 37 / 24, -9 / 24]][order - 2]
            x = x + (t[i + 1] - t[i]) * (c[0] * d + sum(ck * b for ck, b in zip(c[1:], reversed(buffer))))
        else:
            hn, h1 = t[i + 1] - t[i], t[i] - t[i - 1]
            if order == 2:
                c = [(2 + hn / h1) / 2, -(hn / h1) / 2]
            else:
                h2 = t[i - 1] - t[i - 2]
                temp1 = (1 - hn / (3 * (hn + h1)) * (hn * (hn + h1)) / (h1 * (h1 + h2))) / 2
                if order == 3:
                    c = [(2 + hn / h1) / 2 + temp1, -(hn / h1) / 2 - (1 + h1 / h2) * temp1, temp1 * h1 / h2]
                else:
                    h3 = t[i - 2] - t[i - 3]
                    temp2 = (((1 - hn / (3 * (hn + h1))) / 2 + (1 - hn / (2 * (hn + h1))) * hn / (6 * (hn + h1 + h2)))
                             * (hn * (hn + h1) * (hn + h1 + h2)) / (h1 * (h1 + h2) * (h1 + h2 + h3)))
                    q = h1 * (h1 + h2) / (h2 * (h2 + h3))
                    c = [(2 + hn / h1) / 2 + temp1 + temp2,
                         -(hn / h1) / 2 - (1 + h1 / h2) * temp1 - (1 + (h1 / h2) + q) * temp2,
                         temp1 * h1 / h2 + ((h1 / h2) + q * (1 + h2 / h3)) * temp2,
                         -temp2 * q * h1 / h2]
            x = x + hn * (c[0] * d + sum(ck * b for ck, b in zip(c[1:], reversed(buffer))))
        buffer = (buffer + [d])[-3:]
    return x


def comfy_deis_coefficients(sigmas, max_order=3, n=10000):
    """deis.get_deis_coeff_list, tab mode: EDM sigmas to VP time, integrand d sigma / dt by autograd, and a
    10,000-point sum of integrand x Lagrange polynomial."""
    eps_s, smin, smax = 1e-3, 0.002, 80
    beta_d = 2 * (np.log(smin ** 2 + 1) / eps_s - np.log(smax ** 2 + 1)) / (eps_s - 1)
    beta_min = np.log(smax ** 2 + 1) - 0.5 * beta_d
    inv = lambda s: ((beta_min ** 2 + 2 * beta_d * (s ** 2 + 1).log()).sqrt() - beta_min) / beta_d  # noqa: E731
    t_steps = inv(sigmas.double())
    beta_0, beta_1 = beta_min, beta_d + beta_min
    coeffs = []
    for i in range(len(t_steps) - 1):
        order = min(i + 1, max_order)
        if order == 1:
            coeffs.append([])
            continue
        taus = torch.linspace(float(t_steps[i]), float(t_steps[i + 1]), n, dtype=torch.float64, requires_grad=True)
        alpha = torch.exp(-0.5 * taus ** 2 * (beta_1 - beta_0) - taus * beta_0)
        alpha.log().sum().backward()
        integrand = (-0.5 * taus.grad / torch.sqrt(alpha * (1 - alpha))).detach()
        taus = taus.detach()
        prev = t_steps[[i - k for k in range(order)]]
        row = []
        for j in range(order):
            poly = 1
            for k in range(order):
                if k != j:
                    poly = poly * (taus - prev[k]) / (prev[j] - prev[k])
            row.append(float((integrand * poly).sum() * (t_steps[i + 1] - t_steps[i]) / n))
        coeffs.append(row)
    return coeffs


def comfy_deis(model, x, sigmas, coeffs):
    buffer = []
    t = sigmas.tolist()
    for i in range(len(t) - 1):
        denoised = model(x, sigmas[i].expand(x.shape[0]))
        d = (x - denoised) / t[i]
        order = 1 if t[i + 1] <= 0 else min(3, i + 1)
        if order == 1:
            x = x + (t[i + 1] - t[i]) * d
        else:
            x = x + coeffs[i][0] * d + sum(c * b for c, b in zip(coeffs[i][1:], reversed(buffer)))
        buffer = (buffer + [d])[-2:]
    return x


def comfy_res_multistep(model, x, sigmas):
    t_fn = lambda s: s.log().neg()  # noqa: E731
    old_denoised = old_sigma_down = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i].expand(x.shape[0]))
        sigma_down = sigmas[i + 1]  # eta = 0
        if sigma_down == 0 or old_denoised is None:
            x = x + (x - denoised) / sigmas[i] * (sigma_down - sigmas[i])
        else:
            t, t_old, t_next, t_prev = t_fn(sigmas[i]), t_fn(old_sigma_down), t_fn(sigma_down), t_fn(sigmas[i - 1])
            h = t_next - t
            c2 = (t_prev - t_old) / h
            phi1 = torch.expm1(-h) / -h
            phi2 = (phi1 - 1) / -h
            x = (-h).exp() * x + h * ((phi1 - phi2 / c2) * denoised + phi2 / c2 * old_denoised)
        old_denoised, old_sigma_down = denoised, sigma_down
    return x


def comfy_heunpp2(model, x, sigmas):
    s_end = sigmas[-1]
    call = lambda x_, s: model(x_, s.expand(x_.shape[0]))  # noqa: E731
    for i in range(len(sigmas) - 1):
        denoised = call(x, sigmas[i])
        d = (x - denoised) / sigmas[i]
        dt = sigmas[i + 1] - sigmas[i]
        if sigmas[i + 1] == s_end:
            x = x + d * dt
        elif sigmas[i + 2] == s_end:
            x_2 = x + d * dt
            d_2 = (x_2 - call(x_2, sigmas[i + 1])) / sigmas[i + 1]
            w2 = sigmas[i + 1] / (2 * sigmas[0])
            x = x + (d * (1 - w2) + d_2 * w2) * dt
        else:
            x_2 = x + d * dt
            d_2 = (x_2 - call(x_2, sigmas[i + 1])) / sigmas[i + 1]
            x_3 = x_2 + d_2 * (sigmas[i + 2] - sigmas[i + 1])
            d_3 = (x_3 - call(x_3, sigmas[i + 2])) / sigmas[i + 2]
            w2, w3 = sigmas[i + 1] / (3 * sigmas[0]), sigmas[i + 2] / (3 * sigmas[0])
            x = x + (d * (1 - w2 - w3) + d_2 * w2 + d_3 * w3) * dt
    return x


COMFY = {
    "ipndm": lambda m, x, s: comfy_ipndm(m, x, s, variable=False),
    "ipndm_v": lambda m, x, s: comfy_ipndm(m, x, s, variable=True),
    "res_multistep": comfy_res_multistep,
    "heunpp2": comfy_heunpp2,
}


@pytest.mark.parametrize("name", sorted(COMFY))
@pytest.mark.parametrize("n, zero", [(3, True), (10, True), (10, False)])
def test_matches_comfyui_transcription(name, n, zero, sd_alphas_cumprod):
    den = DiscreteEpsDenoiser(toy_eps, sd_alphas_cumprod)
    sigmas = get_sigmas_karras(n, float(den.sigma_min), float(den.sigma_max), append_zero=zero).double()
    x = start(den).double()
    expected = COMFY[name](den, x, sigmas)
    torch.testing.assert_close(SAMPLERS[name](den, x, sigmas, disable=True), expected, rtol=1e-6, atol=1e-6)


def test_deis_matches_comfyui_up_to_its_quadrature(sd_alphas_cumprod):
    """Ours integrates DEIS's coefficients by Gauss–Legendre, ComfyUI by a 10,000-point sum: equal trajectories to
    that sum's error, and to 1e-6 where ComfyUI's sum is refined 20-fold."""
    den = DiscreteEpsDenoiser(toy_eps, sd_alphas_cumprod)
    sigmas = get_sigmas_karras(10, float(den.sigma_min), float(den.sigma_max)).double()
    x = start(den).double()
    ours = SAMPLERS["deis"](den, x, sigmas, disable=True)
    torch.testing.assert_close(ours, comfy_deis(den, x, sigmas, comfy_deis_coefficients(sigmas)), rtol=2e-3, atol=2e-3)
    fine = comfy_deis(den, x, sigmas, comfy_deis_coefficients(sigmas, n=200_000))
    torch.testing.assert_close(ours, fine, rtol=1e-5, atol=1e-5)


# Observed order of convergence (log2 of the error ratio as steps double, 48 -> 96 -> 192 steps even in log sigma).
# Measured: ipndm 2.0 (equal-step weights on unequal steps), ipndm_v 2.6-2.8, deis 2.9, res_multistep 2.0, uni_pc 2.0
# and dpm_fast 1.9-2.0 (both take a first-order last step), heunpp2 1.0: three calls a step, Euler's order.
CONVERGENCE = {"ipndm": (1.9, 2.2), "ipndm_v": (2.5, 3.2), "deis": (2.8, 3.1), "res_multistep": (1.9, 2.1),
               "uni_pc": (1.9, 2.2), "uni_pc_bh2": (1.9, 2.2), "dpm_fast": (1.85, 2.2), "heunpp2": (0.9, 1.1)}


@pytest.mark.parametrize("name", sorted(CONVERGENCE))
def test_convergence_on_exact_solution(name):
    """On N(0, s^2) data the probability-flow ODE has a closed form; each sampler converges at its order."""
    model = Gaussian(0.7)
    x = torch.tensor([[1.3], [-0.4]], dtype=torch.float64)
    exact = model.exact(x, 20.0, 0.1)
    errors = []
    for n in (48, 96, 192):
        sigmas = torch.exp(torch.linspace(math.log(20.0), math.log(0.1), n + 1, dtype=torch.float64))
        errors.append(float((SAMPLERS[name](model, x, sigmas, disable=True) - exact).abs().max()))
    lo, hi = CONVERGENCE[name]
    rates = [math.log2(errors[0] / errors[1]), math.log2(errors[1] / errors[2])]
    assert all(lo < r < hi for r in rates), (errors, rates)


@pytest.mark.parametrize("name", ["ddpm", "lcm"])
def test_noisy_steps_use_the_seeded_noise(name, sd_alphas_cumprod):
    den = DiscreteEpsDenoiser(toy_eps, sd_alphas_cumprod)
    sigmas = get_sigmas_karras(6, float(den.sigma_min), float(den.sigma_max))
    x = start(den)
    run = lambda seeds: SAMPLERS[name](den, x, sigmas, disable=True,  # noqa: E731
                                       noise_sampler=BrownianNoiseSampler(x, seeds, 20.0))
    assert torch.equal(run([1, 2]), run([1, 2])) and not torch.allclose(run([1, 2]), run([3, 4]))
    with pytest.raises(ValueError, match="noise_sampler"):
        SAMPLERS[name](den, x, sigmas, disable=True)
