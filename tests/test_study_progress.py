"""The study's progress on the command line (issue #32): each phase's bar timed by its own phase, and the work
after the arms (measuring, storing, the report) said as it happens."""
import io

from comparisons.cli import PhaseBars


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def test_each_bar_is_timed_by_its_own_phase():
    clock, err = Clock(), io.StringIO()
    bars = PhaseBars({"references": (100, "references", " item-steps"), "arms": (400, "arms", " item-steps"),
                      "measuring": (8, "measuring", " pairs"), "none": (0, "none", "")}, file=err, clock=clock)
    bars("references", 0)
    clock.t += 600            # ten minutes of references
    bars("references", 100)
    bars("arms", 0)           # the arms start now: their clock starts here, not with the study
    clock.t += 60
    bars("arms", 100)         # a quarter in one minute
    arms = bars.bars["arms"].format_dict
    assert arms["elapsed"] == 60 and arms["n"] == 100
    eta = (arms["total"] - arms["n"]) * arms["elapsed"] / arms["n"]
    assert eta == 180         # three minutes left, from the arms' own rate
    # Another phase's work does not count against the arms: their clock stops meanwhile.
    bars("measuring", 0)
    clock.t += 300
    bars("measuring", 8)
    bars("arms", 0)
    clock.t += 60
    bars("arms", 100)
    assert bars.bars["arms"].format_dict["elapsed"] == 120
    refs = bars.bars["references"].format_dict
    assert refs["n"] == 100 and refs["elapsed"] == 600 and "none" not in bars.bars  # frozen while others work
    bars("none", 5)           # a phase without work opens no bar
    bars.close()
    text = err.getvalue()
    assert "measuring" in text and "8/8" in text and "100/100" in text


def test_cli_study_reports_the_work_after_the_arms(tmp_path):
    from tests.conftest import run_cli
    code, out, err = run_cli(["study", "--questions", "final-zero", "--samplers", "euler", "--steps", "2",
                              "--seeds", "0-1", "--prompts", "a red circle", "--results", str(tmp_path / "r.db"),
                              "--out", str(tmp_path / "o"), "--reference", '{"steps": 4}', "--reference-check", "0"])
    text = "\n".join(err)
    assert code == 0, text
    # 2 references x 4 steps, 2 samples x 2 arms x 2 steps, 2 pairs measured, 2 rows stored, then the report.
    assert "8/8" in text and "measuring" in text and "2/2" in text and "storing" in text
    assert "writing the report of 2 rows" in text and "report written in" in text
    assert "final-zero" in out
