"""Paired runs on identical seeds: one sample, two arms, on the engine; both arms from bit-identical noise."""
import time
from dataclasses import dataclass, field

from sampler_lib import round_sigmas
from sampler_lib.models.interface import sampling_of

from .config import SamplerConfig, schedule
from .engine import Sample, lockstep_key, sample_arms


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
    return lockstep_key(cfg_a) == lockstep_key(cfg_b)


def arm_schedule(model, cfg):
    """(the schedule a config asks for, as the sampler used it, every nonzero sigma on the training grid)."""
    sampling = sampling_of(model)
    s = schedule(cfg, sampling)
    used = round_sigmas(model.denoiser(cfg.quantize), s).tolist()
    end = cfg.convention_kwargs().get("end_sigma")
    if end is not None and used[-1] == 0:  # ComfyUI's uni_pc stops at its end sigma instead of 0
        used[-1] = end
    return s.tolist(), used, sampling.quantize_sigma(s).cpu().tolist()


def run_pair(model, cfg_a, cfg_b, prompt, seed, lockstep=True, progress=None):
    """Sample both arms from the same seed (the study engine, one sample and two arms)."""
    started = time.perf_counter()
    outputs = sample_arms(model, [cfg_a, cfg_b], [Sample(prompt, seed)], progress=progress, lockstep=lockstep)[0]
    images = model.decode(outputs)
    arms = [ArmRun(cfg, *arm_schedule(model, cfg), image) for cfg, image in zip((cfg_a, cfg_b), images)]
    return PairRun(arms[0], arms[1], seed, prompt, lockstep and can_lockstep(cfg_a, cfg_b),
                   time.perf_counter() - started, extra={"outputs": outputs})


def run_single(model, cfg, prompt, seed):
    """One image of one config (the reference arm, and the cost baseline of a pair)."""
    return model.decode(sample_arms(model, [cfg], [Sample(prompt, seed)])[0])[0]
