"""Model sampling in one place (shaped like ComfyUI's comfy/model_sampling.py): what a model family's
parameterisation means for sampling, and nothing else.

A `ModelSampling` holds a model's training sigmas (ascending) and answers:
- `sigma_to_t(sigma, mode)` / `t_to_sigma(t)`: the network's timestep in each discretization mode (`off`,
  `ingress`, `paper`), and back; `quantize_sigma(sigma)`: the nearest training sigma;
- `timestep(sigma)` / `sigma(timestep)`: the maps the named schedules space their steps in (ComfyUI's);
- `calculate_input(sigma, x)`: the network's input; `calculate_denoised(sigma, output, x)`: the denoised image from
  the network's output;
- `noise_scaling(sigma, noise, latent)`: the latent noised to sigma; `initial_latent(noise, sigma)`: the sampler's
  start from pure noise at the schedule's first sigma.

Three families: `EpsSampling` and `VSampling` (discrete-time DDPM models, x = x0 + sigma*noise, 1000 training sigmas
from alphas_cumprod, nearest in log sigma), and `FlowSampling` (rectified flow, ComfyUI's CONST:
x = (1 - sigma)*x0 + sigma*noise, sigma = shift(t / T) for t = 1..T, the network predicting the velocity
noise - x0). A denoiser (`sampler_lib.wrappers.Denoiser`) is a network over one of these; a model exposes its own as
`model.model_sampling`. A new model family is one subclass here.
"""
import math

import torch
from torch import nn

from ._checks import check_finite
from .schedules import flux_linear_time_shift, flux_mu, flux_time_shift, nearest_index, time_snr_shift

QUANTIZE_MODES = ("off", "ingress", "paper")


def append_dims(x, target_ndim):
    """Append singleton dims so a per-item (B,) tensor broadcasts over (B, C, H, W)."""
    return x[(...,) + (None,) * (target_ndim - x.ndim)]


def check_mode(mode):
    """One of QUANTIZE_MODES; a bool is refused (k-diffusion's quantize=True is mode='ingress')."""
    if not isinstance(mode, str) or mode not in QUANTIZE_MODES:
        raise ValueError(f"mode must be one of {', '.join(QUANTIZE_MODES)} or None (got {mode!r}); "
                         "k-diffusion's quantize=True is mode='ingress'")
    return mode


class ModelSampling(nn.Module):
    """The protocol every model family implements (see the module's docstring). `kind` names the family; the
    training sigmas are buffers, so a denoiser's `.to(device)` moves them."""

    kind = None

    def __init__(self, sigmas):
        super().__init__()
        self.register_buffer("sigmas", sigmas, persistent=False)
        self.register_buffer("log_sigmas", sigmas.log(), persistent=False)

    @property
    def sigma_min(self):
        return self.sigmas[0]

    @property
    def sigma_max(self):
        return self.sigmas[-1]

    def card(self):
        """What this model sampling is, as JSON-able values."""
        return {"kind": self.kind, "timesteps": len(self.sigmas)}

    def _as_sigma(self, sigma):
        return torch.as_tensor(sigma, dtype=self.sigmas.dtype, device=self.sigmas.device)

    # --- the training grid and the network's timestep, per discretization mode ---------------------------------
    def nearest(self, sigma):
        """Index of the nearest training sigma (ties go low)."""
        raise NotImplementedError

    def quantize_sigma(self, sigma):
        """Nearest training sigma, whatever the mode; zeros stay zero."""
        sigma = self._as_sigma(sigma)
        return torch.where(sigma > 0, self.sigmas[self.nearest(sigma)], sigma)

    def _grid_t(self, idx, dtype):
        """The network timestep of training sigma `idx`."""
        raise NotImplementedError

    def _continuous_t(self, sigma):
        """The network timestep of any sigma (mode 'off')."""
        raise NotImplementedError

    def network_timestep(self, sigma, idx, rounds):
        """The timestep the network sees: items that round (`rounds`: a bool, or a (B,) bool tensor) take training
        sigma `idx`'s, the others sigma's own. No value is read back from the device."""
        if rounds is True:
            return self._grid_t(idx, sigma.dtype)
        if rounds is False:
            return self._continuous_t(sigma)
        return torch.where(rounds, self._grid_t(idx, sigma.dtype), self._continuous_t(sigma))

    def sigma_to_t(self, sigma, mode="off"):
        """The network timestep of sigma in one discretization mode ('ingress' and 'paper' round to the grid)."""
        rounds = check_mode(mode) != "off"
        sigma = self._as_sigma(sigma)
        return self.network_timestep(sigma, self.nearest(sigma) if rounds else None, rounds)

    def t_to_sigma(self, t):
        """The sigma of a network timestep (the inverse of sigma_to_t in mode 'off')."""
        raise NotImplementedError

    # --- the maps the named schedules space steps in (ComfyUI's model_sampling.timestep / .sigma) --------------
    def timestep(self, sigma):
        raise NotImplementedError

    def sigma(self, timestep):
        raise NotImplementedError

    # --- the parameterisation -------------------------------------------------------------------------------
    def calculate_input(self, sigma, x):
        """The network's input at noise level sigma (broadcast over x)."""
        raise NotImplementedError

    def calculate_denoised(self, sigma, output, x):
        """The denoised image from the network's output at sigma (broadcast over x)."""
        raise NotImplementedError

    def noise_scaling(self, sigma, noise, latent):
        """`latent` noised to sigma with `noise` (sigma: a number, or one per batch item)."""
        raise NotImplementedError

    def initial_latent(self, noise, sigma):
        """Where a sampler starts from pure noise at the schedule's first sigma: noise_scaling on a zero latent,
        which is sigma * noise for every family here (eps/v: sigma_max * noise; flow: noise at sigma 1)."""
        sigma = torch.as_tensor(sigma, dtype=noise.dtype, device=noise.device)
        if sigma.ndim == 1 and noise.ndim > 1:
            sigma = append_dims(sigma, noise.ndim)
        return noise * sigma


def _broadcast(sigma, like):
    """sigma (a number, or one per batch item, or already broadcast) shaped to broadcast over `like`; a tensor keeps
    its dtype, so the arithmetic is the callers' own."""
    if not isinstance(sigma, torch.Tensor):
        sigma = torch.as_tensor(sigma, dtype=like.dtype, device=like.device)
    return append_dims(sigma, like.ndim) if 0 < sigma.ndim < like.ndim else sigma


class DiscreteSampling(ModelSampling):
    """A discrete-time DDPM model (x = x0 + sigma*noise): training sigmas sqrt((1 - a)/a) of alphas_cumprod, the
    network timestep the (fractional) index of sigma on them in log space, the input scaled by 1/sqrt(sigma^2 + 1)
    (ComfyUI's ModelSamplingDiscrete)."""

    def __init__(self, alphas_cumprod):
        alphas_cumprod = torch.as_tensor(alphas_cumprod, dtype=torch.float32)
        check_finite("alphas_cumprod", alphas_cumprod)
        if alphas_cumprod.ndim != 1 or len(alphas_cumprod) < 2:
            raise ValueError("alphas_cumprod must be a 1-D tensor with at least two training steps")
        if bool(((alphas_cumprod <= 0) | (alphas_cumprod >= 1)).any()):
            raise ValueError("alphas_cumprod must lie strictly in (0, 1); check the beta schedule")
        sigmas = ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5
        if bool((sigmas[1:] <= sigmas[:-1]).any()):
            raise ValueError("alphas_cumprod must be strictly decreasing (sigmas increasing with t)")
        super().__init__(sigmas)

    def nearest(self, sigma):
        return nearest_index(sigma, self.log_sigmas)

    def _grid_t(self, idx, dtype):
        return idx.to(dtype)

    def _continuous_t(self, sigma):
        """Timestep of a continuous sigma by log-sigma interpolation between training sigmas."""
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

    def timestep(self, sigma):
        """The nearest training timestep in log sigma, in sigma's dtype (ComfyUI's ModelSamplingDiscrete.timestep)."""
        sigma = torch.as_tensor(sigma)
        grid = self.sigmas.to(sigma.device, sigma.dtype if sigma.is_floating_point() else torch.float64)
        return nearest_index(sigma.to(grid.dtype), grid.log()).to(grid.dtype)

    def sigma(self, timestep):
        """The sigma at a fractional timestep: log sigma interpolated between neighbours, in the timestep's float
        dtype (ComfyUI's ModelSamplingDiscrete.sigma)."""
        t = torch.as_tensor(timestep)
        dtype = t.dtype if t.is_floating_point() else torch.float64
        log_grid = self.sigmas.to(t.device, dtype).log()
        t = t.to(dtype).clamp(0, len(log_grid) - 1)
        low, high = t.floor().long(), t.ceil().long()
        w = t - t.floor()
        return ((1 - w) * log_grid[low] + w * log_grid[high]).exp()

    def calculate_input(self, sigma, x):
        sigma = _broadcast(sigma, x)
        return x / (sigma ** 2 + 1) ** 0.5

    def noise_scaling(self, sigma, noise, latent):
        return noise * _broadcast(sigma, noise) + latent


class EpsSampling(DiscreteSampling):
    """Eps prediction: D(x) = x - sigma * eps (ComfyUI's EPS)."""

    kind = "eps"

    def calculate_denoised(self, sigma, output, x):
        return x - _broadcast(sigma, x) * output


class VSampling(DiscreteSampling):
    """V prediction (Salimans & Ho 2022; sigma_data = 1): D(x) = x/(sigma^2+1) - v*sigma/sqrt(sigma^2+1) (ComfyUI's
    V_PREDICTION)."""

    kind = "v"

    def calculate_denoised(self, sigma, output, x):
        sigma = _broadcast(sigma, x)
        return x / (sigma ** 2 + 1) - output * sigma / (sigma ** 2 + 1) ** 0.5


SHIFT_TYPES = ("constant", "exponential", "linear")


class FlowSampling(ModelSampling):
    """Rectified flow (ComfyUI's CONST with ModelSamplingDiscreteFlow / ModelSamplingFlux):
    x = (1 - sigma)*x0 + sigma*noise, the network predicts the velocity v = noise - x0, so D(x) = x - sigma*v, and
    its input is x unchanged. Training sigmas shift(t / timesteps) for t = 1..timesteps (ascending, the largest 1);
    the network timestep is sigma * multiplier (SD3: 1000; ComfyUI's Flux: 1), continuous in mode 'off' and the
    nearest training sigma's in 'ingress' / 'paper'.

    The shift: `shift` s, SD3's constant one (s*t / (1 + (s-1)*t); 1 is none), or `mu`, Flux's resolution-dependent
    one (e^mu / (e^mu + 1/t - 1); `flux_mu` gives mu from the number of image tokens).
    """

    kind = "flow"

    def __init__(self, shift=1.0, mu=None, timesteps=1000, multiplier=1000, shift_type=None):
        shift_type = shift_type or ("constant" if mu is None else "exponential")
        if shift_type not in SHIFT_TYPES:
            raise ValueError(f"flow shift type must be one of {', '.join(SHIFT_TYPES)} (got {shift_type!r})")
        if (mu is None) != (shift_type == "constant"):
            raise ValueError("a flow model's shift is either constant (shift) or resolution-dependent (mu), not both")
        value = shift if mu is None else mu
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or (
                value <= 0 and shift_type != "exponential"):
            raise ValueError(f"flow {'shift' if mu is None else 'mu'} must be a finite number"
                             f"{'' if shift_type == 'exponential' else ' above 0'} (got {value!r})")
        if isinstance(timesteps, bool) or int(timesteps) != timesteps or timesteps < 2:
            raise ValueError(f"flow timesteps must be a whole number >= 2 (got {timesteps!r})")
        if not (isinstance(multiplier, (int, float)) and math.isfinite(multiplier) and multiplier > 0):
            raise ValueError(f"flow multiplier must be a number above 0 (got {multiplier!r})")
        self.shift, self.mu, self.shift_type = float(shift), None if mu is None else float(mu), shift_type
        self.multiplier = float(multiplier)
        t = torch.arange(1, int(timesteps) + 1, dtype=torch.float64) / int(timesteps)
        sigmas = self.shifted(t)
        super().__init__(sigmas.to(torch.float32))
        # The training sigmas' network timesteps, rounded once (unshifted: exactly 1..1000).
        self.register_buffer("grid_timesteps", (sigmas * self.multiplier).to(torch.float32), persistent=False)

    def card(self):
        card = {"kind": self.kind, "timesteps": len(self.sigmas), "multiplier": self.multiplier}
        return {**card, "shift": self.shift} if self.mu is None else {**card, "mu": self.mu,
                                                                       "shift_type": self.shift_type}

    def shifted(self, t):
        """Flow time t in (0, 1] (unshifted) -> sigma."""
        if self.shift_type == "constant":
            return time_snr_shift(self.shift, t)
        return (flux_time_shift if self.shift_type == "exponential" else flux_linear_time_shift)(self.mu, t)

    def nearest(self, sigma):
        """Nearest training sigma in sigma itself (the network's timestep is linear in sigma)."""
        s = sigma.to(self.sigmas.dtype).contiguous()
        hi = torch.searchsorted(self.sigmas, s).clamp(1, len(self.sigmas) - 1)
        lo = hi - 1
        pick_hi = (self.sigmas[hi] - s) < (s - self.sigmas[lo])
        return torch.where(pick_hi, hi, lo)

    def _grid_t(self, idx, dtype):
        return self.grid_timesteps[idx].to(dtype)

    def _continuous_t(self, sigma):
        return sigma * self.multiplier

    def t_to_sigma(self, t):
        return torch.as_tensor(t, dtype=torch.float32, device=self.sigmas.device) / self.multiplier

    def timestep(self, sigma):
        """ComfyUI's flow timestep: sigma * multiplier (the network's, continuous)."""
        sigma = torch.as_tensor(sigma)
        return sigma * self.multiplier

    def sigma(self, timestep):
        """ComfyUI's flow sigma of a timestep: shift(timestep / multiplier)."""
        t = torch.as_tensor(timestep)
        return self.shifted((t if t.is_floating_point() else t.double()) / self.multiplier)

    def calculate_input(self, sigma, x):
        return x

    def calculate_denoised(self, sigma, output, x):
        return x - _broadcast(sigma, x) * output

    def noise_scaling(self, sigma, noise, latent):
        sigma = _broadcast(sigma, noise)
        return sigma * noise + (1.0 - sigma) * latent


def flow_sampling_from_config(config, image_tokens=None, multiplier=1000):
    """The FlowSampling a diffusers folder's `scheduler/scheduler_config.json` (as a dict) describes: `shift`
    (SD3: 3.0), or with `use_dynamic_shifting` (Flux) mu = flux_mu(image_tokens, base_shift, max_shift,
    base_image_seq_len, max_image_seq_len), which needs the image's token count (`image_tokens`)."""
    if not isinstance(config, dict):
        raise ValueError(f"a scheduler config is a dict (got {type(config).__name__})")
    for key in ("invert_sigmas", "shift_terminal"):  # they change what the grid means: refused, not ignored
        if config.get(key):
            raise ValueError(f"scheduler config: {key}={config[key]!r} is not supported for flow models")
    timesteps = config.get("num_train_timesteps", 1000)
    if not config.get("use_dynamic_shifting", False):
        return FlowSampling(shift=config.get("shift", 1.0), timesteps=timesteps, multiplier=multiplier)
    if image_tokens is None:
        raise ValueError("this scheduler shifts by resolution (use_dynamic_shifting, as Flux): give the image's "
                         "number of tokens (image_tokens) to set its shift")

    def get(key, default):
        value = config.get(key)
        return default if value is None else value

    mu = flux_mu(image_tokens, get("base_shift", 0.5), get("max_shift", 1.15), get("base_image_seq_len", 256),
                 get("max_image_seq_len", 4096))
    return FlowSampling(mu=mu, timesteps=timesteps, multiplier=multiplier,
                        shift_type=get("time_shift_type", "exponential"))


def image_tokens(height, width, vae_scale=8, patch=2):
    """A Flux image's token count: latent pixels packed in patch x patch tokens ((h / 16) * (w / 16) at VAE scale 8)
    - what diffusers' Flux pipeline feeds calculate_shift."""
    return (int(height) // vae_scale // patch) * (int(width) // vae_scale // patch)
