"""The Inspect tab (local apps only): any two image files of one size, shown and measured as a generated pair is
(side by side, flicker, synced zoom and pixel readout, difference/LPIPS/FLIP maps, the visibility line, metrics,
what each file says about itself). Nothing is sampled and nothing is stored."""
import html
import secrets

import gradio as gr

from comparisons.core.image_files import FORMATS, MAX_SIDE_PIXELS, MIN_SIDE, load
from comparisons.core.remake import remake_pair, sampling_node, settings_from_metadata
from comparisons.core.visibility import GAINS
from comparisons.errors import ConfigError
from comparisons.workflows.inspect_pair import images_meta, inspect_files, maps, metadata_lines
from ui import views
from ui.compare import find_form, pair_to_form, sent_to_form
from ui.errors import run_checked

PREFIX = "inspect-"  # element ids of this tab's pair, apart from the Compare tab's
FILE_TYPES = [".png", ".jpg", ".jpeg", ".webp"]


def shown_maps(current, gain):
    """The four maps of the pair on screen at this gain."""
    return views.maps_panel(maps(current["result"], gain), gain)


def inspect(lab, w, file_a, file_b, gain):
    """Measure the two files and fill every view; a refusal (no file, unreadable, sizes differ) empties the views
    and says why, naming the file."""
    if not file_a or not file_b:
        return {**cleared(w), w["error"]: views.form_error_html("Choose two image files: A and B.")}
    try:
        result = run_checked(inspect_files, lab.lpips(), file_a, file_b)
    except gr.Error as err:
        return {**cleared(w), w["error"]: views.form_error_html(err.message)}
    a, b = result["a"], result["b"]
    left, right = a.image(), b.image()
    labels = (f"A · {_name(a.name)}", f"B · {_name(b.name)}")
    current = {"result": result}
    how = result["lpips_how"] + (f"; {result['alpha']}" if result["alpha"] else "") + "."
    metadata = views.metadata_table(images_meta(result))
    differs = metadata_lines(a.meta, b.meta)[2:]
    return {w["current"]: current, w["pair"]: views.pair_html(left, right, labels, prefix=PREFIX),
            w["flicker"]: views.flicker_html(left, right, labels=labels, prefix=PREFIX),
            w["visibility"]: views.visibility_html(result["visibility"]),
            w["metrics"]: f"{views.metrics_markdown(result['metrics'])}  \n{html.escape(how)}",
            w["maps"]: shown_maps(current, gain), w["error"]: "",
            w["meta"]: (f"<p><b>{html.escape(differs[0])}</b></p>" if differs else "") + metadata}


def _name(path):
    """The file name a browser upload had (Gradio keeps it as the temporary file's name)."""
    return str(path).replace("\\", "/").rsplit("/", 1)[-1]


def cleared(w):
    return {w["current"]: None, w["pair"]: views.empty_html("Choose two images and press Compare."),
            w["flicker"]: "", w["visibility"]: "", w["metrics"]: "", w["maps"]: "", w["meta"]: "", w["error"]: ""}


# Clicks the Compare tab's button once a file's settings were sent (`flag` is set only then).
SWITCH_TO_COMPARE = """(flag) => { if (flag) { const tab = [...document.querySelectorAll('button[role="tab"]')]
  .find((b) => b.textContent.trim() === "Compare"); if (tab) tab.click(); } return []; }"""


def send(lab, w, compare, side, path, model_name):
    """`side`'s file's settings into the Compare form (ui.compare.sent_to_form), and the flag that switches to the
    Compare tab; a file that cannot be read is said here, and the tab stays."""
    if not path:
        return {w["error"]: views.form_error_html(f"Choose image {side} first."), w["switch"]: ""}
    try:
        picture = run_checked(load, path)
    except gr.Error as err:
        return {w["error"]: views.form_error_html(err.message), w["switch"]: ""}
    meta = picture.meta
    if not meta.get("fields"):
        note = meta.get("note") or "no generation parameters in the file"
        return {w["error"]: views.form_error_html(f"{side} · {_name(path)}: nothing to send ({note})."),
                w["switch"]: ""}
    models = [c[1] if isinstance(c, (tuple, list)) else c for c in compare["model"].choices]
    # The file's own model when this app has it, else the one the form samples with; its prompts decide the prompt.
    stated = meta["fields"].get("model")
    model_name = stated if stated in models else model_name
    # The file's tool's convention comes with it (ComfyUI's or A1111's noise scaling, schedule and endings).
    settings, unmapped = settings_from_metadata(meta["fields"], model_name, models, lab.model(model_name).prompts(),
                                                tool=meta.get("format"), node=sampling_node(meta))
    return {**sent_to_form(compare, settings, unmapped, f"{side} · {_name(path)}"), w["error"]: "",
            w["switch"]: f"{side}:{secrets.token_hex(4)}"}


def send_pair(lab, w, compare, path_a, path_b, model_name):
    """Both files remade as one pair here (core.remake.remake_pair) into the Compare form, each panel its file's
    config with its tool's convention; a file this tool cannot remake is refused here, named, and the tab stays."""
    if not (path_a and path_b):
        return {w["error"]: views.form_error_html("Choose images A and B first."), w["switch"]: ""}
    try:
        a, b = run_checked(load, path_a), run_checked(load, path_b)
    except gr.Error as err:
        return {w["error"]: views.form_error_html(err.message), w["switch"]: ""}
    models = [c[1] if isinstance(c, (tuple, list)) else c for c in compare["model"].choices]
    stated = (a.meta.get("fields") or {}).get("model")
    model_name = stated if stated in models else model_name
    try:
        pair = remake_pair(a.meta, b.meta, model_name, lab.model(model_name).prompts())
    except ConfigError as exc:
        return {w["error"]: views.form_error_html(str(exc)), w["switch"]: ""}
    return {**pair_to_form(compare, pair, f"{_name(path_a)} · {_name(path_b)}"), w["error"]: "",
            w["switch"]: f"pair:{secrets.token_hex(4)}"}


def build_inspect_tab(lab, compare=None):
    """Lay out and wire the tab; returns the widgets by name. `compare`: the Compare tab's widgets (found in the Blocks
    being built when not given), which "Send A/B to Compare" fill; no send buttons without a Compare tab."""
    w = {}
    if compare is None:
        compare = find_form(gr.context.Context.root_block)
    with gr.Tab("Inspect"):
        gr.Markdown(f"Compare any two images of the same size made elsewhere (ComfyUI, AUTOMATIC1111, diffusers): "
                    f"{', '.join(FORMATS)}, {MIN_SIDE}x{MIN_SIDE} to {MAX_SIDE_PIXELS}x{MAX_SIDE_PIXELS} pixels. "
                    "Nothing is sampled or stored. What each file says about itself (A1111 parameters, ComfyUI's "
                    "graph) is shown under the maps; for blind votes, make a campaign from folders "
                    "(`python -m comparisons campaign create --from-folders`).", elem_id="inspect-intro")
        with gr.Row(equal_height=True):
            w["a"] = gr.File(label="image A", file_types=FILE_TYPES, type="filepath", elem_id="inspect-a")
            w["b"] = gr.File(label="image B", file_types=FILE_TYPES, type="filepath", elem_id="inspect-b")
        w["run"] = gr.Button("Compare", variant="primary", elem_id="inspect-run")
        if compare is not None:
            with gr.Row(equal_height=True, elem_id="inspect-send"):
                w["send:A"] = gr.Button("Send A to Compare", elem_id="send-a-to-compare", size="sm")
                w["send:B"] = gr.Button("Send B to Compare", elem_id="send-b-to-compare", size="sm")
                w["send:pair"] = gr.Button("Remake this pair in Compare", elem_id="remake-pair-in-compare",
                                           size="sm")
            w["switch"] = gr.Textbox("", visible=False, elem_id="inspect-switch")
        w["error"] = gr.HTML("", elem_id="inspect-error")
        w["current"] = gr.State(None)
        with gr.Row(equal_height=False, elem_id="inspect-stage", elem_classes=["zoom-root"]):
            with gr.Column(scale=2, min_width=300):
                w["pair"] = gr.HTML(views.empty_html("Choose two images and press Compare."), elem_id="inspect-pair")
            with gr.Column(scale=1, min_width=240):
                w["flicker"] = gr.HTML("", elem_id="inspect-flicker")
        # On a touch screen (no hover, no wheel): what the fingers do (static/viewer.js, static/app.css).
        gr.HTML('<div class="touch-hint" id="inspect-touch-hint">Touch: pinch to zoom both images together · drag '
                'to pan and read the pixel under your finger · tap the flicker image to start or stop it</div>')
        w["visibility"] = gr.HTML("", elem_id="inspect-visibility")
        w["metrics"] = gr.Markdown(elem_id="inspect-metrics")
        w["gain"] = gr.Radio(list(GAINS), value=8, label="difference gain", elem_id="inspect-gain")
        w["maps"] = gr.HTML("", elem_id="inspect-maps")
        w["meta"] = gr.HTML("", elem_id="inspect-meta")
    outputs = [w[k] for k in ("current", "pair", "flicker", "visibility", "metrics", "maps", "meta", "error")]
    private = dict(api_visibility="private", concurrency_id="inspect", concurrency_limit=2, show_progress_on=w["pair"])

    def on_run(file_a, file_b, gain):
        return inspect(lab, w, file_a, file_b, gain)

    w["run"].click(on_run, [w["a"], w["b"], w["gain"]], outputs, **private)
    if compare is not None:
        sent = [compare[k] for k in ("prompt", "seed", "model", "pairing", "steps", "sampler", "guidance", "custom",
                                     "explain", "sent")] + \
            [v for k, v in compare.items() if k.startswith(("A:", "B:"))] + [w["error"], w["switch"]]
        for side in ("A", "B"):
            def on_send(path, model_name, side=side):
                return send(lab, w, compare, side, path, model_name)
            w[f"send:{side}"].click(on_send, [w[side.lower()], compare["model"]], sent,
                                    api_visibility="private", queue=False).then(
                None, w["switch"], None, js=SWITCH_TO_COMPARE, api_visibility="private")

        def on_send_pair(path_a, path_b, model_name):
            return send_pair(lab, w, compare, path_a, path_b, model_name)
        w["send:pair"].click(on_send_pair, [w["a"], w["b"], compare["model"]], sent, api_visibility="private",
                             queue=False).then(None, w["switch"], None, js=SWITCH_TO_COMPARE, api_visibility="private")
    w["gain"].change(lambda current, gain: shown_maps(current, gain) if current else "", [w["current"], w["gain"]],
                     w["maps"], **private)
    return w
