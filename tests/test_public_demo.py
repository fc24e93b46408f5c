"""Issue #33, the hosted campaign on the public internet: bounded memory (images by URL, nothing per session), one
counted vote per address and pair, nothing from the data rendered as markup, closed doors, and the store's faults
said in words. Loopback only; every loop bounded in count."""
import io
import json
import os
import sqlite3
import urllib.error
import urllib.parse
import urllib.request
import uuid

import pandas as pd
import pytest
from PIL import Image

from comparisons.errors import StoreError, UsageError, VoteRefused
from comparisons.results.store import SERVE_NEXT_SQL, ResultsStore
from comparisons.workflows.blind import address_key, cast_vote, next_campaign_pair
from comparisons.workflows.lab import Lab
from tests.conftest import LiveApp, run_cli
from tests.image_fixtures import picture, save_a1111

HOSTILE = ['<a href="http://evil.example/a">a</a>', "<img src=http://evil.example/x>", "![t](http://evil.example/y)",
           "javascript:alert(1)", "[l](javascript:x)"]


def image_campaign(root, n=3, size=32, name="c", labels="karras,beta", text=None, checks="0"):
    """A campaign of `n` image pairs from a manifest (A1111 files); `text` fills every text field."""
    imgs = root / "imgs"
    imgs.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        for side, shift in (("a", 0), ("b", 2)):
            save_a1111(imgs / f"{side}{i}.png", picture(size, i, shift=shift),
                       **({"prompt": text} if text else {}))
        rows.append({"a": f"imgs/a{i}.png", "b": f"imgs/b{i}.png", "cell": text or "", "prompt": text or "",
                     "notes": f"{text}\n\n{HOSTILE[2]}" if text else "n"})
    pd.DataFrame(rows).to_csv(root / "pairs.csv", index=False)
    db = root / "r.db"
    code, _, err = run_cli(["campaign", "create", name, "--from-manifest", str(root / "pairs.csv"), "--labels", labels,
                            "--checks", checks, "--results", str(db)])
    assert code == 0, err
    return db


# -- the store: O(1) serving, one vote per address and pair, faults in words ---------------------------------------

def test_serving_reads_no_past_servings(tmp_path):
    """The next pair is found through indexes: the campaign's pairs, the session's servings, the address's votes;
    no table of servings or votes is scanned (so 300,000 past servings cost what 3 do: bench/bench_hosted_memory.py
    --servings measures it)."""
    store = ResultsStore(tmp_path / "r.db")
    conn = store._connect()
    plan = [r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + SERVE_NEXT_SQL, ("c", "s", "c", "a"))]
    conn.close()
    assert not [p for p in plan if p.startswith("SCAN")], plan
    assert any("served_by_session" in p for p in plan) and any("votes_one_per_address" in p for p in plan), plan


def test_one_counted_vote_per_address_and_pair_and_a_cap(tmp_path):
    db = image_campaign(tmp_path, n=4)
    lab = Lab(db)
    home, other = address_key(lab.store, "198.51.100.1"), address_key(lab.store, "198.51.100.2")
    assert home != other and "198.51.100.1" not in home
    first = next_campaign_pair(lab, "c", "s1", address=home)
    cast_vote(lab.store, first["serve_id"], "left", "s1", address=home, max_per_address=3)
    # A second session from the same address is never served the pair that address voted on...
    for _ in range(3):
        out = next_campaign_pair(lab, "c", "s2", address=home)
        assert out["pair_id"] != first["pair_id"]
    # ...and a serving of it made anyway takes no counted vote (refused, nothing written).
    again = lab.store.serve(first["pair_id"], "s3", "A", campaign="c")
    with pytest.raises(VoteRefused, match="already recorded"):
        cast_vote(lab.store, again, "right", "s3", address=home, max_per_address=3)
    assert len(lab.store.campaign_votes("c")) == 1
    # The cap per address and campaign: 3 here.
    for session in ("s4", "s5"):
        cast_vote(lab.store, next_campaign_pair(lab, "c", session, address=home)["serve_id"], "tie", session,
                  address=home, max_per_address=3)
    with pytest.raises(VoteRefused, match="at most 3 votes from one address"):
        out = next_campaign_pair(lab, "c", "s6", address=home)
        cast_vote(lab.store, out["serve_id"], "tie", "s6", address=home, max_per_address=3)
    cast_vote(lab.store, out["serve_id"], "tie", "s6", address=other, max_per_address=3)  # another address may
    votes = lab.store.campaign_votes("c")
    assert len(votes) == 4 and {v["address"] for v in votes} == {home, other}
    # campaign stats: the heaviest address's share and the counts without it.
    from comparisons.workflows import campaign
    (everything,) = [r for r in campaign.stats(lab.store, "c") if r["voters"] == "all" and r["question"] ==
                     "(all cells)"]
    assert everything["top_address_share"] == pytest.approx(3 / 4) and everything["votes_wo_top"] == 1
    from comparisons.cli import campaign_table
    printed = campaign_table("c", campaign.stats(lab.store, "c"))
    assert "top address" in printed and "75% (3)" in printed  # as `campaign stats` prints it


def test_a_vote_the_disk_refuses_is_said_and_nothing_is_lost(tmp_path, monkeypatch):
    db = image_campaign(tmp_path, n=2)
    lab = Lab(db)
    out = next_campaign_pair(lab, "c", "s")
    real = lab.store._connect

    class Full:
        def __init__(self, conn):
            self.conn = conn

        def execute(self, sql, *args):
            if sql.startswith("INSERT INTO votes"):
                raise sqlite3.OperationalError("database or disk is full")
            return self.conn.execute(sql, *args)

        def __getattr__(self, name):
            return getattr(self.conn, name)

    monkeypatch.setattr(lab.store, "_connect", lambda: Full(real()))
    with pytest.raises(StoreError, match="^the vote was not saved: database or disk is full$"):
        cast_vote(lab.store, out["serve_id"], "left", "s")
    # The vote view says so beside the buttons, and keeps the pair votable.
    from types import SimpleNamespace

    from ui import vote_view
    w = {k: k for k in ("status", "reveal", "note", "download", *(f"vote:{c}" for c in vote_view.VOTE_BUTTONS))}
    settings = SimpleNamespace(admit_vote=lambda *a: None, session=lambda r: "s", vote_address=lambda r: None,
                               max_votes_per_address=None, hosted=None, pair_downloads=True)
    said = vote_view.vote(lab, settings, w, "left", {"serve_id": out["serve_id"]}, "", None)
    assert "the vote was not saved: database or disk is full" in said["status"]
    assert said["vote:left"]["interactive"] is True
    monkeypatch.setattr(lab.store, "_connect", real)
    assert lab.store.campaign_votes("c") == []
    assert cast_vote(lab.store, out["serve_id"], "left", "s")["vote_id"]  # once the disk has room: recorded


def test_a_damaged_store_is_refused_at_start_in_one_line(tmp_path):
    import subprocess
    import sys

    from tests.conftest import ROOT
    db = image_campaign(tmp_path, n=3)
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    size = conn.execute("PRAGMA page_size").fetchone()[0]
    root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'pairs'").fetchone()[0]
    conn.close()
    assert pages > 3
    with open(db, "r+b") as f:  # the pairs table's root page overwritten with garbage
        f.seek((root - 1) * size + 8)
        f.write(os.urandom(size - 16))
    proc = subprocess.run([sys.executable, str(ROOT / "app.py"), "--results", str(db), "--port", "1"],
                          capture_output=True, text=True, timeout=300)
    err = [line for line in proc.stderr.splitlines() if "warn" not in line.lower()]
    assert proc.returncode == 2 and len(err) == 1 and "damaged" in err[0] and str(db) in err[0], proc.stderr


# -- the hosted app over HTTP -------------------------------------------------------------------------------------

class Visitor:
    """What a browser does for the Vote view, over Gradio's queue protocol (no browser): a page load (the event that
    serves the first pair) and a click on a vote button, in a session of its own."""

    def __init__(self, url, headers=None, config=None):
        self.url, self.headers, self.session = url.rstrip("/"), dict(headers or {}), uuid.uuid4().hex[:11]
        self.config = config or json.load(urllib.request.urlopen(self.url + "/config", timeout=30))
        deps, comps = self.config["dependencies"], self.config["components"]
        ids = {c["props"].get("elem_id"): c["id"] for c in comps if c.get("props")}
        self.load = next(d["id"] for d in deps if any(t[1] == "load" for t in d["targets"]) and not d.get("js")
                         and len(d["outputs"]) > 5)
        self.vote_fn = next(d["id"] for d in deps if [ids["vote-left"], "click"] in d["targets"])

    def _call(self, fn, data):
        body = json.dumps({"data": data, "fn_index": fn, "session_hash": self.session, "event_data": None,
                           "trigger_id": None}).encode()
        req = urllib.request.Request(self.url + "/gradio_api/queue/join", body,
                                     {"Content-Type": "application/json", **self.headers})
        urllib.request.urlopen(req, timeout=60).read()
        stream = urllib.request.Request(f"{self.url}/gradio_api/queue/data?session_hash={self.session}",
                                        headers=self.headers)
        size = 0
        with urllib.request.urlopen(stream, timeout=120) as r:
            for line in r:
                size += len(line)
                if line.startswith(b"data:"):
                    msg = json.loads(line[5:])
                    if msg.get("msg") == "process_completed":
                        assert msg.get("success"), msg
                        return msg["output"]["data"], size
        raise AssertionError("no answer")

    def page_load(self):
        return self._call(self.load, [])

    def vote(self):
        return self._call(self.vote_fn, [None, ""])


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


@pytest.fixture(scope="module")
def hosted(tmp_path_factory):
    root = tmp_path_factory.mktemp("public")
    db = image_campaign(root, n=6, size=256, checks="1")
    app = LiveApp(db, "--campaign", "c", "--hosted", "--trust-proxy", "--max-votes-per-address", "3",
                  "--export-token", "t" * 20)
    yield app
    app.stop()


def request(url, data=None, headers=None, method=None):
    req = urllib.request.Request(url, data, headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def test_hosted_doors_are_closed(hosted):
    # No file comes in, whatever its size.
    status, _, _ = request(hosted.url + "gradio_api/upload", b"x" * 1000, {"Content-Type": "application/octet-stream"})
    assert status == 403
    # No request body over 64 kB, declared or not.
    status, _, _ = request(hosted.url + "gradio_api/queue/join", b"{" + b" " * 70_000 + b"}",
                           {"Content-Type": "application/json"})
    assert status == 413
    # Images by unknown token: not found.
    assert request(hosted.url + "pair-image/v1/" + "0" * 32 + ".png")[0] == 404
    # /export_votes: the token in a header, twice a minute.
    from gradio_client import Client
    with pytest.raises(Exception, match="export token"):
        Client(hosted.url, verbose=False).predict(api_name="/export_votes")
    c = Client(hosted.url, verbose=False, headers={"X-Export-Token": "t" * 20, "X-Forwarded-For": "198.51.100.9"})
    assert "campaign" in pd.read_csv(c.predict(api_name="/export_votes"))


def test_the_api_serves_urls_and_marks_nothing(hosted):
    from gradio_client import Client
    seen = []
    c = Client(hosted.url, verbose=False, headers={"X-Forwarded-For": "198.51.100.20"})
    for _ in range(3):
        pair = c.predict(api_name="/next_pair")
        assert "identical" not in pair and pair["left"].startswith("/pair-image/v1/") and pair["left"] != pair["right"]
        status, headers, png = request(hosted.url.rstrip("/") + pair["left"])
        assert status == 200 and headers["cache-control"] == "public, max-age=31536000, immutable"
        assert Image.open(io.BytesIO(png)).text == {}  # pixels only: nothing tells the sides apart
        vote = c.predict(pair["pair_id"], "left", "", api_name="/vote")
        assert "winner" not in vote and "left" not in vote["reveal"] and "right" not in vote["reveal"]
        seen.append(pair["pair_id"])
    # The address's cap (3 here): a fourth vote from it is refused, from a new session too.
    fresh = Client(hosted.url, verbose=False, headers={"X-Forwarded-For": "198.51.100.20"})
    pair = fresh.predict(api_name="/next_pair")
    with pytest.raises(Exception, match="at most 3 votes from one address"):
        fresh.predict(pair["pair_id"], "left", "", api_name="/vote")
    # A visitor cannot vote in another's session by sending its session hash from another address.
    thief = Client(hosted.url, verbose=False, headers={"X-Forwarded-For": "198.51.100.21"})
    thief.session_hash = fresh.session_hash
    with pytest.raises(Exception, match="not served to you"):
        thief.predict(pair["pair_id"], "left", "", api_name="/vote")


def test_fifty_page_loads_grow_memory_by_less_than_30_mib(hosted):
    """The guard of bench/bench_hosted_memory.py: a page load answers a few kB and leaves nothing large behind."""
    config = json.load(urllib.request.urlopen(hosted.url + "config", timeout=30))
    for k in range(5):  # warm: every image's display file written, every pair measured once
        Visitor(hosted.url, {"X-Forwarded-For": f"192.0.2.{k}"}, config).page_load()
    before = rss_mib(hosted.proc.pid)
    sizes = []
    for k in range(50):
        sizes.append(Visitor(hosted.url, {"X-Forwarded-For": f"203.0.113.{k}"}, config).page_load()[1])
    grown = rss_mib(hosted.proc.pid) - before
    assert max(sizes) < 20_000, max(sizes)
    assert grown < 30, grown


# -- nothing from the data is markup ----------------------------------------------------------------------------

def test_every_text_field_is_shown_as_text_and_nothing_leaves_for_another_host(tmp_path, browser):
    text = " ".join(HOSTILE)
    db = image_campaign(tmp_path, n=2, text=text, labels=f"{HOSTILE[1]},{HOSTILE[4]}")
    app = LiveApp(db, "--campaign", "c")
    try:
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        hosts = []
        page.on("request", lambda r: hosts.append(urllib.parse.urlsplit(r.url).hostname))
        page.goto(app.url)
        page.wait_for_selector("#vote-left:not([disabled])", timeout=60_000)
        for _ in range(2):
            page.locator("#campaign-header").click()
            page.keyboard.press("1")
            page.wait_for_function("() => document.querySelector('#reveal').innerText.includes('Your vote')",
                                   timeout=60_000)
        page.wait_for_function("() => document.querySelector('#vote-status').innerText.includes('seen every')",
                               timeout=60_000)
        page.wait_for_timeout(500)
        for selector in ('a[href*="evil"]', 'img[src*="evil"]', 'a[href^="javascript"]', '[href*="javascript"]',
                         '[src*="evil"]'):
            assert page.locator(selector).count() == 0, selector
        shown = page.inner_text("#reveal") + page.text_content("#reveal")
        for bad in HOSTILE:
            assert bad in shown, bad  # as text, where it is shown
        assert set(hosts) == {"127.0.0.1"}, set(hosts)
        page.close()
    finally:
        app.stop()



def test_the_export_token_comes_from_the_flag_or_a_spaces_secret(monkeypatch):
    import app
    monkeypatch.delenv("AB_LAB_EXPORT_TOKEN", raising=False)
    assert app._parse_args(["--hosted"]).export_token is None  # no token: a hosted demo has no export
    monkeypatch.setenv("AB_LAB_EXPORT_TOKEN", "s" * 20)
    assert app._parse_args(["--hosted"]).export_token == "s" * 20
    assert app._parse_args(["--hosted", "--export-token", "f" * 16]).export_token == "f" * 16
    monkeypatch.setenv("AB_LAB_EXPORT_TOKEN", "short")
    with pytest.raises(UsageError, match="at least 16 characters"):
        app._parse_args(["--hosted"])  # a short secret is refused as a short flag is
