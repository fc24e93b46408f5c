"""Votes nobody can forge, a hosted demo one visitor cannot break, inputs that cannot corrupt the store."""
import io
import json
import math
import os
import statistics
import threading
import time

import pandas as pd
import pytest
from gradio_client import Client
from hypothesis import given, settings
from hypothesis import strategies as st

from comparisons.cli import main as cli_main
from comparisons.core.config import (
    MAX_STEPS,
    QUANTIZE_MODES,
    RHO_RANGE,
    SCHEDULES,
    SIGMA_MAX_RANGE,
    SIGMA_MIN_RANGE,
    SIGMA_MIN_RULES,
    SamplerConfig,
    schedule,
)
from comparisons.errors import ConfigError, DuplicateVote, RateLimited, VoteRefused
from comparisons.results.export import escape_cell, export_csv
from comparisons.results.store import ResultsStore
from comparisons.workflows.blind import cast_vote
from sampler_lib import SAMPLERS
from sampler_lib._checks import check_sigmas
from tests.conftest import LiveApp, run_cli
from ui.limits import GenerationGate, client_address


def _pair(store, pid="p1"):
    from PIL import Image
    img = store.save_image(Image.new("RGB", (4, 4)), {})
    return store.record_pair(pairing="final-zero", model="embedded", prompt="a red circle", seed=1,
                             config_a=SamplerConfig(), config_b=SamplerConfig(final_zero=False), image_a=img,
                             image_b=img, metrics={}, sigmas_a=[1.0, 0.0], sigmas_b=[1.0, 0.5], lockstep=True,
                             seconds=0.1)


# -- votes belong to served pairs ----------------------------------------------------------------

def test_a_vote_needs_a_pair_served_to_that_session(tmp_path):
    store = ResultsStore(tmp_path / "r.db")
    pid = _pair(store)
    with pytest.raises(VoteRefused, match="not served to you"):
        cast_vote(store, pid, "left", "stranger")  # a real pair id, never served: refused
    serve_id = store.serve(pid, "alice", "B")
    assert len(serve_id) == 32 and serve_id != pid and store.serve(pid, "alice", "A") == serve_id
    with pytest.raises(VoteRefused):
        cast_vote(store, serve_id, "left", "mallory")  # someone else's serving: refused
    assert store.votes() == []
    vote = cast_vote(store, serve_id, "left", "alice", "crisp")
    assert vote["winner"] == "B" and vote["left"] == "B"
    with pytest.raises(DuplicateVote):
        cast_vote(store, serve_id, "right", "alice")
    assert [v["winner"] for v in store.votes()] == ["B"]


# -- rate limits and the generation gate ----------------------------------------------------------

class _Request:
    def __init__(self, host, forwarded=None):
        self.client = type("C", (), {"host": host})()
        self.headers = {"x-forwarded-for": forwarded} if forwarded else {}


def test_client_address_trusts_the_proxy_header_only_when_told():
    spoofed = _Request("127.0.0.1", "203.0.113.9, 10.1.1.1")
    assert client_address(spoofed) == "127.0.0.1"
    # Behind one trusted proxy the address it appended counts, never what the client wrote before it.
    assert client_address(spoofed, trust_proxy=True) == "10.1.1.1"
    assert client_address(spoofed, trust_proxy=True, hops=2) == "203.0.113.9"
    assert client_address(_Request("127.0.0.1"), trust_proxy=True) == "127.0.0.1"


def test_generation_gate_caps_each_address_and_serves_in_turn():
    gate, order, started, release = GenerationGate(per_address=2, slots=1), [], threading.Event(), threading.Event()

    def run(address, tag, hold):
        with gate.enter(address):
            order.append(tag)
            started.set()
            if hold:
                release.wait(60)  # held until the test has queued the others: their order, not a sleep's length

    def queued(address, n):  # the gate's own count, waited for (a busy machine starts a thread late)
        deadline = time.time() + 60
        while gate._in_flight.get(address, 0) < n:
            assert time.time() < deadline, address
            time.sleep(0.005)

    first = threading.Thread(target=run, args=("flood", "f1", True))
    first.start()
    started.wait(60)
    second = threading.Thread(target=run, args=("flood", "f2", False))
    second.start()
    queued("flood", 2)
    with pytest.raises(RateLimited, match="at most 2 generations at a time"):
        with gate.enter("flood"):
            pass
    other = threading.Thread(target=run, args=("visitor", "v1", False))
    other.start()
    queued("visitor", 1)
    release.set()
    for t in (first, second, other):
        t.join(60)
    assert order == ["f1", "f2", "v1"]  # first come, first served; the flood holds at most two places


# -- what public pages and exports show -----------------------------------------------------------

def test_page_payload_with_1000_pairs_and_5000_votes(tmp_path):
    import app
    from ui import results_tab

    def filled(name, n_pairs, n_votes):
        store = ResultsStore(tmp_path / name)
        pids = [_pair(store) for _ in range(n_pairs)]
        with store._transaction() as conn:
            for i in range(n_votes):
                conn.execute("INSERT INTO votes (pair_id, winner, left_config, session, note, created) "
                             "VALUES (?, ?, 'A', ?, ?, ?)", (pids[i % n_pairs], "AB"[i % 2], f"s{i}", "n" * 40, i))
        return store

    def shown(store, hosted, export):  # (what the tab shows, seconds for it and both CSVs)
        settings = app.Settings(app.parse_args(["--results", str(store.path)] + (["--hosted"] if hosted else [])))
        lab = type("L", (), {"store": store})()
        started = time.perf_counter()
        out = results_tab.refresh_results(lab, settings, 1, 1)
        out["charts"] = results_tab.charts_html(lab)
        assert not export.exists()  # a refresh writes nothing: the CSVs are made on a download click
        results_tab.export_files(lab, settings, export)
        return out, time.perf_counter() - started

    # The calibration, on this machine as loaded now: the same question with a tenth of the pairs and votes (after a
    # warm-up, so matplotlib's first import is in neither).
    shown(filled("warm-up.db", 1, 1), False, tmp_path / "warm-up")
    tenth = filled("tenth.db", 100, 500)
    calibration = {hosted: shown(tenth, hosted, tmp_path / f"tenth-{hosted}")[1] for hosted in (False, True)}
    store = filled("r.db", 1000, 5000)
    for hosted in (False, True):
        out, seconds = shown(store, hosted, tmp_path / f"export-{hosted}")
        size = sum(len(v.to_json()) if hasattr(v, "to_json") else len(json.dumps(v, default=str))
                   for v in out.values())
        assert size < 300_000, size
        # Statistics, two charts, the leaderboard and both CSVs over 5,000 votes grow at most linearly with the votes:
        # 10x a tenth's time at most, with 3x room for load that changes between the two (quadratic would be ~100x).
        assert seconds < 30 * calibration[hosted], (seconds, calibration)
        if hosted:
            assert out["pairs"] is None and out["votes"] is None  # aggregates only: no pair ids, sessions, notes
        else:
            assert len(out["pairs"]) == len(out["votes"]) == 50 and "page 1 of 100" in out["votes_note"]
    votes = pd.read_csv(tmp_path / "export-True" / "votes.csv")
    assert len(votes) == 5000 and "note" not in votes and not votes["session"].str.startswith("s").any()


def test_export_writes_both_files_or_neither(tmp_path, monkeypatch):
    store = ResultsStore(tmp_path / "r.db")
    _pair(store)
    out = tmp_path / "out"
    paths = export_csv(store, out)
    assert sorted(p.name for p in out.iterdir()) == ["pairs.csv", "votes.csv"]
    assert all(oct(p.stat().st_mode & 0o777) == "0o644" for p in paths)
    for p in paths:
        p.unlink()
    import comparisons.results.export as export

    def broken(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(export.pd.DataFrame, "to_csv", broken)
    with pytest.raises(OSError):
        export_csv(store, out)
    assert list(out.iterdir()) == []  # neither file, and no *.partial left behind


def test_stats_and_export_read_without_writing(tmp_path, monkeypatch, capsys):
    store = ResultsStore(tmp_path / "r.db")
    serve = store.serve(_pair(store), "s", "A")
    cast_vote(store, serve, "left", "s")
    for suffix in ("-wal", "-shm"):
        (tmp_path / f"r.db{suffix}").unlink(missing_ok=True)
    before = (tmp_path / "r.db").read_bytes()
    # As if the file and its folder were read-only (root ignores permission bits, so os.access decides); the
    # export folder is writable.
    (tmp_path / "csv").mkdir()
    monkeypatch.setattr(os, "access", lambda path, mode: mode != os.W_OK or str(path).startswith(str(tmp_path / "csv")))
    assert cli_main(["stats", "--results", str(tmp_path / "r.db")]) == 0
    assert cli_main(["export", "--results", str(tmp_path / "r.db"), "--out", str(tmp_path / "csv")]) == 0
    assert (tmp_path / "r.db").read_bytes() == before
    assert not (tmp_path / "r.db-wal").exists() and not (tmp_path / "r.db-shm").exists()
    assert len(pd.read_csv(tmp_path / "csv" / "votes.csv")) == 1


@pytest.mark.parametrize("value, escaped", [
    ("=1+1", True), (" =1+1", True), ("\n=1+1", True), ("\t=1", True), ("  @SUM(A1)", True),
    ("-2+3", True), ("+1", True), ("a red circle", False), ("{\"quantize\": \"paper\"}", False), ("", False),
])
def test_csv_formula_escaping(value, escaped):
    assert (escape_cell(value) == "'" + value) is escaped


@pytest.mark.parametrize("value, expected", [
    ("\rx", "'\nx"), ("ok\r=HYPERLINK(1)", "ok\n=HYPERLINK(1)"), ("a\r\nb", "a\nb"), ("a\u2028b", "a\nb"),
    ("a\x0bb\x0cc\x85d", "a\nb\nc\nd"),
])
def test_every_line_break_becomes_one_the_csv_writer_quotes(value, expected):
    """A bare CR is no line break to Python's csv writer, so it was left unquoted and split the row in a
    spreadsheet, the next "row" starting with a formula; as \\n it is quoted and stays inside its cell."""
    assert escape_cell(value) == expected
    from comparisons.results.export import csv_text
    text = csv_text([{"note": value, "n": 1}], ["note", "n"])
    assert text.count("\n\"") + text.count("\"\n") >= 1 and len(pd.read_csv(io.StringIO(text))) == 1


# -- input limits and echoes ----------------------------------------------------------------------

def test_input_limits_and_short_echoes(tmp_path):
    app = LiveApp(tmp_path / "r.db", "--hosted")
    try:
        c = Client(app.url, verbose=False)
        with pytest.raises(Exception, match="at most 500 are allowed") as exc:
            c.predict("a " * 300 + "red circle", 1, "final-zero", 2, "euler", api_name="/generate_pair")
        assert len(str(exc.value)) < 400
        with pytest.raises(Exception) as exc:
            c.predict("a red circle", 1, "x" * 5000, 2, "euler", api_name="/generate_pair")
        assert "x" * 81 not in str(exc.value) and "unknown pairing" in str(exc.value)
        with pytest.raises(Exception) as exc:
            c.predict("a " + "q" * 400 + " circle", 1, "final-zero", 2, "euler", api_name="/generate_pair")
        assert "q" * 81 not in str(exc.value)
        out = c.predict("a red circle", 1, "final-zero", 2, "euler", api_name="/generate_pair")
        with pytest.raises(Exception, match="note is 501 characters long"):
            c.predict(out["pair_id"], "left", "n" * 501, api_name="/vote")
        assert ResultsStore(app.results).votes() == []
    finally:
        app.stop()


# -- configs that validate always sample ----------------------------------------------------------

finite = dict(allow_nan=False, allow_infinity=False)


# Two models' training sigmas: Stable Diffusion's 1000, and an EDM-range model's (0.002 .. 80) on 1000 log-spaced
# timesteps.
def _grids():
    import torch

    from sampler_lib import scaled_linear_alphas_cumprod
    alphas = scaled_linear_alphas_cumprod()
    return [((1 - alphas) / alphas) ** 0.5, torch.logspace(math.log10(0.002), math.log10(80.0), 1000)]


GRIDS = _grids()
CONTINUOUS = ("karras", "exponential", "polyexponential", "kl_optimal")


@settings(max_examples=300, deadline=None)
@given(sampler=st.sampled_from(sorted(SAMPLERS)), steps=st.integers(1, MAX_STEPS),
       sched=st.sampled_from(SCHEDULES), rho=st.floats(*RHO_RANGE, **finite),
       sigma_min=st.none() | st.floats(*SIGMA_MIN_RANGE, **finite),
       sigma_max=st.none() | st.floats(*SIGMA_MAX_RANGE, **finite),
       rule=st.sampled_from(SIGMA_MIN_RULES), final_zero=st.booleans(), quantize=st.sampled_from(QUANTIZE_MODES),
       model=st.sampled_from([0, 1]))
def test_every_config_that_validates_gives_a_finite_schedule(sampler, steps, sched, rho, sigma_min, sigma_max,
                                                             rule, final_zero, quantize, model):
    try:
        cfg = SamplerConfig(sampler=sampler, steps=steps, schedule=sched, rho=rho, sigma_min=sigma_min,
                            sigma_max=sigma_max, sigma_min_rule=rule, final_zero=final_zero, quantize=quantize)
    except ConfigError:
        return  # refused up front, with a message: fine
    try:
        sigmas = schedule(cfg, GRIDS[model])
    except ConfigError as exc:
        # Only schedules tied to the training timesteps or a table may refuse a step count, a range or a model, in
        # words; the continuous formulas never do.
        assert sched not in CONTINUOUS and exc.field == "schedule" and len(str(exc)) < 400, (sched, exc)
        return
    check_sigmas(sigmas)  # finite, strictly descending, 0 only last
    assert len(sigmas) == steps + 1


def test_the_old_overflowing_configs_are_refused():
    for bad in ({"rho": 0.001}, {"sigma_min": 5.0, "sigma_max": 2.0}, {"s_tmin": 50, "s_tmax": 1},
                {"sigma_max": 1e9}):
        with pytest.raises(ConfigError):
            SamplerConfig.from_dict(bad)


# -- the command line refuses without writing -----------------------------------------------------

@pytest.mark.parametrize("args, message", [
    (["sweep", "--pairing", "final-zero", "--model", "no/such-model"], "cannot load model"),
    (["sweep", "--pairing", "final-zero", "--seeds", str(2 ** 70)], "seeds must be at most"),
    (["sweep", "--a", '{"sigma_min": 0.4, "sigma_max": 0.3}', "--b", "{}"], "sigma_max must be between"),
    (["sweep", "--a", '{"sigma_min": 0.4, "sigma_max": 3, "rho": 0.001}', "--b", "{}"], "rho must be"),
])
def test_refused_commands_create_no_results_file(tmp_path, args, message):
    results = tmp_path / "sub" / "results.db"
    code, _, err = run_cli([*args, "--results", str(results)], subprocess_="--model" in args)
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert not (tmp_path / "sub").exists()


def test_server_removes_its_export_folder_at_exit(tmp_path):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    app = LiveApp(tmp_path / "r.db", env={"TMPDIR": str(scratch)})
    try:
        assert [p for p in scratch.iterdir() if p.name.startswith("ab-lab-export-")]
    finally:
        app.stop()
    assert not [p for p in scratch.iterdir() if p.name.startswith("ab-lab-export-")]


def test_statistics_ignore_nothing_a_forger_could_add(tmp_path):
    """The vote table stays consistent: every vote's pair was served to its session."""
    store = ResultsStore(tmp_path / "r.db")
    pid = _pair(store)
    sessions = [f"s{i}" for i in range(5)]
    for i, s in enumerate(sessions):
        cast_vote(store, store.serve(pid, s, "AB"[i % 2]), "left", s)
    served = {(r["pair_id"], r["session"]) for r in store._read("SELECT pair_id, session FROM served")}
    assert all((v["pair_id"], v["session"]) in served for v in store.votes())
    assert statistics.mean(v["winner"] == "A" for v in store.votes()) == pytest.approx(3 / 5)


def test_an_identical_pairs_psnr_reads_infinite_not_blank(tmp_path):
    from ui import results_tab
    store = ResultsStore(tmp_path / "r.db")
    pid = _pair(store)
    with store._transaction() as conn:
        conn.execute("UPDATE pairs SET psnr = ? WHERE pair_id = ?", (float("inf"), pid))
    lab = type("L", (), {"store": store})()
    table = results_tab.table_page(lab, "pairs", 1)["pairs"]
    assert list(table["psnr"]) == ["∞ (identical)"]


def test_results_are_reused_until_a_vote_arrives(tmp_path, monkeypatch):
    """The Results tab computes once per state of the store: a second refresh reuses it, a new vote is seen at once."""
    import app
    from comparisons.workflows import results as results_module
    from ui import results_tab
    store = ResultsStore(tmp_path / "r.db")
    pids = [_pair(store) for _ in range(3)]
    cast_vote(store, store.serve(pids[0], "s1", "A"), "left", "s1")
    settings = app.Settings(app.parse_args(["--results", str(store.path)]))
    lab = type("L", (), {"store": store})()
    computed = []
    real = results_module.by_question_tally
    monkeypatch.setattr(results_module, "by_question_tally",
                        lambda counts: computed.append(sum(counts.values())) or real(counts))
    first = results_tab.refresh_results(lab, settings, 1, 1)
    again = results_tab.refresh_results(lab, settings, 1, 1)
    assert computed == [1] and again["stats"] == first["stats"]  # the second refresh computed nothing
    cast_vote(store, store.serve(pids[1], "s2", "A"), "right", "s2")
    after = results_tab.refresh_results(lab, settings, 1, 1)
    assert computed == [1, 2] and results_module.results(store)["rows"][0]["decisive"] == 2  # counted at once
    assert after["stats"] != first["stats"]
