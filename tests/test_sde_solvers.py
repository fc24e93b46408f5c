"""ComfyUI's half-log-SNR solvers (sampler_lib/sde_solvers.py: er_sde, seeds_2, seeds_3, exp_heun_2_x0(_sde),
sa_solver(_pece)) against a literal scalar transcription of their loops in comfy/k_diffusion/sampling.py and
sa_solver.py (ComfyUI is not installable from PyPI), on one schedule, the same toy network and the same seeded
noise, on an eps model and on a flow model (CONST: half-log-SNR of (1 - sigma) / sigma, a first sigma of 1 moved);
the deterministic ones on an exact ODE; per-item schedules; the network calls the registry declares."""
import math

import pytest
import torch

import sampler_lib.sde_solvers  # noqa: F401  (registers them)
from sampler_lib import (
    REGISTRY,
    SCHEDULES,
    BrownianNoiseSampler,
    Denoiser,
    DiscreteEpsDenoiser,
    FlowSampling,
    get_sigmas_karras,
    network_calls,
    round_sigmas,
)
from sampler_lib.sde_solvers import percent_to_sigma
from tests.conftest import toy_eps
from tests.test_flow_samplers import comfy_offset_first_sigma, comfy_time_snr_shift
from tests.test_model_sampling import toy_velocity
from tests.test_samplers import Gaussian, start

SHIFT = 3.0
NAMES = ("er_sde", "seeds_2", "seeds_3", "exp_heun_2_x0", "exp_heun_2_x0_sde", "sa_solver", "sa_solver_pece")


# --- ComfyUI, written down (model_sampling EPS or CONST with shift SHIFT; its noise_scale 1) ----------------------

class Comfy:
    """What ComfyUI's samplers ask of model_sampling: CONST or not, and percent_to_sigma."""

    def __init__(self, const, log_sigmas=None):
        self.const, self.log_sigmas = const, log_sigmas

    def lam(self, sigma):  # sigma_to_half_log_snr
        return sigma.logit().neg() if self.const else sigma.log().neg()

    def sigma(self, lam):  # half_log_snr_to_sigma
        return lam.neg().sigmoid() if self.const else lam.neg().exp()

    def offset(self, sigmas):  # offset_first_sigma_for_snr
        return comfy_offset_first_sigma(sigmas, SHIFT) if self.const else sigmas

    def percent_to_sigma(self, percent):
        if self.const:
            return comfy_time_snr_shift(SHIFT, 1.0 - percent)
        t = torch.tensor((1.0 - percent) * 999.0).float().clamp(0, len(self.log_sigmas) - 1)
        low, high, w = t.floor().long(), t.ceil().long(), t.frac()
        return ((1 - w) * self.log_sigmas[low] + w * self.log_sigmas[high]).exp().item()


def comfy_er_sde(model, x, sigmas, noise_sampler, ms, s_noise=1.0, eta=1.0, max_stage=3):
    """sample_er_sde with SamplerER_SDE's ER-SDE noise scaler x (e^(x^0.3) + 10)^eta (eta 1: its default)."""
    noise_scaler = lambda v: v * ((v ** 0.3).exp() + 10.0) ** eta  # noqa: E731
    if eta == 0:
        s_noise = 0.0
    s_in = x.new_ones([x.shape[0]])
    point_indice = torch.arange(0, 200.0, dtype=torch.float32)
    sigmas = ms.offset(sigmas)
    er_lambdas = ms.lam(sigmas).neg().exp()
    old_denoised = old_denoised_d = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in)
        stage_used = min(max_stage, i + 1)
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            er_lambda_s, er_lambda_t = er_lambdas[i], er_lambdas[i + 1]
            alpha_s, alpha_t = sigmas[i] / er_lambda_s, sigmas[i + 1] / er_lambda_t
            r = noise_scaler(er_lambda_t) / noise_scaler(er_lambda_s)
            x = alpha_t / alpha_s * r * x + alpha_t * (1 - r) * denoised
            if stage_used >= 2:
                dt = er_lambda_t - er_lambda_s
                lambda_step_size = -dt / 200.0
                lambda_pos = er_lambda_t + point_indice * lambda_step_size
                scaled_pos = noise_scaler(lambda_pos)
                s = torch.sum(1 / scaled_pos) * lambda_step_size
                denoised_d = (denoised - old_denoised) / (er_lambda_s - er_lambdas[i - 1])
                x = x + alpha_t * (dt + s * noise_scaler(er_lambda_t)) * denoised_d
                if stage_used >= 3:
                    s_u = torch.sum((lambda_pos - er_lambda_s) / scaled_pos) * lambda_step_size
                    denoised_u = (denoised_d - old_denoised_d) / ((er_lambda_s - er_lambdas[i - 2]) / 2)
                    x = x + alpha_t * ((dt ** 2) / 2 + s_u * noise_scaler(er_lambda_t)) * denoised_u
                old_denoised_d = denoised_d
            if s_noise > 0:
                x = x + alpha_t * noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * (
                    er_lambda_t ** 2 - er_lambda_s ** 2 * r ** 2).sqrt().nan_to_num(nan=0.0)
        old_denoised = denoised
    return x


def ei_h_phi_1(h):
    return torch.expm1(h)


def ei_h_phi_2(h):
    return (torch.expm1(h) - h) / h


def comfy_seeds_2(model, x, sigmas, noise_sampler, ms, eta=1.0, s_noise=1.0, r=0.5, solver_type="phi_1"):
    s_in = x.new_ones([x.shape[0]])
    inject_noise = eta > 0 and s_noise > 0
    sigmas = ms.offset(sigmas)
    fac = 1 / (2 * r)
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in)
        if sigmas[i + 1] == 0:
            x = denoised
            continue
        lambda_s, lambda_t = ms.lam(sigmas[i]), ms.lam(sigmas[i + 1])
        h = lambda_t - lambda_s
        h_eta = h * (eta + 1)
        lambda_s_1 = torch.lerp(lambda_s, lambda_t, r)
        sigma_s_1 = ms.sigma(lambda_s_1)
        alpha_s_1 = sigma_s_1 * lambda_s_1.exp()
        alpha_t = sigmas[i + 1] * lambda_t.exp()
        x_2 = sigma_s_1 / sigmas[i] * (-r * h * eta).exp() * x - alpha_s_1 * ei_h_phi_1(-r * h_eta) * denoised
        if inject_noise:
            sde_noise = (-2 * r * h * eta).expm1().neg().sqrt() * noise_sampler(sigmas[i], sigma_s_1)
            x_2 = x_2 + sde_noise * sigma_s_1 * s_noise
        denoised_2 = model(x_2, sigma_s_1 * s_in)
        if solver_type == "phi_1":
            denoised_d = torch.lerp(denoised, denoised_2, fac)
            x = sigmas[i + 1] / sigmas[i] * (-h * eta).exp() * x - alpha_t * ei_h_phi_1(-h_eta) * denoised_d
        else:
            b2 = ei_h_phi_2(-h_eta) / r
            b1 = ei_h_phi_1(-h_eta) - b2
            x = sigmas[i + 1] / sigmas[i] * (-h * eta).exp() * x - alpha_t * (b1 * denoised + b2 * denoised_2)
        if inject_noise:
            segment_factor = (r - 1) * h * eta
            sde_noise = sde_noise * segment_factor.exp()
            sde_noise = sde_noise + segment_factor.mul(2).expm1().neg().sqrt() * noise_sampler(sigma_s_1, sigmas[i + 1])
            x = x + sde_noise * sigmas[i + 1] * s_noise
    return x


def comfy_seeds_3(model, x, sigmas, noise_sampler, ms, eta=1.0, s_noise=1.0, r_1=1. / 3, r_2=2. / 3):
    s_in = x.new_ones([x.shape[0]])
    inject_noise = eta > 0 and s_noise > 0
    sigmas = ms.offset(sigmas)
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in)
        if sigmas[i + 1] == 0:
            x = denoised
            continue
        lambda_s, lambda_t = ms.lam(sigmas[i]), ms.lam(sigmas[i + 1])
        h = lambda_t - lambda_s
        h_eta = h * (eta + 1)
        lambda_s_1, lambda_s_2 = torch.lerp(lambda_s, lambda_t, r_1), torch.lerp(lambda_s, lambda_t, r_2)
        sigma_s_1, sigma_s_2 = ms.sigma(lambda_s_1), ms.sigma(lambda_s_2)
        alpha_s_1, alpha_s_2 = sigma_s_1 * lambda_s_1.exp(), sigma_s_2 * lambda_s_2.exp()
        alpha_t = sigmas[i + 1] * lambda_t.exp()
        x_2 = sigma_s_1 / sigmas[i] * (-r_1 * h * eta).exp() * x - alpha_s_1 * ei_h_phi_1(-r_1 * h_eta) * denoised
        if inject_noise:
            sde_noise = (-2 * r_1 * h * eta).expm1().neg().sqrt() * noise_sampler(sigmas[i], sigma_s_1)
            x_2 = x_2 + sde_noise * sigma_s_1 * s_noise
        denoised_2 = model(x_2, sigma_s_1 * s_in)
        a3_2 = r_2 / r_1 * ei_h_phi_2(-r_2 * h_eta)
        a3_1 = ei_h_phi_1(-r_2 * h_eta) - a3_2
        x_3 = sigma_s_2 / sigmas[i] * (-r_2 * h * eta).exp() * x - alpha_s_2 * (a3_1 * denoised + a3_2 * denoised_2)
        if inject_noise:
            segment_factor = (r_1 - r_2) * h * eta
            sde_noise = sde_noise * segment_factor.exp()
            sde_noise = sde_noise + segment_factor.mul(2).expm1().neg().sqrt() * noise_sampler(sigma_s_1, sigma_s_2)
            x_3 = x_3 + sde_noise * sigma_s_2 * s_noise
        denoised_3 = model(x_3, sigma_s_2 * s_in)
        b3 = ei_h_phi_2(-h_eta) / r_2
        b1 = ei_h_phi_1(-h_eta) - b3
        x = sigmas[i + 1] / sigmas[i] * (-h * eta).exp() * x - alpha_t * (b1 * denoised + b3 * denoised_3)
        if inject_noise:
            segment_factor = (r_2 - 1) * h * eta
            sde_noise = sde_noise * segment_factor.exp()
            sde_noise = sde_noise + segment_factor.mul(2).expm1().neg().sqrt() * noise_sampler(sigma_s_2, sigmas[i + 1])
            x = x + sde_noise * sigmas[i + 1] * s_noise
    return x


def compute_exponential_coeffs(s, t, solver_order, tau_t):
    tau_mul = 1 + tau_t ** 2
    h = t - s
    p = torch.arange(solver_order, dtype=s.dtype)
    product_terms_factored = (t ** p - s ** p * (-tau_mul * h).exp())
    recursive_depth_mat = p.unsqueeze(1) - p.unsqueeze(0)
    log_factorial = (p + 1).lgamma()
    recursive_coeff_mat = log_factorial.unsqueeze(1) - log_factorial.unsqueeze(0)
    if tau_t > 0:
        recursive_coeff_mat = recursive_coeff_mat - (recursive_depth_mat * math.log(tau_mul))
    signs = torch.where(recursive_depth_mat % 2 == 0, 1.0, -1.0).to(s.dtype)
    recursive_coeff_mat = (recursive_coeff_mat.exp() * signs).tril()
    return recursive_coeff_mat @ product_terms_factored


def compute_stochastic_adams_b_coeffs(sigma_next, curr_lambdas, lambda_s, lambda_t, tau_t):
    num_timesteps = curr_lambdas.shape[0]
    exp_integral_coeffs = compute_exponential_coeffs(lambda_s, lambda_t, num_timesteps, tau_t)
    vandermonde_matrix_T = torch.vander(curr_lambdas, num_timesteps, increasing=True).T
    lagrange_integrals = torch.linalg.solve(vandermonde_matrix_T, exp_integral_coeffs)
    alpha_t = sigma_next * lambda_t.exp()
    return alpha_t * lagrange_integrals


def comfy_sa_solver(model, x, sigmas, noise_sampler, ms, eta=1.0, s_noise=1.0, use_pece=False):
    """sample_sa_solver with the KSampler's defaults: tau_func = get_tau_interval_func(percent_to_sigma(0.2),
    percent_to_sigma(0.8), eta), predictor order 3, corrector order 4, no simple order 2."""
    start_sigma, end_sigma = ms.percent_to_sigma(0.2), ms.percent_to_sigma(0.8)
    tau_func = lambda sigma: 0.0 if eta <= 0 else (eta if start_sigma >= sigma.item() >= end_sigma else 0.0)  # noqa
    predictor_order, corrector_order = 3, 4
    s_in = x.new_ones([x.shape[0]])
    sigmas = ms.offset(sigmas)
    lambdas = ms.lam(sigmas)
    max_used_order = max(predictor_order, corrector_order)
    x_pred = x
    h, tau_t, noise, pred_list = 0.0, 0.0, 0.0, []
    lower_order_to_end = sigmas[-1].item() == 0
    for i in range(len(sigmas) - 1):
        denoised = model(x_pred, sigmas[i] * s_in)
        pred_list.append(denoised)
        pred_list = pred_list[-max_used_order:]
        predictor_order_used = min(predictor_order, len(pred_list))
        if i == 0 or (sigmas[i + 1] == 0 and not use_pece):
            corrector_order_used = 0
        else:
            corrector_order_used = min(corrector_order, len(pred_list))
        if lower_order_to_end:
            predictor_order_used = min(predictor_order_used, len(sigmas) - 2 - i)
            corrector_order_used = min(corrector_order_used, len(sigmas) - 1 - i)
        if corrector_order_used == 0:
            x = x_pred
        else:
            curr_lambdas = lambdas[i - corrector_order_used + 1:i + 1]
            b_coeffs = compute_stochastic_adams_b_coeffs(sigmas[i], curr_lambdas, lambdas[i - 1], lambdas[i], tau_t)
            pred_mat = torch.stack(pred_list[-corrector_order_used:], dim=1)
            corr_res = torch.tensordot(pred_mat, b_coeffs, dims=([1], [0]))
            x = sigmas[i] / sigmas[i - 1] * (-(tau_t ** 2) * h).exp() * x + corr_res
            if tau_t > 0 and s_noise > 0:
                x = x + noise
            if use_pece:
                denoised = model(x, sigmas[i] * s_in)
                pred_list[-1] = denoised
        if sigmas[i + 1] == 0:
            x_pred = denoised
        else:
            tau_t = tau_func(sigmas[i + 1])
            curr_lambdas = lambdas[i - predictor_order_used + 1:i + 1]
            b_coeffs = compute_stochastic_adams_b_coeffs(sigmas[i + 1], curr_lambdas, lambdas[i], lambdas[i + 1], tau_t)
            pred_mat = torch.stack(pred_list[-predictor_order_used:], dim=1)
            pred_res = torch.tensordot(pred_mat, b_coeffs, dims=([1], [0]))
            h = lambdas[i + 1] - lambdas[i]
            x_pred = sigmas[i + 1] / sigmas[i] * (-(tau_t ** 2) * h).exp() * x + pred_res
            if tau_t > 0 and s_noise > 0:
                noise = noise_sampler(sigmas[i], sigmas[i + 1]) * sigmas[i + 1] * (
                    -2 * tau_t ** 2 * h).expm1().neg().sqrt() * s_noise
                x_pred = x_pred + noise
    return x_pred


COMFY = {
    "er_sde": comfy_er_sde,
    "seeds_2": comfy_seeds_2,
    "seeds_3": comfy_seeds_3,
    # sample_exp_heun_2_x0(_sde): seeds_2 with r = 1 and phi_2; the deterministic one with eta 0, s_noise 0.
    "exp_heun_2_x0": lambda m, x, s, ns, ms: comfy_seeds_2(m, x, s, ns, ms, eta=0.0, s_noise=0.0, r=1.0,
                                                           solver_type="phi_2"),
    "exp_heun_2_x0_sde": lambda m, x, s, ns, ms, **kw: comfy_seeds_2(m, x, s, ns, ms, r=1.0, solver_type="phi_2",
                                                                     **kw),
    "sa_solver": comfy_sa_solver,
    "sa_solver_pece": lambda m, x, s, ns, ms, **kw: comfy_sa_solver(m, x, s, ns, ms, use_pece=True, **kw),
}


# --- ours against them ---------------------------------------------------------------------------------------------

def family(name, sd_alphas_cumprod, quantize="off"):
    """(denoiser, ComfyUI's view of its model sampling, schedule maker, noise sampler's sigma_max)."""
    if name == "eps":
        den = DiscreteEpsDenoiser(toy_eps, sd_alphas_cumprod, quantize=quantize)
        sched = lambda n, zero: get_sigmas_karras(n if zero else n + 1, float(den.sigma_min),  # noqa: E731
                                                  float(den.sigma_max), append_zero=zero).double()
        return den, Comfy(False, den.log_sigmas.float()), sched, 20.0
    den = Denoiser(toy_velocity, FlowSampling(shift=SHIFT), quantize=quantize)

    def sched(n, zero):
        sigmas = SCHEDULES["simple"](n if zero else n + 1, den.model_sampling).double()
        return sigmas if zero else sigmas[:-1]
    return den, Comfy(True), sched, 1.0


CASES = [(name, {}) for name in NAMES] + [
    ("er_sde", {"eta": 0.5}), ("er_sde", {"eta": 0.0}), ("er_sde", {"s_noise": 0.5}),
    ("seeds_2", {"solver_type": "phi_2"}), ("seeds_2", {"eta": 0.5, "r": 0.3}), ("seeds_3", {"eta": 0.4}),
    ("exp_heun_2_x0_sde", {"eta": 0.6}), ("sa_solver", {"eta": 0.7}), ("sa_solver_pece", {"s_noise": 0.5})]


@pytest.mark.parametrize("name, options", CASES, ids=lambda v: str(v) if isinstance(v, str) else
                         "-".join(f"{k}{w}" for k, w in v.items()) or "default")
@pytest.mark.parametrize("kind", ["eps", "flow"])
@pytest.mark.parametrize("n, zero", [(4, True), (9, False)])
def test_matches_comfyui_transcription(name, options, kind, n, zero, sd_alphas_cumprod):
    """The same sigmas and the same Brownian draws (ComfyUI's noise_sampler argument) in float64."""
    den, ms, sched, sigma_max = family(kind, sd_alphas_cumprod)
    sigmas = sched(n, zero)
    x = start(den).double() * (1.0 if kind == "eps" else 1 / float(den.sigma_max))
    theirs = COMFY[name](den, x, sigmas, BrownianNoiseSampler(x, [7, 8], sigma_max), ms, **options)
    ours = REGISTRY[name].fn(den, x, sigmas, disable=True, noise_sampler=BrownianNoiseSampler(x, [7, 8], sigma_max),
                          **options)
    assert torch.isfinite(ours).all()
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-6)


def dense(kind, low_points):
    """A schedule off the training grid and denser than it at the low end, where the grid is sparse: paper mode's
    rounding repeats sigmas there."""
    top, low, bottom = (14.6, 0.3, 0.0292) if kind == "eps" else (1.0, 0.1, 0.003)
    low_end = torch.exp(torch.linspace(math.log(low), math.log(bottom), low_points))
    return torch.cat([torch.linspace(top, low, 6)[:-1], low_end, torch.zeros(1)]).double()


def noise_for(x, seeds, sigma_max):
    return BrownianNoiseSampler(x, seeds, sigma_max)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("kind", ["eps", "flow"])
@pytest.mark.parametrize("quantize", ["off", "paper"])
def test_per_item_schedules_equal_separate_runs(name, kind, quantize, sd_alphas_cumprod):
    """Two schedules in one batch (one ending in 0, one not; in paper mode dense enough that rounding repeats
    sigmas at different steps of each) give what each gives alone."""
    den, _, sched, sigma_max = family(kind, sd_alphas_cumprod, quantize)
    a, b = (sched(7, True), sched(7, False)) if quantize == "off" else (dense(kind, 12), dense(kind, 13)[:-1])
    x = start(den).double() / (1.0 if kind == "eps" else float(den.sigma_max))
    run = lambda x_, s, seeds: REGISTRY[name].fn(den, x_, s, disable=True,  # noqa: E731
                                                 noise_sampler=noise_for(x_, seeds, sigma_max))
    both = run(x, torch.stack([a, b], 1), [5, 6])
    torch.testing.assert_close(both, torch.cat([run(x[:1], a, [5]), run(x[1:], b, [6])]), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("kind", ["eps", "flow"])
def test_repeated_rounded_sigmas_are_no_steps(name, kind, sd_alphas_cumprod):
    """Paper mode rounds a dense schedule onto the training grid, so neighbours coincide: a zero-length step changes
    nothing, draws nothing and is not history, so the run equals the one on the schedule without repeats (ComfyUI's
    loops divide by the repeat)."""
    den, _, sched, sigma_max = family(kind, sd_alphas_cumprod, "paper")
    sigmas = dense(kind, 24)
    rounded = round_sigmas(den, sigmas)
    distinct = torch.cat([rounded[:1], rounded[1:][rounded[1:] != rounded[:-1]]])
    assert len(distinct) < len(sigmas)  # the case under test really happens
    x = start(den).double() / (1.0 if kind == "eps" else float(den.sigma_max))
    run = lambda s: REGISTRY[name].fn(den, x, s, disable=True, noise_sampler=noise_for(x, [1, 2], sigma_max))  # noqa
    out = run(sigmas)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, run(distinct), rtol=1e-6, atol=1e-6)


class Counting(torch.nn.Module):
    """A denoiser that counts its network calls and passes its model sampling on (as the engine's does)."""

    def __init__(self, den):
        super().__init__()
        self.den, self.calls, self.model_sampling = den, 0, den.model_sampling

    def forward(self, x, sigma, **kw):
        self.calls += 1
        return self.den(x, sigma, **kw)


@pytest.mark.parametrize("name", NAMES)
def test_declared_network_calls_are_the_counted_ones(name, sd_alphas_cumprod):
    den, _, sched, sigma_max = family("eps", sd_alphas_cumprod)
    x = start(den)
    for steps in (1, 2, 3, 7):
        for zero in (True, False):
            model = Counting(den)
            reports = []
            REGISTRY[name].fn(model, x, sched(steps, zero).float(), disable=True, callback=reports.append,
                              noise_sampler=noise_for(x, [1, 2], sigma_max))
            assert model.calls == network_calls(name, steps, zero), (steps, zero)
            assert [r["i"] for r in reports] == list(range(steps))  # one callback per step


@pytest.mark.parametrize("name", [n for n in NAMES if REGISTRY[n].adds_noise])
def test_noise_is_the_seeded_paths(name, sd_alphas_cumprod):
    den, _, sched, sigma_max = family("eps", sd_alphas_cumprod)
    x, sigmas = start(den), sched(6, True).float()
    run = lambda seeds: REGISTRY[name].fn(den, x, sigmas, disable=True,  # noqa: E731
                                          noise_sampler=noise_for(x, seeds, sigma_max))
    assert torch.equal(run([1, 2]), run([1, 2])) and not torch.allclose(run([1, 2]), run([3, 4]))
    with pytest.raises(ValueError, match="noise_sampler"):
        REGISTRY[name].fn(den, x, sigmas, disable=True)


# Observed order on the exact ODE (eta 0), 12 -> 24 -> 48 steps even in log sigma. Measured: exp_heun_2_x0 1.95,
# 1.98; seeds_2 1.93, 1.97 (phi_2: 1.99, 2.00); seeds_3 2.62, 2.84; er_sde 2.20, 2.02 (its stages' 200-point sums
# then limit it: 1.82 at 96); sa_solver 3.73, 3.70; sa_solver_pece 4.09, 4.09.
CONVERGENCE = [("exp_heun_2_x0", {}, (1.9, 2.1)), ("seeds_2", {}, (1.9, 2.1)),
               ("seeds_2", {"solver_type": "phi_2"}, (1.95, 2.05)), ("seeds_3", {}, (2.5, 3.1)),
               ("er_sde", {}, (1.95, 2.3)), ("sa_solver", {}, (3.5, 4.0)), ("sa_solver_pece", {}, (3.9, 4.3))]


@pytest.mark.parametrize("name, options, bounds", CONVERGENCE)
def test_deterministic_forms_converge_on_an_exact_ode(name, options, bounds):
    """On N(0, s^2) data the probability-flow ODE has a closed form (tests/test_samplers.py's Gaussian); a plain
    denoiser is fine at eta 0, where sa_solver needs no noise window."""
    model = Gaussian(0.7)
    x = torch.tensor([[1.3], [-0.4]], dtype=torch.float64)
    exact = model.exact(x, 20.0, 0.1)
    if "eta" in REGISTRY[name].options:
        options = {**options, "eta": 0.0}
    errors = []
    for n in (12, 24, 48):
        sigmas = torch.exp(torch.linspace(math.log(20.0), math.log(0.1), n + 1, dtype=torch.float64))
        errors.append(float((REGISTRY[name].fn(model, x, sigmas, disable=True, **options) - exact).abs().max()))
    rates = [math.log2(errors[0] / errors[1]), math.log2(errors[1] / errors[2])]
    assert all(bounds[0] < r < bounds[1] for r in rates), (errors, rates)


def test_sa_solver_needs_the_models_sampling_for_its_noise_window(sd_alphas_cumprod):
    """ComfyUI's window is tau = eta between percent_to_sigma(0.2) and percent_to_sigma(0.8) of the model: SD's
    sigmas 20% and 80% of the way; a bare callable has no such sigmas, so it is refused (it runs at eta 0)."""
    den, ms, _, _ = family("eps", sd_alphas_cumprod)
    assert percent_to_sigma(den.model_sampling, 0.2) == pytest.approx(ms.percent_to_sigma(0.2), rel=1e-6)
    assert percent_to_sigma(den.model_sampling, 0.8) == pytest.approx(ms.percent_to_sigma(0.8), rel=1e-6)
    flow = FlowSampling(shift=SHIFT)
    assert percent_to_sigma(flow, 0.2) == pytest.approx(comfy_time_snr_shift(SHIFT, 0.8), rel=1e-12)
    x, sigmas = start(den), get_sigmas_karras(5, 0.03, 14.6)
    with pytest.raises(ValueError, match="give a denoiser that has a model_sampling"):
        REGISTRY["sa_solver"].fn(lambda x_, s: den(x_, s), x, sigmas, disable=True,
                                 noise_sampler=noise_for(x, [1, 2], 20.0))
    plain = REGISTRY["sa_solver"].fn(lambda x_, s: den(x_, s), x, sigmas, disable=True, eta=0.0)
    torch.testing.assert_close(plain, REGISTRY["sa_solver"].fn(den, x, sigmas, disable=True, eta=0.0))
