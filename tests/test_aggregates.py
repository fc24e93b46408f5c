"""Vote statistics from SQL counts (#26): the same numbers as the row-by-row computation they replaced, and as the
output that computation gave on a fixed store before the change (tests/data/results_before_26.json, written by
the pre-#26 code from tests.fakes.vote_store(seed=7))."""
import json
import math
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from comparisons.analysis.leaderboard import leaderboard, leaderboard_tally
from comparisons.analysis.stats import by_question, by_question_tally, tally
from comparisons.core.config import SamplerConfig
from comparisons.results.store import ResultsStore
from tests.fakes import vote_store

BEFORE = json.loads((Path(__file__).parent / "data" / "results_before_26.json").read_text())
# Counts, ranks and p-values are exact; strengths come from an iterative fit whose sums now run over one weight
# per pair of configs instead of one per vote, so they agree to rounding, not bit for bit.
FLOAT_TOLERANCE = 1e-9


def same(got, want, path="row"):
    """Equal, with floats within FLOAT_TOLERANCE (NaN equals NaN); a readable failure names the field."""
    if isinstance(want, dict):
        assert set(got) == set(want), f"{path}: fields {sorted(set(got) ^ set(want))}"
        for k in want:
            same(got[k], want[k], f"{path}.{k}")
    elif isinstance(want, list):
        assert len(got) == len(want), f"{path}: {len(got)} rows, want {len(want)}"
        for i, (g, w) in enumerate(zip(got, want)):
            same(g, w, f"{path}[{i}]")
    elif isinstance(want, float) and not isinstance(got, bool):
        if math.isnan(want) or math.isinf(want):
            assert (math.isnan(got) and math.isnan(want)) or got == want, f"{path}: {got} != {want}"
        else:
            assert got == pytest.approx(want, rel=FLOAT_TOLERANCE, abs=FLOAT_TOLERANCE), f"{path}: {got} != {want}"
    else:
        assert got == want, f"{path}: {got!r} != {want!r}"


@pytest.mark.parametrize("name, kwargs", [("mixed", {}), ("one_question", {"one_question": True, "pairs": 50,
                                                                             "votes": 900})])
def test_sql_counts_give_the_numbers_of_the_code_before(tmp_path, name, kwargs):
    store = vote_store(tmp_path / f"{name}.db", seed=7, **kwargs)
    counts = store.vote_tally()
    assert sum(counts.values()) == len(store.votes())
    rows = json.loads(json.dumps(by_question_tally(counts)))  # through JSON as the file was: inf/NaN kept
    same(rows, BEFORE[name]["by_question"], "by_question")
    board = json.loads(json.dumps(leaderboard_tally(counts)))
    same(board, BEFORE[name]["leaderboard"], "leaderboard")
    # The exact integers the file holds are the same integers, not merely close ones.
    assert [(r["a_wins"], r["b_wins"], r["ties"], r["both_bad"], r["p_value"]) for r in rows] == \
        [(r["a_wins"], r["b_wins"], r["ties"], r["both_bad"], r["p_value"]) for r in BEFORE[name]["by_question"]]


CONFIGS = [SamplerConfig(steps=s).to_json() for s in (4, 8, 16)]
VOTE = st.tuples(st.integers(0, 5), st.sampled_from(["A", "B", "tie", "both_bad"]), st.sampled_from("AB"))
PAIR = st.tuples(st.sampled_from(["custom", "paper"]), st.sampled_from(CONFIGS), st.sampled_from(CONFIGS),
                 st.sampled_from(["a red circle", "a blue square"]))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pairs=st.lists(PAIR, min_size=1, max_size=6), votes=st.lists(VOTE, max_size=40))
def test_sql_counts_equal_the_row_by_row_statistics_on_random_stores(tmp_path_factory, pairs, votes):
    """Random small stores: the SQL tally is the Python tally of every vote row, so every statistic agrees."""
    from PIL import Image
    store = ResultsStore(tmp_path_factory.mktemp("agg") / "r.db")
    image = store.save_image(Image.new("RGB", (2, 2)), {})
    with store._transaction() as conn:
        ids = [store._insert_pair(conn, pairing=p, model="m", prompt=prompt, seed=0,
                                  config_a=SamplerConfig.from_json(a), config_b=SamplerConfig.from_json(b),
                                  image_a=image, image_b=image, metrics={}, sigmas_a=[1.0], sigmas_b=[1.0],
                                  lockstep=True, seconds=0.0)
               for p, a, b, prompt in pairs]
        conn.executemany("INSERT INTO votes (pair_id, winner, left_config, session, note, created) "
                         "VALUES (?, ?, ?, ?, '', 0)",
                         [(ids[i % len(ids)], w, left, f"s{k}") for k, (i, w, left) in enumerate(votes)])
    rows = store.votes()
    assert store.vote_tally() == tally(rows)
    same(by_question_tally(store.vote_tally()), by_question(rows))
    same(leaderboard_tally(store.vote_tally()), leaderboard(rows))


def test_win_rate_chart_draws_the_most_voted_questions_in_table_order():
    from comparisons.analysis.charts import chart_questions, win_rate_figure
    rows = [{"decisive": n, "name": i} for i, n in enumerate([3, 0, 9, 1, 7, 2])]
    kept, asked = chart_questions(rows, limit=3)
    assert asked == 5 and [r["name"] for r in kept] == [0, 2, 4]  # 3, 9 and 7 votes, as the table orders them
    rows = BEFORE["mixed"]["by_question"]
    png = win_rate_figure(rows)  # 232 questions: 30 drawn, a figure of a readable height
    import io

    from PIL import Image
    assert Image.open(io.BytesIO(png)).height < 2000


def test_lpips_chart_groups_by_step_count_and_counts_identical_pairs(tmp_path):
    """The LPIPS chart's groups: one comparison each (app pairs apart from a study's); identical pairs
    (LPIPS 0) are counted, not drawn at a made-up value on the log axis."""
    import io

    from PIL import Image

    from comparisons.analysis.charts import lpips_figure
    store = ResultsStore(tmp_path / "r.db")
    image = store.save_image(Image.new("RGB", (2, 2)), {})
    with store._transaction() as conn:
        for steps, lpips in ((4, 0.0), (4, 0.02), (10, 0.1)):
            store._insert_pair(conn, pairing="final-zero", model="m", prompt="p", seed=0,
                               config_a=SamplerConfig(steps=steps),
                               config_b=SamplerConfig(steps=steps, final_zero=False),
                               image_a=image, image_b=image, metrics={"lpips": lpips}, sigmas_a=[1.0], sigmas_b=[1.0],
                               lockstep=True, seconds=0.0)
    from comparisons.analysis.charts import comparison_groups
    groups = comparison_groups(store.lpips_pairs())
    assert sorted(groups.values()) == [[0.0, 0.02], [0.1]]  # one comparison per step count, in the order stored
    assert all("final-zero" in label and "steps" in label for label in groups)
    for chart in (groups, {"final-zero · 4 steps": [0.0, 0.0]}, {}):  # all identical, and nothing at all
        assert Image.open(io.BytesIO(lpips_figure(chart))).width > 100
