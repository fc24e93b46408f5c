"""CSV export of pairs and votes (pandas), safe to open in a spreadsheet."""
import os
import tempfile
from pathlib import Path

import pandas as pd

from .store import METRICS

PAIR_COLUMNS = ["pair_id", "pairing", "seed", "prompt", "model", "config_a", "config_b", *METRICS,
                "image_a", "image_b", "lockstep", "seconds", "created"]
VOTE_COLUMNS = ["vote_id", "pair_id", "pairing", "winner", "left_config", "session", "note", "created",
                "config_a", "config_b"]
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def escape_cell(value):
    """Prefix text a spreadsheet would run as a formula with a quote (OWASP CSV injection)."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
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


def votes_frame(votes):
    """ResultsStore.votes() rows as the votes.csv table."""
    return _frame(votes, VOTE_COLUMNS)


def write_csv(frame, path):
    """Write through a unique temporary file and a rename: readers and concurrent writers never see half."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".partial")
    os.close(fd)
    frame.to_csv(tmp, index=False)
    os.replace(tmp, path)
    return path


def export_csv(store, out_dir, pairs=None, votes=None):
    """Write pairs.csv and votes.csv into out_dir (rows read from the store unless given); their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pairs = store.pairs() if pairs is None else pairs
    votes = store.votes() if votes is None else votes
    return [write_csv(pairs_frame(pairs), out_dir / "pairs.csv"), write_csv(votes_frame(votes), out_dir / "votes.csv")]
