"""HTML and Markdown the app shows; pure functions of the data the comparisons layer returns."""
import base64
import html
import json
import math
import re

import pandas as pd

from comparisons.analysis.leaderboard import MIN_DECISIVE
from comparisons.core.config import IMAGES
from comparisons.core.visibility import DISPLAY_MAX
from comparisons.workflows.pair_view import (  # noqa: F401 - the pair's views, shared with inspect's HTML file
    array_url,
    colour_bar,
    data_url,
    diff_panel_html,
    flicker_html,
    maps_panel,
    metadata_table,
    pair_html,
    visibility_html,
)

e = html.escape


def slider_images(left, right, target=DISPLAY_MAX):
    """Both images nearest-neighbour upscaled by the same integer factor, for the slider."""
    from PIL import Image
    k = max(1, target // max(left.width, left.height))
    return tuple(img.resize((img.width * k, img.height * k), Image.NEAREST) for img in (left, right))


def vote_prompt(v):
    """What the vote area says for a fresh pair."""
    if v["below"]:
        return ("**This pair is below visibility.** You may vote, but a vote on it is uninformative: it "
                "measures nothing a viewer can see. Consider Tie or the next pair.")
    return "Which image is better?"


KEY_HINT = ('<div class="key-hint" id="key-hint">Keys: <kbd>1</kbd> left · <kbd>2</kbd> right · <kbd>3</kbd> tie · '
            '<kbd>4</kbd> both bad · <kbd>n</kbd> next pair · <kbd>f</kbd>/space flicker · '
            '<kbd>←</kbd> <kbd>→</kbd> one frame · <kbd>0</kbd> reset zoom</div>')


def form_error_html(message, field_id=None):
    """The one message of a refused action, shown under the controls until the next action; `field_id` is the
    element static/viewer.js marks (the field at fault), when one is."""
    mark = f' data-field="{html.escape(field_id)}"' if field_id else ""
    return f'<div class="form-error" role="alert"{mark}>⚠ {html.escape(message)}</div>'


def empty_html(message):
    return f'<div class="pair-empty">{html.escape(message)}</div>'


def metrics_markdown(metrics):
    psnr = metrics["psnr"]
    psnr_text = "∞ (identical)" if math.isinf(psnr) else f"{psnr:.2f} dB"
    return (f"**LPIPS** {metrics['lpips']:.4g} · **PSNR** {psnr_text} · **SSIM** {metrics['ssim']:.5g} · "
            f"**max |Δ|** {metrics['max_abs_diff']} / 255")


def schedule_html(arms):
    """The schedule plot of A and B, every point including a final 0 (analysis.charts.schedule_figure)."""
    from comparisons.analysis.charts import schedule_figure
    png = schedule_figure({name: (arm.sigmas, arm.sigmas_discretized) for name, arm in arms.items()})
    return image_html(png, "schedule-chart", "sigma per step of A and B, with their discretized versions")


def schedule_markdown(arms):
    """The sigma lists people used to copy by hand, per arm (A/B, not left/right)."""
    fmt = lambda xs: ", ".join(f"{s:.4f}" for s in xs)  # noqa: E731
    lines = []
    for name, arm in arms.items():
        lines += [f"**{name}** — continuous: `{fmt(arm.sigmas)}`",
                  f"**{name}** — discretized: `{fmt(arm.sigmas_discretized)}`",
                  f"**{name}** — as sampled: `{fmt(arm.sigmas_used)}`", ""]
    return "\n\n".join(lines)


def status_html(*parts):
    """The status line beside the vote buttons: each part is (text, bold?), escaped (nothing of it is markup)."""
    inner = " ".join(f"<b>{e(text)}</b>" if bold else e(text) for text, bold in parts if text)
    return f'<div class="vote-status-text"><p>{inner}</p></div>'


def prompt_html(v, before=""):
    """status_html of a fresh pair's vote_prompt, after `before` (what was said of the previous pair)."""
    prompt = vote_prompt(v)
    return status_html((before, False), (prompt.replace("**", ""), prompt.startswith("**")))


def download_html(serve_id=None):
    """The voted pair's zip, made when the link is followed (app.py's /pair-zip/ door), or a disabled button."""
    if not serve_id:
        return '<button id="download-pair" class="download-pair" disabled>Download the last pair (zip)</button>'
    return (f'<a id="download-pair" class="download-pair" href="/pair-zip/{e(serve_id)}.zip" download>'
            "Download the last pair (zip)</a>")


def arm_label(reveal, arm):
    return reveal[f"config_{arm.lower()}"].get("label") or arm


def reveal_html(vote):
    """The reveal after a vote as escaped HTML: which side was A (a blind reveal, without `left`, only the two configs
    the pair compared), then what differs and the full configs, or for image files what each says about itself."""
    r = vote["reveal"]
    names = {arm: arm_label(r, arm) for arm in ("A", "B")}
    named = {arm: arm if names[arm] == arm else f"{arm} · {names[arm]}" for arm in ("A", "B")}
    if "left" not in r:
        head = (f"<p><b>Revealed:</b> this pair compared <b>{e(named['A'])}</b> and <b>{e(named['B'])}</b> "
                f"({e(r['pairing'])}). Your vote: <b>{e(vote['choice'])}</b>. Which side showed which is not said "
                "on this public demo, so that no later showing of a pair can be recognised.</p>")
    else:
        winner = {"A": named["A"], "B": named["B"], "tie": "a tie", "both_bad": "both bad"}[vote["winner"]]
        head = (f"<p><b>Revealed:</b> Left was <b>{e(named[r['left']])}</b>, "
                f"right was <b>{e(named[r['right']])}</b> ({e(r['pairing'])}). "
                f"Your vote: <b>{e(vote['choice'])}</b> → {e(winner)}.</p>")
    if "images" in r:
        body = metadata_table(r["images"], compact=True)  # every value escaped (workflows.pair_view)
    else:
        a, b = r["config_a"], r["config_b"]
        changed = "; ".join(f"{k}: A = {a[k]!r}, B = {b.get(k)!r}" for k in a if a[k] != b.get(k))
        body = (f"<p>Difference: {e(changed or 'identical configs')}</p><details><summary>Full configs</summary>"
                f"<pre>A = {e(json.dumps(a, indent=1))}\nB = {e(json.dumps(b, indent=1))}</pre></details>")
    return f'<div class="reveal-body">{head}{body}</div>'


_MARKDOWN = re.compile(r"[\\`*_{}\[\]()#+\-.!|~]")


def markdown_text(text):
    """`text` as Markdown that shows it as written: punctuation backslash-escaped, <, > and & as entities (no link,
    image, emphasis or tag can come of it)."""
    return _MARKDOWN.sub(lambda m: "\\" + m.group(0), e(str(text), quote=False))


STATS_COLUMNS = ["pairing", "sampler", "steps", "guidance", "prompt", "decisive", "A wins", "B wins", "ties",
                 "both bad", "A win rate", "95% CI", "p", "left rate", "votes still needed", "configs"]
STATS_LEGEND = """
- **decisive**: votes for A or B (ties and both-bad are counted but not tested).
- **A win rate**: A's share of the decisive votes; **95% CI**: its Wilson score interval.
- **p**: exact two-sided sign test of "A and B are equally good" (small p: a real preference, not luck).
- **left rate**: how often the image shown on the left won; far from 0.5 means voters favour a side, not a config.
- **votes still needed**: more decisive votes for 80% power at p < 0.05 if the win rate stays where it is.
"""


def stats_frame(rows):
    """Per-question statistics as a readable table: one row per (pairing, config A, config B)."""
    out = []
    for r in rows:
        a, b = _arm(r["config_a"]), _arm(r["config_b"])
        both = lambda k: a[k] if a[k] == b[k] else f"{a[k]} / {b[k]}"  # noqa: E731
        ci = "" if math.isnan(r["ci_low"]) else f"[{r['ci_low']:.2f}, {r['ci_high']:.2f}]"
        prompts = r.get("prompts") or {}
        out.append({"pairing": r["pairing"], "sampler": both("sampler"), "steps": both("steps"),
                    "guidance": both("guidance_scale"),
                    "prompt": "; ".join(f"{p or '(unconditional)'} ×{n}" for p, n in list(prompts.items())[:3])
                    + (f"; +{len(prompts) - 3} more" if len(prompts) > 3 else ""),
                    "decisive": r["decisive"], "A wins": r["a_wins"],
                    "B wins": r["b_wins"], "ties": r["ties"], "both bad": r["both_bad"],
                    "A win rate": _num(r["a_win_rate"]), "95% CI": ci, "p": _num(r["p_value"], 4),
                    "left rate": _num(r["left_rate"]),
                    "votes still needed": "∞" if math.isinf(r["votes_still_needed"]) else r["votes_still_needed"],
                    "configs": _config_diff(r["config_a"], r["config_b"])})
    return pd.DataFrame(out, columns=STATS_COLUMNS)


def fitted_table(frame, main, table_id, empty, optional=()):
    """A table that fits a phone and a laptop alike: the `main` columns (those that tell rows apart and the
    verdict), headers and cells wrapping, and every other column of `frame` in the row's own “more” (a <details>).
    `optional` main columns leave the row for its “more” on a narrow screen (static/app.css). `empty`: the sentence
    shown when there are no rows."""
    if frame is None or len(frame) == 0:
        return f'<p class="table-empty" id="{table_id}-empty">{html.escape(empty)}</p>'
    rest = [c for c in frame.columns if c not in main]
    opt = lambda c: ' class="opt"' if c in optional else ""  # noqa: E731
    head = "".join(f"<th{opt(c)}>{html.escape(str(c))}</th>" for c in main) + ("<th>more</th>" if rest else "")
    body = []
    for record in frame.to_dict("records"):
        cells = "".join(f"<td{opt(c)}>{html.escape(_cell(record[c]))}</td>" for c in main)
        extra = [(c, ' class="opt-detail"') for c in main if c in optional] + [(c, "") for c in rest]
        if rest:
            items = "".join(f"<div{cls}><dt>{html.escape(str(c))}</dt> <dd>{html.escape(_cell(record[c]))}</dd></div>"
                            for c, cls in extra)
            cells += f"<td><details><summary>more</summary><dl>{items}</dl></details></td>"
        body.append(f"<tr>{cells}</tr>")
    return (f'<table class="fitted" id="{table_id}"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table>')


def _cell(value):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)


def stats_html(rows):
    """stats_frame as a fitted table: the question (pairing, sampler, schedule, steps, guidance), what differs,
    the decisive votes and the tests; wins, ties, prompts and votes still needed under “more”."""
    frame = stats_frame(rows)
    frame.insert(0, "question", [_question(r) for r in rows])
    frame["A win rate [95% CI]"] = [f"{rate} {ci}".strip() for rate, ci in zip(frame["A win rate"], frame["95% CI"])]
    frame = frame.rename(columns={"configs": "A vs B"}).drop(columns=["pairing", "sampler", "steps", "guidance",
                                                                      "A win rate", "95% CI"])
    return fitted_table(frame, ["question", "A vs B", "decisive", "A win rate [95% CI]", "p", "left rate"],
                        "stats-rows", "No votes yet: vote on a pair in the Compare tab (or a campaign) and refresh.",
                        optional=("A vs B", "left rate"))


def _arm(config_json):
    """A stored config as a dict; a side of image files has its label and no sampler settings ('')."""
    arm = json.loads(config_json)
    if arm.get("source") == IMAGES:
        return {**dict.fromkeys(("sampler", "schedule", "steps", "guidance_scale"), ""), **arm}
    return arm


def _question(r):
    """'final-zero · heun · karras · 4 steps · g 3.0' (A's value, or 'A / B' where they differ); a campaign of image
    files: its cell and the two labels."""
    a, b = _arm(r["config_a"]), _arm(r["config_b"])
    if a.get("source") == IMAGES:
        return f"{r['pairing']} · {a['label']} vs {b['label']}"
    both = lambda k: str(a[k]) if a[k] == b[k] else f"{a[k]} / {b[k]}"  # noqa: E731
    return (f"{r['pairing']} · {both('sampler')} · {both('schedule')} · {both('steps')} steps · "
            f"g {both('guidance_scale')}")


def campaign_table_html(frame):
    """Every campaign's per-cell table (workflows.report.campaigns_frame) as a fitted table."""
    if frame is not None and len(frame):
        frame = frame.copy()
        frame["A win rate [95% CI]"] = [f"{rate} {ci}".strip() for rate, ci in zip(frame["A win rate"],
                                                                                   frame["95% CI"])]
        frame = frame.drop(columns=["A win rate", "95% CI"])
    return fitted_table(frame, ["campaign", "cell", "votes", "A win rate [95% CI]", "A win rate, side-corrected",
                                "votes say", "LPIPS says"], "campaign-rows",
                        "No campaigns in this results file: `python -m comparisons campaign create` makes one.",
                        optional=("campaign", "A win rate, side-corrected", "LPIPS says"))


def leaderboard_html(rows):
    """The leaderboard as one table per group of configs that met (directly or through others): scores compare
    only within a table. Unranked configs (too few decisive votes) are listed under the ranked ones."""
    if not rows:
        return '<p class="leaderboard-empty">No votes between different configs yet.</p>'
    # wins, losses and ties leave a phone's narrow table (the votes column stays).
    opt = ' class="opt"'
    head = "".join(f"<th{opt if h in ('wins', 'losses', 'ties') else ''}>{h}</th>"
                   for h in ("rank", "config", "score", "95% interval", "votes", "wins", "losses", "ties"))
    tables = []
    for group in dict.fromkeys(r["group"] for r in rows):
        mine = [r for r in rows if r["group"] == group]
        body = "".join(
            f'<tr class="{"ranked" if r["ranked"] else "unranked"}"><td>{r["rank"] or "unranked"}</td>'
            f'<td>{html.escape(r["label"])}</td><td>{r["elo"]:.0f}</td>'
            f'<td>[{r["elo_low"]:.0f}, {r["elo_high"]:.0f}]</td><td>{r["votes"]}</td><td class="opt">{r["wins"]}</td>'
            f'<td class="opt">{r["losses"]}</td><td class="opt">{r["ties"]}</td></tr>' for r in mine)
        caption = (f"Group {group}: {len(mine)} configs compared with each other"
                   + (" (a weak prior keeps scores finite: some config never won or never lost)"
                      if mine[0]["regularized"] else ""))
        tables.append(f'<table class="leaderboard-group" data-group="{group}"><caption>{html.escape(caption)}'
                      f"</caption><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
    return "".join(tables)


def leaderboard_note(rows):
    if not rows:
        return "No votes between different configs yet."
    groups = len({r["group"] for r in rows})
    return ("Bradley–Terry strengths from every vote between two configs (ties count half a win each way, both-bad "
            "votes are left out), on the Elo scale (1000 = the group's average config; +400 = 10:1 odds). "
            "The 95% intervals come from the curvature of the likelihood with a weak prior of half a win and half a "
            "loss against an average config, so a config with few votes gets a wide interval. A config with fewer "
            f"than {MIN_DECISIVE} decisive votes is listed but not ranked. "
            + (f"Configs that never met, directly or through others, are in separate tables ({groups} here): no "
               "vote compares them, so their scores do not either." if groups > 1 else
               "Every config here met the others, directly or through others: one scale."))


def image_html(png_bytes, elem_id, alt):
    return (f'<img id="{elem_id}" alt="{html.escape(alt)}" style="max-width:100%" '
            f'src="data:image/png;base64,{base64.b64encode(png_bytes).decode()}">')


def _num(x, digits=3):
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else round(x, digits)


def _config_diff(a_json, b_json):
    a, b = json.loads(a_json), json.loads(b_json)
    return "; ".join(f"{k}: {a[k]} vs {b[k]}" for k in a if a[k] != b.get(k)) or "same"


def stored_pair_html(pair, study_row=None):
    """What a stored pair opened by link is (not blind, A left and B right, with its numbers), escaped HTML."""
    parts = [f"<h3>Stored pair <code>{e(pair['pair_id'])}</code> — not blind: <b>A left, B right</b></h3>",
             f"<p>Question <b>{e(pair['pairing'])}</b> · prompt “{e(pair['prompt'])}” · seed {e(str(pair['seed']))} · "
             f"model {e(pair['model'])}</p>",
             f"<p><code>{e(_config_diff(pair['config_a'], pair['config_b']))}</code></p>"]
    if pair.get("image_meta"):
        parts.append(metadata_table(json.loads(pair["image_meta"])))
    if study_row:
        parts.append(f"<p>LPIPS to the reference: A {study_row['lpips_a_ref']:.4f}, B {study_row['lpips_b_ref']:.4f} · "
                     f"LPIPS(A, B) {study_row['lpips_ab']:.4g} · max |Δ| {study_row['max_abs_diff']}/255</p>")
    parts.append("<p>Votes are only taken on pairs served blind: generate a pair to vote.</p>")
    return f'<div class="reveal-body">{"".join(parts)}</div>'


def page_note(page, per_page, total, what):
    """'page 2 of 7 (301–350 of 312 pairs)'."""
    pages = max(1, math.ceil(total / per_page))
    first, last = (page - 1) * per_page + 1, min(total, page * per_page)
    shown = f"{first}–{last} of {total}" if total and first <= total else f"none of {total}"
    return f"page {min(page, pages) if total else 1} of {pages} ({shown} {what}, newest first)"
