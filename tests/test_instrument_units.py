"""The app-as-instrument pieces below the UI: form parsing, visibility, difference maps, Bradley–Terry, exports."""
import json
import math
import zipfile

import numpy as np
import pytest
from PIL import Image

from comparisons.analysis.leaderboard import bradley_terry, config_label, leaderboard, matches
from comparisons.analysis.stats import tally
from comparisons.core.config import EXPLANATIONS, PAIRINGS, SamplerConfig
from comparisons.core.visibility import (
    DISPLAY_MAX,
    FLIP_VISIBLE,
    amplified_difference,
    difference_heatmap,
    flip_map,
    visibility,
)
from comparisons.errors import ConfigError
from comparisons.results.export import pair_zip, pairs_frame
from ui import views
from ui.inputs import CUSTOM_FIELDS, UNCONDITIONAL, custom_config, parse_prompt, parse_seed, preset_configs

PANEL = {"sampler": "heun", "steps": "4", "schedule": "karras", "rho": "7", "sigma_min_rule": "model",
         "final_zero": True, "quantize": "off", "s_churn": "20", "s_tmin": "0", "s_tmax": "", "s_noise": "1",
         "eta": "1", "guidance_scale": "3", "beta_alpha": "0.6", "beta_beta": "0.6", "ays_model": "SD1", "shift": "",
         "convention": "kdiffusion"}


def test_an_empty_optional_field_is_none_not_zero():
    cfg = custom_config("A", PANEL)
    assert cfg.s_tmax is None and cfg.shift is None and cfg.s_churn == 20 and cfg.steps == 4
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
    ("beta_alpha", "0", "config B: beta_alpha must be between 0.01 and 100"),
    ("sigma_min_rule", "penultimate_steps", None),  # refused with schedule=simple below
])
def test_custom_fields_are_validated_with_the_field_and_config_named(field, value, message):
    values = {**PANEL, "s_tmax": "1", field: value}
    if message is None:  # a sigma_min rule on a schedule of training timesteps: refused, naming the field
        values["schedule"] = "simple"
        message = "config B: sigma_min_rule applies to the schedules between a sigma_min and a sigma_max"
    with pytest.raises(ConfigError) as err:
        custom_config("B", values)
    assert message in str(err.value)
    assert err.value.field in (f"B:{field}", "B")


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
    # FLIP decides, not LPIPS: a large pixel difference is visible whatever LPIPS says.
    assert not visibility(Image.fromarray(base), Image.fromarray(big), lpips=0.001)["below"]
    same = visibility(Image.fromarray(base), Image.fromarray(base), lpips=0.0)
    assert same["sentence"].startswith("The two") and same["below"] and same["flip_max"] == 0


def _embedded_images():
    from comparisons.core.engine import Sample, sample_arms
    from sampler_lib.models import load_model
    from sampler_lib.models.shapes import COLORS
    model = load_model("embedded", device="cpu")
    out = sample_arms(model, [SamplerConfig(sampler="heun", steps=10)], [Sample(f"a {c} ring", 3) for c in COLORS])
    return [np.asarray(im) for im in model.decode(out[:, 0])]


def test_flip_rule_on_cases_a_person_can_check():
    """+-1/255 anywhere (noise, or a uniform shift) is below visibility on every colour; +-3/255 noise and one
    pixel off by 64/255 are visible (+-2/255 noise straddles the threshold: 0.09-0.14). The figures the
    threshold sits between are in core/visibility.py and the README."""
    rng = np.random.default_rng(0)
    for image in _embedded_images():
        a = image.astype(np.int16)
        changed = {"pm1": a + rng.choice([-1, 1], a.shape), "plus1": a + 1, "pm3": a + rng.choice([-3, 3], a.shape)}
        pixel = a.copy()
        pixel[16, 16] += 64
        changed["pixel64"] = pixel
        v = {k: visibility(image, np.clip(b, 0, 255).astype(np.uint8), lpips=0.0) for k, b in changed.items()}
        assert v["pm1"]["below"] and v["plus1"]["below"], v
        assert not v["pm3"]["below"] and not v["pixel64"]["below"], v
        assert v["pm1"]["flip_max"] < FLIP_VISIBLE <= v["pm3"]["flip_max"]
    # The map is computed on the images as displayed: a 32x32 image is shown 8x, so the map is 256x256.
    assert flip_map(image, image).shape == (DISPLAY_MAX, DISPLAY_MAX)


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
    rows = leaderboard(votes, min_decisive=3)
    assert [r["label"] for r in rows] == ["heun 4 steps", "heun 8 steps", "heun 16 steps"]
    top = rows[0]
    assert top["elo"] == pytest.approx(1000 + 400 * math.log10(2), abs=0.01)  # ln2 on the Elo scale
    assert top["votes"] == 4 and top["wins"] == 2 and top["losses"] == 1  # both-bad counted as a vote only
    assert all(r["elo_low"] <= r["elo"] <= r["elo_high"] for r in rows) and not top["regularized"]
    assert [r["rank"] for r in rows] == [1, 2, 3] and {r["group"] for r in rows} == {1}
    # An undefeated config would have infinite strength: a weak prior keeps it finite, and says so.
    rows = leaderboard([_vote(a, b, "A")] * 3)
    assert rows[0]["regularized"] and math.isfinite(rows[0]["elo"]) and rows[0]["elo"] > rows[1]["elo"]


def test_leaderboard_one_table_per_group_and_honest_sparse_intervals():
    a, b, c, d, e, f = (SamplerConfig(steps=n) for n in (4, 5, 10, 12, 25, 30))
    # {a, b, c} met each other often; {d, e} met once (d won); f never met anyone but itself.
    votes = ([_vote(a, b, "A")] * 6 + [_vote(a, b, "B")] * 3 + [_vote(b, c, "A")] * 6 + [_vote(b, c, "B")] * 3
             + [_vote(a, c, "A")] * 4 + [_vote(a, c, "B")] * 2 + [_vote(d, e, "A")] + [_vote(f, f, "B")])
    rows = leaderboard(votes)
    groups = {}
    for r in rows:
        groups.setdefault(r["group"], []).append(r["label"])
    assert groups == {1: ["heun 4 steps", "heun 5 steps", "heun 10 steps"], 2: ["heun 12 steps", "heun 25 steps"]}
    one = next(r for r in rows if r["label"] == "heun 12 steps")
    # A single win: listed, not ranked, and its interval includes the average (1000), as a single vote should.
    assert one["rank"] is None and not one["ranked"] and one["elo_low"] < 1000 < one["elo_high"]
    assert one["elo_high"] - one["elo_low"] > 800
    # Hand-computed: with the prior of half a win and half a loss against the average (strength 1), the winner's
    # score equation is 1 + 0.5 = p/(p+q) + 2 * 0.5 * p/(p+1), the loser's 0.5 = q/(p+q) + q/(q+1); adding them
    # gives q = 1/p, so the log-strengths are s and -s with 1.5 = 1/(1+e^(-2s)) + 1/(1+e^(-s)). The information
    # is P(1-P) per game (P = 1/(1+e^(-2s))) plus 2 * 0.5 * Q(1-Q) from the prior (Q = 1/(1+e^(-s))).
    from scipy.optimize import brentq
    s = brentq(lambda x: 1 / (1 + math.exp(-2 * x)) + 1 / (1 + math.exp(-x)) - 1.5, 0, 10)
    big_p, q = 1 / (1 + math.exp(-2 * s)), 1 / (1 + math.exp(-s))
    info = np.array([[big_p * (1 - big_p) + q * (1 - q), -big_p * (1 - big_p)],
                     [-big_p * (1 - big_p), big_p * (1 - big_p) + q * (1 - q)]])
    se = math.sqrt(np.linalg.inv(info)[0, 0])
    elo = 400 / math.log(10)
    assert one["elo"] == pytest.approx(1000 + elo * s, abs=0.01)
    assert (one["elo_low"], one["elo_high"]) == pytest.approx((1000 + elo * (s - 1.959964 * se),
                                                               1000 + elo * (s + 1.959964 * se)), abs=0.05)
    # The well-voted group is ranked (>= 5 decisive votes each) and on its own scale.
    assert [r["rank"] for r in rows if r["group"] == 1] == [1, 2, 3]
    html = views.leaderboard_html(rows)
    assert html.count("<table") == 2 and "unranked" in html
    assert "separate tables (2 here)" in views.leaderboard_note(rows)
    # A tie is half a win each way; games between the same two configs are summed into one weight.
    assert sorted(matches(tally([_vote(a, b, "tie")] * 3 + [_vote(a, b, "A")]))) == sorted(
        [(a.to_json(), b.to_json(), 2.5), (b.to_json(), a.to_json(), 1.5)])
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
