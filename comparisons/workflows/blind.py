"""Blind A/B pairs for voters: sides randomized and hidden, configs revealed only after the vote."""
import hashlib
import json
import secrets

from ..core.config import arm_from_json
from ..core.image_files import open_as_compared
from ..core.visibility import visibility
from ..errors import ConfigError, VoteRefused

CHOICES = ("left", "right", "tie", "both_bad")


def other(side):
    """The config not on this side: 'A' <-> 'B'."""
    return "B" if side == "A" else "A"


def new_pair(lab, prompt, seed, cfg_a, cfg_b, pairing, session, model="embedded", progress=None):
    """Run, store and serve a pair to `session` with a fresh random side assignment; the blind view.

    `serve_id` in the result is the serving's unguessable id: only this session can vote with it; `pair_id` is
    the stored pair (never sent to a voter before the vote).
    """
    shown_left = "A" if secrets.randbelow(2) == 0 else "B"
    out = lab.compare(prompt, seed, cfg_a, cfg_b, pairing=pairing, model=model, progress=progress,
                      shown_left=shown_left)
    arms = {"A": out["run"].a, "B": out["run"].b}
    left, right = arms[shown_left].image, arms[other(shown_left)].image
    return {
        "serve_id": lab.store.serve(out["pair_id"], session, shown_left),
        "pair_id": out["pair_id"],
        "left": left,
        "right": right,
        "metrics": out["metrics"],
        "visibility": visibility(left, right, out["metrics"]["lpips"], flip=out["maps"]["flip"]),
        "maps": out["maps"],
        "arms": arms,  # for the schedule view, labelled A and B only
    }


def balanced_side(campaign, pair_id, n_served):
    """The side A is shown on at a pair's next serving: its first side is drawn at random per pair (seeded by the
    campaign and pair ids, so unknown to a voter), then the sides alternate, so 2n servings put A left n times."""
    first = "A" if hashlib.sha256(f"{campaign}\0{pair_id}".encode()).digest()[0] & 1 else "B"
    return first if n_served % 2 == 0 else other(first)


def next_campaign_pair(lab, campaign, session):
    """Serve `session` the next pair of `campaign` (fewest votes first, never one it has seen), its sides
    balanced per pair (balanced_side); the blind view (images as shown, metrics, visibility), or None when this
    session has seen every pair."""
    served = lab.store.serve_next(campaign, session, lambda pair_id, n: balanced_side(campaign, pair_id, n))
    if served is None:
        return None
    serve_id, pair_id, shown_left = served
    pair = lab.store.pair(pair_id)
    root = lab.store.path.parent
    # Transparency as inspect and the campaign's metrics saw it (over white); study images have none.
    arms = {side: open_as_compared(root / pair[f"image_{side.lower()}"]) for side in ("A", "B")}
    left, right = arms[shown_left], arms[other(shown_left)]
    metrics = {k: pair[k] for k in ("lpips", "psnr", "ssim", "max_abs_diff")}
    metrics["psnr"] = float("inf") if metrics["psnr"] is None else metrics["psnr"]
    seen = visibility(left, right, pair["lpips"], flip=pair["flip_max"])
    if pair["flip_max"] is None:  # a pair stored before FLIP (an old bundle): measured once, kept for next time
        lab.store.set_flip({pair_id: seen["flip_max"]})
    return {"serve_id": serve_id, "pair_id": pair_id, "left": left, "right": right, "metrics": metrics,
            "visibility": seen}


def winner_of(choice, shown_left):
    """A voter's left/right/tie/both_bad -> the stored winner A/B/tie/both_bad."""
    if choice not in CHOICES:
        raise ConfigError(f"choice must be one of {', '.join(CHOICES)} (got {choice!r})")
    if choice == "left":
        return shown_left
    if choice == "right":
        return other(shown_left)
    return choice


def cast_vote(store, serve_id, choice, session, note=""):
    """Record a blind vote on a pair served to `session`; returns the vote and the reveal.

    Refused, with nothing written, for a pair this session was not served (whoever made it) and for a
    second vote on the same pair.
    """
    served = store.served(str(serve_id or ""))
    if served is None or served["session"] != session:
        raise VoteRefused("this pair was not served to you; vote on the pairs this page shows you")
    pair = store.pair(served["pair_id"])
    winner = winner_of(choice, served["shown_left"])
    vote = store.record_vote(pair["pair_id"], winner, served["shown_left"], session, note,
                             campaign=served.get("campaign"))
    shown = {**pair, "shown_left": served["shown_left"]}
    return {**vote, "serve_id": serve_id, "choice": choice, "reveal": reveal(shown)}


def reveal(pair):
    """Which config was on which side, and the full configs; for a pair of image files also what each file says
    about itself (`images`: never sent before the vote, it would tell the sides apart)."""
    left = pair["shown_left"]
    out = {"pairing": pair["pairing"], "left": left, "right": other(left),
           "config_a": arm_from_json(pair["config_a"]).to_dict(), "config_b": arm_from_json(pair["config_b"]).to_dict()}
    if pair.get("image_meta"):
        out["images"] = json.loads(pair["image_meta"])
    return out
