"""sampler_lib figures for BENCHMARKS.md: round_sigma vs k-diffusion's argmin, sampler overhead per step.

    .venv/bin/python bench/bench_sampler_lib.py
"""
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from sampler_lib import SAMPLERS, DiscreteEpsDenoiser, get_sigmas_karras, scaled_linear_alphas_cumprod  # noqa: E402
from tests.conftest import load_kdiffusion  # noqa: E402


def best_of(fn, repeats=7):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times), statistics.median(times)


def main():
    torch.set_num_threads(1)
    kd, ext = load_kdiffusion()
    ac = scaled_linear_alphas_cumprod()
    ours = DiscreteEpsDenoiser(lambda x, t: torch.zeros_like(x), ac, quantize="paper")
    theirs = ext.DiscreteEpsDDPMDenoiser(lambda x, t: torch.zeros_like(x), ac, quantize=True)
    gen = torch.Generator().manual_seed(0)
    sigmas = torch.exp(torch.empty(200_000).uniform_(-3.6, 2.7, generator=gen))
    assert torch.equal(ours.quantize_sigma(sigmas), theirs.sigmas[theirs.sigma_to_t(sigmas)])
    t_ours, _ = best_of(lambda: ours.quantize_sigma(sigmas))
    t_theirs, _ = best_of(lambda: theirs.sigmas[theirs.sigma_to_t(sigmas)], repeats=3)
    print(f"round 200,000 sigmas: ours {t_ours * 1e3:.2f} ms, k-diffusion argmin {t_theirs * 1e3:.1f} ms, "
          f"speed-up {t_theirs / t_ours:.0f}x")

    trivial = lambda x, sigma: x * 0.5  # noqa: E731
    x = torch.randn(1, 4, 64, 64)
    steps = 200
    s = get_sigmas_karras(steps, 0.0292, 14.6146)
    # Stochastic samplers get the same cheap noise source on both sides, so only overhead is timed.
    gen = torch.Generator().manual_seed(0)
    noise = lambda sigma, sigma_next: torch.randn(x.shape, generator=gen)  # noqa: E731
    for name in ("euler", "heun", "dpm_2", "dpmpp_2m", "euler_ancestral", "dpmpp_2m_sde"):
        kw = {"noise_sampler": noise} if name in ("euler_ancestral", "dpmpp_2m_sde") else {}
        ours_t = best_of(lambda: SAMPLERS[name](trivial, x, s, disable=True, **kw))[1] / steps
        kd_t = best_of(lambda: getattr(kd, "sample_" + name)(trivial, x, s, disable=True, **kw))[1] / steps
        print(f"{name}: per step ours {ours_t * 1e6:.0f} us, k-diffusion {kd_t * 1e6:.0f} us "
              f"(ratio {ours_t / kd_t:.2f}), trivial model, 1x4x64x64, {steps} steps, median of 7")


if __name__ == "__main__":
    main()
