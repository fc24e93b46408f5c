"""Pair cost ratio against the embedded UNet's width: the shipped architecture and narrower ones tried.

    .venv/bin/python bench/bench_pair_cost_by_width.py [--rounds 8]

Timing does not depend on the weights, so each architecture runs with seeded random weights in the
shipped model's place. Rounds are interleaved; a round's ratio is its pair over its own single image.
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from comparisons.core.config import SamplerConfig, make_pair  # noqa: E402
from comparisons.core.pairs import run_pair, run_single  # noqa: E402
from sampler_lib.models import load_model  # noqa: E402
from sampler_lib.models.embedded import architecture  # noqa: E402
from sampler_lib.models.unet import UNet  # noqa: E402

NARROWER = {
    "(16, 32, 64), 1 resnet per level": dict(block_out_channels=(16, 32, 64), norm_num_groups=8),
    "(16, 32, 64), 2 resnets per level": dict(block_out_channels=(16, 32, 64), norm_num_groups=8,
                                              layers_per_block=2),
}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(2)
    model = load_model("embedded")
    shipped = architecture(model.card)
    nets = {"shipped " + str(shipped["block_out_channels"]): model.eps.unet}
    for name, change in NARROWER.items():
        torch.manual_seed(0)
        nets[name] = UNet(**{**shipped, **change}).eval().requires_grad_(False)
    base = SamplerConfig(sampler="heun", steps=25)
    a, b = make_pair("discretization", base)
    single, pair = ({name: [] for name in nets} for _ in range(2))
    for i in range(args.rounds + 1):  # round 0 warms up
        for name, net in nets.items():
            model.eps.unet = net
            t = time.perf_counter()
            run_single(model, base, "a red circle", i)
            t1 = time.perf_counter()
            run_pair(model, a, b, "a red circle", i)
            if i:
                single[name].append(t1 - t)
                pair[name].append(time.perf_counter() - t1)
    for name, net in nets.items():
        ratios = sorted(p / s for p, s in zip(pair[name], single[name]))
        print(f"{name}: {sum(p.numel() for p in net.parameters()) / 1e6:.2f} M parameters, single "
              f"{statistics.median(single[name]):.3f} s, pair {statistics.median(pair[name]):.3f} s, "
              f"ratio of medians {statistics.median(pair[name]) / statistics.median(single[name]):.2f}, "
              f"per-round ratio median {statistics.median(ratios):.2f} (range {ratios[0]:.2f} - {ratios[-1]:.2f})")


if __name__ == "__main__":
    main()
