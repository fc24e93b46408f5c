"""#36 item 4: a study's references cost what the stated accuracy needs. --reference-steps auto climbs the ladder
only as far as the evidence asks, through the reference cache; the CLI and the report say what the references
cost."""
import io

import numpy as np
import pytest

from comparisons.core.grid import REFERENCE_TOLERANCE, StudySpec
from comparisons.results.store import ResultsStore
from comparisons.specs import questions_from
from comparisons.workflows.study import choose_reference_steps
from tests.fakes import FakeModel


class MeanAbs:
    """A stand-in for LPIPS: mean absolute difference of two images, in [0, 1]."""

    def batch(self, a, b):
        return [float(np.abs(x.astype(float) - y.astype(float)).mean() / 255) for x, y in zip(a, b)]


def _spec(tolerance, ladder=(4, 8, 16, 32)):
    return StudySpec(name="ladder", model="fake", questions=questions_from("final-zero"), samplers=("euler",),
                     steps=(3,), prompts=("a red circle",), seeds=(0, 1), reference_check=2,
                     reference_ladder=ladder, reference_tolerance=tolerance)


def _choose(path, tolerance):
    done = []
    spec, choice = choose_reference_steps(ResultsStore(path), FakeModel(), MeanAbs(), _spec(tolerance),
                                          progress=done.append)
    assert sum(done) == choice.work  # every item-step the engine ran is counted
    return spec, choice


def test_auto_picks_the_first_rung_within_the_tolerance_of_the_next_and_computes_no_more(tmp_path):
    # Tolerance 0: no rung passes, every rung is computed once (2 samples), the top one is used.
    spec, none = _choose(tmp_path / "a.db", 0.0)
    assert not none.converged and none.chosen == 32 and spec.reference.steps == 32
    assert none.work == 2 * (4 + 8 + 16 + 32)
    gaps = [mx for _, _, mx, _ in none.differences]
    assert [(a, b) for a, b, *_ in none.differences] == [(4, 8), (8, 16), (16, 32)]
    assert gaps[0] > gaps[1] > gaps[2] > 0  # the reference converges as the rungs double
    # A tolerance between the first two gaps picks 8; on a fresh store it computes 4, 8 and 16 only.
    between = (gaps[0] + gaps[1]) / 2
    spec, choice = _choose(tmp_path / "b.db", between)
    assert choice.converged and choice.chosen == 8 and spec.reference.steps == 8
    assert choice.work == 2 * (4 + 8 + 16) and len(choice.differences) == 2
    # A loose tolerance stops at the first comparison: 4 and 8 computed.
    assert _choose(tmp_path / "c.db", 1.0)[1].work == 2 * (4 + 8)
    # The rungs are cached references: the same choice again computes nothing and agrees.
    again = _choose(tmp_path / "b.db", between)[1]
    assert again.work == 0 and again.chosen == 8 and again.differences == choice.differences
    assert "8 vs 16 steps" in choice.sentence() and "-> 8 steps" in choice.sentence()


def test_auto_studies_have_their_own_identity_and_old_ones_keep_theirs():
    plain = StudySpec(name="x", model="embedded", questions=questions_from("final-zero,discretization"),
                      samplers=("heun",), steps=(4, 10), prompts=("a red circle",), seeds=(0, 1))
    assert plain.study_id == "fec7bec7b30c94f6" and "reference_ladder" not in plain.to_json()
    auto = _spec(REFERENCE_TOLERANCE)
    assert StudySpec.from_json(auto.to_json()) == auto
    assert auto.rung(8).steps == 8 and auto.study_id != _spec(REFERENCE_TOLERANCE, (4, 8)).study_id


def test_the_tolerance_is_a_tenth_of_the_smallest_effect_a_verdict_resolves():
    from comparisons.analysis.stats import EQUIVALENCE_MARGIN
    assert REFERENCE_TOLERANCE == pytest.approx(EQUIVALENCE_MARGIN / 10)


def test_cli_auto_reference_says_its_choice_and_what_references_cost(tmp_path):
    """Through the CLI on the embedded model: the ladder's choice printed and in the report, and the closing line
    with the references' item-steps and share of the time; a rerun computes no reference."""
    from comparisons.cli import main as cli_main
    args = ["study", "--questions", "final-zero", "--samplers", "euler", "--steps", "2", "--seeds", "0-1",
            "--results", str(tmp_path / "r.db"), "--out", str(tmp_path / "out"), "--reference-steps", "auto",
            "--reference-ladder", "3,6", "--reference-tolerance", "0.9", "--reference-check", "1"]
    printed = io.StringIO()
    assert cli_main(args, out=printed) == 0
    text = printed.getvalue()
    # Rung 3 (and 6, to judge it) on the one checked sample; the study then needs 3-step references for the other
    # sample and the paper-mode check: 3 + 6 ladder, 3 + 3 study.
    assert "3 vs 6 steps: LPIPS max" in text and "-> 3 steps" in text and "reference heun 3 steps" in text
    line = next(x for x in text.splitlines() if x.startswith("references: "))
    assert "15 item-steps (ladder 9 + study 6, samples x steps) in " in line and "%)" in line
    report = (tmp_path / "out" / "report.html").read_text()
    assert "Reference steps chosen as the smallest rung of 3, 6" in report and "References: 15 item-steps" in report
    again = io.StringIO()
    assert cli_main(args, out=again) == 0
    assert "references: none computed (all cached)" in again.getvalue() and "-> 3 steps" in again.getvalue()
