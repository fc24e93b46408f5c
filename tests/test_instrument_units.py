"""The app-as-instrument pieces below the UI: form parsing, visibility, difference maps, Bradley–Terry, exports."""
import json
import math
import zipfile

import numpy as np
import pytest
from PIL import Image

from comparisons.analysis.leaderboard import bradley_terry, config_label, leaderboard, matches
from comparisons.core.config import EXPLANATIONS, PAIRINGS, SamplerConfig
from comparisons.core.visibility import amplified_difference, difference_heatmap, visibility
from comparisons.errors import ConfigError
from comparisons.results.export import pair_zip, pairs_frame
from ui.inputs import CUSTOM_FIELDS, UNCONDITIONAL, custom_config, parse_prompt, parse_seed, preset_configs

PANEL = {"sampler": "heun", "steps": "4", "schedule": "karras", "rho": "7", "sigma_min_rule": "model",
         "final_zero": True, "quantize": "off", "s_churn": "20", "s_tmin": "0", "s_tmax": "", "s_noise": "1",
         "eta": "1", "guidance_scale": "3"}


def test_an_empty_optional_field_is_none_not_zero():
    cfg = custom_config("A", PANEL)
    assert cfg.s_tmax is None and cfg.s_churn == 20 and cfg.steps == 4
    # None means no upper bound: churn acts at every sigma, so it changes the image (s_tmax 0 would not).
    assert math.isinf(cfg.sampler_kwargs()["s_tmax"])
    assert set(PANEL) == {f for f, _, _ in CUSTOM_FIELDS}


@pytest.mark.parametrize("field, value, message", [
    ("steps", "0", "steps of config B must be ≥ 1"),
    ("steps", "3.7", "steps of config B must be a whole number"),
    ("steps", "", "steps of config B is empty"),
    ("rho", "abc", "rho of config B must be a number"),
    ("s_churn", "nan", "s_churn of config B must be a finite number"),
    ("s_tmin", "50", "config B: s_tmin (50.0) must not exceed s_tmax (1.0)"),
    ("s_noise", "-1", "config B: s_noise must be between 0 and 10"),
])
def test_custom_fields_are_validated_with_the_field_and_config_named(field, value, message):
    values = {**PANEL, "s_tmax": "1", field: value}
    with pytest.raises(ConfigError) as err:
        custom_config("B", values)
    assert message in str(err.value)


def test_seed_and_prompt_rules():
    assert parse_seed("12") == 12 and parse_seed(" 7 ") == 7
    for bad in ("3.7", "", "-1", "1e30", "x"):
        with pytest.raises(ConfigError, match="seed"):
            parse_seed(bad)
    assert parse_prompt(UNCONDITIONAL) == "" and parse_prompt("a red circle") == "a red circle"
    with pytest.raises(ConfigError, match="prompt is empty"):
        parse_prompt("   ")


def test_preset_configs_use_the_top_level_fields():
    a, b = preset_configs("final-zero", "6", "euler", "2.5")
    assert (a.steps, a.sampler, a.guidance_scale, a.final_zero) == (6, "euler", 2.5, True)
    assert (b.steps, b.final_zero) == (6, False)
    assert set(EXPLANATIONS) >= set(PAIRINGS)


def test_visibility_line():
    base = np.full((32, 32, 3), 100, np.uint8)
    one = base.copy()
    one[0, 0, 0] = 101                      # 1/255 at one pixel: below visibility
    v = visibility(Image.fromarray(base), Image.fromarray(one), lpips=0.2)
    assert v["below"] and v["max_abs_diff"] == 1 and v["visible_share"] == 0 and "Below visibility" in v["sentence"]
    big = base.copy()
    big[:16] = 140                          # half the pixels by 40/255
    v = visibility(Image.fromarray(base), Image.fromarray(big), lpips=0.2)
    assert not v["below"] and v["visible_share"] == 0.5 and v["max_abs_diff"] == 40
    # A large pixel difference but LPIPS under the floor still reads as below visibility.
    assert visibility(Image.fromarray(base), Image.fromarray(big), lpips=0.001)["below"]
    assert visibility(Image.fromarray(base), Image.fromarray(base), lpips=0.0)["sentence"].startswith("The two")


def test_difference_map_is_in_absolute_units():
    base = np.zeros((4, 4, 3), np.uint8)
    small, large = base.copy(), base.copy()
    small[0, 0] = 1
    large[0, 0] = 17
    # Normalised to its own maximum both would be equally bright; in absolute units they are not.
    s, lg = difference_heatmap(base, small)[0, 0], difference_heatmap(base, large)[0, 0]
    assert s.sum() < lg.sum()
    # Gain scales the value: 1/255 x 17 lands where 17/255 x 1 does.
    assert (difference_heatmap(base, small, 16)[0, 0].astype(int) - difference_heatmap(base, large, 1)[0, 0]).max() <= 4
    amp = amplified_difference(base, small, 64)
    assert amp[0, 0].tolist() == [64, 64, 64] and amp[1, 1].tolist() == [0, 0, 0]
    with pytest.raises(ConfigError, match="gain"):
        amplified_difference(base, small, 3)


def test_bradley_terry_hand_computed_three_configs():
    # A beat B 2:1 and B beat C 2:1 (a tree of matches): the likelihood is maximal where
    # p_A / p_B = 2 and p_B / p_C = 2, so strengths 4 : 2 : 1, i.e. log-strengths ln2, 0, -ln2 around 0.
    games = [("A", "B", 1)] * 2 + [("B", "A", 1)] + [("B", "C", 1)] * 2 + [("C", "B", 1)]
    s = bradley_terry(games)
    assert s["A"] == pytest.approx(math.log(2), abs=1e-7)
    assert s["B"] == pytest.approx(0, abs=1e-7)
    assert s["C"] == pytest.approx(-math.log(2), abs=1e-7)


def test_bradley_terry_solves_the_score_equations_on_a_cycle():
    games = ([("A", "B", 1)] * 3 + [("B", "A", 1)] + [("B", "C", 1)] * 2 + [("C", "B", 1)] * 2
             + [("C", "A", 1)] + [("A", "C", 1)] * 2)
    s = bradley_terry(games)
    p = {k: math.exp(v) for k, v in s.items()}
    for i in p:  # at the maximum, each player's wins equal their expected wins
        wins = sum(w for a, _, w in games if a == i)
        expected = sum(w * p[i] / (p[i] + p[b if a == i else a]) for a, b, w in games if i in (a, b))
        assert wins == pytest.approx(expected, abs=1e-6)


def _vote(a, b, winner):
    return {"config_a": a.to_json(), "config_b": b.to_json(), "winner": winner}


def test_leaderboard_ranks_configs_with_intervals_and_counts():
    a, b, c = (SamplerConfig(steps=n) for n in (4, 8, 16))
    votes = ([_vote(a, b, "A")] * 2 + [_vote(a, b, "B")] + [_vote(b, c, "A")] * 2 + [_vote(b, c, "B")]
             + [_vote(a, c, "both_bad")] + [_vote(a, a, "A")])
    rows = leaderboard(votes, resamples=100, seed=1)
    assert [r["label"] for r in rows] == ["heun 4 steps", "heun 8 steps", "heun 16 steps"]
    top = rows[0]
    assert top["elo"] == pytest.approx(1000 + 400 * math.log10(2), abs=0.01)  # ln2 on the Elo scale
    assert top["votes"] == 4 and top["wins"] == 2 and top["losses"] == 1  # both-bad counted as a vote only
    assert all(r["elo_low"] <= r["elo"] <= r["elo_high"] for r in rows) and not top["regularized"]
    assert rows == leaderboard(votes, resamples=100, seed=1)  # seeded bootstrap
    # An undefeated config would have infinite strength: a weak prior keeps it finite, and says so.
    rows = leaderboard([_vote(a, b, "A")] * 3, resamples=20)
    assert rows[0]["regularized"] and math.isfinite(rows[0]["elo"]) and rows[0]["elo"] > rows[1]["elo"]
    assert matches([_vote(a, b, "tie")]) == [(a.to_json(), b.to_json(), 0.5), (b.to_json(), a.to_json(), 0.5)]
    assert config_label(SamplerConfig(quantize="paper").to_json()) == "heun 25 steps, quantize=paper"


def test_pairs_csv_has_a_column_per_config_field_and_pair_zip(tmp_path):
    from comparisons.results.store import ResultsStore
    store = ResultsStore(tmp_path / "r.db")
    a, b = SamplerConfig(quantize="paper"), SamplerConfig(s_churn=5.0)
    imgs = [store.save_image(Image.new("RGB", (8, 8), c), {"side": c}) for c in ("red", "blue")]
    pid = store.record_pair(pairing="custom", model="embedded", prompt="a red circle", seed=3, config_a=a,
                            config_b=b, image_a=imgs[0], image_b=imgs[1],
                            metrics={"lpips": 0.1, "psnr": 20.0, "ssim": 0.9, "max_abs_diff": 9},
                            sigmas_a=[1.0, 0.0], sigmas_b=[1.0, 0.0], lockstep=False, seconds=0.1)
    frame = pairs_frame(store.pairs())
    assert frame["a_quantize"].tolist() == ["paper"] and frame["b_quantize"].tolist() == ["off"]
    assert frame["b_s_churn"].tolist() == [5.0] and frame["a_s_tmax"].isna().all()
    path = pair_zip(store, pid, tmp_path / "out")
    with zipfile.ZipFile(path) as z:
        assert sorted(z.namelist()) == ["A.png", "B.png", "pair.json"]
        info = json.loads(z.read("pair.json"))
        assert info["config_a"]["quantize"] == "paper" and info["seed"] == 3
        assert z.read("A.png") == (store.path.parent / imgs[0]).read_bytes()
