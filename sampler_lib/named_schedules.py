"""Every schedule practitioners pick from, by name, on a model's training sigmas: SCHEDULES[name](n, model_sigmas,
**options) gives the n + 1 sigmas of n steps, descending, ending in 0. `model_sigmas` is the model's model sampling
(sampler_lib/model_sampling.py), or its training sigmas, ascending, read as a discrete-time model's. On a flow model
(FlowSampling: sigmas in (0, 1], shifted) the schedules that space training timesteps use its own time maps, as
ComfyUI's do on ModelSamplingDiscreteFlow / ModelSamplingFlux; diffusers_linspace is diffusers'
FlowMatchEulerDiscreteScheduler.set_timesteps; a schedule that means nothing there (align_your_steps, vp, laplace,
diffusers' leading and trailing spacings) is refused saying why.

Sources: Karras et al. 2022 eq. 5 (karras); k-diffusion (exponential, polyexponential, vp); ComfyUI's
comfy/samplers.py (normal, sgm_uniform, simple, ddim_uniform, beta, linear_quadratic, kl_optimal) and
comfy/k_diffusion/sampling.py (laplace: get_sigmas_laplace, Tiankai et al. 2024); Sabour et al. 2024, "Align Your
Steps" (ComfyUI's AlignYourStepsScheduler tables for SD 1.5, SDXL and SVD, to its digits, and its log-linear
interpolation); diffusers' EulerDiscreteScheduler (timestep_spacing linspace, leading, trailing) and
FlowMatchEulerDiscreteScheduler. A schedule that cannot give n distinct steps is refused with a ValueError saying
what to change, never silently shortened or lengthened: where ComfyUI runs another number of steps than asked
(ddim_uniform's stride, beta's repeated timesteps), the message says how many it runs."""
import math

import torch

from .model_sampling import FlowSampling, ModelSampling
from .schedules import (
    get_sigmas_exponential,
    get_sigmas_karras,
    get_sigmas_polyexponential,
    nearest_index,
)

# Align Your Steps' published 10-step noise levels, highest first, as ComfyUI's AlignYourStepsScheduler carries them
# (comfy_extras/nodes_align_your_steps.py NOISE_LEVELS, digit for digit); the last is the model's sigma_min and is
# replaced by 0. SD1 and SDXL are for SD 1.x/2.x and SDXL's discrete eps sigmas (0.0292..14.61), SVD for Stable Video
# Diffusion's continuous EDM sigmas (0.002..700).
AYS = {
    "SD1": [14.6146412293, 6.4745760956, 3.8636745985, 2.6946151520, 1.8841921177, 1.3943805092, 0.9642583904,
            0.6523686016, 0.3977456272, 0.1515232662, 0.0291671582],
    "SDXL": [14.6146412293, 6.3184485287, 3.7681790315, 2.1811480769, 1.3405244945, 0.8620721141, 0.5550693289,
             0.3798540708, 0.2332364134, 0.1114188177, 0.0291671582],
    "SVD": [700.00, 54.5, 15.886, 7.977, 4.248, 1.789, 0.981, 0.403, 0.173, 0.034, 0.002],
}
AYS_FOR = {"SD1": "SD 1.x/2.x eps", "SDXL": "SDXL eps", "SVD": "Stable Video Diffusion's EDM"}
# A schedule whose values changed for the same config (a bug fixed, a table made exact) gets a revision here, so an
# image sampled on its old values is never reused for its new ones (comparisons.core.references keys on it).
# align_your_steps 2: ComfyUI's full digits instead of three decimals (2026-12-03).
REVISIONS = {"align_your_steps": 2}


def _grid(model_sigmas):
    """Training sigmas as an ascending float64 tensor (checked)."""
    if isinstance(model_sigmas, ModelSampling):
        model_sigmas = model_sigmas.sigmas.detach().cpu()
    grid = torch.as_tensor(model_sigmas, dtype=torch.float64).flatten()
    if len(grid) < 2 or not bool(torch.isfinite(grid).all()) or bool((grid <= 0).any()):
        raise ValueError("model_sigmas must hold at least two positive, finite training sigmas")
    if bool((grid[1:] < grid[:-1]).any()):
        raise ValueError("model_sigmas must be ascending (the model's training sigmas, smallest first)")
    return grid


def _flow(model_sigmas):
    """The flow model sampling, or None for a discrete-time model (or bare training sigmas)."""
    return model_sigmas if isinstance(model_sigmas, FlowSampling) else None


def _not_on_flow(name, model_sigmas, why):
    if _flow(model_sigmas) is not None:
        raise ValueError(f"the {name} schedule cannot be built on a flow model's sigmas (0..1]: {why}")


def _steps(n):
    if isinstance(n, bool) or int(n) != n or n < 1:
        raise ValueError(f"steps must be a whole number >= 1 (got {n!r})")
    return int(n)


def _out(sigmas):
    """Descending float32 sigmas with the final 0."""
    sigmas = torch.as_tensor(sigmas, dtype=torch.float64)
    return torch.cat([sigmas, sigmas.new_zeros(1)]).to(torch.float32)


def _ends(grid, sigma_min, sigma_max):
    lo = float(grid[0]) if sigma_min is None else float(sigma_min)
    hi = float(grid[-1]) if sigma_max is None else float(sigma_max)
    return lo, hi


def _distinct(name, n, sigmas, hint):
    """Refuse a schedule whose n steps do not land on n distinct sigmas (two steps on one training timestep)."""
    if len(sigmas) != n or bool((sigmas[1:] >= sigmas[:-1]).any()):
        raise ValueError(f"the {name} schedule cannot make {n} distinct steps on this model's training timesteps; "
                         f"{hint}")
    return sigmas


def karras(n, model_sigmas, sigma_min=None, sigma_max=None, rho=7.0):
    """Karras et al. 2022 eq. 5 between the model's (or the given) sigma_min and sigma_max."""
    lo, hi = _ends(_grid(model_sigmas), sigma_min, sigma_max)
    return get_sigmas_karras(_steps(n), lo, hi, rho)


def exponential(n, model_sigmas, sigma_min=None, sigma_max=None):
    """Evenly spaced in log sigma (k-diffusion)."""
    lo, hi = _ends(_grid(model_sigmas), sigma_min, sigma_max)
    return get_sigmas_exponential(_steps(n), lo, hi)


def polyexponential(n, model_sigmas, sigma_min=None, sigma_max=None, rho=1.0):
    """log sigma on a polynomial ramp of degree rho (k-diffusion)."""
    lo, hi = _ends(_grid(model_sigmas), sigma_min, sigma_max)
    return get_sigmas_polyexponential(_steps(n), lo, hi, rho)


def _sigma_at(grid, t):
    """The sigma at fractional training timestep t: log sigma interpolated between neighbours (ComfyUI)."""
    t = torch.as_tensor(t, dtype=torch.float64).clamp(0, len(grid) - 1)
    low, high = t.floor().long(), t.ceil().long()
    w = t - t.floor()
    return ((1 - w) * grid.log()[low] + w * grid.log()[high]).exp()


def _timestep_of(grid, sigma):
    """The training timestep nearest to sigma in log space (ComfyUI's ModelSamplingDiscrete.timestep)."""
    return float(nearest_index(torch.tensor([float(sigma)], dtype=torch.float64), grid.log())[0])


def _timestep_range(name, grid, sigma_min, sigma_max, flow=None):
    """(timestep of sigma_max, timestep of sigma_min): both must lie on the model's training sigmas. A flow model's
    timestep is continuous (sigma * multiplier, ComfyUI's ModelSamplingDiscreteFlow.timestep)."""
    lo, hi = _ends(grid, sigma_min, sigma_max)
    if hi > float(grid[-1]) * (1 + 1e-6) or lo < float(grid[0]) * (1 - 1e-6):
        raise ValueError(f"the {name} schedule spaces training timesteps: its sigma range must lie within the model's "
                         f"training sigmas {float(grid[0]):.4g}..{float(grid[-1]):.4g} (got {lo:.4g}..{hi:.4g})")
    if flow is not None:
        return tuple(float(flow.timestep(torch.tensor(v, dtype=torch.float64))) for v in (hi, lo))
    return _timestep_of(grid, hi), _timestep_of(grid, lo)


def _sigmas_of(grid, t, flow):
    """The sigmas at timesteps t: log-interpolated training sigmas, or a flow model's shift(t / multiplier)."""
    return _sigma_at(grid, t) if flow is None else flow.sigma(t)


def normal(n, model_sigmas, sigma_min=None, sigma_max=None):
    """Uniform in training timestep from sigma_max's to sigma_min's, both ends included (ComfyUI 'normal')."""
    grid, n, flow = _grid(model_sigmas), _steps(n), _flow(model_sigmas)
    start, end = _timestep_range("normal", grid, sigma_min, sigma_max, flow)
    sigmas = _sigmas_of(grid, torch.linspace(start, end, n, dtype=torch.float64), flow)
    return _out(_distinct("normal", n, sigmas, "use fewer steps or a wider sigma range"))


def sgm_uniform(n, model_sigmas, sigma_min=None, sigma_max=None):
    """Uniform in training timestep over n + 1 points, the last (sigma_min's) replaced by 0 (ComfyUI 'sgm_uniform',
    the SGM/SDXL reference's spacing)."""
    grid, n, flow = _grid(model_sigmas), _steps(n), _flow(model_sigmas)
    start, end = _timestep_range("sgm_uniform", grid, sigma_min, sigma_max, flow)
    sigmas = _sigmas_of(grid, torch.linspace(start, end, n + 1, dtype=torch.float64)[:-1], flow)
    return _out(_distinct("sgm_uniform", n, sigmas, "use fewer steps or a wider sigma range"))


def simple(n, model_sigmas):
    """Every (len/n)-th training sigma from the top (ComfyUI 'simple')."""
    grid, n = _grid(model_sigmas), _steps(n)
    step = len(grid) / n
    picked = grid[[len(grid) - 1 - int(x * step) for x in range(n)]]
    return _out(_distinct("simple", n, picked, f"use at most {len(grid)} steps"))


def _ddim_count(total, n):
    """How many steps ComfyUI's ddim_scheduler runs when asked for n on `total` training sigmas: every
    (total // n)-th timestep from 1 (its stride taken over n + 1 when sigmas[1] is 0 within 1e-5, which then ends
    the schedule in place of an appended 0)."""
    return len(range(1, total, max(total // n, 1)))


def ddim_uniform(n, model_sigmas):
    """Every (len // n)-th training sigma from index 1 upward, reversed, then 0 (ComfyUI 'ddim_uniform'). Where the
    stride gives another number of steps than n, ComfyUI runs that many: refused here, saying how many it runs and
    which step counts nearby it runs as asked."""
    grid, n = _grid(model_sigmas), _steps(n)
    total = len(grid)
    # ComfyUI: a grid whose sigmas[1] is 0 (within 1e-5) is strided over n + 1 and ends on that sigma, no 0 appended.
    zero_first = math.isclose(float(grid[1]), 0, abs_tol=1e-5)
    asked = n + 1 if zero_first else n
    stride = max(total // asked, 1)
    picked = grid[list(range(1, total, stride))].flip(0)
    if zero_first:
        picked = picked[:-1]  # its last sigma, grid[1], is ComfyUI's end (within 1e-5 of 0): _out's 0 stands for it
    if len(picked) != n:
        extra = 1 if zero_first else 0
        fits = [k for k in range(1, total + 1) if _ddim_count(total, k + extra) - extra == k]
        near = sorted(sorted(fits, key=lambda k: (abs(k - n), k))[:3])
        raise ValueError(f"ddim_uniform at {n} steps: ComfyUI runs {len(picked)} steps here (stride {total} // "
                         f"{asked} = {stride} from training timestep 1), and this tool runs exactly the steps asked; "
                         f"choose {', '.join(map(str, near[:-1]))} or {near[-1]} steps, where ComfyUI runs as many "
                         f"as asked" if len(near) > 1 else f"choose {near[0]} steps")
    return _out(picked)


def _beta_timesteps(n, total, alpha, beta):
    """ComfyUI's beta_scheduler timesteps for n steps, before it drops repeats: numpy.rint of the Beta(alpha, beta)
    quantiles at 1 - i/n (numpy.linspace(0, 1, n, endpoint=False)), times the last training timestep."""
    import numpy as np
    from scipy.stats import beta as beta_dist  # the Beta quantile function; imported only for this schedule

    return np.rint(beta_dist.ppf(1 - np.linspace(0, 1, n, endpoint=False), alpha, beta) * (total - 1))


def _beta_most(n, total, alpha, beta):
    """The most steps below n whose Beta quantiles land on distinct training timesteps. Timestep t takes the
    quantiles between the Beta CDF at (t - 0.5) / (total - 1) and at (t + 0.5) / (total - 1) (rint's rounding
    interval), so a step count is checked by binning its quantiles; the count found is checked again with the
    quantile function itself (ComfyUI's formula), stepping down past any count a bin edge misjudged."""
    import numpy as np
    from scipy.stats import beta as beta_dist

    edges = beta_dist.cdf((np.arange(total - 1) + 0.5) / (total - 1), alpha, beta)
    for m in range(n - 1, 0, -1):
        bins = np.searchsorted(edges, 1 - np.arange(m) / m)
        if len(np.unique(bins)) == m and len(np.unique(_beta_timesteps(m, total, alpha, beta))) == m:
            return m
    return 1


def beta(n, model_sigmas, alpha=0.6, beta=0.6):
    """Training timesteps at the quantiles of a Beta(alpha, beta) distribution (Lee et al. 2024, arXiv:2407.12173;
    ComfyUI 'beta'). Where two quantiles land on one timestep ComfyUI drops the repeat and runs fewer steps than
    asked: refused here, saying how many it runs and the most steps below n that land on distinct timesteps."""
    for name, value in (("alpha", alpha), ("beta", beta)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise ValueError(f"beta schedule: {name} must be a number above 0 (got {value!r})")
    grid, n = _grid(model_sigmas), _steps(n)
    t = torch.as_tensor(_beta_timesteps(n, len(grid), alpha, beta)).long()
    runs = len(torch.unique(t))
    if runs != n:
        raise ValueError(f"beta at {n} steps: ComfyUI runs {runs} steps here ({n - runs} of its Beta({alpha:g}, "
                         f"{beta:g}) quantiles repeat a training timestep and it drops them), and "
                         f"this tool runs exactly the steps asked; use {_beta_most(n, len(grid), alpha, beta)} steps "
                         f"(the most below {n} on distinct timesteps), or alpha/beta closer to 1")
    return _out(grid[t])


def linear_quadratic(n, model_sigmas, threshold_noise=0.025, linear_steps=None):
    """Linear then quadratic in sigma / sigma_max (Mochi's schedule; ComfyUI 'linear_quadratic')."""
    grid, n = _grid(model_sigmas), _steps(n)
    if n == 1:
        return torch.tensor([float(grid[-1]), 0.0])
    linear_steps = n // 2 if linear_steps is None else int(linear_steps)
    if not 0 < linear_steps < n:
        raise ValueError(f"linear_quadratic: linear_steps must be between 1 and {n - 1} (got {linear_steps})")
    diff = linear_steps - threshold_noise * n
    quadratic_steps = n - linear_steps
    quad = diff / (linear_steps * quadratic_steps ** 2)
    lin = threshold_noise / linear_steps - 2 * diff / quadratic_steps ** 2
    const = quad * linear_steps ** 2
    ramp = [i * threshold_noise / linear_steps for i in range(linear_steps)]
    ramp += [quad * i ** 2 + lin * i + const for i in range(linear_steps, n)]
    sigmas = (1 - torch.tensor(ramp, dtype=torch.float64)) * float(grid[-1])
    return _out(_distinct("linear_quadratic", n, sigmas, "use another threshold_noise"))


def kl_optimal(n, model_sigmas, sigma_min=None, sigma_max=None):
    """Evenly spaced in arctan(sigma) (the 'KL-optimal' schedule of A1111 PR 15608; ComfyUI 'kl_optimal')."""
    grid, n = _grid(model_sigmas), _steps(n)
    lo, hi = _ends(grid, sigma_min, sigma_max)
    w = torch.arange(n, dtype=torch.float64) / max(n - 1, 1)
    return _out((w * math.atan(lo) + (1 - w) * math.atan(hi)).tan())


def align_your_steps(n, model_sigmas, model_type="SD1"):
    """Align Your Steps' optimized levels for SD 1.5, SDXL or SVD (ComfyUI's tables), interpolated log-linearly to n
    steps; the last level becomes 0. Refused for a model whose training sigmas are not the range its table was
    fitted on."""
    _not_on_flow("align_your_steps", model_sigmas, "its tables were fitted to SD 1.x/2.x and SDXL eps models "
                 f"(sigmas {AYS['SD1'][-1]:.4g}..{AYS['SD1'][0]:.4g}) and SVD's EDM sigmas "
                 f"({AYS['SVD'][-1]:g}..{AYS['SVD'][0]:g}); use simple, normal, beta or sgm_uniform")
    grid, n = _grid(model_sigmas), _steps(n)
    if model_type not in AYS:
        raise ValueError(f"align_your_steps: model_type must be one of {', '.join(AYS)} (got {model_type!r})")
    table = AYS[model_type]
    if not (math.isclose(float(grid[-1]), table[0], rel_tol=0.01) and math.isclose(float(grid[0]), table[-1],
                                                                                   rel_tol=0.05)):
        fits = [k for k, t in AYS.items() if math.isclose(float(grid[-1]), t[0], rel_tol=0.01)
                and math.isclose(float(grid[0]), t[-1], rel_tol=0.05)]
        raise ValueError(f"align_your_steps: its {model_type} table is for {AYS_FOR[model_type]} training sigmas "
                         f"{table[-1]:.4g}..{table[0]:.4g}; this model's are {float(grid[0]):.4g}.."
                         f"{float(grid[-1]):.4g}" + (f": use ays_model {' or '.join(fits)}" if fits else ""))
    levels = torch.tensor(table, dtype=torch.float64)
    if n + 1 != len(levels):
        # Log-linear interpolation over an even grid, as ComfyUI's loglinear_interp (numpy.interp) does.
        xs = torch.linspace(0, 1, len(levels), dtype=torch.float64)
        ys = levels.flip(0).log()
        new = torch.linspace(0, 1, n + 1, dtype=torch.float64)
        idx = torch.searchsorted(xs, new, right=True).clamp(1, len(xs) - 1)
        w = (new - xs[idx - 1]) / (xs[idx] - xs[idx - 1])
        levels = (ys[idx - 1] + w * (ys[idx] - ys[idx - 1])).exp().flip(0)
    return _out(levels[:-1])


LAPLACE_EPSILON = 1e-5  # get_sigmas_laplace's epsilon ("avoid log(0)"): its curve spans e^(mu -+ beta ln 1e5)


def _laplace_points(n, lo, hi, mu, beta):
    """ComfyUI's get_sigmas_laplace: n points x evenly over [0, 1], sigma = exp(mu - beta sign(0.5 - x)
    log(1 - 2|0.5 - x| + 1e-5)) clamped to [sigma_min, sigma_max]. The points x are ComfyUI's float32 linspace
    (at x = 0.5 the epsilon makes the curve jump by 2 beta 1e-5: float32's midpoint, a hair off 0.5 for some n,
    decides the side as in ComfyUI); the rest runs in float64."""
    x = torch.linspace(0, 1, n, dtype=torch.float32).double()
    lmb = mu - beta * torch.sign(0.5 - x) * torch.log(1 - 2 * torch.abs(0.5 - x) + LAPLACE_EPSILON)
    return lmb.exp().clamp(lo, hi)


def laplace(n, model_sigmas, sigma_min=None, sigma_max=None, mu=0.0, beta=0.5):
    """The Laplace schedule of Tiankai et al. 2024 as ComfyUI's get_sigmas_laplace (mu 0, beta 0.5): log sigma at
    the quantiles of a Laplace(mu, beta) distribution, n points from sigma_max to sigma_min (clamped to them; the
    curve itself spans 0.00316..316 around sigma e^mu = 1), then 0. ComfyUI's LaplaceScheduler node returns those n
    points without the 0 (n - 1 steps ending at sigma_min): final_zero off at n - 1 steps here. Where the clamp puts
    two points on one end (many steps, or a narrow range) it is refused, saying the most steps that fit."""
    _not_on_flow("laplace", model_sigmas, "its curve is centred on sigma e^mu = 1, a flow model's sigma_max, so "
                 "half its points would clamp to 1; use karras, exponential or kl_optimal")
    lo, hi = _ends(_grid(model_sigmas), sigma_min, sigma_max)
    n = _steps(n)
    for name, value in (("mu", mu), ("beta", beta)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"laplace schedule: {name} must be a finite number (got {value!r})")
    if beta <= 0 or not 0 < lo < hi:
        raise ValueError(f"laplace schedule: beta must be above 0 and 0 < sigma_min < sigma_max (got beta {beta}, "
                         f"sigma {lo:.4g}..{hi:.4g})")
    sigmas = _laplace_points(n, lo, hi, mu, beta)
    if bool((sigmas[1:] >= sigmas[:-1]).any()):
        most = next(m for m in range(n - 1, 0, -1)
                    if not bool((_laplace_points(m, lo, hi, mu, beta).diff() >= 0).any()))
        raise ValueError(f"the laplace schedule at {n} steps clamps two points to one end of sigma {lo:.4g}..{hi:.4g} "
                         f"(ComfyUI would repeat a sigma: a step of length 0); use at most {most} steps, or a wider "
                         "sigma range")
    return _out(sigmas)


def vp(n, model_sigmas, beta_d=19.9, beta_min=0.1, eps_s=1e-3):
    """The variance-preserving SDE's schedule (Song et al. 2021; k-diffusion get_sigmas_vp)."""
    _not_on_flow("vp", model_sigmas, "it is the variance-preserving SDE's, with sigmas up to about 157")
    _grid(model_sigmas)
    t = torch.linspace(1, eps_s, _steps(n), dtype=torch.float64)
    return _out(torch.sqrt(torch.exp(beta_d * t ** 2 / 2 + beta_min * t) - 1))


def _diffusers(spacing, n, model_sigmas, steps_offset=0):
    """diffusers' EulerDiscreteScheduler timesteps for `spacing`, sigma interpolated linearly between training
    timesteps (its interpolation_type 'linear')."""
    import numpy as np

    if _flow(model_sigmas) is not None:
        if spacing != "linspace":
            _not_on_flow(f"diffusers_{spacing}", model_sigmas, "diffusers' flow-matching scheduler "
                         "(FlowMatchEulerDiscreteScheduler) has no timestep_spacing; its set_timesteps is "
                         "diffusers_linspace")
        return _diffusers_flow(_steps(n), model_sigmas)
    grid, n = _grid(model_sigmas), _steps(n)
    total = len(grid)
    if n > total:
        raise ValueError(f"{spacing} spacing: at most {total} steps (got {n})")
    if spacing == "linspace":
        t = np.linspace(0, total - 1, n, dtype=np.float32)[::-1].copy()
    elif spacing == "leading":
        t = (np.arange(0, n) * (total // n)).round()[::-1].copy().astype(np.float32) + steps_offset
    else:
        t = np.round(np.arange(total, 0, -total / n)).astype(np.float32) - 1
    sigmas = np.interp(t, np.arange(total), grid.numpy())
    return _out(_distinct(f"diffusers {spacing}", n, torch.as_tensor(sigmas), "use fewer steps"))


def _diffusers_flow(n, flow):
    """diffusers' FlowMatchEulerDiscreteScheduler.set_timesteps(n): n timesteps evenly from its sigma_max's to its
    sigma_min's (times T), over T, shifted. Its training sigmas are shifted already (so the small end is shifted
    twice) unless it shifts by resolution (use_dynamic_shifting, Flux: mu), where they are t / T."""
    import numpy as np

    total = len(flow.sigmas)
    low = 1 / total if flow.mu is not None else float(flow.sigmas[0])
    t = np.linspace(float(flow.sigmas[-1]) * total, low * total, n) / total
    return _out(_distinct("diffusers_linspace", n, flow.shifted(torch.as_tensor(t)),
                          "use fewer steps"))


def diffusers_linspace(n, model_sigmas):
    """diffusers timestep_spacing='linspace': n timesteps evenly from the last training timestep to 0 (on a flow
    model: FlowMatchEulerDiscreteScheduler.set_timesteps)."""
    return _diffusers("linspace", n, model_sigmas)


def diffusers_leading(n, model_sigmas, steps_offset=1):
    """diffusers timestep_spacing='leading' (SD 1.x's default, steps_offset 1): every (T // n)-th timestep."""
    return _diffusers("leading", n, model_sigmas, steps_offset)


def diffusers_trailing(n, model_sigmas):
    """diffusers timestep_spacing='trailing': timesteps counted back from the last one (Lin et al. 2024)."""
    return _diffusers("trailing", n, model_sigmas)


SCHEDULES = {
    "karras": karras, "exponential": exponential, "polyexponential": polyexponential, "normal": normal,
    "sgm_uniform": sgm_uniform, "simple": simple, "ddim_uniform": ddim_uniform, "beta": beta,
    "linear_quadratic": linear_quadratic, "kl_optimal": kl_optimal, "align_your_steps": align_your_steps, "vp": vp,
    "diffusers_linspace": diffusers_linspace, "diffusers_leading": diffusers_leading,
    "diffusers_trailing": diffusers_trailing, "laplace": laplace,
}
# Schedules whose every sigma is a training sigma: 'paper' rounding leaves them unchanged.
ON_TRAINING_SIGMAS = ("simple", "ddim_uniform", "beta")
