"""Multistep samplers that reuse past network outputs (ComfyUI's and diffusers' names): ipndm, ipndm_v, deis,
res_multistep, uni_pc (B(h) = h) and uni_pc_bh2 (B(h) = e^h - 1).

Each step is linear in the current x and the history, so its weights depend only on the schedule: they are
computed once per distinct schedule column (float64, numpy) and the loop only forms weighted sums. A zero-length
step (two sigmas that paper-mode rounding made equal) changes nothing and is not used as history, so no weight
divides by a zero step.
"""
import math

import numpy as np
import torch
from tqdm.auto import trange

from .registry import sampler
from .samplers import _report, _setup
from .wrappers import append_dims

# Adams–Bashforth weights for equal steps (iPNDM, Zhang & Chen 2023), newest output first.
AB_WEIGHTS = ([1.0], [3 / 2, -1 / 2], [23 / 12, -16 / 12, 5 / 12], [55 / 24, -59 / 24, 37 / 24, -9 / 24])


def _histories(col, max_order):
    """Per step of one schedule column: the indices of the last `max_order` moving steps, newest (this one) first;
    empty for a zero-length step."""
    out, moving = [], []
    for i in range(len(col) - 1):
        if col[i + 1] == col[i]:
            out.append([])
            continue
        moving.insert(0, i)
        out.append(moving[:max_order])
    return out


def _weights(sigmas, step_fn, max_order):
    """(a, W): x_next = a[i] x + sum_m W[i, m] h[i - m] for every step i, where h is the sampler's history (d or
    denoised). `step_fn(col, i, hist)` gives (a, {step index: weight}) for one step of one column; `hist` is empty
    for a zero-length step."""
    columns, inverse = torch.unique(sigmas.T.double().cpu(), dim=0, return_inverse=True)
    n = sigmas.shape[0] - 1
    per_column = []
    for col in columns.numpy():
        steps = []
        for i, hist in enumerate(_histories(col, max_order)):
            steps.append(step_fn(col, i, hist))
        per_column.append(steps)
    depth = 1 + max((i - j for steps in per_column for i, (_, w) in enumerate(steps) for j in w), default=0)
    a = np.ones((len(columns), n))
    w = np.zeros((len(columns), n, depth))
    for c, steps in enumerate(per_column):
        for i, (a_i, w_i) in enumerate(steps):
            a[c, i] = a_i
            for j, value in w_i.items():
                w[c, i, i - j] = value
    idx = inverse.numpy()
    return (torch.as_tensor(a[idx], dtype=sigmas.dtype).T,                  # (N, B)
            torch.as_tensor(w[idx], dtype=sigmas.dtype).permute(1, 2, 0))   # (N, depth, B)


class _Combiner:
    """a x + sum_m W[m] h[-1 - m] for step i; plain Python weights when every item shares one schedule."""

    def __init__(self, a, w, sigmas, x):
        self.shared = bool((sigmas == sigmas[:, :1]).all())
        if self.shared:
            self.a, self.w = a[:, 0].tolist(), w[:, :, 0].tolist()
        else:
            self.a, self.w = append_dims(a.to(x.device), x.ndim + 1), append_dims(w.to(x.device), x.ndim + 2)
        self.depth = w.shape[1]

    def __call__(self, i, x, history):
        a, w = self.a[i], self.w[i]
        out = x if self.shared and a == 1.0 else a * x
        for m in range(min(self.depth, len(history))):
            if self.shared and w[m] == 0.0:
                continue
            out = out + w[m] * history[-1 - m]
        return out


def _moving(step_fn):
    """A step function that leaves x unchanged on a zero-length step."""
    return lambda col, i, hist: step_fn(col, i, hist) if hist else (1.0, {})


def _run_multistep(model, x, sigmas, extra_args, callback, disable, step_fn, max_order, history_of):
    """x_next = a x + sum of weights times past history_of(x, sigma, denoised): d for Adams–Bashforth in sigma
    (EDM's ODE), denoised for exponential integrators in log sigma."""
    extra_args, sigmas = _setup(model, x, sigmas, extra_args)
    combine = _Combiner(*_weights(sigmas, _moving(step_fn), max_order), sigmas, x)
    history = []
    for i in trange(len(sigmas) - 1, disable=disable):
        denoised = model(x, sigmas[i], **extra_args)
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
        history = (history + [history_of(x, sigmas[i], denoised)])[-combine.depth:]
        x = combine(i, x, history)
    return x


def _run_d_multistep(model, x, sigmas, extra_args, callback, disable, step_fn, max_order):
    return _run_multistep(model, x, sigmas, extra_args, callback, disable, step_fn, max_order,
                          lambda x_, sigma, denoised: (x_ - denoised) / append_dims(sigma, x_.ndim))


def _into_zero(col, i):
    # The step into sigma = 0 returns the denoised image: x - sigma d.
    return 1.0, {i: -col[i]}


def _ipndm_step(col, i, hist):
    if col[i + 1] == 0:
        return _into_zero(col, i)
    dt = col[i + 1] - col[i]
    return 1.0, {j: dt * c for j, c in zip(hist, AB_WEIGHTS[len(hist) - 1])}


def _ipndm_v_step(col, i, hist):
    """Variable-step Adams–Bashforth weights as in zju-pi/diff-sampler's iPNDM-v (ComfyUI's ipndm_v)."""
    if col[i + 1] == 0:
        return _into_zero(col, i)
    pts = [col[j] for j in hist]
    h = [col[i + 1] - col[i]] + [pts[k] - pts[k + 1] for k in range(len(pts) - 1)]
    order, dt = len(hist), h[0]
    if order == 1:
        c = [1.0]
    elif order == 2:
        c = [(2 + h[0] / h[1]) / 2, -(h[0] / h[1]) / 2]
    else:
        h0, h1, h2 = h[0], h[1], h[2]
        t1 = (1 - h0 / (3 * (h0 + h1)) * (h0 * (h0 + h1)) / (h1 * (h1 + h2))) / 2
        if order == 3:
            c = [(2 + h0 / h1) / 2 + t1, -(h0 / h1) / 2 - (1 + h1 / h2) * t1, t1 * h1 / h2]
        else:
            h3 = h[3]
            t2 = (((1 - h0 / (3 * (h0 + h1))) / 2 + (1 - h0 / (2 * (h0 + h1))) * h0 / (6 * (h0 + h1 + h2)))
                  * (h0 * (h0 + h1) * (h0 + h1 + h2)) / (h1 * (h1 + h2) * (h1 + h2 + h3)))
            q = h1 * (h1 + h2) / (h2 * (h2 + h3))
            c = [(2 + h0 / h1) / 2 + t1 + t2,
                 -(h0 / h1) / 2 - (1 + h1 / h2) * t1 - (1 + h1 / h2 + q) * t2,
                 t1 * h1 / h2 + (h1 / h2 + q * (1 + h2 / h3)) * t2,
                 -t2 * q * h1 / h2]
    return 1.0, {j: dt * w for j, w in zip(hist, c)}


# DEIS's time change (ComfyUI's deis.py, from zju-pi/diff-sampler): EDM sigmas mapped to the time of a VP SDE
# whose range is EDM's (sigma 0.002..80 at t = 1e-3..1), in which DEIS fits its polynomials.
_EPS_S, _EDM_MIN, _EDM_MAX = 1e-3, 0.002, 80.0
_VP_BETA_D = 2 * (math.log(_EDM_MIN ** 2 + 1) / _EPS_S - math.log(_EDM_MAX ** 2 + 1)) / (_EPS_S - 1)
_VP_BETA_MIN = math.log(_EDM_MAX ** 2 + 1) - 0.5 * _VP_BETA_D


def deis_time(sigma):
    """The VP time t with sigma(t) = sqrt(exp(beta_d t^2 / 2 + beta_min t) - 1) (DEIS's tab mode)."""
    return (np.sqrt(_VP_BETA_MIN ** 2 + 2 * _VP_BETA_D * np.log(sigma ** 2 + 1)) - _VP_BETA_MIN) / _VP_BETA_D


def _deis_sigma_rate(t):
    """d sigma / dt of the VP time change (the integrand of DEIS's coefficients)."""
    e = np.exp(0.5 * _VP_BETA_D * t ** 2 + _VP_BETA_MIN * t)
    return (_VP_BETA_D * t + _VP_BETA_MIN) * e / (2 * np.sqrt(e - 1))


_GAUSS = np.polynomial.legendre.leggauss(32)


def _deis_step(col, i, hist):
    """DEIS tab weights (Zhang & Chen 2023): the integral over the step, in sigma, of each Lagrange polynomial
    through the history's DEIS times; by 32-point Gauss–Legendre (ComfyUI sums 10,000 points)."""
    if col[i + 1] == 0:
        return _into_zero(col, i)
    if len(hist) == 1:
        return 1.0, {i: col[i + 1] - col[i]}
    t = deis_time(np.array([col[j] for j in hist]))
    t_cur, t_next = t[0], deis_time(col[i + 1])
    nodes, weights = _GAUSS
    half, mid = (t_next - t_cur) / 2, (t_next + t_cur) / 2
    tau = mid + half * nodes
    rate = _deis_sigma_rate(tau) * weights * half
    out = {}
    for j, step in enumerate(hist):
        basis = np.prod([(tau - t[k]) / (t[j] - t[k]) for k in range(len(t)) if k != j], axis=0)
        out[step] = float((basis * rate).sum())
    return 1.0, out


@sampler("ipndm", group="multistep", note="iPNDM: Adams-Bashforth to order 4, equal-step weights", calls_per_step=1,
         options=("max_order",), after="lms")
@torch.no_grad()
def sample_ipndm(model, x, sigmas, extra_args=None, callback=None, disable=None, max_order=4, noise_sampler=None):
    """iPNDM (Zhang & Chen 2023; zju-pi/diff-sampler, ComfyUI's ipndm): Adams–Bashforth in sigma with the
    equal-step weights of order up to 4, whatever the schedule's spacing; the step into 0 returns denoised."""
    return _run_d_multistep(model, x, sigmas, extra_args, callback, disable, _ipndm_step, max_order)


@sampler("ipndm_v", group="multistep", note="iPNDM-v: variable-step Adams-Bashforth to order 4", calls_per_step=1,
         options=("max_order",))
@torch.no_grad()
def sample_ipndm_v(model, x, sigmas, extra_args=None, callback=None, disable=None, max_order=4, noise_sampler=None):
    """iPNDM-v (ComfyUI's ipndm_v): iPNDM with variable-step Adams–Bashforth weights of order up to 4."""
    return _run_d_multistep(model, x, sigmas, extra_args, callback, disable, _ipndm_v_step, max_order)


@sampler("deis", group="multistep", note="DEIS tAB: multistep in DEIS's VP time, order 3", calls_per_step=1,
         options=("max_order",))
@torch.no_grad()
def sample_deis(model, x, sigmas, extra_args=None, callback=None, disable=None, max_order=3, noise_sampler=None):
    """DEIS tAB (Zhang & Chen 2023, ComfyUI's deis): Adams–Bashforth on dx/dsigma with polynomials fitted in DEIS's
    VP time; order up to 3, Euler into sigma = 0."""
    return _run_d_multistep(model, x, sigmas, extra_args, callback, disable, _deis_step, max_order)


def _res_step(col, i, hist):
    """RES second-order multistep (Zhang et al. 2023, arXiv:2308.02157; ComfyUI's res_multistep, eta 0) on the
    denoised history: x' = e^-h x + h (b1 D_i + b2 D_prev), with the previous point at c2 = -h_prev / h."""
    if col[i + 1] == 0:
        return 0.0, {i: 1.0}
    h = math.log(col[i] / col[i + 1])
    e = math.exp(-h)
    if len(hist) == 1:
        return e, {i: 1 - e}
    c2 = -math.log(col[hist[1]] / col[i]) / h
    phi1 = -math.expm1(-h) / h
    phi2 = (phi1 - 1) / -h
    return e, {i: h * (phi1 - phi2 / c2), hist[1]: h * phi2 / c2}


def _run_denoised_multistep(model, x, sigmas, extra_args, callback, disable, step_fn, max_order):
    return _run_multistep(model, x, sigmas, extra_args, callback, disable, step_fn, max_order,
                          lambda x_, sigma, denoised: denoised)


@sampler("res_multistep", group="multistep", note="RES: second-order exponential multistep", calls_per_step=1)
@torch.no_grad()
def sample_res_multistep(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None):
    """RES multistep, second order, deterministic (ComfyUI's res_multistep); first order on the first step and
    where the previous step had zero length; into sigma = 0 it returns denoised."""
    return _run_denoised_multistep(model, x, sigmas, extra_args, callback, disable, _res_step, 2)


def _unipc_coefficients(lam, order, variant, full):
    """UniPC's rhos for one step (Zhao et al. 2023, data prediction, as diffusers' UniPCMultistepScheduler): the
    predictor solves the first order-1 rows (rhos = [0.5] at order 2), the corrector (`full`) all of them."""
    h = lam[-1] - lam[0]
    hh = -h
    rks = [(lam_j - lam[0]) / h for lam_j in lam[1:-1]] + [1.0]
    h_phi_1 = math.expm1(hh)
    h_phi_k = h_phi_1 / hh - 1
    b_h = hh if variant == "bh1" else math.expm1(hh)
    factorial = 1
    rows, b = [], []
    for k in range(1, order + 1):
        rows.append([r ** (k - 1) for r in rks])
        b.append(h_phi_k * factorial / b_h)
        factorial *= k + 1
        h_phi_k = h_phi_k / hh - 1 / factorial
    if full:
        rhos = [0.5] if order == 1 else np.linalg.solve(np.array(rows), np.array(b)).tolist()
    else:
        rhos = [] if order == 1 else [0.5] if order == 2 else np.linalg.solve(
            np.array(rows)[:-1, :-1], np.array(b)[:-1]).tolist()
    return h_phi_1, b_h, rks, rhos


def _unipc_plan(sigmas, order, variant):
    """Per step: predictor (a, W) over the denoised history, and the corrector (a, W) applied first, to the sample
    the last moving step started from, with that step's order and this step's fresh denoised output."""
    n = sigmas.shape[0] - 1
    histories = {}

    def predictor(col, i, hist):
        if col[i + 1] == 0:
            return 0.0, {i: 1.0}
        p = min(order, len(hist), n - i)   # warm-up, and lower orders for the last steps (lower_order_final)
        lam = [-math.log(col[j]) for j in hist[:p]] + [-math.log(col[i + 1])]
        h_phi_1, b_h, rks, rhos = _unipc_coefficients(lam, p, variant, full=False)
        w = {i: -h_phi_1}
        for k, rho in enumerate(rhos):
            w[i] += b_h * rho / rks[k]
            w[hist[k + 1]] = -b_h * rho / rks[k]
        return col[i + 1] / col[i], w

    def corrector(col, i, _hist):
        # Corrects the step that ended here, if it moved: it started at k = i - 1.
        if i == 0 or col[i] == col[i - 1]:
            return 1.0, {}
        k = i - 1
        key = col.tobytes()
        if key not in histories:
            histories[key] = _histories(col, order)
        prev = histories[key][k]
        c = min(order, len(prev), n - k)
        lam = [-math.log(col[j]) for j in prev[:c]] + [-math.log(col[i])]
        h_phi_1, b_h, rks, rhos = _unipc_coefficients(lam, c, variant, full=True)
        w = {k: -h_phi_1, i: -b_h * rhos[-1]}
        w[k] += b_h * rhos[-1]
        for m, rho in enumerate(rhos[:-1]):
            w[k] += b_h * rho / rks[m]
            w[prev[m + 1]] = -b_h * rho / rks[m]
        return col[i] / col[k], w

    return _weights(sigmas, _moving(predictor), order), _weights(sigmas, corrector, order)


def _sample_unipc(model, x, sigmas, extra_args, callback, disable, order, variant, end_sigma=None):
    extra_args, sigmas = _setup(model, x, sigmas, extra_args)
    if end_sigma is not None:
        if not 0 < end_sigma < 1:
            raise ValueError(f"end_sigma must be between 0 and 1 (got {end_sigma})")
        # ComfyUI's sample_unipc: a final 0 becomes end_sigma, and x there is returned (not denoised).
        sigmas = torch.cat([sigmas[:-1], torch.where(sigmas[-1:] == 0, end_sigma, sigmas[-1:])])
    (p_a, p_w), (c_a, c_w) = _unipc_plan(sigmas, order, variant)
    predict, correct = _Combiner(p_a, p_w, sigmas, x), _Combiner(c_a, c_w, sigmas, x)
    has_corrector = (c_w != 0).any(1).any(1).tolist()
    history, x_start = [], None
    for i in trange(len(sigmas) - 1, disable=disable):
        denoised = model(x, sigmas[i], **extra_args)
        _report(callback, x, i, sigmas[i], sigmas[i], denoised)
        history = (history + [denoised])[-max(predict.depth, correct.depth):]
        if has_corrector[i]:
            # The corrector reuses this step's network output: it refines where the last step landed at no cost.
            x = correct(i, x_start, history)
        x_start = x
        x = predict(i, x, history)
    return x


@sampler("uni_pc", group="multistep", note="UniPC, B(h)=h: predictor-corrector, order 3, 1 call a step",
         calls_per_step=1, options=("order", "end_sigma"))
@torch.no_grad()
def sample_uni_pc(model, x, sigmas, extra_args=None, callback=None, disable=None, order=3, noise_sampler=None,
                  end_sigma=None):
    """UniPC with B(h) = h (Zhao et al. 2023; ComfyUI's uni_pc): predictor–corrector multistep of order up to 3
    on the denoised output, the corrector reusing each step's network call; order 1 into the last sigma.
    end_sigma: a final sigma 0 replaced by it (ComfyUI ends at 0.001)."""
    return _sample_unipc(model, x, sigmas, extra_args, callback, disable, order, "bh1", end_sigma)


@sampler("uni_pc_bh2", group="multistep", note="UniPC, B(h)=e^h-1 (diffusers' default)", calls_per_step=1,
         options=("order", "end_sigma"))
@torch.no_grad()
def sample_uni_pc_bh2(model, x, sigmas, extra_args=None, callback=None, disable=None, order=3, noise_sampler=None,
                      end_sigma=None):
    """UniPC with B(h) = e^h - 1 (ComfyUI's uni_pc_bh2, diffusers' default solver_type); end_sigma as uni_pc."""
    return _sample_unipc(model, x, sigmas, extra_args, callback, disable, order, "bh2", end_sigma)
