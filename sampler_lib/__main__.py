"""Print the Karras schedules of the three pairings, continuous and discretized (SD 1.x sigmas, or a flow model's).

    python -m sampler_lib [--steps 7] [--rho 7] [--flow-shift 3]
"""
import argparse

import torch

from . import EpsSampling, FlowSampling, get_sigmas_karras, penultimate_sigma_min
from .schedules import scaled_linear_alphas_cumprod


def pairing_schedules(steps, sigma_min, sigma_max, rho=7.0):
    """The schedules the A/B presets compare, keyed by a short label."""
    p_plus = penultimate_sigma_min(steps + 1, sigma_min, sigma_max, rho)
    p_steps = penultimate_sigma_min(steps, sigma_min, sigma_max, rho) if steps > 1 else sigma_min
    return {
        "karras, final zero kept": get_sigmas_karras(steps, sigma_min, sigma_max, rho),
        "karras, final zero dropped": get_sigmas_karras(steps + 1, sigma_min, sigma_max, rho,
                                                        append_zero=False),
        "sigma_min = penultimate(steps+1)": get_sigmas_karras(steps, p_plus, sigma_max, rho),
        "sigma_min = penultimate(steps)": get_sigmas_karras(steps, p_steps, sigma_max, rho),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=7)
    parser.add_argument("--rho", type=float, default=7.0)
    parser.add_argument("--flow-shift", type=float, default=None,
                        help="a flow model's grid (t/1000, shifted like SD3's) instead of Stable Diffusion's")
    args = parser.parse_args(argv)
    if args.flow_shift is None:
        sampling, what = EpsSampling(scaled_linear_alphas_cumprod()), "Stable Diffusion training sigmas"
    else:
        sampling, what = FlowSampling(shift=args.flow_shift), f"Flow training sigmas (shift {args.flow_shift:g})"
    lo, hi = float(sampling.sigma_min), float(sampling.sigma_max)
    print(f"{what}: {len(sampling.sigmas)} from {lo:.4f} to {hi:.4f}\n")
    fmt = lambda s: ", ".join(f"{v:.4f}" for v in s.tolist())  # noqa: E731
    for label, sigmas in pairing_schedules(args.steps, lo, hi, args.rho).items():
        print(label)
        print("  continuous :", fmt(sigmas))
        print("  discretized:", fmt(sampling.quantize_sigma(sigmas)))


if __name__ == "__main__":
    torch.set_printoptions(precision=4)
    main()
