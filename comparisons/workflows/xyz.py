"""An X/Y/Z grid of a study's images (A1111's X/Y/Z plot): rows, columns and panels chosen from sampler, schedule,
steps, question arm and seed, the reference of each sample alongside; as a PNG (the CLI) and as HTML whose cells
zoom together (static/viewer.js) and open two at a time as a pair in a flicker view (static/grid.js)."""
import base64
import html
import io
import json

from ..core.config import SamplerConfig
from ..errors import ConfigError, at_field

AXES = ("sampler", "schedule", "steps", "arm", "seed")
DEFAULT_AXES = ("steps", "arm", "sampler")  # columns, rows, panels
CELL_PX = 96                                 # a cell's side in the PNG and the HTML, at zoom 1


def grid_items(rows, ref_images):
    """Every image of a study's rows: both arms of each row, with the coordinates the grid can lay out."""
    items = []
    for r in rows:
        for side in ("a", "b"):
            cfg = SamplerConfig.from_json(r[f"config_{side}"])
            items.append({"sampler": cfg.sampler, "schedule": cfg.schedule, "steps": cfg.steps,
                          "arm": f"{r['question']} {side.upper()}", "seed": r["seed"], "prompt": r["prompt"],
                          "image": r[f"image_{side}"], "pair_id": r["pair_id"], "side": side.upper(),
                          "reference": ref_images.get(r["ref_key"]), "config": cfg.to_json()})
    return items


def axis_values(items, axis):
    """The distinct values of one axis, in order (numbers ascending, names as first seen)."""
    values = list(dict.fromkeys(i[axis] for i in items))
    return sorted(values) if axis in ("steps", "seed") else values


MAX_CELLS = 600  # cells of one grid, all panels together: a page that still opens at once


def parse_axes(text):
    """'x,y[,z]' (CLI --grid): the axes, or a ConfigError that lists the valid ones."""
    names = [a.strip() for a in str(text).split(",") if a.strip()]
    return check_axes(*(names + [None, None, None])[:3], bad=not 2 <= len(names) <= 3)


def check_axes(x, y, z=None, bad=False):
    """The axes as given, or a ConfigError (field grid-axes) that says what to choose."""
    chosen = [a for a in (x, y, z) if a]
    if bad or len(chosen) < 2 or any(a not in AXES for a in chosen) or len(set(chosen)) != len(chosen):
        raise at_field(ConfigError(f"grid axes must be two or three different ones of {', '.join(AXES)} "
                                   f"(columns, rows, panels; got {', '.join(map(str, chosen)) or 'none'})"),
                       "grid-axes")
    return x, y, (z or None)


def xyz(items, x, y, z=None, fixed=None):
    """The grid: columns by x, rows by y, one panel per z value; every other axis (and the prompt) fixed to the
    value in `fixed` or its first one. A cell is None where the study has no such image."""
    x, y, z = check_axes(x, y, z)
    fixed = dict(fixed or {})
    for axis in [a for a in AXES if a not in (x, y, z)] + ["prompt"]:
        values = axis_values(items, axis)
        if axis in fixed and fixed[axis] not in values:
            raise at_field(ConfigError(f"the study has no {axis} {fixed[axis]!r}; it has "
                                       f"{', '.join(map(str, values))}"), "grid-axes")
        if values:
            fixed.setdefault(axis, values[0])
    chosen = [i for i in items if all(i[a] == v for a, v in fixed.items())]
    index = {}
    for i in chosen:
        index.setdefault((i[x], i[y], i[z] if z else None), i)
    xs, ys = axis_values(chosen, x), axis_values(chosen, y)
    zs = axis_values(chosen, z) if z else [None]
    if len(xs) * len(ys) * len(zs) > MAX_CELLS:
        raise at_field(ConfigError(f"a grid of {len(xs)} x {len(ys)} x {len(zs)} cells is more than {MAX_CELLS}; "
                                   "put an axis with fewer values (sampler, schedule, arm) on the panels or leave "
                                   "seed off the axes"), "grid-axes")
    panels, panel_axes = [], []
    for zv in zs:
        full = [[index.get((xv, yv, zv)) for xv in xs] for yv in ys]
        # A panel shows only its rows and columns with an image: a row of nothing but "—" says nothing (with
        # --schedules most arms exist under one schedule only).
        rows = [i for i, row in enumerate(full) if any(c is not None for c in row)]
        cols = [k for k in range(len(xs)) if any(full[i][k] is not None for i in rows)]
        panels.append((zv, [[full[i][k] for k in cols] for i in rows]))
        panel_axes.append(([xs[k] for k in cols], [ys[i] for i in rows]))
    return {"x": x, "y": y, "z": z, "x_values": xs, "y_values": ys, "panels": panels, "panel_axes": panel_axes,
            "fixed": fixed}


def references(grid, cells):
    """The references shown with a panel: ("row", one per column) when columns are seeds, else ("column", one per
    row): each cell's reference is its sample's (its seed; the prompt is fixed)."""
    first = lambda group: next((c["reference"] for c in group if c is not None), None)  # noqa: E731
    if grid["x"] == "seed":
        return "row", [first([row[k] for row in cells]) for k in range(len(cells[0]) if cells else 0)]
    return "column", [first(row) for row in cells]


def caption(grid):
    fixed = " · ".join(f"{k} {v}" for k, v in grid["fixed"].items())
    return (f"columns: {grid['x']} · rows: {grid['y']}" + (f" · panels: {grid['z']}" if grid["z"] else "")
            + (f" · fixed: {fixed}" if fixed else ""))


# ---- PNG --------------------------------------------------------------------------------------------

LABEL_MAX_PX = 320  # the PNG's row-label column grows to its longest label up to this, then labels wrap


def _font():
    from PIL import ImageFont
    return ImageFont.load_default(size=11)


def wrap_text(text, width, font):
    """`text` in lines that each measure at most `width` px in `font`, broken after a space, '@', '_', '-' or '·'
    (inside a word only when one alone is wider); the lines joined give `text` back whole."""
    import re
    lines, line = [], ""
    for token in re.findall(r"[^ @_\-·]*[ @_\-·]?", text):
        if not token:
            continue
        if line and font.getlength((line + token).rstrip()) > width:
            lines.append(line)
            line = ""
        while font.getlength(token.rstrip()) > width and len(token) > 1:  # one word wider than the column
            cut = max(k for k in range(1, len(token) + 1) if k == 1 or font.getlength(token[:k]) <= width)
            if line:
                lines.append(line)
                line = ""
            lines.append(token[:cut])
            token = token[cut:]
        line += token
    return lines + [line] if line or not lines else lines


def panel_layout(grid, index, font=None):
    """Where one panel's PNG puts everything: {'size', 'texts': [{'kind', 'text', 'lines', 'x', 'y', 'width'}],
    'images': [(path, x, y)], 'rows', 'columns'}. Every label is whole (wrapped within its column, which widens to
    the longest row label up to LABEL_MAX_PX); only the panel's rows and columns with an image are drawn."""
    font = font or _font()
    zv, cells = grid["panels"][index]
    xs, ys = grid["panel_axes"][index]
    where, refs = references(grid, cells)
    col0 = 1 if where == "column" else 0          # a reference column first, or a reference row on top
    row0 = 1 if where == "row" else 0
    step, pad = CELL_PX + 4, 4
    line_h = font.getbbox("Ag")[3] + 3
    row_labels = (["reference"] if row0 else []) + [f"{grid['y']} {yv}" for yv in ys]
    label_w = min(LABEL_MAX_PX, max(font.getlength(t) for t in row_labels) + 3 * pad)
    heads = (["reference"] if col0 else []) + [f"{grid['x']} {v}" for v in xs]
    width = max(int(label_w) + len(heads) * step, 240)
    caption_text = caption(grid) + (f" · {grid['z']} {zv}" if grid["z"] else "")
    texts = [{"kind": "caption", "text": caption_text, "lines": wrap_text(caption_text, width - 2 * pad, font),
              "x": pad, "y": pad, "width": width - 2 * pad}]
    top = pad + len(texts[0]["lines"]) * line_h + pad
    head_lines = [wrap_text(h, step - pad, font) for h in heads]
    for k, (h, lines) in enumerate(zip(heads, head_lines)):
        texts.append({"kind": "head", "text": h, "lines": lines, "x": int(label_w) + k * step, "y": top,
                      "width": step - pad})
    top += max(len(lines) for lines in head_lines) * line_h + pad
    label_lines = [wrap_text(t, label_w - 2 * pad, font) for t in row_labels]
    row_h = max(step, max(len(lines) for lines in label_lines) * line_h + pad)
    images = []
    for r, (label, lines) in enumerate(zip(row_labels, label_lines)):
        y = top + r * row_h
        texts.append({"kind": "row", "text": label, "lines": lines, "x": pad,
                      "y": y + max(0, (CELL_PX - len(lines) * line_h) // 2), "width": label_w - 2 * pad})
    place = lambda path, r, k: images.append((path, int(label_w) + k * step, top + r * row_h))  # noqa: E731
    if row0:
        for k, ref in enumerate(refs):
            if ref is not None:
                place(ref, 0, k)
    for r, row in enumerate(cells):
        if col0 and refs[r] is not None:
            place(refs[r], r + row0, 0)
        for k, c in enumerate(row):
            if c is not None:
                place(c["image"], r + row0, k + col0)
    return {"size": (width, top + len(row_labels) * row_h), "texts": texts, "images": images, "line_h": line_h,
            "rows": len(cells), "columns": len(xs)}


def grid_pngs(grid, root):
    """{panel label: PNG bytes}: each panel as one image with its references and labels around (panel_layout)."""
    from PIL import Image, ImageDraw

    font, out = _font(), {}
    for index, (zv, _) in enumerate(grid["panels"]):
        layout = panel_layout(grid, index, font)
        canvas = Image.new("RGB", layout["size"], "white")
        draw = ImageDraw.Draw(canvas)
        for t in layout["texts"]:
            for n, line in enumerate(t["lines"]):
                draw.text((t["x"], t["y"] + n * layout["line_h"]), line.rstrip(), fill="black", font=font)
        for path, x, y in layout["images"]:
            image = Image.open(root / path).convert("RGB").resize((CELL_PX, CELL_PX), Image.NEAREST)
            canvas.paste(image, (x, y))
        buf = io.BytesIO()
        canvas.save(buf, format="PNG")
        out["all" if zv is None else str(zv)] = buf.getvalue()
    return out


def png_name(grid, panel):
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in panel)
    return f"grid-{grid['x']}-{grid['y']}" + (f"-{grid['z']}-{safe}" if grid["z"] else "") + ".png"


# ---- HTML -------------------------------------------------------------------------------------------

def _cell(item, label, data_url):
    if item is None:
        return '<td class="grid-empty">—</td>'
    meta = {"label": label, "pair_id": item.get("pair_id"), "side": item.get("side")}
    return (f'<td><div class="grid-cell" data-cell="{html.escape(json.dumps(meta))}" title="{html.escape(label)}">'
            f'<div class="zoom-box"><img class="zoom-img pixelated" src="{data_url(item["image"])}" '
            f'alt="{html.escape(label)}" data-label="{html.escape(label)}" draggable="false"></div></div></td>')


def file_data_url(root):
    """data_url(path) for images stored under `root` (PNG files, embedded as they are)."""
    def data_url(path):
        return "data:image/png;base64," + base64.b64encode((root / path).read_bytes()).decode()
    return data_url


def grid_html(grid, data_url):
    """The grid as HTML tables (one per panel) with the references; `data_url(path)` gives an image's src.
    Two picked cells fill the grid's .grid-pair (static/grid.js)."""
    parts = [f'<p class="grid-caption">{html.escape(caption(grid))}. Wheel zooms every cell at once, drag pans, '
             '0 resets; click two cells to open them as a pair in the flicker view below.</p>']
    for (zv, cells), (xs, ys) in zip(grid["panels"], grid["panel_axes"]):
        where, refs = references(grid, cells)
        in_panel = f" · {grid['z']} {zv}" if grid["z"] else ""
        # A reference is its sample's: the seed of its row, of the panel, or the fixed one.
        seed = zv if grid["z"] == "seed" else grid["fixed"].get("seed")
        ref_cell = lambda path, label: (_cell({"image": path}, f"reference · {label}", data_url)  # noqa: E731
                                        if path else '<td class="grid-empty">—</td>')
        head = "".join(f"<th>{html.escape(grid['x'])} {html.escape(str(v))}</th>" for v in xs)
        body = []
        if where == "row":
            body.append("<tr><th>reference</th>" + "".join(ref_cell(p, f"seed {v}") for p, v in zip(refs, xs))
                        + "</tr>")
        for r, (yv, row) in enumerate(zip(ys, cells)):
            first = ref_cell(refs[r], f"seed {yv if grid['y'] == 'seed' else seed}") if where == "column" else ""
            labels = [f"{grid['x']} {xv} · {grid['y']} {yv}{in_panel}" for xv in xs]
            body.append(f"<tr><th>{html.escape(grid['y'])} {html.escape(str(yv))}</th>{first}"
                        + "".join(_cell(c, label, data_url) for c, label in zip(row, labels)) + "</tr>")
        title = f"<h4>{html.escape(grid['z'])} {html.escape(str(zv))}</h4>" if grid["z"] else ""
        corner = "<th></th><th>reference</th>" if where == "column" else "<th></th>"
        parts.append(f'{title}<div class="grid-scroll"><table class="xyz-grid"><tr>{corner}{head}</tr>'
                     f'{"".join(body)}</table></div>')
    parts.append('<div class="grid-pair"><p class="grid-hint">Click two cells to compare them here.</p></div>')
    return '<div class="xyz">' + "".join(parts) + "</div>"
