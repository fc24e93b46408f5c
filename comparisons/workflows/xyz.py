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
    panels = [(zv, [[index.get((xv, yv, zv)) for xv in xs] for yv in ys]) for zv in zs]
    return {"x": x, "y": y, "z": z, "x_values": xs, "y_values": ys, "panels": panels, "fixed": fixed}


def references(grid, cells):
    """The references shown with a panel: ("row", one per column) when columns are seeds, else ("column", one per
    row): each cell's reference is its sample's (its seed; the prompt is fixed)."""
    first = lambda group: next((c["reference"] for c in group if c is not None), None)  # noqa: E731
    if grid["x"] == "seed":
        return "row", [first([row[k] for row in cells]) for k in range(len(grid["x_values"]))]
    return "column", [first(row) for row in cells]


def caption(grid):
    fixed = " · ".join(f"{k} {v}" for k, v in grid["fixed"].items())
    return (f"columns: {grid['x']} · rows: {grid['y']}" + (f" · panels: {grid['z']}" if grid["z"] else "")
            + (f" · fixed: {fixed}" if fixed else ""))


# ---- PNG --------------------------------------------------------------------------------------------

def grid_pngs(grid, root):
    """{panel label: PNG bytes}: each panel as one image with its references and labels around."""
    from PIL import Image, ImageDraw

    out = {}
    label_w, label_h, step = 150, 28, CELL_PX + 4
    for zv, cells in grid["panels"]:
        where, refs = references(grid, cells)
        col0 = 1 if where == "column" else 0          # a reference column first, or a reference row on top
        row0 = 1 if where == "row" else 0
        canvas = Image.new("RGB", (label_w + (len(grid["x_values"]) + col0) * step,
                                   label_h * 2 + (len(cells) + row0) * step), "white")
        draw = ImageDraw.Draw(canvas)
        draw.text((4, 4), caption(grid) + (f" · {grid['z']} {zv}" if grid["z"] else ""), fill="black")
        heads = (["reference"] if col0 else []) + [f"{grid['x']} {v}" for v in grid["x_values"]]
        for k, name in enumerate(heads):
            draw.text((label_w + k * step, label_h + 6), name[:16], fill="black")

        def paste(path, r, k):
            if path is not None:
                image = Image.open(root / path).convert("RGB").resize((CELL_PX, CELL_PX), Image.NEAREST)
                canvas.paste(image, (label_w + k * step, label_h * 2 + r * step))
        if row0:
            draw.text((4, label_h * 2 + CELL_PX // 2), "reference", fill="black")
            for k, ref in enumerate(refs):
                paste(ref, 0, k)
        for r, (yv, row) in enumerate(zip(grid["y_values"], cells)):
            draw.text((4, label_h * 2 + (r + row0) * step + CELL_PX // 2), f"{grid['y']} {yv}"[:24], fill="black")
            if col0:
                paste(refs[r], r, 0)
            for k, c in enumerate(row):
                paste(c and c["image"], r + row0, k + col0)
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
    for zv, cells in grid["panels"]:
        where, refs = references(grid, cells)
        in_panel = f" · {grid['z']} {zv}" if grid["z"] else ""
        # A reference is its sample's: the seed of its row, of the panel, or the fixed one.
        seed = zv if grid["z"] == "seed" else grid["fixed"].get("seed")
        ref_cell = lambda path, label: (_cell({"image": path}, f"reference · {label}", data_url)  # noqa: E731
                                        if path else '<td class="grid-empty">—</td>')
        head = "".join(f"<th>{html.escape(grid['x'])} {html.escape(str(v))}</th>" for v in grid["x_values"])
        body = []
        if where == "row":
            body.append("<tr><th>reference</th>" + "".join(ref_cell(p, f"seed {v}")
                                                           for p, v in zip(refs, grid["x_values"])) + "</tr>")
        for r, (yv, row) in enumerate(zip(grid["y_values"], cells)):
            first = ref_cell(refs[r], f"seed {yv if grid['y'] == 'seed' else seed}") if where == "column" else ""
            labels = [f"{grid['x']} {xv} · {grid['y']} {yv}{in_panel}" for xv in grid["x_values"]]
            body.append(f"<tr><th>{html.escape(grid['y'])} {html.escape(str(yv))}</th>{first}"
                        + "".join(_cell(c, label, data_url) for c, label in zip(row, labels)) + "</tr>")
        title = f"<h4>{html.escape(grid['z'])} {html.escape(str(zv))}</h4>" if grid["z"] else ""
        corner = "<th></th><th>reference</th>" if where == "column" else "<th></th>"
        parts.append(f'{title}<div class="grid-scroll"><table class="xyz-grid"><tr>{corner}{head}</tr>'
                     f'{"".join(body)}</table></div>')
    parts.append('<div class="grid-pair"><p class="grid-hint">Click two cells to compare them here.</p></div>')
    return '<div class="xyz">' + "".join(parts) + "</div>"
