"""The Results tab's numbers for a store, computed once per state of the store: statistics per question, the
leaderboard, the charts and the campaign tables are reused until a vote, a pair or a campaign is added."""
import threading

from ..analysis.charts import lpips_figure, win_rate_figure
from ..analysis.leaderboard import leaderboard
from ..analysis.stats import by_question
from .report import campaigns_frame

_cache, _lock = {}, threading.Lock()  # results file -> (store version, numbers)


def results(store):
    """{'rows': by_question rows, 'board': leaderboard rows, 'win_rate_png', 'lpips_png', 'campaigns': frame}."""
    version = store.version()
    with _lock:
        hit = _cache.get(str(store.path))
    if hit and hit[0] == version:
        return hit[1]
    votes = store.votes()
    rows = by_question(votes)
    numbers = {"rows": rows, "board": leaderboard(votes), "win_rate_png": win_rate_figure(rows),
               "lpips_png": lpips_figure(store.pairs()), "campaigns": campaigns_frame(store)}
    with _lock:
        _cache[str(store.path)] = (version, numbers)
    return numbers
