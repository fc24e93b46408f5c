"""The Compare tab: a blind pair, seen side by side, flickered, zoomed and differenced, then voted on.

Widgets live in dicts keyed by name; handlers take and return {widget: value}, never positional tuples.

What a visitor's session keeps (`current`) is ids and image URLs: the pair's images are served by URL
(ComparedImages, through app.py's /pair-image/ door), the maps come from a small process-wide cache (measured), and
a pair's zip is made when its link is followed (/pair-zip/, after the vote; hosted only with --pair-downloads),
never on a vote. Every text that came from a visitor or from data (a prompt, a note, a pairing, a file's metadata,
an error quoting them) is shown escaped: through gr.HTML, or as markdown_text.
"""
import html
import secrets
import threading
from collections import OrderedDict

import gradio as gr

from comparisons.core.config import (
    AYS_MODELS,
    CONVENTION_NOTES,
    CUSTOM,
    EXPLANATIONS,
    PAIRINGS,
    QUANTIZE_MODES,
    SAMPLER_GROUPS,
    SAMPLER_NOTES,
    SCHEDULE_GROUPS,
    SCHEDULE_NOTES,
    SIGMA_MIN_RULES,
    SamplerConfig,
    make_pair,
    schedule,
)
from comparisons.core.image_files import open_as_compared
from comparisons.core.metrics import to_array
from comparisons.core.pairs import ArmRun, arm_schedule
from comparisons.core.visibility import GAINS, pair_maps
from comparisons.errors import ConfigError, DuplicateVote, at_field, clip
from comparisons.workflows.blind import PairImages, cast_vote, new_pair, other
from comparisons.workflows.inspect_pair import measure_rgb
from sampler_lib.models.interface import sampling_of
from ui import views
from ui.errors import USER_ERRORS, run_checked, user_error
from ui.inputs import CUSTOM_FIELDS, UNCONDITIONAL, custom_config, parse_prompt, parse_seed, preset_configs
from ui.limits import check_text

VOTE_BUTTONS = {"left": ("◀ Left is better", "vote-left"), "right": ("Right is better ▶", "vote-right"),
                "tie": ("Tie", "vote-tie"), "both_bad": ("Both bad", "vote-both-bad")}
# The menus say what each sampler and schedule is (label) and keep its name as the value, in groups. The name comes
# first: a narrow menu shows the start of the chosen label, and that must say which one is chosen.
SAMPLER_CHOICES = [(f"{s} · {group} — {SAMPLER_NOTES[s]}", s) for group, names in SAMPLER_GROUPS.items()
                   for s in names]
SCHEDULE_CHOICES = [(f"{s} · {group} — {SCHEDULE_NOTES[s]}", s) for group, names in SCHEDULE_GROUPS.items()
                    for s in names]
# Both custom panels start from one config, so a custom pair differs only where the user changes it.
CUSTOM_DEFAULT = SamplerConfig()
CHOICES = {"sampler": SAMPLER_CHOICES, "schedule": SCHEDULE_CHOICES,
           "ays_model": list(AYS_MODELS), "sigma_min_rule": list(SIGMA_MIN_RULES),
           "quantize": list(QUANTIZE_MODES),
           "convention": [(f"{c} — {CONVENTION_NOTES[c]}", c) for c in CONVENTION_NOTES]}


def serve_pair(lab, settings, request, prompt, seed, model, pairing, cfg_a, cfg_b, progress=None):
    """The one way a pair is made for a visitor (UI and API): limits, the generation gate, then new_pair."""
    if model not in settings.models:
        raise user_error(at_field(ConfigError(f"unknown model {clip(repr(model))}; choose one of "
                                              f"{', '.join(settings.models)}"), "model"))

    def run():
        # Everything a visitor can get wrong is refused here, before the request spends a rate-limit budget or
        # waits in the generation queue.
        text, seed_value = parse_prompt(prompt), parse_seed(seed)
        check_text("prompt", text, settings.max_prompt)
        sampling = sampling_of(lab.model(model))
        for cfg in (cfg_a, cfg_b):
            lab.model(model).condition(text, cfg.guidance_scale)
            schedule(cfg, sampling)  # a config the model cannot run (churn or a shift on the wrong family, ...)
        settings.admit_generation(request, text, cfg_a, cfg_b)
        with settings.generation(request):
            return new_pair(lab, text, seed_value, cfg_a, cfg_b, pairing, request.session_hash, model=model,
                            progress=progress)
    out = run_checked(run)
    # Hosted, the answer names the images by URL (the API's /generate_pair too): a few hundred bytes, not megabytes.
    return with_urls(lab, settings, out) if settings.hosted else out


class ComparedImages(PairImages):
    """The Compare tab's pairs by URL, through PairImages' door (app.py's Doors: /pair-image/v1/TOKEN.png, display
    PNGs without metadata, cached a year): a pair's two files are registered when it is shown, so no image sits in a
    session's state or in an answer. The latest LIMIT tokens are kept (a few hundred bytes each): a page still showing
    a pair older than that gets a missing image, and the server's memory does not grow with pairs."""

    LIMIT = 20_000

    def __init__(self, store):
        super().__init__(store, None)  # no campaign: nothing is served until a pair is shown
        self._files, self._adding = OrderedDict(), threading.Lock()

    def register(self, pair):
        """{'A': url, 'B': url} of a stored pair (its row: image_a, image_b), servable from now on."""
        with self._adding:
            for arm in ("A", "B"):
                token = self.token(pair[f"image_{arm.lower()}"], arm)
                self._files[token] = pair[f"image_{arm.lower()}"]
                self._files.move_to_end(token)
            while len(self._files) > self.LIMIT:
                self._files.popitem(last=False)
        return {arm: self.url(pair, arm) for arm in ("A", "B")}


def compared_images(lab, settings):
    """The app's ComparedImages (made here when app.py's Settings.bind made none: the Doors read settings.images once
    the tabs are built), or None without a store (a layout built for a test)."""
    images = getattr(settings, "images", None)
    if images is None and getattr(lab, "store", None) is not None:
        images = settings.images = ComparedImages(lab.store)
    return images if isinstance(images, ComparedImages) else None


def with_urls(lab, settings, out):
    """A served pair with its images' URLs as shown (`left_url`, `right_url`) and their `size`; unchanged when the
    app serves no Compare images by URL."""
    images = compared_images(lab, settings)
    if images is None:
        return out
    urls = images.register(lab.store.pair(out["pair_id"]))
    left = lab.store.served(out["serve_id"])["shown_left"]
    return {**out, "left_url": urls[left], "right_url": urls[other(left)], "size": out["left"].size}


# A pair's images and LPIPS/FLIP maps for the difference views at another gain: a few pairs for the whole process
# (not per session), measured again from the stored files when gone.
MEASURED_KEPT = 8
_measured, _measured_lock = OrderedDict(), threading.Lock()


def keep_measured(pair_id, a, b, spatial, flip):
    with _measured_lock:
        _measured[pair_id] = (a, b, spatial, flip)
        _measured.move_to_end(pair_id)
        while len(_measured) > MEASURED_KEPT:
            _measured.popitem(last=False)
    return a, b, spatial, flip


def measured(lab, pair_id):
    """(A, B, LPIPS spatial map, FLIP map) of a stored pair, from the cache or measured from its files; None for a
    pair the store does not hold."""
    with _measured_lock:
        hit = _measured.get(pair_id)
    if hit is not None:
        return hit
    pair = lab.store.pair(pair_id)
    if pair is None:
        return None
    root = lab.store.path.parent
    a, b = (open_as_compared(root / pair[k]) for k in ("image_a", "image_b"))
    maps = measure_rgb(lab.lpips(), to_array(a), to_array(b))["maps"]
    return keep_measured(pair_id, a, b, maps["lpips_spatial"], maps["flip"])


def configs_of(data, w):
    """(A, B) from the form: the preset over the top-level fields, or the two custom panels."""
    pairing = data[w["pairing"]]
    if pairing == CUSTOM:
        return tuple(custom_config(name, {f: data[w[f"{name}:{f}"]] for f, _, _ in CUSTOM_FIELDS})
                     for name in ("A", "B"))
    return preset_configs(pairing, data[w["steps"]], data[w["sampler"]], data[w["guidance"]])


def shown(lab, current, gain):
    """The difference maps of the pair on screen at this gain (|Δ|, LPIPS and FLIP are the same either way round)."""
    found = measured(lab, current["pair_id"]) if current and current.get("pair_id") else None
    if found is None:
        return ""
    a, b, spatial, flip = found
    return views.maps_panel(pair_maps(a, b, spatial, flip, gain), gain)


def sources(lab, settings, left, right, pair=None, shown_left="A"):
    """(left src, right src, size) of a pair on screen: image URLs where the app serves them (ComparedImages, with
    the stored `pair` row), else data URLs (a layout built without a store)."""
    images = compared_images(lab, settings) if pair is not None else None
    if images is None:
        return views.data_url(left), views.data_url(right), left.size
    urls = images.register(pair)
    return urls[shown_left], urls[other(shown_left)], left.size


def downloads(settings):
    """Whether a voted pair's zip is offered (Settings.pair_downloads: always locally, hosted with --pair-downloads)."""
    return getattr(settings, "pair_downloads", not getattr(settings, "hosted", None))


def field_id(field):
    """The element id of a form field named by ConfigError.field ('seed', 'A:s_tmin', 'A', …), or None."""
    if not field:
        return None
    if ":" in field:
        name, part = field.split(":", 1)
        return f"custom-{name.lower()}-{part.replace('_', '-')}"
    if field in ("A", "B"):
        return f"custom-{field.lower()}-panel"
    return field if field in FORM else None


def refused(w, err, settings=None):
    """A refused generation: every view emptied (no stale pair, progress or schedule), one message under the
    controls naming what to change, the field at fault marked."""
    return {**cleared(w, settings=settings),
            w["error"]: views.form_error_html(err.message, field_id(getattr(err, "field", None)))}


def cleared(w, status="", settings=None):
    """Every view of the previous pair emptied, its state dropped, voting disabled and the last refusal gone."""
    return {w["current"]: None, w["pair"]: views.empty_html("Generating a pair…" if status else
                                                            "Generate a pair to compare."),
            w["flicker"]: views.empty_html("The flicker view appears with the pair."), w["visibility"]: "",
            w["maps"]: "", w["slider"]: None, w["metrics"]: "", w["reveal"]: "", w["status"]: status,
            w["plot"]: "", w["schedules"]: "", w["error"]: "",
            w["download"]: views.download_html() if downloads(settings) else "",
            **{w[f"vote:{c}"]: gr.update(interactive=False) for c in VOTE_BUTTONS}}


def generate(lab, settings, w, data, request, progress, seed=None, before=""):
    """Run a pair from the form (with `seed` when given) and fill every view of it; a refusal (bad input, a limit)
    empties the views and says why in one place (refused). `before`: what the status line says first (the previous
    pair, after a vote)."""
    seed = data[w["seed"]] if seed is None else seed
    try:
        cfg_a, cfg_b = run_checked(configs_of, data, w)
        out = serve_pair(lab, settings, request, data[w["prompt"]], seed, data[w["model"]], data[w["pairing"]],
                         cfg_a, cfg_b, progress=lambda done, total: progress(done / total, desc="sampling both arms"))
    except gr.Error as err:  # only user errors become gr.Error (ui/errors.py); a bug still fails loudly
        return refused(w, err, settings)
    vis, arms = out["visibility"], out["arms"]
    keep_measured(out["pair_id"], arms["A"].image, arms["B"].image, out["maps"]["lpips_spatial"], out["maps"]["flip"])
    if "left_url" not in out:
        out = with_urls(lab, settings, out)
    if "left_url" in out:
        left, right, size = out["left_url"], out["right_url"], out["size"]
    else:
        left, right, size = views.data_url(out["left"]), views.data_url(out["right"]), out["left"].size
    # The session keeps ids and URLs; the images themselves are in the store (and the maps in `measured`).
    current = {"serve_id": out["serve_id"], "pair_id": out["pair_id"], "left": left, "right": right, "size": size}
    return {w["current"]: current, w["pair"]: views.pair_html(left, right, size=size),
            w["flicker"]: views.flicker_html(left, right, size=size), w["visibility"]: views.visibility_html(vis),
            w["maps"]: shown(lab, current, data[w["gain"]]),
            w["slider"]: views.slider_images(out["left"], out["right"]),
            w["metrics"]: views.metrics_markdown(out["metrics"]),
            w["plot"]: views.schedule_html(arms), w["schedules"]: views.schedule_markdown(arms),
            w["reveal"]: "", w["status"]: views.prompt_html(vis, before),
            w["download"]: views.download_html() if downloads(settings) else "",
            **{w[f"vote:{c}"]: gr.update(interactive=True) for c in VOTE_BUTTONS}}


def vote(lab, settings, w, choice, current, note, request, export_dir=None):
    """Record one blind vote, reveal the configs, relabel the views A/B, clear the note; the pair's zip is offered as
    a link (made when followed), never made here."""
    if not current or not current.get("serve_id"):
        return {w["status"]: "Nothing to vote on: generate a pair first."}
    try:
        settings.admit_vote(request, note)
        result = cast_vote(lab.store, current["serve_id"], choice, request.session_hash, note)
    except DuplicateVote:
        # A second click (or key) on a pair already voted: the first one counts, nothing else happens.
        return {w["status"]: "Your vote on this pair is already recorded; generate the next pair.",
                **{w[f"vote:{c}"]: gr.update(interactive=False) for c in VOTE_BUTTONS}}
    except USER_ERRORS as exc:
        # Said beside the buttons (not a toast gone in seconds); the pair stays votable once the cause is gone.
        return {w["status"]: views.status_html(("Vote not recorded:", True), (clip(str(exc), 400), False)),
                **{w[f"vote:{c}"]: gr.update(interactive=True) for c in VOTE_BUTTONS}}
    reveal = result["reveal"]
    labels = (reveal["left"], reveal["right"])
    # Kept with the pair so a pair served next (auto-next) can say what this one was.
    current = {**current, "revealed": f"Previous pair: left was {labels[0]}, right was {labels[1]} "
                                      f"({reveal['pairing']}); you voted {choice}."}
    size = current.get("size")
    return {w["current"]: current, w["reveal"]: views.reveal_html(result), w["note"]: "",
            w["status"]: views.status_html(("Vote recorded. Press n (or Next pair) for another.", False)),
            w["pair"]: views.pair_html(current["left"], current["right"], labels, size=size),
            w["flicker"]: views.flicker_html(current["left"], current["right"], labels=labels, size=size),
            w["download"]: views.download_html(current["serve_id"]) if downloads(settings) else "",
            **{w[f"vote:{c}"]: gr.update(interactive=False) for c in VOTE_BUTTONS}}


FORM = ("prompt", "seed", "model", "pairing", "steps", "sampler", "guidance")


def stored_pair_outputs(w):
    """Everything the /?pair= view fills: the views of a fresh pair, the form, and the buttons it locks."""
    return [w[k] for k in ("current", "pair", "flicker", "slider", "reveal", "visibility", "metrics", "maps", "plot",
                           "schedules", "generate", "next", *FORM)] + \
        [w[f"{n}:{f}"] for n in ("A", "B") for f, _, _ in CUSTOM_FIELDS]


def open_stored_pair(lab, settings, w, pair_id):
    """`/?pair=PAIR_ID`: a stored pair as a fresh one is shown (A left, B right, not blind: the visibility line,
    metrics, every map, the schedules) with the form holding its own settings, read-only. Local apps only."""
    pair_id = (pair_id or "").strip()
    if not pair_id:
        return {w["reveal"]: gr.update()}  # nothing changes (Gradio wants at least one output named)
    if settings.hosted:
        # A public demo serves pairs blind only: a link must not reveal which config made which image.
        return {w["reveal"]: "Stored pairs open by link in a local app only."}
    pair = lab.store.pair(pair_id)
    if pair is None:
        return {w["reveal"]: f"<p>No stored pair <code>{html.escape(clip(pair_id))}</code> in this results file.</p>"}
    root = lab.store.path.parent
    a, b = (open_as_compared(root / pair[k]) for k in ("image_a", "image_b"))
    out = stored_views(lab, settings, w, pair, a, b)
    if pair.get("image_meta"):
        # Image files made elsewhere: what they say about themselves instead of a schedule; the form left as it is.
        return {**out, w["reveal"]: views.stored_pair_html(pair), w["plot"]: "",
                w["schedules"]: "Image files made elsewhere: no schedule."}
    cfg_a, cfg_b = (SamplerConfig.from_json(pair[k]) for k in ("config_a", "config_b"))
    model = lab.model(pair["model"]) if pair["model"] in settings.models else None
    arms = {name: ArmRun(cfg, *arm_schedule(model, cfg), image) for name, cfg, image in (("A", cfg_a, a),
                                                                                         ("B", cfg_b, b))} \
        if model is not None else None
    preset = pair["pairing"] in PAIRINGS and make_pair(pair["pairing"], cfg_a) == (cfg_a, cfg_b)
    out.update({
        w["reveal"]: views.stored_pair_html(pair, lab.store.study_row(pair_id)),
        w["plot"]: views.schedule_html(arms) if arms else "",
        w["schedules"]: views.schedule_markdown(arms) if arms else
        views.markdown_text(f"Model {pair['model']} is not loaded here."),
        w["prompt"]: gr.update(value=pair["prompt"] or UNCONDITIONAL, interactive=False),
        w["seed"]: gr.update(value=str(pair["seed"]), interactive=False),
        w["model"]: gr.update(value=pair["model"], interactive=False),
        w["pairing"]: gr.update(value=pair["pairing"] if preset else CUSTOM, interactive=False),
        w["steps"]: gr.update(value=str(cfg_a.steps), interactive=False),
        w["sampler"]: gr.update(value=cfg_a.sampler, interactive=False),
        w["guidance"]: gr.update(value=str(cfg_a.guidance_scale), interactive=False)})
    for name, cfg in (("A", cfg_a), ("B", cfg_b)):
        for field, _, kind in CUSTOM_FIELDS:
            value = getattr(cfg, field)
            value = value if kind in ("choice", "bool") else ("" if value is None else str(value))
            out[w[f"{name}:{field}"]] = gr.update(value=value, interactive=False)
    return out


def stored_views(lab, settings, w, pair, a, b):
    """What every stored pair opened by link shows: the pair, flicker, slider, visibility line, metrics and maps,
    measured as a pair of files is (workflows.inspect_pair.measure_rgb), with Generate and Next locked."""
    result = measure_rgb(lab.lpips(), to_array(a), to_array(b))
    keep_measured(pair["pair_id"], a, b, result["maps"]["lpips_spatial"], result["maps"]["flip"])
    left, right, size = sources(lab, settings, a, b, pair)
    current = {"serve_id": None, "pair_id": pair["pair_id"], "left": left, "right": right, "size": size}
    labels = ("A", "B")
    locked = gr.update(interactive=False)
    return {w["current"]: current, w["pair"]: views.pair_html(left, right, labels, size=size),
            w["flicker"]: views.flicker_html(left, right, labels=labels, size=size),
            w["slider"]: views.slider_images(a, b), w["visibility"]: views.visibility_html(result["visibility"]),
            w["metrics"]: views.metrics_markdown(result["metrics"]), w["maps"]: shown(lab, current, 8),
            w["generate"]: locked, w["next"]: locked}


def form_ids():
    """{widget name: element id} of the Compare form a file's settings are sent to (sent_to_form's outputs)."""
    ids = {k: k for k in FORM}
    ids.update({f"{n}:{f}": field_id(f"{n}:{f}") for n in ("A", "B") for f, _, _ in CUSTOM_FIELDS})
    ids.update({"custom": "custom", "explain": "preset-explanation", "sent": "sent-from-inspect"})
    return ids


def find_form(root):
    """The Compare form's widgets by name, found by element id in the Blocks `root` being built; None when it has no
    Compare tab (a --campaign app)."""
    by_id = {getattr(b, "elem_id", None): b for b in getattr(root, "blocks", {}).values()}
    found = {name: by_id.get(eid) for name, eid in form_ids().items()}
    return found if all(v is not None for v in found.values()) else None


def sent_to_form(w, settings, unmapped, source):
    """The Compare form's updates for a file's settings (core.remake.settings_from_metadata): a custom pair whose two
    panels are the mapped config, with its seed, model and prompt where carried, and one line saying what was sent
    and what could not be mapped."""
    cfg = SamplerConfig.from_dict(settings["config"])
    out = {w["pairing"]: CUSTOM, w["explain"]: EXPLANATIONS[CUSTOM], w["custom"]: gr.Accordion(open=True),
           w["model"]: settings["model"],
           w["steps"]: gr.update(value=str(cfg.steps), interactive=False),
           w["sampler"]: gr.update(value=cfg.sampler, interactive=False),
           w["guidance"]: gr.update(value=str(cfg.guidance_scale), interactive=False),
           w["seed"]: gr.update() if settings["seed"] is None else str(settings["seed"]),
           w["prompt"]: gr.update() if settings["prompt"] is None else (settings["prompt"] or UNCONDITIONAL)}
    for name in ("A", "B"):
        _fill_panel(out, w, name, cfg)
    e = html.escape  # a file's name and what it says about itself are shown, never obeyed
    sent = (f"<b>Sent from Inspect:</b> {e(source)} → a custom pair, both configs {e(cfg.sampler)}, "
            f"{e(cfg.schedule)}, {cfg.steps} steps, guidance {cfg.guidance_scale:g}, convention {e(cfg.convention)}"
            + ("" if cfg.quantize == "off" else f" (quantize {e(cfg.quantize)})")
            + ("" if settings["seed"] is None else f", seed {e(str(settings['seed']))}")
            + f", model {e(settings['model'])}. ")
    line = f"<b>Not mapped:</b> {e('; '.join(unmapped))}." if unmapped else "Every stated setting was carried over."
    out[w["sent"]] = f"<p>{sent}{line} Change config B where the pair should differ.</p>"
    return out


def _fill_panel(out, w, name, cfg):
    """Custom panel `name`'s widgets set to `cfg` (choices and checkboxes as values, numbers as text)."""
    for field, _, kind in CUSTOM_FIELDS:
        value = getattr(cfg, field)
        out[w[f"{name}:{field}"]] = value if kind in ("choice", "bool") else ("" if value is None else str(value))


def pair_to_form(w, pair, source):
    """The Compare form's updates for two files remade as one pair here (core.remake.remake_pair): panel A from file
    A, panel B from file B, each with its tool's convention, one seed and prompt, and one line saying what was sent
    and what was not carried."""
    cfg_a, cfg_b = pair["a"], pair["b"]
    out = {w["pairing"]: CUSTOM, w["explain"]: EXPLANATIONS[CUSTOM], w["custom"]: gr.Accordion(open=True),
           w["model"]: pair["model"], w["steps"]: gr.update(value=str(cfg_a.steps), interactive=False),
           w["sampler"]: gr.update(value=cfg_a.sampler, interactive=False),
           w["guidance"]: gr.update(value=str(cfg_a.guidance_scale), interactive=False),
           w["seed"]: str(pair["seed"]), w["prompt"]: pair["prompt"] or UNCONDITIONAL}
    for name, cfg in (("A", cfg_a), ("B", cfg_b)):
        _fill_panel(out, w, name, cfg)
    e = html.escape  # the files' names and what they say about themselves are shown, never obeyed
    arms = "; ".join(f"{n} {e(c.sampler)}, {e(c.schedule)}, {c.steps} steps, guidance {c.guidance_scale:g}, "
                     f"convention {e(c.convention)}" for n, c in (("A", cfg_a), ("B", cfg_b)))
    notes = [f"{side}: {'; '.join(lines)}" for side, lines in pair["unmapped"].items() if lines]
    line = f"<b>Not carried:</b> {e(' · '.join(notes))}." if notes else "Every stated setting was carried over."
    out[w["sent"]] = (f"<p><b>Remade from Inspect:</b> {e(source)} → {arms}; seed {pair['seed']}, model "
                      f"{e(pair['model'])}. {line}</p>")
    return out


def config_panel(name, defaults, w):
    """One column of custom-config widgets; every number is text, so an empty field stays empty."""
    with gr.Column(min_width=200, elem_id=f"custom-{name.lower()}-panel"):
        gr.Markdown(f"#### Config {name}")
        for field, label, kind in CUSTOM_FIELDS:
            value = getattr(defaults, field)
            eid = f"custom-{name.lower()}-{field.replace('_', '-')}"
            if kind == "choice":
                widget = gr.Dropdown(CHOICES[field], value=value, label=label, elem_id=eid)
            elif kind == "bool":
                widget = gr.Checkbox(value, label=label, elem_id=eid)
            else:
                empty = "empty = the model's own (flow models)" if field == "shift" else "empty = no limit"
                widget = gr.Textbox("" if value is None else str(value), label=label, elem_id=eid,
                                    placeholder=empty if kind == "float?" else None, max_lines=1)
            w[f"{name}:{field}"] = widget


def stage(w, pair_html, flicker_html):
    """The pair, the flicker view and the vote column (buttons, visibility line, status, reveal) in one row: side
    by side at 1280 px, so the whole vote loop fits one 1280x800 screen; stacked on a phone, the buttons straight
    under the pair (static/app.css). Shared by the Compare tab and a campaign's Vote tab."""
    with gr.Row(equal_height=False, elem_id="stage", elem_classes=["zoom-root"]):
        with gr.Column(scale=2, min_width=300, elem_id="pair-col"):
            w["pair"] = gr.HTML(pair_html, elem_id="pair")
        with gr.Column(scale=1, min_width=240, elem_id="flicker-col"):
            w["flicker"] = gr.HTML(flicker_html, elem_id="flicker")
        with gr.Column(scale=1, min_width=260, elem_id="vote-col"):
            with gr.Row(elem_id="vote-row"):
                for choice, (label, eid) in VOTE_BUTTONS.items():
                    w[f"vote:{choice}"] = gr.Button(label, elem_id=eid, interactive=False, min_width=110)
            w["visibility"] = gr.HTML("", elem_id="visibility")
            w["status"] = gr.HTML("", elem_id="vote-status")  # escaped HTML: it quotes visitors' text
            w["reveal"] = gr.HTML("", elem_id="reveal")


def build_compare_tab(lab, settings, export_dir):
    """Lay out the tab and wire it; returns the widgets by name."""
    model = lab.model(settings.model)
    prompts = list(model.prompts() or [])
    compared_images(lab, settings)  # before app.py hands settings.images to its Doors
    w = {}
    with gr.Tab("Compare"):
        with gr.Row(equal_height=True, elem_id="controls"):
            w["prompt"] = gr.Dropdown(prompts + [UNCONDITIONAL], value=prompts[0] if prompts else None,
                                      allow_custom_value=True, label="prompt", elem_id="prompt", scale=3,
                                      min_width=160)
            w["seed"] = gr.Textbox("0", label="seed", elem_id="seed", scale=1, max_lines=1, min_width=80)
            w["dice"] = gr.Button("New seed", scale=0, min_width=100, elem_id="dice")
            w["model"] = gr.Dropdown(settings.models, value=settings.model, label="model", scale=1, min_width=150,
                                     elem_id="model")
            w["pairing"] = gr.Dropdown(list(PAIRINGS) + [CUSTOM], value="discretization", label="pairing",
                                       elem_id="pairing", scale=2, min_width=150)
            w["steps"] = gr.Textbox("25", label="steps", elem_id="steps", scale=1, max_lines=1, min_width=70)
            w["sampler"] = gr.Dropdown(SAMPLER_CHOICES, value="heun", label="sampler", scale=3, min_width=250,
                                       elem_id="sampler")
            w["guidance"] = gr.Textbox(str(SamplerConfig.guidance_scale), label="guidance", scale=1,
                                       max_lines=1, min_width=80, elem_id="guidance")
        w["explain"] = gr.Markdown(EXPLANATIONS["discretization"], elem_id="preset-explanation")
        # What the Inspect tab's "Send to Compare" filled in, and what of the file it could not carry over.
        w["sent"] = gr.HTML("", elem_id="sent-from-inspect")
        with gr.Accordion("Custom configs A and B (pairing: custom)", open=False, elem_id="custom") as custom:
            w["custom"] = custom
            with gr.Row():
                config_panel("A", CUSTOM_DEFAULT, w)
                config_panel("B", CUSTOM_DEFAULT, w)
        with gr.Row(equal_height=True):
            w["generate"] = gr.Button("Generate pair", variant="primary", elem_id="generate", scale=2)
            w["next"] = gr.Button("Next pair (n)", elem_id="next-pair", scale=1)
            w["auto_next"] = gr.Checkbox(False, label="next pair after voting", elem_id="auto-next", scale=1)
        w["error"] = gr.HTML("", elem_id="form-error")

        w["current"] = gr.State(None)
        # The vote loop on one screen: the pair, the flicker view and, beside them, the buttons, the visibility
        # line, the status and the reveal (views.stage lays them out; on a phone they stack, buttons first).
        stage(w, views.empty_html("Generate a pair to compare."), views.empty_html("The flicker view appears with "
                                                                                  "the pair."))
        gr.HTML(views.KEY_HINT)
        w["note"] = gr.Textbox(label="note (optional, saved with your vote)", max_lines=2, elem_id="vote-note")
        # The voted pair's zip, made when its link is followed (app.py's /pair-zip/ door), never on a vote.
        w["download"] = gr.HTML(views.download_html() if downloads(settings) else "", elem_id="download-pair-box")
        w["metrics"] = gr.Markdown(elem_id="pair-metrics")
        w["gain"] = gr.Radio(list(GAINS), value=8, label="difference gain", elem_id="diff-gain")
        w["maps"] = gr.HTML("", elem_id="diff-maps")
        w["slider"] = gr.ImageSlider(label="slider (left | right)", type="pil", format="png", elem_id="slider",
                                     buttons=["fullscreen"])
        with gr.Accordion("Sigma schedules (A and B; sides stay hidden until you vote)", open=False):
            w["plot"] = gr.HTML(elem_id="schedule-plot")
            w["schedules"] = gr.Markdown()
    wire(lab, settings, w, custom, export_dir)
    return w


def wire(lab, settings, w, custom, export_dir):
    form = {w[k] for k in ("prompt", "seed", "model", "pairing", "steps", "sampler", "guidance", "gain")} | \
        {w[f"{n}:{f}"] for n in ("A", "B") for f, _, _ in CUSTOM_FIELDS}
    views_out = [w[k] for k in ("current", "pair", "flicker", "visibility", "maps", "slider", "metrics", "plot",
                                "schedules", "reveal", "status", "download", "note", "error")] + \
        [w[f"vote:{c}"] for c in VOTE_BUTTONS]
    buttons = [w[f"vote:{c}"] for c in VOTE_BUTTONS]
    private = dict(api_visibility="private")
    # One progress indicator per action: on the pair being made (not on each of a dozen outputs).
    gen = dict(concurrency_id="generate", concurrency_limit=settings.generate_workers, show_progress_on=w["pair"],
               **private)

    w["dice"].click(lambda: str(secrets.randbelow(2 ** 31)), None, w["seed"], queue=False, **private)

    def on_pairing(pairing):
        top = gr.update(interactive=pairing != CUSTOM)
        return {w["explain"]: EXPLANATIONS.get(pairing, ""), w["steps"]: top, w["sampler"]: top,
                w["guidance"]: top, custom: gr.Accordion(open=pairing == CUSTOM)}
    w["pairing"].change(on_pairing, w["pairing"], [w["explain"], w["steps"], w["sampler"], w["guidance"], custom],
                        queue=False, **private)

    # Gradio injects gr.Request / gr.Progress only into plain parameters of plain functions, hence closures.
    def on_generate(data, request: gr.Request, progress=gr.Progress()):
        return generate(lab, settings, w, data, request, progress)

    def on_next(data, request: gr.Request, progress=gr.Progress()):
        seed = str(secrets.randbelow(2 ** 31))
        return {**generate(lab, settings, w, data, request, progress, seed=seed), w["seed"]: seed}

    def on_auto_next(data, request: gr.Request, progress=gr.Progress()):
        # Only after a vote this pair took (a refused or repeated one leaves no "revealed").
        if not data[w["auto_next"]] or not (data[w["current"]] or {}).get("revealed"):
            return {w["status"]: gr.update()}  # nothing changes (Gradio wants at least one output named)
        seed = str(secrets.randbelow(2 ** 31))
        return {**generate(lab, settings, w, data, request, progress, seed=seed,
                           before=data[w["current"]].get("revealed", "")), w["seed"]: seed}

    clear = lambda: cleared(w, "Sampling…", settings)  # noqa: E731 - shown at once, so a failure leaves no stale pair
    w["generate"].click(clear, None, views_out, queue=False, show_progress="hidden", **private).then(
        on_generate, form, views_out, **gen)
    w["next"].click(clear, None, views_out, queue=False, show_progress="hidden", **private).then(
        on_next, form, views_out + [w["seed"]], **gen)

    def vote_handler(choice):
        def on_vote(current, note, request: gr.Request):
            return vote(lab, settings, w, choice, current, note, request, export_dir)
        return on_vote

    vote_out = [w[k] for k in ("current", "reveal", "note", "status", "pair", "flicker", "download")] + buttons
    for choice in VOTE_BUTTONS:
        # trigger_mode="once": clicks while a vote is pending are dropped; the store refuses any later one.
        w[f"vote:{choice}"].click(vote_handler(choice), [w["current"], w["note"]], vote_out,
                                  concurrency_id="vote", concurrency_limit=64, trigger_mode="once",
                                  show_progress_on=w["status"], **private).then(
            on_auto_next, form | {w["auto_next"], w["current"]}, views_out + [w["seed"]], **gen)
    w["gain"].change(lambda current, gain: shown(lab, current, gain), [w["current"], w["gain"]],
                     w["maps"], concurrency_id="read", concurrency_limit=16, **private)
