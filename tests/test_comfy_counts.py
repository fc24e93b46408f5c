"""ComfyUI's step counts (#35 item 3): ddim_uniform and beta run another number of steps than asked for many step
counts in ComfyUI (ddim_uniform at 30 steps runs 31; beta drops repeated timesteps from 139 steps on). A named
schedule here gives exactly the steps asked (n + 1 sigmas: the engine stacks the arms of a lockstep group, the study
counts steps and network calls by the config's steps), so those counts are refused, the message saying how many
steps ComfyUI runs; every other count equals ComfyUI's sigmas. Checked against ComfyUI's comfy/samplers.py
ddim_scheduler and beta_scheduler, written down below, for n = 1..150 on SD's, a flow model's and Flux's grids."""
import math

import numpy as np
import pytest
import scipy.stats
import torch

from comparisons.core.config import SamplerConfig, schedule
from comparisons.errors import ConfigError
from sampler_lib import SCHEDULES, FlowSampling, flux_mu, scaled_linear_alphas_cumprod

ALPHAS = scaled_linear_alphas_cumprod()
SD = ((1 - ALPHAS) / ALPHAS) ** 0.5  # ascending: 0.0292 .. 14.6146
GRIDS = {"sd": SD, "flow-shift3": FlowSampling(shift=3.0),
         "flux-10000": FlowSampling(mu=flux_mu(4096), timesteps=10000, multiplier=1)}
STEPS = range(1, 151)


def sigmas_of(grid):
    return grid.sigmas if isinstance(grid, FlowSampling) else grid


# --- ComfyUI's comfy/samplers.py, written down (model_sampling.sigmas: the training sigmas, ascending) -------------

def comfy_ddim(sigmas, steps):
    """ddim_scheduler: every (len // steps)-th sigma from index 1, reversed, then 0; where sigmas[1] is 0 (within
    1e-5) the stride is taken over steps + 1 and no 0 is appended."""
    sigs, x = [], 1
    if math.isclose(float(sigmas[x]), 0, abs_tol=0.00001):
        steps += 1
        sigs = []
    else:
        sigs = [0.0]
    ss = max(len(sigmas) // steps, 1)
    while x < len(sigmas):
        sigs += [float(sigmas[x])]
        x += ss
    sigs = sigs[::-1]
    return torch.FloatTensor(sigs)


def comfy_beta(sigmas, steps, alpha=0.6, beta=0.6):
    """beta_scheduler: timesteps rint(Beta ppf(1 - i/steps) * (len - 1)), a timestep equal to the one before dropped,
    then 0."""
    total_timesteps = len(sigmas) - 1
    ts = 1 - np.linspace(0, 1, steps, endpoint=False)
    ts = np.rint(scipy.stats.beta.ppf(ts, alpha, beta) * total_timesteps)
    sigs, last_t = [], -1
    for t in ts:
        if t != last_t:
            sigs += [float(sigmas[int(t)])]
        last_t = t
    sigs += [0.0]
    return torch.FloatTensor(sigs)


# --- counts and values, n = 1..150 ----------------------------------------------------------------------------------

def _check(name, comfy, grid, n, **options):
    runs = len(comfy) - 1
    if runs == n:
        ours = SCHEDULES[name](n, grid, **options)
        assert torch.equal(ours, comfy), (name, n)  # the same training sigmas, bit for bit
        return True
    with pytest.raises(ValueError, match=f"^{name} at {n} steps: ComfyUI runs {runs} steps here") as info:
        SCHEDULES[name](n, grid, **options)
    assert len(str(info.value)) < 400
    return False


@pytest.mark.parametrize("grid", GRIDS.values(), ids=GRIDS.keys())
def test_ddim_uniform_equals_comfyui_or_says_how_many_steps_it_runs(grid):
    sigmas = sigmas_of(grid)
    made = [n for n in STEPS if _check("ddim_uniform", comfy_ddim(sigmas, n), grid, n)]
    assert made and len(made) < len(STEPS)


@pytest.mark.parametrize("grid", GRIDS.values(), ids=GRIDS.keys())
def test_beta_equals_comfyui_or_says_how_many_steps_it_runs(grid):
    sigmas = sigmas_of(grid)
    made = [n for n in STEPS if _check("beta", comfy_beta(sigmas, n), grid, n)]
    assert made[:10] == list(range(1, 11))


def test_the_counts_the_issue_names():
    """SD's 1000 sigmas: ddim_uniform runs another count than asked for 85 of n = 1..100 (31 at 30: stride 33);
    beta first drops a repeat at 139 steps, running 138."""
    differ = [n for n in range(1, 101) if len(comfy_ddim(SD, n)) - 1 != n]
    assert len(differ) == 85 and len(comfy_ddim(SD, 30)) - 1 == 31
    assert [n for n in range(1, 140) if len(comfy_beta(SD, n)) - 1 != n] == [139]
    assert len(comfy_beta(SD, 139)) - 1 == 138
    with pytest.raises(ValueError, match=r"ddim_uniform at 30 steps: ComfyUI runs 31 steps here \(stride 1000 // 30 "
                                         r"= 33 from training timestep 1\).*choose 25, 27 or 37 steps"):
        SCHEDULES["ddim_uniform"](30, SD)
    with pytest.raises(ValueError, match=r"beta at 150 steps: ComfyUI runs 149 steps here.*use 138 steps"):
        SCHEDULES["beta"](150, SD)


@pytest.mark.parametrize("n", [7, 30, 139, 300, 1000])
def test_the_step_counts_a_refusal_offers_run_as_asked_in_comfyui(n):
    """ddim_uniform's suggested counts are ones ComfyUI runs as asked; beta's is the most below n that it does."""
    import re
    try:
        SCHEDULES["ddim_uniform"](n, SD)
    except ValueError as exc:
        offered = [int(k) for k in re.search(r"choose ([\d, or]+) steps", str(exc)).group(1).replace("or", ",")
                   .split(",") if k.strip()]
        assert len(offered) == 3 and all(len(comfy_ddim(SD, k)) - 1 == k for k in offered), offered
    for alpha, beta in ((0.6, 0.6), (2.0, 2.0), (0.3, 0.3)):
        runs = len(comfy_beta(SD, n, alpha, beta)) - 1
        if runs == n:
            continue
        with pytest.raises(ValueError) as info:
            SCHEDULES["beta"](n, SD, alpha=alpha, beta=beta)
        most = int(re.search(r"use (\d+) steps", str(info.value)).group(1))
        assert len(comfy_beta(SD, most, alpha, beta)) - 1 == most
        assert all(beta_runs(m, alpha, beta) != m for m in range(most + 1, n)), (alpha, most)


def beta_runs(n, alpha, beta):
    """comfy_beta's step count on SD's 1000 sigmas, vectorised (its timesteps are monotone: repeats are neighbours)."""
    ts = np.rint(scipy.stats.beta.ppf(1 - np.linspace(0, 1, n, endpoint=False), alpha, beta) * 999)
    return len(np.unique(ts))


def test_ddim_uniform_on_a_grid_starting_at_0_strides_over_one_more_step():
    """ComfyUI's branch for sigmas[1] == 0 (within 1e-5): stride len // (steps + 1) and the schedule ends on
    sigmas[1] in place of an appended 0 (here: 0, the same end within 1e-5)."""
    grid = torch.logspace(-7, 1, 1000)
    for n in STEPS:
        comfy = comfy_ddim(grid, n)
        runs = len(comfy) - 1
        if runs != n:
            with pytest.raises(ValueError, match=f"ComfyUI runs {runs} steps here"):
                SCHEDULES["ddim_uniform"](n, grid)
            continue
        ours = SCHEDULES["ddim_uniform"](n, grid)
        assert torch.equal(ours[:-1], comfy[:-1]) and ours[-1] == 0 and float(comfy[-1]) < 1e-5, n


def test_a_config_refused_for_its_count_names_the_schedule_field():
    with pytest.raises(ConfigError, match="ddim_uniform at 30 steps: ComfyUI runs 31 steps") as info:
        schedule(SamplerConfig(schedule="ddim_uniform", steps=30), SD)
    assert info.value.field == "schedule"
    with pytest.raises(ConfigError, match="beta at 139 steps: ComfyUI runs 138 steps") as info:
        schedule(SamplerConfig(schedule="beta", steps=139), SD)
    assert info.value.field == "schedule"
    # final_zero off asks for steps + 1 intervals without the final 0: ComfyUI's count at steps + 1 is what counts.
    assert len(schedule(SamplerConfig(schedule="ddim_uniform", steps=9, final_zero=False), SD)) == 10
