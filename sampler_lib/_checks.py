"""Argument checks shared by schedules, wrappers and samplers; each error says what to change."""
import math

import torch


def check_finite(name, value):
    """Reject NaN/inf in a float or tensor."""
    if isinstance(value, torch.Tensor):
        ok = bool(torch.isfinite(value).all())
    else:
        ok = math.isfinite(float(value))
    if not ok:
        raise ValueError(f"{name} must be finite (got {value}); pass a real number")


def check_range(n, sigma_min, sigma_max, rho=None):
    """Validate the arguments every schedule shares."""
    if int(n) != n or n < 1:
        raise ValueError(f"n must be an integer >= 1 (got {n}); ask for at least one sigma")
    for name, value in (("sigma_min", sigma_min), ("sigma_max", sigma_max)):
        check_finite(name, value)
    if rho is not None:
        check_finite("rho", rho)
        if rho <= 0:
            raise ValueError(f"rho must be > 0 (got {rho}); Karras et al. use rho=7")
    if sigma_min <= 0:
        raise ValueError(f"sigma_min must be > 0 (got {sigma_min}); use the model's smallest sigma, "
                         "and keep a final 0 with append_zero=True instead")
    if sigma_min >= sigma_max:
        raise ValueError(f"sigma_min ({sigma_min}) must be smaller than sigma_max ({sigma_max}); "
                         "swap them or widen the range")


def check_sigmas(sigmas):
    """A schedule is 1-D (N+1,) or per-item 2-D (N+1, B): finite, strictly descending, 0 only last."""
    if not isinstance(sigmas, torch.Tensor):
        raise ValueError("sigmas must be a torch tensor; build one with get_sigmas_karras(...)")
    if sigmas.ndim not in (1, 2) or sigmas.shape[0] < 2:
        raise ValueError(f"sigmas must have shape (N+1,) or (N+1, batch) with N >= 1 "
                         f"(got {tuple(sigmas.shape)}); a sampler needs at least one step")
    check_finite("sigmas", sigmas)
    if bool((sigmas[:-1] <= 0).any()) or bool((sigmas[-1] < 0).any()):
        raise ValueError("sigmas must be > 0, except a final 0; move the zero to the end or drop it")
    if bool((sigmas[1:] >= sigmas[:-1]).any()):
        raise ValueError("sigmas must be strictly descending; sort them from sigma_max down to sigma_min")
