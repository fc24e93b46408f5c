"""Samplers on flow models (#34 item 3): every sampler that adds noise takes the rectified-flow formula ComfyUI uses on
a CONST model, checked against a literal scalar transcription of its loop in comfy/k_diffusion/sampling.py
(sample_euler_ancestral_RF, sample_dpm_2_ancestral_RF, sample_dpmpp_2s_ancestral_RF, and sample_dpmpp_sde,
sample_dpmpp_2m_sde, sample_dpmpp_3m_sde, sample_lcm with CONST's half-log-SNR, alpha and noise_scaling; ComfyUI is not
installable from PyPI) on the same sigmas and the same seeded Brownian noise. ddpm, which ComfyUI runs on a flow with
its eps formulas, samples the flow's own DDPM posterior (written down here from Kingma et al. 2021). Each keeps the
flow's marginal x = (1 - sigma) x0 + sigma noise on a one-point data set; at eta 0 each is its deterministic
counterpart; Karras churn is refused; no step reads the device."""
import pytest
import torch

from sampler_lib import (
    SAMPLERS,
    SCHEDULES,
    BrownianNoiseSampler,
    Denoiser,
    DiscreteEpsDenoiser,
    FlowSampling,
    initial_noise,
)
from sampler_lib.samplers import CHURN_ON_FLOW, flow_sampling
from tests.conftest import toy_eps
from tests.test_model_sampling import _DeviceReads, batch, toy_velocity

NOISY = ("euler_ancestral", "dpm_2_ancestral", "dpmpp_2s_ancestral", "dpmpp_sde", "dpmpp_2m_sde", "dpmpp_3m_sde",
         "ddpm", "lcm")
ETA = ("euler_ancestral", "dpm_2_ancestral", "dpmpp_2s_ancestral", "dpmpp_sde", "dpmpp_2m_sde", "dpmpp_3m_sde")
SHIFT = 3.0


def flow_den(quantize="off", shift=SHIFT):
    return Denoiser(toy_velocity, FlowSampling(shift=shift), quantize=quantize)


def flow_sigmas(name, n, shift=SHIFT, zero=True):
    ms = FlowSampling(shift=shift)
    sigmas = SCHEDULES[name](n if zero else n + 1, ms)
    return sigmas if zero else sigmas[:-1]


# --- ComfyUI's loops, written down (comfy/k_diffusion/sampling.py; model_sampling CONST, noise_scale 1) ------------

def comfy_time_snr_shift(alpha, t):
    return t if alpha == 1.0 else alpha * t / (1 + (alpha - 1) * t)


def comfy_offset_first_sigma(sigmas, shift):
    """offset_first_sigma_for_snr: a first sigma >= 1 becomes percent_to_sigma(1e-4) = shift of 1 - 1e-4."""
    if sigmas[0] >= 1:
        sigmas = sigmas.clone()
        sigmas[0] = comfy_time_snr_shift(shift, 1.0 - 1e-4)
    return sigmas


def comfy_get_ancestral_step(sigma_from, sigma_to, eta=1.0):
    if not eta:
        return sigma_to, 0.0
    sigma_up = min(sigma_to, eta * (sigma_to ** 2 * (sigma_from ** 2 - sigma_to ** 2) / sigma_from ** 2) ** 0.5)
    sigma_down = (sigma_to ** 2 - sigma_up ** 2) ** 0.5
    return sigma_down, sigma_up


def comfy_to_d(x, sigma, denoised):
    return (x - denoised) / sigma


def comfy_euler_ancestral_rf(model, x, sigmas, noise_sampler, eta=1.0, s_noise=1.0, **_):
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in)
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            downstep_ratio = 1 + (sigmas[i + 1] / sigmas[i] - 1) * eta
            sigma_down = sigmas[i + 1] * downstep_ratio
            alpha_ip1 = 1 - sigmas[i + 1]
            alpha_down = 1 - sigma_down
            renoise_coeff = (sigmas[i + 1] ** 2 - sigma_down ** 2 * alpha_ip1 ** 2 / alpha_down ** 2) ** 0.5
            sigma_down_i_ratio = sigma_down / sigmas[i]
            x = sigma_down_i_ratio * x + (1 - sigma_down_i_ratio) * denoised
            if eta > 0:
                x = (alpha_ip1 / alpha_down) * x + noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * renoise_coeff
    return x


def comfy_dpm_2_ancestral_rf(model, x, sigmas, noise_sampler, eta=1.0, s_noise=1.0, **_):
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in)
        downstep_ratio = 1 + (sigmas[i + 1] / sigmas[i] - 1) * eta
        sigma_down = sigmas[i + 1] * downstep_ratio
        alpha_ip1 = 1 - sigmas[i + 1]
        alpha_down = 1 - sigma_down
        renoise_coeff = (sigmas[i + 1] ** 2 - sigma_down ** 2 * alpha_ip1 ** 2 / alpha_down ** 2) ** 0.5
        d = comfy_to_d(x, sigmas[i], denoised)
        if sigma_down == 0:
            x = x + d * (sigma_down - sigmas[i])
        else:
            sigma_mid = sigmas[i].log().lerp(sigma_down.log(), 0.5).exp()
            x_2 = x + d * (sigma_mid - sigmas[i])
            d_2 = comfy_to_d(x_2, sigma_mid, model(x_2, sigma_mid * s_in))
            x = x + d_2 * (sigma_down - sigmas[i])
            x = (alpha_ip1 / alpha_down) * x + noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * renoise_coeff
    return x


def comfy_dpmpp_2s_ancestral_rf(model, x, sigmas, noise_sampler, eta=1.0, s_noise=1.0, **_):
    s_in = x.new_ones([x.shape[0]])
    sigma_fn = lambda lbda: (lbda.exp() + 1) ** -1  # noqa: E731
    lambda_fn = lambda sigma: ((1 - sigma) / sigma).log()  # noqa: E731
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in)
        downstep_ratio = 1 + (sigmas[i + 1] / sigmas[i] - 1) * eta
        sigma_down = sigmas[i + 1] * downstep_ratio
        alpha_ip1 = 1 - sigmas[i + 1]
        alpha_down = 1 - sigma_down
        renoise_coeff = (sigmas[i + 1] ** 2 - sigma_down ** 2 * alpha_ip1 ** 2 / alpha_down ** 2) ** 0.5
        if sigmas[i + 1] == 0:
            x = x + comfy_to_d(x, sigmas[i], denoised) * (sigma_down - sigmas[i])
        else:
            if sigmas[i] == 1.0:
                sigma_s = torch.tensor(0.9999)
            else:
                t_i, t_down = lambda_fn(sigmas[i]), lambda_fn(sigma_down)
                h = t_down - t_i
                sigma_s = sigma_fn(t_i + h / 2)
            sigma_s_i_ratio = sigma_s / sigmas[i]
            u = sigma_s_i_ratio * x + (1 - sigma_s_i_ratio) * denoised
            D_i = model(u, sigma_s * s_in)
            sigma_down_i_ratio = sigma_down / sigmas[i]
            x = sigma_down_i_ratio * x + (1 - sigma_down_i_ratio) * D_i
        if sigmas[i + 1] > 0 and eta > 0:
            x = (alpha_ip1 / alpha_down) * x + noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * renoise_coeff
    return x


# CONST's sigma_to_half_log_snr / half_log_snr_to_sigma
comfy_lambda = lambda sigma: sigma.logit().neg()  # noqa: E731
comfy_sigma = lambda half_log_snr: half_log_snr.neg().sigmoid()  # noqa: E731


def comfy_dpmpp_sde(model, x, sigmas, noise_sampler, eta=1.0, s_noise=1.0, r=1 / 2, **_):
    s_in = x.new_ones([x.shape[0]])
    sigmas = comfy_offset_first_sigma(sigmas, SHIFT)
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in)
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            lambda_s, lambda_t = comfy_lambda(sigmas[i]), comfy_lambda(sigmas[i + 1])
            h = lambda_t - lambda_s
            lambda_s_1 = lambda_s + r * h
            fac = 1 / (2 * r)
            sigma_s_1 = comfy_sigma(lambda_s_1)
            alpha_s = sigmas[i] * lambda_s.exp()
            alpha_s_1 = sigma_s_1 * lambda_s_1.exp()
            alpha_t = sigmas[i + 1] * lambda_t.exp()
            sd, su = comfy_get_ancestral_step(lambda_s.neg().exp(), lambda_s_1.neg().exp(), eta)
            h_ = sd.log().neg() - lambda_s
            x_2 = (alpha_s_1 / alpha_s) * (-h_).exp() * x - alpha_s_1 * (-h_).expm1() * denoised
            if eta > 0 and s_noise > 0:
                x_2 = x_2 + alpha_s_1 * noise_sampler(sigmas[i], sigma_s_1) * s_noise * su
            denoised_2 = model(x_2, sigma_s_1 * s_in)
            sd, su = comfy_get_ancestral_step(lambda_s.neg().exp(), lambda_t.neg().exp(), eta)
            h_ = sd.log().neg() - lambda_s
            denoised_d = (1 - fac) * denoised + fac * denoised_2
            x = (alpha_t / alpha_s) * (-h_).exp() * x - alpha_t * (-h_).expm1() * denoised_d
            if eta > 0 and s_noise > 0:
                x = x + alpha_t * noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * su
    return x


def comfy_dpmpp_2m_sde(model, x, sigmas, noise_sampler, eta=1.0, s_noise=1.0, solver_type="midpoint", **_):
    s_in = x.new_ones([x.shape[0]])
    sigmas = comfy_offset_first_sigma(sigmas, SHIFT)
    old_denoised, h, h_last = None, None, None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in)
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            lambda_s, lambda_t = comfy_lambda(sigmas[i]), comfy_lambda(sigmas[i + 1])
            h = lambda_t - lambda_s
            h_eta = h * (eta + 1)
            alpha_t = sigmas[i + 1] * lambda_t.exp()
            x = sigmas[i + 1] / sigmas[i] * (-h * eta).exp() * x + alpha_t * (-h_eta).expm1().neg() * denoised
            if old_denoised is not None:
                r = h_last / h
                if solver_type == "heun":
                    x = x + alpha_t * ((-h_eta).expm1().neg() / (-h_eta) + 1) * (1 / r) * (denoised - old_denoised)
                else:
                    x = x + 0.5 * alpha_t * (-h_eta).expm1().neg() * (1 / r) * (denoised - old_denoised)
            if eta > 0 and s_noise > 0:
                x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * sigmas[i + 1] * (-2 * h * eta).expm1().neg().sqrt() \
                    * s_noise
        old_denoised = denoised
        h_last = h
    return x


def comfy_dpmpp_3m_sde(model, x, sigmas, noise_sampler, eta=1.0, s_noise=1.0, **_):
    s_in = x.new_ones([x.shape[0]])
    sigmas = comfy_offset_first_sigma(sigmas, SHIFT)
    denoised_1, denoised_2 = None, None
    h, h_1, h_2 = None, None, None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in)
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            lambda_s, lambda_t = comfy_lambda(sigmas[i]), comfy_lambda(sigmas[i + 1])
            h = lambda_t - lambda_s
            h_eta = h * (eta + 1)
            alpha_t = sigmas[i + 1] * lambda_t.exp()
            x = sigmas[i + 1] / sigmas[i] * (-h * eta).exp() * x + alpha_t * (-h_eta).expm1().neg() * denoised
            if h_2 is not None:
                r0, r1 = h_1 / h, h_2 / h
                d1_0 = (denoised - denoised_1) / r0
                d1_1 = (denoised_1 - denoised_2) / r1
                d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
                d2 = (d1_0 - d1_1) / (r0 + r1)
                phi_2 = h_eta.neg().expm1() / h_eta + 1
                phi_3 = phi_2 / h_eta - 0.5
                x = x + (alpha_t * phi_2) * d1 - (alpha_t * phi_3) * d2
            elif h_1 is not None:
                r = h_1 / h
                d = (denoised - denoised_1) / r
                phi_2 = h_eta.neg().expm1() / h_eta + 1
                x = x + (alpha_t * phi_2) * d
            if eta > 0 and s_noise > 0:
                x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * sigmas[i + 1] * (-2 * h * eta).expm1().neg().sqrt() \
                    * s_noise
        denoised_1, denoised_2 = denoised, denoised_1
        h_1, h_2 = h, h_1
    return x


def comfy_lcm(model, x, sigmas, noise_sampler, s_noise=1.0, **_):
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in)
        x = denoised
        if sigmas[i + 1] > 0:
            noise = noise_sampler(sigmas[i], sigmas[i + 1])
            if s_noise != 1.0:
                noise = noise * s_noise
            x = sigmas[i + 1] * noise + (1.0 - sigmas[i + 1]) * x  # CONST.noise_scaling
    return x


def vdm_ddpm(model, x, sigmas, noise_sampler, s_noise=1.0, alpha=lambda s: 1 - s, **_):
    """DDPM's ancestral step as the posterior q(x_s | x_t, x0 = D) of any Gaussian noising x_t = alpha_t x0 + sigma_t
    noise (Kingma et al. 2021, eq. 32-33): alpha_ts = alpha_t / alpha_s, sigma_ts^2 = sigma_t^2 - alpha_ts^2 sigma_s^2,
    mean (alpha_ts sigma_s^2 / sigma_t^2) x_t + (alpha_s sigma_ts^2 / sigma_t^2) x0, variance sigma_ts^2 sigma_s^2 /
    sigma_t^2. A flow: alpha = 1 - sigma; an eps model in Karras coordinates: alpha = 1."""
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        t, s = sigmas[i].double(), sigmas[i + 1].double()
        denoised = model(x, sigmas[i] * s_in)
        alpha_ts = alpha(t) / alpha(s)
        var_ts = t ** 2 - alpha_ts ** 2 * s ** 2
        x = (alpha_ts * s ** 2 / t ** 2) * x + (alpha(s) * var_ts / t ** 2) * denoised
        if s > 0:
            x = x + (var_ts * s ** 2 / t ** 2).sqrt() * noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise
    return x.float()


COMFY = {
    "euler_ancestral": comfy_euler_ancestral_rf,
    "dpm_2_ancestral": comfy_dpm_2_ancestral_rf,
    "dpmpp_2s_ancestral": comfy_dpmpp_2s_ancestral_rf,
    "dpmpp_sde": comfy_dpmpp_sde,
    "dpmpp_2m_sde": comfy_dpmpp_2m_sde,
    "dpmpp_3m_sde": comfy_dpmpp_3m_sde,
    "lcm": comfy_lcm,
    "ddpm": vdm_ddpm,
}


# Vectorised and scalar float32 kernels (sigmoid, log) can differ in the last bit; an SDE's mid-step sigma is a key of
# the Brownian noise, and one ulp at sigma ~0.4 is a third of the Brownian tree's leaf (1.5 / 2**24): up to ~1e-4 here.
TOL = dict(rtol=1e-4, atol=3e-4)


def run_both(name, sigmas, seed=7, **kwargs):
    den = flow_den()
    x = den.model_sampling.initial_latent(batch(2, seed), sigmas[0])
    ours = SAMPLERS[name](den, x, sigmas, disable=True, noise_sampler=BrownianNoiseSampler(x, [1, 2], 1.5), **kwargs)
    theirs = COMFY[name](den, x, sigmas, BrownianNoiseSampler(x, [1, 2], 1.5), **kwargs)
    return ours, theirs


@pytest.mark.parametrize("name", NOISY)
@pytest.mark.parametrize("schedule, n, zero", [("simple", 4, True), ("simple", 9, True), ("karras", 7, True),
                                               ("normal", 6, False), ("beta", 10, True)])
def test_matches_comfyui_rf_transcription(name, schedule, n, zero):
    """The same flow sigmas and the same Brownian noise: our sampler equals ComfyUI's loop on a CONST model."""
    sigmas = flow_sigmas(schedule, n, zero=zero)
    ours, theirs = run_both(name, sigmas)
    assert torch.isfinite(ours).all()
    torch.testing.assert_close(ours, theirs, **TOL)


@pytest.mark.parametrize("name", ETA)
@pytest.mark.parametrize("eta, s_noise", [(0.5, 1.0), (1.0, 0.7), (0.0, 1.0)])
def test_matches_comfyui_rf_transcription_at_other_eta(name, eta, s_noise):
    ours, theirs = run_both(name, flow_sigmas("simple", 8), eta=eta, s_noise=s_noise)
    torch.testing.assert_close(ours, theirs, **TOL)


@pytest.mark.parametrize("solver_type", ["heun", "midpoint"])
def test_dpmpp_2m_sde_solver_types_match_comfyui_on_flow(solver_type):
    ours, theirs = run_both("dpmpp_2m_sde", flow_sigmas("karras", 9), solver_type=solver_type)
    torch.testing.assert_close(ours, theirs, **TOL)


def test_ddpm_posterior_is_the_eps_models_ddpm_at_alpha_one(sd_alphas_cumprod):
    """The posterior written down for any alpha is, at alpha = 1, the eps model's ddpm (diffusers' DDPMScheduler,
    tested in test_more_samplers): the flow's ddpm is the same step on the flow's own noising."""
    den = DiscreteEpsDenoiser(toy_eps, sd_alphas_cumprod)
    sigmas = torch.tensor([14.6, 6.0, 2.0, 0.7, 0.1, 0.0])
    x = batch(2, 3) * sigmas[0]
    ours = SAMPLERS["ddpm"](den, x, sigmas, disable=True, noise_sampler=BrownianNoiseSampler(x, [1, 2], 20.0))
    theirs = vdm_ddpm(den, x, sigmas, BrownianNoiseSampler(x, [1, 2], 20.0), alpha=lambda s: torch.ones_like(s))
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)


# --- what holds whatever the reference: the flow's marginals, eta 0, lockstep, seeds, no device reads ---------------

def point_mass(x0):
    """The exact flow network of a one-point data set x0: v = (x - x0) / sigma, so D = x0 at every sigma."""
    def velocity(x, t, **_):
        return (x - x0) / (t / 1000)[:, None, None, None]
    return Denoiser(velocity, FlowSampling(shift=SHIFT))


@pytest.mark.parametrize("name", NOISY)
def test_noise_keeps_the_flows_marginal_on_a_point_mass(name):
    """With D = x0 exactly, x at every step's start must be (1 - sigma) x0 + sigma z with z standard normal: the
    noise is re-added with the flow's scaling. The eps formulas on a flow (what these samplers did before) miss it."""
    n = 64
    x0 = 2.0 + batch(n, 100) * 0.5  # away from 0, so a wrong weight on x0 shows in z's mean
    den = point_mass(x0)
    sigmas = flow_sigmas("simple", 6)
    seen = []

    def record(info):
        s = info["sigma"][0]
        seen.append((float(s), ((info["x"] - (1 - s) * x0) / s)))

    for model in (den, lambda x, sigma: den(x, sigma)):  # the second hides model_sampling: the eps formulas
        seen.clear()
        x = den.model_sampling.initial_latent(batch(n, 0), sigmas[0])
        out = SAMPLERS[name](model, x, sigmas, disable=True, callback=record,
                             noise_sampler=BrownianNoiseSampler(x, list(range(n)), 1.5))
        torch.testing.assert_close(out, x0, rtol=1e-4, atol=1e-4)
        means, stds = [float(z.mean()) for _, z in seen[1:]], [float(z.std()) for _, z in seen[1:]]
        if model is den:
            assert all(abs(m) < 0.05 for m in means) and all(abs(v - 1) < 0.05 for v in stds), (name, means, stds)
        else:  # the eps formulas leave (sigma_next - sigma_down) x0 too much of the data in x (mean up to ~1.4)
            assert max(abs(m) for m in means) > 0.3, (name, means)


@pytest.mark.parametrize("name, deterministic", [("euler_ancestral", "euler"), ("dpm_2_ancestral", "dpm_2")])
def test_at_eta_zero_the_ancestral_samplers_are_their_odes(name, deterministic):
    den, sigmas = flow_den(), flow_sigmas("karras", 7)
    x = den.model_sampling.initial_latent(batch(2, 4), sigmas[0])
    ours = SAMPLERS[name](den, x, sigmas, disable=True, eta=0.0, noise_sampler=BrownianNoiseSampler(x, [1, 2], 1.5))
    torch.testing.assert_close(ours, SAMPLERS[deterministic](den, x, sigmas, disable=True), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ETA)
def test_at_eta_zero_every_sde_lands_on_an_exact_flows_data(name):
    """On an exact flow ODE (one data point) every eta-0 sampler is deterministic and ends on the data, as Euler."""
    x0 = batch(2, 11)
    den, sigmas = point_mass(x0), flow_sigmas("simple", 6)
    x = den.model_sampling.initial_latent(batch(2, 3), sigmas[0])
    out = SAMPLERS[name](den, x, sigmas, disable=True, eta=0.0, noise_sampler=None if name in (
        "dpmpp_2m_sde", "dpmpp_3m_sde") else BrownianNoiseSampler(x, [1, 2], 1.5))
    torch.testing.assert_close(out, x0, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", NOISY)
@pytest.mark.parametrize("quantize", ["off", ("paper", "ingress")], ids=str)
def test_per_item_schedules_equal_separate_runs_on_flow(name, quantize):
    """Two arms in lockstep (the engine's batch) equal each arm alone, each with its own schedule and seed."""
    modes = (quantize,) * 2 if isinstance(quantize, str) else quantize
    schedules = [flow_sigmas("simple", 6), flow_sigmas("karras", 6)]
    noise = batch(2, 9)
    together = SAMPLERS[name](flow_den(quantize), noise, torch.stack(schedules, 1), disable=True,
                              noise_sampler=BrownianNoiseSampler(noise, [5, 6], 1.5))
    for k in range(2):
        alone = SAMPLERS[name](flow_den(modes[k]), noise[k:k + 1], schedules[k], disable=True,
                               noise_sampler=BrownianNoiseSampler(noise[k:k + 1], [5 + k], 1.5))
        torch.testing.assert_close(together[k:k + 1], alone, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", NOISY)
def test_same_seed_same_image_and_seeds_differ(name):
    sigmas = flow_sigmas("simple", 5)
    runs = [SAMPLERS[name](flow_den(), batch(1, 2), sigmas, disable=True,
                           noise_sampler=BrownianNoiseSampler(batch(1, 2), [seed], 1.5)) for seed in (4, 4, 5)]
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])


@pytest.mark.parametrize("name", ["euler", "heun", "dpm_2", "heunpp2"])
def test_churn_is_refused_on_a_flow_model(name):
    sigmas = flow_sigmas("simple", 5)
    x = batch(1, 2)
    with pytest.raises(ValueError, match="s_churn") as err:
        SAMPLERS[name](flow_den(), x, sigmas, disable=True, s_churn=1.0,
                       noise_sampler=BrownianNoiseSampler(x, [1], 1.5))
    assert str(err.value) == CHURN_ON_FLOW and "\n" not in CHURN_ON_FLOW
    # no churn: the same samplers run on a flow model
    assert torch.isfinite(SAMPLERS[name](flow_den(), x, sigmas, disable=True)).all()


def test_the_sampler_reads_the_family_from_the_denoiser(sd_alphas_cumprod):
    assert flow_sampling(flow_den()) is not None
    assert flow_sampling(DiscreteEpsDenoiser(toy_eps, sd_alphas_cumprod)) is None
    assert flow_sampling(lambda x, sigma: x) is None  # a bare callable is an eps model, as k-diffusion's


def test_eta_above_one_never_steps_below_zero():
    """ComfyUI's sigma_down goes negative where eta > 1 / (1 - sigma_next / sigma); ours stops at 0 and re-noises
    from the denoised image, still the flow's marginal."""
    from sampler_lib.samplers import get_ancestral_step_rf
    sigma, sigma_next = torch.tensor([1.0, 0.5, 0.2]), torch.tensor([0.5, 0.2, 0.0])
    for eta in (0.0, 0.5, 1.0, 3.0, 10.0):
        down, ratio, renoise = get_ancestral_step_rf(sigma, sigma_next, eta)
        assert bool((down >= 0).all()) and bool((down <= sigma_next).all()) and torch.isfinite(renoise).all()
        # the re-noised x has exactly the flow's noise at sigma_next: (ratio * down)^2 + renoise^2 = sigma_next^2
        torch.testing.assert_close((ratio * down) ** 2 + renoise ** 2, sigma_next ** 2)
    x0 = batch(2, 11)
    den, sigmas = point_mass(x0), flow_sigmas("simple", 6)
    x = den.model_sampling.initial_latent(batch(2, 3), sigmas[0])
    for name in ("euler_ancestral", "dpm_2_ancestral", "dpmpp_2s_ancestral"):
        out = SAMPLERS[name](den, x, sigmas, disable=True, eta=5.0, noise_sampler=BrownianNoiseSampler(x, [1, 2], 1.5))
        torch.testing.assert_close(out, x0, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", NOISY)
@pytest.mark.parametrize("quantize", ["paper", ("paper", "ingress")], ids=str)
def test_no_step_of_a_flow_sampler_waits_on_the_device(name, quantize, monkeypatch):
    """The flow formulas are planned before the loop (ARCHITECTURE.md): device reads do not grow with the steps."""
    def reads(steps):
        den = flow_den(quantize)
        sigmas = flow_sigmas("simple", steps)
        x = den.model_sampling.initial_latent(batch(2), sigmas[0])
        counted, tolist = _DeviceReads(), torch.Tensor.tolist
        monkeypatch.setattr(torch.Tensor, "tolist",
                            lambda t: (setattr(counted, "count", counted.count + 1), tolist(t))[1])
        with counted:
            out = SAMPLERS[name](den, x, sigmas, disable=True, noise_sampler=BrownianNoiseSampler(x, [1, 2], 1.5))
        monkeypatch.undo()
        assert torch.isfinite(out).all()
        return counted.count

    assert reads(4) == reads(12)


@pytest.mark.parametrize("name", ["euler_ancestral", "dpmpp_2m_sde"])
def test_the_engine_samples_a_flow_model_with_the_flow_formulas(name):
    from comparisons.core.config import SamplerConfig, schedule
    from comparisons.core.engine import Sample, sample_arms
    from tests.test_model_sampling import FlowFake

    model = FlowFake()
    cfg = SamplerConfig(sampler=name, steps=6, schedule="simple")
    out = sample_arms(model, [cfg], [Sample("a red circle", 5)])
    sigmas = schedule(cfg, model.model_sampling)
    noise = initial_noise(model.latent_shape, 5)[None]
    alone = SAMPLERS[name](model.denoiser("off"), noise, sigmas, extra_args=model.condition("a red circle"),
                           disable=True, noise_sampler=BrownianNoiseSampler(noise, [5], 1.5), **cfg.sampler_kwargs())
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[0, 0], alone[0], rtol=1e-6, atol=1e-6)
