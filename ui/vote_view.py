"""The Vote tab of `app.py --campaign NAME`: a campaign's pairs served blind, one after another, no generation.

What a visitor's session keeps is a few ids (`current`): the images travel as URLs (workflows.blind.PairImages,
served by app.py's door), never in an answer or in Gradio's session state, and a pair's zip is made when its link
is followed, never on a vote. Every text that came from a campaign (cell names, labels, prompts, what files say
about themselves) or from a visitor is shown through gr.HTML, escaped: nothing of it becomes markup, Markdown
included.
"""
import html

import gradio as gr

from comparisons.errors import DuplicateVote, StoreError, VoteRefused, clip
from comparisons.workflows.blind import cast_vote, next_campaign_pair
from ui import views
from ui.compare import VOTE_BUTTONS
from ui.errors import USER_ERRORS, run_checked

SEEN_ALL = "You have seen every pair of this campaign: thank you. Your votes are recorded."
e = html.escape


def previous_line(vote):
    """'Previous pair: …' said once the next pair is on screen."""
    r = vote["reveal"]
    if "left" not in r:
        return (f"Previous pair: {views.arm_label(r, 'A')} vs {views.arm_label(r, 'B')} ({r['pairing']}); "
                f"you voted {vote['choice']}.")
    return (f"Previous pair: left was {views.arm_label(r, r['left'])}, right was {views.arm_label(r, r['right'])} "
            f"({r['pairing']}); you voted {vote['choice']}.")


def serve_next(lab, settings, w, request, status=""):
    """Fill the views with the next campaign pair for this session, or say that it has seen them all; a refusal (a
    rate limit, a store that cannot write) is said in the status line, the pair on screen kept."""
    try:
        run_checked(settings.admit_serve, request)
        out = run_checked(next_campaign_pair, lab, settings.campaign, settings.session(request),
                          address=settings.vote_address(request), images=settings.images)
    except gr.Error as err:
        return {w["status"]: views.status_html(("Not served:", True), (err.message, False))}
    if out is None:
        return {w["current"]: None, w["pair"]: views.empty_html(SEEN_ALL), w["flicker"]: "",
                w["visibility"]: "", w["status"]: views.status_html((status, False), (SEEN_ALL, False)),
                **{w[f"vote:{c}"]: gr.update(interactive=False) for c in VOTE_BUTTONS}}
    left, right, vis, size = out["left_url"], out["right_url"], out["visibility"], out.get("size")
    prompt = views.vote_prompt(vis)
    below = prompt.startswith("**")
    current = {"serve_id": out["serve_id"], "left": left, "right": right, "size": size}
    return {w["current"]: current, w["pair"]: views.pair_html(left, right, size=size),
            w["flicker"]: views.flicker_html(left, right, size=size),
            w["visibility"]: views.visibility_html(vis),
            w["status"]: views.status_html((status, False), (prompt.replace("**", ""), below)),
            **{w[f"vote:{c}"]: gr.update(interactive=True) for c in VOTE_BUTTONS}}


def vote(lab, settings, w, choice, current, note, request):
    """Record one blind vote; the reveal, or why it was not recorded (the pair stays votable)."""
    if not current or not current.get("serve_id"):
        return {w["status"]: views.status_html(("Nothing to vote on yet: wait for the pair.", False))}
    try:
        settings.admit_vote(request, note)
        result = cast_vote(lab.store, current["serve_id"], choice, settings.session(request), note,
                           address=settings.vote_address(request), max_per_address=settings.max_votes_per_address,
                           blind=settings.hosted is not None)
    except DuplicateVote:
        return {w["status"]: views.status_html(("Your vote on this pair is already recorded.", False)),
                **{w[f"vote:{c}"]: gr.update(interactive=False) for c in VOTE_BUTTONS}}
    except StoreError as exc:
        # The disk refused the write (full, read-only): nothing was stored; the pair stays to vote on again.
        return {w["status"]: views.status_html((clip(str(exc), 400), True)),
                **{w[f"vote:{c}"]: gr.update(interactive=True) for c in VOTE_BUTTONS}}
    except VoteRefused as exc:
        return {w["status"]: views.status_html(("Vote not recorded:", True), (clip(str(exc), 400), False)),
                **{w[f"vote:{c}"]: gr.update(interactive=False) for c in VOTE_BUTTONS}}
    except USER_ERRORS as exc:
        return {w["status"]: views.status_html(("Vote not recorded:", True), (clip(str(exc), 400), False)),
                **{w[f"vote:{c}"]: gr.update(interactive=True) for c in VOTE_BUTTONS}}
    return {w["reveal"]: views.reveal_html(result), w["note"]: "",
            w["download"]: views.download_html(current["serve_id"]) if settings.pair_downloads else "",
            "previous": previous_line(result)}


def build_vote_tab(lab, settings, export_dir, definition):
    """Lay out and wire the Vote tab; returns (widgets by name, the page-load handler and its outputs)."""
    w = {}
    n_pairs = sum(c["pairs"] for c in definition["cells"]) + definition.get("n_checks", 0)
    with gr.Tab("Vote"):
        origin = (f"from study {e(definition['study'])}" if definition["study"] else "of image files made elsewhere")
        gr.HTML(f"<p><b>Campaign {e(definition['name'])}</b> · {n_pairs} pairs {origin}. Which image is better? "
                "Sides are random and hidden until you vote; the next pair comes by itself.</p>",
                elem_id="campaign-header")
        w["current"] = gr.State(None)
        with gr.Row(equal_height=False, elem_id="stage", elem_classes=["zoom-root"]):
            with gr.Column(scale=2, min_width=300, elem_id="pair-col"):
                w["pair"] = gr.HTML(views.empty_html("Loading your first pair…"), elem_id="pair")
            with gr.Column(scale=1, min_width=240, elem_id="flicker-col"):
                w["flicker"] = gr.HTML("", elem_id="flicker")
            with gr.Column(scale=1, min_width=260, elem_id="vote-col"):
                with gr.Row(elem_id="vote-row"):
                    for choice, (label, eid) in VOTE_BUTTONS.items():
                        w[f"vote:{choice}"] = gr.Button(label, elem_id=eid, interactive=False, min_width=110)
                w["visibility"] = gr.HTML("", elem_id="visibility")
                w["status"] = gr.HTML("", elem_id="vote-status")
                w["reveal"] = gr.HTML("", elem_id="reveal")
        gr.HTML(views.KEY_HINT.replace("next pair", "skip this pair"))
        with gr.Row(equal_height=True):
            w["note"] = gr.Textbox(label="note (optional, saved with your vote)", max_lines=2, elem_id="vote-note",
                                   scale=3)
            w["next"] = gr.Button("Skip (n)", elem_id="next-pair", scale=0, min_width=100)
        w["download"] = gr.HTML(views.download_html() if settings.pair_downloads else "", elem_id="download-pair-box")

    shown = [w[k] for k in ("current", "pair", "flicker", "visibility", "status")] + \
        [w[f"vote:{c}"] for c in VOTE_BUTTONS]
    private = dict(api_visibility="private", concurrency_id="vote", concurrency_limit=64, show_progress_on=w["pair"])

    def on_load(request: gr.Request):
        return serve_next(lab, settings, w, request)

    def on_skip(request: gr.Request):
        return serve_next(lab, settings, w, request, "Skipped.")

    def vote_handler(choice):
        def on_vote(current, note, request: gr.Request):
            out = vote(lab, settings, w, choice, current, note, request)
            previous = out.pop("previous", None)
            if previous is None:
                return out  # refused or repeated: the pair stays
            # The vote counted: its reveal stays readable, and the next pair is served at once.
            following = serve_next(lab, settings, w, request, "Vote recorded.")
            return {**out, **following,
                    w["reveal"]: f'<p class="previous-pair">{e(previous)}</p>{out[w["reveal"]]}'}
        return on_vote

    outputs = shown + [w["reveal"], w["note"], w["download"]]
    for choice in VOTE_BUTTONS:
        w[f"vote:{choice}"].click(vote_handler(choice), [w["current"], w["note"]], outputs, trigger_mode="once",
                                  **private)
    w["next"].click(on_skip, None, shown, **private)
    return w, on_load, shown
