"""Bradley–Terry strengths of configs from pairwise votes (Bradley & Terry 1952; MM fit of Hunter 2004)."""
import math
import random

from ..core.config import SamplerConfig

ELO_SCALE = 400 / math.log(10)  # arenas report log-strengths on the Elo scale: 400 log10(p) points


def matches(votes):
    """Votes -> (winner, loser, weight) over config JSON; a tie is half a win each way, both-bad is left out."""
    out = []
    for v in votes:
        a, b = v["config_a"], v["config_b"]
        if a == b:
            continue  # a config against itself says nothing about its strength
        if v["winner"] == "A":
            out.append((a, b, 1.0))
        elif v["winner"] == "B":
            out.append((b, a, 1.0))
        elif v["winner"] == "tie":
            out += [(a, b, 0.5), (b, a, 0.5)]
    return out


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


def leaderboard(votes, resamples=200, seed=0, prior=0.5):
    """One row per config that met another in a vote: Elo-scale strength, bootstrap 95% interval, counts.

    Strengths use the plain maximum likelihood when every config both won and lost, else a weak `prior`
    (said in the row). The interval resamples votes with replacement (seeded); a resample in which some
    config never won or never lost is fitted with the prior too.
    """
    votes = [v for v in votes if v["config_a"] != v["config_b"]]
    games = matches(votes)
    if not games:
        return []
    use_prior = prior if needs_prior(games) else 0.0
    point = bradley_terry(games, prior=use_prior)
    rng = random.Random(seed)
    draws = {q: [] for q in point}
    for _ in range(resamples):
        sample = [votes[rng.randrange(len(votes))] for _ in votes]
        games_b = matches(sample)
        fit = bradley_terry(games_b, prior=prior if needs_prior(games_b) else use_prior, iterations=500, tol=1e-8)
        for q in point:
            if q in fit:
                draws[q].append(fit[q])
    counts = {q: {"votes": 0, "wins": 0, "losses": 0, "ties": 0} for q in point}
    for v in votes:
        for side, cfg in (("A", v["config_a"]), ("B", v["config_b"])):
            c = counts[cfg]
            c["votes"] += 1
            if v["winner"] == side:
                c["wins"] += 1
            elif v["winner"] in ("A", "B"):
                c["losses"] += 1
            elif v["winner"] == "tie":
                c["ties"] += 1
    rows = []
    for q, s in point.items():
        d = sorted(draws[q])
        lo = d[int(0.025 * (len(d) - 1))] if d else math.nan
        hi = d[int(math.ceil(0.975 * (len(d) - 1)))] if d else math.nan
        rows.append({"config": q, "label": config_label(q), "strength": s, "elo": 1000 + ELO_SCALE * s,
                     "elo_low": 1000 + ELO_SCALE * lo, "elo_high": 1000 + ELO_SCALE * hi,
                     "regularized": use_prior > 0, **counts[q]})
    rows.sort(key=lambda r: -r["strength"])
    for rank, r in enumerate(rows, 1):
        r["rank"] = rank
    return rows


def config_label(config_json):
    """A config in a few words: its sampler and steps, and every field that differs from the defaults."""
    cfg = SamplerConfig.from_json(config_json).to_dict()
    default = SamplerConfig().to_dict()
    rest = [f"{k}={cfg[k]}" for k in cfg if k not in ("sampler", "steps") and cfg[k] != default[k]]
    return f"{cfg['sampler']} {cfg['steps']} steps" + (", " + ", ".join(rest) if rest else "")
