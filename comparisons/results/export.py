"""CSV export of pairs and votes (pandas), safe to open in a spreadsheet; one stored pair as a zip."""
import hashlib
import json
import re
import time
import zipfile
from dataclasses import fields
from pathlib import Path

import pandas as pd

from ..core.config import NO_SEED, SamplerConfig, arm_from_json
from ..core.visibility import is_below
from ..files import replacing
from .store import METRICS

PAIR_COLUMNS = ["pair_id", "pairing", "seed", "prompt", "model", "config_a", "config_b", *METRICS,
                "image_a", "image_b", "lockstep", "seconds", "created"]
VOTE_COLUMNS = ["vote_id", "pair_id", "pairing", "winner", "left_config", "session", "note", "created",
                "config_a", "config_b", "campaign", "question", "sampler", "steps", "model", "prompt", "seed",
                "lpips", "flip_max", "max_abs_diff", "visible", "attention_check"]
FORMULA_START = ("=", "+", "-", "@")
CONFIG_FIELDS = [f.name for f in fields(SamplerConfig)]
# A pair of image files made elsewhere: each side's label, file, what its metadata is and says (JSON), and the
# manifest's own columns; empty for pairs this tool sampled.
IMAGE_COLUMNS = ["a_label", "b_label", "a_file", "b_file", "a_metadata_format", "b_metadata_format", "a_metadata",
                 "b_metadata", "manifest_columns"]


# Every line break a spreadsheet or a CSV reader might honour. Each becomes "\n", which the CSV writer quotes,
# so no cell's text can end a row and start the next one with a formula of its own.
LINE_BREAKS = re.compile("\r\n|[\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")


def escape_cell(value):
    """Text made safe for a spreadsheet: line breaks normalised to \\n (quoted by the writer), and a quote before
    text it would run as a formula (OWASP CSV injection): its first non-blank character is = + - @, or it
    starts with a tab or a line break."""
    if not isinstance(value, str):
        return value
    value = LINE_BREAKS.sub("\n", value)
    if value.startswith(("\t", "\n")) or value.lstrip().startswith(FORMULA_START):
        return "'" + value
    return value


def escaped(frame):
    """Every text column of `frame` through escape_cell (in place); the frame."""
    for col in frame.columns:
        if frame[col].dtype == object or pd.api.types.is_string_dtype(frame[col]):
            frame[col] = frame[col].map(escape_cell)
    return frame


def csv_text(rows, columns):
    """Rows (dicts) as CSV text with those columns, escaped for spreadsheets."""
    return escaped(pd.DataFrame(rows, columns=columns)).to_csv(index=False)


def _frame(rows, columns):
    frame = pd.DataFrame(rows, columns=columns)
    frame["created"] = pd.to_datetime(frame["created"], unit="s", utc=True).dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    return escaped(frame)


def with_configs(frame, image_meta=None):
    """One column per config field of A and of B (a_steps, b_quantize, ...) beside the JSON ones, then the
    IMAGE_COLUMNS of pairs of image files (`image_meta`: each row's stored JSON or None)."""
    for side in ("a", "b"):
        arms = [arm_from_json(c) for c in frame[f"config_{side}"]]
        for f in CONFIG_FIELDS:
            frame[f"{side}_{f}"] = [getattr(arm, f) if isinstance(arm, SamplerConfig) else "" for arm in arms]
        frame[f"{side}_label"] = ["" if isinstance(arm, SamplerConfig) else arm.label for arm in arms]
    metas = [json.loads(m) if isinstance(m, str) else None for m in (image_meta or [None] * len(frame))]
    for side in ("A", "B"):
        low = side.lower()
        frame[f"{low}_file"] = [m[side]["file"] if m else "" for m in metas]
        frame[f"{low}_metadata_format"] = [m[side]["format"] if m else "" for m in metas]
        frame[f"{low}_metadata"] = [json.dumps(m[side]["fields"] or m[side]["raw"], sort_keys=True) if m else ""
                                    for m in metas]
    frame["manifest_columns"] = [json.dumps(m["columns"], sort_keys=True) if m and m["columns"] else ""
                                 for m in metas]
    if "seed" in frame:  # a pair of files that state no seed (or two different ones)
        frame["seed"] = ["" if s == NO_SEED else s for s in frame["seed"]]
    return escaped(frame)


def pairs_frame(pairs):
    """ResultsStore.pairs() rows as the pairs.csv table, with one column per config field of A and of B."""
    return with_configs(_frame(pairs, PAIR_COLUMNS), [p.get("image_meta") for p in pairs])


def both(a, b):
    """A value A and B share, or 'a / b' where they differ."""
    return a if a == b else f"{a} / {b}"


def votes_frame(votes, salt=None, notes=True):
    """ResultsStore.votes() rows as the votes.csv table, every row complete (pair, model, prompt, seed, both
    configs field by field, the side shown left, the winner, LPIPS and the visibility verdict, the session, the
    time); with `salt`, session ids as salted hashes."""
    votes = [{**v, "visible": "" if v.get("flip_max") is None else
              ("below" if is_below(v["flip_max"]) else "visible"),
              "attention_check": bool(v.get("is_check"))} for v in votes]
    frame = with_configs(_frame(votes, VOTE_COLUMNS), [v.get("image_meta") for v in votes])
    # Compare and sweep votes belong to no campaign cell: their sampler and steps come from the configs; a pair of
    # image files states its own (or nothing) in its metadata.
    for field in ("sampler", "steps"):
        own = [both(a, b) for a, b in zip(frame[f"a_{field}"], frame[f"b_{field}"])]
        frame[field] = [o if pd.isna(c) else c for c, o in zip(frame[field], own)]
        stated = [stated_setting(v.get("image_meta"), field) for v in votes]
        frame[field] = [c if s is None else s for c, s in zip(frame[field], stated)]
    if salt is not None:
        frame["session"] = [hashlib.sha256(f"{salt}:{s}".encode()).hexdigest()[:16] for s in frame["session"]]
    return frame if notes else frame.drop(columns=["note"])


def stated_setting(image_meta, field):
    """What a pair of image files states for `field` (A's, 'a / b' where they differ, '' where neither does), or
    None for a pair this tool sampled."""
    if not image_meta:
        return None
    meta = json.loads(image_meta)
    a, b = (meta[side]["fields"].get(field) for side in ("A", "B"))
    return "" if a is None and b is None else both("" if a is None else a, "" if b is None else b)


def export_csv(store, out_dir, pairs=None, votes=None, salt=None, notes=True):
    """Write pairs.csv and votes.csv into out_dir, both or neither (rows read from the store unless given).

    Each is written to a temporary file first and renamed into place only once both are complete;
    nothing named *.partial is left behind, and the files are readable by all (0644).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pairs = store.pairs() if pairs is None else pairs
    votes = store.votes() if votes is None else votes
    frames = {"pairs.csv": pairs_frame(pairs), "votes.csv": votes_frame(votes, salt, notes)}
    paths = [out_dir / name for name in frames]
    with replacing(*paths) as temps:
        for frame, tmp in zip(frames.values(), temps):
            frame.to_csv(tmp, index=False)
    return paths


def pair_zip(store, pair_id, out_dir, keep_s=None):
    """One stored pair as a zip: A.png and B.png exactly as stored (with their metadata) and pair.json
    (configs, prompt, seed, model, metrics). Written atomically; returns its path. With `keep_s`, older
    pair zips in out_dir are deleted first (a long-running app writes one per vote)."""
    pair = store.pair(pair_id)
    if pair is None:
        raise KeyError(f"no stored pair {pair_id!r}")
    root = store.path.parent
    info = {k: pair[k] for k in ("pair_id", "pairing", "model", "prompt", "seed", *METRICS)}
    info.update(config_a=json.loads(pair["config_a"]), config_b=json.loads(pair["config_b"]))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if keep_s is not None:
        cutoff = time.time() - keep_s
        for old in out_dir.glob("pair-*.zip"):
            if old.stat().st_mtime < cutoff:
                old.unlink(missing_ok=True)
    path = out_dir / f"pair-{pair_id[:12]}.zip"
    with replacing(path) as (tmp,), zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
        z.write(root / pair["image_a"], "A.png")
        z.write(root / pair["image_b"], "B.png")
        z.writestr("pair.json", json.dumps(info, indent=1, default=str))
    return path
