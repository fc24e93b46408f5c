"""What `inspect` costs per pair of image files at 512², 1024² and 2048²: reading both files (decode and metadata),
LPIPS (native up to 1024², box-downscaled above), FLIP, PSNR + SSIM, and the whole measure; median of N runs after a
warm-up, on A1111-style PNGs written by tests/image_fixtures.py.

    .venv/bin/python bench/bench_inspect.py [--repeats 5]
"""
import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from comparisons.core.image_files import load  # noqa: E402
from comparisons.core.metrics import LPIPS  # noqa: E402
from comparisons.workflows.inspect_pair import measure  # noqa: E402
from tests.image_fixtures import picture, save_a1111  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    metric = LPIPS()
    print(f"{'size':>9}  {'read':>7}  {'LPIPS':>7}  {'FLIP':>7}  {'PSNR+SSIM':>9}  {'measure':>8}  LPIPS computed")
    with tempfile.TemporaryDirectory() as d:
        for n in (512, 1024, 2048):
            paths = [save_a1111(Path(d) / f"{s}{n}.png", picture(n, 1, shift=k), scheduler=s)
                     for k, s in ((0, "Karras"), (2, "Beta"))]
            measure(metric, *(load(x) for x in paths))  # warm-up
            runs = []
            for _ in range(args.repeats):
                t = time.perf_counter()
                a, b = (load(x) for x in paths)
                read = time.perf_counter() - t
                t = time.perf_counter()
                result = measure(metric, a, b)
                runs.append({"read": read, **result["seconds"], "measure": time.perf_counter() - t})
            med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
            print(f"{n:>4}x{n:<4}  {med['read']:>6.2f}s  {med['lpips']:>6.2f}s  {med['flip']:>6.2f}s  "
                  f"{med['psnr_ssim']:>8.2f}s  {med['measure']:>7.2f}s  {result['lpips_how']}")


if __name__ == "__main__":
    main()
