"""DPM-Solver-fast and DPM-Solver-12/23 adaptive (Lu et al. 2022, arXiv:2206.00927; k-diffusion's dpm_fast and
dpm_adaptive, deterministic, eta 0) with this library's contract.

Like ComfyUI and A1111, both take only the ends of the schedule they are given: sigma_max = its first sigma and
sigma_min = its last nonzero one, and return x at sigma_min (no final denoising step). dpm_fast spends exactly the
schedule's N steps as network calls, on steps even in log sigma; dpm_adaptive chooses its own steps, per item, and
its number of calls depends on the image. In paper mode every sigma handed to the network is rounded to a training
sigma and the step uses the rounded positions (DPM-Solver's formulas hold for any r1, r2); a stage that rounding
puts onto the step's start falls back to a first-order step.
"""
import math

import numpy as np
import torch
from tqdm.auto import tqdm

from .registry import sampler
from .samplers import _report, _setup, round_sigmas, to_d
from .wrappers import append_dims


def _ends(sigmas):
    """Per item: the first sigma and the last nonzero one (the schedule's range, as ComfyUI passes it)."""
    last = torch.where(sigmas[-1] > 0, sigmas[-1], sigmas[-2])
    return sigmas[0], last


WEIGHTS = ("c1", "a1", "a2", "b2", "l1", "k1", "k2")


def _rounded(model, values, like):
    """Float64 sigmas as the network will see them: in x's dtype, and rounded in paper mode through the model's
    round_sigma (row by row, so a per-item round_sigma sees one (B,) vector at a time)."""
    if getattr(model, "round_sigma", None) is None and like.dtype in _NUMPY_DTYPES:
        return np.asarray(values).astype(_NUMPY_DTYPES[like.dtype]).astype(np.float64)  # no tensor round trip
    sigma = torch.as_tensor(values, dtype=like.dtype, device=like.device)
    if getattr(model, "round_sigma", None) is not None:
        sigma = torch.stack([round_sigmas(model, row) for row in sigma]) if sigma.ndim == 2 else round_sigmas(
            model, sigma)
    return sigma.double().cpu().numpy()


_NUMPY_DTYPES = {torch.float32: np.float32, torch.float64: np.float64, torch.float16: np.float16}


def _plan(model, sg, sn, order, r1, like, r2=2 / 3):
    """Schedule-only quantities of DPM-Solver steps sg -> sn (float64 arrays of rounded sigmas, any shape) of
    `order`: the weights of
        x_1 = x - c1 eps,  u1 = x - a1 eps,  u2 = x - a2 eps - b2 (eps_1 - eps),
        low = x_1 - l1 (eps_1 - eps),  high = x_1 - k1 (eps_1 - eps) - k2 (eps_2 - eps),
    `high` the order-`order` result and `low` the one the adaptive solver compares it with (DPM-Solver-1 for order
    2, DPM-Solver-2 at r1 for order 3), shaped to multiply x; and the network sigmas s0, s1, s2 (rounded; the
    step's start where a stage is unused). A stage that rounding puts onto the start is dropped (lower order). In
    float64 numpy: a few small arrays per step cost less than as many tiny tensor ops."""
    t = -np.log(sg)
    h = -np.log(sn) - t
    moving = h > 0
    h_safe = np.where(moving, h, 1.0)
    zero = np.zeros_like(h)
    p = dict(c1=sn * np.expm1(h), s1=sg, s2=sg, a1=zero, a2=zero, b2=zero, l1=zero, k1=zero, k2=zero)
    if order > 1:
        s1 = _rounded(model, np.exp(-(t + r1 * h)), like)
        r1_ = (-np.log(s1) - t) / h_safe
        ok1 = moving & (r1_ > 0)
        r1_ = np.where(ok1, r1_, 1.0)
        c2 = np.where(ok1, sn / (2 * r1_) * np.expm1(h), 0.0)
        p.update(s1=np.where(ok1, s1, sg), a1=s1 * np.expm1(r1_ * h), k1=c2)
    if order > 2:
        s2 = _rounded(model, np.exp(-(t + r2 * h)), like)
        r2_ = (-np.log(s2) - t) / h_safe
        ok2 = ok1 & (r2_ > r1_)
        r2_ = np.where(ok2, r2_, 1.0)
        p.update(s2=np.where(ok2, s2, sg), a2=s2 * np.expm1(r2_ * h),
                 b2=s2 * (r2_ / r1_) * (np.expm1(r2_ * h) / (r2_ * h_safe) - 1),
                 l1=c2, k1=np.where(ok2, 0.0, c2), k2=np.where(ok2, sn / r2_ * (np.expm1(h) / h_safe - 1), 0.0))
    as_tensor = lambda a: torch.as_tensor(a, dtype=like.dtype, device=like.device)  # noqa: E731
    weights = as_tensor(np.stack([p[k] for k in WEIGHTS]))
    weights = weights.reshape(*weights.shape, *[1] * (like.ndim - 1))
    sigmas = as_tensor(np.stack([sg, p["s1"], p["s2"]]))
    return dict(zip(WEIGHTS, weights.unbind(0))), dict(zip(("s0", "s1", "s2"), sigmas.unbind(0)))


def _step(model, x, eps, w, s, order, extra_args):
    """(low, high) of one planned step from x (weights w, network sigmas s), whose eps at the start is given."""
    x_1 = x - w["c1"] * eps
    if order == 1:
        return x_1, x_1
    u1 = x - w["a1"] * eps
    e1 = to_d(u1, s["s1"], model(u1, s["s1"], **extra_args)) - eps
    if order == 2:
        return x_1, x_1 - w["k1"] * e1
    u2 = x - w["a2"] * eps - w["b2"] * e1
    e2 = to_d(u2, s["s2"], model(u2, s["s2"], **extra_args)) - eps
    return x_1 - w["l1"] * e1, x_1 - w["k1"] * e1 - w["k2"] * e2


@sampler("dpm_fast", group="own steps", note="DPM-Solver-fast: N calls even in log sigma; ends at sigma_min",
         calls_per_step=1)
@torch.no_grad()
def sample_dpm_fast(model, x, sigmas, extra_args=None, callback=None, disable=None, noise_sampler=None):
    """DPM-Solver-fast: N network calls as floor(N/3) + 1 steps of order 3 (the last ones of order 2, 1), even in
    log sigma from the schedule's first sigma to its last nonzero one; returns x there."""
    extra_args, sigmas = _setup(model, x, sigmas, extra_args)
    n = len(sigmas) - 1
    sigma_max, sigma_min = (v.double().cpu().numpy() for v in _ends(sigmas))
    m = n // 3 + 1
    orders = [3] * (m - 2) + [2, 1] if n % 3 == 0 else [3] * (m - 1) + [n % 3]
    # The whole plan depends only on the schedule's ends: computed for all steps at once. Order 3 puts its first
    # stage at 1/3 of the step, order 2 its midpoint at 1/2 (DPM-Solver-2).
    t_start, t_end = -np.log(sigma_max), -np.log(sigma_min)
    frac = np.arange(len(orders) + 1)[:, None] / len(orders)
    grid = _rounded(model, np.exp(-(t_start + (t_end - t_start) * frac)), x)
    plans = {o: _plan(model, grid[:-1], grid[1:], o, 1 / 3 if o == 3 else 0.5, x) for o in set(orders)}
    calls = 0
    for i, order in enumerate(tqdm(orders, disable=disable)):
        w, s = ({k: v[i] for k, v in part.items()} for part in plans[order])
        denoised = model(x, s["s0"], **extra_args)
        x = _step(model, x, to_d(x, s["s0"], denoised), w, s, order, extra_args)[1]
        # One callback per network call, so progress counts the schedule's N steps.
        for _ in range(order):
            _report(callback, x, calls, s["s0"], s["s0"], denoised)
            calls += 1
    return x


class _PID:
    """k-diffusion's PID step-size controller (Soderlind 2003), one per item (float64 arrays): h *= limiter(factor)."""

    def __init__(self, h, order, pcoeff=0.0, icoeff=1.0, dcoeff=0.0, accept_safety=0.81, eps=1e-8):
        self.h = h
        self.b1, self.b2, self.b3 = (pcoeff + icoeff + dcoeff) / order, -(pcoeff + 2 * dcoeff) / order, dcoeff / order
        self.accept_safety, self.eps, self.errs = accept_safety, eps, None

    def propose(self, error, active):
        inv = 1 / (error + self.eps)
        if self.errs is None:
            self.errs = [inv, inv, inv]
        self.errs[0] = inv
        factor = self.errs[0] ** self.b1 * self.errs[1] ** self.b2 * self.errs[2] ** self.b3
        factor = 1 + np.arctan(factor - 1)
        accept = (factor >= self.accept_safety) & active
        self.errs[2] = np.where(accept, self.errs[1], self.errs[2])
        self.errs[1] = np.where(accept, self.errs[0], self.errs[1])
        self.h = np.where(active, self.h * factor, self.h)
        return accept


@sampler("dpm_adaptive", group="own steps", note="DPM-Solver-23, adaptive: ignores steps; ends at sigma_min",
         calls_per_step=None, options=("order", "rtol", "atol", "h_init", "pcoeff", "icoeff", "dcoeff", "accept_safety",
                                       "max_calls"))
@torch.no_grad()
def sample_dpm_adaptive(model, x, sigmas, extra_args=None, callback=None, disable=None, order=3, rtol=0.05,
                        atol=0.0078, h_init=0.05, pcoeff=0.0, icoeff=1.0, dcoeff=0.0, accept_safety=0.81,
                        noise_sampler=None, max_calls=10_000):
    """DPM-Solver-12/23 with adaptive steps from the schedule's first sigma to its last nonzero one (the schedule's
    interior is not used): a step is kept when the order-(p-1) and order-p results agree within rtol/atol, each
    item with its own step size. Callbacks come as the run passes each 1/N of the way in log sigma."""
    if order not in (2, 3):
        raise ValueError(f"order must be 2 or 3 (got {order}); DPM-Solver-12 or -23")
    extra_args, sigmas = _setup(model, x, sigmas, extra_args)
    n = len(sigmas) - 1
    # The controller's state lives in float64 arrays, one entry per item; only x is a tensor.
    sigma_max, sigma_min = (v.double().cpu().numpy() for v in _ends(sigmas))
    t_start, t_end = -np.log(sigma_max), -np.log(sigma_min)
    s = t_start.copy()
    x_prev = x
    pid = _PID(np.full_like(s, h_init), order, pcoeff, icoeff, dcoeff, accept_safety)
    reported, pbar, calls = 0, tqdm(total=n, disable=disable), 0
    sigma = denoised = None
    atol = torch.tensor(atol, dtype=x.dtype, device=x.device)
    while True:
        active = s < t_end - 1e-5
        if not active.any():
            break
        if calls > max_calls:
            raise RuntimeError(f"dpm_adaptive made {max_calls} network calls without reaching sigma_min; "
                               "loosen rtol/atol")
        t = np.where(active, np.minimum(t_end, s + pid.h), s)
        w, sig = _plan(model, _rounded(model, np.exp(-s), x), _rounded(model, np.exp(-t), x), order,
                       1 / 3 if order == 3 else 0.5, x)
        sigma = sig["s0"]
        denoised = model(x, sigma, **extra_args)
        x_low, x_high = _step(model, x, to_d(x, sigma, denoised), w, sig, order, extra_args)
        calls += order
        delta = torch.maximum(atol, rtol * torch.maximum(x_low.abs(), x_prev.abs()))
        error = ((x_low - x_high) / delta).flatten(1).norm(dim=1) / x[0].numel() ** 0.5
        accept = pid.propose(error.double().cpu().numpy(), active)
        if accept.all():
            x_prev, x, s = x_low, x_high, t
        elif accept.any():
            keep = append_dims(torch.as_tensor(accept, device=x.device), x.ndim)
            x_prev, x = torch.where(keep, x_low, x_prev), torch.where(keep, x_high, x)
            s = np.where(accept, t, s)
        # Progress: the least-advanced item's share of the way in log sigma, in the schedule's N steps.
        done = float(np.clip((s - t_start) / (t_end - t_start), 0, 1).min())
        while reported < min(n, math.floor(done * n + 1e-6)):
            _report(callback, x, reported, sigma, sigma, denoised)
            reported += 1
            pbar.update()
    while reported < n:
        _report(callback, x, reported, sigmas[-2] if sigma is None else sigma, sigma, denoised)
        reported += 1
        pbar.update()
    pbar.close()
    return x
