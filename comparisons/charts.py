"""Figures of the Results tab: A's win rate per question with its interval, LPIPS per question. PNG bytes."""
import io
import json
import math


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _png(fig):
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    _plt().close(fig)
    return buf.getvalue()


def question_label(row):
    """'final-zero · heun 4 steps · g 3.0' from a by_question row (A's sampler/steps/guidance; B's if they differ)."""
    a, b = json.loads(row["config_a"]), json.loads(row["config_b"])
    part = lambda k: str(a[k]) if a[k] == b[k] else f"{a[k]}/{b[k]}"  # noqa: E731
    return f"{row['pairing']} · {part('sampler')} {part('steps')} steps · g {part('guidance_scale')}"


def win_rate_figure(rows):
    """A's win rate per question with its Wilson 95% interval and the vote count; 0.5 marked."""
    plt = _plt()
    rows = [r for r in rows if r["decisive"] > 0]
    fig, ax = plt.subplots(figsize=(7, 0.45 * max(len(rows), 1) + 1.1))
    for i, r in enumerate(rows):
        ax.errorbar(r["a_win_rate"], i, xerr=[[r["a_win_rate"] - r["ci_low"]], [r["ci_high"] - r["a_win_rate"]]],
                    fmt="o", color="C0", capsize=3)
        ax.annotate(f"n={r['decisive']}", (1.02, i), xycoords=("axes fraction", "data"), va="center", fontsize=8)
    ax.axvline(0.5, color="grey", lw=1, ls="--")
    ax.set_yticks(range(len(rows)), [question_label(r) for r in rows], fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.7, max(len(rows), 1) - 0.3)
    ax.invert_yaxis()
    ax.set_xlabel("A's win rate among decisive votes (95% Wilson interval)")
    if not rows:
        ax.text(0.5, 0, "no decisive votes yet", ha="center", va="center")
    return _png(fig)


def lpips_figure(pairs):
    """LPIPS(A, B) of the pairs per question (box plot with the points), on a log axis; the visibility floor."""
    from .visibility import VISIBLE_LPIPS
    plt = _plt()
    groups = {}
    for p in pairs:
        if p.get("lpips") is not None and math.isfinite(p["lpips"]):
            groups.setdefault(p["pairing"], []).append(max(p["lpips"], 1e-6))
    names = sorted(groups)
    fig, ax = plt.subplots(figsize=(7, 0.45 * max(len(names), 1) + 1.1))
    if names:
        ax.boxplot([groups[n] for n in names], orientation="horizontal", widths=0.5, showfliers=False)
        for i, n in enumerate(names, 1):
            ax.plot(groups[n], [i] * len(groups[n]), "|", color="C1", alpha=0.6)
        ax.set_yticks(range(1, len(names) + 1), [f"{n} (n={len(groups[n])})" for n in names], fontsize=8)
        ax.invert_yaxis()
    else:
        ax.text(0.5, 0.5, "no pairs yet", ha="center", va="center", transform=ax.transAxes)
    ax.set_xscale("log")
    values = [v for vs in groups.values() for v in vs] + [VISIBLE_LPIPS]
    ax.set_xlim(min(values) / 2, max(values) * 2)  # room around the data and the floor, never a zero-width axis
    ax.axvline(VISIBLE_LPIPS, color="grey", lw=1, ls="--")
    ax.set_xlabel(f"LPIPS(A, B) per pair (log; dashed: visibility floor {VISIBLE_LPIPS})")
    return _png(fig)
