"""CSV export of pairs and votes (pandas), safe to open in a spreadsheet."""
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


def pairs_frame(store):
    return _frame(store.pairs(), PAIR_COLUMNS)


def votes_frame(store):
    return _frame(store.votes(), VOTE_COLUMNS)


def export_csv(store, out_dir):
    """Write pairs.csv and votes.csv into out_dir (each atomically); returns their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, frame in (("pairs.csv", pairs_frame(store)), ("votes.csv", votes_frame(store))):
        path, tmp = out_dir / name, out_dir / (name + ".partial")
        frame.to_csv(tmp, index=False)
        tmp.replace(path)
        paths.append(path)
    return paths
