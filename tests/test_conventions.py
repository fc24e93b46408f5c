"""Conventions as a choice (#35 item 1): ComfyUI's, A1111's and diffusers' initial noise, its scaling, KSampler's
discard-penultimate rule and ComfyUI's lms / uni_pc endings, checked against their formulas written down here (a
literal transcription of comfy/sample.py prepare_noise, comfy/model_sampling.py noise_scaling, comfy/samplers.py
KSampler.calculate_sigmas and max_denoise, comfy/k_diffusion/sampling.py and comfy/extra_samplers/uni_pc.py; ComfyUI
is not installable from PyPI). A ComfyUI KSampler node's (seed, sampler, scheduler, steps, cfg, denoise 1.0) run
through that transcription on a toy eps network gives the latent ours gives with convention comfyui."""
import math
import shlex

import numpy as np
import pytest
import torch
from scipy import integrate

from comparisons.core.config import DISCARD_PENULTIMATE, SamplerConfig, schedule
from comparisons.core.engine import Sample, noise_ceiling, sample_arms
from comparisons.errors import ConfigError
from sampler_lib import SAMPLERS, BrownianNoiseSampler, initial_noise
from sampler_lib.noise import CONVENTIONS, convention_noise, noise_scale
from tests.fakes import FakeModel, cond_eps

PROMPT, SEED = "a red circle", 1234


# --- ComfyUI, transcribed -------------------------------------------------------------------------------------

def comfy_prepare_noise(latent_image, seed):
    """comfy/sample.py prepare_noise (noise_inds None)."""
    with torch.random.fork_rng():
        generator = torch.manual_seed(seed)
        return torch.randn(latent_image.size(), dtype=latent_image.dtype, layout=latent_image.layout,
                           generator=generator, device="cpu")


class ComfySD15Sampling:
    """comfy/model_sampling.py ModelSamplingDiscrete (SD 1.5's scaled-linear betas) with EPS."""

    def __init__(self):
        betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
        alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
        sigmas = ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5
        self.sigmas, self.log_sigmas = sigmas.float(), sigmas.log().float()
        self.sigma_min, self.sigma_max = self.sigmas[0], self.sigmas[-1]

    def timestep(self, sigma):
        dists = sigma.log() - self.log_sigmas[:, None]
        return dists.abs().argmin(dim=0).view(sigma.shape)

    def sigma(self, timestep):
        t = torch.clamp(timestep.float(), min=0, max=(len(self.sigmas) - 1))
        low_idx, high_idx, w = t.floor().long(), t.ceil().long(), t.frac()
        return ((1 - w) * self.log_sigmas[low_idx] + w * self.log_sigmas[high_idx]).exp()

    def noise_scaling(self, sigma, noise, latent_image, max_denoise=False):
        sigma = sigma.view(sigma.shape[:1] + (1,) * (noise.ndim - 1))
        noise = noise * torch.sqrt(1.0 + sigma ** 2.0) if max_denoise else noise * sigma
        return noise + latent_image


def comfy_karras(n, sigma_min, sigma_max, rho=7.0):
    ramp = torch.linspace(0, 1, n)
    min_inv_rho, max_inv_rho = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    sigmas = (max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho
    return torch.cat([sigmas, sigmas.new_zeros([1])])


def comfy_normal(s, steps):
    """comfy/samplers.py normal_scheduler (sgm False)."""
    start, end = s.timestep(s.sigma_max), s.timestep(s.sigma_min)
    append_zero = True
    if math.isclose(float(s.sigma(end)), 0, abs_tol=0.00001):
        steps += 1
        append_zero = False
    timesteps = torch.linspace(start, end, steps)
    sigs = [s.sigma(ts) for ts in timesteps] + [0.0] * append_zero
    return torch.FloatTensor(sigs)


def comfy_calculate_sigmas(s, scheduler, steps, sampler):
    """KSampler.calculate_sigmas: steps + 1 sigmas, the penultimate dropped, for DISCARD_PENULTIMATE_SIGMA_SAMPLERS."""
    discard = sampler in ("dpm_2", "dpm_2_ancestral", "uni_pc", "uni_pc_bh2")
    steps += discard
    sigmas = (comfy_karras(steps, float(s.sigma_min), float(s.sigma_max)) if scheduler == "karras"
              else comfy_normal(s, steps))
    return torch.cat([sigmas[:-2], sigmas[-1:]]) if discard else sigmas


def comfy_max_denoise(s, sigmas):
    max_sigma, sigma = float(s.sigma_max), float(sigmas[0])
    return math.isclose(max_sigma, sigma, rel_tol=1e-05) or sigma > max_sigma


def to_d(x, sigma, denoised):
    return (x - denoised) / sigma


def comfy_euler(model, x, sigmas, noise_sampler):
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        x = x + to_d(x, sigmas[i], denoised) * (sigmas[i + 1] - sigmas[i])
    return x


def comfy_dpm_2(model, x, sigmas, noise_sampler):
    for i in range(len(sigmas) - 1):
        sigma_hat = sigmas[i]
        denoised = model(x, sigma_hat)
        d = to_d(x, sigma_hat, denoised)
        if sigmas[i + 1] == 0:
            x = x + d * (sigmas[i + 1] - sigma_hat)
        else:
            sigma_mid = sigma_hat.log().lerp(sigmas[i + 1].log(), 0.5).exp()
            x_2 = x + d * (sigma_mid - sigma_hat)
            denoised_2 = model(x_2, sigma_mid)
            x = x + to_d(x_2, sigma_mid, denoised_2) * (sigmas[i + 1] - sigma_hat)
    return x


def linear_multistep_coeff(order, t, i, j):
    def fn(tau):
        prod = 1.
        for k in range(order):
            if j != k:
                prod *= (tau - t[i - k]) / (t[i - j] - t[i - k])
        return prod
    return integrate.quad(fn, t[i], t[i + 1], epsrel=1e-4)[0]


def comfy_lms(model, x, sigmas, noise_sampler, order=4):
    sigmas_cpu = sigmas.detach().cpu().numpy()
    ds = []
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        ds.append(to_d(x, sigmas[i], denoised))
        if len(ds) > order:
            ds.pop(0)
        if sigmas[i + 1] == 0:
            x = denoised  # ComfyUI's ending: the denoised image, not the integrated step
        else:
            cur_order = min(i + 1, order)
            coeffs = [linear_multistep_coeff(cur_order, sigmas_cpu, i, j) for j in range(cur_order)]
            x = x + sum(coeff * d for coeff, d in zip(coeffs, reversed(ds)))
    return x


def comfy_dpmpp_2m_sde(model, x, sigmas, noise_sampler, eta=1., s_noise=1.):
    """Eps form, solver_type midpoint (lambda = -log sigma, alpha_t = 1)."""
    old_denoised, h_last = None, None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i])
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            lambda_s, lambda_t = -sigmas[i].log(), -sigmas[i + 1].log()
            h = lambda_t - lambda_s
            h_eta = h * (eta + 1)
            x = sigmas[i + 1] / sigmas[i] * (-h * eta).exp() * x + (-h_eta).expm1().neg() * denoised
            if old_denoised is not None:
                r = h_last / h
                x = x + 0.5 * (-h_eta).expm1().neg() * (1 / r) * (denoised - old_denoised)
            noise = noise_sampler(sigmas[i], sigmas[i + 1])
            x = x + noise * sigmas[i + 1] * (-2 * h * eta).expm1().neg().sqrt() * s_noise
        old_denoised, h_last = denoised, h
    return x


# comfy/extra_samplers/uni_pc.py: SigmaConvert's VP marginals of a k-diffusion sigma.
def _log_mean_coeff(sigma):
    return 0.5 * torch.log(1 / ((sigma * sigma) + 1))


def _alpha(t):
    return torch.exp(_log_mean_coeff(t))


def _std(t):
    return torch.sqrt(1. - torch.exp(2. * _log_mean_coeff(t)))


def _lambda(t):
    lmc = _log_mean_coeff(t)
    return lmc - 0.5 * torch.log(1. - torch.exp(2. * lmc))


def _uni_pc_bh_update(model_fn, x, model_prev_list, t_prev_list, t, order, use_corrector, variant):
    """UniPC.multistep_uni_pc_bh_update, predict_x0."""
    t_prev_0, model_prev_0 = t_prev_list[-1], model_prev_list[-1]
    lambda_prev_0, lambda_t = _lambda(t_prev_0), _lambda(t)
    sigma_prev_0, sigma_t, alpha_t = _std(t_prev_0), _std(t), _alpha(t)
    h = lambda_t - lambda_prev_0
    rks, D1s = [], []
    for i in range(1, order):
        rk = float(((_lambda(t_prev_list[-(i + 1)]) - lambda_prev_0) / h)[0])
        rks.append(rk)
        D1s.append((model_prev_list[-(i + 1)] - model_prev_0) / rk)
    rks = torch.tensor(rks + [1.])
    hh = -h[0]
    h_phi_1 = torch.expm1(hh)
    h_phi_k = h_phi_1 / hh - 1
    factorial_i = 1
    B_h = hh if variant == "bh1" else torch.expm1(hh)
    R, b = [], []
    for i in range(1, order + 1):
        R.append(torch.pow(rks, i - 1))
        b.append(h_phi_k * factorial_i / B_h)
        factorial_i *= (i + 1)
        h_phi_k = h_phi_k / hh - 1 / factorial_i
    R, b = torch.stack(R), torch.tensor(b)
    use_predictor = len(D1s) > 0
    if use_predictor:
        D1s = torch.stack(D1s, dim=1)
        rhos_p = torch.tensor([0.5]) if order == 2 else torch.linalg.solve(R[:-1, :-1], b[:-1])
    else:
        D1s = None
    if use_corrector:
        rhos_c = torch.tensor([0.5]) if order == 1 else torch.linalg.solve(R, b)
    x_t_ = (sigma_t / sigma_prev_0)[:, None, None, None] * x - (alpha_t * h_phi_1)[:, None, None, None] * model_prev_0
    pred_res = torch.einsum('k,bkchw->bchw', rhos_p, D1s) if use_predictor else 0
    x_t = x_t_ - (alpha_t * B_h)[:, None, None, None] * pred_res
    model_t = None
    if use_corrector:
        model_t = model_fn(x_t, t)
        corr_res = torch.einsum('k,bkchw->bchw', rhos_c[:-1], D1s) if D1s is not None else 0
        x_t = x_t_ - (alpha_t * B_h)[:, None, None, None] * (corr_res + rhos_c[-1] * (model_t - model_prev_0))
    return x_t, model_t


def comfy_uni_pc(model, noise, sigmas, noise_sampler, variant="bh1"):
    """sample_unipc: a final 0 becomes 0.001, VP form in between, x there returned in k-diffusion scaling."""
    timesteps = sigmas.clone()
    if sigmas[-1] == 0:
        timesteps[-1] = 0.001
    x = noise / torch.sqrt(1.0 + timesteps[0] ** 2.0)

    def model_fn(x, t):  # model_wrapper(model_type "noise") over predict_eps_sigma, data prediction
        sigma = t.view(-1, 1, 1, 1)
        x_in = x * ((sigma ** 2 + 1.0) ** 0.5)
        eps = (x_in - model(x_in, t)) / sigma
        return (x - _std(t)[:, None, None, None] * eps) / _alpha(t)[:, None, None, None]

    order = min(3, len(timesteps) - 2)
    steps = len(timesteps) - 1
    batch = x.shape[0]
    for step_index in range(steps):  # UniPC.sample, method multistep, lower_order_final
        if step_index == 0:
            vec_t = timesteps[0].expand(batch)
            model_prev_list, t_prev_list = [model_fn(x, vec_t)], [vec_t]
        elif step_index < order:
            vec_t = timesteps[step_index].expand(batch)
            x, model_x = _uni_pc_bh_update(model_fn, x, model_prev_list, t_prev_list, vec_t, step_index, True,
                                           variant)
            model_prev_list.append(model_x if model_x is not None else model_fn(x, vec_t))
            t_prev_list.append(vec_t)
        else:
            for step in range(step_index, step_index + 1 + (step_index == steps - 1)):
                vec_t = timesteps[step].expand(batch)
                step_order = min(order, steps + 1 - step)
                x, model_x = _uni_pc_bh_update(model_fn, x, model_prev_list, t_prev_list, vec_t, step_order,
                                               step != steps, variant)
                for i in range(order - 1):
                    t_prev_list[i], model_prev_list[i] = t_prev_list[i + 1], model_prev_list[i + 1]
                t_prev_list[-1] = vec_t
                if step < steps:
                    model_prev_list[-1] = model_x if model_x is not None else model_fn(x, vec_t)
    return x / _alpha(timesteps[-1])


COMFY_SAMPLERS = {"euler": comfy_euler, "dpm_2": comfy_dpm_2, "lms": comfy_lms, "uni_pc": comfy_uni_pc,
                  "dpmpp_2m_sde": comfy_dpmpp_2m_sde}


def comfy_ksampler(seed, sampler, scheduler, steps, cfg, noise_max, ours_sigmas):
    """A KSampler node at denoise 1.0 on an empty latent, on FakeModel's network and guidance: the latent it returns.
    The SDE's noise is this tool's Brownian path in both (ComfyUI's torchsde tree is not reproduced), drawn over
    `ours_sigmas`' intervals: a Brownian path moves by sqrt(dt) when its key moves by dt, so ComfyUI's float32
    schedule (6e-6 from ours) would key visibly different noise."""
    fake, s = FakeModel(), ComfySD15Sampling()
    extra = fake.condition(PROMPT, cfg)

    def model(x, sigma):  # BaseModel.apply_model with EPS: the network sees the nearest training timestep
        sigma = sigma.reshape(-1).expand(x.shape[0])
        xc = x / (sigma[:, None, None, None] ** 2 + 1) ** 0.5
        eps = cond_eps(xc, s.timestep(sigma).float(), **extra)
        return x - eps * sigma[:, None, None, None]

    latent = torch.zeros((1, *fake.latent_shape))
    noise = comfy_prepare_noise(latent, seed)
    sigmas = comfy_calculate_sigmas(s, scheduler, steps, sampler)
    x = s.noise_scaling(sigmas[0], noise, latent, comfy_max_denoise(s, sigmas))
    brownian = BrownianNoiseSampler(x, [seed], noise_max)

    def noise_sampler(sigma, sigma_next):  # step i's noise: ours at step i
        i = int((sigmas - sigma).abs().argmin())
        return brownian(ours_sigmas[i], ours_sigmas[i + 1])
    return COMFY_SAMPLERS[sampler](model, x, sigmas, noise_sampler)[0], sigmas


# --- the tests ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("scheduler", ["karras", "normal"])
@pytest.mark.parametrize("sampler", list(COMFY_SAMPLERS))
def test_comfyui_ksampler_latent_is_ours_with_convention_comfyui(sampler, scheduler):
    fake = FakeModel()
    cfg = SamplerConfig(sampler=sampler, schedule=scheduler, steps=8, guidance_scale=5.0, convention="comfyui",
                        quantize="ingress")
    ours_sigmas = schedule(cfg, fake.model_sampling)
    golden, sigmas = comfy_ksampler(SEED, sampler, scheduler, 8, 5.0,
                                    noise_ceiling(fake.model_sampling.sigma_max, [ours_sigmas]), ours_sigmas)
    torch.testing.assert_close(ours_sigmas.float(), sigmas, rtol=2e-5, atol=1e-6)  # float32 vs float64
    ours = sample_arms(fake, [cfg], [Sample(PROMPT, SEED)])[0, 0]
    torch.testing.assert_close(ours, golden, rtol=2e-5, atol=2e-5)
    # The convention is what makes them agree: today's (k-diffusion's) run of the same settings is elsewhere.
    plain = sample_arms(fake, [SamplerConfig(**{**cfg.to_dict(), "convention": "kdiffusion"})],
                        [Sample(PROMPT, SEED)])[0, 0]
    assert float((plain - golden).abs().max()) > 1e-2


def test_prepare_noise_and_the_other_tools_draws():
    shape = (4, 8, 8)
    comfy = comfy_prepare_noise(torch.zeros((3, *shape)), SEED)
    assert torch.equal(convention_noise("comfyui", shape, SEED, 3), comfy)
    # diffusers' randn_tensor with one CPU torch.Generator over the batch.
    gen = torch.Generator(device="cpu").manual_seed(SEED)
    assert torch.equal(convention_noise("diffusers", shape, SEED, 3),
                       torch.randn((3, *shape), generator=gen, device="cpu", dtype=torch.float32))
    # A1111 (RNG source CPU): image i from torch.manual_seed(seed + i), then torch.randn(shape) on the CPU.
    a1111 = []
    for i in range(3):
        with torch.random.fork_rng():
            torch.manual_seed(SEED + i)
            a1111.append(torch.randn(shape, device="cpu"))
    assert torch.equal(convention_noise("a1111", shape, SEED, 3), torch.stack(a1111))
    # One image: every convention draws this tool's initial noise; a batch's later images differ.
    for convention in CONVENTIONS:
        assert torch.equal(convention_noise(convention, shape, SEED)[0], initial_noise(shape, SEED))
    assert not torch.equal(comfy[1], torch.stack(a1111)[1])


def test_noise_scaling_formulas():
    s = ComfySD15Sampling()
    sigma_max = float(s.sigma_max)
    for sigma0 in (sigma_max, 3.0):  # from the model's top (max_denoise) and from below it
        want = s.noise_scaling(torch.tensor([sigma0]), torch.ones(1, 1), torch.zeros(1, 1),
                               comfy_max_denoise(s, torch.tensor([sigma0])))
        assert noise_scale("comfyui", sigma0, sigma_max) == pytest.approx(float(want), rel=1e-6)
        assert noise_scale("kdiffusion", sigma0, sigma_max) == noise_scale("a1111", sigma0, sigma_max) == sigma0
        # Flow (CONST): sigma * noise + (1 - sigma) * latent, whatever max_denoise says.
        assert noise_scale("comfyui", 1.0, 1.0, kind="flow") == noise_scale("diffusers", 1.0, 1.0, kind="flow") == 1.0
    assert noise_scale("comfyui", sigma_max, sigma_max) == pytest.approx(math.sqrt(1 + sigma_max ** 2))
    # diffusers' init_noise_sigma: EulerDiscreteScheduler's (max_sigma^2 + 1)^0.5, max_sigma with linspace/trailing;
    # a VP-form scheduler's 1.0 is sqrt(1 + sigma^2) in sigma form.
    root = math.sqrt(1 + 14.6 ** 2)
    assert noise_scale("diffusers", 14.6, 14.6, sampler="euler", spacing="leading") == pytest.approx(root)
    assert noise_scale("diffusers", 14.6, 14.6, sampler="euler", spacing="trailing") == 14.6
    assert noise_scale("diffusers", 14.6, 14.6, sampler="euler") == 14.6
    assert noise_scale("diffusers", 14.6, 14.6, sampler="ddim", spacing="trailing") == pytest.approx(root)


@pytest.mark.parametrize("sampler", ["dpm_2", "dpm_2_ancestral", "uni_pc", "uni_pc_bh2", "euler"])
def test_discard_penultimate(sampler):
    fake, s = FakeModel(), ComfySD15Sampling()
    for scheduler in ("karras", "normal"):
        cfg = SamplerConfig(sampler=sampler, schedule=scheduler, steps=6, convention="comfyui")
        torch.testing.assert_close(schedule(cfg, fake.model_sampling).float(),
                                   comfy_calculate_sigmas(s, scheduler, 6, sampler), rtol=2e-5, atol=1e-6)
    a1111 = schedule(SamplerConfig(sampler=sampler, steps=6, convention="a1111"), fake.model_sampling)
    plain = schedule(SamplerConfig(sampler=sampler, steps=6), fake.model_sampling)
    seven = schedule(SamplerConfig(sampler=sampler, steps=7), fake.model_sampling)
    assert len(a1111) == len(plain) == 7
    assert torch.equal(a1111, torch.cat([seven[:-2], seven[-1:]]) if sampler in DISCARD_PENULTIMATE["a1111"]
                       else plain)


@pytest.mark.parametrize("sampler", ["euler", "lms", "uni_pc", "dpm_2", "dpmpp_2m_sde"])
def test_default_convention_is_todays_run_bit_for_bit(sampler):
    """kdiffusion runs what the engine ran before conventions: noise * sigma_0, the sampler's own options."""
    fake = FakeModel()
    cfg = SamplerConfig(sampler=sampler, steps=6)
    out = sample_arms(fake, [cfg], [Sample(PROMPT, SEED)])[0, 0]
    sigmas = schedule(cfg, fake.model_sampling)
    noise = initial_noise(fake.latent_shape, SEED)[None]
    x = fake.model_sampling.initial_latent(noise, sigmas[:1])
    extra = fake.condition(PROMPT, cfg.guidance_scale)
    before = SAMPLERS[sampler](fake.denoiser(), x, sigmas[:, None], extra_args=extra, disable=True,
                               noise_sampler=BrownianNoiseSampler(x, [SEED], noise_ceiling(
                                   fake.model_sampling.sigma_max, [sigmas])), **cfg.sampler_kwargs())
    assert torch.equal(out, before[0])


def test_config_json_keeps_its_identity_and_refuses_unknown_conventions():
    assert "convention" not in SamplerConfig().to_json()
    cfg = SamplerConfig(convention="a1111")
    assert '"convention": "a1111"' in cfg.to_json() and SamplerConfig.from_json(cfg.to_json()) == cfg
    with pytest.raises(ConfigError) as err:
        SamplerConfig(convention="forge")
    assert str(err.value) == "unknown convention 'forge'; choose one of kdiffusion, comfyui, a1111, diffusers"
    assert err.value.field == "convention"


def test_comfyui_endings_are_options_of_the_samplers():
    fake = FakeModel()
    den, extra = fake.denoiser(), fake.condition(PROMPT, 3.0)
    sigmas = schedule(SamplerConfig(steps=5), fake.model_sampling)
    x = initial_noise(fake.latent_shape, 0)[None] * sigmas[0]
    seen = []
    SAMPLERS["lms"](den, x, sigmas, extra_args=extra, final="denoised",
                    callback=lambda info: seen.append(info["denoised"]))
    assert torch.equal(SAMPLERS["lms"](den, x, sigmas, extra_args=extra, final="denoised"), seen[-1])
    with pytest.raises(ValueError, match="final must be"):
        SAMPLERS["lms"](den, x, sigmas, extra_args=extra, final="zero")
    # uni_pc ending at 0.001 is uni_pc on the schedule whose final 0 is 0.001.
    ended = SAMPLERS["uni_pc"](den, x, sigmas, extra_args=extra, end_sigma=0.001)
    moved = SAMPLERS["uni_pc"](den, x, torch.cat([sigmas[:-1], torch.tensor([0.001], dtype=sigmas.dtype)]),
                               extra_args=extra)
    assert torch.equal(ended, moved)
    assert not np.allclose(ended.numpy(), SAMPLERS["uni_pc"](den, x, sigmas, extra_args=extra).numpy(), atol=1e-3)


# --- a pair from a file's own metadata (#35 item 2) ---------------------------------------------------------------

def a1111_meta(sampler="DPM++ 2M Karras", extra="", seed=1234, prompt=PROMPT):
    from comparisons.core.image_meta import metadata
    return metadata({"parameters": f"{prompt}\nSteps: 4, Sampler: {sampler}, {extra}CFG scale: 3, Seed: {seed}, "
                                   "Size: 16x16, Model: embedded"})


def test_remade_configs_carry_their_tools_convention():
    from comparisons.core.remake import remake
    from tests.test_workflow_meta import default, flux, meta
    settings, unmapped = remake(a1111_meta(), "embedded", ["embedded"], [PROMPT])
    cfg = SamplerConfig.from_dict(settings["config"])
    assert (cfg.sampler, cfg.schedule, cfg.steps, cfg.convention, cfg.quantize) == \
        ("dpmpp_2m", "karras", 4, "a1111", "off")
    assert any(u.startswith("RNG GPU (A1111 drew the noise on the GPU") for u in unmapped)
    _, unmapped = remake(a1111_meta(extra="RNG: CPU, SGM noise multiplier: True, "), "embedded")
    assert not any(u.startswith("RNG") for u in unmapped) and any(u.startswith("SGM noise multiplier True")
                                                                   for u in unmapped)
    # A1111's UniPC and DDIM do not run through k-diffusion: carried (the nearest sampler here), and said.
    settings, unmapped = remake(a1111_meta("UniPC", "Schedule type: Karras, RNG: CPU, "), "embedded")
    assert settings["config"]["sampler"] == "uni_pc" and unmapped == [
        "A1111's UniPC loop (it runs on timesteps, sd_samplers_timesteps, not through k-diffusion; convention a1111 "
        "covers A1111's k-diffusion samplers)"]
    # ComfyUI's KSampler: its convention, and the nearest training timestep for the network (quantize ingress).
    settings, unmapped = remake(meta(default(sampler="dpm_2", scheduler="karras", steps=9)), "embedded")
    assert {k: settings["config"][k] for k in ("sampler", "steps", "convention", "quantize")} == \
        {"sampler": "dpm_2", "steps": 9, "convention": "comfyui", "quantize": "ingress"}
    assert not any("penultimate" in u for u in unmapped)
    # A custom sampler's sigmas come from a scheduler node, which keeps the penultimate sigma: said.
    graph = flux()
    graph["16"]["inputs"]["sampler_name"] = "uni_pc"
    settings, unmapped = remake(meta(graph), "embedded")
    assert settings["config"]["convention"] == "comfyui"
    assert any(u.startswith("SamplerCustomAdvanced's sigmas for uni_pc keep their penultimate sigma") for u in unmapped)


def test_this_tools_own_file_remakes_its_whole_config():
    import json

    from comparisons.core.image_meta import metadata
    from comparisons.core.remake import remake
    cfg = SamplerConfig(sampler="lms", steps=5, convention="comfyui", quantize="ingress", rho=5.0)
    settings, unmapped = remake(metadata({"model": "embedded", "prompt": PROMPT, "seed": "3", "pairing": "custom",
                                          "config": cfg.to_json()}), "embedded", ["embedded"], [PROMPT])
    assert SamplerConfig.from_dict(settings["config"]) == cfg and unmapped == [] and settings["seed"] == 3
    assert json.loads(cfg.to_json())["convention"] == "comfyui"


def test_remake_refuses_what_it_would_have_to_guess_naming_it():
    from comparisons.core.remake import remake, remake_pair
    from tests.test_workflow_meta import flux, meta
    with pytest.raises(ConfigError, match="cannot remake it here: sampler 'Restart' "):
        remake(a1111_meta("Restart"), "embedded")
    graph = flux()
    graph["16"] = {"class_type": "SamplerDPMPP_2M_SDE", "inputs": {"eta": 1.0, "s_noise": 1.0}}
    with pytest.raises(ConfigError, match="sampler 'SamplerDPMPP_2M_SDE'"):
        remake(meta(graph), "embedded")
    with pytest.raises(ConfigError, match="image B: the file states no sampling"):
        remake_pair(a1111_meta(), {"format": "none", "fields": {}, "passes": [], "note": "no generation parameters"},
                    "embedded")
    pair = remake_pair(a1111_meta(), a1111_meta("Euler a", seed=77), "embedded", [PROMPT])
    assert (pair["a"].sampler, pair["b"].sampler, pair["seed"], pair["prompt"]) == \
        ("dpmpp_2m", "euler_ancestral", 1234, PROMPT)
    assert pair["unmapped"]["pair"] == ["seed 1234 used for both (A states 1234, B 77)"]
    # Fresh noise each step is this tool's Brownian path under every convention: said for a sampler that adds it.
    assert "sampler euler_ancestral's noise each step (this tool's Brownian path; A1111's own draws are not " \
        "reproduced)" in pair["unmapped"]["B"]
    assert not any("noise each step" in u for u in pair["unmapped"]["A"])


def record_of(tmp_path):
    import json
    return json.loads((tmp_path / "out" / "remake.json").read_text())


@pytest.mark.slow  # loads the embedded model and LPIPS, and samples
def test_inspect_remake_writes_the_remade_pair_beside_inspect_html(tmp_path):
    import json

    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    from tests.conftest import run_cli
    files = []
    for name, sampler in (("a.png", "LMS"), ("b.png", "DPM2")):
        info = PngInfo()
        info.add_text("parameters", f"{PROMPT}\nSteps: 3, Sampler: {sampler}, Schedule type: Karras, CFG scale: 3, "
                                    "Seed: 5, Size: 64x64, Model: embedded, RNG: CPU")
        Image.new("RGB", (64, 64), (200, 30, 30)).save(tmp_path / name, pnginfo=info)
        files.append(str(tmp_path / name))
    code, text, err = run_cli(["inspect", *files, "--out", str(tmp_path / "out"), "--remake", "embedded"])
    assert code == 0, err
    assert 'A = {"sampler": "lms", "steps": 3, "schedule": "karras", "guidance_scale": 3.0, "convention": "a1111"}' \
        in text and "run it as a sweep: python -m comparisons sweep --model embedded" in text
    # The printed sweep runs the remade configs themselves.
    from comparisons.cli import _parser, sweep_configs
    line = next(x for x in text.splitlines() if x.startswith("run it as a sweep: "))
    _, a, b = sweep_configs(_parser().parse_args(shlex.split(line.split("python -m comparisons ", 1)[1])))
    assert (a.to_dict(), b.to_dict()) == (record_of(tmp_path)["a"], record_of(tmp_path)["b"])
    record = json.loads((tmp_path / "out" / "remake.json").read_text())
    assert (record["a"]["sampler"], record["b"]["sampler"], record["seed"]) == ("lms", "dpm_2", 5)
    assert record["b"]["convention"] == "a1111" and record["not_carried"] == {"A": [], "B": [], "pair": []}
    remade = [np.asarray(Image.open(tmp_path / "out" / f"remade-{side}.png")) for side in "AB"]
    assert remade[0].shape == remade[1].shape and not np.array_equal(*remade)  # lms and dpm_2: two images
    assert (tmp_path / "out" / "inspect.html").exists()
    # A file this tool cannot remake is refused before anything is measured or written.
    info = PngInfo()
    info.add_text("parameters", f"{PROMPT}\nSteps: 3, Sampler: Restart, CFG scale: 3, Seed: 5, Size: 64x64")
    Image.new("RGB", (64, 64)).save(tmp_path / "c.png", pnginfo=info)
    code, _, err = run_cli(["inspect", files[0], str(tmp_path / "c.png"), "--out", str(tmp_path / "out2"),
                            "--remake", "embedded"])
    assert code == 2 and "image B: cannot remake it here: sampler 'Restart'" in " ".join(err)
    assert not (tmp_path / "out2").exists()


def test_send_to_compare_fills_and_says_the_convention():
    from comparisons.core.remake import remake
    from ui.compare import sent_to_form
    from ui.inputs import CUSTOM_FIELDS
    settings, unmapped = remake(a1111_meta(extra="RNG: CPU, "), "embedded", ["embedded"], [PROMPT])
    names = ["pairing", "explain", "custom", "model", "steps", "sampler", "guidance", "seed", "prompt", "sent"]
    w = {n: n for n in names} | {f"{s}:{f}": f"{s}:{f}" for s in "AB" for f, _, _ in CUSTOM_FIELDS}
    out = sent_to_form(w, settings, unmapped, "A · a.png")
    assert out["A:convention"] == out["B:convention"] == "a1111"
    assert "dpmpp_2m, karras, 4 steps, guidance 3, convention a1111, seed 1234" in out["sent"]


def test_sweep_convention_flag_sets_both_arms_and_a_config_may_override_it():
    from comparisons.cli import _parser, sweep_configs
    args = _parser().parse_args(["sweep", "--pairing", "final-zero", "--convention", "comfyui", "--sampler", "lms"])
    _, a, b = sweep_configs(args)
    assert a.convention == b.convention == "comfyui" and a.convention_kwargs() == {"final": "denoised"}
    args = _parser().parse_args(["sweep", "--convention", "a1111", "--a", '{"convention": "kdiffusion"}', "--b", "{}"])
    _, a, b = sweep_configs(args)
    assert (a.convention, b.convention) == ("kdiffusion", "a1111")
    from comparisons.errors import UsageError
    with pytest.raises(UsageError, match="--convention: invalid choice: 'forge'"):
        _parser().parse_args(["sweep", "--pairing", "final-zero", "--convention", "forge"])


def test_on_a_flow_model_every_convention_starts_from_noise_at_sigma_1():
    """ComfyUI's CONST noise_scaling and diffusers' init_noise_sigma 1: the flow's start is every tool's; ComfyUI's
    UniPC there (through its eps-form conversion) is refused, naming the field."""
    from tests.test_model_sampling import FlowFake
    flow = FlowFake()
    cfgs = [SamplerConfig(sampler="euler", steps=5, schedule="simple", convention=c) for c in CONVENTIONS]
    out = sample_arms(flow, cfgs, [Sample(PROMPT, SEED)])[0]
    assert all(torch.equal(out[0], out[k]) for k in range(1, len(CONVENTIONS)))
    with pytest.raises(ConfigError, match="convention comfyui with uni_pc on a flow model") as err:
        schedule(SamplerConfig(sampler="uni_pc", convention="comfyui"), flow.model_sampling)
    assert err.value.field == "convention"


def test_a_pair_shows_the_schedule_its_convention_ran():
    from comparisons.core.pairs import arm_schedule
    fake = FakeModel()
    sigmas, used, _ = arm_schedule(fake, SamplerConfig(sampler="uni_pc", steps=4, convention="comfyui"))
    five = schedule(SamplerConfig(sampler="uni_pc", steps=5), fake.model_sampling).tolist()
    assert sigmas == five[:-2] + five[-1:] and used[:-1] == sigmas[:-1] and used[-1] == 0.001
    assert arm_schedule(fake, SamplerConfig(sampler="uni_pc", steps=4))[1][-1] == 0


def test_inspect_tab_remakes_the_pair_into_the_compare_form(tmp_path):
    """The Inspect tab's 'Remake this pair in Compare': panel A from file A, panel B from file B, each with its tool's
    convention; a file it cannot remake is refused in the tab, named."""
    from types import SimpleNamespace

    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    from ui.inputs import CUSTOM_FIELDS
    from ui.inspect_tab import send_pair
    paths = []
    for name, sampler in (("a.png", "DPM2 Karras"), ("b.png", "Euler"), ("c.png", "Restart")):
        info = PngInfo()
        info.add_text("parameters", f"{PROMPT}\nSteps: 4, Sampler: {sampler}, CFG scale: 3, Seed: 9, Size: 64x64, "
                                    "RNG: CPU")
        Image.new("RGB", (64, 64)).save(tmp_path / name, pnginfo=info)
        paths.append(str(tmp_path / name))
    names = ["pairing", "explain", "custom", "model", "steps", "sampler", "guidance", "seed", "prompt", "sent"]
    compare = {n: n for n in names} | {f"{s}:{f}": f"{s}:{f}" for s in "AB" for f, _, _ in CUSTOM_FIELDS}
    compare["model"] = type("ModelMenu", (), {"choices": [("embedded", "embedded")]})()  # a widget: a dict key
    lab = SimpleNamespace(model=lambda name: SimpleNamespace(prompts=lambda: [PROMPT]))
    w = {"error": "error", "switch": "switch"}
    out = send_pair(lab, w, compare, paths[0], paths[1], "embedded")
    assert (out["A:sampler"], out["A:schedule"], out["B:sampler"], out["seed"]) == ("dpm_2", "karras", "euler", "9")
    assert out["A:convention"] == out["B:convention"] == "a1111" and out["error"] == ""
    assert "A dpm_2, karras, 4 steps, guidance 3, convention a1111; B euler" in out["sent"]
    refused = send_pair(lab, w, compare, paths[0], paths[2], "embedded")
    assert "image B: cannot remake it here: sampler &#x27;Restart&#x27;" in refused["error"] and refused["switch"] == ""
