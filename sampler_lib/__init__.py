"""sampler_lib: Karras schedules, samplers, model sampling (eps, v, flow) and model wrappers with EDM-style sigma
discretization."""
from . import (  # noqa: F401  (they register samplers)
    cfg_pp,
    comfy_menu,
    dpm_solver,
    more_samplers,
    multistep,
    samplers,
    sde_solvers,
    single_step,
)
from .model_sampling import (
                       DiscreteSampling,
                       EpsSampling,
                       FlowSampling,
                       ModelSampling,
                       VSampling,
                       flow_sampling_from_config,
                       image_tokens,
)
from .named_schedules import SCHEDULES
from .noise import BrownianNoiseSampler, initial_noise
from .registry import GROUPS, REGISTRY, SamplerSpec, network_calls
from .samplers import (
                       get_ancestral_step,
                       round_sigmas,
                       sample_dpm_2,
                       sample_dpmpp_2m,
                       sample_dpmpp_2m_sde,
                       sample_euler,
                       sample_euler_ancestral,
                       sample_heun,
                       to_d,
)
from .schedules import (
                       append_zero,
                       discretize_sigmas,
                       flux_mu,
                       flux_time_shift,
                       get_sigmas_exponential,
                       get_sigmas_karras,
                       get_sigmas_polyexponential,
                       penultimate_sigma_min,
                       scaled_linear_alphas_cumprod,
                       time_snr_shift,
)
from .wrappers import (
                       QUANTIZE_MODES,
                       BaseModelWrapper,
                       Denoiser,
                       DiscreteEpsDenoiser,
                       DiscreteSchedule,
                       DiscreteVDenoiser,
                       append_dims,
)

# Every sampler by name, in menu order: fn(model, x, sigmas, **kwargs), per-item sigmas (N+1, B); each declared once,
# next to its function, with @registry.sampler (its facts: REGISTRY).
SAMPLERS = {name: spec.fn for name, spec in REGISTRY.items()}

__all__ = [
    "BaseModelWrapper", "BrownianNoiseSampler", "Denoiser", "DiscreteEpsDenoiser", "DiscreteSampling",
    "DiscreteSchedule", "DiscreteVDenoiser", "EpsSampling", "FlowSampling", "GROUPS", "ModelSampling",
    "QUANTIZE_MODES", "REGISTRY", "SAMPLERS", "SCHEDULES", "SamplerSpec", "VSampling", "append_dims", "append_zero",
    "discretize_sigmas", "network_calls",
    "flow_sampling_from_config", "flux_mu", "flux_time_shift", "get_ancestral_step", "get_sigmas_exponential",
    "get_sigmas_karras", "get_sigmas_polyexponential", "image_tokens", "initial_noise", "penultimate_sigma_min",
    "round_sigmas", "sample_dpm_2", "sample_dpmpp_2m", "sample_dpmpp_2m_sde", "sample_euler", "sample_euler_ancestral",
    "sample_heun", "scaled_linear_alphas_cumprod", "time_snr_shift", "to_d",
]
