"""python -m comparisons {sweep, export, stats}: paired sweeps, CSV export and vote statistics."""
import argparse
import math
import re
import sys
from pathlib import Path

from .config import CUSTOM, MAX_STEPS, PAIRINGS, ConfigError, SamplerConfig, make_pair
from .store import DEFAULT_PATH, ResultsStore, StoreError

MAX_SEEDS = 100_000


class UsageError(ValueError):
    """Bad command-line input; the message says what to change."""


def parse_seeds(text):
    """'0-31' or '0,3,7-9' -> sorted unique seeds."""
    seeds = set()
    for part in str(text).split(","):
        m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not m:
            raise UsageError(f"malformed seed range {text!r}; write e.g. 0-31 or 0,3,7-9")
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if hi < lo:
            raise UsageError(f"seed range {part.strip()!r} runs backwards; write the smaller seed first")
        if hi - lo + 1 + len(seeds) > MAX_SEEDS:
            raise UsageError(f"at most {MAX_SEEDS} seeds per sweep")
        seeds.update(range(lo, hi + 1))
    return sorted(seeds)


def _parser():
    p = argparse.ArgumentParser(prog="python -m comparisons", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("sweep", help="run paired configs over many seeds and record them")
    s.add_argument("--pairing", help=f"a preset: {', '.join(PAIRINGS)}")
    s.add_argument("--a", help="config A as (partial) JSON over the defaults, instead of --pairing")
    s.add_argument("--b", help="config B as (partial) JSON over the defaults, instead of --pairing")
    s.add_argument("--seeds", default="0-31")
    s.add_argument("--steps", type=int, default=7)
    s.add_argument("--sampler", default="heun")
    s.add_argument("--guidance", type=float, default=SamplerConfig.guidance_scale)
    s.add_argument("--prompt", default="a red circle")
    s.add_argument("--model", default="embedded")
    s.add_argument("--results", default=str(DEFAULT_PATH))
    s.add_argument("--reference", action="store_true",
                   help="also measure each arm's LPIPS to a 200-step Heun image of the same seed")
    s.add_argument("--lpips-weights", help="AlexNet trunk file (else $LPIPS_ALEXNET_WEIGHTS, caches)")
    e = sub.add_parser("export", help="write pairs.csv and votes.csv")
    e.add_argument("--results", default=str(DEFAULT_PATH))
    e.add_argument("--out", required=True)
    t = sub.add_parser("stats", help="print the vote statistics per question")
    t.add_argument("--results", default=str(DEFAULT_PATH))
    return p


def sweep_configs(args):
    """(pairing label, config A, config B) from the sweep arguments, validated before any work."""
    if not 1 <= args.steps <= MAX_STEPS:
        raise UsageError(f"--steps must be between 1 and {MAX_STEPS} (got {args.steps})")
    base = SamplerConfig.from_dict({"sampler": args.sampler, "steps": args.steps,
                                    "guidance_scale": args.guidance})
    if args.pairing and (args.a or args.b):
        raise UsageError("give either --pairing or --a/--b, not both")
    if args.pairing:
        return (args.pairing, *make_pair(args.pairing, base))
    if not (args.a and args.b):
        raise UsageError(f"give --pairing ({', '.join(PAIRINGS)}) or both --a and --b")
    return CUSTOM, SamplerConfig.from_json(args.a, base), SamplerConfig.from_json(args.b, base)


def _existing_store(path):
    if not Path(path).is_file():
        raise UsageError(f"no results file at {path}; run a sweep first or pass --results")
    return ResultsStore(path)


def cmd_sweep(args, out):
    from tqdm import tqdm

    from .lab import Lab
    from .stats import mean_interval
    pairing, cfg_a, cfg_b = sweep_configs(args)
    seeds = parse_seeds(args.seeds)
    from sampler_lib.models import load_model
    model = load_model(args.model)
    for cfg in (cfg_a, cfg_b):
        model.condition(args.prompt, cfg.guidance_scale)  # bad prompt words fail before any file is made
    lab = Lab(args.results, lpips_weights=args.lpips_weights, load=lambda name: model)
    lab.lpips()
    rows = []
    for seed in tqdm(seeds, desc=f"{pairing} pairs", unit="pair", file=sys.stderr):
        rows.append(lab.compare(args.prompt, seed, cfg_a, cfg_b, pairing=pairing, model=args.model,
                                reference=args.reference)["metrics"])
    print(f"\n{pairing}: {len(rows)} pairs, {args.prompt!r}, {cfg_a.sampler} {cfg_a.steps} steps, "
          f"model {args.model}, results {args.results}", file=out)
    print(f"A = {cfg_a.to_json()}\nB = {cfg_b.to_json()}", file=out)
    print(f"{'metric':<14}{'mean':>10}{'95% CI':>24}", file=out)
    keys = ["lpips", "psnr", "ssim", "max_abs_diff"] + (["lpips_a_ref", "lpips_b_ref"] if args.reference else [])
    for key in keys:
        mean, lo, hi = mean_interval([r.get(key) for r in rows])
        ci = "" if math.isnan(lo) else f"[{lo:.4g}, {hi:.4g}]"
        print(f"{key:<14}{mean:>10.4g}{ci:>24}", file=out)
    if args.reference:
        closer = sum(r["lpips_a_ref"] < r["lpips_b_ref"] for r in rows)
        print(f"A closer to the 200-step reference in {closer} of {len(rows)} pairs", file=out)


def cmd_export(args, out):
    from .export import export_csv
    paths = export_csv(_existing_store(args.results), args.out)
    print("wrote " + ", ".join(str(p) for p in paths), file=out)


def cmd_stats(args, out):
    from .stats import by_question
    rows = by_question(_existing_store(args.results).votes())
    if not rows:
        print("no votes yet", file=out)
        return
    for r in rows:
        print(f"{r['pairing']}: {r['decisive']} decisive votes (A {r['a_wins']}, B {r['b_wins']}), "
              f"{r['ties']} ties, {r['both_bad']} both bad", file=out)
        print(f"  A = {r['config_a']}\n  B = {r['config_b']}", file=out)
        if r["decisive"]:
            print(f"  A win rate {r['a_win_rate']:.3f}, Wilson 95% [{r['ci_low']:.3f}, {r['ci_high']:.3f}], "
                  f"sign test p = {r['p_value']:.4g}", file=out)
            print(f"  left side chosen {r['left_rate']:.3f} (position bias p = {r['position_p_value']:.4g}); "
                  f"votes still needed for 80% power: {r['votes_still_needed']}", file=out)


def main(argv=None, out=sys.stdout):
    args = _parser().parse_args(argv)
    try:
        {"sweep": cmd_sweep, "export": cmd_export, "stats": cmd_stats}[args.command](args, out)
    except (UsageError, ConfigError, StoreError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; every pair recorded so far is complete", file=sys.stderr)
        return 130
    return 0
