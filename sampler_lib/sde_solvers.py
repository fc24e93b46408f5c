"""ComfyUI's solvers in half-log-SNR beyond k-diffusion's, with this library's contract: ER-SDE-Solver-3 (er_sde),
SEEDS-2 and SEEDS-3 (seeds_2, seeds_3), the exponential Heun method in x0 (exp_heun_2_x0 and its SDE form
exp_heun_2_x0_sde) and the Stochastic Adams solver (sa_solver, sa_solver_pece).

Each steps in lambda = log(alpha / sigma) with alpha = sigma e^lambda, as ComfyUI's do: lambda = -log sigma and alpha
= 1 on an eps model; on a flow model (`samplers.flow_sampling`) ComfyUI's CONST formulas, lambda = log((1 - sigma) /
sigma), alpha = 1 - sigma, and a first sigma of 1 moved to 1 - 1e-4 of the way (`offset_first_sigma`). Every
coefficient depends only on the schedule, so it is computed before the loop: the stages' ones as (N, B) tensors, the
multistep ones (er_sde, sa_solver) as weights on the denoised history per distinct schedule column, on the host in
float64. A zero-length step (two equal rounded sigmas in paper mode) changes nothing and is not history; ComfyUI's
loops divide by it. A stage's sigma is a network input: on the training grid in paper mode, the stage landing there.
ComfyUI draws each noise from randn; here it is the seeded Brownian increment over the same sigma interval, and the
intervals of one run do not overlap, so the draws are independent standard normals as there.
Checked against a scalar transcription of ComfyUI's loops (tests/test_sde_solvers.py)."""
import math

import numpy as np
import torch
from tqdm.auto import trange

from .registry import sampler
from .samplers import _need, _report, _setup, _where, flow_sampling, half_log_snr, offset_first_sigma, round_sigmas
from .wrappers import append_dims


def sigma_of_half_log_snr(lam, flow):
    """sigma of lambda: e^-lambda on an eps model, 1 / (1 + e^lambda) on a flow (ComfyUI's half_log_snr_to_sigma)."""
    return lam.neg().sigmoid() if flow is not None else lam.neg().exp()


def h_phi_2(v):
    """h phi_2(h) = (e^h - 1 - h) / h of exponential integrators (ComfyUI's ei_h_phi_2), 0 at h = 0."""
    zero = v == 0
    safe = torch.where(zero, torch.ones_like(v), v)
    return torch.where(zero, torch.zeros_like(v), (safe.expm1() - safe) / safe)


def percent_to_sigma(sampling, percent):
    """ComfyUI's model_sampling.percent_to_sigma: ModelSamplingDiscrete's sigma at timestep (1 - percent) * 999 (its
    last timestep), a flow's shifted time 1 - percent."""
    if sampling.kind == "flow":
        return float(sampling.shifted(torch.tensor(1.0 - percent, dtype=torch.float64)))
    return float(sampling.sigma(torch.tensor((1.0 - percent) * (len(sampling.sigmas) - 1), dtype=torch.float32)))


# --- per-column plans: weights on the denoised history, computed on the host -------------------------------------

def schedule_columns(sigmas):
    """The distinct schedule columns as float64 numpy rows (C, N+1), and each batch item's column (B,)."""
    columns, inverse = torch.unique(sigmas.T.double().cpu(), dim=0, return_inverse=True)
    return columns.numpy(), inverse.numpy()


def moving_history(col):
    """Per step of one column: its logical index (among the moving steps) and the indices of the earlier moving steps,
    newest first; None for a zero-length step, which is no step at all."""
    out, earlier = [], []
    for i in range(len(col) - 1):
        if col[i + 1] == col[i]:
            out.append(None)
            continue
        out.append((len(earlier), list(earlier)))
        earlier.insert(0, i)
    return out


class HistoryWeights:
    """Weights per step on the history of one tensor per step (hist[i - m] for m < depth), gathered per item from per
    column dicts {step: weight}; `terms[i]` lists the m with a nonzero weight, read on the host."""

    def __init__(self, per_column, inverse, n, like):
        depth = 1 + max((i - j for steps in per_column for i, w in enumerate(steps) for j in w), default=0)
        w = np.zeros((len(per_column), n, depth))
        for c, steps in enumerate(per_column):
            for i, w_i in enumerate(steps):
                for j, value in w_i.items():
                    w[c, i, i - j] += value
        w = w[inverse]  # (B, N, depth)
        self.depth = depth
        self.terms = [[m for m in range(depth) if (w[:, i, m] != 0).any()] for i in range(n)]
        self.w = append_dims(torch.as_tensor(w, dtype=like.dtype).permute(1, 2, 0).to(like.device), like.ndim + 2)

    def __call__(self, i, history, out=None):
        for m in self.terms[i]:
            term = self.w[i, m] * history[-1 - m]
            out = term if out is None else out + term
        return out


def per_item(values, inverse, like):
    """(C, N) per-column host values -> an (N, B, 1, ...) tensor for x-shaped arithmetic."""
    return append_dims(torch.as_tensor(np.asarray(values)[inverse].T, dtype=like.dtype).to(like.device), like.ndim + 1)


# --- ER-SDE ------------------------------------------------------------------------------------------------------

ER_SDE_POINTS = 200  # ComfyUI's num_integration_points: the stage integrals are left Riemann sums of 200 points


def _er_sde_scaler(eta):
    """ComfyUI's SamplerER_SDE noise scaler for solver ER-SDE: x (e^(x^0.3) + 10)^eta (eta 1: sample_er_sde's own)."""
    return lambda v: v * (np.exp(v ** 0.3) + 10.0) ** eta


def _er_sde_column(col, flow, eta, s_noise, max_stage):
    """ER-SDE-Solver-3 on one column: per step (a, {step: weight}, noise scale) of x' = a x + sum weight D + scale z
    in er_lambda = sigma / alpha (sample_er_sde: an Euler stage, then finite-difference stages 2 and 3)."""
    scaler = _er_sde_scaler(eta)
    er = col / (1 - col) if flow is not None else col.copy()
    alpha = 1 - col if flow is not None else np.ones_like(col)
    pos_index = np.arange(ER_SDE_POINTS)
    steps = []
    for i, moving in enumerate(moving_history(col)):
        if col[i + 1] == 0:
            steps.append((0.0, {i: 1.0}, 0.0))
            continue
        if moving is None:
            steps.append((1.0, {}, 0.0))
            continue
        k, earlier = moving
        er_s, er_t, alpha_t = er[i], er[i + 1], alpha[i + 1]
        r = scaler(er_t) / scaler(er_s)
        w = {i: alpha_t * (1 - r)}
        stage = min(max_stage, k + 1)
        if stage >= 2:
            dt = er_t - er_s
            step = -dt / ER_SDE_POINTS
            pos = er_t + pos_index * step
            scaled = scaler(pos)
            j1 = earlier[0]
            c2 = alpha_t * (dt + np.sum(1 / scaled) * step * scaler(er_t)) / (er_s - er[j1])
            w[i] += c2
            w[j1] = -c2
            if stage >= 3:
                j2 = earlier[1]
                s_u = np.sum((pos - er_s) / scaled) * step
                c3 = alpha_t * (dt ** 2 / 2 + s_u * scaler(er_t)) / ((er_s - er[j2]) / 2)
                d_i, d_1 = c3 / (er_s - er[j1]), c3 / (er[j1] - er[j2])
                w[i] += d_i
                w[j1] -= d_i + d_1
                w[j2] = d_1
        noise = alpha_t * s_noise * math.sqrt(max(er_t ** 2 - er_s ** 2 * r ** 2, 0.0))
        steps.append((alpha_t / alpha[i] * r, w, noise))
    return steps


@sampler("er_sde", group="adds noise", note="ER-SDE-Solver-3: 3 stages from past steps (eta; ComfyUI's max_stage 3)",
         calls_per_step=1, options=("eta", "s_noise", "max_stage"), adds_noise=True, flow="rf")
@torch.no_grad()
def sample_er_sde(model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1.0, s_noise=1.0,
                  noise_sampler=None, max_stage=3):
    """ER-SDE-Solver-3 (Cui et al. 2023, arXiv:2309.06169; ComfyUI's er_sde): noise scaler x (e^(x^0.3) + 10)^eta as
    ComfyUI's SamplerER_SDE (eta 1 is the KSampler's; eta 0 its ODE, no noise), stages up to max_stage; the step into
    sigma = 0 returns the denoised image."""
    if max_stage not in (1, 2, 3):
        raise ValueError(f"max_stage must be 1, 2 or 3 (got {max_stage!r})")
    flow = flow_sampling(model)
    extra_args, sigmas = _setup(model, x, sigmas, extra_args)
    sigmas = offset_first_sigma(sigmas, flow)
    noisy = eta > 0 and s_noise > 0
    columns, inverse = schedule_columns(sigmas)
    plans = [_er_sde_column(col, flow, eta, s_noise if noisy else 0.0, max_stage) for col in columns]
    return run_planned(model, x, sigmas, plans, inverse, extra_args, callback, disable, noise_sampler, noisy)


def run_planned(model, x, sigmas, plans, inverse, extra_args, callback, disable, noise_sampler, noisy=True):
    """The step loop of a multistep sampler planned on the host: step i is x <- a_i x + sum_j w_ij denoised_(i-j),
    plus fresh noise times scale_i. `plans` holds each distinct schedule column's (a, weights, scale) per step
    (schedule_columns; `inverse` maps items to columns): what depends only on the schedule is read once, before
    the loop."""
    n = len(sigmas) - 1
    a = per_item([[s[0] for s in plan] for plan in plans], inverse, x)
    scale = per_item([[s[2] for s in plan] for plan in plans], inverse, x)
    weights = HistoryWeights([[s[1] for s in plan] for plan in plans], inverse, n, x)
    draws = [noisy and any(plan[i][2] > 0 for plan in plans) for i in range(n)]
    host = sigmas.cpu()  # the noise sampler's keys
    history = []
    for i in trange(n, disable=disable):
        denoised = model(x, sigmas[i], **extra_args)
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
        history = (history + [denoised])[-weights.depth:]
        x = weights(i, history, a[i] * x)
        if draws[i]:
            x = x + _need(noise_sampler)(host[i], host[i + 1]) * scale[i]
    return x


# --- SEEDS and the exponential Heun method -----------------------------------------------------------------------

def _stage(model, flow, sigma_s, sigma_t, lam_s, lam_t, r):
    """A stage at lambda_s + r (lambda_t - lambda_s) (torch.lerp, as ComfyUI): its sigma (rounded in paper mode) and
    that sigma's lambda and alpha."""
    lam = torch.lerp(lam_s, lam_t, r)
    raw = sigma_of_half_log_snr(lam, flow)
    rounded = torch.stack([round_sigmas(model, row) for row in raw])
    # round_sigma also casts to the grid's dtype: where it did not move the stage onto the grid (a training grid's
    # neighbours lie far more than 1e-6 apart), or moved it out of the step (past a flow's offset first sigma, to 1),
    # the stage keeps its own sigma.
    moved = ((rounded - raw).abs() > 1e-6 * raw) & (rounded <= sigma_s) & (rounded >= sigma_t)
    sigma = torch.where(moved, rounded, raw)
    lam = torch.where(moved, half_log_snr(sigma, flow), lam)
    return sigma, lam, sigma * lam.exp()


def _seeds_weights(k, fractions, solver_type, d_eta):
    """Stage k's weights on the denoised of stages 0..k-1 (to be times -alpha_k), ComfyUI's: stage 0 expm1(-r h_eta);
    phi_1 (seeds_2's end) expm1(-h_eta) on lerp(D, D_2, 1 / (2 r)); phi_2 b = (r_k / r_{k-1}) h phi_2(-r_k h_eta) on
    the newest stage and expm1(-r_k h_eta) - b on D (seeds_2's end: h phi_2 / r; seeds_3: a3_2 = (r_2 / r_1) h
    phi_2(-r_2 h_eta), b3 = h phi_2 / r_2). A stage rounded in paper mode keeps its fractions' weights."""
    e_1 = (-d_eta).expm1()
    if k == 0:
        return [e_1]
    if solver_type == "phi_1":
        fac = 1 / (2 * fractions[0])
        return [e_1 * (1 - fac), e_1 * fac]
    b = fractions[k] / fractions[k - 1] * h_phi_2(-d_eta)
    return [e_1 - b] + [torch.zeros_like(b)] * (k - 1) + [b]


def _seeds(model, x, sigmas, extra_args, callback, disable, eta, s_noise, noise_sampler, rs, solver_type):
    """SEEDS (Gonzalez et al. 2023, arXiv:2305.14267; ComfyUI's sample_seeds_2 / sample_seeds_3) with stages at
    fractions `rs` of each step in lambda: x_k = (sigma_k / sigma) e^(-r_k h eta) x - alpha_k (weights on the earlier
    stages' denoised), and a noise that each stage carries forward (e^((r_j - r_k) h eta)) plus fresh noise over the
    new interval; the step into sigma = 0 returns the denoised image."""
    flow = flow_sampling(model)
    extra_args, sigmas = _setup(model, x, sigmas, extra_args)
    sigmas = offset_first_sigma(sigmas, flow)
    sigma, sigma_next = sigmas[:-1], sigmas[1:]
    last = sigma_next == 0
    safe_next = torch.where(last, sigma, sigma_next)  # a zero-length step: h = 0 leaves x as it is
    lam_s, lam_t = half_log_snr(sigma, flow), half_log_snr(safe_next, flow)
    stages = [_stage(model, flow, sigma, safe_next, lam_s, lam_t, r) for r in rs]
    dims = lambda v: append_dims(v, x.ndim + 1)  # noqa: E731
    noisy = eta > 0 and s_noise > 0
    # Per stage k (the last: the step's end): x's factor, the weights on the denoised of the earlier stages, and the
    # noise: what it carries from the stage before (e^((lambda_prev - lambda_k) eta) <= 1), its fresh part and scale.
    ends = stages + [(safe_next, lam_t, safe_next * lam_t.exp())]
    fractions = list(rs) + [1.0]
    plan = []
    for k, (sigma_k, lam_k, alpha_k) in enumerate(ends):
        d_eta = (lam_k - lam_s) * (eta + 1)  # r_k h (eta + 1), to the rounded stage
        weights = _seeds_weights(k, fractions, solver_type, d_eta)
        seg = ((lam_s if k == 0 else ends[k - 1][1]) - lam_k) * eta
        plan.append(dict(c_x=dims(sigma_k / sigma * ((lam_s - lam_k) * eta).exp()),
                         weights=[dims(-alpha_k * w) for w in weights], carry=dims(seg.exp()),
                         fresh=dims((2 * seg).expm1().neg().sqrt()), scale=dims(sigma_k * s_noise), sigma=sigma_k,
                         host=sigma_k.cpu()))
    # A stage at r = 1 is the step's end (exp_heun_2_x0): no interval is left to draw fresh noise over.
    fresh_end = [noisy and fractions[k] > (fractions[k - 1] if k else 0.0) for k in range(len(fractions))]
    all_last, any_last = last.all(1).tolist(), last.any(1).tolist()
    host_sigma = sigma.cpu()  # the noise sampler's keys, read once
    for i in trange(len(sigmas) - 1, disable=disable):
        denoised = model(x, sigma[i], **extra_args)
        _report(callback, x, i, sigma[i], sigma[i], denoised)
        if all_last[i]:
            x = denoised
            continue
        outputs, sde, host_from = [denoised], None, host_sigma[i]
        for k, stage in enumerate(plan):
            x_k = stage["c_x"][i] * x
            for w, d_j in zip(stage["weights"], outputs):
                x_k = x_k + w[i] * d_j
            if noisy:
                sde = None if sde is None else sde * stage["carry"][i]
                if fresh_end[k]:
                    fresh = stage["fresh"][i] * _need(noise_sampler)(host_from, stage["host"][i])
                    sde = fresh if sde is None else sde + fresh
                x_k = x_k + sde * stage["scale"][i]
                host_from = stage["host"][i]
            if k < len(rs):
                outputs.append(model(x_k, stage["sigma"][i], **extra_args))
        x = _where(last[i], denoised, x_k) if any_last[i] else x_k
    return x


def _check_seeds(solver_type, *rs):
    if solver_type not in ("phi_1", "phi_2"):
        raise ValueError(f"solver_type must be 'phi_1' or 'phi_2' (got {solver_type!r})")
    if not all(0 < r <= 1 for r in rs) or list(rs) != sorted(set(rs)):
        raise ValueError(f"the stages' fractions must rise within (0, 1] (got {', '.join(map(str, rs))})")


@sampler("seeds_2", group="adds noise", note="SEEDS-2: exponential midpoint + noise, 2 calls a step (eta)",
         calls_per_step=2, final_calls=1, options=("eta", "s_noise", "r", "solver_type"), adds_noise=True, flow="rf")
@torch.no_grad()
def sample_seeds_2(model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1.0, s_noise=1.0,
                   noise_sampler=None, r=0.5, solver_type="phi_1"):
    """SEEDS-2 (Gonzalez et al. 2023, VP data prediction; ComfyUI's seeds_2): a noisy stage at r of the step in
    lambda, then the step with lerp(D, D_2, 1 / (2 r)) (phi_1) or the phi_2 weights, the stage's noise carried on."""
    _check_seeds(solver_type, r)
    return _seeds(model, x, sigmas, extra_args, callback, disable, eta, s_noise, noise_sampler, (r,), solver_type)


@sampler("seeds_3", group="adds noise", note="SEEDS-3: 3 stages in log-SNR + noise, 3 calls a step (eta)",
         calls_per_step=3, final_calls=1, options=("eta", "s_noise", "r_1", "r_2"), adds_noise=True, flow="rf")
@torch.no_grad()
def sample_seeds_3(model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1.0, s_noise=1.0,
                   noise_sampler=None, r_1=1 / 3, r_2=2 / 3):
    """SEEDS-3 (Gonzalez et al. 2023, VP data prediction; ComfyUI's seeds_3): noisy stages at r_1 and r_2 of the
    step in lambda with phi_2 weights, the noise carried from stage to stage."""
    _check_seeds("phi_2", r_1, r_2)
    return _seeds(model, x, sigmas, extra_args, callback, disable, eta, s_noise, noise_sampler, (r_1, r_2), "phi_2")


@sampler("exp_heun_2_x0", group="single-step", note="exponential Heun in x0 and log-SNR, 2 calls a step (ComfyUI)",
         calls_per_step=2, final_calls=1, options=("solver_type",), flow="rf", after="dpm_2")
@torch.no_grad()
def sample_exp_heun_2_x0(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None,
                         solver_type="phi_2"):
    """The exponential Heun method in data prediction and half-log-SNR (ComfyUI's exp_heun_2_x0: seeds_2 with r = 1,
    eta 0, phi_2 weights): deterministic, so noise_sampler is unused."""
    _check_seeds(solver_type, 1.0)
    return _seeds(model, x, sigmas, extra_args, callback, disable, 0.0, 0.0, None, (1.0,), solver_type)


@sampler("exp_heun_2_x0_sde", group="adds noise", note="exponential Heun in x0 + noise, 2 calls a step (eta)",
         calls_per_step=2, final_calls=1, options=("eta", "s_noise", "solver_type"), adds_noise=True, flow="rf",
         after="seeds_2")
@torch.no_grad()
def sample_exp_heun_2_x0_sde(model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1.0, s_noise=1.0,
                             noise_sampler=None, solver_type="phi_2"):
    """Its SDE form (ComfyUI's exp_heun_2_x0_sde: seeds_2 with r = 1, phi_2 weights): the stage's noise is the
    step's."""
    _check_seeds(solver_type, 1.0)
    return _seeds(model, x, sigmas, extra_args, callback, disable, eta, s_noise, noise_sampler, (1.0,), solver_type)


# --- SA-Solver ---------------------------------------------------------------------------------------------------

SA_PREDICTOR_ORDER, SA_CORRECTOR_ORDER = 3, 4  # ComfyUI's KSampler defaults
SA_NOISE_WINDOW = (0.2, 0.8)  # tau = eta between the sigmas 20% and 80% of the way (percent_to_sigma), else 0


def sa_coefficients(sigma_next, lambdas, lambda_s, lambda_t, tau):
    """SA-Solver's b_i (Xue et al. 2023, eqs. 15 and 18; ComfyUI's compute_stochastic_adams_b_coeffs, not simple
    order 2): alpha_t times the integrals over [lambda_s, lambda_t] of e^((1 + tau^2)(lambda - lambda_t)) (1 +
    tau^2) times each Lagrange polynomial through `lambdas`, by parts; float64 numpy."""
    order = len(lambdas)
    tau_mul = 1 + tau ** 2
    p = np.arange(order)
    products = lambda_t ** p - lambda_s ** p * math.exp(-tau_mul * (lambda_t - lambda_s))
    depth = p[:, None] - p[None, :]
    factorial = np.array([math.factorial(k) for k in range(order)], dtype=np.float64)
    recursive = np.tril(factorial[:, None] / factorial[None, :] * tau_mul ** -depth.astype(np.float64)
                        * np.where(depth % 2 == 0, 1.0, -1.0))
    integrals = np.linalg.solve(np.vander(lambdas, order, increasing=True).T, recursive @ products)
    return sigma_next * math.exp(lambda_t) * integrals


def _sa_column(col, lam, tau_of, s_noise, pece):
    """SA-Solver's predictor-corrector on one column (ComfyUI's sample_sa_solver, predictor order 3, corrector order
    4, lower orders toward a final 0), over its moving steps: per step the corrector x_c = c_x x + c_pred x_pred +
    sum b D (+ the predictor's last noise when `with_noise`), whether PECE evaluates x_c again, and the predictor
    x_pred' = p_x x_c + p_pred x_pred + sum b D + noise z; a zero-length step keeps x, x_pred and the noise."""
    moving = moving_history(col)
    count = sum(m is not None for m in moving)
    lower = col[-1] == 0
    steps = []
    tau = h = 0.0
    for i, step in enumerate(moving):
        if step is None:
            steps.append(dict(c_x=1.0, c_pred=0.0, corr={}, with_noise=0.0, evaluate=False, p_x=0.0, p_pred=1.0,
                              pred={}, noise=0.0, keep_noise=1.0))
            continue
        k, earlier = step
        points = ([i] + earlier)[:max(SA_PREDICTOR_ORDER, SA_CORRECTOR_ORDER)][::-1]  # pred_list, oldest first
        p_used = min(SA_PREDICTOR_ORDER, len(points))
        c_used = 0 if k == 0 or (col[i + 1] == 0 and not pece) else min(SA_CORRECTOR_ORDER, len(points))
        if lower:
            p_used, c_used = min(p_used, count - 1 - k), min(c_used, count - k)
        out = dict(c_x=0.0, c_pred=1.0, corr={}, with_noise=0.0, evaluate=False, keep_noise=0.0)
        if c_used:
            prev = earlier[0]
            b = sa_coefficients(col[i], lam[points[-c_used:]], lam[prev], lam[i], tau)
            out.update(c_x=col[i] / col[prev] * math.exp(-tau ** 2 * h), c_pred=0.0,
                       corr=dict(zip(points[-c_used:], b)), with_noise=float(tau > 0 and s_noise > 0), evaluate=pece)
        if col[i + 1] == 0:
            out.update(p_x=0.0, p_pred=0.0, pred={i: 1.0}, noise=0.0)
            tau = h = 0.0
        else:
            tau, h = tau_of(col[i + 1]), lam[i + 1] - lam[i]
            b = sa_coefficients(col[i + 1], lam[points[-p_used:]], lam[i], lam[i + 1], tau)
            noise = col[i + 1] * math.sqrt(-math.expm1(-2 * tau ** 2 * h)) * s_noise if tau > 0 and s_noise > 0 else 0
            out.update(p_x=col[i + 1] / col[i] * math.exp(-tau ** 2 * h), p_pred=0.0,
                       pred=dict(zip(points[-p_used:], b)), noise=noise)
        steps.append(out)
    return steps


def _sa_solver(model, x, sigmas, extra_args, callback, disable, eta, s_noise, noise_sampler, pece):
    """SA-Solver (Xue et al. 2023, arXiv:2309.05019; ComfyUI's sample_sa_solver with the KSampler's defaults): a
    stochastic Adams predictor of order 3 and corrector of order 4 on the denoised history in lambda; tau = eta
    inside ComfyUI's noise window, 0 outside it; with `pece` the corrected state is evaluated again and that
    evaluation replaces the step's in the history (a second call on every step but the first)."""
    sampling = getattr(model, "model_sampling", None)
    if sampling is None and eta > 0:
        raise ValueError("sa_solver's noise window is ComfyUI's: the sigmas 20% and 80% of the way through the model's "
                         "timesteps (model_sampling.percent_to_sigma); give a denoiser that has a model_sampling "
                         "(sampler_lib.Denoiser, the engine's)")
    flow = flow_sampling(model)
    start, end = (percent_to_sigma(sampling, p) for p in SA_NOISE_WINDOW) if eta > 0 else (0.0, 0.0)
    tau_of = lambda sigma: eta if eta > 0 and start >= sigma >= end else 0.0  # noqa: E731
    extra_args, sigmas = _setup(model, x, sigmas, extra_args)
    sigmas = offset_first_sigma(sigmas, flow)
    columns, inverse = schedule_columns(sigmas)
    plans = []
    for col in columns:
        with np.errstate(divide="ignore"):  # lambda of a final 0 is inf; never used
            lam = -np.log(col) if flow is None else np.log((1 - col) / col)
        plans.append(_sa_column(col, lam, tau_of, s_noise, pece))
    n = len(sigmas) - 1
    value = lambda key: per_item([[s[key] for s in plan] for plan in plans], inverse, x)  # noqa: E731
    c_x, c_pred, with_noise, p_x, p_pred, noise, keep_noise = (
        value(key) for key in ("c_x", "c_pred", "with_noise", "p_x", "p_pred", "noise", "keep_noise"))
    corr = HistoryWeights([[s["corr"] for s in plan] for plan in plans], inverse, n, x)
    pred = HistoryWeights([[s["pred"] for s in plan] for plan in plans], inverse, n, x)
    depth = max(corr.depth, pred.depth)
    evaluate = [[plan[i]["evaluate"] for plan in plans] for i in range(n)]
    any_evaluate, all_evaluate = [any(e) for e in evaluate], [all(e) for e in evaluate]
    evaluated = per_item([[s["evaluate"] for s in plan] for plan in plans], inverse, x) > 0
    draws = [any(plan[i]["noise"] > 0 for plan in plans) for i in range(n)]
    carries = [any(plan[i]["with_noise"] > 0 for plan in plans) for i in range(n)]
    host = sigmas.cpu()  # the noise sampler's keys
    x_pred, history, last_noise = x, [], None
    for i in trange(n, disable=disable):
        denoised = model(x_pred, sigmas[i], **extra_args)
        _report(callback, x_pred, i, sigmas[i], sigmas[i], denoised)
        history = (history + [denoised])[-depth:]
        x = corr(i, history, c_x[i] * x + c_pred[i] * x_pred)
        if carries[i]:
            x = x + with_noise[i] * last_noise
        if any_evaluate[i]:
            again = model(x, sigmas[i], **extra_args)
            history[-1] = again if all_evaluate[i] else _where(evaluated[i].flatten(), again, denoised)
        x_pred = pred(i, history, p_x[i] * x + p_pred[i] * x_pred)
        if draws[i]:
            z = noise[i] * _need(noise_sampler)(host[i], host[i + 1])
            x_pred = x_pred + z
            last_noise = z if last_noise is None else keep_noise[i] * last_noise + z
    return x_pred


@sampler("sa_solver", group="adds noise",
         note="SA-Solver: stochastic Adams 3/4; noise (eta) in ComfyUI's 20-80% window", calls_per_step=1,
         options=("eta", "s_noise"), adds_noise=True, flow="rf")
@torch.no_grad()
def sample_sa_solver(model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1.0, s_noise=1.0,
                     noise_sampler=None):
    """SA-Solver (ComfyUI's sa_solver): a stochastic Adams predictor-corrector, one call a step."""
    return _sa_solver(model, x, sigmas, extra_args, callback, disable, eta, s_noise, noise_sampler, pece=False)


@sampler("sa_solver_pece", group="adds noise", note="SA-Solver PECE: evaluates the corrected state too, 2 calls a step",
         calls_per_step=2, tail_calls=(1,), options=("eta", "s_noise"), adds_noise=True, flow="rf",
         after="sa_solver")
@torch.no_grad()
def sample_sa_solver_pece(model, x, sigmas, extra_args=None, callback=None, disable=None, eta=1.0, s_noise=1.0,
                          noise_sampler=None):
    """SA-Solver in PECE mode (ComfyUI's sa_solver_pece): predict, evaluate, correct, evaluate; 2N - 1 calls."""
    return _sa_solver(model, x, sigmas, extra_args, callback, disable, eta, s_noise, noise_sampler, pece=True)
