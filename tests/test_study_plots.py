"""Issue #32: a study's plots with --schedules (cells named question@schedule) are drawn, one figure per
question@schedule, in report.html and in the Study tab; the points drawn are counted from the figures' lines."""
import math

import pytest

from comparisons.analysis import charts
from comparisons.results.store import ResultsStore
from comparisons.workflows import report
from tests.conftest import run_cli

STEPS = (3, 5)


@pytest.fixture(scope="module")
def schedules_study(tmp_path_factory):
    """A tiny study with two schedules: one question, one sampler, two step counts, two seeds (embedded model)."""
    root = tmp_path_factory.mktemp("schedules")
    code, out, err = run_cli(_study_args(root))
    assert code == 0, (out, err)
    return root


def _study_args(root):
    return ["study", "--name", "two-schedules", "--questions", "final-zero", "--samplers", "euler", "--steps",
            ",".join(map(str, STEPS)), "--seeds", "0-1", "--prompts", "a red circle", "--schedules", "beta,normal",
            "--results", str(root / "r.db"), "--out", str(root / "out"), "--reference", '{"steps": 8}',
            "--reference-check", "1", "--batch", "4"]


def _points(line):
    return sum(math.isfinite(y) for y in line.get_ydata())


def _counting(drawn):
    """question_figure that records, per question, the points each of its two plots draws (named lines only: the
    0.5 guide is not data)."""
    def figure(question, cells, rows):
        fig = charts.question_axes(question, cells, rows)
        left, right = fig.axes[:2]
        drawn[question] = [sum(_points(line) for line in ax.lines if not line.get_label().startswith("_"))
                           for ax in (left, right)]
        drawn[question, "legend"] = [t.get_text() for t in left.get_legend().get_texts()]
        return charts.figure_png(fig)
    return figure


def test_report_and_study_tab_draw_one_plot_per_question_at_each_schedule(schedules_study, monkeypatch):
    store = ResultsStore(schedules_study / "r.db")
    drawn = {}
    monkeypatch.setattr(report, "question_figure", _counting(drawn))
    view = report.study_view(store, "two-schedules")
    questions = ["final-zero@beta", "final-zero@normal"]
    assert sorted(k for k in drawn if isinstance(k, str)) == questions
    for q in questions:
        # One sampler, arms A and B, at two step counts: 4 points of distance; A's closer-share at 2 step counts.
        assert drawn[q][0] == 2 * len(STEPS), drawn
        assert 1 <= drawn[q][1] <= len(STEPS), drawn
        assert drawn[q, "legend"] == ["euler · arm A", "euler · arm B"]
        assert f"<h4>{q}</h4>" in view["plots"]
    assert view["plots"].count('<img class="plot"') == 2


def test_the_written_report_has_the_schedules_plots(schedules_study):
    html = (schedules_study / "out" / "report.html").read_text()
    for q in ("final-zero@beta", "final-zero@normal"):
        assert f'<h4>{q}</h4><img class="plot"' in html
    # And the figure the report drew has data: the same numbers, redrawn from the store.
    store = ResultsStore(schedules_study / "r.db")
    from comparisons.analysis.cells import cell_stats
    from comparisons.core.grid import StudySpec
    study = store.study("two-schedules")
    rows = store.study_rows(study["study_id"])
    cells = cell_stats(StudySpec.from_json(study["spec"]), rows)
    fig = charts.question_axes("final-zero@beta", cells, rows)
    assert sum(_points(line) for line in fig.axes[0].lines) == 2 * len(STEPS)
    charts._plt().close(fig)


def test_report_fits_the_viewport_at_1280_and_390_px(schedules_study, browser):
    """report.html, with its widest parts (the verdict table, a campaign's table, the grid, the plots), never wider
    than the window: wide tables scroll inside their own box."""
    code, _, err = run_cli(["campaign", "create", "wide", "--study", "two-schedules", "--per-cell", "2",
                            "--results", str(schedules_study / "r.db")])
    assert code == 0, err
    code, _, err = run_cli(_study_args(schedules_study))  # the report gains the campaign's table
    assert code == 0, err
    report = schedules_study / "out" / "report.html"
    assert "Campaign wide" in report.read_text()
    for width in (1280, 390):
        ctx = browser.new_context(viewport={"width": width, "height": 900})
        page = ctx.new_page()
        page.goto(report.as_uri())
        page.wait_for_load_state("load")
        scroll, inner = page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
        assert scroll <= inner, (width, scroll)
        # At 1280 the verdict table needs no sideways scrolling of its own either.
        if width == 1280:
            box = page.evaluate("() => { const t = document.querySelector('table.verdicts');"
                                " return [t.scrollWidth, t.parentElement.clientWidth]; }")
            assert box[0] <= box[1], box
        ctx.close()


def test_study_tab_shows_both_plots_and_the_verdict_rules(schedules_study):
    from types import SimpleNamespace

    from comparisons.analysis.stats import EQUIVALENCE_MARGIN, INCONCLUSIVE_N
    from ui.study_tab import show_study
    lab = SimpleNamespace(store=ResultsStore(schedules_study / "r.db"))
    header, table, plots, _ = show_study(lab, "two-schedules")
    assert plots.count('<img class="plot"') == 2 and "final-zero@normal" in plots
    # Two samples per cell cannot be decided: said so, and the rule (with its margin) beside the table.
    assert "mean diff [95% CI]" in table and INCONCLUSIVE_N in table and "no difference" not in table.split(
        'id="study-verdict-rules"')[0]
    assert f"±{EQUIVALENCE_MARGIN}" in table.split('id="study-verdict-rules"')[1]
