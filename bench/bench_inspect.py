"""What `inspect` costs per pair of image files at 512², 1024², 2048² and 1088x1920 (portrait SDXL): reading both files
(decode and metadata), LPIPS (native up to 512², box-downscaled above), FLIP (at the display scale the visibility rule
states), PSNR + SSIM (in a thread beside LPIPS and FLIP), and the whole measure; median wall and CPU seconds of N runs
after a warm-up, on A1111-style PNGs written by tests/image_fixtures.py. Also how far LPIPS at its stated scale lies
from LPIPS on every pixel, on the fixture pairs.

    .venv/bin/python bench/bench_inspect.py [--repeats 5] [--sizes 1024,2048,1088x1920] [--repo DIR]

--repo measures another checkout's code (e.g. `git worktree add /tmp/before <commit>`) with these same fixtures, so
before and after can be run interleaved on a loaded machine.
"""
import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent


def fixture_pair(d, size):
    """Two A1111-style PNGs of `size` ('1024' or 'HxW'), B's disc moved 2 px."""
    import numpy as np
    from PIL import Image

    from tests.image_fixtures import picture, save_a1111
    h, w = (int(x) for x in size.split("x")) if "x" in size else (int(size),) * 2
    paths = []
    for k, s in ((0, "Karras"), (2, "Beta")):
        img = np.asarray(picture(max(h, w), 1, shift=k))[:h, :w]
        paths.append(save_a1111(Path(d) / f"{s}{size}.png", Image.fromarray(img), scheduler=s))
    return paths


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--sizes", default="512,1024,2048,1088x1920")
    p.add_argument("--repo", default=str(HERE), help="the checkout whose comparisons package is measured")
    p.add_argument("--no-lpips-check", action="store_true", help="skip LPIPS on every pixel (the scale check)")
    args = p.parse_args()
    sys.path.insert(0, str(HERE))
    sys.path.insert(0, str(Path(args.repo).resolve()))
    import torch

    from comparisons.core.image_files import load
    from comparisons.core.metrics import LPIPS
    from comparisons.workflows.inspect_pair import measure
    metric = LPIPS()
    print(f"code: {Path(args.repo).resolve()} · torch threads {torch.get_num_threads()} · load average "
          f"{os.getloadavg()[0]:.1f} · median of {args.repeats} (wall / CPU seconds)")
    print(f"{'size':>9}  {'read':>5}  {'LPIPS':>5}  {'FLIP':>5}  {'PSNR+SSIM':>9}  {'measure':>7}  {'CPU':>5}  "
          "LPIPS at every pixel → as stated")
    with tempfile.TemporaryDirectory() as d:
        for size in args.sizes.split(","):
            paths = fixture_pair(d, size)
            measure(metric, *(load(x) for x in paths))  # warm-up
            runs = []
            for _ in range(args.repeats):
                t = time.perf_counter()
                a, b = (load(x) for x in paths)
                read = time.perf_counter() - t
                t, cpu = time.perf_counter(), time.process_time()
                result = measure(metric, a, b)
                runs.append({"read": read, **result["seconds"], "measure": time.perf_counter() - t,
                             "cpu": time.process_time() - cpu})
            med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
            check = ""
            if not args.no_lpips_check:
                full = metric(a.rgb, b.rgb)[0]
                stated = result["metrics"]["lpips"]
                check = f"{full:.4f} → {stated:.4f} ({(stated - full) / full:+.1%})"
            print(f"{size:>9}  {med['read']:>5.2f}  {med['lpips']:>5.2f}  {med['flip']:>5.2f}  "
                  f"{med['psnr_ssim']:>9.2f}  {med['measure']:>7.2f}  {med['cpu']:>5.2f}  {check}")
            print(f"{'':>9}  {result['lpips_how']}")


if __name__ == "__main__":
    main()
