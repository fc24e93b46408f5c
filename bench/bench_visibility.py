"""FLIP's cost per pair as the app judges it: a 32x32 embedded pair shown at 256x256, and a 512x512 pair 1:1.

    .venv/bin/python bench/bench_visibility.py [--repeats 20]
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from comparisons.core.visibility import flip_map  # noqa: E402


def per_call(a, b, repeats):
    flip_map(a, b)  # warm-up
    started = time.perf_counter()
    for _ in range(repeats):
        flip_map(a, b)
    return (time.perf_counter() - started) / repeats


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=20)
    args = p.parse_args()
    rng = np.random.default_rng(0)
    for size in (32, 512):
        a = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        b = np.clip(a.astype(int) + rng.integers(-3, 4, a.shape), 0, 255).astype(np.uint8)
        print(f"{size}x{size}: {per_call(a, b, args.repeats) * 1000:.1f} ms per pair ({args.repeats} calls)")


if __name__ == "__main__":
    main()
