"""The study workflow: plan what a study lacks, compute it chunk by chunk on the engine, store each chunk in
one transaction (docs/ARCHITECTURE.md, "How data flows"). The grid itself is core/grid.py."""
import time
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from sampler_lib import round_sigmas
from sampler_lib.models.guidance import to_pil
from sampler_lib.models.interface import sampling_of

from ..core.config import schedule
from ..core.engine import increments, noise_ceiling, sample_arms
from ..core.grid import StudySpec
from ..core.metrics import max_abs_diff, psnr, rmse, unit_images
from ..core.references import (
    arm_key,
    compute_references,
    noise_from,
    record_arms,
    record_references,
    reference_key,
    stored_arms,
    stored_references,
)
from ..core.visibility import flip_map


@dataclass
class StudyRun:
    spec: StudySpec
    rows_written: int = 0
    samples_run: int = 0
    seconds: float = 0.0
    images: int = 0                     # arm images sampled (samples x distinct arms)
    network_batches: list = field(default_factory=list)
    reference_work: int = 0             # reference item-steps computed (samples x steps)
    reference_seconds: float = 0.0      # the time they took


@dataclass
class Plan:
    """What a study still has to run, derived from the spec and the store."""
    spec: StudySpec
    cells: list
    arms: list        # distinct configs over every cell
    chunks: list      # lists of samples, `batch` at a time
    rows_total: int
    rows_done: int
    _sigmas: dict = field(default=None, repr=False)
    _noise_max: float = field(default=None, repr=False)

    def arm_sigmas(self, model):
        """{arm config: its schedule as sampled}, built once per study (every chunk stores it)."""
        if self._sigmas is None:
            sampling = sampling_of(model)
            self._sigmas = {cfg: round_sigmas(model.denoiser(cfg.quantize), schedule(cfg, sampling)).tolist()
                            for cfg in self.arms}
        return self._sigmas

    def noise_max(self, model):
        """The Brownian noise's range shared by every arm of the study (engine.noise_ceiling), computed once."""
        if self._noise_max is None:
            sampling = sampling_of(model)
            self._noise_max = noise_ceiling(float(sampling.sigma_max), [schedule(c, sampling) for c in self.arms])
        return self._noise_max

    def references_wanted(self, chunk):
        """(sample, config, precision) of every reference a chunk needs."""
        spec, check = self.spec, set(self.spec.samples()[:self.spec.reference_check])
        wanted = [(s, spec.reference, spec.precision) for s in chunk]
        wanted += [(s, spec.paper_reference(), spec.precision) for s in chunk if s in check]
        if spec.precision != "fp32":
            # The noise floor of the precision itself: the first cell's arm A also in fp32.
            wanted += [(s, self.cells[0].a, "fp32") for s in chunk if s in check]
        return wanted


def plan_study(store, spec, batch):
    """Register the study (refused if its name holds another grid) and list the missing samples."""
    cells = spec.cells()
    store.open_study(spec.study_id, spec.name, spec.to_json())
    arms = list(dict.fromkeys(c for cell in cells for c in (cell.a, cell.b)))
    counts = store.study_sample_counts(spec.study_id)
    todo = [s for s in spec.samples() if counts.get((s.prompt, s.seed), 0) < len(cells)]
    total = len(spec.samples()) * len(cells)
    return Plan(spec, cells, arms, [todo[i:i + batch] for i in range(0, len(todo), batch)], total,
                total - len(todo) * len(cells))


@dataclass
class Census:
    """What a study's missing samples need and what of it the store holds: counts, and the work left in item-steps
    (samples x steps, one per item a network step sees) per phase, so progress can be shown honestly."""
    rows_total: int
    rows_done: int
    references: int
    references_cached: int
    reference_work: int
    arms: int
    arms_cached: int
    arm_work: int
    pairs_to_measure: int = 0  # pairs the missing samples' chunks measure (every cell of each), before storing


def census(store, plan):
    """The Census of a plan: one query for the references and one for the arm outputs its chunks need."""
    model, precision = plan.spec.model, plan.spec.precision
    refs = {reference_key(model, s, c, p): c for chunk in plan.chunks for s, c, p in plan.references_wanted(chunk)}
    noise = noise_from(plan.arms)
    arms = {arm_key(model, s, c, precision, noise): c for chunk in plan.chunks for s in chunk for c in plan.arms}
    have_refs, have_arms = set(store.references(refs)), set(store.arm_outputs(arms))
    return Census(plan.rows_total, plan.rows_done, len(refs), len(have_refs),
                  sum(c.steps for k, c in refs.items() if k not in have_refs), len(arms), len(have_arms),
                  sum(c.steps for k, c in arms.items() if k not in have_arms),
                  sum(len(chunk) for chunk in plan.chunks) * len(plan.cells))


@dataclass
class Known:
    """What the store already holds for a chunk: references {(sample, config, precision): Reference} and sampled
    arm outputs {(sample, config): float tensor} at the study's precision."""
    references: dict
    arms: dict


def known_outputs(store, plan, chunk):
    """Known references and arm outputs of a chunk (one query each)."""
    wanted = plan.references_wanted(chunk)
    refs = {}
    for precision in dict.fromkeys(p for *_, p in wanted):
        found = stored_references(store, plan.spec.model, [(s, c) for s, c, p in wanted if p == precision], precision)
        refs.update({(s, c, precision): ref for (s, c), ref in found.items()})
    arms = stored_arms(store, plan.spec.model, [(s, c) for s in chunk for c in plan.arms], plan.spec.precision,
                       noise_from(plan.arms))
    return Known(refs, arms)


def sample_missing(model, plan, chunk, known_arms, progress=None, stats=None):
    """(outputs (len(chunk), len(plan.arms), ...), {(sample, config): output} newly sampled): arms the store holds
    are reused; the rest are sampled, arms lacking the same samples together. `progress(item-steps)` as they go."""
    spec = plan.spec
    # Every call shares the noise range of the whole arm set, so an arm sampled now sees the noise it would have
    # seen beside all the others (and beside those a store already holds).
    noise_max = plan.noise_max(model)
    missing = {}
    for cfg in plan.arms:
        smps = tuple(s for s in chunk if (s, cfg) not in known_arms)
        if smps:
            missing.setdefault(smps, []).append(cfg)
    new = {}
    for smps, cfgs in missing.items():
        out = sample_arms(model, cfgs, list(smps), progress=increments(progress), precision=spec.precision,
                          stats=stats, noise_max=noise_max)
        new.update({(smp, cfg): out[i, k] for i, smp in enumerate(smps) for k, cfg in enumerate(cfgs)})
    have = {**known_arms, **new}
    return torch.stack([torch.stack([have[(s, c)] for c in plan.arms]) for s in chunk]), new


@dataclass
class ChunkResult:
    """Everything one chunk produced, for the one process that writes the store."""
    chunk: list
    new_references: dict  # (sample, config, precision) -> (Reference, seconds per image)
    new_arms: dict        # (sample, config) -> sampled float output, for later studies
    images: list          # PIL image per (sample, arm), sample-major
    sigmas: dict          # arm config -> schedule as sampled
    measured: list        # (cell, sample index, arm A index, arm B index, pair metrics, study row)
    network_batches: list
    reference_work: int = 0          # reference item-steps computed for this chunk
    reference_seconds: float = 0.0   # and the time they took


def compute_chunk(model, lpips_metric, plan, chunk, known, progress=None):
    """Sample and measure one chunk: the references and arm outputs it lacks (`known`: what the store holds), every
    cell. Writes nothing. `progress(phase, amount)` as work is done: phase 'references' or 'arms' in item-steps,
    'measuring' in pairs; each phase's first call (amount 0) says when it starts."""
    spec = plan.spec
    phase = (lambda name: (lambda n: progress(name, n))) if progress else (lambda name: None)  # noqa: E731
    report = progress or (lambda name, n: None)
    new = {}
    wanted = [w for w in plan.references_wanted(chunk) if w not in known.references]
    if wanted:
        report("references", 0)
    started = time.perf_counter()
    for precision in dict.fromkeys(p for *_, p in wanted):
        computed = compute_references(model, spec.model, [(s, c) for s, c, p in wanted if p == precision], precision,
                                      progress=phase("references"))
        new.update({(s, c, precision): v for (s, c), v in computed.items()})
    ref_seconds, ref_work = time.perf_counter() - started, sum(c.steps for _, c, _ in wanted)
    refs = {**known.references, **{k: ref for k, (ref, _) in new.items()}}
    step_stats = {}
    report("arms", 0)
    out, new_arms = sample_missing(model, plan, chunk, known.arms, phase("arms"), step_stats)
    n_s, n_k = out.shape[:2]
    report("measuring", 0)  # decoding, LPIPS to the reference and between the arms, FLIP per pair
    floats = model.decode_float(out.flatten(0, 1))
    images, units = to_pil(floats), unit_images(floats)
    arrays = [np.asarray(im) for im in images]
    at = lambda s, k: s * n_k + k  # noqa: E731
    ref_of = [refs[(smp, spec.reference, spec.precision)] for smp in chunk]
    to_ref = lpips_metric.batch(arrays, [np.asarray(ref_of[i // n_k].image) for i in range(len(arrays))])
    rmse_ref = [rmse(units[i], ref_of[i // n_k].unit) for i in range(len(arrays))]
    faithful = [model.faithful(chunk[i // n_k].prompt, images[i])
                for i in range(len(arrays))]
    index = {cfg: k for k, cfg in enumerate(plan.arms)}
    pairs = [(s, index[c.a], index[c.b], c) for s in range(n_s) for c in plan.cells]
    ab = lpips_metric.batch([arrays[at(s, a)] for s, a, _, _ in pairs], [arrays[at(s, b)] for s, _, b, _ in pairs])
    measured, flips = [], {}
    for (s, a, b, cell), lpips_ab in zip(pairs, ab):
        smp, ia, ib = chunk[s], at(s, a), at(s, b)
        diff = max_abs_diff(arrays[ia], arrays[ib])
        if (ia, ib) not in flips:  # two cells over the same two arms are measured once
            flips[(ia, ib)] = float(flip_map(arrays[ia], arrays[ib]).max()) if diff else 0.0
        metrics = {"lpips": lpips_ab, "psnr": psnr(arrays[ia], arrays[ib]), "max_abs_diff": diff,
                   "lpips_a_ref": to_ref[ia], "lpips_b_ref": to_ref[ib], "flip_max": flips[(ia, ib)]}
        row = dict(question=cell.question, sampler=cell.sampler, steps=cell.steps, prompt=smp.prompt,
                   seed=smp.seed, ref_key=ref_of[s].key, lpips_a_ref=to_ref[ia], lpips_b_ref=to_ref[ib],
                   rmse_a_ref=rmse_ref[ia], rmse_b_ref=rmse_ref[ib], lpips_ab=lpips_ab, max_abs_diff=diff,
                   faithful_a=_bool(faithful[ia]), faithful_b=_bool(faithful[ib]), flip_max=flips[(ia, ib)])
        measured.append((cell, s, a, b, metrics, row))
        report("measuring", 1)
    return ChunkResult(chunk, new, new_arms, images, plan.arm_sigmas(model), measured,
                       step_stats.get("batch_sizes", []), ref_work, ref_seconds)


def store_chunk(store, plan, result):
    """Write one chunk: new references, arm images, then every pair and row in one transaction."""
    spec = plan.spec
    for precision in dict.fromkeys(p for *_, p in result.new_references):
        record_references(store, spec.model, {(s, c): v for (s, c, p), v in result.new_references.items()
                                              if p == precision}, precision)
    record_arms(store, spec.model, result.new_arms, spec.precision, noise_from(plan.arms))
    n_k = len(plan.arms)
    paths = [store.save_image(result.images[s * n_k + k], {
        "model": spec.model, "prompt": smp.prompt, "seed": smp.seed, "config": plan.arms[k].to_json(),
        "study": spec.name, "sigmas": result.sigmas[plan.arms[k]]})
        for s, smp in enumerate(result.chunk) for k in range(n_k)]
    items = []
    for cell, s, a, b, metrics, row in result.measured:
        smp = result.chunk[s]
        pair = dict(pairing=cell.question, model=spec.model, prompt=smp.prompt, seed=smp.seed, config_a=cell.a,
                    config_b=cell.b, image_a=paths[s * n_k + a], image_b=paths[s * n_k + b], metrics=metrics,
                    sigmas_a=result.sigmas[cell.a], sigmas_b=result.sigmas[cell.b], lockstep=True, seconds=0.0)
        items.append((pair, row))
    return store.record_study_chunk(spec.study_id, items)


def run_study(store, model, lpips_metric, spec, batch=64, progress=None, after_chunk=None, on_census=None):
    """Run the samples the store lacks, `batch` samples at a time (each chunk one transaction).

    `on_census(Census)` is called before any work; `progress(phase, amount)` as work proceeds (compute_chunk:
    'references' and 'arms' in item-steps, 'measuring' in pairs), and progress('rows', 0) before each chunk is
    stored, progress('rows', rows stored) after it; `after_chunk(n)` after each stored chunk.
    """
    started = time.perf_counter()
    plan = plan_study(store, spec, batch)
    if on_census:
        on_census(census(store, plan))
    run = StudyRun(spec)
    for n, chunk in enumerate(plan.chunks):
        result = compute_chunk(model, lpips_metric, plan, chunk, known_outputs(store, plan, chunk), progress)
        run.network_batches.extend(result.network_batches)
        run.reference_work += result.reference_work
        run.reference_seconds += result.reference_seconds
        if progress:
            progress("rows", 0)
        written = store_chunk(store, plan, result)
        run.rows_written += written
        run.samples_run += len(chunk)
        run.images += len(chunk) * len(plan.arms)
        if progress:
            progress("rows", written)
        if after_chunk:
            after_chunk(n)
    run.seconds = time.perf_counter() - started
    return run


@dataclass
class LadderChoice:
    """What --reference-steps auto measured: each rung compared with the next on the checked samples (LPIPS),
    the rung chosen, and the reference work it cost (item-steps computed now; 0 when the store held every rung)."""
    ladder: tuple
    tolerance: float
    chosen: int
    differences: list     # (rung, next rung, largest LPIPS, mean LPIPS), in the order measured
    samples: int          # checked samples
    converged: bool       # False: no rung came within the tolerance of the next; the top rung is used
    work: int = 0
    seconds: float = 0.0

    def sentence(self):
        steps = "; ".join(f"{a} vs {b} steps: LPIPS max {mx:.4f} (mean {mean:.4f})"
                          for a, b, mx, mean in self.differences)
        rule = (f"the smallest rung of {', '.join(map(str, self.ladder))} whose reference differs from the next "
                f"rung's by less than LPIPS {self.tolerance:g} on every one of {self.samples} checked samples")
        outcome = (f"{self.chosen} steps" if self.converged else
                   f"none did; the top rung, {self.chosen} steps, is used (its own error is not measured)")
        return f"reference steps chosen as {rule}: {steps} -> {outcome}"


def choose_reference_steps(store, model, lpips_metric, spec, progress=None):
    """(spec with its reference at the chosen rung, LadderChoice) for a spec with a reference_ladder (unchanged
    spec and None without one). Rungs are computed upward on the --reference-check samples, each only when the
    comparison needs it, through the reference cache (so a rerun or a later study computes none again); every
    rung's reference stays stored under its own key. `progress(item-steps)` as they are computed."""
    if not spec.reference_ladder:
        return spec, None
    samples, ladder, precision = spec.samples()[:spec.reference_check], spec.reference_ladder, spec.precision
    started, work, rungs = time.perf_counter(), [0], {}

    def rung(steps):
        if steps not in rungs:
            cfg = spec.rung(steps)
            wanted = [(s, cfg) for s in samples]
            found = stored_references(store, spec.model, wanted, precision)
            computed = compute_references(model, spec.model, [w for w in wanted if w not in found], precision,
                                          progress=progress)
            record_references(store, spec.model, computed, precision)
            work[0] += steps * len(computed)
            refs = {**found, **{k: ref for k, (ref, _) in computed.items()}}
            rungs[steps] = [np.asarray(refs[w].image) for w in wanted]
        return rungs[steps]

    differences, chosen = [], None
    for low, high in zip(ladder, ladder[1:]):
        lp = [float(v) for v in lpips_metric.batch(rung(low), rung(high))]
        differences.append((low, high, max(lp), sum(lp) / len(lp)))
        if max(lp) < spec.reference_tolerance:
            chosen = low
            break
    choice = LadderChoice(ladder, spec.reference_tolerance, chosen or ladder[-1], differences, len(samples),
                          chosen is not None, work[0], time.perf_counter() - started)
    return replace(spec, reference=spec.rung(choice.chosen)), choice


def _bool(value):
    return None if value is None else int(bool(value))


def fill_flip(store, rows):
    """FLIP's verdict for study rows stored before it existed (flip_max NULL): computed from the stored PNGs,
    written back once; the rows are returned with it filled in."""
    from PIL import Image

    missing = {r["pair_id"]: r for r in rows if r.get("flip_max") is None}
    if not missing:
        return rows
    root, found = store.path.parent, {}
    for pair_id, r in missing.items():
        a, b = (np.asarray(Image.open(root / r[k]).convert("RGB")) for k in ("image_a", "image_b"))
        found[pair_id] = float(flip_map(a, b).max()) if max_abs_diff(a, b) else 0.0
    if not store.readonly:
        store.set_flip(found)
    return [{**r, "flip_max": found[r["pair_id"]]} if r["pair_id"] in found else r for r in rows]
