"""The hosted demo's Compare tab (app.py --hosted, no campaign), as issue #33 wants the public demo: pairs served as
image URLs (the session keeps ids, an answer is a few kB), a pair's zip made when its link is followed after the vote
(never on a vote, hosted only with --pair-downloads), and every text from a visitor or the data shown as text."""
import json
import sqlite3
import urllib.error
import urllib.request
from types import SimpleNamespace
from urllib.parse import urlparse

import pytest
from gradio_client import Client
from PIL import Image

from tests.conftest import LiveApp

EVIL = "<img src=http://evil.example/x> ![t](http://evil.example/y) [l](javascript:x)"
NO_MARKUP = """() => document.querySelectorAll('img[src*="evil"], a[href*="evil"], a[href^="javascript"], '
    + '[src^="javascript"], iframe, form').length"""


def as_from(address):
    return {"X-Forwarded-For": address}


def get(url, headers=None):
    """(status, headers, body) of a GET; an HTTP error is an answer too."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=30) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def zips_in(folder):
    return sorted(str(p) for p in folder.rglob("*.zip")) if folder.exists() else []


@pytest.fixture(scope="module")
def hosted(tmp_path_factory):
    """A hosted demo offering pair downloads, behind one trusted proxy (each test is its own address), its Gradio
    cache in a folder of its own."""
    root = tmp_path_factory.mktemp("hosted-compare")
    cache = root / "gradio-cache"
    app = LiveApp(root / "r.db", "--hosted", "--trust-proxy", "--pair-downloads",
                  env={"GRADIO_TEMP_DIR": str(cache)})
    app.cache = cache
    yield app
    app.stop()


def test_rounds_answer_small_leave_no_zip_and_the_zip_only_after_the_vote(hosted):
    c = Client(hosted.url, verbose=False, headers=as_from("198.51.100.1"))
    for seed in range(3):
        out = c.predict("a red circle", seed, "final-zero", 4, "heun", api_name="/generate_pair")
        assert len(json.dumps(out)) < 50_000, len(json.dumps(out))
        assert out["left"].startswith("/pair-image/v1/") and out["right"].startswith("/pair-image/v1/")
        assert out["left"] != out["right"]
        status, headers, body = get(hosted.url.rstrip("/") + out["left"])
        assert status == 200 and "immutable" in headers.get("cache-control", "")
        import io
        image = Image.open(io.BytesIO(body))
        assert image.size == (32, 32) and not image.text, "shown images carry no metadata"
        zip_url = f"{hosted.url}pair-zip/{out['pair_id']}.zip"
        assert get(zip_url)[0] == 404  # before the vote the zip would say which side was A
        c.predict(out["pair_id"], "left", "", api_name="/vote")
        status, headers, body = get(zip_url)
        assert status == 200 and body[:2] == b"PK"
    assert get(f"{hosted.url}pair-zip/{'0' * 32}.zip")[0] == 404
    assert get(f"{hosted.url}pair-image/v1/{'0' * 32}.png")[0] == 404
    assert zips_in(hosted.cache) == [], "no zip is made on a vote"


def test_compare_tab_serves_urls_and_shows_data_as_text(hosted, browser):
    """Chromium on the hosted Compare tab: a prompt and seed holding HTML, a Markdown image and a javascript: link
    are refused as text; a pair's stored pairing and the voter's note holding them are shown as text after the vote
    (reveal, 'Previous pair' line); no such element is made and no request leaves 127.0.0.1."""
    ctx = browser.new_context(viewport={"width": 1280, "height": 1600}, extra_http_headers=as_from("198.51.100.2"))
    page = ctx.new_page()
    hosts = []
    page.on("request", lambda r: hosts.append(urlparse(r.url).hostname) if r.url.startswith(("http", "ws"))
            else None)
    try:
        page.goto(hosted.url)
        page.wait_for_selector("#generate")
        field = lambda eid: page.locator(f"#{eid} input, #{eid} textarea").first  # noqa: E731
        assert page.locator("#download-pair").count() == 1 and page.is_disabled("#download-pair")

        field("seed").fill(EVIL)
        page.click("#generate")
        page.wait_for_function("() => document.querySelector('#form-error')?.innerText.includes('evil.example')",
                               timeout=60_000)
        field("seed").fill("3")
        field("prompt").fill(EVIL)
        page.keyboard.press("Enter")
        page.click("#generate")
        page.wait_for_function("() => (document.querySelector('#form-error')?.innerText || '').includes('prompt')",
                               timeout=60_000)
        assert page.evaluate(NO_MARKUP) == 0

        field("prompt").fill("a blue square")
        page.keyboard.press("Enter")
        page.click("#generate")
        page.wait_for_function("""() => {
            const imgs = document.querySelectorAll('#pair img.zoom-img');
            return imgs.length === 2 && [...imgs].every(i => i.complete && i.naturalWidth > 0)
                && !document.querySelector('#vote-left').disabled;
        }""", timeout=120_000)
        srcs = page.evaluate("() => [...document.querySelectorAll('#pair img, #flicker img')].map(i => i.src)")
        assert len(srcs) == 4 and all(urlparse(s).path.startswith("/pair-image/v1/") for s in srcs), srcs
        assert "data:image" not in page.inner_html("#pair") + page.inner_html("#flicker")

        # The stored pair's question, as a bundle or a file could name it, and the voter's note.
        with sqlite3.connect(hosted.results) as db:
            db.execute("UPDATE pairs SET pairing = ?", (EVIL,))
        page.locator("#auto-next input").check()
        page.locator("#vote-note textarea").fill(EVIL)
        page.click("#vote-left")
        page.wait_for_function("() => document.querySelector('#vote-status')?.innerText.includes('Previous pair')",
                               timeout=120_000)
        status = page.inner_text("#vote-status")
        assert EVIL in status, status
        assert page.evaluate(NO_MARKUP) == 0
        href = page.get_attribute("#download-pair", "href") or ""
        assert not href  # the next pair is on screen: its zip is not offered before its vote
    finally:
        ctx.close()
    assert hosts and set(hosts) == {"127.0.0.1"}, set(hosts)
    assert zips_in(hosted.cache) == []


def test_reveal_and_zip_link_after_a_vote(hosted, browser):
    ctx = browser.new_context(viewport={"width": 1280, "height": 1600}, extra_http_headers=as_from("198.51.100.3"))
    page = ctx.new_page()
    try:
        page.goto(hosted.url)
        page.wait_for_selector("#generate")
        page.click("#generate")
        page.wait_for_function("() => !document.querySelector('#vote-left').disabled", timeout=120_000)
        with sqlite3.connect(hosted.results) as db:
            db.execute("UPDATE pairs SET pairing = ?", (EVIL,))
        page.click("#vote-right")
        page.wait_for_function("() => document.querySelector('#reveal')?.innerText.includes('Left was')",
                               timeout=60_000)
        assert EVIL in page.inner_text("#reveal") and page.evaluate(NO_MARKUP) == 0
        assert set(page.locator("#pair figcaption").all_inner_texts()) == {"A", "B"}
        href = page.get_attribute("#download-pair", "href")
        assert href and href.startswith("/pair-zip/")
        status, _, body = get(hosted.url.rstrip("/") + href)
        assert status == 200 and body[:2] == b"PK"
    finally:
        ctx.close()
    assert zips_in(hosted.cache) == []


def test_hosted_without_pair_downloads_offers_no_zip(tmp_path):
    app = LiveApp(tmp_path / "r.db", "--hosted")
    try:
        c = Client(app.url, verbose=False)
        out = c.predict("a red circle", 1, "final-zero", 4, "heun", api_name="/generate_pair")
        c.predict(out["pair_id"], "left", "", api_name="/vote")
        assert get(f"{app.url}pair-zip/{out['pair_id']}.zip")[0] == 404
        assert get(app.url.rstrip("/") + out["left"])[0] == 200
    finally:
        app.stop()


# -- without a server ------------------------------------------------------------------------------

def test_pair_view_takes_urls_escaped_with_their_size():
    from comparisons.workflows import pair_view
    html = pair_view.pair_html('/pair-image/v1/x.png"><script>', "/pair-image/v1/y.png", size=(64, 48))
    assert '<script>' not in html and "&quot;&gt;&lt;script&gt;" in html
    assert html.count('width="64" height="48"') == 2
    assert 'width=' not in pair_view.flicker_html("/a.png", "/b.png")  # no size: none said
    image = Image.new("RGB", (5, 7))
    assert 'src="data:image/png;base64,' in pair_view.pair_html(image, image)  # PIL images still inline


def test_markdown_text_and_reveal_make_no_markup():
    from ui import views
    md = views.markdown_text(EVIL)
    assert "<" not in md and "](" not in md and "![" not in md
    reveal = views.reveal_html({"choice": "left", "winner": "A", "reveal": {
        "pairing": EVIL, "left": "A", "right": "B", "config_a": {"sampler": EVIL}, "config_b": {"sampler": "x"}}})
    assert "<img" not in reveal and "&lt;img" in reveal
    assert "<img" not in views.status_html((EVIL, True), (EVIL, False))


def test_compared_images_are_registered_and_bounded(tmp_path):
    from comparisons.results.store import ResultsStore
    from ui.compare import ComparedImages
    store = ResultsStore(tmp_path / "r.db")
    images = ComparedImages(store)
    images.LIMIT = 4
    urls = images.register({"image_a": "images/a.png", "image_b": "images/b.png"})
    token = urls["A"].rsplit("/", 1)[1][:-4]
    assert urls["A"] != urls["B"] and images._files[token] == "images/a.png"
    for n in range(3):
        images.register({"image_a": f"images/{n}a.png", "image_b": f"images/{n}b.png"})
    assert len(images._files) == 4 and token not in images._files  # the oldest forgotten


def test_session_state_holds_no_images(monkeypatch):
    """What the Compare tab keeps per session after a generation: ids, URLs and a size, nothing else."""
    from ui import compare
    w = {k: k for k in ("current", "pair", "flicker", "visibility", "maps", "slider", "metrics", "plot", "schedules",
                        "reveal", "status", "download", "error", "gain", "seed", "prompt", "model", "pairing")}
    w.update({f"vote:{c}": f"vote:{c}" for c in compare.VOTE_BUTTONS})
    image = Image.new("RGB", (8, 8))
    arm = SimpleNamespace(image=image)
    out = {"serve_id": "s" * 32, "pair_id": "p1", "left": image, "right": image, "left_url": "/pair-image/v1/l.png",
           "right_url": "/pair-image/v1/r.png", "size": (8, 8), "arms": {"A": arm, "B": arm},
           "maps": {"lpips_spatial": None, "flip": None}, "metrics": {}, "visibility": {"below": False}}
    seen = {}
    monkeypatch.setattr(compare, "serve_pair", lambda *a, **k: out)
    monkeypatch.setattr(compare, "configs_of", lambda data, w: (None, None))
    monkeypatch.setattr(compare, "pair_maps", lambda *a: {})
    for name in ("pair_html", "flicker_html", "visibility_html", "maps_panel", "slider_images", "metrics_markdown",
                 "schedule_html", "schedule_markdown"):
        monkeypatch.setattr(compare.views, name, lambda *a, _n=name, **k: seen.setdefault(_n, a) and "")
    settings = SimpleNamespace(hosted=object(), pair_downloads=False)
    result = compare.generate(None, settings, w, {"seed": "1", "prompt": "", "model": "", "pairing": "", "gain": 8},
                              None, lambda *a, **k: None)
    assert result["current"] == {"serve_id": "s" * 32, "pair_id": "p1", "left": "/pair-image/v1/l.png",
                                 "right": "/pair-image/v1/r.png", "size": (8, 8)}
    assert seen["pair_html"][:2] == ("/pair-image/v1/l.png", "/pair-image/v1/r.png")
    assert result["download"] == ""  # hosted without --pair-downloads: no zip offered
