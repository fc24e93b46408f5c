"""Bradley–Terry strengths of configs from pairwise votes (Bradley & Terry 1952; MM fit of Hunter 2004)."""
import math

from ..core.config import ImageArm, SamplerConfig, arm_from_json
from .stats import Z95, tally

ELO_SCALE = 400 / math.log(10)  # arenas report log-strengths on the Elo scale: 400 log10(p) points


def matches(counts):
    """stats.tally() counts -> [(winner, loser, weight)] over config JSON, one entry per ordered pair of configs
    (weights summed); a tie is half a win each way, both-bad is left out."""
    out = {}
    for (_, a, b, _, winner, _), n in counts.items():
        if a == b:
            continue  # a config against itself says nothing about its strength
        games = {"A": [(a, b, 1.0)], "B": [(b, a, 1.0)], "tie": [(a, b, 0.5), (b, a, 0.5)]}.get(winner, [])
        for w, lo, weight in games:
            out[(w, lo)] = out.get((w, lo), 0.0) + weight * n
    return [(w, lo, weight) for (w, lo), weight in sorted(out.items())]


def bradley_terry(games, iterations=2000, tol=1e-10, prior=0.0):
    """Strengths {player: log p} (mean 0) maximizing the Bradley–Terry likelihood, by minorize–maximize.

    `prior` adds that many virtual games won and lost against a player of strength 1 for every player, which
    keeps strengths finite when a player never lost (or never won); 0 gives the plain maximum likelihood.
    """
    players = sorted({p for w, lo, _ in games for p in (w, lo)})
    wins = {p: prior for p in players}
    n = {}
    for w, lo, weight in games:
        wins[w] += weight
        key = (min(w, lo), max(w, lo))
        n[key] = n.get(key, 0.0) + weight
    p = {q: 1.0 for q in players}
    for _ in range(iterations):
        new = {}
        for i in players:
            denom = 2 * prior / (p[i] + 1.0)
            for (x, y), count in n.items():
                if i in (x, y):
                    j = y if i == x else x
                    denom += count / (p[i] + p[j])
            new[i] = wins[i] / denom if denom > 0 else p[i]
        # The likelihood fixes strengths only up to a common factor: keep their geometric mean at 1.
        if prior == 0:
            g = math.exp(sum(math.log(max(v, 1e-300)) for v in new.values()) / len(new))
            new = {q: v / g for q, v in new.items()}
        done = max(abs(math.log(max(new[q], 1e-300)) - math.log(max(p[q], 1e-300))) for q in players) < tol
        p = new
        if done:
            break
    logs = {q: math.log(max(v, 1e-300)) for q, v in p.items()}
    mean = sum(logs.values()) / len(logs)
    return {q: v - mean for q, v in logs.items()}


def needs_prior(games):
    """True when some config never won or never lost: its plain maximum-likelihood strength is infinite."""
    won = {w for w, _, weight in games if weight > 0}
    lost = {lo for _, lo, weight in games if weight > 0}
    return bool((won | lost) - (won & lost))


MIN_DECISIVE = 5   # a config with fewer decisive votes is listed, not ranked
PRIOR = 0.5        # virtual wins and losses against an average config: keeps every strength and interval finite


def connected_groups(games):
    """Configs that met, directly or through others, as lists (largest group first): only configs in one group
    share a scale; between groups no vote says anything."""
    parent = {}

    def root(x):
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for w, lo, _ in games:
        parent[root(w)] = root(lo)
    groups = {}
    for x in list(parent):
        groups.setdefault(root(x), []).append(x)
    return sorted((sorted(g) for g in groups.values()), key=lambda g: (-len(g), g))


def standard_errors(games, strengths, prior=PRIOR):
    """Standard errors of log-strengths from the curvature of the Bradley–Terry log-likelihood plus the weak
    prior (Laplace approximation): the observed information of game i-j is p(1 - p), of the prior's virtual
    win and loss against the average 2 * prior * q(1 - q), q the config's win chance against it."""
    import numpy as np

    names = sorted(strengths)
    at = {q: k for k, q in enumerate(names)}
    info = np.zeros((len(names), len(names)))
    for w, lo, weight in games:
        p = 1 / (1 + math.exp(strengths[lo] - strengths[w]))
        i, j = at[w], at[lo]
        info[i, i] += weight * p * (1 - p)
        info[j, j] += weight * p * (1 - p)
        info[i, j] -= weight * p * (1 - p)
        info[j, i] -= weight * p * (1 - p)
    for q, k in at.items():
        pq = 1 / (1 + math.exp(-strengths[q]))
        info[k, k] += 2 * prior * pq * (1 - pq)
    cov = np.linalg.inv(info)
    return {q: math.sqrt(max(cov[k, k], 0.0)) for q, k in at.items()}


def leaderboard(votes, prior=PRIOR, min_decisive=MIN_DECISIVE):
    """leaderboard_tally() of a list of votes (each with config_a, config_b, winner)."""
    return leaderboard_tally(tally(votes), prior, min_decisive)


def leaderboard_tally(counts, prior=PRIOR, min_decisive=MIN_DECISIVE):
    """One row per config that met another in a vote, grouped by connected_groups: Elo-scale strength (1000 = its
    group's average), a 95% interval, counts, and a rank within the group once it has `min_decisive` decisive
    votes.

    Strengths are the plain maximum likelihood when every config of the group both won and lost, else they use
    the weak `prior` (said in the row). Intervals are +-1.96 standard errors (standard_errors): a config with a
    single vote has an interval far wider than its distance from the average.
    """
    games = matches(counts)
    per_config = {}
    for (_, a, b, _, winner, _), n in counts.items():
        if a == b:
            continue
        for side, cfg in (("A", a), ("B", b)):
            c = per_config.setdefault(cfg, {"votes": 0, "wins": 0, "losses": 0, "ties": 0})
            c["votes"] += n
            if winner == side:
                c["wins"] += n
            elif winner in ("A", "B"):
                c["losses"] += n
            elif winner == "tie":
                c["ties"] += n
    rows = []
    for number, group in enumerate(connected_groups(games), 1):
        mine = [g for g in games if g[0] in group]
        use_prior = prior if needs_prior(mine) else 0.0
        point = bradley_terry(mine, prior=use_prior)
        se = standard_errors(mine, point, prior)
        group_rows = [{"config": q, "label": config_label(q), "group": number, "strength": s,
                       "elo": 1000 + ELO_SCALE * s, "elo_low": 1000 + ELO_SCALE * (s - Z95 * se[q]),
                       "elo_high": 1000 + ELO_SCALE * (s + Z95 * se[q]), "regularized": use_prior > 0,
                       "ranked": per_config[q]["wins"] + per_config[q]["losses"] >= min_decisive, **per_config[q]}
                      for q, s in point.items()]
        group_rows.sort(key=lambda r: (not r["ranked"], -r["strength"], r["label"]))
        rank = 0
        for r in group_rows:
            rank += r["ranked"]
            r["rank"] = rank if r["ranked"] else None
        rows += group_rows
    return rows


def config_label(config_json):
    """A config in a few words: its sampler and steps, and every field that differs from the defaults; a side of
    a campaign of image files by its label."""
    arm = arm_from_json(config_json)
    if isinstance(arm, ImageArm):
        return f"{arm.label} (image files, campaign {arm.campaign})"
    cfg = arm.to_dict()
    default = SamplerConfig().to_dict()
    rest = [f"{k}={cfg[k]}" for k in cfg if k not in ("sampler", "steps") and cfg[k] != default[k]]
    return f"{cfg['sampler']} {cfg['steps']} steps" + (", " + ", ".join(rest) if rest else "")
