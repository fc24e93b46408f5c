"""Model wrappers: the one contract `denoiser(x, sigma, **extra_args) -> denoised` (k-diffusion, EDM)."""
import torch
from torch import nn

from ._checks import check_finite
from .schedules import nearest_index

QUANTIZE_MODES = ("off", "ingress", "paper")


def append_dims(x, target_ndim):
    """Append singleton dims so a per-item (B,) tensor broadcasts over (B, C, H, W)."""
    return x[(...,) + (None,) * (target_ndim - x.ndim)]


class BaseModelWrapper(nn.Module):
    """Wraps any `model(x, sigma, **kw) -> denoised`; time maps and rounding are identities."""

    def __init__(self, inner_model):
        super().__init__()
        self.inner_model = inner_model

    def forward(self, x, sigma, **extra_args):
        return self.inner_model(x, sigma, **extra_args)

    def sigma_to_t(self, sigma):
        return sigma

    def t_to_sigma(self, t):
        return t

    def round_sigma(self, sigma):
        return sigma


class DiscreteSchedule(BaseModelWrapper):
    """A model trained at discrete sigmas: sigma <-> timestep maps and the three quantize modes."""

    def __init__(self, inner_model, alphas_cumprod, quantize="off"):
        super().__init__(inner_model)
        if quantize not in QUANTIZE_MODES:
            raise ValueError(f"quantize must be one of {', '.join(QUANTIZE_MODES)} (got {quantize!r})")
        alphas_cumprod = torch.as_tensor(alphas_cumprod, dtype=torch.float32)
        check_finite("alphas_cumprod", alphas_cumprod)
        if alphas_cumprod.ndim != 1 or len(alphas_cumprod) < 2:
            raise ValueError("alphas_cumprod must be a 1-D tensor with at least two training steps")
        if bool(((alphas_cumprod <= 0) | (alphas_cumprod >= 1)).any()):
            raise ValueError("alphas_cumprod must lie strictly in (0, 1); check the beta schedule")
        sigmas = ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5
        if bool((sigmas[1:] <= sigmas[:-1]).any()):
            raise ValueError("alphas_cumprod must be strictly decreasing (sigmas increasing with t)")
        self.quantize = quantize
        self.register_buffer("sigmas", sigmas, persistent=False)
        self.register_buffer("log_sigmas", sigmas.log(), persistent=False)

    @property
    def sigma_min(self):
        return self.sigmas[0]

    @property
    def sigma_max(self):
        return self.sigmas[-1]

    def quantize_sigma(self, sigma):
        """Nearest training sigma (in log space), whatever the mode; zeros stay zero."""
        sigma = torch.as_tensor(sigma, dtype=self.sigmas.dtype, device=self.sigmas.device)
        on_grid = self.sigmas[nearest_index(sigma, self.log_sigmas)]
        return torch.where(sigma > 0, on_grid, sigma)

    def round_sigma(self, sigma):
        """EDM's round_sigma: snap to the training grid in 'paper' mode, identity otherwise."""
        return self.quantize_sigma(sigma) if self.quantize == "paper" else sigma

    def sigma_to_t(self, sigma, quantize=None):
        """Timestep of sigma: nearest index when rounding, else log-sigma interpolation (fractional t)."""
        quantize = self.quantize if quantize is None else quantize
        sigma = torch.as_tensor(sigma, dtype=self.sigmas.dtype, device=self.sigmas.device)
        if quantize in ("ingress", "paper"):
            return nearest_index(sigma, self.log_sigmas).to(sigma.dtype)
        log_sigma = sigma.log()
        low_idx = (torch.searchsorted(self.log_sigmas, log_sigma, right=True) - 1)
        low_idx = low_idx.clamp(0, len(self.log_sigmas) - 2)
        low, high = self.log_sigmas[low_idx], self.log_sigmas[low_idx + 1]
        w = ((low - log_sigma) / (low - high)).clamp(0, 1)
        return (1 - w) * low_idx + w * (low_idx + 1)

    def t_to_sigma(self, t):
        """Sigma of a (fractional) timestep by log-sigma interpolation."""
        t = torch.as_tensor(t, dtype=torch.float32, device=self.sigmas.device)
        low_idx, high_idx, w = t.floor().long(), t.ceil().long(), t.frac()
        return ((1 - w) * self.log_sigmas[low_idx] + w * self.log_sigmas[high_idx]).exp()

    def forward(self, x, sigma, **extra_args):
        sigma_b, x_in, t = self.ingress(x, sigma)
        return self.egress(x, sigma_b, self.inner_model(x_in, t, **extra_args))

    def ingress(self, x, sigma):
        """(sigma broadcast over x, network input x * c_in, network timestep)."""
        # In 'paper' mode a foreign sampler may hand us an off-grid sigma: snap it so the
        # network, c_in and c_out still share one training sigma.
        sigma = self.round_sigma(sigma)
        sigma_b = append_dims(sigma, x.ndim)
        return sigma_b, x / (sigma_b ** 2 + 1) ** 0.5, self.sigma_to_t(sigma)

    def egress(self, x, sigma_b, out):
        """The denoised image from the network's output."""
        raise NotImplementedError


class DiscreteEpsDenoiser(DiscreteSchedule):
    """Eps-prediction DDPM model as a denoiser: D(x) = x - sigma * eps(x / sqrt(sigma^2 + 1), t)."""

    def egress(self, x, sigma_b, eps):
        return x - sigma_b * eps


class DiscreteVDenoiser(DiscreteSchedule):
    """V-prediction DDPM model as a denoiser (Salimans & Ho 2022; sigma_data = 1)."""

    def egress(self, x, sigma_b, v):
        return x / (sigma_b ** 2 + 1) - v * sigma_b / (sigma_b ** 2 + 1) ** 0.5
