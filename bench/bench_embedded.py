"""Embedded model figures: load time, sampling time, colour/shape faithfulness; writes them into the card.

    .venv/bin/python bench/bench_embedded.py [--model embedded|embedded-flow] [--no-card] [--euler] [--speed-only]
        [--threads 2]

Also draws every (colour, shape), Heun 25 steps, guidance 3: docs/embedded_grid.png (the eps model),
sampler_lib/models/embedded_flow/samples.png (the flow model). The eps model samples on the Karras schedule over its
sigmas, the flow model on ComfyUI's 'simple' (linear in sigma on its grid). --euler adds faithfulness at 25 Euler
steps (in the card as quality_euler). --speed-only measures (and writes into the card) only the load and sampling
times; --threads sets torch's threads for them (2, this machine's cores, by default; 1 where other work loads the
cores, as two threads then wait on each other). The load average before and after is printed and kept in the card.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def load_seconds(name="embedded", repeats=5):
    """Cold `load_model(name)` in a fresh interpreter (imports included), median of repeats."""
    code = ("import time; t = time.perf_counter(); from sampler_lib.models import load_model; "
            f"load_model({name!r}); print(time.perf_counter() - t)")
    times = [float(subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                                  check=True).stdout.split()[-1]) for _ in range(repeats)]
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", choices=("embedded", "embedded-flow"), default="embedded")
    parser.add_argument("--no-card", action="store_true", help="do not write the figures into card.json")
    parser.add_argument("--euler", action="store_true", help="also faithfulness at 25 Euler steps")
    parser.add_argument("--speed-only", action="store_true", help="only the load and sampling times")
    parser.add_argument("--threads", type=int, default=2, help="torch threads while sampling")
    args = parser.parse_args()
    import torch

    from sampler_lib.models import load_model
    from sampler_lib.models.quality import faithfulness, generate
    from sampler_lib.models.shapes import COLORS, SHAPES

    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    load = load_seconds(args.model)
    model = load_model(args.model)
    flow = model.model_sampling.kind == "flow"
    generate(model, ["a red circle"], [0], steps=3)  # warm-up
    one = []
    for seed in range(5):
        t = time.perf_counter()
        generate(model, ["a red circle"], [seed], steps=25)
        one.append(time.perf_counter() - t)
    t = time.perf_counter()
    generate(model, ["a blue square"] * 16, list(range(16)), steps=25)
    batch16 = (time.perf_counter() - t) / 16
    load_after = os.getloadavg()[0]
    print(f"load_model({args.model!r}), cold process, median of 5: {load:.2f} s")
    print(f"one image, Heun 25 steps, guidance 3: median {statistics.median(one):.3f} s")
    print(f"per image in a batch of 16: {batch16:.3f} s")
    print(f"{args.threads} torch thread(s); load average {load_before:.1f} before, {load_after:.1f} after")
    speed = {"load_seconds": round(load, 3), "heun25_one_image_seconds": round(statistics.median(one), 3),
             "heun25_per_image_batch16_seconds": round(batch16, 3),
             "machine": f"2 CPU cores, {args.threads} torch thread(s), torch " + torch.__version__,
             "load_average": [round(load_before, 1), round(load_after, 1)]}
    card_path = type(model).weights_dir / "card.json"
    if args.speed_only:
        if not args.no_card:
            card = json.loads(card_path.read_text())
            card["speed"] = speed
            card_path.write_text(json.dumps(card, indent=2) + "\n")
        return
    quality = faithfulness(model, per_colour=16, steps=25)
    euler = faithfulness(model, per_colour=16, steps=25, sampler="euler") if args.euler else None
    print(f"colour faithfulness overall {quality['colour_overall']:.3f}: " +
          ", ".join(f"{c} {v:.2f}" for c, v in quality["colour"].items()))
    print(f"shape faithfulness overall {quality['shape_overall']:.3f}: " +
          ", ".join(f"{s} {v:.2f}" for s, v in quality["shape"].items()))
    if euler:
        print(f"Euler 25: colour {euler['colour_overall']:.3f}, shape {euler['shape_overall']:.3f}: " +
              ", ".join(f"{s} {v:.2f}" for s, v in euler["shape"].items()))

    from PIL import Image
    cells = generate(model, [f"a {c} {s}" for c in COLORS for s in SHAPES],
                     [1000 + i for i in range(len(COLORS) * len(SHAPES))], steps=25)
    grid = Image.new("RGB", (32 * len(SHAPES), 32 * len(COLORS)))
    for i, img in enumerate(cells):
        grid.paste(img, (32 * (i % len(SHAPES)), 32 * (i // len(SHAPES))))
    grid_path = type(model).weights_dir / "samples.png" if flow else ROOT / "docs" / "embedded_grid.png"
    grid_path.parent.mkdir(exist_ok=True)
    grid.resize((grid.width * 4, grid.height * 4), Image.NEAREST).save(grid_path)

    if not args.no_card:
        card = json.loads(card_path.read_text())
        schedule = ("the simple schedule (ComfyUI's; every 40th training sigma from 1, then 0)" if flow else
                    "Karras schedule over the model's sigma range")
        card["quality"] = {
            "method": f"16 samples per colour (shapes cycled), Heun 25 steps, {schedule}, guidance 3; judged by "
                      "sampler_lib.models.shapes.classify: dominant saturated colour by nearest palette hue; shape "
                      "by an empty centre (ring) or area / (pi r_max^2) (circle > 0.71 > square > 0.52 > triangle)",
            **{k: quality[k] for k in ("colour_overall", "shape_overall", "colour", "shape", "samples")},
        }
        if euler:
            card["quality_euler"] = {"method": "as quality, Euler 25 steps",
                                     **{k: euler[k] for k in ("colour_overall", "shape_overall", "colour", "shape",
                                                              "samples")}}
        card["speed"] = speed
        card_path.write_text(json.dumps(card, indent=2) + "\n")


if __name__ == "__main__":
    main()
