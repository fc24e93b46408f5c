"""sampler_lib figures for BENCHMARKS.md: round_sigma vs k-diffusion's argmin, sampler overhead per step
(interleaved rounds, wall and CPU time, batch 1 and 32).

    .venv/bin/python bench/bench_sampler_lib.py [--only lms,dpmpp_3m_sde] [--skip-rounding]

Every sampler of sampler_lib.SAMPLERS that k-diffusion 0.1.1 also has is timed against it (dpm_fast and
dpm_adaptive through k-diffusion's sigma_min/sigma_max signature; dpm_adaptive per network call, since the two
step-size controllers may choose different numbers of steps on a batch).
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from comparisons.core.config import STOCHASTIC  # noqa: E402
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
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", default="", help="comma-separated sampler names (default: every shared one)")
    parser.add_argument("--skip-rounding", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    kd, ext = load_kdiffusion()
    names = [n for n in SAMPLERS if hasattr(kd, "sample_" + n)]
    if args.only:
        names = [n for n in names if n in args.only.split(",")]
    if args.skip_rounding:
        overhead(kd, names)
        return
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

    overhead(kd, names)


def kd_call(kd, name, s):
    """k-diffusion's sampler as fn(model, x, sigmas, **kw); its dpm_fast / dpm_adaptive take the schedule's ends."""
    fn = getattr(kd, "sample_" + name)
    if name == "dpm_fast":
        return lambda m, x, _s, **kw: fn(m, x, float(s[-2]), float(s[0]), len(s) - 1, **kw)
    if name == "dpm_adaptive":
        return lambda m, x, _s, **kw: fn(m, x, float(s[-2]), float(s[0]), **kw)
    return fn


def overhead(kd, names, rounds=7, steps=100):
    """Per-step sampler overhead, ours against k-diffusion's, with a trivial model: rounds interleaved (ours,
    theirs, ours, ...) so that drift of the machine falls on both alike; wall and CPU time; batch 1 and 32."""
    trivial = lambda x, sigma: x * 0.5  # noqa: E731
    s = get_sigmas_karras(steps, 0.0292, 14.6146)
    for batch in (1, 32):
        x = torch.randn(batch, 4, 64, 64)
        draw = best_of(lambda: torch.randn_like(x), repeats=50)[1]
        print(f"batch {batch}: one torch.randn_like(x) costs {draw * 1e6:.0f} us; k-diffusion's euler, heun and "
              "dpm_2 draw one every step even without churn (unused), ours draw none")
        for name in names:
            times = {"ours": [], "k-diffusion": []}
            cpu = {"ours": [], "k-diffusion": []}
            for _ in range(rounds):
                for side in ("ours", "k-diffusion"):
                    # Stochastic samplers get the same cheap noise source on both sides: only overhead is timed.
                    gen = torch.Generator().manual_seed(0)
                    noise = lambda sigma, sigma_next, gen=gen: torch.randn(x.shape, generator=gen)  # noqa: E731
                    kw = {"noise_sampler": noise} if name in STOCHASTIC else {}
                    fn = SAMPLERS[name] if side == "ours" else kd_call(kd, name, s)
                    calls = [0]

                    def model(x_, sigma, calls=calls):
                        calls[0] += 1
                        return trivial(x_, sigma)
                    w0, c0 = time.perf_counter(), time.process_time()
                    fn(model, x, s, disable=True, **kw)
                    per = calls[0] if name == "dpm_adaptive" else steps
                    times[side].append((time.perf_counter() - w0) / per)
                    cpu[side].append((time.process_time() - c0) / per)
            o, k = statistics.median(times["ours"]), statistics.median(times["k-diffusion"])
            oc, kc = statistics.median(cpu["ours"]), statistics.median(cpu["k-diffusion"])
            unit = "network call" if name == "dpm_adaptive" else "step"
            print(f"  {name}: per {unit} ours {o * 1e6:.0f} us (CPU {oc * 1e6:.0f}), k-diffusion {k * 1e6:.0f} us "
                  f"(CPU {kc * 1e6:.0f}), ratio {o / k:.2f} (CPU {oc / kc:.2f}); {steps} steps, {rounds} "
                  "interleaved rounds, median")


if __name__ == "__main__":
    main()
