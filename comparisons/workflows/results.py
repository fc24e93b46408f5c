"""The Results tab's numbers for a store, computed once per state of the store: statistics per question, the
leaderboard and the campaign tables from vote counts (ResultsStore.vote_tally: SQL GROUP BY, so a refresh costs
what the questions cost, not what the votes do), the charts separately so the tables need not wait for them;
both reused until a vote, a pair or a campaign is added."""
import threading

from ..analysis.charts import comparison_groups, lpips_figure, win_rate_figure
from ..analysis.leaderboard import leaderboard_tally
from ..analysis.stats import by_question_tally
from .report import campaigns_frame

_cache, _lock = {}, threading.Lock()  # (results file, what) -> (store version, value)


def _cached(store, what, compute):
    version, key = store.version(), (str(store.path), what)
    with _lock:
        hit = _cache.get(key)
    if hit and hit[0] == version:
        return hit[1]
    value = compute()
    with _lock:
        _cache[key] = (version, value)
    return value


def results(store):
    """{'rows': by_question rows, 'board': leaderboard rows, 'campaigns': frame}."""
    def compute():
        counts = store.vote_tally()
        return {"rows": by_question_tally(counts), "board": leaderboard_tally(counts),
                "campaigns": campaigns_frame(store)}
    return _cached(store, "tables", compute)


def charts(store):
    """{'win_rate_png', 'lpips_png'}: A's win rate per question and LPIPS(A, B) per comparison (pairing, config A,
    config B; a study's pairs apart), as PNG bytes."""
    return _cached(store, "charts", lambda: {"win_rate_png": win_rate_figure(results(store)["rows"]),
                                             "lpips_png": lpips_figure(comparison_groups(store.lpips_pairs()))})
