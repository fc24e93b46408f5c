"""sampler_lib: Karras schedules, samplers, model sampling (eps, v, flow) and model wrappers with EDM-style sigma
discretization."""
from .dpm_solver import DPM_SOLVER_SAMPLERS
from .model_sampling import (
                       DiscreteSampling,
                       EpsSampling,
                       FlowSampling,
                       ModelSampling,
                       VSampling,
                       flow_sampling_from_config,
                       image_tokens,
)
from .more_samplers import MORE_SAMPLERS
from .multistep import MULTISTEP_SAMPLERS
from .named_schedules import SCHEDULES
from .noise import BrownianNoiseSampler, initial_noise
from .samplers import (
                       CORE_SAMPLERS,
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
from .single_step import SINGLE_STEP_SAMPLERS
from .wrappers import (
                       QUANTIZE_MODES,
                       BaseModelWrapper,
                       Denoiser,
                       DiscreteEpsDenoiser,
                       DiscreteSchedule,
                       DiscreteVDenoiser,
                       append_dims,
)

# Every sampler by name: fn(model, x, sigmas, **kwargs), per-item sigmas (N+1, B) (samplers.py, more_samplers.py,
# multistep.py, single_step.py, dpm_solver.py).
SAMPLERS = {**CORE_SAMPLERS, **MORE_SAMPLERS, **MULTISTEP_SAMPLERS, **SINGLE_STEP_SAMPLERS, **DPM_SOLVER_SAMPLERS}

__all__ = [
    "BaseModelWrapper", "BrownianNoiseSampler", "Denoiser", "DiscreteEpsDenoiser", "DiscreteSampling",
    "DiscreteSchedule", "DiscreteVDenoiser", "EpsSampling", "FlowSampling", "ModelSampling", "QUANTIZE_MODES",
    "SAMPLERS", "SCHEDULES", "VSampling", "append_dims", "append_zero", "discretize_sigmas",
    "flow_sampling_from_config", "flux_mu", "flux_time_shift", "get_ancestral_step", "get_sigmas_exponential",
    "get_sigmas_karras", "get_sigmas_polyexponential", "image_tokens", "initial_noise", "penultimate_sigma_min",
    "round_sigmas", "sample_dpm_2", "sample_dpmpp_2m", "sample_dpmpp_2m_sde", "sample_euler", "sample_euler_ancestral",
    "sample_heun", "scaled_linear_alphas_cumprod", "time_snr_shift", "to_d",
]
