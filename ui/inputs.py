"""What a person typed into the app, turned into values or a message naming the field to fix.

Text in, never a widget's own number: an empty optional field is None (not 0), and nothing is rounded.
"""
import math

from comparisons.core.config import CUSTOM, MAX_SEED, MAX_STEPS, PAIRINGS, SamplerConfig, make_pair
from comparisons.errors import ConfigError, at_field, clip

UNCONDITIONAL = "(unconditional)"  # the explicit choice of an empty prompt: the model's unconditional branch
# (config field, label shown in the app, kind); kind: int, float, float? (empty = None), choice, bool
CUSTOM_FIELDS = [
    ("sampler", "sampler", "choice"), ("steps", "steps", "int"), ("schedule", "schedule", "choice"),
    ("rho", "rho", "float"), ("sigma_min_rule", "sigma_min rule", "choice"),
    ("final_zero", "keep final zero", "bool"), ("quantize", "quantize", "choice"),
    ("s_churn", "s_churn", "float"), ("s_tmin", "s_tmin", "float"), ("s_tmax", "s_tmax", "float?"),
    ("s_noise", "s_noise", "float"), ("eta", "eta", "float"), ("guidance_scale", "guidance scale", "float"),
    ("beta_alpha", "beta schedule alpha", "float"), ("beta_beta", "beta schedule beta", "float"),
    ("ays_model", "AYS table", "choice"), ("shift", "flow shift", "float?"), ("convention", "convention", "choice"),
]


def parse_number(label, text, integer=False, optional=False, lo=None, hi=None, field=None):
    """A number from a text field; None for an empty optional field. Messages name `label`; a refusal carries
    `field` (default: the label) for the app to mark."""
    try:
        return _number(label, text, integer, optional, lo, hi)
    except ConfigError as exc:
        raise at_field(exc, field or label) from None


def _number(label, text, integer, optional, lo, hi):
    text = "" if text is None else str(text).strip()
    if not text:
        if optional:
            return None
        raise ConfigError(f"{label} is empty; enter a number")
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{label} must be a number (got {clip(repr(text))})") from None
    if not math.isfinite(value):
        raise ConfigError(f"{label} must be a finite number (got {clip(repr(text))})")
    if integer:
        if value != int(value):
            raise ConfigError(f"{label} must be a whole number (got {clip(text)})")
        value = int(value)
    if lo is not None and value < lo:
        raise ConfigError(f"{label} must be ≥ {lo} (got {clip(text)})")
    if hi is not None and value > hi:
        raise ConfigError(f"{label} must be ≤ {hi} (got {clip(text)})")
    return value


def parse_seed(text):
    return parse_number("seed", text, integer=True, lo=0, hi=MAX_SEED)


def parse_prompt(text):
    """The prompt to sample; empty only when the user picked UNCONDITIONAL."""
    text = "" if text is None else str(text)
    if text.strip() == UNCONDITIONAL:
        return ""
    if not text.strip():
        raise at_field(ConfigError(f"the prompt is empty: type one, or pick {UNCONDITIONAL} to sample without a "
                                   "prompt"), "prompt")
    return text


def field_value(raw, kind, label):
    """One custom-panel field as the config wants it."""
    if kind == "int":
        return parse_number(label, raw, integer=True, lo=1, hi=MAX_STEPS)
    if kind == "float":
        return parse_number(label, raw)
    if kind == "float?":
        return parse_number(label, raw, optional=True)
    if kind == "bool":
        return bool(raw)
    if raw in (None, ""):
        raise ConfigError(f"{label} is empty; pick one")
    return raw


def custom_config(name, values):
    """Config `name` ('A' or 'B') from the custom panel's {field: raw value}; messages say which config."""
    data = {}
    for field, label, kind in CUSTOM_FIELDS:
        try:
            data[field] = field_value(values.get(field), kind, label)
        except ConfigError as exc:
            raise at_field(ConfigError(f"{label} of config {name} {str(exc).removeprefix(label + ' ')}"),
                           f"{name}:{field}") from None
    try:
        return SamplerConfig.from_dict(data)
    except ConfigError as exc:
        raise at_field(ConfigError(f"config {name}: {exc}"), f"{name}:{exc.field}" if exc.field else name) from None


def preset_configs(pairing, steps, sampler, guidance):
    """(A, B) of a preset pairing from the top-level fields (text)."""
    if pairing not in PAIRINGS:
        raise at_field(ConfigError(f"unknown pairing {clip(repr(pairing))}; choose one of {', '.join(PAIRINGS)} "
                                   f"or {CUSTOM}"), "pairing")
    steps = parse_number("steps", steps, integer=True, lo=1, hi=MAX_STEPS)
    guidance = parse_number("guidance scale", guidance, field="guidance")
    try:
        return make_pair(pairing, SamplerConfig.from_dict({"steps": steps, "sampler": sampler,
                                                           "guidance_scale": guidance}))
    except ConfigError as exc:
        # Only steps, sampler and guidance come from the form; the preset's own rules are about the step count.
        raise at_field(exc, {"guidance_scale": "guidance", "sampler": "sampler"}.get(exc.field, "steps")) from None
