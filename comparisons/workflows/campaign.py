"""Vote campaigns: a fixed, seeded set of a study's pairs, served blind and balanced, portable as a bundle.

Made once (on a GPU, say), voted on anywhere: `export_bundle` writes the pairs' PNGs, configs and the
definition into a zip; `import_bundle` loads it into another results file (importing twice changes nothing).
"""
import json
import math
import random
import re

from ..analysis.cells import campaign_cells, cell_stats
from ..core.grid import StudySpec, cell_key
from ..core.visibility import VISIBLE_DELTA, VISIBLE_LPIPS
from ..errors import CampaignError, StoreError, clip
from ..results.bundle import FORMAT, PAIR_FIELDS, VERSION, image_name, read_bundle, write_bundle


def below_visibility(row):
    """A study row's pair cannot be told apart (the app's visibility rule)."""
    return (row["max_abs_diff"] or 0) < VISIBLE_DELTA or (row["lpips_ab"] or 0.0) < VISIBLE_LPIPS


def create(store, name, study_name, cells=None, per_cell=40, only_visible=False, seed=0):
    """Pick up to `per_cell` samples per chosen cell of the study (seeded), store the campaign; its definition."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", name or ""):
        raise CampaignError(f"campaign name {clip(repr(name))} must be 1-64 letters, digits, '.', '_' or '-'")
    if per_cell < 1:
        raise CampaignError(f"--per-cell must be at least 1 (got {per_cell})")
    study = store.study(study_name)
    if study is None:
        known = ", ".join(s["name"] for s in store.studies()) or "none"
        raise CampaignError(f"no study named {clip(repr(study_name))} in {store.path}; studies here: {known}")
    spec = StudySpec.from_json(study["spec"])
    rows = store.study_rows(study["study_id"])
    stats = {cell_key(c): c for c in cell_stats(spec, rows)}
    wanted = list(stats) if cells is None else cells
    for cell in wanted:
        if cell not in stats:
            raise CampaignError(f"study {study_name!r} has no cell {':'.join(map(str, cell))}; its cells: "
                                + clip(", ".join(":".join(map(str, c)) for c in stats), 300))
    by_cell = {}
    for r in rows:
        by_cell.setdefault(cell_key(r), []).append(r)
    picked, cell_defs = [], []
    for cell in wanted:
        candidates = sorted(by_cell.get(cell, []), key=lambda r: (r["prompt"], r["seed"]))
        visible = [r for r in candidates if not (only_visible and below_visibility(r))]
        rng = random.Random(f"{seed}:{':'.join(map(str, cell))}")
        chosen = sorted(rng.sample(visible, min(per_cell, len(visible))), key=lambda r: (r["prompt"], r["seed"]))
        picked += [(r["pair_id"], *cell) for r in chosen]
        c = stats[cell]
        cell_defs.append({"question": cell[0], "sampler": cell[1], "steps": cell[2], "pairs": len(chosen),
                          "available": len(candidates), "skipped_invisible": len(candidates) - len(visible),
                          "lpips_verdict": c["verdict"], "lpips_a_closer_rate": _finite(c["a_closer_rate"]),
                          "lpips_p_holm": _finite(c["p_holm"]), "lpips_ab": _finite(c["lpips_ab"])})
    if not picked:
        raise CampaignError("the selection is empty: no pairs in the chosen cells"
                            + (" that are visible (try without --only-visible)" if only_visible else ""))
    definition = {"format": FORMAT, "version": VERSION, "name": name, "study": study_name,
                  "study_id": study["study_id"], "model": spec.model, "per_cell": per_cell,
                  "only_visible": bool(only_visible), "seed": seed, "cells": cell_defs}
    store.add_campaign(name, study_name, json.dumps(definition, sort_keys=True), picked)
    return definition


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
        entry = {k: p[k] for k in PAIR_FIELDS}
        entry.update(question=p["question"], sampler=p["sampler"], steps=p["steps"])
        for side in ("image_a", "image_b"):
            data = (root / p[side]).read_bytes()
            arcname = image_name(data)
            images[arcname] = data
            entry[side] = arcname
        pairs.append(entry)
    write_bundle(out, definition, pairs, images)
    return {"pairs": len(pairs), "images": len(images), "path": str(out)}


def import_bundle(store, path):
    """Load a bundle into `store`; {'name', 'pairs', 'new'}. Importing the same bundle again writes nothing."""
    definition, pairs, images = read_bundle(path)
    name = definition.get("name")
    existing = store.campaign(name)
    text = json.dumps(definition, sort_keys=True)
    if existing is not None:
        if existing["definition"] != text:
            raise StoreError(f"a campaign named {name!r} with other pairs exists in {store.path}; refused")
        return {"name": name, "pairs": len(pairs), "new": False}
    stored = {arcname: store.save_image_bytes(data) for arcname, data in images.items()}
    rows = [{**{k: p[k] for k in PAIR_FIELDS}, "image_a": stored[p["image_a"]], "image_b": stored[p["image_b"]]}
            for p in pairs]
    store.import_campaign(name, definition["study"], text, rows,
                          [(p["pair_id"], p["question"], p["sampler"], int(p["steps"])) for p in pairs])
    return {"name": name, "pairs": len(pairs), "new": True}


def stats(store, name, alpha=0.05):
    """Per cell of campaign `name`: vote counts, A's win rate (Wilson 95%), sign test, the LPIPS verdict."""
    return campaign_cells(definition_of(store, name)["cells"], store.campaign_votes(name), alpha)


def stats_text(name, rows):
    """The stats as a plain table for the command line."""
    def fmt(x, d=3):
        return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{d}f}"
    lines = [f"campaign {name}: {sum(r['votes'] for r in rows)} votes over {sum(r['pairs'] for r in rows)} pairs",
             f"{'cell':<34}{'votes':>6}{'A':>5}{'B':>5}{'tie':>5}{'bad':>5}  {'A win rate [95% CI]':<22}"
             f"{'p':>8}  {'votes say':<14}{'LPIPS says':<26}agreement"]
    for r in rows:
        cell = f"{r['question']}:{r['sampler']}:{r['steps']}"
        rate = f"{fmt(r['a_win_rate'])} [{fmt(r['ci_low'], 2)}, {fmt(r['ci_high'], 2)}]"
        lines.append(f"{cell:<34}{r['votes']:>6}{r['a']:>5}{r['b']:>5}{r['tie']:>5}{r['both_bad']:>5}  {rate:<22}"
                     f"{fmt(r['p_value'], 4):>8}  {r['votes_verdict']:<14}{r['lpips_verdict']:<26}{r['agreement']}")
    return "\n".join(lines)
