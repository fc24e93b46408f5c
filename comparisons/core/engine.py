"""The batched engine: many samples through many arms, one network call per step for every arm group.

A *sample* is (prompt, seed); an *arm* is a SamplerConfig. Arms that share a sampler, a step count,
sampler arguments and a guidance scale form a group and run in lockstep in one batch of
samples x arms, each item with its own schedule and its own discretization mode. Identical arms are
computed once, and at every step identical network inputs of one sample (every arm's first step, arms
that have not diverged yet) are evaluated once.
"""
import contextlib
import json
import weakref
from dataclasses import dataclass

import torch
from torch import nn

from sampler_lib import SAMPLERS, BrownianNoiseSampler, initial_noise
from sampler_lib.models.guidance import NoUncond
from sampler_lib.models.interface import sampling_of
from sampler_lib.noise import noise_scale

from ..errors import ConfigError, at_field
from .config import COMPILE_MODES, schedule

# Churn raises sigma by at most sqrt(2); the Brownian path must reach that far.
NOISE_HEADROOM = 1.5
PRECISIONS = ("fp32", "bf16")
# Items per network call where the device does best. On a 2-core CPU the embedded network costs 9.9 ms per item
# at 32, 12.1 at 64 and 14.3 from 128 on (cache effects; BENCHMARKS.md, "Network batch on the CPU"), so a
# group's samples go through in slices of about 32 items, and a study's cost grows linearly with its seeds.
# GPUs keep one batch per group (they gain from width; the H200 figures were measured that way).
CPU_BATCH = 32


def network_batch(device):
    """Items per network call for `device` (None: no limit)."""
    return CPU_BATCH if torch.device(device).type == "cpu" else None


@dataclass(frozen=True)
class Sample:
    prompt: str
    seed: int


def lockstep_key(cfg):
    """Arms with equal keys can share one batch: one sampler, one step count, one set of arguments."""
    return (cfg.sampler, cfg.steps, json.dumps(sampler_options(cfg), sort_keys=True), cfg.guidance_scale)


def sampler_options(cfg):
    """The keyword options a config's sampler runs with: its own, and its convention's (ComfyUI's lms and uni_pc
    endings)."""
    return {**cfg.sampler_kwargs(), **cfg.convention_kwargs()}


SPACINGS = {"diffusers_linspace": "linspace", "diffusers_leading": "leading", "diffusers_trailing": "trailing"}


def start_scale(cfg, sampling, sigmas):
    """What the convention of `cfg` multiplies the initial noise by, its schedule `sigmas` starting from pure noise
    (sampler_lib.noise.noise_scale); the schedule's first sigma itself under kdiffusion (today's start, bit for
    bit)."""
    if cfg.convention == "kdiffusion":
        return sigmas[0]
    return torch.tensor(noise_scale(cfg.convention, float(sigmas[0]), float(sampling.sigma_max), sampling.kind,
                                    cfg.sampler, SPACINGS.get(cfg.schedule)), dtype=sigmas.dtype)


def arm_groups(configs, lockstep=True):
    """Indices of the distinct configs, grouped by lockstep key (each arm alone when lockstep=False)."""
    groups = {}
    for i, cfg in enumerate(configs):
        groups.setdefault(lockstep_key(cfg) if lockstep else i, []).append(i)
    return list(groups.values())


def batch_condition(conditions):
    """Per-item condition dicts -> one dict: tensors concatenated over the batch, shared values kept."""
    out = {}
    for key in conditions[0]:
        values = [c[key] for c in conditions]
        if all(v is values[0] for v in values):
            out[key] = values[0]  # the same object for every item (a guidance scale, SD's empty prompt)
        elif isinstance(values[0], torch.Tensor):
            out[key] = torch.cat(values)
        elif all(v == values[0] for v in values):
            out[key] = values[0]
        else:
            raise ValueError(f"condition {key!r} differs between items of one batch; group them apart")
    return out


class BatchDenoiser(nn.Module):
    """A per-item discrete denoiser over samples x arms; one sample's identical inputs run once (`dedupe`), or, on
    the compiled path, every item every step: one batch shape per slice and no host sync in the step loop."""

    def __init__(self, den, n_samples, n_arms, precision="fp32", dedupe=True):
        super().__init__()
        self.den, self.n_samples, self.n_arms, self.precision = den, n_samples, n_arms, precision
        self.dedupe = dedupe
        self.batch_sizes = []  # what the network saw, for tests and benchmarks

    def round_sigma(self, sigma):
        return self.den.round_sigma(sigma)

    @property
    def model_sampling(self):
        """The wrapped denoiser's model sampling: a noisy sampler reads its family (eps or flow) before its loop."""
        return self.den.model_sampling

    def forward(self, x, sigma, **extra_args):
        sigma_b, x_in, t = self.den.ingress(x, sigma)
        return self.den.egress(x, sigma_b, self._evaluate(x_in, t, extra_args))

    def denoised_and_uncond(self, x, sigma, **extra_args):
        """The wrapped Denoiser's (D, unconditional D) for a CFG++ sampler: the same one network call, batched and
        de-duplicated as `forward`'s."""
        sigma_b, x_in, t = self.den.ingress(x, sigma)
        out, out_uncond = self._evaluate(x_in, t, extra_args, with_uncond=True)
        return self.den.egress(x, sigma_b, out), self.den.egress(x, sigma_b, out_uncond)

    def _network(self, x_in, t, extra_args, with_uncond=False):
        self.batch_sizes.append(x_in.shape[0])
        if self.precision == "bf16":
            with torch.autocast(x_in.device.type, dtype=torch.bfloat16):
                out = self.den.network(x_in, t, extra_args, with_uncond)
            return tuple(o.float() for o in out) if with_uncond else out.float()
        return self.den.network(x_in, t, extra_args, with_uncond)

    def _evaluate(self, x_in, t, extra_args, with_uncond=False):
        s, k = self.n_samples, self.n_arms
        if k == 1 or not self.dedupe:
            return self._network(x_in, t, extra_args, with_uncond)
        xs, ts = x_in.reshape(s, k, -1), t.reshape(s, k)
        # first[s, j]: the first arm of sample s whose network input equals arm j's.
        first = torch.arange(k, device=x_in.device).expand(s, k).clone()
        for j in range(k - 1, 0, -1):
            for i in range(j - 1, -1, -1):
                same = (xs[:, i] == xs[:, j]).all(1) & (ts[:, i] == ts[:, j])
                first[:, j] = torch.where(same, first[:, i], first[:, j])
        rep = (first + torch.arange(s, device=x_in.device)[:, None] * k).flatten()
        keep = rep == torch.arange(s * k, device=x_in.device)
        if bool(keep.all()):
            return self._network(x_in, t, extra_args, with_uncond)
        idx = keep.nonzero().flatten()
        n = x_in.shape[0]
        sub = {key: v[idx] if isinstance(v, torch.Tensor) and v.ndim and v.shape[0] == n else v
               for key, v in extra_args.items()}
        out = self._network(x_in[idx], t[idx], sub, with_uncond)
        at = (torch.cumsum(keep.long(), 0) - 1)[rep]  # where each item's representative sits in `out`
        return tuple(o[at] for o in out) if with_uncond else out[at]


def noise_ceiling(model_sigma_max, schedules):
    """The Brownian tree's range: one value for every arm of a sample, so they share one noise path."""
    return max([float(model_sigma_max)] + [float(s.max()) for s in schedules]) * NOISE_HEADROOM


def sample_arms(model, configs, samples, progress=None, lockstep=True, precision="fp32", stats=None,
                max_batch="device", noise_max=None):
    """Float outputs (len(samples), len(configs), *latent_shape) of every arm on every sample.

    `progress(done, total)`, in item-steps (samples x arms x steps), is called after each step of each group.
    `stats`, a dict, receives the network batch sizes. A group runs its samples in slices of at most `max_batch`
    items (samples x arms; "device": network_batch(model.device), None: all at once); every item has its own
    seed, so slicing changes no output. `noise_max`: the Brownian noise's range (None: noise_ceiling of these configs).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)} (got {precision!r})")
    device = model.device
    sampling = sampling_of(model)  # the training sigmas, the starting latent: the model sampling answers
    s_max = float(sampling.sigma_max)
    distinct = list(dict.fromkeys(configs))
    schedules = {cfg: schedule(cfg, sampling) for cfg in distinct}
    noise_max = noise_ceiling(s_max, schedules.values()) if noise_max is None else noise_max
    # Prompt and guidance are checked here, before any sampling (an unknown word raises ValueError).
    conditions = {(p, g): model.condition(p, g)
                  for p in dict.fromkeys(x.prompt for x in samples) for g in {c.guidance_scale for c in distinct}}
    # One draw per sample serves every arm: each convention's noise for a single image is initial_noise of its seed
    # (sampler_lib.noise.convention_noise); the conventions differ in its scaling (start_scale).
    noise = torch.stack([initial_noise(model.latent_shape, x.seed) for x in samples])
    groups = arm_groups(distinct, lockstep)
    limit = network_batch(device) if max_batch == "device" else max_batch
    slices = []
    for group in groups:
        per = len(samples) if limit is None else max(1, limit // len(group))
        slices += [(group, range(i, min(i + per, len(samples)))) for i in range(0, len(samples), per)]
    # Progress counts item-steps (samples x arms x steps), so a bar moves evenly through slices and groups.
    total, done = sum(len(part) * len(g) * distinct[g[0]].steps for g, part in slices), [0]
    results = {}
    for group, part in slices:
        arms = [distinct[i] for i in group]
        smps = [samples[i] for i in part]

        def tick(_info, items=len(part) * len(group)):
            done[0] += items
            if progress is not None:
                progress(done[0], total)

        out = _run_group(model, sampling, arms, smps, schedules, conditions, noise[part.start:part.stop], noise_max,
                         precision, tick, stats)
        for k, arm in enumerate(arms):
            results.setdefault(arm, []).append(out[:, k])
    return torch.stack([torch.cat(results[cfg]) for cfg in configs], 1)


def increments(report):
    """A sample_arms progress(done, total) that calls report(item-steps since the last call); None stays None."""
    if report is None:
        return None
    last = [0]

    def progress(done, _total):
        report(done - last[0])
        last[0] = done
    return progress


def _run_group(model, sampling, arms, samples, schedules, conditions, noise, noise_max, precision, tick, stats):
    """One lockstep group of arms on some samples, in one batch: (len(samples), len(arms), *latent_shape)."""
    cfg, n_s, n_k = arms[0], len(samples), len(arms)
    sig = torch.stack([schedules[a] for a in arms], 1)                       # (N+1, K)
    sigmas = sig.repeat(1, n_s).to(model.device)                              # (N+1, S*K), sample-major
    # Each arm starts from its sample's noise at its schedule's first sigma, as the model's noising has it, scaled
    # as its convention scales it.
    start = torch.stack([start_scale(a, sampling, schedules[a]) for a in arms])
    x = sampling.initial_latent(noise[:, None], start.view(1, n_k, *[1] * (noise.ndim - 1))).flatten(0, 1)
    x = x.to(model.device)
    den = model.denoiser(tuple(a.quantize for a in arms) * n_s)
    batch_den = BatchDenoiser(den, n_s, n_k, precision, dedupe=model.network not in _STATIC)
    extra = batch_condition([conditions[(smp.prompt, cfg.guidance_scale)] for smp in samples for _ in arms])
    seeds = [smp.seed for smp in samples for _ in arms]
    try:
        out = SAMPLERS[cfg.sampler](batch_den, x, sigmas, extra_args=extra, callback=tick, disable=True,
                                    noise_sampler=BrownianNoiseSampler(x, seeds, noise_max), **sampler_options(cfg))
    except NoUncond as exc:  # a CFG++ sampler on a model without classifier-free guidance: at its first call
        raise at_field(ConfigError(str(exc)), "sampler") from exc
    if stats is not None:
        stats.setdefault("batch_sizes", []).extend(batch_den.batch_sizes)
    return out.float().reshape(n_s, n_k, *out.shape[1:]).cpu()


_STATIC = weakref.WeakSet()  # networks compiled for static shapes: the engine sends them every item, every step


@contextlib.contextmanager
def compiled(model, backend="inductor", mode=None):
    """torch.compile the model's network for the duration, for static shapes (the GPU fast path): while it lasts the
    engine turns de-duplication off, so the network sees one batch shape per slice of a group (at most two per group:
    the full slices and the last) and compiles once per shape; no host-device sync is left in the engine's step.
    `mode="reduce-overhead"` adds CUDA graphs on a GPU."""
    if mode is not None and mode not in COMPILE_MODES:
        raise ValueError(f"compile mode must be one of {', '.join(COMPILE_MODES)} (got {mode!r})")
    net = model.network
    original = net.forward
    net.forward = torch.compile(net.forward, dynamic=False, backend=backend, mode=mode)
    _STATIC.add(net)
    try:
        yield model
    finally:
        _STATIC.discard(net)
        net.forward = original
