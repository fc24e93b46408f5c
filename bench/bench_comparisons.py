"""comparisons figures: pair cost ratio (lockstep pair / single image) and LPIPS time at 256x256.

    .venv/bin/python bench/bench_comparisons.py
"""
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from comparisons.config import SamplerConfig, make_pair  # noqa: E402
from comparisons.metrics import LPIPS  # noqa: E402
from comparisons.runner import run_pair, run_single  # noqa: E402
from sampler_lib.models import load_model  # noqa: E402


def median_time(fn, repeats):
    times = []
    for i in range(repeats):
        t = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main():
    torch.set_num_threads(2)
    model = load_model("embedded")
    base = SamplerConfig(sampler="heun", steps=25)
    run_single(model, base, "a red circle", 0)  # warm-up
    single = median_time(lambda i: run_single(model, base, "a red circle", i), 9)
    for pairing in ("discretization", "final-zero", "sigma-min"):
        a, b = make_pair(pairing, base)
        pair = median_time(lambda i: run_pair(model, a, b, "a red circle", i), 9)
        apart = median_time(lambda i: run_pair(model, a, b, "a red circle", i, lockstep=False), 5)
        print(f"{pairing}: lockstep pair {pair:.3f} s, separate arms {apart:.3f} s, single image {single:.3f} s "
              f"-> pair cost ratio {pair / single:.2f} (separate {apart / single:.2f})")
    metric = LPIPS()
    rng = np.random.default_rng(0)
    a, b = (rng.integers(0, 256, (256, 256, 3), dtype=np.uint8) for _ in range(2))
    metric(a, b)
    t = median_time(lambda i: metric(a, b), 11)
    print(f"LPIPS of one 256x256 pair (with the spatial map): median of 11 = {t * 1000:.0f} ms")


if __name__ == "__main__":
    main()
