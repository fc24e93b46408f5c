"""Per-cell numbers of a study and of a campaign's votes: paired statistics of each cell, its verdict
(Holm across the cells), and how a cell's votes compare with its LPIPS verdict. Pure: rows in, dicts out."""
import math

from ..core.grid import cell_key
from ..core.visibility import FLIP_VISIBLE
from .stats import INCONCLUSIVE, NO_DIFFERENCE, binomial_two_sided_p, paired_cell, verdicts, wilson_interval

ALL_CELLS = "(all cells)"  # the campaign row over every cell


def cell_stats(spec, rows, visible_flip=FLIP_VISIBLE, invisible_share=0.05):
    """One dict per cell of the spec, in grid order, with its verdict (Holm across the cells)."""
    by_cell = {}
    for r in rows:
        by_cell.setdefault(cell_key(r), []).append(r)
    cells = []
    for cell in spec.cells():
        stats = paired_cell(by_cell.get(cell.key, []), visible_flip, invisible_share)
        cells.append({"question": cell.question, "sampler": cell.sampler, "steps": cell.steps, **stats})
    return verdicts(cells)


def lpips_side(lpips_verdict):
    """What a study's LPIPS verdict (analysis.stats.verdicts) says of a cell: 'A' or 'B' (closer, by the sign test
    or by the mean only), 'none' (no difference), 'inconclusive', or None (no such verdict: a campaign of image
    files has no reference to be closer to)."""
    lp = lpips_verdict.split(";")[0].strip()
    if lp.startswith(("A closer", "B closer")):
        return lp[0]
    if lp == NO_DIFFERENCE:
        return "none"
    if lp.startswith(INCONCLUSIVE):
        return "inconclusive"
    return None


def agreement(votes_verdict, lpips_verdict):
    """Do the votes and the study's LPIPS verdict say the same about a cell?"""
    side = lpips_side(lpips_verdict)
    if side is None:
        return "no LPIPS verdict (no reference)"
    if side == "inconclusive":
        return "undecided (LPIPS inconclusive)"
    if votes_verdict == "no preference" and side == "none":
        return "agree (no difference)"
    if votes_verdict == "no preference" or side == "none":
        return "undecided (one finds no difference)"
    same = (votes_verdict == "A preferred") == (side == "A")
    return "agree" if same else "disagree"


def flagged_sessions(check_votes):
    """Sessions that picked a side (A or B, not tie or both bad) on most of the attention checks they answered:
    an attention check shows one image twice, so a side there is a guess."""
    sided = {}
    for v in check_votes:
        sided.setdefault(v["session"], []).append(v["winner"] in ("A", "B"))
    return {s for s, picks in sided.items() if 2 * sum(picks) > len(picks)}


def side_numbers(votes):
    """Position bias of decisive votes: how often the left image won (with its sign test), and A's win rate
    when A was shown left and when shown right; their mean is A's side-corrected win rate (each side's bias
    cancels when the sides are balanced)."""
    decisive = [v for v in votes if v["winner"] in ("A", "B")]
    left_won = sum(v["winner"] == v["left_config"] for v in decisive)
    by_side = {side: [v["winner"] == "A" for v in decisive if v["left_config"] == side] for side in ("A", "B")}
    rate = {side: sum(won) / len(won) if won else math.nan for side, won in by_side.items()}
    return {"left_rate": left_won / len(decisive) if decisive else math.nan,
            "left_p": binomial_two_sided_p(left_won, len(decisive)),
            "a_rate_a_left": rate["A"], "a_rate_a_right": rate["B"],
            "a_win_rate_corrected": (rate["A"] + rate["B"]) / 2}


def _tally(votes):
    return {w: sum(v["winner"] == w for v in votes) for w in ("A", "B", "tie", "both_bad")}


def address_numbers(votes):
    """How much of a group of votes came from one address (votes cast on a hosted campaign keep a salted hash of
    their address; others have none, and each of those counts as its own): the largest share from one address,
    and A's and B's votes and A's win rate without that address's votes."""
    counts = {}
    for v in votes:
        if v.get("address"):
            counts[v["address"]] = counts.get(v["address"], 0) + 1
    top = max(counts, key=counts.get) if counts else None
    rest = [v for v in votes if top is None or v.get("address") != top]
    n = _tally(rest)
    decisive = n["A"] + n["B"]
    return {"top_address_share": counts[top] / len(votes) if top else math.nan, "top_address_votes": counts.get(top, 0),
            "votes_wo_top": len(rest), "a_wo_top": n["A"], "b_wo_top": n["B"],
            "a_win_rate_wo_top": n["A"] / decisive if decisive else math.nan,
            "p_value_wo_top": binomial_two_sided_p(n["A"], decisive)}


def campaign_cells(cells, votes, alpha=0.05):
    """Per campaign cell, then over all cells: vote counts, A's win rate (Wilson 95%), sign test, the side
    numbers (side_numbers), how much came from one address and the counts without it (address_numbers), and the
    cell's LPIPS verdict beside the votes' own."""
    by_cell = {}
    for v in votes:  # one pass: each vote to its cell
        by_cell.setdefault(cell_key(v), []).append(v)
    rows = []
    for cell in cells:
        mine = by_cell.get(cell_key(cell), [])
        n = _tally(mine)
        decisive = n["A"] + n["B"]
        lo, hi = wilson_interval(n["A"], decisive)
        p = binomial_two_sided_p(n["A"], decisive)
        verdict = ("A preferred" if n["A"] > n["B"] else "B preferred") if decisive and p < alpha else "no preference"
        rows.append({**{k: cell[k] for k in ("question", "sampler", "steps", "pairs")}, "votes": len(mine),
                     "a": n["A"], "b": n["B"], "tie": n["tie"], "both_bad": n["both_bad"],
                     "a_win_rate": n["A"] / decisive if decisive else math.nan, "ci_low": lo, "ci_high": hi,
                     "p_value": p, "votes_verdict": verdict, "lpips_verdict": cell["lpips_verdict"],
                     "agreement": agreement(verdict, cell["lpips_verdict"]) if decisive else "no decisive votes yet",
                     **side_numbers(mine), **address_numbers(mine)})
    counted = [v for c in dict.fromkeys(cell_key(c) for c in cells) for v in by_cell.get(c, [])]
    n = _tally(counted)
    # Over all cells only the side numbers mean something: the cells ask different questions.
    rows.append({"question": ALL_CELLS, "sampler": "", "steps": "", "pairs": sum(c["pairs"] for c in cells),
                 "votes": len(counted), "a": n["A"], "b": n["B"], "tie": n["tie"], "both_bad": n["both_bad"],
                 "a_win_rate": math.nan, "ci_low": math.nan, "ci_high": math.nan, "p_value": math.nan,
                 "votes_verdict": "", "lpips_verdict": "", "agreement": "", **side_numbers(counted),
                 **address_numbers(counted),
                 "a_rate_a_left": math.nan, "a_rate_a_right": math.nan, "a_win_rate_corrected": math.nan})
    return rows
