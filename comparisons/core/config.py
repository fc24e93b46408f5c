"""Typed, frozen sampler configurations, the pairing presets, and the schedule each config asks for."""
import json
import math
from dataclasses import asdict, dataclass, fields, replace

import torch

from sampler_lib import GROUPS as SAMPLER_GROUP_NAMES
from sampler_lib import QUANTIZE_MODES, REGISTRY, SAMPLERS, FlowSampling, ModelSampling, penultimate_sigma_min
from sampler_lib import SCHEDULES as NAMED_SCHEDULES
from sampler_lib.named_schedules import AYS
from sampler_lib.noise import CONVENTIONS

from ..errors import ConfigError, at_field, clip

SCHEDULES = tuple(NAMED_SCHEDULES)  # every named schedule of sampler_lib (sampler_lib/named_schedules.py)
# Schedules between a sigma_min and a sigma_max (the config's, or the model's): the sigma_min rules and explicit
# sigma_min / sigma_max apply to these. The others take their sigmas from the training timesteps or a table.
RANGED_SCHEDULES = ("karras", "exponential", "polyexponential", "normal", "sgm_uniform", "kl_optimal", "laplace")
AYS_MODELS = tuple(AYS)  # align_your_steps' tables (ComfyUI's): SD1, SDXL, SVD
# The samplers' facts, each declared once next to its function (sampler_lib.registry); the menus and the option
# sets below derive from them. One line per sampler for the menus: what it is, and whose.
SAMPLER_NOTES = {name: spec.note for name, spec in REGISTRY.items()}
# The menus' groups, in menu order: every sampler in exactly one (tests/test_named_schedules.py).
SAMPLER_GROUPS = {group: tuple(name for name, spec in REGISTRY.items() if spec.group == group)
                  for group in SAMPLER_GROUP_NAMES}
# One line per schedule for the menus: what it spaces evenly, and whose it is.
SCHEDULE_NOTES = {
    "karras": "Karras et al. eq. 5: even in sigma^(1/rho)",
    "exponential": "even in log sigma (k-diffusion)",
    "polyexponential": "log sigma on a ramp of degree rho (k-diffusion)",
    "normal": "even in training timestep (ComfyUI normal)",
    "sgm_uniform": "even in timestep, last point 0 (ComfyUI sgm_uniform)",
    "simple": "every (1000/n)-th training sigma (ComfyUI simple)",
    "ddim_uniform": "every (1000//n)-th training sigma from 1 (ComfyUI ddim_uniform)",
    "beta": "timesteps at Beta(alpha, beta) quantiles (ComfyUI beta)",
    "linear_quadratic": "linear then quadratic in sigma (Mochi; ComfyUI)",
    "kl_optimal": "even in arctan(sigma) (A1111 #15608; ComfyUI)",
    "laplace": "log sigma at Laplace quantiles around 1 (ComfyUI)",
    "align_your_steps": "Align Your Steps' tables, log-linear (A1111, ComfyUI)",
    "vp": "the VP SDE's schedule (k-diffusion get_sigmas_vp)",
    "diffusers_linspace": "diffusers timestep_spacing=linspace",
    "diffusers_leading": "diffusers timestep_spacing=leading (SD 1.x default)",
    "diffusers_trailing": "diffusers timestep_spacing=trailing",
}
# The schedule menu's groups, in menu order: every schedule in exactly one (tests/test_named_schedules.py).
SCHEDULE_GROUPS = {
    "sigma_min..sigma_max": RANGED_SCHEDULES,
    "training timesteps": ("simple", "ddim_uniform", "beta", "diffusers_linspace", "diffusers_leading",
                           "diffusers_trailing"),
    "own formula or table": ("linear_quadratic", "align_your_steps", "vp"),
}
# Samplers that add fresh noise with an amount eta (and s_noise; the seeded Brownian path).
STOCHASTIC = tuple(name for name, spec in REGISTRY.items() if spec.adds_noise and "eta" in spec.options)
# torch.compile modes the study's --compile-mode takes (reduce-overhead: CUDA graphs on a GPU).
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
# Fresh noise each step, scaled by s_noise; no eta.
NOISE_ONLY = tuple(name for name, spec in REGISTRY.items()
                   if spec.adds_noise and "s_noise" in spec.options and "eta" not in spec.options)
CHURN = tuple(name for name, spec in REGISTRY.items() if "s_churn" in spec.options)  # s_churn, s_tmin, s_tmax, s_noise
SAMPLER_OPTIONS = ("s_churn", "s_tmin", "s_tmax", "s_noise", "eta")  # config fields a sampler may declare as options
# Fields added after configs were first stored: written to JSON only when set, so every config stored before keeps
# its JSON, and so its reference key and its study's identity.
LATER_FIELDS = {"beta_alpha": 0.6, "beta_beta": 0.6, "ays_model": "SD1", "shift": None, "convention": "kdiffusion"}
# Samplers whose schedule each tool computes for steps + 1 and then drops the next-to-last sigma of (ComfyUI's
# KSampler.DISCARD_PENULTIMATE_SIGMA_SAMPLERS; A1111's discard_next_to_last_sigma on DPM2 and DPM2 a).
DISCARD_PENULTIMATE = {"comfyui": ("dpm_2", "dpm_2_ancestral", "uni_pc", "uni_pc_bh2"),
                       "a1111": ("dpm_2", "dpm_2_ancestral")}
COMFY_UNIPC_END = 0.001  # ComfyUI's sample_unipc replaces a final sigma 0 by this and returns x there
# One line per convention for the menus and --help: what it changes.
CONVENTION_NOTES = {
    "kdiffusion": "this tool's and k-diffusion's: noise x sigma_max, lms and uni_pc into 0",
    "comfyui": "ComfyUI's KSampler: noise x sqrt(1+sigma_max^2), dpm_2/uni_pc drop the penultimate sigma, "
               "lms ends denoised, uni_pc at 0.001",
    "a1111": "AUTOMATIC1111 (CPU RNG): noise x sigma_max, seed + i per image, DPM2 drops the penultimate sigma",
    "diffusers": "diffusers: one generator over the batch, noise x the scheduler's init_noise_sigma",
}
SHIFT_RANGE = (0.05, 20.0)         # a flow model's time shift (SD3 ships 3.0; Flux's dynamic one is e^mu, 1.6..3.2)
SIGMA_MIN_RULES = ("model", "penultimate_steps_plus_1", "penultimate_steps")
MAX_STEPS = 1000
RHO_RANGE = (0.5, 50.0)            # Karras rho; polyexponential: the ramp's degree, at most POLY_RHO_MAX
POLY_RHO_MAX = 2.0                 # a steeper polyexponential ramp repeats sigma_min in float32 (1000 steps)
SIGMA_MIN_RANGE = (1e-4, 0.5)      # an explicit sigma_min stays below 1 ...
SIGMA_MAX_RANGE = (2.0, 1000.0)    # ... and an explicit sigma_max above it, so min < max for any model
MAX_SEED = 2 ** 63 - 1             # a seed is a non-negative int64 (torch.Generator.manual_seed)
NO_SEED = -1                       # the stored seed of a pair of image files that state none (or differ)


@dataclass(frozen=True)
class SamplerConfig:
    sampler: str = "heun"                 # a key of sampler_lib.SAMPLERS
    steps: int = 25                       # sampler steps (intervals of the schedule), 1..1000
    schedule: str = "karras"              # a name of sampler_lib.SCHEDULES
    rho: float = 7.0                      # Karras rho (polyexponential: the ramp's degree)
    sigma_min: float | None = None        # None: the model's smallest training sigma
    sigma_max: float | None = None        # None: the model's largest training sigma
    sigma_min_rule: str = "model"         # model | penultimate_steps_plus_1 | penultimate_steps
    final_zero: bool = True               # keep the trailing 0 (else a ramp of steps+1 points)
    quantize: str = "off"                 # off | ingress | paper (see sampler_lib.wrappers)
    s_churn: float = 0.0                  # Karras churn; 0 = deterministic
    s_tmin: float = 0.0                   # churn only for sigma >= s_tmin
    s_tmax: float | None = None           # churn only for sigma <= s_tmax; None = no upper bound
    s_noise: float = 1.0                  # churn / ancestral noise scale
    eta: float = 1.0                      # ancestral / SDE noise amount (config.STOCHASTIC samplers)
    guidance_scale: float = 3.0           # classifier-free guidance
    beta_alpha: float = 0.6               # the beta schedule's alpha and beta (Lee et al. 2024)
    beta_beta: float = 0.6
    ays_model: str = "SD1"                # align_your_steps: which published table (SD1 | SDXL | SVD)
    shift: float | None = None            # flow models: SD3's constant time shift instead of the model's own (None)
    convention: str = "kdiffusion"        # whose noise, scaling, schedule and endings: kdiffusion | comfyui | a1111 |
                                          # diffusers (sampler_lib.noise.CONVENTIONS)

    def __post_init__(self):
        validate(self)

    def to_json(self):
        data = asdict(self)
        for name, default in LATER_FIELDS.items():
            if data[name] == default:
                del data[name]
        return json.dumps(data, sort_keys=True)

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, data, base=None):
        """A config from a (partial) dict over `base` (defaults when None); unknown keys are errors."""
        if not isinstance(data, dict):
            raise ConfigError("a config must be a JSON object such as {\"quantize\": \"paper\"}")
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"unknown config field(s) {clip(', '.join(unknown))}; known: {', '.join(sorted(names))}")
        try:
            return replace(base or cls(), **data)
        except TypeError as exc:
            raise ConfigError(f"bad config: {clip(exc)}") from exc

    @classmethod
    def from_json(cls, text, base=None):
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, TypeError) as exc:
            raise ConfigError(f"config is not valid JSON ({clip(exc)}); "
                              "write e.g. '{\"quantize\": \"paper\"}'") from exc
        return cls.from_dict(data, base)

    def convention_kwargs(self):
        """Sampler options this config's convention adds: ComfyUI's lms returns the denoised image on a last step into
        0, and its uni_pc ends at sigma 0.001."""
        if self.convention != "comfyui":
            return {}
        if self.sampler == "lms":
            return {"final": "denoised"}
        if self.sampler in ("uni_pc", "uni_pc_bh2"):
            return {"end_sigma": COMFY_UNIPC_END}
        return {}

    def sampler_kwargs(self):
        """Keyword arguments this config's sampler takes: the config fields among its declared options."""
        kwargs = {name: getattr(self, name) for name in REGISTRY[self.sampler].options if name in SAMPLER_OPTIONS}
        if "s_tmax" in kwargs and kwargs["s_tmax"] is None:
            kwargs["s_tmax"] = math.inf  # no upper bound on churn
        return kwargs


def _number(cfg, name, lo=None, hi=None, integer=False, optional=False):
    value = getattr(cfg, name)
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise at_field(ConfigError(f"{name} must be a number (got {clip(repr(value))})"), name)
    if not math.isfinite(value):
        raise at_field(ConfigError(f"{name} must be finite (got {value})"), name)
    if integer and int(value) != value:
        raise at_field(ConfigError(f"{name} must be a whole number (got {value})"), name)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        bounds = f"between {lo} and {hi}" if hi is not None else f">= {lo}"
        raise at_field(ConfigError(f"{name} must be {bounds} (got {value})"), name)


def validate(cfg):
    """Raise ConfigError naming the field and what to change."""
    for name, allowed in (("sampler", tuple(SAMPLERS)), ("schedule", SCHEDULES),
                          ("sigma_min_rule", SIGMA_MIN_RULES), ("quantize", QUANTIZE_MODES)):
        if getattr(cfg, name) not in allowed:
            raise at_field(ConfigError(f"unknown {name} {clip(repr(getattr(cfg, name)))}; choose one of "
                                       f"{', '.join(allowed)}"), name)
    # Bounds chosen so that every config that validates samples: a finite, descending schedule for any
    # model whose sigmas span 1 (SD: 0.0292 .. 14.6; EDM: 0.002 .. 80), checked by a property test.
    _number(cfg, "steps", 1, MAX_STEPS, integer=True)
    _number(cfg, "rho", RHO_RANGE[0], RHO_RANGE[1])
    _number(cfg, "sigma_min", SIGMA_MIN_RANGE[0], SIGMA_MIN_RANGE[1], optional=True)
    _number(cfg, "sigma_max", SIGMA_MAX_RANGE[0], SIGMA_MAX_RANGE[1], optional=True)
    _number(cfg, "s_churn", 0, 1000)
    _number(cfg, "s_tmin", 0, 1000)
    _number(cfg, "s_tmax", 0, 1000, optional=True)
    _number(cfg, "s_noise", 0, 10)
    _number(cfg, "eta", 0, 10)
    _number(cfg, "guidance_scale", 0, 100)
    _number(cfg, "beta_alpha", 0.01, 100)
    _number(cfg, "beta_beta", 0.01, 100)
    _number(cfg, "shift", SHIFT_RANGE[0], SHIFT_RANGE[1], optional=True)
    if cfg.convention not in CONVENTIONS:
        raise at_field(ConfigError(f"unknown convention {clip(repr(cfg.convention))}; choose one of "
                                   f"{', '.join(CONVENTIONS)}"), "convention")
    if cfg.ays_model not in AYS_MODELS:
        raise at_field(ConfigError(f"unknown ays_model {clip(repr(cfg.ays_model))}; choose one of "
                                   f"{', '.join(AYS_MODELS)}"), "ays_model")
    if cfg.schedule not in RANGED_SCHEDULES:
        for name, unset in (("sigma_min", cfg.sigma_min is None), ("sigma_max", cfg.sigma_max is None),
                            ("sigma_min_rule", cfg.sigma_min_rule == "model")):
            if not unset:
                raise at_field(ConfigError(
                    f"{name} applies to the schedules between a sigma_min and a sigma_max "
                    f"({', '.join(RANGED_SCHEDULES)}); the {cfg.schedule} schedule takes its sigmas from the model's "
                    f"training timesteps or a table: leave {name} at its default or choose one of those"), name)
    if cfg.schedule == "polyexponential" and cfg.rho > POLY_RHO_MAX:
        raise at_field(ConfigError(f"rho must be at most {POLY_RHO_MAX} for the polyexponential schedule (got "
                                   f"{cfg.rho}); steeper ramps put several steps on the same sigma"), "rho")
    if cfg.s_tmax is not None and cfg.s_tmin > cfg.s_tmax:
        raise at_field(ConfigError(f"s_tmin ({cfg.s_tmin}) must not exceed s_tmax ({cfg.s_tmax}); churn acts for "
                                   "sigma in [s_tmin, s_tmax]"), "s_tmin")
    if not isinstance(cfg.final_zero, bool):
        raise at_field(ConfigError(f"final_zero must be true or false (got {clip(repr(cfg.final_zero))})"),
                       "final_zero")
    if cfg.sigma_min is not None and cfg.sigma_max is not None and cfg.sigma_min >= cfg.sigma_max:
        raise at_field(ConfigError(f"sigma_min ({cfg.sigma_min}) must be smaller than sigma_max ({cfg.sigma_max})"),
                       "sigma_min")
    # The next-to-last point of a 2-point ramp is sigma_max itself: no schedule is left.
    least = {"penultimate_steps_plus_1": 2, "penultimate_steps": 3}.get(cfg.sigma_min_rule, 1)
    if cfg.steps < least:
        raise at_field(ConfigError(f"sigma_min_rule {cfg.sigma_min_rule!r} needs steps >= {least} (got {cfg.steps}); "
                                   "its sigma_min would equal sigma_max"), "steps")


def check_seed(seed):
    """A seed as an int, or ConfigError for anything but a whole number in 0..MAX_SEED."""
    if isinstance(seed, bool) or not isinstance(seed, (int, float)) or not math.isfinite(seed) \
            or int(seed) != seed or not 0 <= seed <= MAX_SEED:
        raise ConfigError(f"seed must be a whole number from 0 to {MAX_SEED} (got {seed!r})")
    return int(seed)


FLOW_SIGMA_MAX = 1.0  # a flow model's sigmas lie in (0, 1]: x = (1 - sigma) x0 + sigma noise


def check_for_model(cfg, sampling):
    """ConfigError (with its form field) for what this config asks of a model that the model's family cannot do; the
    config is already valid on its own (validate). On a flow model (sampling.kind 'flow'): Karras churn (no
    rectified-flow formula: sampler_lib's churn samplers refuse it too), a sigma_max or sigma_min outside (0, 1]; a
    schedule that cannot be built on its grid is refused by `schedule`, which runs this check first. A `shift` on any
    other model, or with a rounding mode (the network's grid stays the model's own shift). Called before anything is
    written: the CLI's sweep and study and the app's generate path reach it through `schedule`."""
    kind = getattr(sampling, "kind", None)
    if cfg.shift is not None and kind != "flow":
        raise at_field(ConfigError(f"shift {cfg.shift:g} applies to flow models (SD3's time shift of their sigmas); "
                                   f"this {kind or 'eps'} model has none: leave shift unset"), "shift")
    if kind != "flow":
        return
    flow_form = REGISTRY[cfg.sampler].flow  # the sampler's declared flow formula, or "refused: <why>"
    if flow_form.startswith("refused: "):
        raise at_field(ConfigError(f"{cfg.sampler} on a flow model: {flow_form.removeprefix('refused: ')}"), "sampler")
    if cfg.convention == "comfyui" and cfg.sampler in ("uni_pc", "uni_pc_bh2"):
        raise at_field(ConfigError(f"convention comfyui with {cfg.sampler} on a flow model: ComfyUI runs its UniPC "
                                   "through an eps-form conversion there, which this tool does not reproduce; use "
                                   "convention kdiffusion"), "convention")
    if cfg.shift is not None and cfg.quantize != "off":
        raise at_field(ConfigError(f"shift {cfg.shift:g} with quantize {cfg.quantize!r}: rounding goes to the model's "
                                   "own training grid, not the shifted one; use quantize off with a shift"), "quantize")
    if cfg.sampler in CHURN and cfg.s_churn > 0:
        raise at_field(ConfigError(
            f"s_churn {cfg.s_churn:g} on a flow model: Karras churn has no rectified-flow formula (its sigma_hat = "
            f"sigma (1 + gamma) can pass the flow's largest sigma, 1, and its noise is the eps form's); set s_churn "
            f"to 0, or choose an ancestral or SDE sampler for fresh noise"), "s_churn")
    for name in ("sigma_max", "sigma_min"):
        value = getattr(cfg, name)
        if value is not None and not 0 < value <= FLOW_SIGMA_MAX:
            raise at_field(ConfigError(
                f"{name} {value:g} is outside a flow model's sigmas (0, 1] (x = (1 - sigma) x0 + sigma noise; its "
                f"largest sigma, 1, is pure noise); leave {name} unset for the model's own"), name)


def shifted(sampling, shift):
    """A flow model sampling with SD3's constant `shift` in place of its own (constant or Flux's e^mu: the same map,
    e^mu t / (1 + (e^mu - 1) t)), its timesteps and multiplier kept; `sampling` itself when shift is None. The network
    sees sigma * multiplier either way: only the grid the schedules are spaced on changes (ComfyUI's ModelSamplingSD3
    node)."""
    if shift is None:
        return sampling
    return FlowSampling(shift=float(shift), timesteps=len(sampling.sigmas), multiplier=sampling.multiplier)


def schedule(cfg, model_sigmas):
    """The schedule this config asks for, before any discretization: `steps` intervals, on the model's model
    sampling (`sampler_lib.models.interface.sampling_of(model)`; a tensor of training sigmas, ascending, is read as a
    discrete-time model's).

    The three questions on any named schedule: final_zero=False is the schedule of steps + 1 intervals without its
    final 0 (so still `steps` intervals, ending at its smallest sigma); the sigma_min rules raise the sigma_min of
    the schedules between a sigma_min and a sigma_max (RANGED_SCHEDULES) to the next-to-last point of a Karras ramp;
    discretization is the sampler's business (`paper` is the identity on schedules made of training sigmas).
    Given a model sampling, what the config asks of the model's family is checked first (check_for_model), and a
    flow config's `shift` spaces the schedule on the shifted grid (`shifted`).
    """
    if isinstance(model_sigmas, ModelSampling):
        check_for_model(cfg, model_sigmas)
        sampling = shifted(model_sigmas, cfg.shift)
        grid = sampling.sigmas.detach().double().flatten().sort().values.cpu()
    else:
        grid = model_sigmas.detach().double().flatten().sort().values.cpu()
        sampling = grid  # the named schedules read a tensor as a discrete-time model's training sigmas
    options = {}
    if cfg.schedule in RANGED_SCHEDULES:
        sigma_max = cfg.sigma_max or float(grid[-1])
        sigma_min = cfg.sigma_min or float(grid[0])
        if cfg.sigma_min_rule != "model":
            n = cfg.steps + 1 if cfg.sigma_min_rule == "penultimate_steps_plus_1" else cfg.steps
            sigma_min = penultimate_sigma_min(n, sigma_min, sigma_max, cfg.rho)
        options = {"sigma_min": sigma_min, "sigma_max": sigma_max}
        if cfg.schedule in ("karras", "polyexponential"):
            options["rho"] = cfg.rho
    elif cfg.schedule == "beta":
        options = {"alpha": cfg.beta_alpha, "beta": cfg.beta_beta}
    elif cfg.schedule == "align_your_steps":
        options = {"model_type": cfg.ays_model}
    discard = cfg.sampler in DISCARD_PENULTIMATE.get(cfg.convention, ())
    n = (cfg.steps if cfg.final_zero else cfg.steps + 1) + discard
    try:
        sigmas = NAMED_SCHEDULES[cfg.schedule](n, sampling, **options)
    except ValueError as exc:
        raise at_field(ConfigError(str(exc)), "schedule") from exc
    sigmas = sigmas if cfg.final_zero else sigmas[:-1]
    # steps + 1 sigmas, the next-to-last dropped: still `steps` intervals, the last one longer.
    return torch.cat([sigmas[:-2], sigmas[-1:]]) if discard else sigmas


# Each preset: (A overrides, B overrides) over a base config; A is the "paper's way" arm.
PAIRINGS = {
    "discretization": ({"quantize": "paper"}, {"quantize": "off"}),
    "discretization-ingress": ({"quantize": "paper"}, {"quantize": "ingress"}),
    "final-zero": ({"final_zero": True}, {"final_zero": False}),
    "sigma-min": ({"sigma_min_rule": "penultimate_steps_plus_1", "final_zero": True},
                  {"sigma_min_rule": "penultimate_steps", "final_zero": True}),
    # The remedy proposed in the k-diffusion discussion (raise sigma_min to the penultimate point of a
    # steps+1 ramp, keep the 0) against the default (the model's own sigma_min, keep the 0).
    "sigma-min-vs-model": ({"sigma_min_rule": "penultimate_steps_plus_1", "final_zero": True},
                           {"sigma_min_rule": "model", "final_zero": True}),
    # That discussion's two fixes head to head: drop the 0 and end at the model's sigma_min, or keep
    # the 0 with sigma_min raised to the penultimate point of a steps+1 ramp.
    "zero-vs-raised-min": ({"final_zero": False, "sigma_min_rule": "model"},
                           {"final_zero": True, "sigma_min_rule": "penultimate_steps_plus_1"}),
    # Flow models only (SD3, Flux, embedded-flow): SD3's shift against none, and the model's own shift (Flux: by
    # resolution) against a fixed 3. Refused on eps/v models (check_for_model), naming why.
    "shift": ({"shift": 3.0}, {"shift": 1.0}),
    "shift-model-vs-fixed": ({}, {"shift": 3.0}),
    # A config against itself: bit-identical images, LPIPS 0. Any other pair is measured against this.
    "noise-floor": ({}, {}),
}
CUSTOM = "custom"
# One plain sentence per preset: what A and B are and the question the pair asks.
EXPLANATIONS = {
    "discretization": "A rounds every sigma and the churned sigma_hat to the model's training sigmas (the paper's "
                      "App. C.3.4); B interpolates between them. Does rounding the schedule change the picture?",
    "discretization-ingress": "A rounds the schedule's sigmas themselves; B rounds only the timestep fed to the "
                              "network (k-diffusion's quantize=True, ComfyUI, A1111). Which rounding is better?",
    "final-zero": "A keeps the Karras schedule's trailing 0 (the last step jumps to a clean image); B drops it and "
                  "ends at sigma_min. Is the final step to zero worth it?",
    "sigma-min": "Both keep the 0; A raises sigma_min to the next-to-last point of a steps+1 ramp, B of a steps "
                 "ramp. Which raised sigma_min spends the last step better?",
    "sigma-min-vs-model": "Both keep the 0; A raises sigma_min to the next-to-last point of a steps+1 ramp, B uses "
                          "the model's own sigma_min. Is the last network call wasted at a tiny sigma?",
    "zero-vs-raised-min": "A drops the 0 and ends at the model's sigma_min; B keeps the 0 with sigma_min raised. "
                          "Which of the two proposed fixes is better?",
    "shift": "Flow models: A spaces the schedule with SD3's shift 3 (more steps at high noise), B with no shift. "
             "Does the shift change the picture?",
    "shift-model-vs-fixed": "Flow models: A uses the model's own shift (Flux's follows the image size), B a fixed "
                            "shift 3. Does the dynamic shift matter?",
    "noise-floor": "A and B are the same config: the images are identical. A vote here shows how voters behave "
                   "when there is nothing to see.",
    CUSTOM: "A and B are the two configs you set in the custom panels below.",
}


def make_pair(pairing, base=None):
    """(config A, config B) of a preset over a base config."""
    if pairing not in PAIRINGS:
        raise ConfigError(f"unknown pairing {clip(repr(pairing))}; choose one of {', '.join(PAIRINGS)}")
    base = base or SamplerConfig()
    a, b = PAIRINGS[pairing]
    return SamplerConfig.from_dict(a, base), SamplerConfig.from_dict(b, base)


IMAGES = "images"  # an ImageArm's `source`: an image made elsewhere, brought in by file


@dataclass(frozen=True)
class ImageArm:
    """One side of a campaign made from image files (ComfyUI, AUTOMATIC1111, diffusers): not a config this tool
    ran, so nothing but its label and campaign; what each file says about itself is stored per pair."""
    label: str
    campaign: str
    source: str = IMAGES

    def __post_init__(self):
        if self.source != IMAGES or not isinstance(self.label, str) or not self.label.strip() \
                or not isinstance(self.campaign, str) or len(self.label) > 64:
            raise ConfigError(f"an image arm needs a label of 1-64 characters and its campaign (got "
                              f"{clip(repr(self.label))})")

    def to_json(self):
        return json.dumps(asdict(self), sort_keys=True)

    def to_dict(self):
        return asdict(self)


def arm_from_json(text):
    """A stored config_a/config_b: a SamplerConfig, or an ImageArm for a pair of files made elsewhere."""
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, TypeError) as exc:
        raise ConfigError(f"config is not valid JSON ({clip(exc)})") from exc
    if isinstance(data, dict) and data.get("source") == IMAGES:
        if set(data) != {"label", "campaign", "source"}:
            raise ConfigError(f"an image arm has exactly label, campaign and source (got {clip(sorted(data))})")
        return ImageArm(**data)
    return SamplerConfig.from_dict(data)


def is_image_arm(text):
    """Is a stored config the side of an image pair made elsewhere?"""
    return isinstance(arm_from_json(text), ImageArm)
