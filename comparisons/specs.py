"""Text into specs: seeds, step counts, lists, questions, campaign cells and whole study specs, as the CLI's
flags and the app's fields give them. Both front ends call this; neither parses on its own."""
import argparse
import json
import re

from sampler_lib import SAMPLERS
from sampler_lib.models.interface import sampling_of

from .core.config import MAX_SEED, MAX_STEPS, PAIRINGS, SCHEDULES, SamplerConfig, schedule
from .core.engine import PRECISIONS
from .core.grid import REFERENCE, REFERENCE_LADDER, REFERENCE_TOLERANCE, STUDY_QUESTIONS, Question, StudySpec
from .errors import CampaignError, ConfigError, UsageError, clip

MAX_SEEDS = 100_000


class OneLineParser(argparse.ArgumentParser):
    """argparse whose refusals are one line (UsageError), not a page of usage."""

    def error(self, message):
        raise UsageError(f"{message} ({self.prog} --help lists the options)")


def parse_seeds(text):
    """'0-31' or '0,3,7-9' -> sorted unique seeds."""
    seeds = set()
    for part in str(text).split(","):
        m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not m:
            raise UsageError(f"malformed seed range {clip(repr(text))}; write e.g. 0-31 or 0,3,7-9")
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if hi > MAX_SEED:
            raise UsageError(f"seeds must be at most {MAX_SEED} (2**63 - 1); got {clip(str(hi))}")
        if hi < lo:
            raise UsageError(f"seed range {part.strip()!r} runs backwards; write the smaller seed first")
        if hi - lo + 1 + len(seeds) > MAX_SEEDS:
            raise UsageError(f"at most {MAX_SEEDS} seeds per sweep")
        seeds.update(range(lo, hi + 1))
    return sorted(seeds)


def parse_steps(text):
    """'4,7,10,25' -> sorted unique step counts, each 1..MAX_STEPS."""
    steps = set()
    for part in str(text).split(","):
        if not re.fullmatch(r"\s*\d+\s*", part):
            raise UsageError(f"malformed --steps {clip(repr(text))}; write step counts such as 4,7,10,25")
        n = int(part)
        if not 1 <= n <= MAX_STEPS:
            raise UsageError(f"--steps must be between 1 and {MAX_STEPS} (got {n})")
        steps.add(n)
    return sorted(steps)


def parse_list(text, flag):
    items = [x.strip() for x in str(text).split(",") if x.strip()]
    if not items:
        raise UsageError(f"{flag} is empty; give a comma-separated list")
    return items


def questions_from(names, path=None):
    """Preset names (comma-separated) and the questions of a JSON file {"name": [A overrides, B overrides]}."""
    questions = []
    known = {**PAIRINGS, **STUDY_QUESTIONS}
    for name in [n.strip() for n in (names or "").split(",") if n.strip()]:
        if name not in known:
            raise ConfigError(f"unknown question {name!r}; choose from {', '.join(known)} or pass "
                              "--questions-file")
        questions.append(Question.of(name, *known[name]))
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



def parse_cells(text):
    """'final-zero:heun:4,discretization:euler:10' -> [(question, sampler, steps)]."""
    cells = []
    for part in [p.strip() for p in str(text).split(",") if p.strip()]:
        m = re.fullmatch(r"([^:]+):([^:]+):(\d+)", part)
        if not m:
            raise CampaignError(f"malformed cell {clip(repr(part))}; write question:sampler:steps, "
                                "e.g. final-zero:heun:4")
        cells.append((m.group(1), m.group(2), int(m.group(3))))
    if not cells:
        raise CampaignError("--cells is empty; give question:sampler:steps cells, comma-separated")
    return cells


def study_spec(model, *, name, model_name, questions="", questions_file=None, samplers="heun", steps="4,7,10,25",
               seeds="0-63", prompts="a red circle", guidance=SamplerConfig.guidance_scale, reference="{}",
               precision="fp32", reference_check=8, schedules="", reference_steps="",
               reference_ladder=",".join(map(str, REFERENCE_LADDER)), reference_tolerance=REFERENCE_TOLERANCE):
    """The StudySpec of textual settings (the CLI's flags, the app's fields), validated before anything is written.

    `reference_steps`: '' (what `reference` says), a step count, or 'auto': the steps are then chosen from
    `reference_ladder` by workflows.study.choose_reference_steps (the spec holds the top rung until then)."""
    questions = questions_from(questions, questions_file)
    samplers = parse_list(samplers, "--samplers")
    unknown = [x for x in samplers if x not in SAMPLERS]
    if unknown:
        raise UsageError(f"unknown sampler {unknown[0]!r}; choose from {', '.join(SAMPLERS)}")
    steps, seeds = parse_steps(steps), parse_seeds(seeds)
    schedules = list(dict.fromkeys(parse_list(schedules, "--schedules"))) if str(schedules or "").strip() else []
    unknown = [x for x in schedules if x not in SCHEDULES]
    if unknown:
        raise UsageError(f"unknown schedule {clip(repr(unknown[0]))}; choose from {', '.join(SCHEDULES)}")
    if prompts.strip() == "all":
        prompts = model.prompts()
        if prompts is None:
            raise UsageError(f"--prompts all needs a model with a fixed vocabulary (an embedded one), not "
                             f"{model_name!r}; list the prompts instead")
    else:
        prompts = list(dict.fromkeys(parse_list(prompts, "--prompts")))
    for prompt in prompts:
        model.condition(prompt, guidance)  # an unknown word or a bad guidance fails here
    if precision not in PRECISIONS:
        raise UsageError(f"unknown --precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if reference_check < 0:
        raise UsageError(f"--reference-check must be >= 0 (got {reference_check})")
    try:
        overrides = json.loads(reference)
    except json.JSONDecodeError as exc:
        raise UsageError(f"--reference is not valid JSON ({exc}); write e.g. '{{\"sampler\": \"heun\", "
                         f"\"steps\": 500}}'") from exc
    if isinstance(overrides, dict) and "guidance_scale" in overrides:
        raise UsageError("--reference sets guidance_scale; the reference always uses --guidance")
    ladder, tolerance = (), 0.0
    steps_text = str(reference_steps or "").strip()
    if steps_text:
        if isinstance(overrides, dict) and "steps" in overrides:
            raise UsageError("--reference sets steps and so does --reference-steps; give one")
        if steps_text == "auto":
            ladder = tuple(parse_steps(reference_ladder))
            if len(ladder) < 2:
                raise UsageError("--reference-ladder needs two step counts or more "
                                 f"(got {clip(str(reference_ladder))})")
            if reference_check < 1:
                raise UsageError("--reference-steps auto measures each rung on the --reference-check samples; "
                                 "pass --reference-check 1 or more")
            tolerance = float(reference_tolerance)
            if not 0 < tolerance < 1:
                raise UsageError(f"--reference-tolerance must be above 0 and below 1 (LPIPS; got {tolerance})")
            steps_text = str(ladder[-1])
        elif not steps_text.isdigit():
            raise UsageError(f"--reference-steps takes a step count or 'auto' (got {clip(repr(steps_text))})")
        if isinstance(overrides, dict):  # anything else is refused below, as without --reference-steps
            overrides = {**overrides, "steps": int(steps_text)}
    base = SamplerConfig.from_dict({"guidance_scale": guidance}, REFERENCE)
    try:
        reference = SamplerConfig.from_dict(overrides, base)
    except ConfigError as exc:
        raise UsageError(f"--reference does not validate: {exc}") from exc
    if not str(name or "").strip():
        raise UsageError("a study needs a name; pass --name")
    spec = StudySpec(name=name.strip(), model=model_name, questions=questions, samplers=tuple(samplers),
                     steps=tuple(steps), prompts=tuple(prompts), seeds=tuple(seeds), guidance=guidance,
                     reference=reference, precision=precision, reference_check=reference_check,
                     schedules=tuple(schedules), reference_ladder=ladder, reference_tolerance=tolerance)
    # Every cell's configs validate (e.g. sigma_min_rule penultimate_steps needs steps >= 2), and every schedule
    # can be built on this model's training sigmas (ddim_uniform at 7 steps cannot), before anything is written.
    sampling = sampling_of(model)
    for cell in spec.cells():
        for cfg in (cell.a, cell.b):
            try:
                schedule(cfg, sampling)
            except ConfigError as exc:
                raise ConfigError(f"question {cell.question!r} at {cell.sampler}, {cell.steps} steps: {exc}") from exc
    return spec
