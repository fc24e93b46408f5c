"""Studies: questions x samplers x step counts x (prompt, seed) samples, every cell a paired comparison
of arm A and arm B against a converged reference of the same sample (DESIGN §3b)."""
import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from sampler_lib import round_sigmas
from sampler_lib.models.guidance import to_pil

from .config import PAIRINGS, ConfigError, SamplerConfig, schedule
from .engine import Sample, sample_arms
from .metrics import max_abs_diff, psnr

# The converged image an arm is measured against: many Heun steps, continuous sigmas.
REFERENCE = SamplerConfig(sampler="heun", steps=200, quantize="off")
# The grid sets these; a question that changed them would mislabel its cells.
GRID_FIELDS = ("sampler", "steps", "guidance_scale")


@dataclass(frozen=True)
class Question:
    name: str
    a: tuple  # A's overrides as sorted (field, value) pairs
    b: tuple

    @classmethod
    def of(cls, name, a, b):
        for side, overrides in (("A", a), ("B", b)):
            if not isinstance(overrides, dict):
                raise ConfigError(f"question {name!r}: the {side} overrides must be a JSON object")
            fixed = sorted(set(overrides) & set(GRID_FIELDS))
            if fixed:
                raise ConfigError(f"question {name!r} sets {', '.join(fixed)}, which the study grid sets; "
                                  "use --samplers, --steps and --guidance instead")
            SamplerConfig.from_dict(overrides)  # unknown fields and bad values fail here
        return cls(name, tuple(sorted(a.items())), tuple(sorted(b.items())))

    def configs(self, base):
        return SamplerConfig.from_dict(dict(self.a), base), SamplerConfig.from_dict(dict(self.b), base)


def questions_from(names, path=None):
    """Preset names (comma-separated) and the questions of a JSON file {"name": [A overrides, B overrides]}."""
    questions = []
    for name in [n.strip() for n in (names or "").split(",") if n.strip()]:
        if name not in PAIRINGS:
            raise ConfigError(f"unknown question {name!r}; choose from {', '.join(PAIRINGS)} or pass "
                              "--questions-file")
        questions.append(Question.of(name, *PAIRINGS[name]))
    if path:
        try:
            data = json.loads(open(path).read())
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"cannot read --questions-file {path} ({exc}); write "
                              "{\"name\": [{A overrides}, {B overrides}]}") from exc
        if not isinstance(data, dict) or not data:
            raise ConfigError(f"--questions-file {path} must hold a non-empty JSON object "
                              "{\"name\": [{A overrides}, {B overrides}]}")
        for name, pair in data.items():
            if not (isinstance(pair, list) and len(pair) == 2):
                raise ConfigError(f"question {name!r} in {path} must be a list [A overrides, B overrides]")
            questions.append(Question.of(name, *pair))
    if not questions:
        raise ConfigError(f"no questions; pass --questions (e.g. {', '.join(list(PAIRINGS)[:3])}) or "
                          "--questions-file")
    names = [q.name for q in questions]
    if len(set(names)) != len(names):
        raise ConfigError(f"question names repeat: {', '.join(sorted({n for n in names if names.count(n) > 1}))}")
    return tuple(questions)


@dataclass(frozen=True)
class StudySpec:
    """Everything that decides a study's numbers; its hash is the study's identity."""
    name: str
    model: str
    questions: tuple          # Question, in the order given
    samplers: tuple           # sampler names
    steps: tuple              # step counts
    prompts: tuple            # prompts; every (prompt, seed) is one sample
    seeds: tuple              # seeds
    guidance: float = 3.0     # classifier-free guidance of every arm and of the reference
    reference: SamplerConfig = REFERENCE  # the converged image, guidance_scale = guidance
    precision: str = "fp32"   # fp32 | bf16 (network in bfloat16 autocast)
    reference_check: int = 8  # samples whose reference is also computed in 'paper' mode

    def grid(self):
        d = asdict(self)
        d.pop("name")
        d["reference"] = self.reference.to_dict()
        return d

    def to_json(self):
        return json.dumps({"name": self.name, **self.grid()}, sort_keys=True)

    @property
    def study_id(self):
        return hashlib.sha256(json.dumps(self.grid(), sort_keys=True).encode()).hexdigest()[:16]

    def samples(self):
        return [Sample(p, s) for p in self.prompts for s in self.seeds]

    def cells(self):
        """Every (question, sampler, steps) cell with its two configs."""
        out = []
        for q in self.questions:
            for sampler in self.samplers:
                for steps in self.steps:
                    base = SamplerConfig.from_dict({"sampler": sampler, "steps": steps,
                                                    "guidance_scale": self.guidance})
                    try:
                        a, b = q.configs(base)
                    except ConfigError as exc:
                        raise ConfigError(f"question {q.name!r} at {sampler}, {steps} steps: {exc}") from exc
                    out.append(Cell(q.name, sampler, steps, a, b))
        return out

    def paper_reference(self):
        return SamplerConfig.from_dict({"quantize": "paper"}, self.reference)

    @classmethod
    def from_json(cls, text):
        d = json.loads(text)
        d["questions"] = tuple(Question(q["name"], tuple(map(tuple, q["a"])), tuple(map(tuple, q["b"])))
                               for q in d["questions"])
        d["reference"] = SamplerConfig.from_dict(d["reference"])
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


@dataclass(frozen=True)
class Cell:
    question: str
    sampler: str
    steps: int
    a: SamplerConfig
    b: SamplerConfig

    @property
    def key(self):
        return (self.question, self.sampler, self.steps)


def reference_key(model, sample, cfg, precision):
    """Cache key of a reference image: model, prompt, seed, full config (guidance included), precision."""
    text = json.dumps([model, sample.prompt, sample.seed, cfg.to_json(), precision])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _unit(images):
    """[-1, 1] float images (B, 3, H, W) -> (B, H, W, 3) in [0, 1], clamped as the 8-bit image is."""
    return ((images.float().clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).cpu().numpy()


def rmse(a, b):
    """Root mean square difference of two float images in [0, 1] (before 8-bit rounding)."""
    return float(np.sqrt(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)))


@dataclass
class Reference:
    key: str
    image: object   # PIL
    unit: object    # (H, W, 3) float in [0, 1]


def stored_references(store, model_name, wanted, precision="fp32"):
    """{(sample, config): Reference} of the `wanted` pairs the store already holds."""
    from PIL import Image
    found = {}
    for smp, cfg in wanted:
        row = store.reference(reference_key(model_name, smp, cfg, precision))
        if row is not None:
            image = Image.open(store.path.parent / row["image"]).convert("RGB")
            found[(smp, cfg)] = Reference(row["ref_key"], image, store.load_array(row["output"]))
    return found


def compute_references(model, model_name, wanted, precision="fp32"):
    """{(sample, config): (Reference, seconds per image)} for `wanted`, samples that miss the same
    configs in one batch (an 'off' and a 'paper' reference share it: the mode is per item)."""
    by_cfg = {}
    for smp, cfg in wanted:
        by_cfg.setdefault(cfg, []).append(smp)
    by_samples = {}
    for cfg, smps in by_cfg.items():
        by_samples.setdefault(tuple(smps), []).append(cfg)
    out = {}
    for smps, cfgs in by_samples.items():
        started = time.perf_counter()
        outputs = sample_arms(model, cfgs, list(smps), precision=precision)
        seconds = (time.perf_counter() - started) / (len(smps) * len(cfgs))
        for k, cfg in enumerate(cfgs):
            floats = model.decode_float(outputs[:, k])
            for smp, image, unit in zip(smps, to_pil(floats), _unit(floats)):
                out[(smp, cfg)] = (Reference(reference_key(model_name, smp, cfg, precision), image, unit), seconds)
    return out


def record_references(store, model_name, computed, precision="fp32"):
    """Store computed references (PNG, float array, row); each one at most once."""
    for (smp, cfg), (ref, seconds) in computed.items():
        meta = {"model": model_name, "prompt": smp.prompt, "seed": smp.seed, "config": cfg.to_json(),
                "role": "reference", "precision": precision}
        store.record_reference(ref_key=ref.key, model=model_name, prompt=smp.prompt, seed=smp.seed,
                               config=cfg.to_json(), precision=precision, image=store.save_image(ref.image, meta),
                               output=store.save_array(ref.unit), seconds=seconds)


def ensure_references(store, model, model_name, samples, configs_by_sample, precision="fp32"):
    """{(sample, config): Reference}, computing and storing only what the store lacks.

    The cache key is (model, prompt, seed, config with its guidance, precision): a study, a sweep and
    the app share every reference they have in common.
    """
    wanted = [(smp, cfg) for smp in samples for cfg in configs_by_sample(smp)]
    found = stored_references(store, model_name, wanted, precision)
    computed = compute_references(model, model_name, [w for w in wanted if w not in found], precision)
    record_references(store, model_name, computed, precision)
    return {**found, **{k: ref for k, (ref, _) in computed.items()}}


@dataclass
class StudyRun:
    spec: StudySpec
    rows_written: int = 0
    samples_run: int = 0
    seconds: float = 0.0
    images: int = 0                     # arm images sampled (samples x distinct arms)
    network_batches: list = field(default_factory=list)


@dataclass
class Plan:
    """What a study still has to run, derived from the spec and the store."""
    spec: StudySpec
    cells: list
    arms: list        # distinct configs over every cell
    chunks: list      # lists of samples, `batch` at a time
    rows_total: int
    rows_done: int

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


def known_references(store, plan, chunk):
    """{(sample, config, precision): Reference} of a chunk's references that the store holds."""
    out = {}
    for smp, cfg, precision in plan.references_wanted(chunk):
        found = stored_references(store, plan.spec.model, [(smp, cfg)], precision)
        if found:
            out[(smp, cfg, precision)] = found[(smp, cfg)]
    return out


@dataclass
class ChunkResult:
    """Everything one chunk produced, for the one process that writes the store."""
    chunk: list
    new_references: dict  # (sample, config, precision) -> (Reference, seconds per image)
    images: list          # PIL image per (sample, arm), sample-major
    sigmas: dict          # arm config -> schedule as sampled
    measured: list        # (cell, sample index, arm A index, arm B index, pair metrics, study row)
    network_batches: list


def compute_chunk(model, lpips_metric, plan, chunk, known, progress=None):
    """Sample and measure one chunk: references it lacks, every arm, every cell. Writes nothing."""
    spec = plan.spec
    new = {}
    wanted = [w for w in plan.references_wanted(chunk) if w not in known]
    for precision in dict.fromkeys(p for *_, p in wanted):
        computed = compute_references(model, spec.model, [(s, c) for s, c, p in wanted if p == precision], precision)
        new.update({(s, c, precision): v for (s, c), v in computed.items()})
    refs = {**known, **{k: ref for k, (ref, _) in new.items()}}
    step_stats = {}
    out = sample_arms(model, plan.arms, chunk, progress=progress, precision=spec.precision, stats=step_stats)
    n_s, n_k = out.shape[:2]
    floats = model.decode_float(out.flatten(0, 1))
    images, units = to_pil(floats), _unit(floats)
    arrays = [np.asarray(im) for im in images]
    at = lambda s, k: s * n_k + k  # noqa: E731
    ref_of = [refs[(smp, spec.reference, spec.precision)] for smp in chunk]
    to_ref = lpips_metric.batch(arrays, [np.asarray(ref_of[i // n_k].image) for i in range(len(arrays))])
    rmse_ref = [rmse(units[i], ref_of[i // n_k].unit) for i in range(len(arrays))]
    faithful = [getattr(model, "faithful", lambda p, im: None)(chunk[i // n_k].prompt, images[i])
                for i in range(len(arrays))]
    index = {cfg: k for k, cfg in enumerate(plan.arms)}
    pairs = [(s, index[c.a], index[c.b], c) for s in range(n_s) for c in plan.cells]
    ab = lpips_metric.batch([arrays[at(s, a)] for s, a, _, _ in pairs], [arrays[at(s, b)] for s, _, b, _ in pairs])
    measured = []
    for (s, a, b, cell), lpips_ab in zip(pairs, ab):
        smp, ia, ib = chunk[s], at(s, a), at(s, b)
        diff = max_abs_diff(arrays[ia], arrays[ib])
        metrics = {"lpips": lpips_ab, "psnr": psnr(arrays[ia], arrays[ib]), "max_abs_diff": diff,
                   "lpips_a_ref": to_ref[ia], "lpips_b_ref": to_ref[ib]}
        row = dict(question=cell.question, sampler=cell.sampler, steps=cell.steps, prompt=smp.prompt,
                   seed=smp.seed, ref_key=ref_of[s].key, lpips_a_ref=to_ref[ia], lpips_b_ref=to_ref[ib],
                   rmse_a_ref=rmse_ref[ia], rmse_b_ref=rmse_ref[ib], lpips_ab=lpips_ab, max_abs_diff=diff,
                   faithful_a=_bool(faithful[ia]), faithful_b=_bool(faithful[ib]))
        measured.append((cell, s, a, b, metrics, row))
    return ChunkResult(chunk, new, images, _arm_sigmas(model, plan.arms), measured,
                       step_stats.get("batch_sizes", []))


def store_chunk(store, plan, result):
    """Write one chunk: new references, arm images, then every pair and row in one transaction."""
    spec = plan.spec
    for precision in dict.fromkeys(p for *_, p in result.new_references):
        record_references(store, spec.model, {(s, c): v for (s, c, p), v in result.new_references.items()
                                              if p == precision}, precision)
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


def run_study(store, model, lpips_metric, spec, batch=64, progress=None, after_chunk=None):
    """Run the samples the store lacks, `batch` samples at a time (each chunk one transaction).

    `progress(rows_done, rows_total)` is called as work proceeds; `after_chunk(n)` after each stored chunk.
    """
    started = time.perf_counter()
    plan = plan_study(store, spec, batch)
    done_rows = plan.rows_done
    if progress:
        progress(done_rows, plan.rows_total)
    run = StudyRun(spec)
    per_sample = len(plan.cells)
    for n, chunk in enumerate(plan.chunks):
        def tick(d, t, base=done_rows, rows=len(chunk) * per_sample):
            if progress:
                progress(base + rows * d / t * 0.9, plan.rows_total)

        result = compute_chunk(model, lpips_metric, plan, chunk, known_references(store, plan, chunk), tick)
        run.network_batches.extend(result.network_batches)
        run.rows_written += store_chunk(store, plan, result)
        run.samples_run += len(chunk)
        run.images += len(chunk) * len(plan.arms)
        done_rows += len(chunk) * per_sample
        if progress:
            progress(done_rows, plan.rows_total)
        if after_chunk:
            after_chunk(n)
    run.seconds = time.perf_counter() - started
    return run


def _arm_sigmas(model, arms):
    den = model.denoiser("off")
    lo, hi = float(den.sigma_min), float(den.sigma_max)
    return {cfg: round_sigmas(model.denoiser(cfg.quantize), schedule(cfg, lo, hi)).tolist() for cfg in arms}


def _bool(value):
    return None if value is None else int(bool(value))


def reference_uncertainty(store, model_name, spec, lpips_metric):
    """LPIPS between the reference and the same reference in 'paper' mode, over the checked samples."""
    values = []
    for smp in spec.samples()[:spec.reference_check]:
        rows = [store.reference(reference_key(model_name, smp, cfg, spec.precision))
                for cfg in (spec.reference, spec.paper_reference())]
        if all(rows):
            from PIL import Image
            a, b = (np.asarray(Image.open(store.path.parent / r["image"]).convert("RGB")) for r in rows)
            values.append(lpips_metric.batch([a], [b])[0])
    return _spread(values)


def _spread(values):
    if not values:
        return {"n": 0, "mean": math.nan, "max": math.nan}
    return {"n": len(values), "mean": float(np.mean(values)), "max": float(np.max(values))}


def precision_floor(store, spec, rows, lpips_metric):
    """In bf16: LPIPS and max |Δ| between the first cell's arm A in bf16 and the same arm in fp32."""
    if spec.precision == "fp32":
        return None
    from PIL import Image
    first = spec.cells()[0]
    images = {(r["prompt"], r["seed"]): r["image_a"] for r in rows if (r["question"], r["sampler"], r["steps"])
              == first.key}
    lp, diff = [], []
    for smp in spec.samples()[:spec.reference_check]:
        row = store.reference(reference_key(spec.model, smp, first.a, "fp32"))
        if row is None or (smp.prompt, smp.seed) not in images:
            continue
        a, b = (np.asarray(Image.open(store.path.parent / p).convert("RGB"))
                for p in (images[(smp.prompt, smp.seed)], row["image"]))
        lp.append(lpips_metric.batch([a], [b])[0])
        diff.append(max_abs_diff(a, b))
    return {**_spread(lp), "max_abs_diff": max(diff, default=0)}
