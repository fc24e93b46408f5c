"""Flow path against eps path (#34's benchmarks): (a) the sampler + model-sampling overhead per step, and (b) a
study's cost per image on the embedded flow model against the embedded eps model, same spec.

    .venv/bin/python bench/bench_flow.py [--only overhead|study] [--rounds 7] [--steps 50] [--samples 4]

(a) The same samplers (euler, heun, dpmpp_2m, euler_ancestral, dpmpp_2m_sde), the same latent shape (4, 64, 64) at
batch 1 and 32, the same Karras schedule length, through `sampler_lib.Denoiser` over `EpsSampling` (SD's scaled-linear
alphas) and over `FlowSampling` (shift 3, SD3's), on a trivial network (x * 0.5), so what is timed is the sampler loop,
the model sampling (input scaling, timestep, denoised image; on flow the RF ancestral / SDE formulas) and nothing
else; the noise samplers get the same cheap seeded source on both sides. Rounds interleaved (eps, flow, eps, ...)
so that drift of a shared machine falls on both alike; CPU time (process_time), one torch thread; median per step.

(b) One small study spec (final-zero and discretization, heun and dpmpp_2m at 4 and 10 steps, 25-step references,
--samples samples) run on `embedded` and `embedded-flow` in turn, each round in a fresh results file (nothing
cached), rounds interleaved; cost per image = the study's CPU and wall seconds / (arm images + references). The
network's items and CPU time are counted apart (a wrapper around its forward), so that the CPU outside the network
(sampler, model sampling, schedules, metrics, store) is compared on its own: on a loaded machine the network's CPU
time varies from round to round more than the rest does.
"""
import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from comparisons.core.config import SamplerConfig, schedule  # noqa: E402
from sampler_lib import SAMPLERS, Denoiser, EpsSampling, FlowSampling, scaled_linear_alphas_cumprod  # noqa: E402

SAMPLER_SET = ("euler", "heun", "dpmpp_2m", "euler_ancestral", "dpmpp_2m_sde")
STUDY_QUESTIONS = "final-zero,discretization"


def families():
    """(name, model sampling) of the two paths compared."""
    return [("eps", EpsSampling(scaled_linear_alphas_cumprod())), ("flow", FlowSampling(shift=3.0))]


def overhead(rounds, steps, names=SAMPLER_SET, modes=("off", "paper")):
    """Per-step CPU time of each sampler on each path, trivial network; prints one line per (batch, mode, sampler)
    and returns {(batch, mode, sampler): (eps seconds, flow seconds)}."""
    trivial = lambda x, t, **_: x * 0.5  # noqa: E731
    result = {}
    for batch in (1, 32):
        x0 = torch.randn(batch, 4, 64, 64, generator=torch.Generator().manual_seed(0))
        for mode in modes:
            for name in names:
                cpu = {"eps": [], "flow": []}
                setups = {}
                for family, sampling in families():
                    sigmas = schedule(SamplerConfig(sampler=name, steps=steps, quantize=mode), sampling)
                    setups[family] = (Denoiser(trivial, sampling, quantize=mode), sigmas)
                for _ in range(rounds):
                    for family in ("eps", "flow"):
                        denoiser, sigmas = setups[family]
                        gen = torch.Generator().manual_seed(0)
                        noise = lambda sigma, sigma_next, gen=gen: torch.randn(x0.shape, generator=gen)  # noqa: E731
                        c0 = time.process_time()
                        SAMPLERS[name](denoiser, x0 * sigmas[0], sigmas, disable=True, noise_sampler=noise)
                        cpu[family].append((time.process_time() - c0) / steps)
                eps, flow = statistics.median(cpu["eps"]), statistics.median(cpu["flow"])
                result[(batch, mode, name)] = (eps, flow)
                print(f"  batch {batch:2d} {mode:5s} {name:16s} eps {eps * 1e6:7.0f} us/step  flow {flow * 1e6:7.0f} "
                      f"us/step  flow/eps {flow / eps:.2f}", flush=True)
    return result


def study_cost(rounds, samples, batch=8):
    """CPU and wall seconds per image of one small study on each embedded model, fresh results file per round."""
    from comparisons.core.grid import StudySpec
    from comparisons.core.metrics import LPIPS
    from comparisons.results.store import ResultsStore
    from comparisons.specs import questions_from
    from comparisons.workflows.study import run_study
    from sampler_lib.models import load_model

    models = {name: load_model(name) for name in ("embedded", "embedded-flow")}
    counts = {name: counted(model.network) for name, model in models.items()}
    metric = LPIPS()
    prompts = tuple(models["embedded"].prompts()[:samples])
    reference = SamplerConfig(sampler="heun", steps=25, quantize="off")
    cpu, wall, rest = {n: [] for n in models}, {n: [] for n in models}, {n: [] for n in models}
    images = {}
    with tempfile.TemporaryDirectory() as folder:
        for r in range(rounds):
            for name, model in models.items():
                spec = StudySpec(name="bench-flow", model=name, questions=questions_from(STUDY_QUESTIONS),
                                 samplers=("heun", "dpmpp_2m"), steps=(4, 10), prompts=prompts, seeds=(0,),
                                 reference=reference, reference_check=0)
                store = ResultsStore(Path(folder) / f"{name}-{r}.db")
                counts[name][:] = [0, 0.0]
                c0, w0 = time.process_time(), time.perf_counter()
                run = run_study(store, model, metric, spec, batch=batch)
                c, w = time.process_time() - c0, time.perf_counter() - w0
                items, net = counts[name]
                images[name] = run.images + run.samples_run  # arm images and one reference per sample
                cpu[name].append(c / images[name])
                wall[name].append(w / images[name])
                rest[name].append((c - net) / images[name])
                print(f"  round {r} {name:14s} {images[name]} images ({run.images} arm images, {run.samples_run} "
                      f"references of 25 steps, {run.rows_written} rows): CPU {c:.1f} s (network {net:.1f} s for "
                      f"{items} item-evaluations, the rest {c - net:.1f} s), wall {w:.1f} s", flush=True)
    out = {n: (statistics.median(cpu[n]), statistics.median(wall[n]), statistics.median(rest[n])) for n in models}
    (ec, ew, er), (fc, fw, fr) = out["embedded"], out["embedded-flow"]
    print(f"study cost per image, median of {rounds} interleaved rounds: embedded CPU {ec:.3f} s (wall {ew:.3f}, "
          f"outside the network {er:.4f}), embedded-flow CPU {fc:.3f} s (wall {fw:.3f}, outside the network "
          f"{fr:.4f}); flow/eps CPU {fc / ec:.2f}, wall {fw / ew:.2f}, outside the network {fr / er:.2f}")
    return out


def counted(network):
    """[network item-evaluations, CPU seconds inside the network], kept up to date by a wrapper on its forward."""
    count = [0, 0.0]
    forward = network.forward

    def counting(x, *args, **kwargs):
        c0 = time.process_time()
        out = forward(x, *args, **kwargs)
        count[0] += x.shape[0]
        count[1] += time.process_time() - c0
        return out
    network.forward = counting
    return count


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", choices=("overhead", "study"))
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds of the overhead part")
    parser.add_argument("--steps", type=int, default=50, help="steps per sampler run in the overhead part")
    parser.add_argument("--study-rounds", type=int, default=3)
    parser.add_argument("--samples", type=int, default=4, help="samples (prompts, seed 0) of the study part")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.only != "study":
        print(f"(a) sampler + model-sampling overhead per step, trivial network, {args.steps} steps, {args.rounds} "
              "interleaved rounds, CPU time, one thread, median:")
        result = overhead(args.rounds, args.steps)
        ratios = [flow / eps for eps, flow in result.values()]
        print(f"flow/eps over {len(ratios)} (batch, mode, sampler) cases: median {statistics.median(ratios):.2f}, "
              f"max {max(ratios):.2f}")
    if args.only != "overhead":
        print(f"(b) a study's cost per image ({STUDY_QUESTIONS}; heun, dpmpp_2m; 4, 10 steps; {args.samples} "
              "samples), one thread:")
        study_cost(args.study_rounds, args.samples)


if __name__ == "__main__":
    main()
