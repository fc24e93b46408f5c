"""The CFG++ samplers (sampler_lib/cfg_pp.py, #35 item 4) and the guidance hook they step with: each against a literal
scalar transcription of ComfyUI's loop (comfy/k_diffusion/sampling.py: sample_euler_ancestral_cfg_pp, euler_cfg_pp,
dpmpp_2s_ancestral_cfg_pp and its _RF form, dpmpp_2m_cfg_pp, res_multistep(cfg_pp), gradient_estimation(cfg_pp); its
post-CFG function reads uncond_denoised) on a toy guided network whose conditional and unconditional predictions
differ, on eps, v and flow models; each equal to its non-CFG++ sibling where ComfyUI's math says so (cond ==
uncond); per-item sigmas; the network calls counted (CFG++ costs none extra), through the engine's batching too."""
import types

import pytest
import torch
from torch import nn

from sampler_lib import (
    REGISTRY,
    SAMPLERS,
    SCHEDULES,
    BrownianNoiseSampler,
    Denoiser,
    DiscreteEpsDenoiser,
    DiscreteVDenoiser,
    FlowSampling,
    get_sigmas_karras,
    initial_noise,
    network_calls,
)
from sampler_lib.cfg_pp import EPS_FORM_ON_FLOW, RES_ANCESTRAL_ON_FLOW
from sampler_lib.models.guidance import guided_eps

CFG_PP = sorted(name for name, spec in REGISTRY.items() if spec.cfg_pp)
GUIDANCE = 3.0
SHIFT = 3.0


class ToyGuided(nn.Module):
    """A guided toy network (classifier-free guidance through guided_eps): label 0 is the empty prompt, so the
    conditional and unconditional outputs differ by 0.2 label cos(t / 50 + x). Counts its calls and batch widths."""

    def __init__(self):
        super().__init__()
        self.widths = []

    def forward(self, x, t, label, guidance_scale=1.0, with_uncond=False):
        return guided_eps(self.net, x, t, label, torch.zeros_like(label), guidance_scale, with_uncond)

    def net(self, x, t, label):
        self.widths.append(x.shape[0])
        t = t.float()[:, None, None, None]
        return torch.tanh(x * (0.5 + t / 1000)) + 0.2 * label.float()[:, None, None, None] * torch.cos(t / 50 + x)


def make_den(family, quantize="off", net=None):
    net = ToyGuided() if net is None else net
    if family == "flow":
        return Denoiser(net, FlowSampling(shift=SHIFT), quantize=quantize)
    from sampler_lib import scaled_linear_alphas_cumprod
    cls = DiscreteEpsDenoiser if family == "eps" else DiscreteVDenoiser
    return cls(net, scaled_linear_alphas_cumprod(), quantize=quantize)


def make_sigmas(den, family, n=6):
    if family == "flow":
        return SCHEDULES["simple"](n, den.model_sampling)  # starts at sigma 1, where the flow's alpha is 0
    return get_sigmas_karras(n, float(den.sigma_min), float(den.sigma_max))


def start(den, sigmas, batch=2, seed=0):
    noise = torch.stack([initial_noise((2, 4, 4), seed + i) for i in range(batch)])
    return den.model_sampling.initial_latent(noise, sigmas[0])


def extra(label=1.0, guidance=GUIDANCE):
    return {"label": torch.tensor([label]), "guidance_scale": guidance}


class PostCfg:
    """ComfyUI's model as a CFG++ sampler sees it: returns the guided denoised image, and its post-CFG function keeps
    the unconditional one of the last call in `uncond` (computed here by a separate call on the empty label)."""

    def __init__(self, den, kwargs):
        self.den, self.kwargs = den, kwargs

    def __call__(self, x, sigma):
        self.uncond = self.den(x, sigma, **dict(self.kwargs, label=torch.tensor([0.0]), guidance_scale=1.0))
        return self.den(x, sigma, **self.kwargs)


# --- ComfyUI's loops, written down (comfy/k_diffusion/sampling.py) --------------------------------------------------

def comfy_lambda(sigma, flow):
    return sigma.logit().neg() if flow else sigma.log().neg()


def comfy_get_ancestral_step(sigma_from, sigma_to, eta=1.0):
    if not eta:
        return sigma_to, 0.0
    sigma_up = min(sigma_to, eta * (sigma_to ** 2 * (sigma_from ** 2 - sigma_to ** 2) / sigma_from ** 2) ** 0.5)
    sigma_down = (sigma_to ** 2 - sigma_up ** 2) ** 0.5
    return sigma_down, sigma_up


def comfy_to_d(x, sigma, denoised):
    return (x - denoised) / sigma


def comfy_euler_ancestral_cfg_pp(model, x, sigmas, noise_sampler, flow, eta=1.0, s_noise=1.0):
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in)
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            alpha_s = sigmas[i] * comfy_lambda(sigmas[i], flow).exp()
            alpha_t = sigmas[i + 1] * comfy_lambda(sigmas[i + 1], flow).exp()
            d = comfy_to_d(x, sigmas[i], alpha_s * model.uncond)
            sigma_down, sigma_up = comfy_get_ancestral_step(sigmas[i] / alpha_s, sigmas[i + 1] / alpha_t, eta=eta)
            sigma_down = alpha_t * sigma_down
            x = alpha_t * denoised + sigma_down * d
            if eta > 0 and s_noise > 0:
                x = x + alpha_t * noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
    return x


def comfy_euler_cfg_pp(model, x, sigmas, noise_sampler, flow):
    return comfy_euler_ancestral_cfg_pp(model, x, sigmas, None, flow, eta=0.0, s_noise=0.0)


def comfy_dpmpp_2s_ancestral_cfg_pp(model, x, sigmas, noise_sampler, flow, eta=1.0, s_noise=1.0):
    if flow:
        return comfy_dpmpp_2s_ancestral_rf_cfg_pp(model, x, sigmas, noise_sampler, eta, s_noise)
    s_in = x.new_ones([x.shape[0]])
    sigma_fn = lambda t: t.neg().exp()  # noqa: E731
    t_fn = lambda sigma: sigma.log().neg()  # noqa: E731
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in)
        guidance_vector = denoised - model.uncond
        sigma_down, sigma_up = comfy_get_ancestral_step(sigmas[i], sigmas[i + 1], eta=eta)
        if sigma_down == 0:
            d = comfy_to_d(x, sigmas[i], model.uncond)
            dt = sigma_down - sigmas[i]
            x = x + d * dt
        else:
            t, t_next = t_fn(sigmas[i]), t_fn(sigma_down)
            r = 1 / 2
            h = t_next - t
            s = t + r * h
            x_2 = (sigma_fn(s) / sigma_fn(t)) * x - (-h * r).expm1() * model.uncond
            _ = model(x_2, sigma_fn(s) * s_in)
            uncond_denoised_2 = model.uncond
            x = (sigma_fn(t_next) / sigma_fn(t)) * x - (-h).expm1() * uncond_denoised_2
        if sigmas[i + 1] > 0:
            x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
        x = x + guidance_vector
    return x


def comfy_dpmpp_2s_ancestral_rf_cfg_pp(model, x, sigmas, noise_sampler, eta=1.0, s_noise=1.0):
    s_in = x.new_ones([x.shape[0]])
    sigma_fn = lambda lbda: (lbda.exp() + 1) ** -1  # noqa: E731
    lambda_fn = lambda sigma: ((1 - sigma) / sigma).log()  # noqa: E731
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in)
        guidance_vector = denoised - model.uncond
        downstep_ratio = 1 + (sigmas[i + 1] / sigmas[i] - 1) * eta
        sigma_down = sigmas[i + 1] * downstep_ratio
        alpha_ip1 = 1 - sigmas[i + 1]
        alpha_down = 1 - sigma_down
        renoise_coeff = (sigmas[i + 1] ** 2 - sigma_down ** 2 * alpha_ip1 ** 2 / alpha_down ** 2) ** 0.5
        if sigmas[i + 1] == 0:
            d = comfy_to_d(x, sigmas[i], model.uncond)
            dt = sigma_down - sigmas[i]
            x = x + d * dt
        else:
            if sigmas[i] == 1.0:
                sigma_s = 0.9999
            else:
                t_i, t_down = lambda_fn(sigmas[i]), lambda_fn(sigma_down)
                r = 1 / 2
                h = t_down - t_i
                s = t_i + r * h
                sigma_s = sigma_fn(s)
            sigma_s_i_ratio = sigma_s / sigmas[i]
            u = sigma_s_i_ratio * x + (1 - sigma_s_i_ratio) * model.uncond
            _ = model(u, sigma_s * s_in)
            uncond_D_i = model.uncond
            sigma_down_i_ratio = sigma_down / sigmas[i]
            x = sigma_down_i_ratio * x + (1 - sigma_down_i_ratio) * uncond_D_i
        if sigmas[i + 1] > 0 and eta > 0:
            x = (alpha_ip1 / alpha_down) * x + noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * renoise_coeff
        x = x + (1 - sigmas[i + 1]) * guidance_vector
    return x


def comfy_dpmpp_2m_cfg_pp(model, x, sigmas, noise_sampler, flow):
    s_in = x.new_ones([x.shape[0]])
    t_fn = lambda sigma: sigma.log().neg()  # noqa: E731
    old_uncond_denoised = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in)
        uncond_denoised = model.uncond
        t, t_next = t_fn(sigmas[i]), t_fn(sigmas[i + 1])
        h = t_next - t
        if old_uncond_denoised is None or sigmas[i + 1] == 0:
            denoised_mix = -torch.exp(-h) * uncond_denoised
        else:
            h_last = t - t_fn(sigmas[i - 1])
            r = h_last / h
            denoised_mix = -torch.exp(-h) * uncond_denoised - torch.expm1(-h) * (1 / (2 * r)) * (
                denoised - old_uncond_denoised)
        x = denoised + denoised_mix + torch.exp(-h) * x
        old_uncond_denoised = uncond_denoised
    return x


def comfy_res_multistep(model, x, sigmas, noise_sampler, flow, s_noise=1.0, eta=1.0, cfg_pp=False):
    s_in = x.new_ones([x.shape[0]])
    sigma_fn = lambda t: t.neg().exp()  # noqa: E731
    t_fn = lambda sigma: sigma.log().neg()  # noqa: E731
    phi1_fn = lambda t: torch.expm1(t) / t  # noqa: E731
    phi2_fn = lambda t: (phi1_fn(t) - 1.0) / t  # noqa: E731
    old_sigma_down = None
    old_denoised = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in)
        uncond_denoised = model.uncond if cfg_pp else None
        sigma_down, sigma_up = comfy_get_ancestral_step(sigmas[i], sigmas[i + 1], eta=eta)
        if sigma_down == 0 or old_denoised is None:
            if cfg_pp:
                d = comfy_to_d(x, sigmas[i], uncond_denoised)
                x = denoised + d * sigma_down
            else:
                d = comfy_to_d(x, sigmas[i], denoised)
                dt = sigma_down - sigmas[i]
                x = x + d * dt
        else:
            t, t_old, t_next, t_prev = t_fn(sigmas[i]), t_fn(old_sigma_down), t_fn(sigma_down), t_fn(sigmas[i - 1])
            h = t_next - t
            c2 = (t_prev - t_old) / h
            phi1_val, phi2_val = phi1_fn(-h), phi2_fn(-h)
            b1 = torch.nan_to_num(phi1_val - phi2_val / c2, nan=0.0)
            b2 = torch.nan_to_num(phi2_val / c2, nan=0.0)
            if cfg_pp:
                x = x + (denoised - uncond_denoised)
                x = sigma_fn(h) * x + h * (b1 * uncond_denoised + b2 * old_denoised)
            else:
                x = sigma_fn(h) * x + h * (b1 * denoised + b2 * old_denoised)
        if sigmas[i + 1] > 0 and eta:  # sigma_up is 0 at eta 0: ComfyUI's draw there adds nothing
            x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
        old_denoised = uncond_denoised if cfg_pp else denoised
        old_sigma_down = sigma_down
    return x


def comfy_gradient_estimation(model, x, sigmas, noise_sampler, flow, ge_gamma=2.0, cfg_pp=False):
    s_in = x.new_ones([x.shape[0]])
    old_d = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in)
        d = comfy_to_d(x, sigmas[i], model.uncond if cfg_pp else denoised)
        dt = sigmas[i + 1] - sigmas[i]
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            if cfg_pp:
                x = denoised + d * sigmas[i + 1]
            else:
                x = x + d * dt
            if i >= 1:
                d_bar = (ge_gamma - 1) * (d - old_d)
                x = x + d_bar * dt
        old_d = d
    return x


COMFY = {
    "euler_cfg_pp": comfy_euler_cfg_pp,
    "euler_ancestral_cfg_pp": comfy_euler_ancestral_cfg_pp,
    "dpmpp_2s_ancestral_cfg_pp": comfy_dpmpp_2s_ancestral_cfg_pp,
    "dpmpp_2m_cfg_pp": comfy_dpmpp_2m_cfg_pp,
    "res_multistep_cfg_pp": lambda *a: comfy_res_multistep(*a, eta=0.0, cfg_pp=True),
    "res_multistep_ancestral_cfg_pp": lambda *a: comfy_res_multistep(*a, eta=1.0, cfg_pp=True),
    "gradient_estimation_cfg_pp": lambda *a: comfy_gradient_estimation(*a, cfg_pp=True),
}
# Each one's non-CFG++ sibling: ours where registered, always ComfyUI's formula (the same loops, cfg_pp off).
SIBLINGS = {
    "euler_cfg_pp": "euler",
    "euler_ancestral_cfg_pp": "euler_ancestral",
    "dpmpp_2s_ancestral_cfg_pp": "dpmpp_2s_ancestral",
    "dpmpp_2m_cfg_pp": "dpmpp_2m",
    "res_multistep_cfg_pp": "res_multistep",
    "res_multistep_ancestral_cfg_pp": "res_multistep_ancestral",
    "gradient_estimation_cfg_pp": "gradient_estimation",
}
COMFY_SIBLING = {
    "res_multistep_ancestral_cfg_pp": lambda *a: comfy_res_multistep(*a, eta=1.0, cfg_pp=False),
    "gradient_estimation_cfg_pp": lambda *a: comfy_gradient_estimation(*a, cfg_pp=False),
}
FAMILIES = ("eps", "v", "flow")
REFUSED_ON_FLOW = {n for n in CFG_PP if REGISTRY[n].flow.startswith("refused: ")}
EPS_FORM = ("dpmpp_2m_cfg_pp", "res_multistep_cfg_pp", "gradient_estimation_cfg_pp")
TOL = dict(rtol=2e-5, atol=2e-5)


def test_the_family_is_registered_as_declared():
    assert CFG_PP == sorted(COMFY) and all(SAMPLERS[n] is REGISTRY[n].fn for n in CFG_PP)
    assert REFUSED_ON_FLOW == set(EPS_FORM) | {"res_multistep_ancestral_cfg_pp"}
    assert REGISTRY["res_multistep_ancestral_cfg_pp"].flow == f"refused: {RES_ANCESTRAL_ON_FLOW}"
    assert all(REGISTRY[n].flow == "refused: " + EPS_FORM_ON_FLOW.format(n) for n in EPS_FORM)


@pytest.mark.parametrize("name, family", [(n, f) for n in CFG_PP for f in FAMILIES
                                          if f != "flow" or n not in REFUSED_ON_FLOW])  # those: refused, tested below
def test_matches_comfyui_transcription(name, family):
    """The same sigmas, network and Brownian noise: our sampler equals ComfyUI's loop, U and D differing."""
    den = make_den(family)
    sigmas = make_sigmas(den, family)
    x = start(den, sigmas)
    kw = extra()
    ours = SAMPLERS[name](den, x, sigmas, extra_args=kw, disable=True,
                          noise_sampler=BrownianNoiseSampler(x, [1, 2], 20.0))
    theirs = COMFY[name](PostCfg(den, kw), x, sigmas, BrownianNoiseSampler(x, [1, 2], 20.0), family == "flow")
    assert torch.isfinite(ours).all()
    torch.testing.assert_close(ours, theirs, **TOL)
    # Not the sibling: the unconditional prediction moved the result.
    sibling = COMFY_SIBLING.get(name) or SAMPLERS[SIBLINGS[name]]
    assert not torch.allclose(ours, _run(sibling, den, x, sigmas, kw, family), atol=1e-3)


def _run(fn, den, x, sigmas, kw, family):
    noise = BrownianNoiseSampler(x, [1, 2], 20.0)
    if fn in COMFY_SIBLING.values():
        return fn(PostCfg(den, kw), x, sigmas, noise, family == "flow")
    return fn(den, x, sigmas, extra_args=kw, disable=True, noise_sampler=noise)


# On a flow model ComfyUI's euler_ancestral_cfg_pp re-noises as DDIM does in sigma / alpha, euler_ancestral's _RF
# form otherwise: they differ even where U = D.
SIBLING_ON_FLOW = sorted(set(CFG_PP) - REFUSED_ON_FLOW - {"euler_ancestral_cfg_pp"})


@pytest.mark.parametrize("family, name", [("eps", n) for n in CFG_PP] + [("flow", n) for n in SIBLING_ON_FLOW])
def test_equals_its_sibling_where_cond_equals_uncond(name, family):
    """The empty prompt as the prompt (U = D): each CFG++ sampler is its non-CFG++ sibling, ComfyUI's formula and
    ours where this library has it."""
    den = make_den(family)
    sigmas = make_sigmas(den, family)
    x = start(den, sigmas)
    kw = extra(label=0.0)
    ours = SAMPLERS[name](den, x, sigmas, extra_args=kw, disable=True,
                          noise_sampler=BrownianNoiseSampler(x, [1, 2], 20.0))
    siblings = [COMFY_SIBLING[name]] if name in COMFY_SIBLING else []
    if SIBLINGS[name] in SAMPLERS:
        siblings.append(SAMPLERS[SIBLINGS[name]])
    assert siblings
    for sibling in siblings:
        torch.testing.assert_close(ours, _run(sibling, den, x, sigmas, kw, family), **TOL)


@pytest.mark.parametrize("name", CFG_PP)
def test_per_item_sigmas_and_modes_equal_separate_runs(name):
    """Two items with their own schedules and discretization modes in one batch give what each gives alone."""
    net = ToyGuided()
    both_den = make_den("eps", ("ingress", "paper"), net)
    a = make_sigmas(both_den, "eps", 5)
    b = get_sigmas_karras(6, 0.1, 10.0, append_zero=False)
    x = start(both_den, a)
    x[1] = x[1] / float(a[0]) * float(b[0])
    noise = lambda xs, seeds: BrownianNoiseSampler(xs, seeds, 20.0)  # noqa: E731
    kw = extra()
    both = SAMPLERS[name](both_den, x, torch.stack([a, b], 1), extra_args=kw, disable=True,
                          noise_sampler=noise(x, [3, 4]))
    only_a = SAMPLERS[name](make_den("eps", "ingress", net), x[:1], a, extra_args=kw, disable=True,
                            noise_sampler=noise(x[:1], [3]))
    only_b = SAMPLERS[name](make_den("eps", "paper", net), x[1:], b, extra_args=kw, disable=True,
                            noise_sampler=noise(x[1:], [4]))
    torch.testing.assert_close(both, torch.cat([only_a, only_b]), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", CFG_PP)
@pytest.mark.parametrize("guidance", [1.0, GUIDANCE])
def test_network_calls_are_the_declared_ones_and_cost_nothing_extra(name, guidance):
    """CFG++ reads U from the guided call's own 2B batch: the network runs the registry's count of calls, each 2B
    wide, the same calls as its sibling at guidance > 1 (at 1 ComfyUI's disable_cfg1_optimization: the 2B batch,
    still one call)."""
    net = ToyGuided()
    den = make_den("eps", "off", net)
    steps = 5
    sigmas = make_sigmas(den, "eps", steps)
    x = start(den, sigmas)
    SAMPLERS[name](den, x, sigmas, extra_args=extra(guidance=guidance), disable=True,
                   noise_sampler=BrownianNoiseSampler(x, [1, 2], 20.0))
    assert len(net.widths) == network_calls(name, steps) and set(net.widths) == {2 * len(x)}
    sibling = SIBLINGS[name]
    if sibling in SAMPLERS and guidance != 1.0:
        net.widths.clear()
        SAMPLERS[sibling](den, x, sigmas, extra_args=extra(guidance=guidance), disable=True,
                          noise_sampler=BrownianNoiseSampler(x, [1, 2], 20.0))
        assert len(net.widths) == network_calls(name, steps)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("guidance", [1.0, GUIDANCE])
def test_the_hook_gives_the_unconditional_prediction_from_the_same_call(family, guidance):
    """Denoiser.denoised_and_uncond: D as the denoiser gives it, U as the network on the empty prompt gives it, for
    eps, v and flow, from one call of the network."""
    net = ToyGuided()
    den = make_den(family, "off", net)
    sigmas = make_sigmas(den, family)
    x = start(den, sigmas)
    sigma = sigmas[1].expand(len(x))
    denoised, uncond = den.denoised_and_uncond(x, sigma, **extra(guidance=guidance))
    assert len(net.widths) == 1
    torch.testing.assert_close(denoised, den(x, sigma, **extra(guidance=guidance)), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(uncond, den(x, sigma, **extra(label=0.0, guidance=1.0)), rtol=0, atol=0)
    assert not torch.allclose(denoised, uncond, atol=1e-3)


def test_a_network_without_guidance_gives_its_one_prediction_as_both(sd_alphas_cumprod):
    from tests.conftest import toy_eps
    from tests.fakes import cond_eps
    for net in (toy_eps, cond_eps):  # one takes any keyword, one takes none
        den = DiscreteEpsDenoiser(net, sd_alphas_cumprod)
        x, sigma = torch.randn(2, 3, 4, 4), torch.tensor([3.0, 3.0])
        denoised, uncond = den.denoised_and_uncond(x, sigma)
        assert torch.equal(denoised, uncond) and torch.equal(denoised, den(x, sigma))


def test_every_guided_model_network_returns_the_pair():
    """Each model's guided network forwards `with_uncond` to guided_eps (else CFG++ would silently be its
    sibling): SD's, SDXL's and SD3's wrappers over stand-in networks, the embedded model's; Flux.1 refuses."""
    from sampler_lib.models.embedded import NUM_CLASSES, GuidedEps
    from sampler_lib.models.flux import NO_UNCOND, GuidedFlux
    from sampler_lib.models.guidance import NoUncond
    from sampler_lib.models.sd3 import GuidedSD3
    from sampler_lib.models.sdxl import GuidedUNetXL
    from sampler_lib.models.stable_diffusion import GuidedUNet

    def per_item(c):  # each item's own condition, as a network sees it
        return c.flatten(1).mean(1)[:, None, None, None]

    class UNet(nn.Module):
        dtype = torch.float32

        def forward(self, x, t, encoder_hidden_states, added_cond_kwargs=None):
            return types.SimpleNamespace(sample=x * per_item(encoder_hidden_states) + t[:, None, None, None] / 1000)

    class Transformer(nn.Module):
        dtype = torch.float32

        def forward(self, hidden_states, timestep, encoder_hidden_states, pooled_projections, return_dict):
            return (hidden_states * per_item(encoder_hidden_states) + per_item(pooled_projections),)

    x, t = torch.randn(2, 4, 8, 8), torch.tensor([500.0, 500.0])
    cond, uncond, pooled = torch.ones(1, 3, 5), torch.zeros(1, 3, 5), torch.ones(1, 7)
    ids = torch.ones(1, 6)
    cases = [
        (GuidedUNet(UNet()), dict(cond=cond, uncond=uncond)),
        (GuidedUNetXL(UNet()), dict(cond=cond, uncond=uncond, pooled=pooled, pooled_uncond=pooled,
                                    time_ids=ids, time_ids_uncond=ids)),
        (GuidedSD3(Transformer()), dict(cond=cond, uncond=uncond, pooled=pooled, pooled_uncond=pooled)),
    ]
    for wrapper, kw in cases:
        guided, out_uncond = wrapper(x, t, guidance_scale=GUIDANCE, with_uncond=True, **kw)
        torch.testing.assert_close(guided, wrapper(x, t, guidance_scale=GUIDANCE, **kw))
        torch.testing.assert_close(out_uncond, wrapper(x, t, guidance_scale=1.0, **dict(kw, cond=uncond)))
        assert not torch.allclose(guided, out_uncond)
    embedded = GuidedEps(lambda x, t, labels: x * (labels[:, None, None, None] + 1.0))
    labels = torch.tensor([2, 2])
    guided, out_uncond = embedded(x, t, labels, guidance_scale=GUIDANCE, with_uncond=True)
    torch.testing.assert_close(out_uncond, x * (NUM_CLASSES + 1.0))
    flux = GuidedFlux(types.SimpleNamespace(config=types.SimpleNamespace(guidance_embeds=True)))
    with pytest.raises(NoUncond, match="no unconditional prediction"):
        Denoiser(flux, FlowSampling(shift=SHIFT)).denoised_and_uncond(x, torch.tensor([0.5, 0.5]), cond=cond,
                                                                       pooled=pooled)
    assert "_cfg_pp" in NO_UNCOND


def test_refused_on_a_flow_model_in_one_line():
    """The samplers ComfyUI gives no flow form are refused on a flow model, by the config and by the sampler."""
    import re

    from comparisons.core.config import SamplerConfig, check_for_model
    from comparisons.errors import ConfigError
    den = make_den("flow")
    sigmas = make_sigmas(den, "flow")
    x = start(den, sigmas)
    for name in sorted(REFUSED_ON_FLOW):
        why = REGISTRY[name].flow.removeprefix("refused: ")
        with pytest.raises(ValueError, match=re.escape(why)):
            SAMPLERS[name](den, x, sigmas, extra_args=extra(), disable=True,
                           noise_sampler=BrownianNoiseSampler(x, [1, 2], 2.0))
        with pytest.raises(ConfigError, match=f"^{name} on a flow model: {re.escape(why)}$"):
            check_for_model(SamplerConfig(sampler=name), den.model_sampling)
    for name in sorted(set(CFG_PP) - REFUSED_ON_FLOW):
        check_for_model(SamplerConfig(sampler=name), den.model_sampling)  # runs: no refusal


@pytest.mark.parametrize("name", EPS_FORM)
def test_the_eps_forms_refusal_on_a_flow_says_true(name):
    """Why they are refused: on a flow, ComfyUI's formula's first step lands sigma_next (D - U) past its own
    euler_cfg_pp's (which takes the flow's alpha)."""
    den = make_den("flow")
    sigmas = make_sigmas(den, "flow", 8)[2:4]
    x = start(den, sigmas)
    model = PostCfg(den, extra())
    denoised = model(x, sigmas[0].expand(len(x)))
    theirs = COMFY[name](model, x, sigmas, None, True)
    euler = comfy_euler_cfg_pp(model, x, sigmas, None, True)
    torch.testing.assert_close(theirs - euler, sigmas[1] * (denoised - model.uncond), rtol=1e-4, atol=1e-5)
    assert float((denoised - model.uncond).abs().mean()) > 0.05


class GuidedFake:
    """tests.fakes.FakeModel's interface over the guided toy network (its prompt a label)."""

    def __init__(self):
        from tests.fakes import FakeModel
        self.fake = FakeModel()
        self.net = ToyGuided()
        self.name, self.latent_shape, self.device = "guided-fake", (2, 4, 4), torch.device("cpu")
        self.network, self.model_sampling = self.net, self.fake.model_sampling

    def denoiser(self, quantize="off"):
        return DiscreteEpsDenoiser(self.net, self.fake.alphas_cumprod, quantize=quantize)

    def condition(self, prompt, guidance_scale=3.0):
        return {"label": torch.tensor([float(len(prompt) % 3)]), "guidance_scale": float(guidance_scale)}


@pytest.mark.parametrize("name", ["euler_ancestral_cfg_pp", "dpmpp_2s_ancestral_cfg_pp", "dpmpp_2m_cfg_pp"])
def test_through_the_engine_batched_and_deduplicated(name):
    """The engine's BatchDenoiser hands the sampler U through its batching and de-duplication: arms in one lockstep
    batch (identical first-step inputs run once) give what each arm gives alone, and differ from the sibling."""
    from comparisons.core.config import SamplerConfig
    from comparisons.core.engine import Sample, sample_arms
    model = GuidedFake()
    arms = [SamplerConfig(sampler=name, steps=4, quantize=q) for q in ("off", "ingress", "paper")]
    samples = [Sample("a red circle", 0), Sample("a circle", 1)]
    stats = {}
    together = sample_arms(model, arms, samples, stats=stats, noise_max=20.0)
    assert min(stats["batch_sizes"]) < len(arms) * len(samples)  # the first step ran each sample's input once
    alone = torch.cat([sample_arms(model, [arm], samples, noise_max=20.0) for arm in arms], 1)
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-5)
    sibling = sample_arms(model, [SamplerConfig(sampler=SIBLINGS[name], steps=4)], samples, noise_max=20.0)
    assert not torch.allclose(together[:, :1], sibling, atol=1e-3)


def test_a_model_without_guidance_refuses_cfg_pp_as_a_config_error():
    """Through the engine, a network with no unconditional prediction (as Flux.1's) refuses a CFG++ sampler as a
    ConfigError on the sampler field, the user's error in one line; its sibling still runs."""
    from comparisons.core.config import SamplerConfig
    from comparisons.core.engine import Sample, sample_arms
    from comparisons.errors import ConfigError
    from sampler_lib.models.flux import NO_UNCOND
    from sampler_lib.models.guidance import NoUncond

    class NoGuidance(nn.Module):
        def forward(self, x, t, label, guidance_scale=1.0, with_uncond=False):
            if with_uncond:
                raise NoUncond(NO_UNCOND)
            return torch.tanh(x)

    model = GuidedFake()
    model.net = model.network = NoGuidance()
    samples = [Sample("a red circle", 0)]
    with pytest.raises(ConfigError, match="no unconditional prediction") as caught:
        sample_arms(model, [SamplerConfig(sampler="euler_cfg_pp", steps=3)], samples)
    assert caught.value.field == "sampler" and "\n" not in str(caught.value)
    assert torch.isfinite(sample_arms(model, [SamplerConfig(sampler="euler", steps=3)], samples)).all()
