"""CSV export of pairs and votes (pandas), safe to open in a spreadsheet; one stored pair as a zip."""
import hashlib
import json
import math
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

FORMULA_START = ("=", "+", "-", "@")
CONFIG_FIELDS = [f.name for f in fields(SamplerConfig)]
# A pair of image files made elsewhere: each side's label, file, what its metadata is and says (JSON), its sampling
# passes in execution order (JSON, as core.image_meta lists them; empty where it lists none), and the manifest's own
# columns; empty for pairs this tool sampled.
IMAGE_COLUMNS = ["a_label", "b_label", "a_file", "b_file", "a_metadata_format", "b_metadata_format", "a_metadata",
                 "b_metadata", "a_passes", "b_passes", "manifest_columns"]
# What the two sides ran, one column per setting over both kinds of pair: a sampled pair's from its configs (and
# the pair's model), a pair of image files' from what the files state (core.image_meta's fields, which sum up every
# sampling pass). A value A and B share, 'a / b' where they differ, '' where neither states it (a campaign vote's
# sampler and steps are its cell's where the cell names them).
RESOLVED_COLUMNS = ["model", "sampler", "scheduler", "steps", "cfg", "guidance", "denoise", "size"]
_CONFIG_FIELD = {"sampler": "sampler", "scheduler": "schedule", "steps": "steps", "cfg": "guidance_scale"}
# The schedule each arm's sampler ran (after the discretization mode, final zero and sigma_min rules): a JSON list
# of floats written as repr writes them (they read back exactly); empty for a pair of image files unless its
# metadata states them.
SIGMA_COLUMNS = ["sigmas_a", "sigmas_b"]

PAIR_COLUMNS = ["pair_id", "pairing", "seed", "prompt", *RESOLVED_COLUMNS, "config_a", "config_b", *METRICS,
                "image_a", "image_b", *SIGMA_COLUMNS, "lockstep", "seconds", "created"]
# A campaign vote's question, sampler and steps are its cell's; the resolved settings follow them.
VOTE_COLUMNS = ["vote_id", "pair_id", "pairing", "winner", "left_config", "session", "note", "created",
                "config_a", "config_b", "campaign", "question", "sampler", "steps", "model",
                *[c for c in RESOLVED_COLUMNS if c not in ("sampler", "steps", "model")], "prompt", "seed",
                "lpips", "flip_max", "max_abs_diff", "visible", "attention_check", *SIGMA_COLUMNS]

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
    return frame


def _meta(text):
    """A row's stored image_meta as a dict (given as JSON text or already read); None for a pair this tool sampled
    (or text that is no JSON object)."""
    if isinstance(text, dict):
        return text
    if not isinstance(text, str) or not text:
        return None
    try:
        meta = json.loads(text)
    except ValueError:
        return None
    return meta if isinstance(meta, dict) else None


def _side(meta, side):
    """One side ('A' or 'B') of an image pair's stored metadata: {file, format, fields, passes, raw, note}."""
    value = meta.get(side) if meta else None
    return value if isinstance(value, dict) else {}


# Metadata read before core.image_meta summed up a multi-pass graph named each sampler node's fields by the node.
_PER_NODE = re.compile(r"#\S+ (.+)")


def stated_fields(meta, side):
    """What one side ('A' or 'B') of an image pair's stored metadata states, one value per field (flat_fields)."""
    return flat_fields(_side(meta, side).get("fields"))


def flat_fields(fields):
    """A file's fields (core.image_meta's), one value per field. Metadata read before the fields summed up every
    sampling pass named them by node ('#10 steps', '#12 steps'): a field every node states alike is folded into one
    value; one the nodes state differently is left out (which node made the image was not recorded)."""
    if not isinstance(fields, dict):
        return {}
    flat, per_node = {}, {}
    for key, value in fields.items():
        match = _PER_NODE.fullmatch(str(key))
        if match:
            per_node.setdefault(match.group(1), []).append(value)
        else:
            flat[key] = value
    for key, values in per_node.items():
        if key not in flat and all(v == values[0] for v in values):
            flat[key] = values[0]
    return flat


def with_configs(frame, image_meta=None):
    """One column per config field of A and of B (a_steps, b_quantize, ...) beside the JSON ones, then the
    IMAGE_COLUMNS of pairs of image files (`image_meta`: each row's stored JSON, or it read, or None). Not yet
    escaped."""
    for side in ("a", "b"):
        texts = frame[f"config_{side}"]
        read = {text: arm_from_json(text) for text in set(texts)}  # a few configs, many rows
        arms = [read[text] for text in texts]
        for f in CONFIG_FIELDS:
            frame[f"{side}_{f}"] = [getattr(arm, f) if isinstance(arm, SamplerConfig) else "" for arm in arms]
        frame[f"{side}_label"] = ["" if isinstance(arm, SamplerConfig) else arm.label for arm in arms]
    metas = [_meta(m) for m in (image_meta or [None] * len(frame))]
    for side in ("A", "B"):
        low = side.lower()
        sides = [_side(m, side) if m else None for m in metas]
        frame[f"{low}_file"] = ["" if s is None else str(s.get("file", "")) for s in sides]
        frame[f"{low}_metadata_format"] = ["" if s is None else str(s.get("format", "")) for s in sides]
        frame[f"{low}_metadata"] = ["" if s is None else json.dumps(s.get("fields") or s.get("raw") or {},
                                                                    sort_keys=True) for s in sides]
        frame[f"{low}_passes"] = [json.dumps(s["passes"], sort_keys=True)
                                  if s and isinstance(s.get("passes"), list) and s["passes"] else "" for s in sides]
    frame["manifest_columns"] = [json.dumps(m["columns"], sort_keys=True) if m and m.get("columns") else ""
                                 for m in metas]
    if "seed" in frame:  # a pair of files that state no seed (or two different ones)
        frame["seed"] = ["" if s == NO_SEED else s for s in frame["seed"]]
    return frame


def _resolved(frame, metas, cell=None):
    """RESOLVED_COLUMNS and SIGMA_COLUMNS filled in (in place). A pair of image files: what its files state (its
    stored model where they state none); a sampled pair: its cell's sampler and steps (`cell`: {field: values}, NaN
    where a vote has no cell), else its configs'. Sigmas: the stored schedules, else what the files state."""
    stated_by = [None if m is None else (stated_fields(m, "A"), stated_fields(m, "B")) for m in metas]
    for field in RESOLVED_COLUMNS:
        if field == "model":
            own = list(frame["model"])
        elif field in _CONFIG_FIELD:
            name = _CONFIG_FIELD[field]
            own = [both(a, b) for a, b in zip(frame[f"a_{name}"], frame[f"b_{name}"])]
        else:
            own = [""] * len(frame)
        if cell is not None and field in cell:
            own = [o if pd.isna(c) else c for o, c in zip(own, cell[field])]
        stated = [None if s is None else _both_stated(*s, field) for s in stated_by]
        frame[field] = [o if s is None or (s == "" and field == "model") else s for o, s in zip(own, stated)]
    for column, side in zip(SIGMA_COLUMNS, ("A", "B")):
        stored = frame[column] if column in frame else [None] * len(frame)
        frame[column] = [_sigmas(text, s[side == "B"].get("sigmas") if s else None)
                         for text, s in zip(stored, stated_by)]
    return frame


def _sigmas(stored, stated=None):
    """A schedule as a JSON list of floats (repr, so each reads back exactly): the stored one, else the one a file
    states; '' where neither is a non-empty list of finite numbers."""
    for value in (stored, stated):
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                continue
        if isinstance(value, list) and value and all(
                isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in value):
            return json.dumps([float(x) for x in value])
    return ""


def pairs_frame(pairs):
    """ResultsStore.pairs() rows as the pairs.csv table: the resolved settings, one column per config field of A and
    of B, the image files' metadata and each arm's sigmas; every text column escaped for spreadsheets."""
    metas = [_meta(p.get("image_meta")) for p in pairs]
    frame = with_configs(_frame(pairs, PAIR_COLUMNS), metas)
    return escaped(_resolved(frame, metas))


def both(a, b):
    """A value A and B share, or 'a / b' where they differ."""
    return a if a == b else f"{a} / {b}"


def votes_frame(votes, salt=None, notes=True):
    """ResultsStore.votes() rows as the votes.csv table, every row complete (pair, model, prompt, seed, the resolved
    settings, both configs field by field, the side shown left, the winner, LPIPS and the visibility verdict, each
    arm's sigmas, the session, the time); with `salt`, session ids as salted hashes. Every text column is escaped
    for spreadsheets, the ones filled from the files' metadata included."""
    votes = [{**v, "visible": "" if v.get("flip_max") is None else
              ("below" if is_below(v["flip_max"]) else "visible"),
              "attention_check": bool(v.get("is_check"))} for v in votes]
    metas = [_meta(v.get("image_meta")) for v in votes]
    frame = _frame(votes, VOTE_COLUMNS)
    # A campaign vote's sampler and steps are its cell's (NaN for Compare and sweep votes, which belong to no cell).
    cell = {field: list(frame[field]) for field in ("sampler", "steps")}
    frame = _resolved(with_configs(frame, metas), metas, cell)
    if salt is not None:
        frame["session"] = [hashlib.sha256(f"{salt}:{s}".encode()).hexdigest()[:16] for s in frame["session"]]
    return escaped(frame if notes else frame.drop(columns=["note"]))


def stated_setting(image_meta, field):
    """What a pair of image files states for `field` (A's, 'a / b' where they differ, '' where neither does), or
    None for a pair this tool sampled."""
    meta = _meta(image_meta)
    return None if meta is None else _both_stated(stated_fields(meta, "A"), stated_fields(meta, "B"), field)


def _both_stated(fields_a, fields_b, field):
    a, b = fields_a.get(field), fields_b.get(field)
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
