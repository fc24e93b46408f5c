"""Study engine figures: images per second end to end (a study's arms sampled, measured by LPIPS and FLIP,
stored) with the sampler's share of the time; a batched study against the same grid run as per-question
sweeps; images per second through the network at batch 32 against batch 1; with --ray, a small study on a local
Ray instance against the local engine.

    .venv/bin/python bench/bench_study.py [--samples 16] [--device cpu|cuda] [--precision fp32|bf16]
        [--compile [--compile-mode reduce-overhead]] [--end-to-end-only --batch 512 --samples 1024]
        [--throughput-only --batch 512] [--ray]
"""
import argparse
import contextlib
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from comparisons.core.config import COMPILE_MODES, SamplerConfig  # noqa: E402
from comparisons.core.engine import Sample, compiled, sample_arms  # noqa: E402
from comparisons.core.grid import StudySpec  # noqa: E402
from comparisons.core.metrics import LPIPS  # noqa: E402
from comparisons.results.store import ResultsStore  # noqa: E402
from comparisons.specs import questions_from  # noqa: E402
from comparisons.workflows.lab import Lab  # noqa: E402
from comparisons.workflows.study import run_study  # noqa: E402
from sampler_lib.models import load_model  # noqa: E402

QUESTIONS = "final-zero,sigma-min-vs-model,discretization"
STEPS = (7, 25)


def study_vs_sweeps(model, metric, n_samples, folder):
    """Wall time of one study against one sweep --reference per (question, steps), same grid."""
    spec = StudySpec(name="bench", model="embedded", questions=questions_from(QUESTIONS), samplers=("heun",),
                     steps=STEPS, prompts=("a red circle",), seeds=tuple(range(n_samples)))
    started = time.perf_counter()
    run = run_study(ResultsStore(folder / "study.db"), model, metric, spec, batch=n_samples)
    study_s = time.perf_counter() - started
    started = time.perf_counter()
    for cell in spec.cells():
        # Today's path: one command per (question, steps), each with its own results file, one pair and
        # one reference per seed.
        lab = Lab(folder / f"sweep-{cell.question}-{cell.steps}.db", load=lambda name: model)
        lab._lpips = metric
        for seed in spec.seeds:
            lab.compare("a red circle", seed, cell.a, cell.b, pairing=cell.question, reference=True)
    sweeps_s = time.perf_counter() - started
    print(f"study: {len(spec.cells())} cells x {n_samples} samples, 200-step references: {study_s:.1f} s "
          f"({run.rows_written} rows)")
    print(f"same grid as {len(spec.cells())} sweep --reference commands: {sweeps_s:.1f} s")
    print(f"study speed-up: {sweeps_s / study_s:.2f}x (target >= 3x)")


def ray_vs_local(model, metric, folder, n_samples=32, batch=8):
    """Wall time of one small study on a local Ray instance (2 CPUs) against the local engine."""
    import os
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    from comparisons.core.config import SamplerConfig
    from comparisons.workflows.distributed import run_study_ray
    spec = StudySpec(name="ray-bench", model="embedded", questions=questions_from(QUESTIONS), samplers=("heun",),
                     steps=STEPS, prompts=("a red circle",), seeds=tuple(range(n_samples)),
                     reference=SamplerConfig(sampler="heun", steps=50, quantize="off"))
    started = time.perf_counter()
    run_study(ResultsStore(folder / "local.db"), model, metric, spec, batch=batch)
    local_s = time.perf_counter() - started
    started = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    try:
        run = run_study_ray(ray, ResultsStore(folder / "ray.db"), spec, batch=batch)
    finally:
        ray.shutdown()
    ray_s = time.perf_counter() - started
    print(f"small study ({len(spec.cells())} cells x {n_samples} samples, 50-step references, shards of {batch}): "
          f"local engine {local_s:.1f} s, Ray with 2 workers {ray_s:.1f} s including ray.init and actor start-up "
          f"({run.rows_written} rows); ratio {ray_s / local_s:.2f} (target <= 1.3)")


def end_to_end(model, metric, n_samples, batch, folder, precision="fp32", steps=25):
    """Images/s of a study end to end: one question (final-zero, Heun `steps` steps, guidance 3: two arms a sample)
    over `n_samples` seeds in chunks of `batch`, every row measured (LPIPS, FLIP, max |Δ|) and stored, references
    computed beforehand (a first study over the same samples) so only arms are timed. The sampler's share is the
    sampling time outside the network (schedules, steps, noise, the engine), of the sampling time and of it all."""
    seeds = tuple(range(n_samples))
    common = dict(model="embedded", samplers=("heun",), steps=(steps,), prompts=("a red circle",), seeds=seeds,
                  reference=SamplerConfig(sampler="heun", steps=steps, quantize="off"), precision=precision)
    store = ResultsStore(folder / "e2e.db")
    run_study(store, model, metric, StudySpec(name="warm", questions=questions_from("sigma-min"), **common),
              batch=batch)  # the references (and the compiled shapes) are ready before the clock starts
    net = model.network
    forward, spent = net.forward, {"network": 0.0, "sampling": 0.0}
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)

    def timed(key, fn):
        def run(*args, **kwargs):
            sync()
            started = time.perf_counter()
            out = fn(*args, **kwargs)
            sync()
            spent[key] += time.perf_counter() - started
            return out
        return run

    import comparisons.workflows.study as study_module
    sampler = study_module.sample_arms
    net.forward, study_module.sample_arms = timed("network", forward), timed("sampling", sampler)
    try:
        started = time.perf_counter()
        run = run_study(store, model, metric, StudySpec(name="timed", questions=questions_from("final-zero"),
                                                        **common), batch=batch)
        sync()
        wall = time.perf_counter() - started
    finally:
        net.forward, study_module.sample_arms = forward, sampler
    images = 2 * run.samples_run
    outside = spent["sampling"] - spent["network"]
    print(f"end to end: {images} images ({run.rows_written} rows, Heun {steps} steps, guidance 3, chunks of {batch}, "
          f"{precision}) in {wall:.2f} s: {images / wall:.1f} images/s; network {spent['network']:.2f} s, sampling "
          f"{spent['sampling']:.2f} s, LPIPS + FLIP + storing {wall - spent['sampling']:.2f} s; sampler overhead "
          f"{outside:.2f} s = {outside / spent['sampling']:.1%} of sampling, {outside / wall:.1%} of the whole")


def throughput(model, batch, rounds, precision, steps=25):
    """Images per second through the network: 25-step Heun, guidance 3, `batch` samples at once."""
    cfg = SamplerConfig(sampler="heun", steps=steps, guidance_scale=3.0)
    samples = [Sample("a red circle", i) for i in range(batch)]
    sample_arms(model, [cfg], samples[:min(batch, 4)], precision=precision)  # warm-up
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    best = 0.0
    for _ in range(rounds):
        started = time.perf_counter()
        sample_arms(model, [cfg], samples, precision=precision)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = max(best, batch / (time.perf_counter() - started))
    return best


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--samples", type=int, default=16)
    p.add_argument("--device", default=None)
    p.add_argument("--precision", default="fp32")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--compile-mode", default=None, choices=COMPILE_MODES,
                   help="torch.compile mode, e.g. reduce-overhead (CUDA graphs)")
    p.add_argument("--throughput-only", action="store_true")
    p.add_argument("--end-to-end-only", action="store_true")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--ray", action="store_true", help="only the Ray-against-local figure")
    args = p.parse_args()
    if (args.device or "cpu") == "cpu":
        torch.set_num_threads(2)
    model = load_model("embedded", device=args.device)
    print(f"device {model.device}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"precision {args.precision}, compile {args.compile}")
    if args.ray:
        with tempfile.TemporaryDirectory() as folder:
            ray_vs_local(model, LPIPS(), Path(folder))
        return
    with compiled(model, mode=args.compile_mode) if args.compile else contextlib.nullcontext():
        if not args.throughput_only:
            metric = LPIPS()
            with tempfile.TemporaryDirectory() as folder:
                end_to_end(model, metric, args.samples, args.batch, Path(folder), args.precision)
            if args.end_to_end_only:
                return
            with tempfile.TemporaryDirectory() as folder:
                study_vs_sweeps(model, metric, args.samples, Path(folder))
        one = throughput(model, 1, 5, args.precision)
        many = throughput(model, args.batch, 3, args.precision)
    print(f"network images/s, 25-step Heun, guidance 3: batch 1 {one:.2f}, batch {args.batch} {many:.2f} "
          f"({many / one:.2f}x; target >= 1.5x at batch 32)")


if __name__ == "__main__":
    main()
