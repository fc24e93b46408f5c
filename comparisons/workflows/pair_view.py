"""One pair as HTML, the same in the app and in the files the CLI writes (inspect.html): the two images side by
side in zoom boxes (static/viewer.js), the flicker view (static/flicker.js), the difference maps with colour bars,
the visibility line. Pure functions of images and numbers; `prefix` keeps element ids unique when one page shows
two pairs (the Compare and Inspect tabs)."""
import base64
import html
import io

from ..core.visibility import FLIP_VISIBLE, LPIPS_MAP_MAX, colour_ramp


def data_url(image):
    """A PNG data URL of a PIL image, without any metadata (nothing tells the sides apart)."""
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def array_url(array):
    from PIL import Image
    return data_url(Image.fromarray(array))


def image_src(img, size=None):
    """(src, width, height) of one image of a pair: a PIL image as a PNG data URL at its own size, or a str (an image
    URL, e.g. workflows.blind.PairImages') with `size` (width, height) when known."""
    if isinstance(img, str):
        return (img, *size) if size else (img, None, None)
    return data_url(img), img.width, img.height


def _frame(img, side, label, extra="", size=None):
    src, width, height = image_src(img, size)
    dims = f' width="{int(width)}" height="{int(height)}"' if width else ""
    return (f'<img class="zoom-img pixelated{extra}" data-side="{side}" data-label="{html.escape(label)}" '
            f'src="{html.escape(src)}" alt="{html.escape(label)} image"{dims} draggable="false">')


def pair_html(left, right, labels=("left", "right"), prefix="", size=None):
    """Side by side in synced zoom boxes (static/viewer.js: wheel zoom, drag pan, 0 resets, pixel readout).

    `left`/`right`: PIL images (inlined as data URLs) or image URLs (then `size`, their (width, height), when known).
    Labels are 'left'/'right' before a vote and 'A'/'B' after it; the readout names pixels by them.
    """
    cells = "".join(
        f'<figure class="pair-cell"><div class="zoom-box" id="{prefix}pair-{side}-box">'
        f'{_frame(img, side, label, size=size).replace("<img ", f"<img id={prefix}pair-{side} ", 1)}</div>'
        f'<figcaption>{html.escape(label)}</figcaption></figure>'
        for side, label, img in (("left", labels[0], left), ("right", labels[1], right)))
    return (f'<div class="pair-row">{cells}</div>'
            f'<div class="viewer-bar"><span id="{prefix}zoom-level" class="zoom-level">zoom ×1</span>'
            f'<span id="{prefix}pixel-readout" class="pixel-readout">'
            '<span class="key-hint">hover for pixel values</span>'
            '<span class="touch-hint">drag: pan, and read the pixel under your finger</span></span>'
            '<span class="key-hint">wheel: zoom · drag: pan · 0: reset</span></div>')


def flicker_html(left, right, interval_ms=300, labels=("left", "right"), prefix="", size=None):
    """Two stacked frames static/flicker.js alternates (f or space, or a tap); zoomed with the pair. Images as
    pair_html takes them."""
    frames = "".join(
        _frame(img, label, label, " flicker-frame", size).replace(
            "<img ", f'<img style="visibility:{"visible" if k == 0 else "hidden"}" ', 1)
        for k, (label, img) in enumerate(((labels[0], left), (labels[1], right))))
    return (f'<div class="flicker-root"><div class="zoom-box flicker-stage" id="{prefix}flicker-box">{frames}</div>'
            f'<div class="flicker-controls"><button type="button" id="{prefix}flicker-toggle" '
            f'class="flicker-toggle">Flicker</button><label>every <input type="number" id="{prefix}flicker-ms" '
            f'class="flicker-ms" min="30" max="5000" step="10" value="{int(interval_ms)}"> ms</label>'
            f'<span id="{prefix}flicker-side" class="flicker-side">showing: {html.escape(labels[0])}</span>'
            f'<span class="touch-hint">tap the image: start/stop</span></div></div>')


def colour_bar(bar_id, low, high, caption, ramp):
    """A horizontal colour bar from `low` to `high` labels in the heat maps' colours."""
    stops = ", ".join(f"rgb({r},{g},{b})" for r, g, b in ramp)
    return (f'<div class="colour-bar" id="{bar_id}"><div class="bar" style="background:linear-gradient(to right, '
            f'{stops})"></div><div class="ticks"><span>{html.escape(low)}</span><span>{html.escape(high)}</span>'
            f'</div><div class="bar-caption">{html.escape(caption)}</div></div>')


def diff_panel_html(diff_map, amplified, lpips_map, gain, lpips_max, ramp, flip_map=None, flip_visible=None):
    """The difference heat map (absolute 8-bit units, gain), the amplified difference, the LPIPS map and the
    FLIP map (the images as displayed; the colour bar marks the visibility threshold)."""
    top = 255 / gain
    top_text = f"≥ {top:.3g}/255" if gain > 1 else "255/255"  # 255/8 reads 31.9, not 31.875
    cell = lambda title, arr, bar: (  # noqa: E731
        f'<figure class="map-cell"><figcaption>{title}</figcaption>'
        f'<img class="pixelated map-img" src="{array_url(arr)}" width="{arr.shape[1]}" height="{arr.shape[0]}" '
        f'alt="{html.escape(title)}">{bar}</figure>')
    return ('<div class="maps-row">'
            + cell(f"|Δ| per pixel (largest channel), gain ×{gain}", diff_map,
                   colour_bar("diff-colorbar", "0", top_text, f"8-bit difference; bright = {top:.3g}/255 or more",
                              ramp))
            + cell(f"amplified difference |L − R| × {gain}", amplified, "")
            + cell("LPIPS spatial map (fixed scale)", lpips_map,
                   colour_bar("lpips-colorbar", "0", f"≥ {lpips_max:g}", "LPIPS per position", ramp))
            + ("" if flip_map is None else cell(
                "FLIP error as displayed (decides visibility)", flip_map,
                colour_bar("flip-colorbar", "0", "1", f"FLIP per displayed pixel; visible from {flip_visible:g}",
                           ramp)))
            + "</div>")


def maps_panel(maps, gain):
    """diff_panel_html of core.visibility.pair_maps, with the fixed LPIPS scale and FLIP's threshold."""
    return diff_panel_html(maps["difference"], maps["amplified"], maps["lpips-map"], gain, LPIPS_MAP_MAX,
                           colour_ramp(), maps["flip-map"], FLIP_VISIBLE)


def visibility_html(v):
    """The visibility line shown with every pair: FLIP's verdict first, the figures beside it, the rule on hover."""
    cls = "below" if v["below"] else "visible"
    return (f'<div class="visibility {cls}" title="{html.escape(v["rule"])}">'
            f'<span>FLIP max <b>{v["flip_max"]:.3f}</b> (visible from {v["flip_threshold"]:g})</span>'
            f'<span>max |Δ| <b>{v["max_abs_diff"]}/255</b></span>'
            f'<span><b>{v["visible_share"]:.1%}</b> of pixels differ by ≥ 3/255</span>'
            f'<span>LPIPS <b>{v["lpips"]:.4g}</b></span>'
            f'<span class="sentence">{html.escape(v["sentence"])}</span>'
            f'<span class="rule">{html.escape(v["rule"])}.</span></div>')


META_ORDER = ("prompt", "negative_prompt", "sampler", "scheduler", "steps", "cfg", "seed", "denoise", "size", "model",
              "model_hash")


def metadata_table(images, compact=False):
    """What two image files say about themselves (core.image_meta, `images` {'A': …, 'B': …} each with its file
    name) as a table, one row per field, the ones that differ marked and in bold, then (when either file ran more
    than one sampling pass, or a pass states more than its fields) one block per pass in execution order under a
    header like 'pass 1 · #10 KSamplerAdvanced · steps 0–20 of 25'. A combined prompt is a list, every text is
    escaped; text that could not be parsed is shown raw, and said so. `compact` (beside a vote): only the rows that
    differ, the rest under a <details>."""
    from ..core.image_meta import PASS_FIELDS, pass_title
    a, b = images["A"], images["B"]
    fa, fb = a["fields"], b["fields"]
    keys = [k for k in META_ORDER if k in fa or k in fb] + sorted((set(fa) | set(fb)) - set(META_ORDER))
    rows = [(html.escape(k), fa.get(k), fb.get(k)) for k in keys]
    pa, pb = a.get("passes") or [], b.get("passes") or []
    blocks = []  # (header cells, rows) per pass: several passes, or one that runs part of its steps or adds no noise
    if max(len(pa), len(pb)) > 1 or any("start_step" in p or p.get("add_noise") is False for p in pa + pb):
        for i in range(max(len(pa), len(pb))):
            one, two = (pa[i] if i < len(pa) else {}), (pb[i] if i < len(pb) else {})
            names = [k for k in PASS_FIELDS if k not in ("node", "kind") and (k in one or k in two)]
            head = tuple(html.escape(pass_title(p, i + 1)) if p else "—" for p in (one, two))
            blocks.append((head, [(f"{html.escape(k)}", one.get(k), two.get(k)) for k in names]))

    def row(label, va, vb):
        if va == vb:
            return f"<tr><th>{label}</th><td>{_meta_cell(va)}</td><td>{_meta_cell(vb)}</td></tr>"
        return (f'<tr class="differs"><th>{label}</th><td><b>{_meta_cell(va)}</b></td>'
                f"<td><b>{_meta_cell(vb)}</b></td></tr>")

    def body(only_differing):
        out = [row(*r) for r in rows if not only_differing or r[1] != r[2]]
        for n, (head, pass_rows) in enumerate(blocks, 1):
            shown = [r for r in pass_rows if not only_differing or r[1] != r[2]]
            if shown or not only_differing:
                out.append(f'<tr class="pass-head"><th>pass {n}</th><th>{head[0]}</th><th>{head[1]}</th></tr>')
                out += [row(*r) for r in shown]
        return "".join(out)

    head = "".join(f"<th>{s} · {html.escape(images[s]['file'])}<br><small>{html.escape(images[s]['format'])}"
                   "</small></th>" for s in ("A", "B"))

    def table(content, table_id):
        return (f'<table class="image-meta" id="{table_id}"><thead><tr><th>field</th>{head}</tr></thead>'
                f"<tbody>{content}</tbody></table>")

    differ = body(True)
    if not keys and not blocks:
        tables = table("", "image-meta") + "<p>Neither file states how it was made.</p>"
    elif compact:
        tables = table(differ, "image-meta") if differ else (table("", "image-meta")
                                                             + "<p>The files state the same values.</p>")
        count = len(rows) + sum(len(r) for _, r in blocks)
        tables += f"<details><summary>every field ({count})</summary>{table(body(False), 'image-meta-all')}</details>"
    else:
        tables = table(body(False), "image-meta")
    notes = "".join(f"<p>{s}: {html.escape(images[s]['note'])}</p>" for s in ("A", "B") if images[s]["note"])
    raw = "".join(f"<details><summary>{s}: raw {html.escape(k)}</summary><pre>{html.escape(v)}</pre></details>"
                  for s in ("A", "B") for k, v in images[s]["raw"].items())
    extra = images.get("columns") or {}
    columns = ("<p>Manifest: " + "; ".join(f"{html.escape(k)} = {html.escape(_clip(str(v), 200))}"
                                           for k, v in extra.items()) + "</p>") if extra else ""
    return tables + notes + raw + columns


def _meta_cell(value):
    """One stated value as HTML: '—' when not stated, a list as list items, yes/no, text escaped (line breaks
    kept as <br>, nothing from the file ever markup)."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return '<ol class="meta-list">' + "".join(f"<li>{_meta_cell(v)}</li>" for v in value) + "</ol>"
    return html.escape(_clip(str(value), 300)).replace("\n", "<br>")


def _clip(text, limit):
    return text if len(text) <= limit else text[:limit - 1] + "…"


def page_assets():
    """The app's stylesheet and its flicker and viewer scripts, inlined, for a pair in a file of its own
    (inspect.html): read when the file is written, so it behaves as the app does."""
    from pathlib import Path
    static = Path(__file__).resolve().parents[2] / "static"
    scripts = "".join(f"<script>{(static / n).read_text()}</script>" for n in ("flicker.js", "viewer.js"))
    page = ("body { font-family: system-ui, sans-serif; margin: 1rem auto; max-width: 1100px; padding: 0 .5rem; }"
            " table.metrics td, table.metrics th { text-align: left; padding: .1rem .6rem; }"
            " pre { white-space: pre-wrap; word-break: break-all; max-height: 20rem; overflow: auto; }")
    return f"<style>{(static / 'app.css').read_text()}\n{page}</style>{scripts}"
