"""What `campaign create --from-folders` costs per pair of image files, and what memory it holds: N pairs of
ComfyUI-style PNGs (prompt and workflow chunks, as SaveImage writes them) written by tests/image_fixtures.py into two
folders, then `workflows.image_campaign.measure_all` (every pair read and measured: LPIPS, FLIP, PSNR, SSIM) and
`create` (the files copied into a fresh results file, the campaign stored in one transaction), as the CLI runs them.
Prints wall and CPU seconds per pair, the store step, resident memory before and after measuring and the peak.

    .venv/bin/python bench/bench_image_campaign.py --pairs 10 --size 1024     # time per 1024² pair
    .venv/bin/python bench/bench_image_campaign.py --pairs 1000 --size 256    # memory over 1,000 pairs (a few min)

--repo measures another checkout's code (e.g. a `git archive` of an earlier commit) on the same fixtures, so before
and after can be run interleaved on a loaded machine. Not part of the suite (tests/test_image_speed.py guards what
measure_all keeps, in counts, not seconds).
"""
import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
DISTINCT = 16  # distinct pictures; pairs beyond reuse them with other metadata (so every file's bytes differ)


def rss_mib():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


def write_pairs(d, n, size):
    """Folders A/ and B/ with n ComfyUI-style pairs (karras vs beta), B's disc moved 2 px."""
    from tests.image_fixtures import picture, save_comfyui
    for side, scheduler, shift in (("A", "karras", 0), ("B", "beta", 2)):
        (Path(d) / side).mkdir()
        pictures = [picture(size, seed, shift=shift) for seed in range(min(n, DISTINCT))]
        for k in range(n):
            save_comfyui(Path(d) / side / f"ComfyUI_{k:05d}_.png", pictures[k % DISTINCT], scheduler=scheduler,
                         seed=1000 + k)
    return Path(d) / "A", Path(d) / "B"


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, default=10)
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--repo", default=str(HERE), help="the checkout whose comparisons package is measured")
    args = p.parse_args()
    if not 1 <= args.pairs <= 2000:
        p.error("--pairs must be 1-2000")
    sys.path.insert(0, str(HERE))
    sys.path.insert(0, str(Path(args.repo).resolve()))
    import torch
    from tqdm import tqdm

    from comparisons.core.metrics import LPIPS
    from comparisons.results.store import ResultsStore
    from comparisons.workflows import image_campaign
    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        dir_a, dir_b = write_pairs(d, args.pairs, args.size)
        written = time.perf_counter() - t
        sources, _ = image_campaign.pairs_from_folders(dir_a, dir_b)
        metric = LPIPS()
        image_campaign.measure_all(sources[:1], metric)  # warm-up: LPIPS and FLIP's first calls
        start_rss = rss_mib()
        t, cpu = time.perf_counter(), time.process_time()
        with tqdm(total=len(sources), desc="measuring pairs", unit="pair", file=sys.stderr) as bar:
            measured = image_campaign.measure_all(sources, metric, lambda done, total: bar.update())
        wall, cpu = time.perf_counter() - t, time.process_time() - cpu
        after_rss = rss_mib()
        t = time.perf_counter()
        definition = image_campaign.create(ResultsStore(Path(d) / "results.sqlite"), "bench", measured,
                                           ("karras", "beta"), "folders", checks=0.1)
        stored = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    n = args.pairs
    print(f"code: {Path(args.repo).resolve()} · torch threads {torch.get_num_threads()} · load average "
          f"{os.getloadavg()[0]:.1f} (fixtures written in {written:.0f} s)")
    print(f"{n} pairs at {args.size}x{args.size}: measured in {wall:.1f} s ({wall / n:.2f} s a pair wall, "
          f"{cpu / n:.2f} s CPU); stored in {stored:.1f} s ({stored / n:.3f} s a pair; "
          f"{sum(c['pairs'] for c in definition['cells'])} pairs, {definition['n_checks']} checks)")
    print(f"memory: {start_rss:.0f} MiB before measuring → {after_rss:.0f} MiB after "
          f"({(after_rss - start_rss) * 1024 / n:+.1f} KiB a pair); peak {peak:.0f} MiB")
    print(f"LPIPS: {measured[0][1]['lpips_how']}")


if __name__ == "__main__":
    main()
