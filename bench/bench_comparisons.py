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
from comparisons.core.config import SamplerConfig, make_pair  # noqa: E402
from comparisons.core.metrics import LPIPS  # noqa: E402
from comparisons.core.pairs import run_pair, run_single  # noqa: E402
from sampler_lib.models import load_model  # noqa: E402

ROUNDS = 15


def seconds(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main():
    torch.set_num_threads(2)
    model = load_model("embedded")
    base = SamplerConfig(sampler="heun", steps=25)
    pairs = {p: make_pair(p, base) for p in ("discretization", "final-zero", "sigma-min")}
    run_single(model, base, "a red circle", 0)  # warm-up
    run_pair(model, *pairs["discretization"], "a red circle", 0)
    # Interleaved rounds, so a slow moment of the machine hits every variant alike.
    times = {k: [] for k in ["single", *pairs, *(p + " (separate)" for p in pairs)]}
    for i in range(ROUNDS):
        times["single"].append(seconds(lambda: run_single(model, base, "a red circle", i)))
        for p, (a, b) in pairs.items():
            times[p].append(seconds(lambda: run_pair(model, a, b, "a red circle", i)))
            times[p + " (separate)"].append(seconds(lambda: run_pair(model, a, b, "a red circle", i, lockstep=False)))
    single = statistics.median(times["single"])
    print(f"single image, Heun 25 steps, guidance 3: {single:.3f} s (median of {ROUNDS})")
    for p in pairs:
        pair, apart = statistics.median(times[p]), statistics.median(times[p + " (separate)"])
        # Each round's pair over the same round's single image: robust to the machine's drift.
        per_round = sorted(t / s for t, s in zip(times[p], times["single"]))
        print(f"{p}: lockstep pair {pair:.3f} s -> ratio {pair / single:.2f} "
              f"(per round: median {statistics.median(per_round):.2f}, quartiles "
              f"{per_round[len(per_round) // 4]:.2f} - {per_round[3 * len(per_round) // 4]:.2f}); "
              f"arms one after the other {apart:.3f} s -> ratio {apart / single:.2f}")
    metric = LPIPS()
    rng = np.random.default_rng(0)
    a, b = (rng.integers(0, 256, (256, 256, 3), dtype=np.uint8) for _ in range(2))
    metric(a, b)
    t = statistics.median(seconds(lambda: metric(a, b)) for _ in range(11))
    print(f"LPIPS of one 256x256 pair (with the spatial map): median of 11 = {t * 1000:.0f} ms")


if __name__ == "__main__":
    main()
