"""Blind A/B pairs for voters: sides randomized and hidden, configs revealed only after the vote."""
import hashlib
import hmac
import io
import json
import re
import secrets
import threading

from ..core.config import arm_from_json
from ..core.image_files import open_as_compared
from ..core.visibility import visibility
from ..errors import ConfigError, VoteRefused
from ..files import replacing

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


def _keyed(store, *parts):
    """A hex HMAC of `parts` under the results file's own random salt (ResultsStore.salt): stable across restarts,
    unknowable without the file."""
    key = _SALTS.get(str(store.path))
    if key is None:
        key = _SALTS[str(store.path)] = store.salt().encode()
    return hmac.new(key, "\0".join(parts).encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()[:32]


_SALTS = {}


def address_key(store, address):
    """What a vote keeps of its voter's address: a salted hash (one address, one key; the address is not stored)."""
    return "a" + _keyed(store, "address", str(address))


def session_key(store, address, session_hash):
    """The session a hosted visitor's servings and votes are kept under: made by the server from the address and
    Gradio's session hash (which the client picks), so a visitor cannot name another's session, nor one from
    another address."""
    return "s" + _keyed(store, "session", str(address), str(session_hash or ""))


class PairImages:
    """A campaign's images served by URL instead of inside every answer: `url(pair, arm)` is
    /pair-image/v1/TOKEN.png, TOKEN a keyed hash of the stored file (content-addressed: named by its SHA-256) and
    the arm, so the two sides of an attention check (one file twice) have two URLs. A token's file is the image as
    displayed and measured (open_as_compared: transparency over white), written once as a PNG without metadata
    (nothing tells the sides apart) under `display/` beside the store: its bytes never change, so it may be cached
    for a year. Visibility lines are computed once per pair and kept (a few numbers each)."""

    PREFIX = "/pair-image/v1/"
    TOKEN = re.compile(r"[0-9a-f]{32}")

    def __init__(self, store, campaign):
        self.store, self.campaign = store, campaign
        self.folder = store.path.parent / "display"
        self._files, self._visibility, self._sizes, self._lock = {}, {}, {}, threading.Lock()
        for p in store.campaign_pairs(campaign):
            for arm in ("A", "B"):
                self._files[self.token(p[f"image_{arm.lower()}"], arm)] = p[f"image_{arm.lower()}"]

    def token(self, rel, arm):
        return _keyed(self.store, "image", rel, arm)

    def url(self, pair, arm):
        return f"{self.PREFIX}{self.token(pair[f'image_{arm.lower()}'], arm)}.png"

    def path(self, token):
        """The display file of `token` (written on first use), or None for a token this campaign never made."""
        rel = self._files.get(token) if self.TOKEN.fullmatch(token or "") else None
        if rel is None:
            return None
        stem = rel.rsplit("/", 1)[-1].split(".")[0]
        name = stem if re.fullmatch(r"[0-9a-f]{64}", stem) else hashlib.sha256(rel.encode()).hexdigest()
        target = self.folder / name[:2] / f"{name}.png"
        if not target.exists():
            with self._lock:
                if not target.exists():
                    buf = io.BytesIO()
                    open_as_compared(self.store.path.parent / rel).save(buf, format="PNG")
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with replacing(target, mode=None) as (tmp,):
                        tmp.write_bytes(buf.getvalue())
        return target

    def visibility(self, pair):
        """The pair's visibility line (symmetric in its two images), measured at its first serving and kept."""
        seen = self._visibility.get(pair["pair_id"])
        if seen is None:
            root = self.store.path.parent
            a, b = (open_as_compared(root / pair[k]) for k in ("image_a", "image_b"))
            self._sizes[pair["pair_id"]] = a.size
            seen = self._visibility[pair["pair_id"]] = visibility(a, b, pair["lpips"], flip=pair["flip_max"])
            if pair["flip_max"] is None:
                self.store.set_flip({pair["pair_id"]: seen["flip_max"]})
        return seen

    def size(self, pair):
        """(width, height) of the pair's images as displayed."""
        if pair["pair_id"] not in self._sizes:
            self.visibility(pair)
        return self._sizes[pair["pair_id"]]


def next_campaign_pair(lab, campaign, session, address=None, images=None):
    """Serve `session` the next pair of `campaign` (fewest votes first, never one it has seen, nor with `address`
    one that address voted on), its sides balanced per pair (balanced_side); the blind view (metrics, visibility and
    the images as shown: PIL images `left`/`right`, or with `images` (PairImages) only their URLs `left_url` /
    `right_url`, nothing opened after a pair's first serving), or None when this session has seen every pair."""
    served = lab.store.serve_next(campaign, session, lambda pair_id, n: balanced_side(campaign, pair_id, n),
                                  address=address)
    if served is None:
        return None
    serve_id, pair_id, shown_left = served
    pair = lab.store.pair(pair_id)
    metrics = {k: pair[k] for k in ("lpips", "psnr", "ssim", "max_abs_diff")}
    metrics["psnr"] = float("inf") if metrics["psnr"] is None else metrics["psnr"]
    out = {"serve_id": serve_id, "pair_id": pair_id, "metrics": metrics}
    if images is not None:
        return {**out, "left_url": images.url(pair, shown_left), "right_url": images.url(pair, other(shown_left)),
                "visibility": images.visibility(pair), "size": images.size(pair)}
    root = lab.store.path.parent
    # Transparency as inspect and the campaign's metrics saw it (over white); study images have none.
    arms = {side: open_as_compared(root / pair[f"image_{side.lower()}"]) for side in ("A", "B")}
    left, right = arms[shown_left], arms[other(shown_left)]
    seen = visibility(left, right, pair["lpips"], flip=pair["flip_max"])
    if pair["flip_max"] is None:  # a pair stored before FLIP (an old bundle): measured once, kept for next time
        lab.store.set_flip({pair_id: seen["flip_max"]})
    return {**out, "left": left, "right": right, "visibility": seen}


def winner_of(choice, shown_left):
    """A voter's left/right/tie/both_bad -> the stored winner A/B/tie/both_bad."""
    if choice not in CHOICES:
        raise ConfigError(f"choice must be one of {', '.join(CHOICES)} (got {choice!r})")
    if choice == "left":
        return shown_left
    if choice == "right":
        return other(shown_left)
    return choice


def cast_vote(store, serve_id, choice, session, note="", address=None, max_per_address=None, blind=False):
    """Record a blind vote on a pair served to `session`; returns the vote and the reveal.

    Refused, with nothing written, for a pair this session was not served (whoever made it) and for a
    second vote on the same pair; with `address` (a hosted campaign) also for a second vote on the pair from that
    address and beyond `max_per_address` votes (ResultsStore.record_vote). `blind` (a hosted campaign): the answer
    and its reveal say which two configs the pair compared, never which side showed which (labels_reveal), so no
    later serving of the pair can be recognised as A or B.
    """
    served = store.served(str(serve_id or ""))
    if served is None or served["session"] != session:
        raise VoteRefused("this pair was not served to you; vote on the pairs this page shows you")
    pair = store.pair(served["pair_id"])
    winner = winner_of(choice, served["shown_left"])
    vote = store.record_vote(pair["pair_id"], winner, served["shown_left"], session, note,
                             campaign=served.get("campaign"), address=address, max_per_address=max_per_address)
    if blind:
        return {**{k: vote[k] for k in ("vote_id", "pair_id", "note", "campaign")}, "serve_id": serve_id,
                "choice": choice, "reveal": labels_reveal(pair)}
    shown = {**pair, "shown_left": served["shown_left"]}
    return {**vote, "serve_id": serve_id, "choice": choice, "reveal": reveal(shown)}


def labels_reveal(pair):
    """What a hosted campaign reveals after a vote: the question and the two configs (labels) the pair compared,
    and for image files what each says about itself, by arm; not which side showed which."""
    out = {"pairing": pair["pairing"], "config_a": arm_from_json(pair["config_a"]).to_dict(),
           "config_b": arm_from_json(pair["config_b"]).to_dict()}
    if pair.get("image_meta"):
        out["images"] = json.loads(pair["image_meta"])
    return out


def reveal(pair):
    """Which config was on which side, and the full configs; for a pair of image files also what each file says
    about itself (`images`: never sent before the vote, it would tell the sides apart)."""
    left = pair["shown_left"]
    out = {"pairing": pair["pairing"], "left": left, "right": other(left),
           "config_a": arm_from_json(pair["config_a"]).to_dict(), "config_b": arm_from_json(pair["config_b"]).to_dict()}
    if pair.get("image_meta"):
        out["images"] = json.loads(pair["image_meta"])
    return out
