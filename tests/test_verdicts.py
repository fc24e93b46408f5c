"""Issue #32: a study cell's verdict words follow its numbers. Too few samples is "inconclusive (n too small)", an
interval that excludes 0 is never "no difference", and "no difference" needs the mean difference's interval inside
the stated equivalence margin."""
import math

import pytest

from comparisons.analysis import stats
from comparisons.analysis.cells import agreement, lpips_side

DISAGREE, EQUIVALENCE_MARGIN, INCONCLUSIVE = stats.DISAGREE, stats.EQUIVALENCE_MARGIN, stats.INCONCLUSIVE
INCONCLUSIVE_N, NO_DIFFERENCE = stats.INCONCLUSIVE_N, stats.NO_DIFFERENCE
binomial_two_sided_p, decidable, paired_cell = stats.binomial_two_sided_p, stats.decidable, stats.paired_cell
smallest_p, verdict_words, verdicts = stats.smallest_p, stats.verdict_words, stats.verdicts

nan = math.nan


def _cell(n, a_closer, b_closer, lo, hi, invisible=False):
    """A cell as paired_cell gives it, with the numbers a verdict reads."""
    decisive = a_closer + b_closer
    rate = a_closer / decisive if decisive else nan
    return {"n": n, "a_closer": a_closer, "b_closer": b_closer, "a_closer_rate": rate,
            "p_value": binomial_two_sided_p(a_closer, decisive), "diff_ci_low": lo, "diff_ci_high": hi,
            "invisible": invisible}


def _rows(diffs, lpips_ab=0.34):
    """Study rows whose LPIPS(A, ref) - LPIPS(B, ref) are `diffs`."""
    return [{"lpips_a_ref": 0.5 + d, "lpips_b_ref": 0.5, "lpips_ab": lpips_ab, "rmse_a_ref": 0.1, "rmse_b_ref": 0.1,
             "max_abs_diff": 40, "flip_max": 0.5} for d in diffs]


def test_the_issues_two_cells_are_inconclusive_not_no_difference():
    # A closer 4 of 4 with LPIPS(A, B) 0.34: the sign test cannot decide at n = 4 (smallest p 0.125).
    four = paired_cell(_rows([-0.2, -0.3, -0.25, -0.1]))
    # n = 2 with an interval of the mean difference that excludes 0: [+0.008, +0.30].
    two = paired_cell(_rows([0.008, 0.30]))
    assert two["diff_ci_low"] > 0
    out = verdicts([four, two])
    assert [c["verdict"] for c in out] == [INCONCLUSIVE_N, INCONCLUSIVE_N]


@pytest.mark.parametrize("n, a, b, lo, hi, want", [
    # n = 2, interval excluding 0: too few samples for any verdict (never "no difference").
    (2, 0, 2, 0.008, 0.30, INCONCLUSIVE_N),
    # 4/4 A closer: p = 0.125 at best.
    (4, 4, 0, -0.3, -0.1, INCONCLUSIVE_N),
    # 5 samples: 2 * 0.5^5 = 0.0625 >= 0.05, even with a tiny interval around 0.
    (5, 3, 2, -0.001, 0.001, INCONCLUSIVE_N),
    # 6 samples can decide (0.03125), so a narrow interval around 0 inside the margin is "no difference" ...
    (6, 3, 3, -0.001, 0.001, NO_DIFFERENCE),
    # ... and so with many samples.
    (40, 22, 18, -0.004, 0.003, NO_DIFFERENCE),
    # An interval reaching the margin's ends exactly is still inside it.
    (40, 20, 20, -EQUIVALENCE_MARGIN, EQUIVALENCE_MARGIN, NO_DIFFERENCE),
    # Straddling 0 but wider than the margin: inconclusive, whatever n.
    (40, 22, 18, -0.05, 0.04, INCONCLUSIVE),
    (40, 20, 20, -0.004, 0.0101, INCONCLUSIVE),
    (400, 200, 200, -0.02, 0.001, INCONCLUSIVE),
    # Excluding 0 without a significant sign test: the mean alone says who is closer.
    (40, 24, 16, -0.03, -0.011, "A closer (mean only)"),
    (40, 16, 24, 0.002, 0.05, "B closer (mean only)"),
    # ... and says it is small when the whole interval is within the margin (never "no difference").
    (40, 24, 16, -0.004, -0.0005, f"A closer by < {EQUIVALENCE_MARGIN:g} (mean only)"),
    (40, 20, 20, 0.0001, 0.002, f"B closer by < {EQUIVALENCE_MARGIN:g} (mean only)"),
    # A significant sign test decides.
    (40, 35, 5, -0.03, -0.01, "A closer"),
    (40, 5, 35, -0.001, 0.02, "B closer"),
    # ... unless the mean difference's interval lies wholly on the other side.
    (40, 35, 5, 0.001, 0.02, DISAGREE),
    # No sample at all.
    (0, 0, 0, nan, nan, INCONCLUSIVE_N),
])
def test_verdict_words_at_the_edges(n, a, b, lo, hi, want):
    assert verdicts([_cell(n, a, b, lo, hi)])[0]["verdict"] == want


def test_an_interval_excluding_zero_is_never_no_difference():
    for n in (2, 3, 6, 10, 40, 400):
        for lo, hi in ((0.0001, 0.0002), (-0.0002, -0.0001), (0.001, 0.3), (-0.3, -0.008)):
            for a in range(0, n + 1, max(1, n // 5)):
                verdict = verdicts([_cell(n, a, n - a, lo, hi)])[0]["verdict"]
                assert verdict != NO_DIFFERENCE, (n, a, lo, hi)


def test_decidable_counts_the_holm_adjustment_of_the_study():
    """With more cells Holm asks more of each: 6 samples decide alone (0.031 < 0.05), not beside a cell whose test
    is far from significant (2 * 0.031), but do beside one already significant (Holm's step down)."""
    six = _cell(6, 3, 3, -0.001, 0.001)
    assert smallest_p(6) == pytest.approx(0.03125) and smallest_p(4) == 0.125 and math.isnan(smallest_p(0))
    assert decidable([six]) == [True]
    weak, strong = _cell(40, 20, 20, -0.05, 0.05), _cell(40, 40, 0, -0.2, -0.1)
    assert decidable([six, weak]) == [False, True]
    assert [c["verdict"] for c in verdicts([dict(six), dict(weak)])] == [INCONCLUSIVE_N, INCONCLUSIVE]
    assert decidable([six, strong]) == [True, True]
    assert [c["verdict"] for c in verdicts([dict(six), dict(strong)])] == [NO_DIFFERENCE, "A closer"]
    # Seven samples decide beside the weak cell: 2 * 0.5^7 * 2 = 0.031.
    assert decidable([_cell(7, 4, 3, -0.001, 0.001), weak]) == [True, True]


def test_invisible_suffix_is_kept():
    out = verdicts([_cell(40, 22, 18, -0.004, 0.003, invisible=True), _cell(3, 3, 0, -0.1, -0.05, invisible=True)])
    assert [c["verdict"] for c in out] == [NO_DIFFERENCE + "; invisible", INCONCLUSIVE_N + "; invisible"]


def test_verdict_words_read_alpha_and_margin():
    assert verdict_words(40, 0.5, 0.5, -0.004, 0.003, True, margin=0.001) == INCONCLUSIVE
    assert verdict_words(40, 0.9, 0.04, -0.1, -0.01, True, alpha=0.01) == "A closer (mean only)"
    assert str(EQUIVALENCE_MARGIN) in stats.VERDICT_RULES and str(stats.ALPHA) in stats.VERDICT_RULES


@pytest.mark.parametrize("lpips, votes, want", [
    ("A closer", "A preferred", "agree"),
    ("A closer; invisible", "B preferred", "disagree"),
    ("B closer (mean only)", "B preferred", "agree"),
    (f"A closer by < {EQUIVALENCE_MARGIN:g} (mean only)", "B preferred", "disagree"),
    ("no difference", "no preference", "agree (no difference)"),
    ("no difference; invisible", "A preferred", "undecided (one finds no difference)"),
    ("A closer", "no preference", "undecided (one finds no difference)"),
    (INCONCLUSIVE_N, "A preferred", "undecided (LPIPS inconclusive)"),
    (INCONCLUSIVE + "; invisible", "no preference", "undecided (LPIPS inconclusive)"),
    (DISAGREE, "B preferred", "undecided (LPIPS inconclusive)"),
    ("no reference image", "A preferred", "no LPIPS verdict (no reference)"),
])
def test_agreement_reads_every_verdict(lpips, votes, want):
    assert agreement(votes, lpips) == want


def test_every_verdict_word_has_a_side():
    words = {INCONCLUSIVE_N: "inconclusive", INCONCLUSIVE: "inconclusive", DISAGREE: "inconclusive",
             NO_DIFFERENCE: "none", "A closer": "A", "B closer (mean only)": "B"}
    for word, side in words.items():
        assert lpips_side(word) == side and lpips_side(word + "; invisible") == side
