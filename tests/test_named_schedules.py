"""sampler_lib.SCHEDULES: every named schedule on Stable Diffusion's 1000 training sigmas, checked against its
reference — diffusers 0.42's EulerDiscreteScheduler and k-diffusion 0.1.1 where installed (run side by side), else
the values ComfyUI's comfy/samplers.py formula gives, written down below with the function they come from."""
import math

import numpy as np
import pytest
import torch

from sampler_lib import SCHEDULES, discretize_sigmas, scaled_linear_alphas_cumprod
from sampler_lib.named_schedules import AYS, ON_TRAINING_SIGMAS
from tests.conftest import load_kdiffusion

ALPHAS = scaled_linear_alphas_cumprod()
SIGMAS = ((1 - ALPHAS) / ALPHAS) ** 0.5  # ascending: 0.0292 .. 14.6146
GRID = SIGMAS.double()


def close(ours, want, rtol=1e-5):
    torch.testing.assert_close(ours.double(), torch.as_tensor(want, dtype=torch.float64), rtol=rtol, atol=1e-6)


@pytest.mark.parametrize("name", sorted(SCHEDULES))
@pytest.mark.parametrize("n", [1, 4, 10, 25])
def test_every_schedule_gives_n_steps_descending_to_zero(name, n):
    try:
        s = SCHEDULES[name](n, SIGMAS)
    except ValueError as exc:
        assert name == "ddim_uniform" and "choose" in str(exc)  # refused, saying which step counts work
        return
    assert s.shape == (n + 1,) and s.dtype == torch.float32 and float(s[-1]) == 0.0
    assert bool(torch.isfinite(s).all()) and bool((s[1:] < s[:-1]).all())


def _diffusers(n, **options):
    from diffusers import EulerDiscreteScheduler
    sched = EulerDiscreteScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, **options)
    sched.set_timesteps(n)
    return sched.sigmas


@pytest.mark.parametrize("n", [4, 10, 25, 30])
def test_diffusers_spacings_and_karras_match_diffusers(n):
    close(SCHEDULES["diffusers_linspace"](n, SIGMAS), _diffusers(n, timestep_spacing="linspace"))
    close(SCHEDULES["diffusers_leading"](n, SIGMAS), _diffusers(n, timestep_spacing="leading", steps_offset=1))
    close(SCHEDULES["diffusers_trailing"](n, SIGMAS), _diffusers(n, timestep_spacing="trailing"))
    close(SCHEDULES["karras"](n, SIGMAS), _diffusers(n, use_karras_sigmas=True))
    close(SCHEDULES["exponential"](n, SIGMAS), _diffusers(n, use_exponential_sigmas=True), rtol=1e-4)


@pytest.mark.parametrize("n", [3, 10, 25])
def test_k_diffusion_formulas_match_k_diffusion(n):
    k, _ = load_kdiffusion()
    lo, hi = float(SIGMAS[0]), float(SIGMAS[-1])
    close(SCHEDULES["karras"](n, SIGMAS), k.get_sigmas_karras(n, lo, hi))
    close(SCHEDULES["exponential"](n, SIGMAS), k.get_sigmas_exponential(n, lo, hi))
    close(SCHEDULES["polyexponential"](n, SIGMAS, rho=2.0), k.get_sigmas_polyexponential(n, lo, hi, rho=2.0))
    # k-diffusion's vp runs in the default dtype, where exp(x) - 1 loses ~2e-4 relative near the bottom: run it in
    # float64 to compare the formula, not float32's rounding.
    torch.set_default_dtype(torch.float64)
    try:
        want = k.get_sigmas_vp(n)
    finally:
        torch.set_default_dtype(torch.float32)
    close(SCHEDULES["vp"](n, SIGMAS), want)


def test_comfyui_schedules_at_ten_steps():
    # comfy/samplers.py simple_scheduler: sigmas[-(1 + int(x * 1000 / 10))] for x < 10, then 0.
    close(SCHEDULES["simple"](10, SIGMAS), list(GRID[[999 - 100 * x for x in range(10)]]) + [0])
    # ddim_scheduler: sigmas[1], [101], ..., [901] (stride 1000 // 10), reversed, then 0.
    close(SCHEDULES["ddim_uniform"](10, SIGMAS), list(GRID[[901 - 100 * x for x in range(10)]]) + [0])
    # normal_scheduler: timesteps linspace(999, 0, 10) = 999, 888, ..., 0 (whole numbers: no interpolation).
    close(SCHEDULES["normal"](10, SIGMAS), list(GRID[[999 - 111 * x for x in range(10)]]) + [0])
    # normal_scheduler(sgm=True): linspace(999, 0, 11)[:-1] = 999, 899.1, ...; log sigma interpolated.
    t = np.linspace(999, 0, 11)[:-1]
    want = [math.exp((1 - (x % 1)) * math.log(GRID[int(x)]) + (x % 1) * math.log(GRID[math.ceil(x)])) for x in t]
    close(SCHEDULES["sgm_uniform"](10, SIGMAS), want + [0])
    # beta_scheduler(alpha=0.6, beta=0.6): numpy.rint(scipy.stats.beta.ppf(1 - i/10, 0.6, 0.6) * 999) =
    close(SCHEDULES["beta"](10, SIGMAS), list(GRID[[999, 959, 876, 765, 637, 500, 362, 234, 123, 40]]) + [0])
    # kl_optimal_scheduler: tan(w atan(sigma_min) + (1 - w) atan(sigma_max)), w = i / 9.
    lo, hi = float(GRID[0]), float(GRID[-1])
    close(SCHEDULES["kl_optimal"](10, SIGMAS),
          [math.tan(i / 9 * math.atan(lo) + (1 - i / 9) * math.atan(hi)) for i in range(10)] + [0])
    # linear_quadratic_schedule at 4 steps (threshold 0.025, 2 linear steps): 1 - [0, 0.0125, 0.025, 0.275, 1],
    # times sigma_max (worked by hand from the formula: quadratic 0.2375 i^2 - 0.9375 i + 0.95 for i = 2, 3).
    close(SCHEDULES["linear_quadratic"](4, SIGMAS), [hi * (1 - v) for v in (0, 0.0125, 0.025, 0.275, 1)])


@pytest.mark.parametrize("model_type", sorted(AYS))
@pytest.mark.parametrize("n", [10, 4, 20, 32])
def test_align_your_steps_tables_and_log_linear_interpolation(model_type, n):
    table = AYS[model_type]
    if n == 10:
        want = table[:-1] + [0]  # the published levels, the last replaced by 0
    else:
        # ComfyUI's loglinear_interp: numpy.interp of log levels (lowest first) over an even grid of n + 1 points.
        ys = np.exp(np.interp(np.linspace(0, 1, n + 1), np.linspace(0, 1, len(table)), np.log(table[::-1])))[::-1]
        want = list(ys[:-1]) + [0]
    close(SCHEDULES["align_your_steps"](n, SIGMAS, model_type=model_type), want)


def test_paper_rounding_leaves_schedules_on_training_sigmas_unchanged():
    """For schedules made of training sigmas, the paper's discretization (App. C.3.4) is the identity."""
    for name in ON_TRAINING_SIGMAS + ("normal",):
        s = SCHEDULES[name](10, SIGMAS)
        assert torch.equal(discretize_sigmas(s, SIGMAS), s), name
    moved = SCHEDULES["karras"](10, SIGMAS)
    assert not torch.equal(discretize_sigmas(moved, SIGMAS), moved)  # ... and not for karras


@pytest.mark.parametrize("call, message", [
    (lambda: SCHEDULES["beta"](10, SIGMAS, alpha=0), "alpha must be a number above 0"),
    (lambda: SCHEDULES["beta"](10, SIGMAS, beta=-1.0), "beta must be a number above 0"),
    (lambda: SCHEDULES["beta"](400, SIGMAS), "cannot make 400 distinct steps"),
    (lambda: SCHEDULES["ddim_uniform"](7, SIGMAS), "gives 8 steps, not 7; choose"),
    (lambda: SCHEDULES["align_your_steps"](10, SIGMAS * 3), "tables are for training sigmas"),
    (lambda: SCHEDULES["align_your_steps"](10, SIGMAS, model_type="SD3"), "model_type must be one of"),
    (lambda: SCHEDULES["karras"](0, SIGMAS), "steps must be a whole number >= 1"),
    (lambda: SCHEDULES["simple"](10, SIGMAS.flip(0)), "must be ascending"),
    (lambda: SCHEDULES["linear_quadratic"](10, SIGMAS, linear_steps=10), "linear_steps must be between 1 and 9"),
])
def test_schedules_refuse_what_they_cannot_make(call, message):
    with pytest.raises(ValueError, match=message):
        call()
