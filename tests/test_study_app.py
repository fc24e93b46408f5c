"""The app's Study tab and the /?pair= route, in Debian's Chromium driven by Playwright."""
import sqlite3

import pytest

from tests.conftest import ARTIFACTS, LiveApp, fill_checked, run_cli


@pytest.fixture(scope="module")
def study_app(tmp_path_factory):
    folder = tmp_path_factory.mktemp("study-app")
    results = folder / "results.db"
    # A stored study, made by the CLI (its main(), in this process) into the results file the app then serves.
    code, _, err = run_cli(["study", "--questions", "final-zero", "--samplers", "heun", "--steps", "3,6", "--seeds",
                            "0-3", "--results", str(results), "--out", str(folder / "cli-study"), "--reference",
                            '{"steps": 12}', "--reference-check", "1"])
    assert code == 0, err
    app = LiveApp(results)
    yield app
    app.stop()


def test_pair_link_opens_the_stored_pair_not_blind(study_app, page):
    pair_id = sqlite3.connect(study_app.results).execute(
        "SELECT pair_id FROM study_rows WHERE steps = 3 ORDER BY seed LIMIT 1").fetchone()[0]
    page.goto(f"{study_app.url}?pair={pair_id}")
    page.wait_for_function("() => document.querySelectorAll('#pair img').length === 2", timeout=60_000)
    page.wait_for_function("() => document.querySelector('#reveal')?.innerText.includes('not blind')")
    captions = page.locator("#pair figcaption").all_inner_texts()
    assert captions == ["A", "B"] and page.locator("#flicker img.flicker-frame").count() == 2
    reveal = page.inner_text("#reveal")
    assert pair_id in reveal and "final-zero" in reveal and "LPIPS to the reference" in reveal
    assert page.is_disabled("#vote-left")  # a stored pair is not voted on from a link
    # Everything a fresh pair shows: the visibility line, metrics, every map with its colour bar, the schedules;
    # and the form holds the pair's own settings, read-only.
    seed = str(sqlite3.connect(study_app.results).execute("SELECT seed FROM pairs WHERE pair_id = ?",
                                                          (pair_id,)).fetchone()[0])
    page.wait_for_function("s => document.querySelector('#seed textarea, #seed input')?.value === s", arg=seed)
    assert page.locator("#seed textarea, #seed input").first.is_disabled()
    assert page.locator("#steps textarea, #steps input").first.input_value() == "3"
    assert "FLIP" in page.inner_text("#visibility") and page.locator("#visibility .sentence").count() == 1
    assert page.locator("#diff-maps img.map-img").count() == 4 and page.locator("#flip-colorbar").count() == 1
    assert "LPIPS" in page.inner_text("#pair-metrics") and page.is_disabled("#generate")
    page.get_by_text("Sigma schedules").click()
    page.wait_for_selector("#schedule-chart", state="visible")
    assert "— continuous:" in page.inner_text("body")  # the sigma lists of both arms beside the plot
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "study-pair-link.png"), full_page=True)  # after the schedules open
    page.goto(f"{study_app.url}?pair=nonexistent")
    page.wait_for_function("() => document.querySelector('#reveal')?.innerText.includes('No stored pair')")


def test_study_tab_shows_and_runs_studies(study_app, page):
    page.goto(study_app.url)
    page.get_by_role("tab", name="Study").click()
    page.locator("#study-choice input").click()
    page.get_by_role("option", name="cli-study").click()
    page.wait_for_function("() => document.querySelectorAll('#study-plots img').length === 1", timeout=60_000)
    table = page.inner_text("#study-table")
    assert "final-zero" in table and "verdict" in table
    assert "8 of 8 rows" in page.inner_text("#study-header")
    links = page.locator("#study-examples a[href*='?pair=']").count()
    assert links >= 2 * 3
    page.screenshot(path=str(ARTIFACTS / "study-tab.png"), full_page=True)

    # A small study from the app: progress, then its verdicts in the same view. Opening the tab lists and shows the
    # newest study: wait until nothing is pending, so no update lands while the fields are being filled.
    page.wait_for_function("() => !document.querySelector('#study-header .pending, #study-choice .pending, "
                           "#study-plots .pending, #study-table .pending')")
    page.get_by_text("Run a small study").click()
    page.wait_for_selector("#study-name textarea", state="visible")
    # Each field is checked after filling: a value lost to a re-render would run the default (bigger) study.
    for field, value in ((page.locator("#study-name textarea"), "from-the-app"),
                         (page.get_by_label("steps (comma-separated)"), "3"),
                         (page.get_by_label("seeds (e.g. 0-7 or 0,3,5)"), "0-1")):
        fill_checked(field, value)
    page.click("#run-study")
    page.wait_for_function(
        "() => document.querySelector('#study-header')?.innerText.includes('from-the-app · model')", timeout=240_000)
    assert "4 of 4 rows" in page.inner_text("#study-header")  # 2 questions x 1 step count x 2 samples
    page.screenshot(path=str(ARTIFACTS / "study-from-the-app.png"), full_page=True)
    # Too many samples for the app: refused with a message, nothing stored.
    page.get_by_label("seeds (e.g. 0-7 or 0,3,5)").fill("0-99")
    page.fill("#study-name textarea", "too-big")
    page.click("#run-study")
    page.wait_for_selector("text=at most 64 samples", timeout=30_000)
    names = [r[0] for r in sqlite3.connect(study_app.results).execute("SELECT name FROM studies")]
    assert sorted(names) == ["cli-study", "from-the-app"]


def test_hosted_app_offers_no_study_runs(tmp_path, browser):
    app = LiveApp(tmp_path / "results.db", "--hosted")
    try:
        page = browser.new_page()
        page.goto(app.url)
        page.get_by_role("tab", name="Study").click()
        page.wait_for_selector("#study-choice")
        assert page.locator("#run-study").count() == 0
        page.close()
    finally:
        app.stop()


GRID_STATE = """() => {
  const cells = [...document.querySelectorAll('#study-grid .grid-cell')];
  return {cells: cells.length, px: cells.map((c) => c.querySelector('.zoom-box').dataset.px),
          frames: [...document.querySelectorAll('#study-grid .grid-pair img.flicker-frame')]
                    .map((i) => [i.getAttribute('src'), i.style.visibility])};
}"""


def test_grid_zooms_and_opens_two_cells_as_a_flicker_pair(study_app, page):
    """The Study tab's X/Y/Z grid: columns steps, rows arm, one panel (heun); a reference per row. Wheel zoom
    doubles every cell's scale at once; two clicked cells open as a pair whose flicker alternates them."""
    page.goto(study_app.url)
    page.get_by_role("tab", name="Study").click()
    page.locator("#study-choice input").click()
    page.get_by_role("option", name="cli-study").click()
    page.wait_for_function("() => document.querySelectorAll('#study-plots img').length === 1", timeout=60_000)
    page.get_by_text("X/Y/Z grid").click()
    page.click("#show-grid")
    page.wait_for_function("() => document.querySelectorAll('#study-grid .grid-cell').length > 0 && "
                           "!document.querySelector('#study-grid .pending, #study-choice .pending')", timeout=60_000)
    state = page.evaluate(GRID_STATE)
    # 2 step counts x 2 arms (final-zero A, B) + a reference per row; seed 0 fixed.
    assert state["cells"] == 2 * 2 + 2, state
    text = page.inner_text("#study-grid")
    assert "Study cli-study" in text and "panels: sampler" in text and "sampler heun" in text
    assert "fixed: schedule karras · seed 0" in text
    before = {int(p) for p in state["px"]}
    assert len(before) == 1  # one scale for every cell
    cells = page.locator("#study-grid .grid-cell")
    cells.nth(1).scroll_into_view_if_needed()  # the wheel goes to what is under the pointer, on screen
    box = cells.nth(1).bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.wheel(0, -100)
    page.wait_for_function(f"() => [...document.querySelectorAll('#study-grid .zoom-box')]"
                           f".every((b) => b.dataset.px === '{2 * before.pop()}')")
    page.keyboard.press("0")  # reset the zoom, then pick two cells
    srcs = [cells.nth(k).locator("img").get_attribute("src") for k in (1, 2)]
    assert srcs[0] != srcs[1]
    cells.nth(1).click()
    assert "One cell picked" in page.inner_text("#study-grid .grid-pair")
    cells.nth(2).click()
    page.wait_for_function("() => document.querySelectorAll('#study-grid .grid-pair img.flicker-frame').length === 2")
    frames = page.evaluate(GRID_STATE)["frames"]
    assert [f[0] for f in frames] == srcs and [f[1] for f in frames] == ["visible", "hidden"]
    assert page.locator("#study-grid .grid-pair .pair-cell img").count() == 2
    page.click("#study-grid .flicker-toggle")
    page.wait_for_function("() => [...document.querySelectorAll('#study-grid img.flicker-frame')]"
                           ".map((i) => i.style.visibility).join() === 'hidden,visible'", timeout=30_000)
    page.click("#study-grid .flicker-toggle")  # stop
    page.screenshot(path=str(ARTIFACTS / "study-grid.png"), full_page=True)
    # Axes that repeat are refused where the grid would be.
    page.locator("#grid-y input").click()
    page.get_by_role("option", name="steps", exact=True).click()
    page.click("#show-grid")
    page.wait_for_selector("#study-grid .form-error", timeout=30_000)
    assert "different ones of sampler, schedule, steps, arm, seed" in page.inner_text("#study-grid")


def test_report_grid_is_self_contained_and_zooms(study_app, page):
    """The CLI's report.html carries the grid and the app's scripts: it zooms and pairs from a file:// page."""
    out = study_app.results.parent / "cli-study"
    assert (out / "grid-steps-arm-sampler-heun.png").exists()
    page.goto((out / "report.html").as_uri())
    page.wait_for_selector(".xyz .grid-cell")
    cells = page.locator(".xyz .grid-cell")
    assert cells.count() == 6
    cells.nth(0).click()  # the reference pairs like any cell
    cells.nth(1).click()
    page.wait_for_function("() => document.querySelectorAll('.grid-pair img.flicker-frame').length === 2")
    px = lambda: page.evaluate("() => [...document.querySelectorAll('.xyz .grid-cell .zoom-box')]"  # noqa: E731
                               ".map((b) => b.dataset.px)")
    before = px()
    assert len(set(before)) == 1
    cells.nth(3).scroll_into_view_if_needed()
    box = cells.nth(3).bounding_box()
    page.mouse.move(box["x"] + 10, box["y"] + 10)
    page.mouse.wheel(0, -100)
    page.wait_for_function("k => [...document.querySelectorAll('.xyz .grid-cell .zoom-box')]"
                           ".every((b) => b.dataset.px === k)", arg=str(2 * int(before[0])))
