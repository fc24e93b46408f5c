"""Vote campaigns: a fixed, seeded set of a study's pairs, served blind and balanced, portable as a bundle.

Made once (on a GPU, say), voted on anywhere: `export_bundle` writes the pairs' PNGs, configs and the
definition into a zip; `import_bundle` loads it into another results file (importing twice changes nothing).
"""
import hashlib
import json
import math
import os
import random
import re
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

from .config import SamplerConfig
from .limits import clip
from .report import cell_stats
from .stats import binomial_two_sided_p, wilson_interval
from .store import StoreError
from .visibility import VISIBLE_DELTA, VISIBLE_LPIPS

FORMAT, VERSION = "ab-lab-campaign", 1
PAIR_FIELDS = ("pair_id", "created", "pairing", "model", "prompt", "seed", "config_a", "config_b", "lpips", "psnr",
               "ssim", "max_abs_diff", "lpips_a_ref", "lpips_b_ref", "sigmas_a", "sigmas_b", "lockstep", "seconds")
IMAGE_NAME = re.compile(r"images/[0-9a-f]{64}\.png")
MAX_BUNDLE_BYTES = 4 << 30  # uncompressed; a bundle claiming more is refused before anything is read


class CampaignError(ValueError):
    """A campaign request that cannot be met (unknown study, cell or campaign, empty selection, bad bundle)."""


def parse_cells(text):
    """'final-zero:heun:4,discretization:euler:10' -> [(question, sampler, steps)]."""
    cells = []
    for part in [p.strip() for p in str(text).split(",") if p.strip()]:
        m = re.fullmatch(r"([^:]+):([^:]+):(\d+)", part)
        if not m:
            raise CampaignError(f"malformed cell {clip(repr(part))}; write question:sampler:steps, "
                                "e.g. final-zero:heun:4")
        cells.append((m.group(1), m.group(2), int(m.group(3))))
    if not cells:
        raise CampaignError("--cells is empty; give question:sampler:steps cells, comma-separated")
    return cells


def below_visibility(row):
    """A study row's pair cannot be told apart (the app's visibility rule)."""
    return (row["max_abs_diff"] or 0) < VISIBLE_DELTA or (row["lpips_ab"] or 0.0) < VISIBLE_LPIPS


def create(store, name, study_name, cells=None, per_cell=40, only_visible=False, seed=0):
    """Pick up to `per_cell` samples per chosen cell of the study (seeded), store the campaign; its definition."""
    from .study import StudySpec
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
    stats = {(c["question"], c["sampler"], c["steps"]): c for c in cell_stats(spec, rows)}
    wanted = list(stats) if cells is None else cells
    for cell in wanted:
        if cell not in stats:
            raise CampaignError(f"study {study_name!r} has no cell {':'.join(map(str, cell))}; its cells: "
                                + clip(", ".join(":".join(map(str, c)) for c in stats), 300))
    by_cell = {}
    for r in rows:
        by_cell.setdefault((r["question"], r["sampler"], r["steps"]), []).append(r)
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
            arcname = f"images/{hashlib.sha256(data).hexdigest()}.png"
            images[arcname] = data
            entry[side] = arcname
        pairs.append(entry)
    out = Path(out)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=out.name, suffix=".partial")
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr("campaign.json", json.dumps({"definition": definition, "pairs": pairs}, indent=1))
            for arcname, data in sorted(images.items()):
                z.writestr(arcname, data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return {"pairs": len(pairs), "images": len(images), "path": str(out)}


def read_bundle(path):
    """Everything in a bundle, checked before anything is written: (definition, pairs, {arcname: bytes})."""
    try:
        z = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise CampaignError(f"{path} is not a campaign bundle (not a readable zip: {exc})") from None
    with z:
        infos = z.infolist()
        if sum(i.file_size for i in infos) > MAX_BUNDLE_BYTES:
            raise CampaignError(f"{path} unpacks to more than {MAX_BUNDLE_BYTES >> 30} GiB; refused")
        for info in infos:
            name = info.filename
            parts = PurePosixPath(name).parts
            if name.startswith(("/", "\\")) or "\\" in name or ".." in parts or ":" in name:
                raise CampaignError(f"{path} holds a path that escapes the bundle ({clip(repr(name))}); refused")
            if name != "campaign.json" and not IMAGE_NAME.fullmatch(name):
                raise CampaignError(f"{path} holds an unexpected entry {clip(repr(name))}; not a campaign bundle")
        try:
            manifest = json.loads(z.read("campaign.json"))
            definition, pairs = manifest["definition"], manifest["pairs"]
        except KeyError:
            raise CampaignError(f"{path} has no campaign.json; not a campaign bundle") from None
        except (ValueError, TypeError) as exc:
            raise CampaignError(f"{path}: campaign.json is not valid ({clip(exc)})") from None
        if not isinstance(definition, dict) or definition.get("format") != FORMAT:
            raise CampaignError(f"{path} is not an {FORMAT} bundle (format {clip(repr(definition.get('format')))})"
                                if isinstance(definition, dict) else f"{path}: campaign.json has no definition")
        if definition.get("version") != VERSION:
            raise CampaignError(f"{path} is a version {definition.get('version')!r} bundle; this app reads "
                                f"version {VERSION}")
        images = {}
        try:
            for p in pairs:
                SamplerConfig.from_json(p["config_a"]), SamplerConfig.from_json(p["config_b"])
                missing = [k for k in (*PAIR_FIELDS, "question", "sampler", "steps") if k not in p]
                if missing:
                    raise CampaignError(f"{path}: a pair lacks {', '.join(missing)}")
                for side in ("image_a", "image_b"):
                    arcname = p[side]
                    if not isinstance(arcname, str) or not IMAGE_NAME.fullmatch(arcname):
                        raise CampaignError(f"{path}: pair {clip(p['pair_id'])} names a bad image {clip(arcname)}")
                    if arcname not in images:
                        try:
                            data = z.read(arcname)
                        except KeyError:
                            raise CampaignError(f"{path} is missing {arcname}") from None
                        if hashlib.sha256(data).hexdigest() != arcname[7:-4]:
                            raise CampaignError(f"{path}: {arcname} is corrupt (its content does not match its name)")
                        images[arcname] = data
        except (TypeError, AttributeError) as exc:
            raise CampaignError(f"{path}: campaign.json is not valid ({clip(exc)})") from None
        if not pairs:
            raise CampaignError(f"{path} holds no pairs")
        return definition, pairs, images


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


def agreement(votes_verdict, lpips_verdict):
    """Do the votes and the study's LPIPS verdict say the same about a cell?"""
    lp = lpips_verdict.split(";")[0].strip()
    if votes_verdict == "no preference" and lp == "no difference":
        return "agree (no difference)"
    if votes_verdict == "no preference" or lp == "no difference":
        return "undecided (one finds no difference)"
    same = (votes_verdict == "A preferred") == (lp == "A closer")
    return "agree" if same else "disagree"


def stats(store, name, alpha=0.05):
    """Per cell of campaign `name`: vote counts, A's win rate (Wilson 95%), sign test, the LPIPS verdict."""
    definition = definition_of(store, name)
    votes = store.campaign_votes(name)
    rows = []
    for cell in definition["cells"]:
        key = (cell["question"], cell["sampler"], cell["steps"])
        mine = [v for v in votes if (v["question"], v["sampler"], v["steps"]) == key]
        n = {w: sum(v["winner"] == w for v in mine) for w in ("A", "B", "tie", "both_bad")}
        decisive = n["A"] + n["B"]
        lo, hi = wilson_interval(n["A"], decisive)
        p = binomial_two_sided_p(n["A"], decisive)
        verdict = ("A preferred" if n["A"] > n["B"] else "B preferred") if decisive and p < alpha else "no preference"
        rows.append({**{k: cell[k] for k in ("question", "sampler", "steps", "pairs")}, "votes": len(mine),
                     "a": n["A"], "b": n["B"], "tie": n["tie"], "both_bad": n["both_bad"],
                     "a_win_rate": n["A"] / decisive if decisive else math.nan, "ci_low": lo, "ci_high": hi,
                     "p_value": p, "votes_verdict": verdict, "lpips_verdict": cell["lpips_verdict"],
                     "agreement": agreement(verdict, cell["lpips_verdict"]) if decisive else "no decisive votes yet"})
    return rows


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
