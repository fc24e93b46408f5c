"""The seeded Brownian noise against k-diffusion's BrownianTreeNoiseSampler (torchsde), per step: the noise alone on
a 25-step Karras schedule, and Euler ancestral / DPM++ 2M SDE steps on the embedded model with each noise source
(and k-diffusion's default `randn_like`, which no paired comparison can use: it is not a function of sigma).
Batches of 32 and 64; interleaved rounds, median.

    .venv/bin/python bench/bench_noise.py [--rounds 3]
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from sampler_lib import SAMPLERS, BrownianNoiseSampler, get_sigmas_karras, initial_noise  # noqa: E402
from sampler_lib.models import load_model  # noqa: E402
from tests.conftest import load_kdiffusion  # noqa: E402

STEPS = 25


def timed(fn):
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
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
        for _ in range(args.rounds):
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
        print(f"\nbatch {batch}: per step, median of {args.rounds} interleaved rounds")
        for (what, name), values in rows.items():
            print(f"  {what:<16} {name:<28} {statistics.median(values) * 1000:8.1f} ms")


if __name__ == "__main__":
    main()
