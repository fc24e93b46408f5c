"""The Vote tab of `app.py --campaign NAME`: a campaign's pairs served blind, one after another, no generation."""
import html

import gradio as gr

from comparisons.workflows.blind import next_campaign_pair
from ui import views
from ui.compare import VOTE_BUTTONS, stage, vote
from ui.errors import run_checked

SEEN_ALL = "You have seen every pair of this campaign: thank you. Your votes are recorded."


def serve_next(lab, settings, w, request, status=""):
    """Fill the views with the next campaign pair for this session, or say that it has seen them all; a refusal (a
    rate limit) is said in the status line, the pair on screen kept."""
    try:
        run_checked(settings.admit_serve, request)
        out = run_checked(next_campaign_pair, lab, settings.campaign, request.session_hash)
    except gr.Error as err:
        return {w["status"]: f"**Not served:** {err.message}"}
    if out is None:
        return {w["current"]: None, w["pair"]: views.empty_html(SEEN_ALL), w["flicker"]: "",
                w["visibility"]: "", w["status"]: f"{status} {SEEN_ALL}".strip(),
                **{w[f"vote:{c}"]: gr.update(interactive=False) for c in VOTE_BUTTONS}}
    left, right, vis = out["left"], out["right"], out["visibility"]
    current = {"serve_id": out["serve_id"], "pair_id": out["pair_id"], "left": left, "right": right}
    return {w["current"]: current, w["pair"]: views.pair_html(left, right),
            w["flicker"]: views.flicker_html(left, right),
            w["visibility"]: views.visibility_html(vis), w["status"]: f"{status} {views.vote_prompt(vis)}".strip(),
            w["download"]: gr.update(value=None, interactive=False),
            **{w[f"vote:{c}"]: gr.update(interactive=True) for c in VOTE_BUTTONS}}


def build_vote_tab(lab, settings, export_dir, definition):
    """Lay out and wire the Vote tab; returns (widgets by name, the page-load handler and its outputs)."""
    w = {}
    n_pairs = sum(c["pairs"] for c in definition["cells"]) + definition.get("n_checks", 0)
    with gr.Tab("Vote"):
        origin = (f"from study {html.escape(definition['study'])}" if definition["study"] else
                  "of image files made elsewhere")
        gr.Markdown(f"**Campaign {html.escape(definition['name'])}** · {n_pairs} pairs {origin}. "
                    "Which image is better? Sides are random and hidden until you vote; the next pair comes "
                    "by itself.", elem_id="campaign-header")
        w["current"] = gr.State(None)
        stage(w, views.empty_html("Loading your first pair…"), "")
        gr.HTML(views.KEY_HINT.replace("next pair", "skip this pair"))
        with gr.Row(equal_height=True):
            w["note"] = gr.Textbox(label="note (optional, saved with your vote)", max_lines=2, elem_id="vote-note",
                                   scale=3)
            w["next"] = gr.Button("Skip (n)", elem_id="next-pair", scale=0, min_width=100)
        w["download"] = gr.DownloadButton("Download the last pair (zip)", elem_id="download-pair", interactive=False)

    shown = [w[k] for k in ("current", "pair", "flicker", "visibility", "status", "download")] + \
        [w[f"vote:{c}"] for c in VOTE_BUTTONS]
    private = dict(api_visibility="private", concurrency_id="vote", concurrency_limit=64, show_progress_on=w["pair"])

    def on_load(request: gr.Request):
        return serve_next(lab, settings, w, request)

    def on_skip(request: gr.Request):
        return serve_next(lab, settings, w, request, "Skipped.")

    def vote_handler(choice):
        def on_vote(current, note, request: gr.Request):
            out = vote(lab, settings, w, choice, current, note, request, export_dir)
            revealed = (out.get(w["current"]) or {}).get("revealed")
            if not revealed:
                return out  # refused or repeated: the pair stays
            # The vote counted: its reveal stays readable, and the next pair is served at once.
            following = serve_next(lab, settings, w, request, "Vote recorded.")
            return {**out, **following, w["download"]: out[w["download"]],
                    w["reveal"]: f"{revealed}\n\n{out[w['reveal']]}"}
        return on_vote

    outputs = shown + [w["reveal"], w["note"]]
    for choice in VOTE_BUTTONS:
        w[f"vote:{choice}"].click(vote_handler(choice), [w["current"], w["note"]], outputs, trigger_mode="once",
                                  **private)
    w["next"].click(on_skip, None, shown, **private)
    return w, on_load, shown
