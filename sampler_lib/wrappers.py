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
    """A model trained at discrete sigmas: sigma <-> timestep maps and the three quantize modes.

    `quantize` is one mode for the whole batch, or a sequence with one mode per batch item, so that
    'off', 'ingress' and 'paper' arms of a study share one network call.
    """

    def __init__(self, inner_model, alphas_cumprod, quantize="off"):
        super().__init__(inner_model)
        modes = (quantize,) if isinstance(quantize, str) else tuple(quantize)
        if not modes or any(m not in QUANTIZE_MODES for m in modes):
            raise ValueError(f"quantize must be one of {', '.join(QUANTIZE_MODES)}, or one of them per batch "
                             f"item (got {quantize!r})")
        alphas_cumprod = torch.as_tensor(alphas_cumprod, dtype=torch.float32)
        check_finite("alphas_cumprod", alphas_cumprod)
        if alphas_cumprod.ndim != 1 or len(alphas_cumprod) < 2:
            raise ValueError("alphas_cumprod must be a 1-D tensor with at least two training steps")
        if bool(((alphas_cumprod <= 0) | (alphas_cumprod >= 1)).any()):
            raise ValueError("alphas_cumprod must lie strictly in (0, 1); check the beta schedule")
        sigmas = ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5
        if bool((sigmas[1:] <= sigmas[:-1]).any()):
            raise ValueError("alphas_cumprod must be strictly decreasing (sigmas increasing with t)")
        self.quantize = quantize if isinstance(quantize, str) else modes
        self.register_buffer("sigmas", sigmas, persistent=False)
        self.register_buffer("log_sigmas", sigmas.log(), persistent=False)
        self.register_buffer("_paper", torch.tensor([m == "paper" for m in modes]), persistent=False)
        self.register_buffer("_rounds", torch.tensor([m != "off" for m in modes]), persistent=False)

    @property
    def sigma_min(self):
        return self.sigmas[0]

    @property
    def sigma_max(self):
        return self.sigmas[-1]

    def _flag(self, name, sigma):
        """Mode flag `name` ('paper' or 'rounds'): a plain bool for one mode (read from the mode, not a buffer, so
        no call waits on the device), else a (B,) bool tensor matching sigma."""
        if isinstance(self.quantize, str):
            return self.quantize == "paper" if name == "paper" else self.quantize != "off"
        flags = self._paper if name == "paper" else self._rounds
        if sigma.ndim != 1 or sigma.shape[0] != flags.shape[0]:
            raise ValueError(f"per-item quantize modes cover {flags.shape[0]} batch items but sigma has "
                             f"shape {tuple(sigma.shape)}; give one sigma per batch item")
        return flags

    def _as_sigma(self, sigma):
        return torch.as_tensor(sigma, dtype=self.sigmas.dtype, device=self.sigmas.device)

    def quantize_sigma(self, sigma):
        """Nearest training sigma (in log space), whatever the mode; zeros stay zero."""
        sigma = self._as_sigma(sigma)
        on_grid = self.sigmas[nearest_index(sigma, self.log_sigmas)]
        return torch.where(sigma > 0, on_grid, sigma)

    def round_sigma(self, sigma):
        """EDM's round_sigma: snap to the training grid for 'paper' items, identity otherwise."""
        sigma = self._as_sigma(sigma)
        paper = self._flag("paper", sigma)
        if paper is False:
            return sigma
        return self.quantize_sigma(sigma) if paper is True else torch.where(paper, self.quantize_sigma(sigma), sigma)

    def _fractional_t(self, sigma):
        """Timestep of a continuous sigma by log-sigma interpolation between training sigmas."""
        log_sigma = sigma.log()
        low_idx = (torch.searchsorted(self.log_sigmas, log_sigma, right=True) - 1)
        low_idx = low_idx.clamp(0, len(self.log_sigmas) - 2)
        low, high = self.log_sigmas[low_idx], self.log_sigmas[low_idx + 1]
        w = ((low - log_sigma) / (low - high)).clamp(0, 1)
        return (1 - w) * low_idx + w * (low_idx + 1)

    def _timestep(self, sigma, idx, rounds):
        """Rounded items take the nearest index, the others the fractional timestep."""
        if rounds is True:
            return idx.to(sigma.dtype)
        if rounds is False:
            return self._fractional_t(sigma)
        return torch.where(rounds, idx.to(sigma.dtype), self._fractional_t(sigma))

    def sigma_to_t(self, sigma, mode=None):
        """Timestep of sigma: nearest index when rounding, else log-sigma interpolation (fractional t).

        `mode` is one of QUANTIZE_MODES, or None for the wrapper's own mode(s). A bool is refused: k-diffusion's
        `quantize=True` means 'ingress' here, and its `quantize=False` means 'off'.
        """
        if mode is not None and (not isinstance(mode, str) or mode not in QUANTIZE_MODES):
            raise ValueError(f"mode must be one of {', '.join(QUANTIZE_MODES)} or None (got {mode!r}); "
                             "k-diffusion's quantize=True is mode='ingress'")
        sigma = self._as_sigma(sigma)
        rounds = mode in ("ingress", "paper") if mode is not None else self._flag("rounds", sigma)
        idx = None if rounds is False else nearest_index(sigma, self.log_sigmas)
        return self._timestep(sigma, idx, rounds)

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
        sigma = self._as_sigma(sigma)
        paper, rounds = self._flag("paper", sigma), self._flag("rounds", sigma)
        # One index search gives both the rounded sigma and the timestep.
        idx = None if rounds is False else nearest_index(sigma, self.log_sigmas)
        if paper is not False:
            # A foreign sampler may hand a 'paper' item an off-grid sigma: snapping it here keeps the
            # network, c_in and c_out on one training sigma.
            sigma = torch.where(sigma > 0, self.sigmas[idx], sigma) if paper is True else \
                torch.where(paper & (sigma > 0), self.sigmas[idx], sigma)
        sigma_b = append_dims(sigma, x.ndim)
        return sigma_b, x / (sigma_b ** 2 + 1) ** 0.5, self._timestep(sigma, idx, rounds)

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
