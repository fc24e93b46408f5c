"""Noise schedules (Karras et al. 2022, eq. 5; k-diffusion's exponential and polyexponential)."""
import math

import torch

from ._checks import check_finite, check_range


def append_zero(sigmas):
    """Append the final sigma = 0 so the last step lands on the clean image."""
    return torch.cat([sigmas, sigmas.new_zeros([1])])


def _finish(sigmas, append_zero_, device):
    # Computed in float64 and rounded once, so the endpoints stay inside [sigma_min, sigma_max].
    sigmas = sigmas.to(torch.float32)
    return (append_zero(sigmas) if append_zero_ else sigmas).to(device)


def get_sigmas_karras(n, sigma_min, sigma_max, rho=7.0, append_zero=True, device="cpu"):
    """Karras et al. (2022) eq. 5: n sigmas evenly spaced in sigma**(1/rho)."""
    check_range(n, sigma_min, sigma_max, rho)
    ramp = torch.linspace(0, 1, int(n), dtype=torch.float64)
    min_inv_rho = sigma_min ** (1 / rho)
    max_inv_rho = sigma_max ** (1 / rho)
    return _finish((max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho, append_zero, device)


def get_sigmas_exponential(n, sigma_min, sigma_max, append_zero=True, device="cpu"):
    """n sigmas evenly spaced in log sigma."""
    check_range(n, sigma_min, sigma_max)
    return _finish(torch.linspace(math.log(sigma_max), math.log(sigma_min), int(n),
                                  dtype=torch.float64).exp(),
                   append_zero, device)


def get_sigmas_polyexponential(n, sigma_min, sigma_max, rho=1.0, append_zero=True, device="cpu"):
    """n sigmas with log sigma following a polynomial ramp of degree rho (rho=1: exponential)."""
    check_range(n, sigma_min, sigma_max, rho)
    ramp = torch.linspace(1, 0, int(n), dtype=torch.float64) ** rho
    log_min = math.log(sigma_min)
    return _finish(torch.exp(ramp * (math.log(sigma_max) - log_min) + log_min), append_zero, device)


def penultimate_sigma_min(n, sigma_min, sigma_max, rho=7.0):
    """Next-to-last point of an n-point Karras ramp; n = steps + 1 is A1111's 'discard penultimate sigma'."""
    check_range(n, sigma_min, sigma_max, rho)
    if n < 2:
        raise ValueError(f"n must be >= 2 for a next-to-last point (got {n}); use steps >= 1")
    return float(get_sigmas_karras(n, sigma_min, sigma_max, rho, append_zero=False)[-2])


def discretize_sigmas(sigmas, model_sigmas):
    """Round every nonzero sigma to the nearest training sigma in log space; zeros stay zero (EDM App. C.3.4)."""
    check_finite("sigmas", sigmas)
    grid = torch.as_tensor(model_sigmas, dtype=torch.float32)
    if grid.ndim != 1 or len(grid) < 2 or bool((grid <= 0).any()):
        raise ValueError("model_sigmas must be a 1-D tensor of at least two positive training sigmas")
    grid = grid.sort().values.to(sigmas.device)
    rounded = grid[nearest_index(sigmas, grid.log())].to(sigmas.dtype)
    return torch.where(sigmas > 0, rounded, sigmas)


def nearest_index(sigmas, log_grid):
    """Index of the nearest grid sigma by binary search on ascending log sigmas: O(log n), ties go low."""
    log_sigma = sigmas.clamp_min(torch.finfo(sigmas.dtype).tiny).log().to(log_grid.dtype)
    hi = torch.searchsorted(log_grid, log_sigma).clamp(1, len(log_grid) - 1)
    lo = hi - 1
    pick_hi = (log_grid[hi] - log_sigma) < (log_sigma - log_grid[lo])
    return torch.where(pick_hi, hi, lo)


def scaled_linear_alphas_cumprod(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012):
    """Stable Diffusion's DDPM 'scaled_linear' betas (linear in sqrt beta), as diffusers builds them."""
    betas = torch.linspace(beta_start ** 0.5, beta_end ** 0.5, num_train_timesteps, dtype=torch.float32) ** 2
    return torch.cumprod(1.0 - betas, dim=0)


def time_snr_shift(shift, t):
    """SD3's constant shift of flow time t in (0, 1]: s*t / (1 + (s - 1)*t) (Esser et al. 2024; ComfyUI's
    time_snr_shift, diffusers' FlowMatchEulerDiscreteScheduler `shift`). shift 1 is the identity."""
    if shift == 1.0:
        return t
    return shift * t / (1 + (shift - 1) * t)


def flux_time_shift(mu, t):
    """Flux's resolution-dependent shift of flow time t in (0, 1]: e^mu / (e^mu + (1/t - 1)) (ComfyUI's
    flux_time_shift(mu, 1.0, t), diffusers' time_shift_type 'exponential'); t = 1 stays 1."""
    return math.exp(mu) / (math.exp(mu) + (1 / t - 1))


def flux_linear_time_shift(mu, t):
    """diffusers' time_shift_type 'linear': mu / (mu + (1/t - 1))."""
    return mu / (mu + (1 / t - 1))


def flux_mu(image_tokens, base_shift=0.5, max_shift=1.15, base_seq_len=256, max_seq_len=4096):
    """Flux's mu, linear in the number of image tokens: base_shift at base_seq_len tokens, max_shift at max_seq_len
    (diffusers' calculate_shift, ComfyUI's ModelSamplingFlux node with tokens = width*height / (8*8*2*2))."""
    slope = (max_shift - base_shift) / (max_seq_len - base_seq_len)
    return image_tokens * slope + (base_shift - slope * base_seq_len)
