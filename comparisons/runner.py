"""Paired runs on identical seeds: both arms from bit-identical noise, in lockstep where they can."""
import time
from dataclasses import dataclass, field

import torch
from torch import nn

from sampler_lib import SAMPLERS, BrownianNoiseSampler, initial_noise, round_sigmas

from .config import SamplerConfig, schedule

# Churn raises sigma by at most sqrt(2); the Brownian path must reach that far.
NOISE_HEADROOM = 1.5


class PairDenoiser(nn.Module):
    """Two denoisers over one network, item 0 through `a` and item 1 through `b`, one forward call."""

    def __init__(self, a, b):
        super().__init__()
        self.a, self.b = a, b

    def round_sigma(self, sigma):
        return torch.cat([self.a.round_sigma(sigma[:1]), self.b.round_sigma(sigma[1:])])

    def forward(self, x, sigma, **extra_args):
        sigma_a, x_a, t_a = self.a.ingress(x[:1], sigma[:1])
        sigma_b, x_b, t_b = self.b.ingress(x[1:], sigma[1:])
        if torch.equal(x_a, x_b) and torch.equal(t_a, t_b):
            # Identical network inputs (every preset's first step, a config against itself):
            # one evaluation serves both arms, and they stay bit-identical by construction.
            out = self.a.inner_model(x_a, t_a, **extra_args).expand(2, *x_a.shape[1:])
        else:
            out = self.a.inner_model(torch.cat([x_a, x_b]), torch.cat([t_a, t_b]), **extra_args)
        return torch.cat([self.a.egress(x[:1], sigma_a, out[:1]), self.b.egress(x[1:], sigma_b, out[1:])])


@dataclass
class ArmRun:
    config: SamplerConfig
    sigmas: list            # the schedule the config asks for
    sigmas_used: list       # as the sampler used it (rounded in paper mode)
    sigmas_discretized: list  # every nonzero sigma on the training grid, for display
    image: object = None    # PIL image


@dataclass
class PairRun:
    a: ArmRun
    b: ArmRun
    seed: int
    prompt: str
    lockstep: bool
    seconds: float
    extra: dict = field(default_factory=dict)


def can_lockstep(cfg_a, cfg_b):
    """One batch needs one sampler, one step count, one set of sampler and guidance arguments."""
    return (cfg_a.sampler == cfg_b.sampler and cfg_a.steps == cfg_b.steps
            and cfg_a.sampler_kwargs() == cfg_b.sampler_kwargs()
            and cfg_a.guidance_scale == cfg_b.guidance_scale)


def _arm(model, cfg):
    den = model.denoiser(cfg.quantize)
    sigmas = schedule(cfg, float(den.sigma_min), float(den.sigma_max))
    return den, sigmas


def _sample(cfg, den, x, sigmas, extra_args, seeds, callback, noise_max=None):
    # Both arms of a pair get one Brownian tree (same seed, same range), batched or not.
    noise_max = float(sigmas.max()) * NOISE_HEADROOM if noise_max is None else noise_max
    noise = BrownianNoiseSampler(x, seeds, noise_max)
    return SAMPLERS[cfg.sampler](den, x, sigmas, extra_args=extra_args, callback=callback, disable=True,
                                 noise_sampler=noise, **cfg.sampler_kwargs())


def run_pair(model, cfg_a, cfg_b, prompt, seed, lockstep=True, progress=None):
    """Sample both arms from the same seed; `progress(done, total)` is called after each step."""
    started = time.perf_counter()
    (den_a, s_a), (den_b, s_b) = _arm(model, cfg_a), _arm(model, cfg_b)
    noise = initial_noise(model.latent_shape, seed)
    lockstep = lockstep and can_lockstep(cfg_a, cfg_b)
    total = cfg_a.steps if lockstep else cfg_a.steps + cfg_b.steps
    done = [0]

    def tick(_info):
        done[0] += 1
        if progress is not None:
            progress(done[0], total)

    device = getattr(model, "device", "cpu")
    # Prompt and guidance are checked here, before any sampling (an unknown word raises ValueError).
    conditions = {g: model.condition(prompt, g) for g in {cfg_a.guidance_scale, cfg_b.guidance_scale}}
    noise_max = max(float(s_a.max()), float(s_b.max())) * NOISE_HEADROOM
    if lockstep:
        sigmas = torch.stack([s_a, s_b], 1).to(device)
        x = torch.stack([noise * s_a[0], noise * s_b[0]]).to(device)
        out = _sample(cfg_a, PairDenoiser(den_a, den_b), x, sigmas, conditions[cfg_a.guidance_scale], [seed, seed],
                      tick, noise_max)
    else:
        outs = []
        for cfg, den, s in ((cfg_a, den_a, s_a), (cfg_b, den_b, s_b)):
            outs.append(_sample(cfg, den, (noise * s[0])[None].to(device), s.to(device),
                                conditions[cfg.guidance_scale], [seed], tick, noise_max))
        out = torch.cat(outs)
    images = model.decode(out)
    arms = [ArmRun(cfg, s.tolist(), round_sigmas(den, s).tolist(), den.quantize_sigma(s).cpu().tolist(), image)
            for cfg, den, s, image in ((cfg_a, den_a, s_a, images[0]), (cfg_b, den_b, s_b, images[1]))]
    return PairRun(arms[0], arms[1], seed, prompt, lockstep, time.perf_counter() - started)


def run_single(model, cfg, prompt, seed):
    """One image of one config (the reference arm, and the cost baseline of a pair)."""
    den, s = _arm(model, cfg)
    x = (initial_noise(model.latent_shape, seed) * s[0])[None]
    device = getattr(model, "device", "cpu")
    out = _sample(cfg, den, x.to(device), s.to(device), model.condition(prompt, cfg.guidance_scale), [seed], None)
    return model.decode(out)[0]
