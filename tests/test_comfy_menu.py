"""The rest of ComfyUI's KSampler menu (sampler_lib/comfy_menu.py): res_multistep_ancestral and gradient_estimation
against a literal scalar transcription of their loops in comfy/k_diffusion/sampling.py (ComfyUI is not installable
from PyPI), dpmpp_2m_sde_heun against k-diffusion 0.1.1 (eps) and ComfyUI's CONST loop (flow), on the same sigmas and
seeded noise; res_multistep_ancestral at eta 0 is res_multistep; gradient_estimation on an exact ODE; the `_gpu`
names are their namesakes."""
import math

import pytest
import torch

import sampler_lib.comfy_menu  # noqa: F401  (registers them)
from sampler_lib import REGISTRY, BrownianNoiseSampler, DiscreteEpsDenoiser, get_sigmas_karras, round_sigmas
from sampler_lib.comfy_menu import ANCESTRAL_ON_FLOW
from tests.conftest import load_kdiffusion, toy_eps
from tests.test_flow_samplers import comfy_dpmpp_2m_sde, flow_den, flow_sigmas
from tests.test_samplers import Gaussian, start


def comfy_res_multistep(model, x, sigmas, noise_sampler, eta=1.0, s_noise=1.0):
    """res_multistep (cfg_pp False): sample_res_multistep is eta 0, sample_res_multistep_ancestral eta 1."""
    s_in = x.new_ones([x.shape[0]])
    sigma_fn = lambda t: t.neg().exp()  # noqa: E731
    t_fn = lambda sigma: sigma.log().neg()  # noqa: E731
    phi1_fn = lambda t: torch.expm1(t) / t  # noqa: E731
    phi2_fn = lambda t: (phi1_fn(t) - 1.0) / t  # noqa: E731
    old_sigma_down = old_denoised = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in)
        if not eta:
            sigma_down, sigma_up = sigmas[i + 1], 0.0
        else:
            sigma_up = min(sigmas[i + 1], eta * (sigmas[i + 1] ** 2 * (sigmas[i] ** 2 - sigmas[i + 1] ** 2)
                                                 / sigmas[i] ** 2) ** 0.5)
            sigma_down = (sigmas[i + 1] ** 2 - sigma_up ** 2) ** 0.5
        if sigma_down == 0 or old_denoised is None:
            d = (x - denoised) / sigmas[i]
            x = x + d * (sigma_down - sigmas[i])
        else:
            t, t_old, t_next, t_prev = t_fn(sigmas[i]), t_fn(old_sigma_down), t_fn(sigma_down), t_fn(sigmas[i - 1])
            h = t_next - t
            c2 = (t_prev - t_old) / h
            phi1_val, phi2_val = phi1_fn(-h), phi2_fn(-h)
            b1 = torch.nan_to_num(phi1_val - phi2_val / c2, nan=0.0)
            b2 = torch.nan_to_num(phi2_val / c2, nan=0.0)
            x = sigma_fn(h) * x + h * (b1 * denoised + b2 * old_denoised)
        if sigmas[i + 1] > 0:
            x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
        old_denoised = denoised
        old_sigma_down = sigma_down
    return x


def comfy_gradient_estimation(model, x, sigmas, ge_gamma=2.0):
    s_in = x.new_ones([x.shape[0]])
    old_d = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in)
        d = (x - denoised) / sigmas[i]
        dt = sigmas[i + 1] - sigmas[i]
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            x = x + d * dt
            if i >= 1:
                d_bar = (ge_gamma - 1) * (d - old_d)
                x = x + d_bar * dt
        old_d = d
    return x


def eps_setup(sd_alphas_cumprod, n, zero):
    den = DiscreteEpsDenoiser(toy_eps, sd_alphas_cumprod)
    sigmas = get_sigmas_karras(n, float(den.sigma_min), float(den.sigma_max), append_zero=zero).double()
    return den, sigmas, start(den).double()


@pytest.mark.parametrize("eta, s_noise", [(1.0, 1.0), (0.5, 1.0), (1.0, 0.6), (0.0, 1.0)])
@pytest.mark.parametrize("n, zero", [(3, True), (10, True), (10, False)])
def test_res_multistep_ancestral_matches_comfyui_transcription(eta, s_noise, n, zero, sd_alphas_cumprod):
    den, sigmas, x = eps_setup(sd_alphas_cumprod, n, zero)
    noise = lambda: BrownianNoiseSampler(x, [3, 4], 20.0)  # noqa: E731
    theirs = comfy_res_multistep(den, x, sigmas, noise(), eta=eta, s_noise=s_noise)
    ours = REGISTRY["res_multistep_ancestral"].fn(den, x, sigmas, disable=True, noise_sampler=noise(), eta=eta,
                                                  s_noise=s_noise)
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-6)
    if eta == 0:  # ComfyUI's res_multistep is this loop at eta 0
        torch.testing.assert_close(ours, REGISTRY["res_multistep"].fn(den, x, sigmas, disable=True), rtol=1e-6,
                                   atol=1e-6)


@pytest.mark.parametrize("n, zero", [(1, True), (3, True), (10, True), (10, False)])
def test_gradient_estimation_matches_comfyui_transcription(n, zero, sd_alphas_cumprod):
    den, sigmas, x = eps_setup(sd_alphas_cumprod, n, zero)
    ours = REGISTRY["gradient_estimation"].fn(den, x, sigmas, disable=True)
    torch.testing.assert_close(ours, comfy_gradient_estimation(den, x, sigmas), rtol=1e-6, atol=1e-6)


def test_gradient_estimation_converges_on_an_exact_ode():
    """On N(0, s^2) data the probability-flow ODE has a closed form. gamma 2 extrapolates d by a full step, 2 d -
    d_prev, not Adams-Bashforth's 3/2 d - 1/2 d_prev: first order like Euler, a little closer. Measured (48 -> 96 ->
    192 steps even in log sigma): errors 1.12e-3, 5.9e-4, 3.0e-4 (Euler 1.22e-3, 6.2e-4, 3.1e-4)."""
    model = Gaussian(0.7)
    x = torch.tensor([[1.3], [-0.4]], dtype=torch.float64)
    exact = model.exact(x, 20.0, 0.1)
    errors = {}
    for name in ("gradient_estimation", "euler"):
        errors[name] = []
        for n in (48, 96, 192):
            sigmas = torch.exp(torch.linspace(math.log(20.0), math.log(0.1), n + 1, dtype=torch.float64))
            errors[name].append(float((REGISTRY[name].fn(model, x, sigmas, disable=True) - exact).abs().max()))
    rates = [math.log2(errors["gradient_estimation"][k] / errors["gradient_estimation"][k + 1]) for k in (0, 1)]
    assert all(0.85 < r < 1.1 for r in rates), (errors, rates)
    assert all(g < e for g, e in zip(errors["gradient_estimation"], errors["euler"])), errors


@pytest.mark.parametrize("eta", [1.0, 0.5])
@pytest.mark.parametrize("zero", [True, False])
def test_dpmpp_2m_sde_heun_is_k_diffusions_heun_solver(eta, zero, sd_alphas_cumprod):
    kd, ext = load_kdiffusion()
    den, sigmas, x = eps_setup(sd_alphas_cumprod, 10, zero)
    theirs_den = ext.DiscreteEpsDDPMDenoiser(toy_eps, sd_alphas_cumprod, False)
    noise = lambda: BrownianNoiseSampler(x, [5, 6], 20.0)  # noqa: E731
    theirs = kd.sample_dpmpp_2m_sde(theirs_den, x.float(), sigmas.float(), disable=True, eta=eta,
                                    noise_sampler=noise(), solver_type="heun")
    ours = REGISTRY["dpmpp_2m_sde_heun"].fn(den, x.float(), sigmas.float(), disable=True, eta=eta,
                                            noise_sampler=noise())
    torch.testing.assert_close(ours, theirs, rtol=2e-5, atol=2e-5)


def test_dpmpp_2m_sde_heun_on_flow_is_comfyuis_heun_solver():
    den = flow_den()
    sigmas = flow_sigmas("simple", 10).double()
    x = start(den).double() / 14.6
    noise = lambda: BrownianNoiseSampler(x, [5, 6], 1.0)  # noqa: E731
    theirs = comfy_dpmpp_2m_sde(den, x, sigmas, noise(), solver_type="heun")
    ours = REGISTRY["dpmpp_2m_sde_heun"].fn(den, x, sigmas, disable=True, noise_sampler=noise())
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-6)


def test_the_gpu_names_are_their_namesakes():
    for name in ("dpmpp_sde", "dpmpp_2m_sde", "dpmpp_2m_sde_heun", "dpmpp_3m_sde"):
        spec = REGISTRY[name + "_gpu"]
        assert spec.fn is REGISTRY[name].fn and spec.alias_of == name and "seeded path on any device" in spec.note


def test_res_multistep_ancestral_refuses_a_flow_model_unless_eta_is_0():
    den = flow_den()
    sigmas = flow_sigmas("simple", 6).double()
    x = start(den).double() / 14.6
    with pytest.raises(ValueError, match="eps-form ancestral noise"):
        REGISTRY["res_multistep_ancestral"].fn(den, x, sigmas, disable=True, noise_sampler=BrownianNoiseSampler(
            x, [1, 2], 1.0))
    assert REGISTRY["res_multistep_ancestral"].flow == "refused: " + ANCESTRAL_ON_FLOW
    at_zero = REGISTRY["res_multistep_ancestral"].fn(den, x, sigmas, disable=True, eta=0.0)
    torch.testing.assert_close(at_zero, REGISTRY["res_multistep"].fn(den, x, sigmas, disable=True))


@pytest.mark.parametrize("name", ["res_multistep_ancestral", "gradient_estimation"])
def test_zero_length_steps_of_paper_mode_change_nothing(name, sd_alphas_cumprod):
    """Paper mode rounds a dense schedule onto the training grid, so neighbours coincide: the result equals the run
    on the schedule without its repeats (ComfyUI's res_multistep divides by the repeat)."""
    den = DiscreteEpsDenoiser(toy_eps, sd_alphas_cumprod, quantize="paper")
    sigmas = get_sigmas_karras(120, float(den.sigma_min), float(den.sigma_max)).double()
    rounded = round_sigmas(den, sigmas)
    distinct = torch.cat([rounded[:1], rounded[1:][rounded[1:] != rounded[:-1]]])
    assert len(distinct) < len(sigmas)  # the case under test really happens
    x = start(den).double()
    run = lambda s: REGISTRY[name].fn(den, x, s, disable=True, eta=0.0) if name != "gradient_estimation" \
        else REGISTRY[name].fn(den, x, s, disable=True)  # noqa: E731
    out = run(sigmas)
    assert torch.isfinite(out).all()
    if name == "res_multistep_ancestral":
        torch.testing.assert_close(out, run(distinct), rtol=1e-6, atol=1e-6)
