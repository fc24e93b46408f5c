"""Per-cell numbers of a study and of a campaign's votes: paired statistics of each cell, its verdict
(Holm across the cells), and how a cell's votes compare with its LPIPS verdict. Pure: rows in, dicts out."""
import math

from ..core.grid import cell_key
from .stats import binomial_two_sided_p, paired_cell, verdicts, wilson_interval


def cell_stats(spec, rows, visible_lpips=0.01, invisible_share=0.05):
    """One dict per cell of the spec, in grid order, with its verdict (Holm across the cells)."""
    by_cell = {}
    for r in rows:
        by_cell.setdefault(cell_key(r), []).append(r)
    cells = []
    for cell in spec.cells():
        stats = paired_cell(by_cell.get(cell.key, []), visible_lpips, invisible_share)
        cells.append({"question": cell.question, "sampler": cell.sampler, "steps": cell.steps, **stats})
    return verdicts(cells)


def agreement(votes_verdict, lpips_verdict):
    """Do the votes and the study's LPIPS verdict say the same about a cell?"""
    lp = lpips_verdict.split(";")[0].strip()
    if votes_verdict == "no preference" and lp == "no difference":
        return "agree (no difference)"
    if votes_verdict == "no preference" or lp == "no difference":
        return "undecided (one finds no difference)"
    same = (votes_verdict == "A preferred") == (lp == "A closer")
    return "agree" if same else "disagree"


def campaign_cells(cells, votes, alpha=0.05):
    """Per campaign cell: vote counts, A's win rate (Wilson 95%), sign test, and the cell's LPIPS verdict."""
    rows = []
    for cell in cells:
        mine = [v for v in votes if cell_key(v) == cell_key(cell)]
        n = {w: sum(v["winner"] == w for v in mine) for w in ("A", "B", "tie", "both_bad")}
        decisive = n["A"] + n["B"]
        lo, hi = wilson_interval(n["A"], decisive)
        p = binomial_two_sided_p(n["A"], decisive)
        verdict = ("A preferred" if n["A"] > n["B"] else "B preferred") if decisive and p < alpha else "no preference"
        rows.append({**{k: cell[k] for k in ("question", "sampler", "steps", "pairs")}, "votes": len(mine),
                     "a": n["A"], "b": n["B"], "tie": n["tie"], "both_bad": n["both_bad"],
                     "a_win_rate": n["A"] / decisive if decisive else math.nan, "ci_low": lo, "ci_high": hi,
                     "p_value": p, "votes_verdict": verdict, "lpips_verdict": cell["lpips_verdict"],
                     "agreement": agreement(verdict, cell["lpips_verdict"]) if decisive else "no decisive votes yet"})
    return rows
