"""The Compare tab as an instrument, in Debian's Chromium: correct custom runs, clean voting by keys, synced
zoom, colour bars, the visibility line, the leaderboard, and the phone layout. Screenshots go to
test-artifacts/ at 1280x800 and 390x844."""
import json
import re
import time

import pytest

from comparisons.results.store import ResultsStore
from tests.conftest import ARTIFACTS, LiveApp

DESK = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    live = LiveApp(tmp_path_factory.mktemp("instrument") / "results.db")
    yield live
    live.stop()
    # Every event the browser sent ran to the end: no handler failed with a traceback on the server.
    log = (live.results.parent / "app.log").read_text()
    assert "Traceback" not in log, log[-3000:]


def open_page(browser, app, viewport=DESK, phone=False):
    ctx = browser.new_context(viewport=viewport, is_mobile=phone, has_touch=phone, accept_downloads=True)
    page = ctx.new_page()
    page.goto(app.url)
    page.wait_for_selector("#generate")
    return ctx, page


def fill(page, elem_id, value):
    page.locator(f"#{elem_id} input, #{elem_id} textarea").first.fill(str(value))


def pick(page, elem_id, option):
    page.locator(f"#{elem_id} input").first.click()
    page.get_by_role("option", name=option, exact=True).click()


def shot(page, name):
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def wait_pair(page, seed=None):
    """Until a fresh pair is on screen and votable (and, when given, made with `seed`)."""
    page.wait_for_function("""() => {
        const imgs = document.querySelectorAll('#pair img.zoom-img');
        return imgs.length === 2 && [...imgs].every(i => i.complete && i.naturalWidth > 0 && !i.dataset.old)
            && !document.querySelector('#vote-left').disabled;
    }""", timeout=120_000)
    if seed is not None:
        assert page.locator("#seed input, #seed textarea").first.input_value() == str(seed)


def generate(page, pairing="final-zero", steps=4, seed=0):
    pick(page, "pairing", pairing)
    if pairing != "custom":
        fill(page, "steps", steps)
    fill(page, "seed", seed)
    # The pair on screen is marked, so waiting cannot mistake it for the new one before the page clears it.
    page.evaluate("() => document.querySelectorAll('#pair img').forEach(i => { i.dataset.old = '1'; })")
    page.click("#generate")
    wait_pair(page)


def refusal(page, text, field):
    """A refused action: exactly one message, under the controls, naming what to change; `field` (an element id,
    or None) alone marked; no toast and no 'Error' badge on any output."""
    page.wait_for_function("t => document.querySelector('#form-error')?.innerText.includes(t)", arg=text,
                           timeout=60_000)
    page.wait_for_function("() => !document.querySelector('#pair .pending, #pair .generating')")
    assert page.locator("#form-error .form-error").count() == 1 and page.locator(".toast-body").count() == 0
    assert page.get_by_text("Error", exact=True).count() == 0
    marked = page.evaluate("() => [...document.querySelectorAll('.field-error')].map(e => e.id)")
    assert marked == ([field] if field else []), marked


def error_toasts(page):
    """Red toasts, and the 'Error' badges Gradio puts on the outputs of an event that failed."""
    return page.locator(".toast-body.error").count() + page.get_by_text("Error", exact=True).count()


def last_pair(app):
    return ResultsStore(app.results).pairs()[-1]


def test_custom_churn_is_sampled_and_wrong_inputs_name_the_field(browser, app):
    ctx, page = open_page(browser, app)
    pick(page, "pairing", "custom")
    # The top-level steps/sampler/guidance do not apply to custom configs: they are disabled.
    page.wait_for_function("() => document.querySelector('#steps input, #steps textarea').disabled")
    page.wait_for_function("() => document.querySelector('#preset-explanation').innerText.includes('custom panels')")
    fill(page, "custom-a-steps", 4)
    fill(page, "custom-b-steps", 4)
    pick(page, "custom-a-quantize", "off")
    fill(page, "custom-a-s-churn", 20)
    # s_tmax stays empty: no upper limit (not 0, which would switch churn off).
    assert page.locator("#custom-a-s-tmax input, #custom-a-s-tmax textarea").first.input_value() == ""
    page.click("#generate")
    wait_pair(page)
    pair = last_pair(app)
    a, b = json.loads(pair["config_a"]), json.loads(pair["config_b"])
    assert (a["s_churn"], a["s_tmax"], a["steps"], b["s_churn"]) == (20.0, None, 4, 0.0)
    assert pair["lpips"] > 0.01 and pair["max_abs_diff"] > 3  # churn 20 changes the picture
    shot(page, "custom-churn-1280")

    fill(page, "custom-b-steps", 0)
    page.click("#generate")
    refusal(page, "steps of config B must be ≥ 1", "custom-b-steps")
    # The failed generation took the old pair away: nothing stale to vote on.
    assert page.locator("#pair img").count() == 0 and page.is_disabled("#vote-left")
    fill(page, "custom-b-steps", 4)
    fill(page, "custom-a-s-tmax", 1)
    fill(page, "custom-a-s-tmin", 50)
    page.click("#generate")
    refusal(page, "config A: s_tmin (50.0) must not exceed s_tmax (1.0)", "custom-a-s-tmin")
    fill(page, "custom-a-s-tmin", 0)
    fill(page, "seed", "3.7")
    page.click("#generate")
    refusal(page, "seed must be a whole number", "seed")
    shot(page, "refused-1280")
    fill(page, "seed", "1")
    fill(page, "prompt", "")
    page.click("#generate")
    refusal(page, "the prompt is empty", "prompt")
    n_pairs = len(ResultsStore(app.results).pairs())
    pick(page, "prompt", "(unconditional)")
    page.click("#generate")
    wait_pair(page)
    assert len(ResultsStore(app.results).pairs()) == n_pairs + 1 and last_pair(app)["prompt"] == ""
    assert page.locator("#form-error .form-error").count() == 0  # the next action took the message away
    assert page.evaluate("() => document.querySelectorAll('.field-error').length") == 0
    ctx.close()


def test_vote_loop_by_keys_clears_the_note_and_counts_one_click(browser, app):
    ctx, page = open_page(browser, app)
    generate(page, "final-zero", steps=4, seed=5)
    # The pair and all four vote buttons fit one 1280x800 screen, flicker beside the pair.
    pair, flicker, last = (page.locator(s).bounding_box() for s in ("#pair", "#flicker", "#vote-both-bad"))
    assert pair["y"] >= 0 and last["y"] + last["height"] <= DESK["height"]
    assert abs(flicker["y"] - pair["y"]) < 5 and flicker["x"] > pair["x"] + pair["width"] - 5
    assert "Below visibility" not in page.inner_text("#visibility")
    assert page.locator("#key-hint").is_visible()
    shot(page, "pair-1280")

    votes_before = len(ResultsStore(app.results).votes())
    fill(page, "vote-note", "left is sharper")
    page.locator("#title").click()   # focus out of the note: keys go to the page
    page.keyboard.press("1")
    page.wait_for_function("() => document.querySelector('#reveal').innerText.includes('Left was')")
    page.keyboard.press("1")          # a second vote on the same pair: ignored, no error
    page.keyboard.press("2")
    time.sleep(1.0)
    assert page.locator("#vote-note textarea").input_value() == ""
    assert error_toasts(page) == 0
    votes = ResultsStore(app.results).votes()
    assert len(votes) == votes_before + 1 and votes[-1]["note"] == "left is sharper"
    # After the vote the views are labelled A and B, and the pair can be downloaded.
    assert set(page.locator("#pair figcaption").all_inner_texts()) == {"A", "B"}
    assert not page.is_disabled("#download-pair")
    shot(page, "revealed-1280")

    for key, winner_side in (("2", "right"), ("3", "tie"), ("4", "both_bad")):
        seed_before = page.locator("#seed input, #seed textarea").first.input_value()
        page.keyboard.press("n")
        page.wait_for_function("s => document.querySelector('#seed input, #seed textarea').value !== s",
                               arg=seed_before)
        wait_pair(page)
        assert page.inner_text("#reveal").strip() == ""
        page.keyboard.press(key)
        page.wait_for_function("() => document.querySelector('#vote-left').disabled")
        page.wait_for_function("() => document.querySelector('#reveal').innerText.includes('Left was')")
    votes = ResultsStore(app.results).votes()[votes_before:]
    assert len(votes) == 4 and [v["note"] for v in votes] == ["left is sharper", "", "", ""]
    assert votes[2]["winner"] == "tie" and votes[3]["winner"] == "both_bad"
    assert votes[1]["winner"] != votes[1]["left_config"]  # '2' is the right-hand image

    # With "next pair after voting" the vote is followed by a fresh pair, served automatically.
    page.check("#auto-next input")
    page.keyboard.press("n")
    wait_pair(page)
    seed_before = page.locator("#seed input, #seed textarea").first.input_value()
    page.locator("#title").click()
    page.keyboard.press("3")
    page.wait_for_function("s => document.querySelector('#seed input, #seed textarea').value !== s",
                           arg=seed_before, timeout=60_000)
    wait_pair(page)
    assert len(ResultsStore(app.results).votes()) == votes_before + 5
    assert error_toasts(page) == 0
    ctx.close()


def box_state(page):
    return page.evaluate("""() => [...document.querySelectorAll('.zoom-box')].map(b => {
        const img = b.querySelector('img');
        const px = parseFloat(b.dataset.px);
        return {px, k: px / 1, natural: img.naturalWidth, width: parseFloat(img.style.width),
                x: -parseFloat(img.style.left) / px, y: -parseFloat(img.style.top) / px};
    })""")


def test_zoom_pan_readout_colour_bar_and_visibility(browser, app):
    ctx, page = open_page(browser, app)
    generate(page, "discretization", steps=6, seed=2)
    # The discretization pair on the embedded model differs by a few 8-bit steps at most: said plainly.
    assert "Below visibility" in page.inner_text("#visibility")
    assert "uninformative" in page.inner_text("#vote-status")
    shot(page, "below-visibility-1280")

    before = box_state(page)
    assert len(before) == 3 and all(b["width"] == b["natural"] * b["px"] for b in before)
    box = page.locator("#pair-left-box").bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.7, box["y"] + box["height"] * 0.6)
    page.mouse.wheel(0, -100)
    page.mouse.wheel(0, -100)
    page.wait_for_function("() => window.abViewer.state.zoom === 4")
    assert page.inner_text("#zoom-level") == "zoom ×4"  # the zoom is shown, not only applied
    zoomed = box_state(page)
    for b, b0 in zip(zoomed, before):
        assert b["px"] == 4 * b0["px"] and b["px"] == int(b["px"])  # whole CSS pixels per image pixel
    # Every view shows the same region of the image (image coordinates agree to a pixel).
    assert max(abs(b["x"] - zoomed[0]["x"]) for b in zoomed) <= 1 and zoomed[0]["x"] > 0
    # Drag pans all views together.
    page.mouse.move(box["x"] + 100, box["y"] + 100)
    page.mouse.down()
    page.mouse.move(box["x"] + 40, box["y"] + 70, steps=5)
    page.mouse.up()
    panned = box_state(page)
    assert panned[0]["x"] > zoomed[0]["x"] and max(abs(b["x"] - panned[0]["x"]) for b in panned) <= 1
    # Hover readout: coordinates and both sides' RGB.
    page.mouse.move(box["x"] + 10, box["y"] + 10)
    assert re.search(r"x \d+, y \d+ · left \(\d+, \d+, \d+\) · right \(\d+, \d+, \d+\)",
                     page.inner_text("#pixel-readout"))
    shot(page, "zoomed-1280")
    page.locator("#title").click()
    page.keyboard.press("0")
    assert [b["px"] for b in box_state(page)] == [b["px"] for b in before]

    # Colour bars: absolute 8-bit units that follow the gain; the LPIPS map on a fixed scale.
    bar = page.inner_text("#diff-colorbar")
    assert "0" in bar and "≥ 31.9/255" in bar and "31.875" not in bar  # default gain x8: bright = 255/8
    page.locator("#diff-gain label", has_text=re.compile(r"^\s*1\s*$")).click()
    page.wait_for_function("() => document.querySelector('#diff-colorbar').innerText.includes('255/255')")
    assert "0.5" in page.inner_text("#lpips-colorbar")
    assert page.locator("#diff-maps img").count() == 4  # |Δ|, amplified, LPIPS and FLIP
    assert "visible from 0.1" in page.inner_text("#flip-colorbar")
    # The slider shows both images at their own (integer-upscaled) size, never rescaled to fit its box.
    slider = page.evaluate("""() => [...document.querySelectorAll('#slider img')]
        .map(i => [i.naturalWidth, getComputedStyle(i).objectFit])""")
    assert slider and all(w == 8 * 32 and fit == "none" for w, fit in slider), slider

    generate(page, "final-zero", steps=4, seed=2)
    assert "Below visibility" not in page.inner_text("#visibility")
    assert "Visible" in page.inner_text("#visibility")
    ctx.close()


def test_results_show_columns_legend_charts_and_leaderboard(browser, app):
    ctx, page = open_page(browser, app)
    generate(page, "final-zero", steps=4, seed=11)
    page.locator("#title").click()
    page.keyboard.press("1")
    page.wait_for_function("() => document.querySelector('#reveal').innerText.includes('Left was')")
    page.get_by_role("tab", name="Results").click()   # opening the tab fills it
    page.wait_for_function("() => document.querySelector('#leaderboard').innerText.includes('heun 4 steps')",
                           timeout=60_000)
    page.wait_for_selector("#win-rate-chart", timeout=60_000)  # the charts follow the tables
    page.wait_for_function("() => !document.querySelector('#results-charts .pending, #leaderboard .pending')")
    stats = page.inner_text("#stats-table")
    # What tells questions apart (pairing, sampler, schedule, steps, guidance) and the verdict's numbers are
    # columns; the rest (wins, ties, prompts, votes still needed) is under each row's "more".
    for shown in ("final-zero · heun · karras · 4 steps · g 3.0", "A vs B", "decisive", "A win rate [95% CI]",
                  "left rate"):
        assert shown in stats
    page.locator("#stats-rows summary").first.click()
    assert "prompt" in page.inner_text("#stats-rows") and "votes still needed" in page.inner_text("#stats-rows")
    assert "sign test" in page.inner_text("#stats-legend")
    assert page.locator("#win-rate-chart").count() == 1 and page.locator("#lpips-chart").count() == 1
    board = page.inner_text("#leaderboard")
    assert "final_zero=False" in board
    shot(page, "results-1280")
    for viewport in (DESK, PHONE):
        page.set_viewport_size(viewport)
        time.sleep(0.3)
        for table in ("#stats-rows", "#leaderboard table"):
            box = page.locator(table).first.bounding_box()
            assert box["x"] >= 0 and box["x"] + box["width"] <= viewport["width"] + 1, (table, box, viewport)
    shot(page, "results-390")
    ctx.close()


def test_phone_keeps_two_columns_and_tap_flickers(browser, app):
    ctx, page = open_page(browser, app, PHONE, phone=True)
    generate(page, "final-zero", steps=4, seed=3)
    left, right = page.locator("#pair-left-box").bounding_box(), page.locator("#pair-right-box").bounding_box()
    assert abs(left["y"] - right["y"]) < 1 and right["x"] >= left["x"] + left["width"]
    assert right["x"] + right["width"] <= PHONE["width"]
    stage = box_state(page)[2]
    assert stage["px"] == int(stage["px"]) and stage["width"] == stage["natural"] * stage["px"]
    flicker_box = page.locator("#flicker-box").bounding_box()
    assert flicker_box["x"] + flicker_box["width"] <= PHONE["width"]
    assert not page.locator("#key-hint").is_visible()   # no keyboard on a phone
    side = lambda: page.evaluate("""() => [...document.querySelectorAll('#flicker img.flicker-frame')]
        .filter(i => i.style.visibility === 'visible').map(i => i.dataset.side).join()""")  # noqa: E731
    page.locator("#flicker-box").tap()
    seen = set()
    deadline = time.time() + 30  # a fail-safe: the loop ends as soon as both sides were seen
    while time.time() < deadline and len(seen) < 2:
        seen.add(side())
        time.sleep(0.05)
    assert seen == {"left", "right"}
    page.locator("#flicker-box").tap()
    shot(page, "pair-390")
    page.locator("#vote-left").tap()
    page.wait_for_function("() => document.querySelector('#reveal').innerText.includes('Left was')")
    assert set(page.locator("#pair figcaption").all_inner_texts()) == {"A", "B"}
    time.sleep(1.0)
    assert error_toasts(page) == 0
    shot(page, "revealed-390")
    ctx.close()
