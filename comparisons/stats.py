"""Vote statistics for one A-vs-B question: win rate, Wilson interval, exact sign test, position bias."""
import math
from statistics import NormalDist

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
    """Exact two-sided binomial (sign) test of p = 1/2: 2 * P(X <= min(k, n - k)), capped at 1."""
    if n == 0:
        return math.nan
    tail = sum(math.comb(n, i) for i in range(min(k, n - k) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def votes_needed(rate, alpha=0.05, power=0.8):
    """Decisive votes for a two-sided test at `alpha` to detect `rate` with `power` (normal approx.)."""
    if math.isnan(rate) or rate in (0.5,):
        return math.inf
    if rate in (0.0, 1.0):
        # Unanimity: the smallest n whose exact p-value is below alpha.
        return next(n for n in range(1, 64) if 2 * 0.5 ** n < alpha)
    z_a, z_b = NormalDist().inv_cdf(1 - alpha / 2), NormalDist().inv_cdf(power)
    return math.ceil(((z_a * 0.5 + z_b * math.sqrt(rate * (1 - rate))) / (rate - 0.5)) ** 2)


def summarize(votes):
    """Statistics of votes on one config pair; each vote has 'winner' and 'left_config'."""
    count = {w: sum(v["winner"] == w for v in votes) for w in ("A", "B", "tie", "both_bad")}
    n = count["A"] + count["B"]
    rate = count["A"] / n if n else math.nan
    lo, hi = wilson_interval(count["A"], n)
    chose_left = sum(v["winner"] == v["left_config"] for v in votes if v["winner"] in ("A", "B"))
    needed = votes_needed(rate)
    return {
        "votes": len(votes), "decisive": n, "a_wins": count["A"], "b_wins": count["B"],
        "ties": count["tie"], "both_bad": count["both_bad"],
        "a_win_rate": rate, "ci_low": lo, "ci_high": hi,
        "p_value": binomial_two_sided_p(count["A"], n),
        "left_rate": chose_left / n if n else math.nan,
        "position_p_value": binomial_two_sided_p(chose_left, n),
        "votes_still_needed": needed if math.isinf(needed) else max(0, needed - n),
    }


def by_question(votes):
    """summarize() per (pairing, config A, config B): one row per question asked."""
    groups = {}
    for v in votes:
        groups.setdefault((v["pairing"], v["config_a"], v["config_b"]), []).append(v)
    return [{"pairing": p, "config_a": a, "config_b": b, **summarize(vs)}
            for (p, a, b), vs in sorted(groups.items())]


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
