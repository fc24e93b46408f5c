"""CSV export of pairs and votes (pandas), safe to open in a spreadsheet."""
import hashlib
import os
import tempfile
from pathlib import Path

import pandas as pd

from .store import METRICS

PAIR_COLUMNS = ["pair_id", "pairing", "seed", "prompt", "model", "config_a", "config_b", *METRICS,
                "image_a", "image_b", "lockstep", "seconds", "created"]
VOTE_COLUMNS = ["vote_id", "pair_id", "pairing", "winner", "left_config", "session", "note", "created",
                "config_a", "config_b"]
FORMULA_START = ("=", "+", "-", "@")


def escape_cell(value):
    """Prefix text a spreadsheet would run as a formula with a quote (OWASP CSV injection): its first
    non-blank character is = + - @, or it starts with a tab or carriage return."""
    if isinstance(value, str) and (value.startswith(("\t", "\r")) or value.lstrip().startswith(FORMULA_START)):
        return "'" + value
    return value


def _frame(rows, columns):
    frame = pd.DataFrame(rows, columns=columns)
    frame["created"] = pd.to_datetime(frame["created"], unit="s", utc=True).dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    for col in frame.columns:
        if frame[col].dtype == object or pd.api.types.is_string_dtype(frame[col]):
            frame[col] = frame[col].map(escape_cell)
    return frame


def pairs_frame(pairs):
    """ResultsStore.pairs() rows as the pairs.csv table."""
    return _frame(pairs, PAIR_COLUMNS)


def votes_frame(votes, salt=None, notes=True):
    """ResultsStore.votes() rows as the votes.csv table; with `salt`, session ids as salted hashes."""
    frame = _frame(votes, VOTE_COLUMNS)
    if salt is not None:
        frame["session"] = [hashlib.sha256(f"{salt}:{s}".encode()).hexdigest()[:16] for s in frame["session"]]
    return frame if notes else frame.drop(columns=["note"])


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
    temps = {}
    try:
        for name, frame in frames.items():
            fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=name, suffix=".partial")
            os.close(fd)
            temps[name] = tmp
            frame.to_csv(tmp, index=False)
            os.chmod(tmp, 0o644)
        for name, tmp in temps.items():
            os.replace(tmp, out_dir / name)
    finally:
        for tmp in temps.values():
            if os.path.exists(tmp):
                os.unlink(tmp)
    return [out_dir / name for name in frames]
