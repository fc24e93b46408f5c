"""Vote campaigns: a fixed, seeded set of a study's pairs, served blind and balanced, portable as a bundle.

Made once (on a GPU, say), voted on anywhere: `export_bundle` writes the pairs' PNGs, configs and the
definition into a zip; `import_bundle` loads it into another results file (importing twice changes nothing).
"""
import json
import math
import random
import re
from pathlib import PurePosixPath

from ..analysis.cells import ALL_CELLS, campaign_cells, cell_stats, flagged_sessions
from ..core.config import SamplerConfig
from ..core.grid import StudySpec, cell_key
from ..core.visibility import is_below
from ..errors import CampaignError, StoreError, clip
from ..results.bundle import (
    FORMAT,
    OPTIONAL_FIELDS,
    PAIR_FIELDS,
    VERSION,
    bundle_images,
    image_name,
    read_bundle,
    write_bundle,
)
from .study import fill_flip

CHECK_PAIRING = "attention-check"  # the pairing of an attention check: one image against itself
DEFAULT_CHECKS = 0.1


def check_rate(checks):
    """Refuse an attention-check rate outside 0..1."""
    if isinstance(checks, bool) or not isinstance(checks, (int, float)) or not (math.isfinite(checks)
                                                                              and 0 <= checks <= 1):
        raise CampaignError(f"--checks must be a rate from 0 to 1, e.g. 0.1 for one check per ten pairs "
                            f"(got {clip(checks)})")
    return checks


def create(store, name, study_name, cells=None, per_cell=40, only_visible=False, seed=0, checks=DEFAULT_CHECKS):
    """Pick up to `per_cell` samples per chosen cell of the study (seeded), add `checks` x that many attention
    checks (an image against itself), store the campaign; its definition."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", name or ""):
        raise CampaignError(f"campaign name {clip(repr(name))} must be 1-64 letters, digits, '.', '_' or '-'")
    if per_cell < 1:
        raise CampaignError(f"--per-cell must be at least 1 (got {per_cell})")
    check_rate(checks)
    study = store.study(study_name)
    if study is None:
        known = ", ".join(s["name"] for s in store.studies()) or "none"
        raise CampaignError(f"no study named {clip(repr(study_name))} in {store.path}; studies here: {known}")
    spec = StudySpec.from_json(study["spec"])
    rows = fill_flip(store, store.study_rows(study["study_id"]))
    stats = {cell_key(c): c for c in cell_stats(spec, rows)}
    wanted = list(stats) if cells is None else cells
    for cell in wanted:
        if cell not in stats:
            raise CampaignError(f"study {study_name!r} has no cell {':'.join(map(str, cell))}; its cells: "
                                + clip(", ".join(":".join(map(str, c)) for c in stats), 300))
    by_cell = {}
    for r in rows:
        by_cell.setdefault(cell_key(r), []).append(r)
    picked, chosen_rows, cell_defs = [], [], []
    for cell in wanted:
        candidates = sorted(by_cell.get(cell, []), key=lambda r: (r["prompt"], r["seed"]))
        visible = [r for r in candidates if not (only_visible and is_below(r["flip_max"]))]
        rng = random.Random(f"{seed}:{':'.join(map(str, cell))}")
        chosen = sorted(rng.sample(visible, min(per_cell, len(visible))), key=lambda r: (r["prompt"], r["seed"]))
        picked += [(r["pair_id"], *cell) for r in chosen]
        chosen_rows += chosen
        c = stats[cell]
        cell_defs.append({"question": cell[0], "sampler": cell[1], "steps": cell[2], "pairs": len(chosen),
                          "available": len(candidates), "skipped_invisible": len(candidates) - len(visible),
                          "lpips_verdict": c["verdict"], "lpips_a_closer_rate": _finite(c["a_closer_rate"]),
                          "lpips_p_holm": _finite(c["p_holm"]), "lpips_ab": _finite(c["lpips_ab"])})
    if not picked:
        raise CampaignError("the selection is empty: no pairs in the chosen cells"
                            + (" that are visible (try without --only-visible)" if only_visible else ""))
    check_pairs = attention_checks(store, spec.model, chosen_rows, checks, seed)
    definition = {"format": FORMAT, "version": VERSION, "name": name, "study": study_name,
                  "study_id": study["study_id"], "model": spec.model, "per_cell": per_cell,
                  "only_visible": bool(only_visible), "seed": seed, "cells": cell_defs, "checks": checks,
                  "n_checks": len(check_pairs)}
    store.add_campaign(name, study_name, json.dumps(definition, sort_keys=True), picked, check_pairs)
    return definition


def attention_checks(store, model, rows, rate, seed):
    """round(rate x pairs) attention checks (at least one when rate > 0), each a seeded pick of the chosen rows
    shown as its A image against itself: [(pair fields, cell)] for ResultsStore.add_campaign."""
    n = max(1, round(rate * len(rows))) if rate > 0 and rows else 0
    picks = random.Random(f"{seed}:checks").sample(rows, min(n, len(rows)))
    checks = []
    for r in picks:
        pair = store.pair(r["pair_id"])
        cfg = SamplerConfig.from_json(pair["config_a"])  # a study's campaign: its pairs are this tool's own
        checks.append((dict(pairing=CHECK_PAIRING, model=model, prompt=r["prompt"], seed=r["seed"], config_a=cfg,
                            config_b=cfg, image_a=pair["image_a"], image_b=pair["image_a"],
                            metrics={"lpips": 0.0, "psnr": math.inf, "ssim": 1.0, "max_abs_diff": 0, "flip_max": 0.0},
                            sigmas_a=json.loads(pair["sigmas_a"]), sigmas_b=json.loads(pair["sigmas_a"]),
                            lockstep=True, seconds=0.0), cell_key(r)))
    return checks


def _finite(x):
    return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else x


def definition_of(store, name):
    row = store.campaign(name)
    if row is None:
        known = ", ".join(c["name"] for c in store.campaigns()) or "none"
        raise CampaignError(f"no campaign named {clip(repr(name))} in {store.path}; campaigns here: {known}")
    return json.loads(row["definition"])


def export_bundle(store, name, out):
    """Write campaign `name` as a zip: campaign.json (definition and pairs) and images/<sha256>.png."""
    definition = definition_of(store, name)
    root = store.path.parent
    pairs, images = [], {}
    for p in store.campaign_pairs(name):
        # JSON has no infinity: an identical pair's PSNR travels as null, as the store reads it.
        entry = {k: _finite(p[k]) for k in PAIR_FIELDS + OPTIONAL_FIELDS}
        entry.update(question=p["question"], sampler=p["sampler"], steps=p["steps"], check=bool(p["is_check"]))
        for side in ("image_a", "image_b"):
            data = (root / p[side]).read_bytes()
            arcname = image_name(data)
            images[arcname] = data
            entry[side] = arcname
        pairs.append(entry)
    write_bundle(out, definition, pairs, images)
    return {"pairs": len(pairs), "images": len(images), "path": str(out)}


def import_bundle(store, path, checked=None):
    """Load a bundle into `store`; {'name', 'pairs', 'new'}. Importing the same bundle again writes nothing. The
    bundle is checked whole first (results.bundle.read_bundle, or `checked` = its result), and pairs this store
    already holds with other contents are refused before anything is written."""
    definition, pairs = checked or read_bundle(path)
    name = definition["name"]
    text = json.dumps(definition, sort_keys=True)
    existing = store.campaign(name)
    if existing is not None:
        if existing["definition"] != text:
            raise StoreError(f"a campaign named {name!r} with other pairs exists in {store.path}; refused")
        return {"name": name, "pairs": len(pairs), "new": False}
    refuse_conflicts(store.pairs_with_ids([p["pair_id"] for p in pairs]), pairs, path)
    stored = {arcname: store.save_image_bytes(data) for arcname, data in bundle_images(path)}
    rows = [{**{k: p[k] for k in PAIR_FIELDS}, **{k: p.get(k) for k in OPTIONAL_FIELDS},
             "image_a": stored[p["image_a"]], "image_b": stored[p["image_b"]]} for p in pairs]
    store.import_campaign(name, definition["study"], text, rows,
                          [(p["pair_id"], p["question"], p["sampler"], int(p["steps"]), int(bool(p.get("check"))))
                           for p in pairs])
    return {"name": name, "pairs": len(pairs), "new": True}


# What must agree for a pair id the store already holds to be the bundle's pair (not merely the same id).
SAME_PAIR = ("pairing", "model", "prompt", "seed", "config_a", "config_b", "sigmas_a", "sigmas_b")


def refuse_conflicts(held, pairs, path):
    """CampaignError for the first bundle pair whose id the store holds with other contents or other images."""
    for p in pairs:
        mine = held.get(p["pair_id"])
        if mine is None:
            continue
        differs = [k for k in SAME_PAIR if mine[k] != p[k]]
        differs += [side for side in ("image_a", "image_b") if PurePosixPath(mine[side]).stem != p[side][7:-4]]
        if differs:
            raise CampaignError(f"{path}: pair {p['pair_id']} already exists in this results file with another "
                                f"{differs[0]}; refused (import into another results file)")


VOTERS = ("all", "without flagged")  # every vote; the votes of sessions their attention checks did not flag


def stats(store, name, alpha=0.05):
    """Per cell of campaign `name` and over all its cells (analysis.cells.campaign_cells), once over every vote
    (`voters` 'all') and once without the sessions their attention checks flagged; each row also says how many
    sessions were flagged."""
    cells, votes = definition_of(store, name)["cells"], store.campaign_votes(name)
    flagged = flagged_sessions([v for v in votes if v["is_check"]])
    counted = [v for v in votes if not v["is_check"]]
    sessions = len({v["session"] for v in votes})
    rows = []
    for voters, mine in zip(VOTERS, (counted, [v for v in counted if v["session"] not in flagged])):
        rows += [{**r, "voters": voters, "flagged": len(flagged), "sessions": sessions}
                 for r in campaign_cells(cells, mine, alpha)]
    return rows


def cell_name(row):
    """'final-zero:heun:4', '(all cells)' for the row over every cell, and a campaign of image files' cell by its
    name alone ('scheduler: karras vs beta'; its sampler is '' and its steps 0)."""
    if row["question"] == ALL_CELLS or (row["sampler"] == "" and row["steps"] == 0):
        return row["question"]
    return f"{row['question']}:{row['sampler']}:{row['steps']}"
