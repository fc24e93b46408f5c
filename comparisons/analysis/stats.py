"""Vote statistics for one A-vs-B question: win rate, Wilson interval, exact sign test, position bias."""
import math
from statistics import NormalDist

from ..core.visibility import FLIP_VISIBLE, is_below

Z95 = NormalDist().inv_cdf(0.975)


def wilson_interval(wins, n, z=Z95):
    """Wilson score interval for a binomial proportion (Wilson 1927); (nan, nan) without data."""
    if n == 0:
        return math.nan, math.nan
    p = wins / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def binomial_two_sided_p(k, n):
    """Exact two-sided binomial (sign) test of p = 1/2: 2 * P(X <= min(k, n - k)), capped at 1.

    The tail's binomial coefficients come from one another (C(n, i+1) = C(n, i) (n - i) / (i + 1), exact in
    integers), one small multiply and divide per term instead of a fresh math.comb each: the same exact sum,
    at 20,000 votes in milliseconds rather than seconds."""
    if n == 0:
        return math.nan
    term = total = 1  # C(n, 0)
    for i in range(min(k, n - k)):
        term = term * (n - i) // (i + 1)
        total += term
    return min(1.0, 2 * total / 2 ** n)


def votes_needed(rate, alpha=0.05, power=0.8):
    """Decisive votes for a two-sided test at `alpha` to detect `rate` with `power` (normal approx.)."""
    if math.isnan(rate) or rate in (0.5,):
        return math.inf
    if rate in (0.0, 1.0):
        # Unanimity: the smallest n whose exact p-value is below alpha.
        return next(n for n in range(1, 64) if 2 * 0.5 ** n < alpha)
    z_a, z_b = NormalDist().inv_cdf(1 - alpha / 2), NormalDist().inv_cdf(power)
    return math.ceil(((z_a * 0.5 + z_b * math.sqrt(rate * (1 - rate))) / (rate - 0.5)) ** 2)


TALLY_KEYS = ("pairing", "config_a", "config_b", "prompt", "winner", "left_config")


def tally(votes):
    """Votes -> {(pairing, config A, config B, prompt, winner, left side): count}: all the statistics below read
    (ResultsStore.vote_tally gives the same counts from SQL, so nothing is read vote by vote)."""
    out = {}
    for v in votes:
        key = tuple(v.get(k) for k in TALLY_KEYS)
        out[key] = out.get(key, 0) + 1
    return out


def summarize(votes):
    """Statistics of votes on one config pair; each vote has 'winner' and 'left_config'."""
    counts = {}
    for v in votes:
        counts[(v["winner"], v["left_config"])] = counts.get((v["winner"], v["left_config"]), 0) + 1
    return summarize_counts(counts)


def summarize_counts(counts):
    """summarize() from {(winner, left side): votes}: win rate, Wilson interval, sign tests, votes still needed."""
    count = {w: sum(n for (winner, _), n in counts.items() if winner == w) for w in ("A", "B", "tie", "both_bad")}
    n = count["A"] + count["B"]
    rate = count["A"] / n if n else math.nan
    lo, hi = wilson_interval(count["A"], n)
    chose_left = sum(k for (winner, left), k in counts.items() if winner in ("A", "B") and winner == left)
    needed = votes_needed(rate)
    return {
        "votes": sum(counts.values()), "decisive": n, "a_wins": count["A"], "b_wins": count["B"],
        "ties": count["tie"], "both_bad": count["both_bad"],
        "a_win_rate": rate, "ci_low": lo, "ci_high": hi,
        "p_value": binomial_two_sided_p(count["A"], n),
        "left_rate": chose_left / n if n else math.nan,
        "position_p_value": binomial_two_sided_p(chose_left, n),
        "votes_still_needed": needed if math.isinf(needed) else max(0, needed - n),
    }


def by_question(votes):
    """summarize() per (pairing, config A, config B): one row per question asked."""
    return by_question_tally(tally(votes))


def by_question_tally(counts):
    """by_question() from tally() counts (or ResultsStore.vote_tally()): cost grows with the questions and
    prompts, not with the votes."""
    groups = {}
    for (pairing, a, b, prompt, winner, left), n in counts.items():
        g = groups.setdefault((pairing, a, b), ({}, {}))
        g[0][(winner, left)] = g[0].get((winner, left), 0) + n
        g[1][prompt] = g[1].get(prompt, 0) + n
    return [{"pairing": p, "config_a": a, "config_b": b, "prompts": _most_first(prompts), **summarize_counts(c)}
            for (p, a, b), (c, prompts) in sorted(groups.items())]


def _most_first(counts):
    """{value: count}, most frequent first."""
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0]))))


def mean_interval(values):
    """Mean with a normal 95% interval; (mean, nan, nan) for fewer than two values."""
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return math.nan, math.nan, math.nan
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, math.nan, math.nan
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
    half = Z95 * sd / math.sqrt(len(values))
    return mean, mean - half, mean + half


def holm(p_values):
    """Holm (1979) step-down adjusted p-values, same order as given; NaN stays NaN and is not counted."""
    order = sorted((p, i) for i, p in enumerate(p_values) if not math.isnan(p))
    adjusted, running = [math.nan] * len(p_values), 0.0
    for rank, (p, i) in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * p))
        adjusted[i] = running
    return adjusted


def bootstrap_mean_interval(values, seed=0, resamples=2000, level=0.95):
    """Mean with a seeded percentile-bootstrap interval (Efron 1979); NaN bounds for fewer than 2 values."""
    import numpy as np

    values = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    if len(values) == 0:
        return math.nan, math.nan, math.nan
    mean = float(values.mean())
    if len(values) < 2:
        return mean, math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(resamples, len(values)))].mean(1)
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return mean, float(lo), float(hi)


def paired_cell(rows, visible_flip=FLIP_VISIBLE, invisible_share=0.05, seed=0):
    """Statistics of one study cell from its rows (each with lpips_a_ref, lpips_b_ref, lpips_ab, flip_max, ...).

    A is closer when LPIPS(A, ref) < LPIPS(B, ref); exact ties are left out of the sign test. A pair is visibly
    different by the one rule of core.visibility (FLIP). `p_holm` and the verdict are filled in across cells by
    `verdicts`.
    """
    d = [r["lpips_a_ref"] - r["lpips_b_ref"] for r in rows]
    a_closer, b_closer = sum(x < 0 for x in d), sum(x > 0 for x in d)
    decisive = a_closer + b_closer
    lo, hi = wilson_interval(a_closer, decisive)
    mean_diff, diff_lo, diff_hi = bootstrap_mean_interval(d, seed=seed)
    lpips_ab = [r["lpips_ab"] for r in rows]
    visible = sum(not is_below(r["flip_max"], visible_flip) for r in rows)

    def rate(key):
        known = [r[key] for r in rows if r.get(key) is not None]
        return sum(known) / len(known) if known else math.nan

    return {
        "n": len(rows), "a_closer": a_closer, "b_closer": b_closer, "equal": len(rows) - decisive,
        "a_closer_rate": a_closer / decisive if decisive else math.nan, "ci_low": lo, "ci_high": hi,
        "p_value": binomial_two_sided_p(a_closer, decisive),
        "mean_diff": mean_diff, "diff_ci_low": diff_lo, "diff_ci_high": diff_hi,
        "mean_rmse_diff": sum(r["rmse_a_ref"] - r["rmse_b_ref"] for r in rows) / len(rows) if rows else math.nan,
        "lpips_a_ref": sum(r["lpips_a_ref"] for r in rows) / len(rows) if rows else math.nan,
        "lpips_b_ref": sum(r["lpips_b_ref"] for r in rows) / len(rows) if rows else math.nan,
        "lpips_ab": sum(lpips_ab) / len(rows) if rows else math.nan,
        "max_abs_diff": max((r["max_abs_diff"] for r in rows), default=0),
        "visible_share": visible / len(rows) if rows else math.nan,
        "faithful_a": rate("faithful_a"), "faithful_b": rate("faithful_b"),
        "invisible": bool(rows) and visible / len(rows) < invisible_share,
    }


ALPHA = 0.05               # the sign test's level, after Holm across a study's cells
EQUIVALENCE_MARGIN = 0.01  # LPIPS: a mean difference to the reference whose 95% interval lies within ±this is
                           # "no difference" (0.01 is LPIPS's usual just-noticeable scale, VISIBLE_LPIPS)

# The verdict words (README and the report state them; `agreement` in analysis.cells reads them back).
INCONCLUSIVE_N = "inconclusive (n too small)"
INCONCLUSIVE = "inconclusive"
DISAGREE = "inconclusive (sign test and mean disagree)"
NO_DIFFERENCE = "no difference"
VERDICT_RULES = (
    f"A closer / B closer: the sign test's p_holm < {ALPHA} (and the mean difference's interval does not exclude 0 "
    f"on the other side: then '{DISAGREE}'). Otherwise, by the bootstrap 95% interval of the mean difference: "
    f"'{INCONCLUSIVE_N}' when the cell has fewer samples than the sign test needs to reach p_holm < {ALPHA} even if "
    f"every sample favoured one arm (the smallest two-sided p with n samples is 2·0.5^n, Holm-adjusted with the "
    f"study's other cells); 'A closer (mean only)' / 'B closer (mean only)' when the interval excludes 0 (written "
    f"'A closer by < {EQUIVALENCE_MARGIN} (mean only)' when it also lies within ±{EQUIVALENCE_MARGIN}); "
    f"'{NO_DIFFERENCE}' only when the interval contains 0 and lies within the equivalence margin "
    f"±{EQUIVALENCE_MARGIN} LPIPS; else '{INCONCLUSIVE}' (the interval straddles 0 and reaches beyond the margin). "
    f"'; invisible' is added when fewer than 5% of the pairs are visibly different.")


def smallest_p(n):
    """The smallest two-sided sign-test p-value n decisive pairs can give (all one way): 2 * 0.5^n, capped at 1."""
    return min(1.0, 2 * 0.5 ** n) if n > 0 else math.nan


def verdict_words(n, a_closer_rate, p_holm, diff_lo, diff_hi, decidable, alpha=ALPHA, margin=EQUIVALENCE_MARGIN):
    """One cell's verdict (without '; invisible') from its numbers: see VERDICT_RULES.

    `decidable`: could the Holm-corrected sign test reach `alpha` with this cell's n samples, had every one favoured
    the same arm. `diff_lo`/`diff_hi`: the 95% interval of mean LPIPS(A, ref) - LPIPS(B, ref) (negative: A closer).
    """
    interval = not (math.isnan(diff_lo) or math.isnan(diff_hi))
    if not math.isnan(p_holm) and p_holm < alpha:
        side = "A" if a_closer_rate > 0.5 else "B"
        other = interval and (diff_lo > 0 if side == "A" else diff_hi < 0)
        return DISAGREE if other else f"{side} closer"
    if n < 2 or not decidable or not interval:
        return INCONCLUSIVE_N
    if diff_hi < 0 or diff_lo > 0:
        side = "A" if diff_hi < 0 else "B"
        small = -margin <= diff_lo and diff_hi <= margin
        return f"{side} closer by < {margin:g} (mean only)" if small else f"{side} closer (mean only)"
    if -margin <= diff_lo and diff_hi <= margin:
        return NO_DIFFERENCE
    return INCONCLUSIVE


def decidable(cells, alpha=ALPHA):
    """Per cell: could the Holm-corrected sign test reach `alpha` with the cell's n samples, had every one favoured
    one arm (its p the smallest n allows, the other cells' as they are)?"""
    ps = [c["p_value"] for c in cells]
    out = []
    for i, c in enumerate(cells):
        best = smallest_p(c["n"])
        out.append(not math.isnan(best) and holm(ps[:i] + [best] + ps[i + 1:])[i] < alpha)
    return out


def verdicts(cells, alpha=ALPHA, margin=EQUIVALENCE_MARGIN):
    """Holm-correct the cells' sign tests in place and give each a verdict (VERDICT_RULES)."""
    for cell, p, can in zip(cells, holm([c["p_value"] for c in cells]), decidable(cells, alpha)):
        cell["p_holm"] = p
        verdict = verdict_words(cell["n"], cell["a_closer_rate"], p, cell["diff_ci_low"], cell["diff_ci_high"], can,
                                alpha, margin)
        cell["verdict"] = verdict + ("; invisible" if cell["invisible"] else "")
    return cells
