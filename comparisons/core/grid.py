"""A study's grid: questions x samplers x step counts x (prompt, seed) samples, its cells and its identity.

Every cell is a paired comparison of arm A and arm B against a converged reference of the same sample
(docs/ARCHITECTURE.md, "How data flows").
"""
import hashlib
import json
from dataclasses import asdict, dataclass, replace

from sampler_lib import REGISTRY

from ..errors import ConfigError
from .config import SCHEDULES, SamplerConfig
from .engine import Sample

# The converged image an arm is measured against: many Heun steps, continuous sigmas.
REFERENCE = SamplerConfig(sampler="heun", steps=200, quantize="off")
# --reference-steps auto: the rungs tried, smallest first; the first rung whose reference differs from the next
# rung's by less than REFERENCE_TOLERANCE (LPIPS, the largest over the --reference-check samples) is the reference.
# The tolerance is a tenth of analysis.stats.EQUIVALENCE_MARGIN (0.01, the smallest effect a verdict resolves): a
# reference off by d moves each arm's distance to it by at most d, so A's minus B's by at most 2d; Heun being
# second order, a rung's own error is about 4/3 of its distance to the doubled rung, so the verdicts' mean
# difference moves by at most 2 * 4/3 * 0.001 < 0.003, under a third of the margin (tests check the tie).
REFERENCE_LADDER = (25, 50, 100, 200)
REFERENCE_TOLERANCE = 0.001
# The grid sets these; a question that changed them would mislabel its cells.
GRID_FIELDS = ("sampler", "steps", "guidance_scale")
# Study-only questions. `schedule`: Karras (A) against each schedule of --schedules (B). `sampler`: the grid's
# sampler at N steps (A) against Euler at N times A's network calls a step (B: heun 2N, heunpp2 3N), the calls a
# practitioner pays (equal but for A's cheaper last steps: heun's into sigma 0 takes one call).
STUDY_QUESTIONS = {"schedule": ({"schedule": "karras"}, {}), "sampler": ({}, {})}
# Network calls per step of the samplers that make more than one (sampler_lib.registry declares them).
SECOND_ORDER = {name: spec.calls_per_step for name, spec in REGISTRY.items() if (spec.calls_per_step or 1) > 1}


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
    schedules: tuple = ()     # --schedules: every question asked under each (cells named question@schedule)
    reference_ladder: tuple = ()    # --reference-steps auto: the rungs tried (reference.steps is the one chosen)
    reference_tolerance: float = 0.0  # ... and the LPIPS a rung may differ from the next by

    def grid(self):
        d = asdict(self)
        d.pop("name")
        # As stored before the later fields: a config's JSON (later fields only when set), no empty --schedules;
        # so every study stored before keeps its identity.
        d["reference"] = json.loads(self.reference.to_json())
        if not self.schedules:
            d.pop("schedules")
        if not self.reference_ladder:
            d.pop("reference_ladder")
            d.pop("reference_tolerance")
        return d

    def to_json(self):
        return json.dumps({"name": self.name, **self.grid()}, sort_keys=True)

    @property
    def study_id(self):
        return hashlib.sha256(json.dumps(self.grid(), sort_keys=True).encode()).hexdigest()[:16]

    def samples(self):
        return [Sample(p, s) for p in self.prompts for s in self.seeds]

    def cells(self):
        """Every (question, sampler, steps) cell with its two configs; with --schedules, every question under each
        schedule (the schedule set on each side the question leaves it to), named question@schedule."""
        if "schedule" in [q.name for q in self.questions] and not self.schedules:
            raise ConfigError("question schedule sets Karras against each schedule of --schedules; pass "
                              f"--schedules (e.g. beta,normal; any of {', '.join(SCHEDULES)})")
        out = []
        for q in self.questions:
            for schedule in self.schedules or (None,):
                if q.name == "schedule" and schedule == "karras":
                    continue  # Karras against itself answers nothing
                name = q.name if schedule is None else f"{q.name}@{schedule}"
                for sampler in self.samplers:
                    for steps in self.steps:
                        try:
                            a, b = self._arms(q, schedule, sampler, steps)
                        except ConfigError as exc:
                            raise ConfigError(f"question {name!r} at {sampler}, {steps} steps: {exc}") from exc
                        out.append(Cell(name, sampler, steps, a, b))
        return out

    def _arms(self, q, schedule, sampler, steps):
        base = {"sampler": sampler, "steps": steps, "guidance_scale": self.guidance}
        if schedule is not None:
            base["schedule"] = schedule  # a side that sets its own schedule (the schedule question's A) keeps it
        a, b = q.configs(SamplerConfig.from_dict(base))
        if q.name == "sampler" and q.a == () and q.b == ():
            if sampler not in SECOND_ORDER:
                why = ("picks its own steps" if REGISTRY[sampler].calls_per_step is None
                       else "makes one network call a step")
                raise ConfigError(f"the sampler question sets a sampler of several network calls a step "
                                  f"({', '.join(SECOND_ORDER)}) at N steps against euler at N times its calls; "
                                  f"{sampler} {why}")
            b = replace(a, sampler="euler", steps=steps * SECOND_ORDER[sampler])
        return a, b

    def paper_reference(self):
        return SamplerConfig.from_dict({"quantize": "paper"}, self.reference)

    def rung(self, steps):
        """The reference at `steps` steps (a rung of reference_ladder)."""
        return replace(self.reference, steps=steps)

    @classmethod
    def from_json(cls, text):
        d = json.loads(text)
        d["questions"] = tuple(Question(q["name"], tuple(map(tuple, q["a"])), tuple(map(tuple, q["b"])))
                               for q in d["questions"])
        d["reference"] = SamplerConfig.from_dict(d["reference"])
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})  # absent fields: defaults


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


def cell_key(row):
    """The (question, sampler, steps) key of a study row, a campaign cell or a vote: what Cell.key is."""
    return (row["question"], row["sampler"], row["steps"])
