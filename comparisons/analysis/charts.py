"""Figures as PNG bytes: the Results tab's win rates and LPIPS per question, a study's distance-to-reference
plots. Drawn in memory (matplotlib's Agg backend); nothing is written to disk."""
import io
import math
import textwrap

from ..core.config import ImageArm, SamplerConfig, arm_from_json
from ..core.grid import cell_key
from ..core.visibility import VISIBLE_LPIPS
from .stats import bootstrap_mean_interval, wilson_interval


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def figure_png(fig, dpi=100):
    """A matplotlib figure as PNG bytes; the figure is closed."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    _plt().close(fig)
    return buf.getvalue()


def _value(v):
    return f"{v:g}" if isinstance(v, float) else str(v)  # 4.0200000000000005 reads 4.02


def pair_label(pairing, config_a, config_b):
    """One comparison in a few words, distinct for distinct (pairing, config A, config B): the pairing, the
    sampler(s) and steps, every other field both arms share away from the defaults, then each field that differs
    as 'field A vs B' ('custom · uni_pc vs euler 10 steps · quantize paper vs off'). A campaign of image files: its
    two labels."""
    a, b = arm_from_json(config_a), arm_from_json(config_b)
    if isinstance(a, ImageArm) or isinstance(b, ImageArm):
        name = lambda arm: arm.label if isinstance(arm, ImageArm) else f"{arm.sampler} {arm.steps} steps"  # noqa: E731
        return f"{pairing} · {name(a)} vs {name(b)}"
    da, db, default = a.to_dict(), b.to_dict(), SamplerConfig().to_dict()
    both = lambda k: _value(da[k]) if da[k] == db[k] else f"{_value(da[k])} vs {_value(db[k])}"  # noqa: E731
    parts = [pairing, f"{both('sampler')} {both('steps')} steps"]
    rest = [k for k in da if k not in ("sampler", "steps")]
    parts += [f"{k} {_value(da[k])}" for k in rest if da[k] == db[k] and da[k] != default[k]]
    differs = [f"{k} {both(k)}" for k in rest if da[k] != db[k]]
    return " · ".join(parts + (differs or ["A = B"]))


def question_label(row):
    """A by_question row's comparison (pair_label): what the win-rate chart names each line by."""
    return pair_label(row["pairing"], row["config_a"], row["config_b"])


def _wrap(label, width=72):
    """A long tick label on two or more lines rather than across the chart."""
    return textwrap.fill(label, width, break_long_words=False, break_on_hyphens=False)


CHART_ROWS = 30  # a chart taller than a screen or two is read by nobody: the table holds every question


def chart_questions(rows, limit=CHART_ROWS):
    """(the questions a win-rate chart draws, how many have decisive votes): at most `limit`, those with the most
    decisive votes, in table order."""
    rows = [r for r in rows if r["decisive"] > 0]
    kept = {id(r) for r in sorted(rows, key=lambda r: -r["decisive"])[:limit]}
    return [r for r in rows if id(r) in kept], len(rows)


def win_rate_figure(rows, limit=CHART_ROWS):
    """A's win rate per question with its Wilson 95% interval and the vote count; 0.5 marked. At most `limit`
    questions (chart_questions), and the title says so."""
    plt = _plt()
    rows, asked = chart_questions(rows, limit)
    fig, ax = plt.subplots(figsize=(7, 0.45 * max(len(rows), 1) + 1.1))
    for i, r in enumerate(rows):
        ax.errorbar(r["a_win_rate"], i, xerr=[[r["a_win_rate"] - r["ci_low"]], [r["ci_high"] - r["a_win_rate"]]],
                    fmt="o", color="C0", capsize=3)
        ax.annotate(f"n={r['decisive']}", (1.02, i), xycoords=("axes fraction", "data"), va="center", fontsize=8)
    ax.axvline(0.5, color="grey", lw=1, ls="--")
    ax.set_yticks(range(len(rows)), [_wrap(question_label(r)) for r in rows], fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.7, max(len(rows), 1) - 0.3)
    ax.invert_yaxis()
    ax.set_xlabel("A's win rate among decisive votes (95% Wilson interval)")
    if asked > len(rows):
        ax.set_title(f"the {len(rows)} questions with the most votes, of {asked} (all are in the table)", fontsize=9)
    if not rows:
        ax.text(0.5, 0, "no decisive votes yet", ha="center", va="center")
    return figure_png(fig)


def comparison_groups(pairs):
    """{label: [LPIPS(A, B) of each pair]} with one group per comparison: per (pairing, config A, config B), a
    study's pairs apart from the app's. `pairs`: dicts with pairing, config_a, config_b, lpips and study (true for a
    study's pair). Labels are pair_label's (+ ' · study'); two comparisons never share one."""
    keyed = {}
    for p in pairs:
        keyed.setdefault((p["pairing"], p["config_a"], p["config_b"], bool(p["study"])), []).append(p["lpips"])
    out = {}
    for (pairing, a, b, study), values in keyed.items():
        label = pair_label(pairing, a, b) + (" · study" if study else "")
        while label in out:  # two configs that read alike (a field's value printed the same): kept apart
            label += " ′"
        out[label] = values
    return out


def lpips_figure(groups, limit=CHART_ROWS):
    """LPIPS(A, B) per group of pairs (box plot with the points) on a log axis, the LPIPS 0.01 line for reference.
    `groups`: {label: [LPIPS of each pair]}, one comparison per group (comparison_groups: never two samplers or two
    config pairs under one label). Identical pairs (LPIPS 0) have no place on a log axis: they are counted in the
    label, never drawn at a made-up small value. At most `limit` groups, the largest."""
    plt = _plt()
    data = {}
    for label, values in groups.items():
        finite = [v for v in values if v is not None and math.isfinite(v)]
        if finite:
            data[label] = ([v for v in finite if v > 0], sum(v <= 0 for v in finite))
    shown = sorted(sorted(data, key=lambda k: -len(data[k][0]) - data[k][1])[:limit])
    fig, ax = plt.subplots(figsize=(7, 0.45 * max(len(shown), 1) + 1.1))
    drawn = [i for i, n in enumerate(shown, 1) if data[n][0]]
    if drawn:
        ax.boxplot([data[shown[i - 1]][0] for i in drawn], positions=drawn, orientation="horizontal", widths=0.5,
                   showfliers=False)
        for i in drawn:
            positive = data[shown[i - 1]][0]
            ax.plot(positive, [i] * len(positive), "|", color="C1", alpha=0.6)
    if shown:
        labels = [f"{n} (n={len(data[n][0]) + data[n][1]}" + (f", {data[n][1]} identical" if data[n][1] else "") + ")"
                  for n in shown]
        ax.set_yticks(range(1, len(shown) + 1), [_wrap(label) for label in labels], fontsize=8)
        ax.set_ylim(len(shown) + 0.7, 0.3)
    else:
        ax.text(0.5, 0.5, "no pairs yet", ha="center", va="center", transform=ax.transAxes)
    if len(data) > len(shown):
        ax.set_title(f"the {len(shown)} largest of {len(data)} groups", fontsize=9)
    ax.set_xscale("log")
    values = [v for vs, _ in data.values() for v in vs] + [VISIBLE_LPIPS]
    ax.set_xlim(min(values) / 2, max(values) * 2)  # room around the data and the floor, never a zero-width axis
    ax.axvline(VISIBLE_LPIPS, color="grey", lw=1, ls="--")
    ax.set_xlabel(f"LPIPS(A, B) per pair (log; dashed: LPIPS {VISIBLE_LPIPS}, for reference: FLIP decides visibility)")
    ax.set_ylabel("comparison: pairing · sampler, steps · shared settings · A vs B", fontsize=8)
    return figure_png(fig)


def question_figure(question, cells, rows):
    """question_axes as PNG bytes."""
    return figure_png(question_axes(question, cells, rows), dpi=110)


def question_axes(question, cells, rows):
    """One cell question's figure (a study's `question`, or `question@schedule` with --schedules): each arm's mean
    LPIPS to the reference against steps (log axis, bootstrap bands), and A's closer-rate (Wilson band); one line
    per sampler and arm, each named in the legend. The matplotlib figure (question_figure draws it)."""
    plt = _plt()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    mine = [c for c in cells if c["question"] == question]
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for n, sampler in enumerate(dict.fromkeys(c["sampler"] for c in mine)):
        steps = sorted(c["steps"] for c in mine if c["sampler"] == sampler)
        colour = colours[n % len(colours)]
        for arm, style in (("a", "-"), ("b", "--")):
            mean, lo, hi = zip(*[bootstrap_mean_interval(
                [r[f"lpips_{arm}_ref"] for r in rows if cell_key(r) == (question, sampler, s)]) for s in steps])
            left.plot(steps, mean, style, marker="o", color=colour, label=f"{sampler} · arm {arm.upper()}")
            left.fill_between(steps, _nan0(lo, mean), _nan0(hi, mean), color=colour, alpha=0.15)
        by_steps = {c["steps"]: c for c in mine if c["sampler"] == sampler}
        rate = [by_steps[s]["a_closer_rate"] for s in steps]
        ci = [wilson_interval(by_steps[s]["a_closer"], by_steps[s]["a_closer"] + by_steps[s]["b_closer"])
              for s in steps]
        right.plot(steps, rate, marker="o", color=colour, label=f"{sampler} · share A closer")
        right.fill_between(steps, _nan0([c[0] for c in ci], rate), _nan0([c[1] for c in ci], rate),
                           color=colour, alpha=0.15)
    ticks = sorted({c["steps"] for c in mine})
    for ax in (left, right):
        ax.set_xscale("log")
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.minorticks_off()
        ax.set_xlabel("steps")
        ax.grid(alpha=0.3)
    left.set_ylabel("mean LPIPS to reference")
    left.set_title(f"{question}: distance to the reference (A solid, B dashed)", fontsize=9)
    right.axhline(0.5, color="grey", lw=0.8, ls=":")
    right.set_ylim(-0.02, 1.02)
    right.set_ylabel("A closer (share, ties left out)")
    right.set_title(f"{question}: how often A is closer (Wilson 95%)", fontsize=9)
    for ax in (left, right):
        if ax.get_legend_handles_labels()[0]:  # a cell whose every pair tied draws no line to name
            ax.legend(fontsize=7)
    if not mine:
        for ax in (left, right):
            ax.text(0.5, 0.5, f"no cells named {question}", ha="center", va="center", transform=ax.transAxes)
    return fig


def _nan0(values, fallback):
    return [f if (v is None or (isinstance(v, float) and math.isnan(v))) else v for v, f in zip(values, fallback)]


def schedule_figure(arms):
    """Every sigma of each arm's schedule against the step, on a symmetric-log axis so the final 0 is drawn
    (linear below 0.01); A solid, B dashed, each one's discretized version in markers only. `arms`:
    {'A': (sigmas, discretized), 'B': ...}. PNG bytes."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3.4))
    for (name, (sigmas, discretized)), colour, style in zip(arms.items(), ("C0", "C1"), ("-", "--")):
        ax.plot(range(len(sigmas)), sigmas, style, marker="o", ms=4, color=colour, label=f"{name} ({len(sigmas) - 1} "
                f"steps{', ends at 0' if sigmas[-1] == 0 else ''})")
        ax.plot(range(len(discretized)), discretized, ls="none", marker="x" if name == "A" else "+", ms=8,
                color=colour, label=f"{name} discretized (on the training grid)")
    ax.set_yscale("symlog", linthresh=0.01, linscale=0.5)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.axhline(0, color="grey", lw=0.6)
    ax.set_xlabel("step")
    ax.set_ylabel("sigma (symlog: linear below 0.01)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return figure_png(fig)
