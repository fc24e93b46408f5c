"""A study's answer: summary.csv, rows.csv and a self-contained report.html, the Study tab's view of a stored
study, and the campaign tables beside them. The numbers come from analysis/; this module reads the store and
writes the files."""
import base64
import html
import io
import math
from pathlib import Path

import numpy as np
import pandas as pd

from ..analysis.cells import cell_stats
from ..analysis.charts import question_figure
from ..analysis.stats import VERDICT_RULES
from ..core.grid import StudySpec, cell_key
from ..core.metrics import max_abs_diff
from ..core.references import reference_key
from ..core.visibility import FLIP_VISIBLE, RULE
from ..errors import ConfigError
from ..files import write_atomic
from ..results.export import csv_text
from .campaign import cell_name
from .campaign import stats as campaign_stats
from .study import fill_flip
from .xyz import DEFAULT_AXES, file_data_url, grid_html, grid_items, grid_pngs, png_name, xyz

SUMMARY_COLUMNS = ["question", "sampler", "steps", "n", "a_closer", "b_closer", "equal", "a_closer_rate", "ci_low",
                   "ci_high", "p_value", "p_holm", "mean_diff", "diff_ci_low", "diff_ci_high", "mean_rmse_diff",
                   "lpips_a_ref", "lpips_b_ref", "lpips_ab", "max_abs_diff", "visible_share", "faithful_a",
                   "faithful_b", "verdict"]
ROW_COLUMNS = ["question", "sampler", "steps", "prompt", "seed", "pair_id", "lpips_a_ref", "lpips_b_ref",
               "rmse_a_ref", "rmse_b_ref", "lpips_ab", "max_abs_diff", "flip_max", "faithful_a", "faithful_b"]
LEGEND = {
    "a_closer_rate": "share of samples (ties left out) where A is closer to the reference than B (LPIPS)",
    "ci_low/ci_high": "Wilson 95% interval of that share",
    "p_value / p_holm": "exact two-sided sign test; p_holm is Holm-corrected across the study's cells",
    "mean_diff": "mean of LPIPS(A, ref) - LPIPS(B, ref); negative: A closer; bootstrap 95% interval",
    "lpips_ab / visible_share": "mean LPIPS(A, B), and the share of pairs that are visibly different: " + RULE,
    "verdict": VERDICT_RULES + " Visibly different is by FLIP, as visible_share.",
}


STATIC = Path(__file__).resolve().parents[2] / "static"


def grid_assets():
    """The grid's stylesheet and the app's viewer, flicker and grid scripts, inlined (the report stays one file),
    read when the report is written so it has the app's current scripts."""
    css = (STATIC / "grid.css").read_text()
    scripts = "".join(f"<script>{(STATIC / n).read_text()}</script>" for n in ("flicker.js", "viewer.js", "grid.js"))
    return f"<style>{css}\n.xyz .zoom-box {{ touch-action: none; cursor: grab; }}</style>{scripts}"


def fmt_number(value, digits=3):
    """A number as the report and the CLI's study table print it ('' for none)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1e-3 and value != 0 else f"{value:.{digits}f}"
    return str(value)


# ---- examples --------------------------------------------------------------------------------------

def examples(rows, per_cell=3):
    """{cell key: the rows where the arms differ most (by LPIPS(A, B))}."""
    by_cell = {}
    for r in rows:
        by_cell.setdefault(cell_key(r), []).append(r)
    return {k: sorted(v, key=lambda r: (-r["lpips_ab"], r["prompt"], r["seed"]))[:per_cell]
            for k, v in by_cell.items()}


def _thumb(path, scale=3):
    from PIL import Image

    image = Image.open(path).convert("RGB")
    factor = max(1, (32 * scale) // max(image.size))
    image = image.resize((image.width * factor, image.height * factor), Image.NEAREST) if factor > 1 else image
    image.thumbnail((192, 192), Image.NEAREST)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def examples_html(store, rows, ref_images, app_url):
    """For each cell, its top examples as A | B | reference thumbnails, linked to the app's flicker view."""
    root = store.path.parent
    parts = []
    for (question, sampler, steps), top in examples(rows).items():
        figs = []
        for r in top:
            thumbs = "".join(f'<figure><img src="{_thumb(root / p)}" alt="{label}"><figcaption>{label}</figcaption>'
                             f'</figure>' for label, p in (("A", r["image_a"]), ("B", r["image_b"]),
                                                            ("reference", ref_images[r["ref_key"]])))
            link = f"{app_url.rstrip('/')}/?pair={r['pair_id']}"
            figs.append(f'<div class="example"><a href="{html.escape(link)}">{thumbs}</a>'
                        f'<div>{html.escape(r["prompt"])}, seed {r["seed"]} · LPIPS(A,B) {r["lpips_ab"]:.4f} · '
                        f'max |Δ| {r["max_abs_diff"]}/255 · <a href="{html.escape(link)}">open in the app</a>'
                        '</div></div>')
        parts.append(f'<h3>{html.escape(question)} · {html.escape(sampler)} · {steps} steps</h3>'
                     f'<div class="examples">{"".join(figs)}</div>')
    return "\n".join(parts)


def reference_images(store, rows):
    """{ref_key: the reference's image path} of every row, read in one query."""
    keys = {r["ref_key"] for r in rows}
    found = store.references(keys)
    return {key: found[key]["image"] if key in found else None for key in keys}


# ---- the whole report ------------------------------------------------------------------------------

def summary_rows(cells):
    return [{k: c.get(k) for k in SUMMARY_COLUMNS} for c in cells]


def _interval(value, lo, hi, digits, signed=False):
    """'0.750 [0.41, 0.93]' ('+' signs with `signed`); the value alone without an interval; '' without a value."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    sign = "+" if signed else ""
    text = f"{value:{sign}.{digits}f}"
    if lo is None or hi is None or math.isnan(lo) or math.isnan(hi):
        return text
    return f"{text} [{lo:{sign}.{digits}f}, {hi:{sign}.{digits}f}]"


def verdict_frame(cells):
    """The report's verdict table: each estimate beside its interval in one column, so it fits a 1280 px page (every
    number is in summary.csv)."""
    return pd.DataFrame([{
        "question": c["question"], "sampler": c["sampler"], "steps": c["steps"], "n": c["n"],
        "A closer [95% CI]": _interval(c["a_closer_rate"], c["ci_low"], c["ci_high"], 2),
        "p_holm": fmt_number(c["p_holm"], 3),
        "mean diff [95% CI]": _interval(c["mean_diff"], c["diff_ci_low"], c["diff_ci_high"], 4, signed=True),
        "LPIPS(A,B)": fmt_number(c["lpips_ab"], 4),
        "visible": "" if math.isnan(c["visible_share"]) else f"{c['visible_share']:.0%}",
        "verdict": c["verdict"]} for c in cells],
        columns=["question", "sampler", "steps", "n", "A closer [95% CI]", "p_holm", "mean diff [95% CI]",
                 "LPIPS(A,B)", "visible", "verdict"])


def _scroll(table_html):
    """A table that may scroll sideways inside its own box, never widening the page."""
    return f'<div class="table-scroll">{table_html}</div>'


def report_html(store, spec, cells, rows, ref_uncertainty, floor, app_url, created, grid=""):
    """A self-contained HTML report: verdict table, plots per question, examples linked to the app, the grid
    (with the app's viewer, flicker and grid scripts inlined)."""
    ref_images = reference_images(store, rows)
    table_html = _scroll(verdict_frame(cells).to_html(index=False, na_rep="", classes="verdicts", escape=True))
    plots = plots_html(spec, cells, rows)
    questions = "".join(f"<li><b>{html.escape(q.name)}</b>: A = <code>{html.escape(str(dict(q.a)))}</code>, "
                        f"B = <code>{html.escape(str(dict(q.b)))}</code></li>" for q in spec.questions)
    ref = (f"{html.escape(spec.reference.to_json())}. Its own uncertainty: the same reference in <code>paper</code> "
           f"mode differs from it by LPIPS {fmt_number(ref_uncertainty['mean'], 4)} on average "
           f"(max {fmt_number(ref_uncertainty['max'], 4)}, {ref_uncertainty['n']} samples): differences between arms "
           "smaller than that are within the reference's own uncertainty.")
    # --reference-steps auto: the evidence the steps were chosen by; then what the references cost this run.
    ladder, cost = ref_uncertainty.get("ladder"), ref_uncertainty.get("cost")
    for said in ([ladder.sentence()] if ladder is not None else []) + ([cost] if cost else []):
        ref += f" {html.escape(said[0].upper() + said[1:])}."
    prec = f"Precision: <b>{spec.precision}</b>."
    if floor:
        prec += (f" The noise floor of {spec.precision} itself (the first cell's arm A in {spec.precision} against "
                 f"fp32, {floor['n']} samples): LPIPS {fmt_number(floor['mean'], 4)} mean, "
                 f"{fmt_number(floor['max'], 4)} max, "
                 f"max |Δ| {floor['max_abs_diff']}/255. Effects below it are not measurable at this precision.")
    legend = "".join(f"<li><b>{html.escape(k)}</b>: {html.escape(v)}</li>" for k, v in LEGEND.items())
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Study {html.escape(spec.name)}</title>
<style>
body {{ font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem; color: #222;
  overflow-wrap: anywhere; }}
/* Nothing widens the page past the viewport: wide tables scroll inside their own box. */
.table-scroll {{ max-width: 100%; overflow-x: auto; margin-bottom: 0.5rem; }}
table.verdicts {{ border-collapse: collapse; font-size: 0.85rem; }}
table.verdicts td, table.verdicts th {{ border: 1px solid #ccc; padding: 0.2rem 0.5rem; text-align: right;
  overflow-wrap: normal; }}
table.verdicts td:first-child, table.verdicts td:last-child {{ text-align: left; }}
.examples {{ display: flex; flex-wrap: wrap; gap: 1rem; align-items: flex-start; }}
/* One card per example, all the same width: A | B | reference never wrap inside it, the caption wraps below. */
.example {{ flex: 0 0 19.5rem; max-width: 100%; font-size: 0.8rem; }}
.example > a {{ display: flex; gap: 0.3rem; text-decoration: none; color: inherit; }}
.example figure {{ margin: 0; text-align: center; font-size: 0.75rem; }}
.example img {{ image-rendering: pixelated; width: 96px; height: 96px; }}
img.plot {{ max-width: 100%; }}
@media (max-width: 600px) {{ body {{ margin: 0.75rem; }} .example img {{ width: 30vw; height: 30vw; }} }}
</style></head><body>
<h1>Study {html.escape(spec.name)}</h1>
<p>Model <b>{html.escape(spec.model)}</b>; {len(spec.prompts)} prompt(s) × {len(spec.seeds)} seed(s) =
{len(spec.prompts) * len(spec.seeds)} samples per cell; samplers {html.escape(', '.join(spec.samplers))}; steps
{', '.join(map(str, spec.steps))}; guidance {spec.guidance}. Written {html.escape(created)}.</p>
<ul>{questions}</ul>
<p>Reference: {ref}</p>
<p>{prec}</p>
<h2>Verdicts</h2>
{table_html}
<ul>{legend}</ul>
{campaigns_html(store, spec.name)}
<h2>Distance to the reference against steps</h2>
{plots}
<h2>Where the arms differ most</h2>
<p>Each example links to the app with the stored pair open (not blind).</p>
{examples_html(store, rows, ref_images, app_url)}
{grid}
{grid_assets() if grid else ""}
</body></html>
"""


def campaign_frame(rows):
    """Campaign stats rows (workflows.campaign.stats) as a readable table, every vote first, then without the
    sessions flagged by their attention checks."""
    return pd.DataFrame([{"cell": cell_name(r), "voters": r["voters"], "pairs": r["pairs"], "votes": r["votes"],
                          "A": r["a"], "B": r["b"], "tie": r["tie"], "both bad": r["both_bad"],
                          "A win rate": fmt_number(r["a_win_rate"]),
                          "95% CI": "" if math.isnan(r["ci_low"]) else f"[{r['ci_low']:.2f}, {r['ci_high']:.2f}]",
                          "sign test p": fmt_number(r["p_value"], 4), "A win rate, side-corrected":
                          fmt_number(r["a_win_rate_corrected"]), "left rate": fmt_number(r["left_rate"]),
                          "side p": fmt_number(r["left_p"], 4), "flagged sessions": r["flagged"],
                          "votes say": r["votes_verdict"], "LPIPS says": r["lpips_verdict"],
                          "agreement": r["agreement"]} for r in rows], columns=CAMPAIGN_COLUMNS)


CAMPAIGN_COLUMNS = ["cell", "voters", "pairs", "votes", "A", "B", "tie", "both bad", "A win rate", "95% CI",
                    "sign test p", "A win rate, side-corrected", "left rate", "side p", "flagged sessions",
                    "votes say", "LPIPS says", "agreement"]


def campaigns_frame(store):
    """Every campaign's per-cell stats in one table (a campaign column first)."""
    frames = [campaign_frame(campaign_stats(store, c["name"])).assign(campaign=c["name"]) for c in store.campaigns()]
    if not frames:
        return pd.DataFrame(columns=["campaign", *campaign_frame([]).columns])
    table = pd.concat(frames, ignore_index=True)
    return table[["campaign", *[c for c in table.columns if c != "campaign"]]]


def campaigns_html(store, study_name):
    """The study's vote campaigns: votes per cell beside the LPIPS verdict ('' when it has none)."""
    parts = []
    for c in store.campaigns():
        if c["study"] != study_name:
            continue
        table = _scroll(campaign_frame(campaign_stats(store, c["name"])).to_html(index=False, classes="verdicts",
                                                                                 escape=True))
        parts.append(f"<h3>Campaign {html.escape(c['name'])} ({c['pairs']} pairs)</h3>{table}")
    if not parts:
        return ""
    return ("<h2>Blind votes</h2><p>Human votes on the study's pairs (served blind, each pair's sides alternating), "
            "per cell, beside the LPIPS verdict; “agree” when both find the same arm better (or both no difference), "
            "“undecided” when either finds no difference or the LPIPS verdict is inconclusive. "
            "The side-corrected win rate averages A's win rate when shown left and when shown right, so a preference "
            "for one side cancels; the left rate and its p-value show whether voters favour a side. Attention checks "
            "(one image against itself) never count; a session that picked a side on most of its checks is flagged, "
            "and every table is shown with and without flagged sessions. Rerun the study's command (nothing is "
            "recomputed) to refresh this section.</p>" + "".join(parts))


def study_grid(store, rows, axes=DEFAULT_AXES, fixed=None):
    """The X/Y/Z grid of a study's rows (workflows.xyz), its references read in one query."""
    return xyz(grid_items(rows, reference_images(store, rows)), *axes, fixed=fixed)


def grid_section(store, rows, axes):
    """(the report's grid section, {PNG name: bytes}); a grid that cannot be drawn says why instead."""
    if not rows:
        return "", {}
    try:
        grid = study_grid(store, rows, axes)
    except ConfigError as exc:
        return f"<h2>Grid</h2><p>Not drawn: {html.escape(str(exc))}.</p>", {}
    root = store.path.parent
    pngs = {png_name(grid, panel): data for panel, data in grid_pngs(grid, root).items()}
    return ("<h2>Grid</h2><p>Every image of the study laid out by the axes of <code>--grid</code> (also written as "
            f"{', '.join(pngs)}).</p>" + grid_html(grid, file_data_url(root))), pngs


def write_outputs(out, store, spec, cells, rows, ref_uncertainty, floor, app_url, created, grid_axes=DEFAULT_AXES):
    """summary.csv, rows.csv, report.html and the grid's PNGs in `out`, each written whole or not at all."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    grid, pngs = grid_section(store, rows, grid_axes)
    write_atomic(out / "summary.csv", csv_text(summary_rows(cells), SUMMARY_COLUMNS))
    write_atomic(out / "rows.csv", csv_text([{k: r[k] for k in ROW_COLUMNS} for r in rows], ROW_COLUMNS))
    for name, data in pngs.items():
        write_atomic(out / name, data)
    write_atomic(out / "report.html", report_html(store, spec, cells, rows, ref_uncertainty, floor, app_url, created,
                                                  grid))
    return [out / "summary.csv", out / "rows.csv", out / "report.html", *(out / n for n in pngs)]


def plot_questions(cells):
    """The questions the plots draw, one figure each, in grid order: the cells' own names, so with --schedules
    each question@schedule (a question asked under a schedule is a question of its own)."""
    return list(dict.fromkeys(c["question"] for c in cells))


def plots_html(spec, cells, rows):
    """Every cell question's two plots as inline PNGs (plot_questions)."""
    return "".join(f'<h4>{html.escape(q)}</h4><img class="plot" alt="{html.escape(q)} plots" '
                   f'style="max-width:100%" src="data:image/png;base64,'
                   f'{base64.b64encode(question_figure(q, cells, rows)).decode()}">' for q in plot_questions(cells))


def study_grid_html(store, name, x, y, z=None):
    """The Study tab's X/Y/Z grid of a stored study (a ConfigError names the axes to choose)."""
    study = store.study(name)
    if study is None:
        raise KeyError(f"no study named {name!r} in {store.path}")
    rows = store.study_rows(study["study_id"])
    if not rows:
        return "<p>This study has no rows yet.</p>"
    return (f'<p class="grid-study">Study <b>{html.escape(name)}</b></p>'
            + grid_html(study_grid(store, rows, (x, y, z or None)), file_data_url(store.path.parent)))


def study_view(store, name, visible_flip=FLIP_VISIBLE, app_url=""):
    """What the app's Study tab shows of a stored study: header, verdict table, plots, examples."""
    study = store.study(name)
    if study is None:
        raise KeyError(f"no study named {name!r} in {store.path}")
    spec = StudySpec.from_json(study["spec"])
    rows = store.study_rows(study["study_id"])
    rows = fill_flip(store, rows)
    cells = cell_stats(spec, rows, visible_flip)
    total = len(spec.cells()) * len(spec.samples())
    header = (f"**{html.escape(spec.name)}** · model {spec.model} · {len(rows)} of {total} rows"
              f"{'' if len(rows) == total else ' (incomplete: rerun its command to finish it)'} · samplers "
              f"{', '.join(spec.samplers)} · steps {', '.join(map(str, spec.steps))} · "
              f"{len(spec.prompts)} prompt(s) × {len(spec.seeds)} seed(s) · reference {spec.reference.sampler} "
              f"{spec.reference.steps} steps ({spec.reference.quantize}) · {spec.precision}")
    table = pd.DataFrame(summary_rows(cells))[["question", "sampler", "steps", "n", "a_closer_rate", "ci_low",
                                                "ci_high", "p_holm", "mean_diff", "diff_ci_low", "diff_ci_high",
                                                "lpips_ab", "visible_share", "verdict"]]
    ref_images = reference_images(store, rows)
    return {"header": header, "table": table.round(4), "plots": plots_html(spec, cells, rows) if rows else "",
            "examples": examples_html(store, rows, ref_images, app_url) if rows else "", "spec": spec}


# ---- report-only numbers ------------------------------------------------------------------------

def reference_uncertainty(store, model_name, spec, lpips_metric):
    """LPIPS between the reference and the same reference in 'paper' mode, over the checked samples."""
    from PIL import Image
    checked = [[reference_key(model_name, smp, cfg, spec.precision) for cfg in (spec.reference, spec.paper_reference())]
               for smp in spec.samples()[:spec.reference_check]]
    found = store.references(k for keys in checked for k in keys)
    values = []
    for keys in checked:
        if all(k in found for k in keys):
            a, b = (np.asarray(Image.open(store.path.parent / found[k]["image"]).convert("RGB")) for k in keys)
            values.append(lpips_metric.batch([a], [b])[0])
    return _spread(values)


def _spread(values):
    if not values:
        return {"n": 0, "mean": math.nan, "max": math.nan}
    return {"n": len(values), "mean": float(np.mean(values)), "max": float(np.max(values))}


def precision_floor(store, spec, rows, lpips_metric):
    """In bf16: LPIPS and max |Δ| between the first cell's arm A in bf16 and the same arm in fp32."""
    if spec.precision == "fp32":
        return None
    from PIL import Image
    first = spec.cells()[0]
    images = {(r["prompt"], r["seed"]): r["image_a"] for r in rows if cell_key(r) == first.key}
    lp, diff = [], []
    for smp in spec.samples()[:spec.reference_check]:
        row = store.reference(reference_key(spec.model, smp, first.a, "fp32"))
        if row is None or (smp.prompt, smp.seed) not in images:
            continue
        a, b = (np.asarray(Image.open(store.path.parent / p).convert("RGB"))
                for p in (images[(smp.prompt, smp.seed)], row["image"]))
        lp.append(lpips_metric.batch([a], [b])[0])
        diff.append(max_abs_diff(a, b))
    return {**_spread(lp), "max_abs_diff": max(diff, default=0)}
