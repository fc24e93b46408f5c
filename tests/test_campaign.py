"""Vote campaigns: create from a study, balanced blind serving, bundles, per-cell stats, the Vote view."""
import hashlib
import io
import json
import zipfile

import pandas as pd
import pytest

from comparisons.analysis.cells import ALL_CELLS
from comparisons.cli import main as cli_main
from comparisons.errors import VoteRefused
from comparisons.results.store import ResultsStore
from comparisons.workflows import campaign
from comparisons.workflows.blind import cast_vote, next_campaign_pair
from comparisons.workflows.lab import Lab
from tests.conftest import LiveApp

STUDY = ["study", "--questions", "final-zero,discretization", "--samplers", "heun", "--steps", "2,3",
         "--seeds", "0-3", "--prompts", "a red circle", "--reference", '{"steps": 8}', "--reference-check", "0",
         "--batch", "16"]


@pytest.fixture(scope="module")
def study_store(tmp_path_factory):
    """A tiny study (2 questions x 2 step counts x 4 seeds) in a results file, named 'tiny'."""
    root = tmp_path_factory.mktemp("campaign")
    out = io.StringIO()
    assert cli_main([*STUDY, "--results", str(root / "r.db"), "--out", str(root / "tiny")], out=out) == 0
    return root / "r.db"


def fresh_copy(src, dst_dir):
    """The study's results file (and images) copied, so each test starts from the same state."""
    import shutil
    shutil.copytree(src.parent, dst_dir, dirs_exist_ok=True, ignore=shutil.ignore_patterns("tiny", "*.zip"))
    return dst_dir / src.name


def cli(*args):
    out = io.StringIO()
    return cli_main(list(args), out=out), out.getvalue()


def test_create_picks_per_cell_seeded_and_counts_skipped(study_store, tmp_path):
    db = fresh_copy(study_store, tmp_path / "a")
    code, text = cli("campaign", "create", "c1", "--study", "tiny", "--per-cell", "3", "--results", str(db))
    assert code == 0 and "c1: 12 pairs and 1 attention checks" in text
    store = ResultsStore(db)
    pairs = store.campaign_pairs("c1")
    checks = [p for p in pairs if p["is_check"]]
    assert len(pairs) == 13 and {(p["question"], p["steps"]) for p in pairs} == {
        (q, s) for q in ("final-zero", "discretization") for s in (2, 3)}
    # The default rate, one check per ten pairs: one image against itself, served like any other pair.
    assert len(checks) == 1 and checks[0]["image_a"] == checks[0]["image_b"] and checks[0]["pairing"] == \
        "attention-check" and checks[0]["config_a"] == checks[0]["config_b"] and checks[0]["flip_max"] == 0
    # Seeded: the same command in another copy picks the same pairs.
    db2 = fresh_copy(study_store, tmp_path / "b")
    assert cli("campaign", "create", "c1", "--study", "tiny", "--per-cell", "3", "--results", str(db2))[0] == 0
    assert [p["pair_id"] for p in ResultsStore(db2).campaign_pairs("c1") if not p["is_check"]] == [
        p["pair_id"] for p in pairs if not p["is_check"]]
    # --only-visible: the discretization pairs on the embedded model are below visibility, and it says so.
    code, text = cli("campaign", "create", "vis", "--study", "tiny", "--only-visible", "--results", str(db))
    definition = campaign.definition_of(store, "vis")
    by_cell = {(c["question"], c["steps"]): c for c in definition["cells"]}
    assert by_cell[("discretization", 2)]["skipped_invisible"] == 4 and by_cell[("discretization", 2)]["pairs"] == 0
    assert by_cell[("final-zero", 3)]["pairs"] + by_cell[("final-zero", 3)]["skipped_invisible"] == 4
    assert "below visibility skipped" in text


@pytest.mark.parametrize("args, message", [
    (["create", "x", "--study", "nope"], "no study named 'nope'"),
    (["create", "x", "--study", "tiny", "--cells", "final-zero:heun:99"], "has no cell final-zero:heun:99"),
    (["create", "x", "--study", "tiny", "--cells", "final-zero-heun"], "malformed cell"),
    (["create", "x", "--study", "tiny", "--cells", "discretization:heun:2", "--only-visible"], "selection is empty"),
    (["create", "../x", "--study", "tiny"], "campaign name"),
    (["create", "x", "--study", "tiny", "--checks", "1.5"], "--checks must be a rate from 0 to 1"),
    (["create", "x", "--study", "tiny", "--checks", "nan"], "--checks must be a rate from 0 to 1"),
    (["create", "x", "--study", "tiny", "--checks", "-0.1"], "--checks must be a rate from 0 to 1"),
    (["stats", "nope"], "no campaign named 'nope'"),
    (["export", "nope", "--out", "{tmp}/b.zip"], "no campaign named 'nope'"),
])
def test_bad_campaign_input_is_one_line_and_writes_nothing(study_store, tmp_path, capsys, args, message):
    db = fresh_copy(study_store, tmp_path / "a")
    before = db.read_bytes()
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    assert cli("campaign", *args, "--results", str(db))[0] == 2
    err = capsys.readouterr().err.strip()
    assert message in err and err.count("\n") == 0
    assert ResultsStore(db).campaigns() == [] and not (tmp_path / "b.zip").exists()
    assert len(before) > 0


def test_serving_is_balanced_without_repeats_and_votes_are_session_bound(study_store, tmp_path):
    db = fresh_copy(study_store, tmp_path / "a")
    assert cli("campaign", "create", "four", "--study", "tiny", "--cells", "final-zero:heun:3", "--per-cell", "4",
               "--checks", "0", "--results", str(db))[0] == 0
    lab = Lab(db)
    # 12 votes over 4 pairs from 12 different sessions: 3 each.
    for i in range(12):
        out = next_campaign_pair(lab, "four", f"session-{i}")
        cast_vote(lab.store, out["serve_id"], "left", f"session-{i}")
    counts = pd.Series([v["pair_id"] for v in lab.store.campaign_votes("four")]).value_counts()
    assert len(counts) == 4 and set(counts) == {3}
    # One session sees each pair once, then is told it has seen them all.
    seen = [lab.store.served(next_campaign_pair(lab, "four", "one")["serve_id"])["pair_id"] for _ in range(4)]
    assert len(set(seen)) == 4 and next_campaign_pair(lab, "four", "one") is None
    # A vote counts only for a pair served to that session.
    other = next_campaign_pair(lab, "four", "two")
    with pytest.raises(VoteRefused):
        cast_vote(lab.store, other["serve_id"], "left", "three")
    vote = cast_vote(lab.store, other["serve_id"], "tie", "two", "ok")
    assert vote["campaign"] == "four"
    assert next_campaign_pair(lab, "nope", "x") is None  # an unknown campaign has no pairs to serve


def test_stats_against_hand_counted_votes_and_csv_columns(study_store, tmp_path):
    db = fresh_copy(study_store, tmp_path / "a")
    cli("campaign", "create", "c", "--study", "tiny", "--cells", "final-zero:heun:2,final-zero:heun:3",
        "--per-cell", "4", "--checks", "0", "--results", str(db))
    lab = Lab(db)
    # Hand-made tallies: cell steps=2 gets A, A, B, tie; steps=3 gets both_bad only.
    plan = {2: ["A", "A", "B", "tie"], 3: ["both_bad"]}
    for steps, winners in plan.items():
        for i, winner in enumerate(winners):
            session = f"s{steps}-{i}"
            while True:
                out = next_campaign_pair(lab, "c", session)
                served = lab.store.served(out["serve_id"])
                row = next(p for p in lab.store.campaign_pairs("c") if p["pair_id"] == served["pair_id"])
                if row["steps"] == steps:
                    break
            choice = {"A": "left" if served["shown_left"] == "A" else "right",
                      "B": "right" if served["shown_left"] == "A" else "left"}.get(winner, winner)
            cast_vote(lab.store, out["serve_id"], choice, session)
    rows = {r["steps"]: r for r in campaign.stats(lab.store, "c") if r["voters"] == "all"
            and r["question"] != ALL_CELLS}
    two, three = rows[2], rows[3]
    assert (two["votes"], two["a"], two["b"], two["tie"], two["both_bad"]) == (4, 2, 1, 1, 0)
    assert two["a_win_rate"] == pytest.approx(2 / 3) and two["p_value"] == pytest.approx(1.0)
    assert two["votes_verdict"] == "no preference" and two["lpips_verdict"]
    assert (three["votes"], three["both_bad"], three["agreement"]) == (1, 1, "no decisive votes yet")
    code, text = cli("campaign", "stats", "c", "--results", str(db))
    assert code == 0 and "final-zero:heun:2" in text and "5 votes" in text
    from comparisons.results.export import export_csv
    votes = pd.read_csv(export_csv(lab.store, tmp_path / "csv")[1])
    assert set(votes["campaign"]) == {"c"} and set(votes["steps"]) == {2, 3} and set(votes["question"]) == {
        "final-zero"} and set(votes["sampler"]) == {"heun"}
    # Complete rows: the pair, its model, prompt and seed, both configs field by field, LPIPS and the verdict.
    assert votes[["pair_id", "model", "prompt", "seed", "lpips", "flip_max", "visible", "left_config",
                  "winner", "session", "created"]].notna().all().all()
    assert set(votes["a_final_zero"]) == {True} and set(votes["b_final_zero"]) == {False}
    assert set(votes["visible"]) <= {"visible", "below"} and not votes["attention_check"].any()
    # The study's report gains the campaign when its command is rerun (nothing is recomputed).
    out = tmp_path / "tiny"
    assert cli_main([*STUDY, "--results", str(db), "--out", str(out), "--name", "tiny"], out=io.StringIO()) == 0
    report = (out / "report.html").read_text()
    assert "Campaign c (8 pairs)" in report and "agreement" in report


def serve_and_vote(lab, name, session, pick):
    """Serve `session` its next pair of campaign `name` and vote `pick(served pair row, shown_left)`; the row."""
    out = next_campaign_pair(lab, name, session)
    served = lab.store.served(out["serve_id"])
    row = next(p for p in lab.store.campaign_pairs(name) if p["pair_id"] == served["pair_id"])
    cast_vote(lab.store, out["serve_id"], pick(row, served["shown_left"]), session)
    return row, served["shown_left"]


def test_sixteen_servings_of_one_pair_put_a_left_exactly_eight_times(study_store, tmp_path):
    db = fresh_copy(study_store, tmp_path / "a")
    assert cli("campaign", "create", "one", "--study", "tiny", "--cells", "final-zero:heun:3", "--per-cell", "1",
               "--checks", "0", "--results", str(db))[0] == 0
    lab = Lab(db)
    sides = [lab.store.served(next_campaign_pair(lab, "one", f"s{i}")["serve_id"])["shown_left"] for i in range(16)]
    assert sides.count("A") == 8 and all(a != b for a, b in zip(sides, sides[1:]))  # alternating from the start


def test_side_rates_and_side_corrected_estimate_against_hand_counted_votes(study_store, tmp_path):
    """Voters who always press "left": the left rate is 1 (p small) while A's side-corrected rate is 1/2."""
    db = fresh_copy(study_store, tmp_path / "a")
    assert cli("campaign", "create", "c", "--study", "tiny", "--cells", "discretization:heun:3", "--per-cell", "4",
               "--checks", "0", "--results", str(db))[0] == 0
    lab = Lab(db)
    shown = [serve_and_vote(lab, "c", f"s{i}", lambda row, left: "left")[1] for i in range(16)]
    a_left = shown.count("A")
    assert a_left == 8  # 4 pairs x 4 servings, each pair's sides alternating
    cell, overall = [r for r in campaign.stats(lab.store, "c") if r["voters"] == "all"]
    # By hand: A won exactly when A was on the left: raw A rate 8/16; A's rate when left 8/8, when right 0/8.
    assert (cell["a"], cell["b"], cell["left_rate"]) == (8, 8, 1.0)
    assert cell["left_p"] == pytest.approx(2 * 0.5 ** 16) and cell["a_win_rate"] == 0.5
    assert (cell["a_rate_a_left"], cell["a_rate_a_right"], cell["a_win_rate_corrected"]) == (1.0, 0.0, 0.5)
    assert overall["question"] == ALL_CELLS and overall["left_rate"] == 1.0 and overall["votes"] == 16
    code, text = cli("campaign", "stats", "c", "--results", str(db))
    assert code == 0 and "left rate" in text and "side-corr." in text and "1.000" in text


def test_attention_checks_flag_a_session_that_always_votes_left(study_store, tmp_path):
    db = fresh_copy(study_store, tmp_path / "a")
    assert cli("campaign", "create", "c", "--study", "tiny", "--cells", "final-zero:heun:3", "--per-cell", "4",
               "--checks", "0.5", "--results", str(db))[0] == 0
    lab = Lab(db)
    pairs = lab.store.campaign_pairs("c")
    assert sum(p["is_check"] for p in pairs) == 2 and len(pairs) == 6
    # "lazy" presses left on everything; "careful" calls the checks a tie and prefers B elsewhere.
    for _ in range(6):
        serve_and_vote(lab, "c", "lazy", lambda row, left: "left")
        serve_and_vote(lab, "c", "careful", lambda row, left: "tie" if row["is_check"] else
                       ("right" if left == "A" else "left"))
    rows = campaign.stats(lab.store, "c")
    everyone, trusted = ([r for r in rows if r["voters"] == v and r["question"] != ALL_CELLS][0]
                         for v in campaign.VOTERS)
    assert everyone["flagged"] == 1 and everyone["sessions"] == 2
    assert everyone["votes"] == 8  # 4 pairs x 2 sessions; the 4 check votes never count toward the cell
    assert trusted["votes"] == 4 and (trusted["a"], trusted["b"]) == (0, 4)  # the lazy session's votes dropped
    from comparisons.cli import campaign_table
    report = campaign_table("c", rows)
    assert "1 flagged" in report and "votes: without flagged" in report and "top address" in report


def test_bundle_round_trip_is_idempotent_and_refuses_bad_zips(study_store, tmp_path):
    db = fresh_copy(study_store, tmp_path / "a")
    cli("campaign", "create", "c", "--study", "tiny", "--per-cell", "2", "--results", str(db))
    bundle = tmp_path / "bundle.zip"
    assert cli("campaign", "export", "c", "--out", str(bundle), "--results", str(db))[0] == 0
    space = tmp_path / "space" / "r.db"
    code, text = cli("campaign", "import", str(bundle), "--results", str(space))
    assert code == 0 and "9 pairs imported" in text  # 8 and the attention check
    src, dst = ResultsStore(db), ResultsStore(space)

    def digest(store, name):
        return sorted((p["pair_id"], hashlib.sha256((store.path.parent / p["image_a"]).read_bytes()).hexdigest(),
                       hashlib.sha256((store.path.parent / p["image_b"]).read_bytes()).hexdigest(),
                       p["config_a"], p["config_b"], p["question"], p["steps"], p["is_check"], p["flip_max"])
                      for p in store.campaign_pairs(name))
    assert digest(src, "c") == digest(dst, "c")
    assert campaign.definition_of(src, "c") == campaign.definition_of(dst, "c")
    before = (space.read_bytes(), sorted(p.name for p in space.parent.rglob("*.png")))
    code, text = cli("campaign", "import", str(bundle), "--results", str(space))
    assert code == 0 and "nothing changed" in text
    assert len(dst.pairs()) == 9 and sorted(p.name for p in space.parent.rglob("*.png")) == before[1]

    def bad_zip(name, entries):
        path = tmp_path / name
        with zipfile.ZipFile(path, "w") as z:
            for arcname, data in entries.items():
                z.writestr(arcname, data)
        return path
    manifest = zipfile.ZipFile(bundle).read("campaign.json")
    images = {n: zipfile.ZipFile(bundle).read(n) for n in zipfile.ZipFile(bundle).namelist() if n != "campaign.json"}
    first = sorted(images)[0]
    cases = {
        "escape.zip": ({"campaign.json": manifest, "../evil.png": b"x", **images}, "escapes the bundle"),
        "foreign.zip": ({"campaign.json": json.dumps({"definition": {"format": "other"}, "pairs": []})},
                        "not an ab-lab-campaign bundle"),
        "missing.zip": ({"campaign.json": manifest, **{k: v for k, v in images.items() if k != first}},
                        f"is missing {first}"),
        "corrupt.zip": ({"campaign.json": manifest, **images, first: b"not the image"}, "is corrupt"),
    }
    for name, (entries, message) in cases.items():
        target = tmp_path / f"t-{name}" / "r.db"
        code = cli_main(["campaign", "import", str(bad_zip(name, entries)), "--results", str(target)],
                        out=io.StringIO())
        assert code == 2, name
        assert not target.exists(), name  # checked before the results file is made
    plain = tmp_path / "plain.txt"
    plain.write_text("hello")
    assert cli("campaign", "import", str(plain), "--results", str(tmp_path / "u" / "r.db"))[0] == 2


def test_vote_view_in_the_browser(study_store, tmp_path):
    from playwright.sync_api import sync_playwright

    from tests.conftest import ARTIFACTS, CHROMIUM, LAUNCH_ARGS
    db = fresh_copy(study_store, tmp_path / "a")
    cli("campaign", "create", "web", "--study", "tiny", "--cells", "final-zero:heun:3", "--per-cell", "3",
        "--checks", "0", "--results", str(db))
    app = LiveApp(db, "--campaign", "web")
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(app.url)
            page.wait_for_selector("#vote-left:not([disabled])", timeout=60_000)
            assert page.locator("#generate").count() == 0  # no generation controls
            assert "Revealed" not in page.inner_text("#reveal") and "final_zero" not in page.inner_text("body")
            assert page.locator("#visibility .sentence").count() == 1
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "campaign-vote-1280.png"), full_page=True)
            seen = []
            for key in ("1", "2", "4"):
                seen.append(page.get_attribute("#pair-left", "src"))
                page.locator("#campaign-header").click()
                page.keyboard.press(key)
                page.wait_for_function("s => document.querySelector('#reveal').innerText.includes('Left was') && "
                                       "(document.querySelector('#pair-left') || {getAttribute: () => null})"
                                       ".getAttribute('src') !== s", arg=seen[-1], timeout=60_000)
            page.wait_for_function("() => document.querySelector('#vote-status').innerText.includes('seen every')")
            assert len(set(seen)) == 3 and page.is_disabled("#vote-left")
            # On a phone a visitor's pair and its four buttons share the first screen (buttons straight under it).
            phone = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
            mobile = phone.new_page()
            mobile.goto(app.url)
            mobile.wait_for_function("""() => {
                const imgs = document.querySelectorAll('#pair img.zoom-img');
                return imgs.length === 2 && [...imgs].every(i => i.complete && i.naturalWidth > 0)
                    && !document.querySelector('#vote-left').disabled; }""", timeout=60_000)
            mobile.wait_for_timeout(300)
            for selector in ("#pair", "#vote-left", "#vote-right", "#vote-tie", "#vote-both-bad"):
                box = mobile.locator(selector).bounding_box()
                assert box["y"] >= 0 and box["y"] + box["height"] <= 844 and box["x"] + box["width"] <= 391, \
                    (selector, box)
            mobile.screenshot(path=str(ARTIFACTS / "campaign-vote-390.png"), full_page=True)
            phone.close()
            browser.close()
        votes = ResultsStore(db).campaign_votes("web")
        assert [v["winner"] for v in votes][2] == "both_bad" and len(votes) == 3
        from gradio_client import Client
        client = Client(app.url, verbose=False)
        first = client.predict(api_name="/next_pair")
        assert len(first["pair_id"]) == 32 and first["left"].startswith("data:image/png")
        client.predict(first["pair_id"], "left", "", api_name="/vote")
        for _ in range(2):
            client.predict(api_name="/next_pair")
        with pytest.raises(Exception, match="seen every pair"):
            client.predict(api_name="/next_pair")
    finally:
        app.stop()


def test_app_refuses_an_unknown_campaign(study_store, tmp_path):
    import app
    db = fresh_copy(study_store, tmp_path / "a")
    with pytest.raises(SystemExit) as refused:  # app.main, in this process: it stops before serving anything
        app.main(["--campaign", "nope", "--results", str(db), "--port", "1"])
    message = str(refused.value.code)  # sys.exit("error: …") exits 1 with this on stderr
    assert message.startswith("error: ") and "no campaign named 'nope'" in message and "campaigns here: none" in message


def test_hosted_campaign_serves_and_takes_votes(study_store, tmp_path):
    from gradio_client import Client
    db = fresh_copy(study_store, tmp_path / "a")
    cli("campaign", "create", "pub", "--study", "tiny", "--cells", "final-zero:heun:2", "--per-cell", "2",
        "--results", str(db))
    token = "t" * 24  # a hosted /export_votes exists only with --export-token, and asks for it
    app = LiveApp(db, "--campaign", "pub", "--hosted", "--export-token", token)
    try:
        client = Client(app.url, verbose=False, headers={"X-Export-Token": token})
        pair = client.predict(api_name="/next_pair")
        assert pair["visibility"]["max_abs_diff"] >= 0 and len(pair["pair_id"]) == 32
        client.predict(pair["pair_id"], "right", "", api_name="/vote")
        with pytest.raises(Exception):
            client.predict("a red circle", 1, "final-zero", 4, "heun", api_name="/generate_pair")
        votes = pd.read_csv(client.predict(api_name="/export_votes"))
        assert list(votes["campaign"]) == ["pub"] and "note" not in votes
    finally:
        app.stop()
