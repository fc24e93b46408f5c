"""Cost against size. Stores of 1k/5k/20k/50k votes (a pair per 4 votes, tests.fakes.vote_store): the Results
tab's tables and charts (uncached, then cached), `python -m comparisons stats` (in-process: beyond start-up), the
CSV export, and a hosted demo on the store (page load and opening the Results tab in Chromium); on the 20,000-vote
store, the app's resident memory over 20 Results refreshes, each after a new vote. Studies of 8, 32, 128, 512 seeds
(one question, Euler 4 steps, Euler 10-step references computed first, so cached): seconds and the ratios of
successive sizes. Writes docs/scale.png and prints a Markdown table.

    .venv/bin/python bench/bench_scale.py [--votes 1000,5000,20000,50000] [--seeds 8,32,128,512] [--no-browser]
"""
import argparse
import io
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
import app  # noqa: E402
from comparisons.cli import main as cli_main  # noqa: E402
from comparisons.core.config import SamplerConfig  # noqa: E402
from comparisons.core.engine import Sample  # noqa: E402
from comparisons.core.grid import StudySpec  # noqa: E402
from comparisons.core.metrics import LPIPS  # noqa: E402
from comparisons.core.references import ensure_references  # noqa: E402
from comparisons.results.export import export_csv  # noqa: E402
from comparisons.results.store import ResultsStore  # noqa: E402
from comparisons.specs import questions_from  # noqa: E402
from comparisons.workflows import results as results_module  # noqa: E402
from comparisons.workflows.study import run_study  # noqa: E402
from tests.conftest import CHROMIUM, LAUNCH_ARGS, LiveApp  # noqa: E402
from tests.fakes import vote_store  # noqa: E402
from ui import results_tab  # noqa: E402


def timed(fn):
    """(seconds wall, CPU seconds of this process, fn's value)."""
    cpu, wall = time.process_time(), time.perf_counter()
    value = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, value


def rss_mib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def add_vote(path, i):
    """One more vote straight into the file (a new store version: the next refresh recomputes)."""
    conn = sqlite3.connect(path)
    with conn:
        pair = conn.execute("SELECT pair_id FROM pairs ORDER BY pair_id LIMIT 1 OFFSET ?", (i,)).fetchone()[0]
        conn.execute("INSERT INTO votes (pair_id, winner, left_config, session, note, created) "
                     "VALUES (?, 'A', 'A', ?, '', ?)", (pair, f"bench-{i}", time.time()))
    conn.close()


def hosted_figures(path, memory_rounds, browser):
    """Page load and Results tab of a hosted demo on `path`, and its RSS over `memory_rounds` refreshes."""
    live = LiveApp(path, "--hosted")
    try:
        page_s, _, _ = timed(lambda: browser.new_page().goto(live.url, wait_until="domcontentloaded"))
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.goto(live.url)
        page.wait_for_selector("#title")
        opened = time.perf_counter()
        page.get_by_role("tab", name="Results").click()
        page.wait_for_function("() => document.querySelector('#stats-table') && "
                               "document.querySelector('#stats-table').innerText.includes('custom')", timeout=120_000)
        tab_s = time.perf_counter() - opened
        rss = [rss_mib(live.proc.pid)]
        for i in range(memory_rounds):
            add_vote(path, i)
            page.locator("#refresh-results").click()
            page.wait_for_function("() => document.querySelector('#stats-table').innerText.includes('custom')"
                                   " && !document.querySelector('#stats-table .pending')", timeout=120_000)
            page.wait_for_selector("#win-rate-chart", timeout=120_000)
            time.sleep(0.3)
            rss.append(rss_mib(live.proc.pid))
        return page_s, tab_s, rss
    finally:
        live.stop()


def vote_figures(sizes, browser, folder):
    rows, memory = [], None
    for votes in sizes:
        store = vote_store(Path(folder) / f"v{votes}" / "r.db", pairs=votes // 4, votes=votes, seed=0)
        settings = app.Settings(app.parse_args(["--results", str(store.path)]))
        lab = type("Lab", (), {"store": store})()
        results_module._cache.clear()
        tables = timed(lambda: results_tab.refresh_results(lab, settings, 1, 1))
        charts = timed(lambda: results_tab.charts_html(lab))
        cached = timed(lambda: results_tab.refresh_results(lab, settings, 1, 1))
        stats = timed(lambda: cli_main(["stats", "--results", str(store.path)], out=io.StringIO()))
        export = timed(lambda: export_csv(store, Path(folder) / f"export{votes}"))
        row = {"votes": votes, "pairs": votes // 4, "tables_s": tables[0], "tables_cpu": tables[1],
               "charts_s": charts[0], "cached_s": cached[0], "stats_s": stats[0], "export_s": export[0]}
        if browser is not None:
            rounds = 20 if votes == 20000 else 0
            row["page_s"], row["results_tab_s"], rss = hosted_figures(store.path, rounds, browser)
            if rounds:
                memory = rss
        rows.append(row)
        print(row, flush=True)
    return rows, memory


def study_figures(seed_counts, folder):
    from sampler_lib.models import load_model
    model, metric = load_model("embedded"), LPIPS()
    reference = SamplerConfig(sampler="euler", steps=10)
    out = []
    for n in seed_counts:
        store = ResultsStore(Path(folder) / f"s{n}" / "r.db")
        spec = StudySpec(name=f"scale{n}", model="embedded", questions=questions_from("final-zero"),
                         samplers=("euler",), steps=(4,), prompts=("a red circle",), seeds=tuple(range(n)),
                         reference=reference, reference_check=0)
        ensure_references(store, model, "embedded", [Sample("a red circle", s) for s in spec.seeds],
                          lambda smp: [reference])
        wall, cpu, run = timed(lambda: run_study(store, model, metric, spec, batch=64))
        out.append({"seeds": n, "study_s": wall, "study_cpu": cpu, "rows": run.rows_written})
        print(out[-1], flush=True)
    return out


def plot(vote_rows, study_rows, memory, target):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    panels = 2 + (memory is not None)
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 4))
    v = [r["votes"] for r in vote_rows]
    for key, label in (("tables_s", "Results tables (uncached)"), ("charts_s", "Results charts"),
                       ("cached_s", "Results (cached)"), ("stats_s", "stats"), ("export_s", "CSV export"),
                       ("results_tab_s", "hosted: open Results tab")):
        if all(key in r for r in vote_rows):
            axes[0].plot(v, [r[key] for r in vote_rows], "o-", label=label)
    axes[0].axhline(2, color="grey", ls="--", lw=1)
    axes[0].set(xscale="log", yscale="log", xlabel="votes (a pair per 4 votes)", ylabel="seconds",
                title="Results against votes (dashed: 2 s target)")
    axes[0].legend(fontsize=7)
    if study_rows:
        s = [r["seeds"] for r in study_rows]
        axes[1].plot(s, [r["study_s"] for r in study_rows], "o-", label="study (references cached)")
        axes[1].plot(s, [study_rows[0]["study_s"] * n / s[0] for n in s], ":", color="grey", label="linear")
        axes[1].set(xscale="log", yscale="log", xlabel="seeds", ylabel="seconds", title="Study against seeds")
        axes[1].legend(fontsize=7)
    if memory is not None:
        axes[2].plot(range(len(memory)), memory, "o-")
        axes[2].set(xlabel="refreshes (each after a new vote)", ylabel="MiB", ylim=(0, max(1100, max(memory) * 1.1)),
                    title="hosted app RSS, 20,000 votes")
        axes[2].axhline(1024, color="grey", ls="--", lw=1)
    fig.tight_layout()
    fig.savefig(target, dpi=100)
    print(f"wrote {target}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--votes", default="1000,5000,20000,50000")
    parser.add_argument("--seeds", default="8,32,128,512")
    parser.add_argument("--no-browser", action="store_true")
    args = parser.parse_args()
    sizes = [int(x) for x in args.votes.split(",") if x]
    seed_counts = [int(x) for x in args.seeds.split(",") if x]
    with tempfile.TemporaryDirectory() as folder:
        if args.no_browser:
            vote_rows, memory = vote_figures(sizes, None, folder)
        else:
            from playwright.sync_api import sync_playwright
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
                try:
                    vote_rows, memory = vote_figures(sizes, browser, folder)
                finally:
                    browser.close()
        study_rows = study_figures(seed_counts, folder)
    print("\n| votes | pairs | Results tables (uncached) | charts | cached | `stats` | CSV export | hosted page | "
          "hosted Results tab |\n|---|---|---|---|---|---|---|---|---|")
    for r in vote_rows:
        print(f"| {r['votes']:,} | {r['pairs']:,} | {r['tables_s']:.2f} s ({r['tables_cpu']:.2f} CPU-s) | "
              f"{r['charts_s']:.2f} s | {r['cached_s']:.3f} s | {r['stats_s']:.2f} s | {r['export_s']:.2f} s | "
              f"{r.get('page_s', float('nan')):.2f} s | {r.get('results_tab_s', float('nan')):.2f} s |")
    print("\n| seeds | study | ratio to the previous size |\n|---|---|---|")
    for prev, r in zip([None] + study_rows, study_rows):
        ratio = f"{r['study_s'] / prev['study_s']:.2f} for {r['seeds'] // prev['seeds']}x" if prev else ""
        print(f"| {r['seeds']} | {r['study_s']:.1f} s ({r['study_cpu']:.1f} CPU-s) | {ratio} |")
    if memory:
        print("\nhosted app RSS over 20 refreshes at 20,000 votes (MiB): " + ", ".join(f"{m:.0f}" for m in memory))
    plot(vote_rows, study_rows, memory, ROOT / "docs" / "scale.png")


if __name__ == "__main__":
    main()
