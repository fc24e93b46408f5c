"""HTML and Markdown the app shows; pure functions of the data the comparisons layer returns."""
import base64
import html
import io
import json
import math

import pandas as pd


def data_url(image):
    """A PNG data URL of a PIL image, without any metadata (nothing tells the sides apart)."""
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def display_size(image, target=384):
    """Integer nearest-neighbour scale so small images can be pixel-peeped."""
    return image.width * max(1, target // max(image.width, image.height))


def pair_html(left, right, labels=("left", "right")):
    """Side by side, nearest-neighbour upscaled, labelled left and right (A and B once revealed)."""
    width = display_size(left)
    cells = "".join(
        f'<figure class="pair-cell"><img class="pixelated" id="pair-{side}" src="{data_url(img)}" '
        f'alt="{label} image" width="{width}"><figcaption>{label}</figcaption></figure>'
        for side, label, img in (("left", labels[0], left), ("right", labels[1], right)))
    return f'<div class="pair-row">{cells}</div>'


def flicker_html(left, right, interval_ms=300, labels=("left", "right")):
    """Two stacked images the static/flicker.js script alternates; f or space toggles, arrows step."""
    width = display_size(left)
    frames = "".join(
        f'<img class="flicker-frame pixelated" data-side="{side}" src="{data_url(img)}" alt="{side} image" '
        f'width="{width}" style="visibility:{"visible" if k == 0 else "hidden"}">'
        for k, (side, img) in enumerate(((labels[0], left), (labels[1], right))))
    return (f'<div class="flicker-stage" style="width:{width}px;height:{width}px">{frames}</div>'
            f'<div class="flicker-controls"><button type="button" id="flicker-toggle">Flicker (f)</button>'
            f'<label>every <input type="number" id="flicker-ms" min="30" max="5000" step="10" '
            f'value="{int(interval_ms)}"> ms</label>'
            f'<span id="flicker-side">showing: {labels[0]}</span>'
            f'<span class="hint">f or space: start/stop · ← →: one frame</span></div>')


def upscaled(array, target=256):
    """Nearest-neighbour integer upscaling of a small uint8 image array, for display."""
    import numpy as np

    factor = max(1, target // max(array.shape[:2]))
    return np.repeat(np.repeat(array, factor, axis=0), factor, axis=1)


def empty_html(message):
    return f'<div class="pair-empty">{html.escape(message)}</div>'


def metrics_markdown(metrics):
    psnr = metrics["psnr"]
    psnr_text = "∞ (identical)" if math.isinf(psnr) else f"{psnr:.2f} dB"
    return (f"**LPIPS** {metrics['lpips']:.4g} · **PSNR** {psnr_text} · **SSIM** {metrics['ssim']:.5g} · "
            f"**max |Δ|** {metrics['max_abs_diff']} / 255")


def schedule_frame(arms):
    """Long table for the schedule plot: log10 sigma per step for A and B, before and after rounding."""
    rows = []
    for name, arm in arms.items():
        for label, sigmas in ((name, arm.sigmas), (f"{name} discretized", arm.sigmas_discretized)):
            rows += [{"step": i, "log10 sigma": math.log10(s), "schedule": label}
                     for i, s in enumerate(sigmas) if s > 0]
    return pd.DataFrame(rows)


def schedule_markdown(arms):
    """The sigma lists people used to copy by hand, per arm (A/B, not left/right)."""
    fmt = lambda xs: ", ".join(f"{s:.4f}" for s in xs)  # noqa: E731
    lines = []
    for name, arm in arms.items():
        lines += [f"**{name}** — continuous: `{fmt(arm.sigmas)}`",
                  f"**{name}** — discretized: `{fmt(arm.sigmas_discretized)}`",
                  f"**{name}** — as sampled: `{fmt(arm.sigmas_used)}`", ""]
    return "\n\n".join(lines)


def reveal_markdown(vote):
    r = vote["reveal"]
    changed = {k: (r["config_a"][k], r["config_b"][k]) for k in r["config_a"] if r["config_a"][k] != r["config_b"][k]}
    diff = "; ".join(f"`{k}`: A = {a!r}, B = {b!r}" for k, (a, b) in changed.items()) or "identical configs"
    winner = {"A": "A", "B": "B", "tie": "a tie", "both_bad": "both bad"}[vote["winner"]]
    return (f"### Revealed\nLeft was **{r['left']}**, right was **{r['right']}** ({r['pairing']}). "
            f"Your vote: **{vote['choice']}** → {winner}.\n\nDifference: {diff}\n\n"
            f"<details><summary>Full configs</summary>\n\n```json\nA = {json.dumps(r['config_a'], indent=1)}\n"
            f"B = {json.dumps(r['config_b'], indent=1)}\n```\n</details>")


def stats_frame(rows):
    """Per-question statistics as a readable table."""
    if not rows:
        return pd.DataFrame(columns=["pairing", "decisive", "A wins", "B wins", "ties", "both bad",
                                     "A win rate", "95% CI", "p", "left rate", "votes still needed"])
    out = []
    for r in rows:
        ci = "" if math.isnan(r["ci_low"]) else f"[{r['ci_low']:.2f}, {r['ci_high']:.2f}]"
        out.append({"pairing": r["pairing"], "decisive": r["decisive"], "A wins": r["a_wins"],
                    "B wins": r["b_wins"], "ties": r["ties"], "both bad": r["both_bad"],
                    "A win rate": _num(r["a_win_rate"]), "95% CI": ci, "p": _num(r["p_value"], 4),
                    "left rate": _num(r["left_rate"]),
                    "votes still needed": "∞" if math.isinf(r["votes_still_needed"]) else r["votes_still_needed"],
                    "configs": _config_diff(r["config_a"], r["config_b"])})
    return pd.DataFrame(out)


def _num(x, digits=3):
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else round(x, digits)


def _config_diff(a_json, b_json):
    a, b = json.loads(a_json), json.loads(b_json)
    return "; ".join(f"{k}: {a[k]} vs {b[k]}" for k in a if a[k] != b.get(k)) or "same"


def stored_pair_markdown(pair, study_row=None):
    """What a stored pair opened by link is: not blind, A left and B right, with its numbers."""
    lines = [f"### Stored pair `{pair['pair_id']}` — not blind: **A left, B right**",
             f"Question **{html.escape(pair['pairing'])}** · prompt “{html.escape(pair['prompt'])}” · seed "
             f"{pair['seed']} · model {html.escape(pair['model'])}",
             f"`{_config_diff(pair['config_a'], pair['config_b'])}`"]
    if study_row:
        lines.append(f"LPIPS to the reference: A {study_row['lpips_a_ref']:.4f}, B {study_row['lpips_b_ref']:.4f} · "
                     f"LPIPS(A, B) {study_row['lpips_ab']:.4g} · max |Δ| {study_row['max_abs_diff']}/255")
    lines.append("Votes are only taken on pairs served blind: generate a pair to vote.")
    return "\n\n".join(lines)


def page_note(page, per_page, total, what):
    """'page 2 of 7 (301–350 of 312 pairs)'."""
    pages = max(1, math.ceil(total / per_page))
    first, last = (page - 1) * per_page + 1, min(total, page * per_page)
    shown = f"{first}–{last} of {total}" if total and first <= total else f"none of {total}"
    return f"page {min(page, pages) if total else 1} of {pages} ({shown} {what}, newest first)"
