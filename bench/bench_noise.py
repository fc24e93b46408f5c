"""The seeded Brownian noise against k-diffusion's BrownianTreeNoiseSampler (torchsde) with per-item seeds.

Default: the noise alone at the latent sizes practitioners sample -- 32x4x8x8, 32x4x32x32, 32x4x64x64 (SD 1.5),
8x4x128x128 (SDXL) -- per step over the first 24 steps of a 25-step Karras schedule on SD's sigmas; one torch
thread, CPU time (time.process_time), rounds interleaved (the order alternating each round) so that a loaded
machine weighs on both; median of the rounds.

--samplers: also Euler ancestral / DPM++ 2M SDE steps on the embedded model with each noise source (and
k-diffusion's default `randn_like`, which no paired comparison can use: it is not a function of sigma), batches
32 and 64, wall time, torch's default threads.

    .venv/bin/python bench/bench_noise.py [--rounds 5] [--sizes 32x4x64x64,8x4x128x128] [--samplers]
"""
import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from sampler_lib import (  # noqa: E402
    SAMPLERS,
    BrownianNoiseSampler,
    get_sigmas_karras,
    initial_noise,
    scaled_linear_alphas_cumprod,
)
from tests.conftest import load_kdiffusion  # noqa: E402

STEPS = 25
SIZES = ["32x4x8x8", "32x4x32x32", "32x4x64x64", "8x4x128x128"]


def sd_sigmas():
    a = scaled_linear_alphas_cumprod().double()
    sigmas = ((1 - a) / a) ** 0.5
    return float(sigmas.min()), float(sigmas.max())


def latent_sizes(sizes, rounds):
    """Per step, CPU time, one thread: {size: {source: [seconds per step, one per round]}}."""
    ks, _ = load_kdiffusion()
    torch.set_num_threads(1)
    s_min, s_max = sd_sigmas()
    sigmas = get_sigmas_karras(STEPS, s_min, s_max)
    results = {}
    for size in sizes:
        shape = tuple(int(d) for d in size.split("x"))
        x = torch.zeros(shape)
        seeds = list(range(shape[0]))
        sources = [("ours", lambda: BrownianNoiseSampler(x, seeds, s_max * 1.5)),
                   ("k-diffusion", lambda: ks.BrownianTreeNoiseSampler(x, s_min, s_max, seed=seeds))]
        times = results[size] = {name: [] for name, _ in sources}
        for r in range(rounds):
            for name, make in sources[::1 if r % 2 == 0 else -1]:
                ns = make()
                started = time.process_time()
                for i in range(STEPS - 1):
                    ns(sigmas[i], sigmas[i + 1])
                times[name].append((time.process_time() - started) / (STEPS - 1))
        med = {name: statistics.median(v) for name, v in times.items()}
        print(f"  {size:<12} ours {med['ours'] * 1e3:8.1f} ms   k-diffusion BrownianTree "
              f"{med['k-diffusion'] * 1e3:8.1f} ms   ratio {med['ours'] / med['k-diffusion']:.2f}   (rounds: ours "
              f"{', '.join(f'{t * 1e3:.0f}' for t in times['ours'])}; k-diffusion "
              f"{', '.join(f'{t * 1e3:.0f}' for t in times['k-diffusion'])} ms)", flush=True)
    return results


def timed(fn):
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def samplers_section(rounds):
    from sampler_lib.models import load_model
    ks, _ = load_kdiffusion()
    model = load_model("embedded")
    den = model.denoiser("off")  # the samplers run on it
    sampling = model.model_sampling
    sigmas = get_sigmas_karras(STEPS, float(sampling.sigma_min), float(sampling.sigma_max))
    s_min, s_max = float(sampling.sigma_min), float(sampling.sigma_max)
    print(f"embedded model, latent {model.latent_shape}, {STEPS} Karras steps, {torch.get_num_threads()} threads")
    for batch in (32, 64):
        seeds = list(range(batch))
        x = torch.stack([initial_noise(model.latent_shape, s) for s in seeds]) * sigmas[0]
        extra = model.condition("a red circle", 3.0)
        extra = {k: v.expand(batch, *v.shape[1:]) if isinstance(v, torch.Tensor) and v.shape[0] == 1 else v
                 for k, v in extra.items()}
        sources = {"ours (seeded Brownian)": lambda: BrownianNoiseSampler(x, seeds, s_max * 1.5),
                   "k-diffusion BrownianTree": lambda: ks.BrownianTreeNoiseSampler(x, s_min, s_max, seed=seeds)}
        rows = {}
        for _ in range(rounds):
            for name, make in sources.items():
                ns = make()
                rows.setdefault(("noise alone", name), []).append(
                    timed(lambda ns=ns: [ns(sigmas[i], sigmas[i + 1]) for i in range(STEPS - 1)]) / (STEPS - 1))
            for sampler in ("euler_ancestral", "dpmpp_2m_sde"):
                sig = sigmas[:, None].expand(-1, batch).contiguous()
                with torch.no_grad():
                    rows.setdefault((sampler, "ours, seeded Brownian"), []).append(timed(
                        lambda: SAMPLERS[sampler](den, x, sig, extra_args=extra, disable=True,
                                                  noise_sampler=BrownianNoiseSampler(x, seeds, s_max * 1.5))) / STEPS)
                    for name, make in (("k-diffusion, BrownianTree", sources["k-diffusion BrownianTree"]),
                                       ("k-diffusion, randn_like", None)):
                        kw = {"noise_sampler": make()} if make else {}
                        rows.setdefault((sampler, name), []).append(timed(
                            lambda kw=kw: getattr(ks, f"sample_{sampler}")(den, x, sigmas, extra_args=extra,
                                                                           disable=True, **kw)) / STEPS)
        print(f"\nbatch {batch}: per step, median of {rounds} interleaved rounds")
        for (what, name), values in rows.items():
            print(f"  {what:<16} {name:<28} {statistics.median(values) * 1000:8.1f} ms")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--sizes", default=",".join(SIZES), help="comma-separated BxCxHxW (default: %(default)s)")
    p.add_argument("--samplers", action="store_true", help="also the embedded model's sampler steps")
    args = p.parse_args()
    warnings.filterwarnings("ignore", message="Should have ta>=t0")  # torchsde at sigma_min's float rounding
    threads = torch.get_num_threads()
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"noise alone, per step ({STEPS - 1} steps of a {STEPS}-step Karras schedule, SD sigmas), one torch thread, "
          f"CPU time, median of {args.rounds} interleaved rounds:")
    latent_sizes(args.sizes.split(","), args.rounds)
    if args.samplers:
        torch.set_num_threads(threads)
        samplers_section(args.rounds)


if __name__ == "__main__":
    main()
