"""The Results tab: statistics, charts, the leaderboard and campaign tables for everyone; locally one page of
pairs and of votes at a time; both CSVs written when a download button is pressed, not before."""
import functools

import gradio as gr

from comparisons.results.export import both, export_csv, pairs_frame, stated_setting, votes_frame
from comparisons.workflows.results import charts, results
from ui import views

PER_PAGE = 50
# Saves the file a DownloadButton was just given (its value: FileData with url and orig_name).
DOWNLOAD_JS = """(file) => { if (!file || !file.url) return; const a = document.createElement('a');
a.href = file.url; a.download = file.orig_name || 'download.csv';
document.body.appendChild(a); a.click(); a.remove(); }"""


def export_files(lab, settings, export_dir):
    """pairs.csv and votes.csv; hosted: session ids as salted hashes and no notes (unless --export-notes)."""
    hosted = settings.hosted is not None
    return export_csv(lab.store, export_dir, salt=lab.store.salt() if hosted else None,
                      notes=settings.export_notes or not hosted)


def csv_download(lab, settings, export_dir, index):
    """Write both CSVs now and give the download button file `index` (0: pairs.csv, 1: votes.csv)."""
    return str(export_files(lab, settings, export_dir)[index])


def refresh_results(lab, settings, pairs_page=1, votes_page=1):
    """{output name: value}: statistics and the leaderboard for everyone; locally also one page of pairs and of
    votes. Nothing is written: the CSVs are made when a download button is pressed; the charts come after
    (charts_html), so the tables never wait for matplotlib."""
    out = aggregates(lab)
    if settings.hosted:
        return {**out, "pairs": None, "votes": None, "pairs_note": "", "votes_note": ""}  # aggregates only
    return {**out, **table_page(lab, "pairs", pairs_page), **table_page(lab, "votes", votes_page)}


def aggregates(lab):
    """What everyone may see: statistics per question, the leaderboard, the campaign tables (computed once per
    state of the store: workflows.results)."""
    n = results(lab.store)
    return {"stats": views.stats_html(n["rows"]),
            "leaderboard": views.leaderboard_html(n["board"]), "leaderboard_note": views.leaderboard_note(n["board"]),
            "campaigns": views.campaign_table_html(n["campaigns"])}


def charts_html(lab):
    """A's win rate per comparison and LPIPS(A, B) per comparison (pairing, config A, config B: never two samplers
    or two config pairs under one label), as two inline PNGs (drawn once per store state)."""
    n = charts(lab.store)
    return (views.image_html(n["win_rate_png"], "win-rate-chart",
                             "A's win rate per comparison (pairing, sampler and steps, A's and B's settings)")
            + views.image_html(n["lpips_png"], "lpips-chart",
                               "LPIPS(A, B) per comparison (pairing, sampler and steps, A's and B's settings)"))


def table_page(lab, which, page):
    """{which: one page of the pairs ('pairs') or votes ('votes') table, which_note: where it is}; local only."""
    page = _page(page)
    if which == "pairs":
        rows, n = lab.store.pairs_page(page - 1, PER_PAGE)
        table = pairs_frame(rows)
        for field in ("sampler", "steps"):
            # A pair of image files states its own (votes.csv reads them the same way).
            table[field] = [both(a, b) if stated is None else stated
                            for a, b, stated in zip(table[f"a_{field}"], table[f"b_{field}"],
                                                    (stated_setting(r.get("image_meta"), field) for r in rows))]
        # An identical pair's PSNR is infinite, which JSON (and so the page) would show as blank.
        table["psnr"] = ["∞ (identical)" if p is not None and p == float("inf") else p for p in table["psnr"]]
        table = table[["pair_id", "pairing", "sampler", "steps", "model", "prompt", "seed", "lpips", "flip_max",
                       "psnr", "ssim", "max_abs_diff", "created"]]
    else:
        rows, n = lab.store.votes_page(page - 1, PER_PAGE)
        table = votes_frame(rows)
    return {which: table, f"{which}_note": views.page_note(page, PER_PAGE, n, which)}


def _page(value):
    try:
        return max(1, int(value or 1))
    except (TypeError, ValueError):
        return 1


def build_results_tab(lab, settings, export_dir):
    with gr.Tab("Results") as tab:
        refresh = gr.Button("Refresh", elem_id="refresh-results")
        gr.Markdown("#### Statistics per question (A's win rate; ties and both-bad excluded from the test)")
        stats = gr.HTML(elem_id="stats-table")
        gr.Markdown(views.STATS_LEGEND, elem_id="stats-legend")
        chart_box = gr.HTML(elem_id="results-charts")
        gr.Markdown("#### Leaderboard: every config that met another in a vote")
        board_note = gr.Markdown(elem_id="leaderboard-note")
        board = gr.HTML(elem_id="leaderboard")
        gr.Markdown("#### Vote campaigns: votes per cell beside the study's LPIPS verdict")
        campaigns = gr.HTML(elem_id="campaign-stats")
        # Row-level CSVs (pair ids, sides, sessions) are a local app's; a public demo shows aggregates only.
        with gr.Row(visible=settings.hosted is None):
            csv_buttons = {name: gr.DownloadButton(f"{name}.csv", elem_id=f"download-{name}")
                           for name in ("pairs", "votes")}
        # A public demo shows aggregates only: no pair ids, sessions or other people's notes.
        with gr.Column(visible=settings.hosted is None):
            gr.Markdown("#### Pairs made here and by sweep (a study's pairs are in the Study tab)")
            pairs_page = gr.Number(1, label="pairs page", precision=0, elem_id="pairs-page")
            pairs_note = gr.Markdown(elem_id="pairs-page-note")
            pairs = gr.Dataframe(elem_id="pairs-table", interactive=False)
            gr.Markdown("#### Votes")
            votes_page = gr.Number(1, label="votes page", precision=0, elem_id="votes-page")
            votes_note = gr.Markdown(elem_id="votes-page-note")
            votes = gr.Dataframe(elem_id="votes-table", interactive=False)
    outputs = {"stats": stats, "leaderboard": board, "leaderboard_note": board_note,
               "campaigns": campaigns,
               "pairs": pairs, "votes": votes, "pairs_note": pairs_note, "votes_note": votes_note}

    def handler(pairs_page, votes_page):
        values = refresh_results(lab, settings, pairs_page, votes_page)
        return {outputs[name]: value for name, value in values.items()}
    read = dict(api_visibility="private", concurrency_id="read", concurrency_limit=16)
    for trigger in (refresh.click, tab.select):
        # One progress indicator per action: on the statistics, then on the charts.
        trigger(handler, [pairs_page, votes_page], list(outputs.values()), show_progress_on=stats, **read) \
            .then(functools.partial(charts_html, lab), None, chart_box, **read)
    if not settings.hosted:
        # A page turn reads that one page; the statistics and the leaderboard stay as they are.
        for which, number in (("pairs", pairs_page), ("votes", votes_page)):
            number.submit(functools.partial(table_page, lab, which), number,
                          [outputs[which], outputs[f"{which}_note"]], **read)
    if settings.hosted:
        return  # no handler at all: a public demo cannot be asked for row-level CSVs by a crafted request
    for index, (name, button) in enumerate(csv_buttons.items()):
        # A button holds no file at rest, so a click downloads nothing stale: the click writes the CSVs, the
        # page downloads the fresh one, and the button is emptied again.
        button.click(functools.partial(csv_download, lab, settings, export_dir, index), None, button,
                     api_visibility="private", concurrency_id="read", concurrency_limit=16) \
            .then(None, button, None, js=DOWNLOAD_JS, api_visibility="private") \
            .then(lambda: None, None, button, api_visibility="private", show_progress="hidden")
