"""Model wrappers: the one contract `denoiser(x, sigma, **extra_args) -> denoised` (k-diffusion, EDM), over a
model sampling (sampler_lib/model_sampling.py: eps, v, flow)."""
import copy
import inspect

import torch
from torch import nn

from .model_sampling import (
    QUANTIZE_MODES,
    DiscreteSampling,
    EpsSampling,
    ModelSampling,
    VSampling,
    append_dims,
    check_mode,
)

__all__ = ["QUANTIZE_MODES", "BaseModelWrapper", "Denoiser", "DiscreteSchedule", "DiscreteEpsDenoiser",
           "DiscreteVDenoiser", "append_dims"]


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


class Denoiser(BaseModelWrapper):
    """A network over one ModelSampling (eps, v, flow) as a denoiser, in one discretization mode or one per item.

    `quantize` is one mode for the whole batch, or a sequence with one mode per batch item, so that 'off', 'ingress'
    and 'paper' arms of a study share one network call. Everything the parameterisation decides (the training
    sigmas, the network's timestep and input, the denoised image) the model sampling answers; the denoiser holds
    the modes. It keeps its own copy of the model sampling, so `.to(device)` moves only its own.
    """

    def __init__(self, inner_model, model_sampling, quantize="off"):
        super().__init__(inner_model)
        modes = _modes(quantize)
        if not isinstance(model_sampling, ModelSampling):
            raise ValueError("model_sampling must be a sampler_lib ModelSampling (got "
                             f"{type(model_sampling).__name__})")
        self.model_sampling = copy.deepcopy(model_sampling)
        self._set_modes(quantize, modes)

    def _set_modes(self, quantize, modes):
        self.quantize = quantize if isinstance(quantize, str) else modes
        self.register_buffer("_paper", torch.tensor([m == "paper" for m in modes]), persistent=False)
        self.register_buffer("_rounds", torch.tensor([m != "off" for m in modes]), persistent=False)

    @property
    def sigmas(self):
        """The training sigmas, ascending."""
        return self.model_sampling.sigmas

    @property
    def log_sigmas(self):
        return self.model_sampling.log_sigmas

    @property
    def sigma_min(self):
        return self.model_sampling.sigma_min

    @property
    def sigma_max(self):
        return self.model_sampling.sigma_max

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
        return self.model_sampling._as_sigma(sigma)

    def quantize_sigma(self, sigma):
        """Nearest training sigma, whatever the mode; zeros stay zero."""
        return self.model_sampling.quantize_sigma(sigma)

    def round_sigma(self, sigma):
        """EDM's round_sigma: snap to the training grid for 'paper' items, identity otherwise."""
        sigma = self._as_sigma(sigma)
        paper = self._flag("paper", sigma)
        if paper is False:
            return sigma
        return self.quantize_sigma(sigma) if paper is True else torch.where(paper, self.quantize_sigma(sigma), sigma)

    def sigma_to_t(self, sigma, mode=None):
        """Timestep of sigma: the nearest training sigma's when rounding, else sigma's own (fractional t).

        `mode` is one of QUANTIZE_MODES, or None for the wrapper's own mode(s). A bool is refused: k-diffusion's
        `quantize=True` means 'ingress' here, and its `quantize=False` means 'off'.
        """
        if mode is not None:
            check_mode(mode)
        sigma = self._as_sigma(sigma)
        rounds = mode in ("ingress", "paper") if mode is not None else self._flag("rounds", sigma)
        idx = None if rounds is False else self.model_sampling.nearest(sigma)
        return self.model_sampling.network_timestep(sigma, idx, rounds)

    def t_to_sigma(self, t):
        """Sigma of a (fractional) network timestep."""
        return self.model_sampling.t_to_sigma(t)

    def forward(self, x, sigma, **extra_args):
        sigma_b, x_in, t = self.ingress(x, sigma)
        return self.egress(x, sigma_b, self.inner_model(x_in, t, **extra_args))

    def denoised_and_uncond(self, x, sigma, **extra_args):
        """(D, the unconditional D) at (x, sigma) from one network call: what a CFG++ sampler steps with (ComfyUI's
        sampler_post_cfg_function hands it uncond_denoised)."""
        sigma_b, x_in, t = self.ingress(x, sigma)
        out, out_uncond = self.network(x_in, t, extra_args, with_uncond=True)
        return self.egress(x, sigma_b, out), self.egress(x, sigma_b, out_uncond)

    def network(self, x_in, t, extra_args, with_uncond=False):
        """The network's output; with_uncond: (guided output, unconditional output) from that one call (the network's
        guidance, models.guidance.guided_eps, returns both), a network that takes no `with_uncond` giving its one
        output as both (an unguided network's prediction is its unconditional one)."""
        if not with_uncond:
            return self.inner_model(x_in, t, **extra_args)
        if not takes_uncond(self.inner_model):
            out = self.inner_model(x_in, t, **extra_args)
            return out, out
        out = self.inner_model(x_in, t, with_uncond=True, **extra_args)
        return out if isinstance(out, tuple) else (out, out)

    def ingress(self, x, sigma):
        """(sigma broadcast over x, the network's input, the network's timestep)."""
        ms = self.model_sampling
        sigma = self._as_sigma(sigma)
        paper, rounds = self._flag("paper", sigma), self._flag("rounds", sigma)
        # One index search gives both the rounded sigma and the timestep.
        idx = None if rounds is False else ms.nearest(sigma)
        if paper is not False:
            # A foreign sampler may hand a 'paper' item an off-grid sigma: snapping it here keeps the
            # network, c_in and c_out on one training sigma.
            sigma = torch.where(sigma > 0, ms.sigmas[idx], sigma) if paper is True else \
                torch.where(paper & (sigma > 0), ms.sigmas[idx], sigma)
        sigma_b = append_dims(sigma, x.ndim)
        return sigma_b, ms.calculate_input(sigma_b, x), ms.network_timestep(sigma, idx, rounds)

    def egress(self, x, sigma_b, out):
        """The denoised image from the network's output."""
        return self.model_sampling.calculate_denoised(sigma_b, out, x)


def takes_uncond(net):
    """Whether a network takes `with_uncond` (by name, or as any keyword)."""
    try:
        params = inspect.signature(getattr(net, "forward", net)).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature
        return False
    return any(p.name == "with_uncond" or p.kind is p.VAR_KEYWORD for p in params)


def _modes(quantize):
    modes = (quantize,) if isinstance(quantize, str) else tuple(quantize)
    if not modes or any(m not in QUANTIZE_MODES for m in modes):
        raise ValueError(f"quantize must be one of {', '.join(QUANTIZE_MODES)}, or one of them per batch "
                         f"item (got {quantize!r})")
    return modes


class DiscreteSchedule(Denoiser):
    """A discrete-time DDPM model from its alphas_cumprod (the model sampling `sampling` builds); its subclasses
    name the prediction (eps, v)."""

    sampling = DiscreteSampling

    def __init__(self, inner_model, alphas_cumprod, quantize="off"):
        modes = _modes(quantize)
        BaseModelWrapper.__init__(self, inner_model)
        self.model_sampling = self.sampling(alphas_cumprod)
        self._set_modes(quantize, modes)

    def egress(self, x, sigma_b, out):
        """The denoised image from the network's output (the prediction's subclass says how)."""
        if type(self.model_sampling) is DiscreteSampling:
            raise NotImplementedError("DiscreteSchedule has no prediction: use DiscreteEpsDenoiser or "
                                      "DiscreteVDenoiser")
        return super().egress(x, sigma_b, out)


class DiscreteEpsDenoiser(DiscreteSchedule):
    """Eps-prediction DDPM model as a denoiser: D(x) = x - sigma * eps(x / sqrt(sigma^2 + 1), t)."""

    sampling = EpsSampling


class DiscreteVDenoiser(DiscreteSchedule):
    """V-prediction DDPM model as a denoiser (Salimans & Ho 2022; sigma_data = 1)."""

    sampling = VSampling
