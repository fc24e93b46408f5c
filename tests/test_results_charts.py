"""Issue #32: the Results tab's charts never pool different samplers or different comparisons (config pairs) under
one label, and each label names what it draws."""
import sqlite3

import pytest
from PIL import Image

from comparisons.analysis import charts
from comparisons.analysis.charts import comparison_groups, pair_label, question_label
from comparisons.analysis.stats import by_question
from comparisons.core.config import SamplerConfig
from comparisons.results.store import ResultsStore
from comparisons.workflows import results

SAMPLERS = ("euler", "heun", "dpmpp_2m", "dpm_2", "lms", "euler_ancestral", "dpmpp_sde", "uni_pc", "ddim")
CUSTOM = (  # three different custom comparisons at 10 steps
    (SamplerConfig(sampler="uni_pc", steps=10, quantize="paper"), SamplerConfig(sampler="uni_pc", steps=10)),
    (SamplerConfig(sampler="euler", steps=10), SamplerConfig(sampler="heun", steps=10)),
    (SamplerConfig(sampler="heun", steps=10, rho=7.0, guidance_scale=4.02), SamplerConfig(sampler="heun", steps=10,
                                                                                         rho=5.0, guidance_scale=4.02)),
)


def _store(path):
    """A store with final-zero at 10 steps under nine samplers (15 pairs) and three different custom comparisons."""
    store = ResultsStore(path)
    image = store.save_image(Image.new("RGB", (2, 2)), {})
    arms = [(("final-zero", SamplerConfig(sampler=s, steps=10), SamplerConfig(sampler=s, steps=10, final_zero=False)))
            for s in SAMPLERS] + [(("final-zero",) + (SamplerConfig(sampler=s, steps=10),
                                                     SamplerConfig(sampler=s, steps=10, final_zero=False)))
                                  for s in SAMPLERS[:6]]
    arms += [("custom", a, b) for a, b in CUSTOM] * 2
    with store._transaction() as conn:
        for n, (pairing, a, b) in enumerate(arms):
            store._insert_pair(conn, pairing=pairing, model="m", prompt="p", seed=n, config_a=a, config_b=b,
                               image_a=image, image_b=image, metrics={"lpips": 0.01 + n / 100},
                               sigmas_a=[1.0], sigmas_b=[1.0], lockstep=True, seconds=0.0)
    return store


def test_lpips_groups_are_one_comparison_each(tmp_path):
    store = _store(tmp_path / "r.db")
    groups = comparison_groups(store.lpips_pairs())
    assert len(groups) == len(SAMPLERS) + len(CUSTOM)  # not 2 pooled groups ("final-zero · 10 steps", "custom ...")
    assert sum(map(len, groups.values())) == 15 + 6
    for s in SAMPLERS:
        label = f"final-zero · {s} 10 steps · final_zero True vs False"
        assert label in groups and len(groups[label]) == (2 if s in SAMPLERS[:6] else 1)
    assert {k: len(v) for k, v in groups.items() if k.startswith("custom")} == {
        "custom · uni_pc 10 steps · quantize paper vs off": 2,
        "custom · euler vs heun 10 steps · A = B": 2,
        "custom · heun 10 steps · guidance_scale 4.02 · rho 7 vs 5": 2}


def test_lpips_chart_draws_each_comparison_under_its_own_label(tmp_path, monkeypatch):
    store = _store(tmp_path / "r.db")
    drawn = []

    def capture(fig, dpi=100):
        ax = fig.axes[0]
        drawn.append(([t.get_text() for t in ax.get_yticklabels()], ax.get_ylabel()))
        charts._plt().close(fig)
        return b"png"
    monkeypatch.setattr(charts, "figure_png", capture)
    results._cache.clear()
    out = results.charts(store)
    assert out == {"win_rate_png": b"png", "lpips_png": b"png"}
    labels, ylabel = drawn[1]
    assert len(labels) == len(SAMPLERS) + len(CUSTOM) and len(set(labels)) == len(labels)
    assert any(label.startswith("final-zero · dpmpp_2m 10 steps · final_zero True vs False (n=2") for label in labels)
    assert "comparison" in ylabel


def test_a_studys_pairs_stay_apart_from_the_apps(tmp_path):
    store = _store(tmp_path / "r.db")
    pair_id = store.pairs()[0]["pair_id"]
    with sqlite3.connect(store.path) as conn:
        conn.execute("PRAGMA foreign_keys = OFF")
        conn.execute("INSERT INTO study_rows (study_id, question, sampler, steps, prompt, seed, pair_id, ref_key) "
                     "VALUES ('s', 'final-zero', 'euler', 10, 'p', 0, ?, 'r')", (pair_id,))
    groups = comparison_groups(store.lpips_pairs())
    assert groups["final-zero · euler 10 steps · final_zero True vs False · study"] == [0.01]
    assert len(groups["final-zero · euler 10 steps · final_zero True vs False"]) == 1  # the app's other pair


def test_win_rate_labels_tell_comparisons_apart():
    votes = [{"pairing": "custom", "config_a": a.to_json(), "config_b": b.to_json(), "prompt": "p", "winner": "A",
              "left_config": "A"} for a, b in CUSTOM]
    labels = [question_label(r) for r in by_question(votes)]
    assert len(set(labels)) == 3 and all("custom · " in label for label in labels)


@pytest.mark.parametrize("a, b, want", [
    ({}, {"final_zero": False}, "final-zero · heun 25 steps · final_zero True vs False"),
    ({"sampler": "euler", "steps": 4}, {"sampler": "euler", "steps": 8}, "final-zero · euler 4 vs 8 steps · A = B"),
    ({"guidance_scale": 4.0200000000000005}, {"guidance_scale": 4.0200000000000005, "eta": 0.5},
     "final-zero · heun 25 steps · guidance_scale 4.02 · eta 1 vs 0.5"),
])
def test_pair_label(a, b, want):
    assert pair_label("final-zero", SamplerConfig(**a).to_json(), SamplerConfig(**b).to_json()) == want
