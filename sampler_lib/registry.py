"""The one registry of samplers: each sampler declared once, next to its function, with the facts the menus, the
config's option sets and the study's network-call counts derive from (tests/test_registry.py counts the calls)."""
from collections.abc import Callable
from dataclasses import dataclass, replace

GROUPS = ("single-step", "multistep", "own steps", "adds noise")  # menu order
FLOW_FORMS = ("denoised", "rf")  # or "refused: <why>"


@dataclass(frozen=True)
class SamplerSpec:
    name: str
    fn: Callable
    group: str
    note: str
    calls_per_step: int | None          # network calls one step takes; None: the sampler picks its own steps
    final_calls: int | None = None      # calls on a last step into sigma 0 when they differ (heun: 1); None = per step
    options: tuple[str, ...] = ()       # keyword options beyond the contract (eta, s_noise, s_churn, ...)
    adds_noise: bool = False
    flow: str = "denoised"              # "denoised", "rf" (rectified-flow noise formulas) or "refused: <why>"
    cfg_pp: bool = False                # needs the unconditional prediction (CFG++ guidance hook)
    alias_of: str | None = None
    after: str | None = None            # menu position: right after this sampler of the same group (None: the end)
    tail_calls: tuple[int, ...] = ()    # calls of the last steps whatever the last sigma (heunpp2: (2, 1)); () = none


# Every sampler by name, in menu order (GROUPS order, then declaration order, `after` honoured). Updated in place,
# so a module that imported it sees samplers registered later.
REGISTRY: dict[str, SamplerSpec] = {}
_DECLARED: list[SamplerSpec] = []                 # in declaration order
_BY_NAME: dict[str, SamplerSpec] = {}


def _check(spec):
    if spec.name in REGISTRY:
        raise ValueError(f"sampler {spec.name!r} is registered twice")
    if spec.group not in GROUPS:
        raise ValueError(f"sampler {spec.name!r}: group {spec.group!r} is not one of {', '.join(GROUPS)}")
    if not (spec.flow in FLOW_FORMS or spec.flow.startswith("refused: ")):
        raise ValueError(f"sampler {spec.name!r}: flow must be 'denoised', 'rf' or 'refused: <why>'")
    if spec.calls_per_step is None and (spec.final_calls is not None or spec.tail_calls):
        raise ValueError(f"sampler {spec.name!r}: final_calls and tail_calls need calls_per_step")
    if spec.final_calls is not None and spec.tail_calls:
        raise ValueError(f"sampler {spec.name!r}: give final_calls or tail_calls, not both")


def _menu_order(specs):
    """GROUPS order; in a group, declaration order, each `after` spec behind its target: its variants first (an alias,
    or a name extending the target's, such as euler_ancestral_cfg_pp), then its other followers, each with its own."""
    order = []
    for group in GROUPS:
        members = [s for s in specs if s.group == group]
        names = {s.name for s in members}
        followers = {s.name: [] for s in members}
        for s in members:
            if s.after in names and s.after != s.name:
                followers[s.after].append(s)

        def variant_first(s):
            return (not (s.alias_of or s.name.startswith(s.after + "_")), _DECLARED.index(s))

        seen = set()

        def place(s):
            if s.name in seen:  # a cycle of `after`s: each placed once
                return
            seen.add(s.name)
            order.append(s.name)
            for f in sorted(followers[s.name], key=variant_first):
                place(f)

        for s in members:
            if s.after not in names:
                place(s)
        for s in members:  # only members of an `after` cycle are left
            place(s)
    return order


def _register(spec):
    _check(spec)
    _DECLARED.append(spec)
    _BY_NAME[spec.name] = spec
    order = _menu_order(_DECLARED)
    REGISTRY.clear()
    REGISTRY.update((name, _BY_NAME[name]) for name in order)


def sampler(name, *, group, note, calls_per_step, final_calls=None, options=(), adds_noise=False, flow="denoised",
            cfg_pp=False, after=None, tail_calls=()):
    """Decorator: declares fn as sampler `name` (one entry of REGISTRY); returns fn unchanged. Duplicate names
    raise."""
    def declare(fn):
        _register(SamplerSpec(name=name, fn=fn, group=group, note=note, calls_per_step=calls_per_step,
                              final_calls=final_calls, options=tuple(options), adds_noise=adds_noise, flow=flow,
                              cfg_pp=cfg_pp, after=after, tail_calls=tuple(tail_calls)))
        return fn
    return declare


def alias(name, target, note):
    """Another menu name for a registered sampler (ComfyUI's *_gpu names), listed right after it."""
    if target not in REGISTRY:
        raise ValueError(f"alias {name!r}: no sampler {target!r} is registered")
    spec = REGISTRY[target]
    _register(replace(spec, name=name, note=note, alias_of=spec.alias_of or target, after=target))


def network_calls(name, steps, final_zero=True):
    """Declared network calls for a schedule of `steps` intervals (ending in sigma 0 when final_zero); None when
    the sampler picks its own steps."""
    spec = REGISTRY[name]
    if spec.calls_per_step is None:
        return None
    if spec.tail_calls:
        tail = spec.tail_calls[-steps:]
        return spec.calls_per_step * (steps - len(tail)) + sum(tail)
    last = spec.final_calls if final_zero and spec.final_calls is not None else spec.calls_per_step
    return spec.calls_per_step * (steps - 1) + last
