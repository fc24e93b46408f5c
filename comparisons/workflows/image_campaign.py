"""Vote campaigns over images made elsewhere (ComfyUI, AUTOMATIC1111/Forge, diffusers): two folders paired by file
name, or a manifest CSV of pairs. Every file is checked and every pair measured (LPIPS, FLIP, …) before anything is
written; then the images are copied into the results file content-addressed and the campaign is stored in one
transaction, served, exported and counted exactly as a study's campaign is."""
import csv
import hashlib
import json
import math
import random
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from ..core.config import NO_SEED, ImageArm
from ..core.image_files import load, load_bytes, stored_png
from ..core.image_meta import differing
from ..core.visibility import is_below
from ..errors import CampaignError, ImageError, clip
from ..results.bundle import FORMAT, MAX_META, MAX_TEXT, NAME, VERSION
from ..results.export import flat_fields
from .campaign import CHECK_PAIRING, check_rate
from .inspect_pair import measure

SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
MAX_PAIRS = 10_000
NO_REFERENCE = "no reference image"  # a cell's LPIPS verdict where no reference image exists
MANIFEST_COLUMNS = ("a", "b")
MANIFEST_OPTIONAL = ("cell", "prompt", "seed")
NOT_STATED = "(not stated)"  # the model of a pair whose files name none
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_COLUMNS = 50  # a manifest's own columns kept with each pair (each value at most MAX_TEXT characters)


@dataclass(frozen=True)
class Source:
    """One pair to bring in: A's and B's files, and what a manifest row says of it (cell, prompt, seed, the rest)."""
    a: Path
    b: Path
    cell: str | None = None
    prompt: str | None = None
    seed: int | None = None
    columns: dict = field(default_factory=dict)


def _images(folder):
    """{name without suffix: path} of the image files in `folder` (not its subfolders; hidden files skipped)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ImageError(f"{folder}: no such folder" + (" (it is a file)" if folder.exists() else ""))
    found = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.suffix.lower() not in SUFFIXES or not path.is_file():
            continue
        if path.stem in found:
            raise ImageError(f"{path} and {found[path.stem].name} in {folder} share the name {path.stem!r}; keep one")
        found[path.stem] = path
    if not found:
        raise ImageError(f"{folder} holds no image files ({', '.join(SUFFIXES)})")
    return found


def pairs_from_folders(dir_a, dir_b, skip_unmatched=False):
    """(sources, unmatched names): files of the two folders paired by name (the suffix may differ). A name in only
    one folder is refused, naming it, unless `skip_unmatched` leaves it out (and says so)."""
    a, b = _images(dir_a), _images(dir_b)
    if Path(dir_a).resolve() == Path(dir_b).resolve():
        raise ImageError(f"{dir_a} is given twice; name the folder of A's images and the folder of B's")
    only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
    unmatched = [str(a[n]) for n in only_a] + [str(b[n]) for n in only_b]
    if unmatched and not skip_unmatched:
        raise ImageError(f"{unmatched[0]} has no file of the same name in "
                         f"{dir_b if only_a else dir_a}" + (f" ({len(unmatched)} unmatched files in all)"
                                                            if len(unmatched) > 1 else "")
                         + "; rename it, remove it, or pass --skip-unmatched")
    names = sorted(set(a) & set(b))
    if not names:
        raise ImageError(f"no file of {dir_a} has a file of the same name in {dir_b}")
    return [Source(a[n], b[n]) for n in names], unmatched


def pairs_from_manifest(path):
    """Sources from a CSV with columns a and b (paths relative to the manifest's folder, never outside it) and
    optionally cell, prompt and seed; any other column is kept with the pair."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: no such manifest file")
    root = path.parent.resolve()
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            header = [h.strip() for h in (reader.fieldnames or [])]
            missing = [c for c in MANIFEST_COLUMNS if c not in header]
            if missing:
                raise ImageError(f"{path} lacks the column{'s' if len(missing) > 1 else ''} "
                                 f"{', '.join(missing)} (it has: {clip(', '.join(header) or 'no header', 200)})")
            if len(set(header)) != len(header):
                raise ImageError(f"{path} names a column twice ({clip(', '.join(header), 200)})")
            rows = [{(k or "").strip(): (v or "").strip() if isinstance(v, str) else v for k, v in row.items()}
                    for row in reader]
    except UnicodeDecodeError:
        raise ImageError(f"{path} is not UTF-8 text; save the manifest as UTF-8 CSV") from None
    except csv.Error as exc:
        raise ImageError(f"{path} is not a readable CSV ({clip(exc)})") from None
    if not rows:
        raise ImageError(f"{path} lists no pairs")
    if len(rows) > MAX_PAIRS:
        raise ImageError(f"{path} lists {len(rows)} pairs; a campaign holds at most {MAX_PAIRS}")
    sources, seen = [], {}
    for line, row in enumerate(rows, start=2):
        if None in row or any(isinstance(v, list) for v in row.values()):
            raise ImageError(f"{path} line {line} has more fields than the header")
        a, b = (_inside(path, root, row[c], line, c) for c in MANIFEST_COLUMNS)
        if (a, b) in seen:
            raise ImageError(f"{path} line {line} repeats the pair of line {seen[(a, b)]}")
        seen[(a, b)] = line
        seed = row.get("seed") or None
        if seed is not None:
            if not re.fullmatch(r"\d{1,18}", seed):
                raise ImageError(f"{path} line {line}: seed {clip(repr(seed))} is not a whole number >= 0")
            seed = int(seed)
        cell = row.get("cell") or None
        if cell is not None and len(cell) > 200:
            raise ImageError(f"{path} line {line}: cell {clip(repr(cell))} is longer than 200 characters")
        extra = {k: v for k, v in row.items() if k not in MANIFEST_COLUMNS + MANIFEST_OPTIONAL and v}
        long = next((k for k, v in extra.items() if len(v) > MAX_TEXT), None)
        if long is not None or len(extra) > MAX_COLUMNS:
            raise ImageError(f"{path} line {line}: " + (f"column {clip(long)} holds more than {MAX_TEXT} characters"
                                                        if long else f"more than {MAX_COLUMNS} extra columns"))
        sources.append(Source(a, b, cell, row.get("prompt") or None, seed, extra))
    return sources


def _inside(manifest, root, value, line, column):
    """A manifest path, relative to its folder and resolved (links too) inside it."""
    if not value:
        raise ImageError(f"{manifest} line {line}: column {column} is empty")
    given = Path(value)
    target = (root / given).resolve()
    if given.is_absolute() or not target.is_relative_to(root):
        raise ImageError(f"{manifest} line {line}: {clip(value)} is outside the manifest's folder {root}; put the "
                         "images beside the manifest (or below it) and give paths relative to it")
    return target


def check_labels(labels):
    """Two different labels of 1-64 characters, e.g. ('karras', 'beta')."""
    if len(labels) != 2 or any(not (1 <= len(x) <= 64) for x in labels) or labels[0] == labels[1]:
        raise CampaignError(f"--labels takes two different names of 1-64 characters, e.g. \"karras,beta\" (got "
                            f"{clip(','.join(labels))})")
    return tuple(labels)


def check_name(name):
    if not NAME.fullmatch(name or ""):
        raise CampaignError(f"campaign name {clip(repr(name))} must be 1-64 letters, digits, '.', '_' or '-'")
    return name


def measure_all(sources, metric, progress=None):
    """Every pair read and measured (LPIPS, FLIP, PSNR, SSIM, max |Δ|) before anything is written: [(source,
    measures)]. Streamed: only numbers, metadata and each file's SHA-256 are kept, never pixels or bytes (the files
    are read again when stored), so memory stays flat however many pairs there are. The next pair is read and
    decoded in a thread while this one is measured."""
    if len(sources) > MAX_PAIRS:
        raise CampaignError(f"{len(sources)} pairs; a campaign holds at most {MAX_PAIRS}")
    same = [src for src in sources if _same_file(src)]
    if same:  # before any pair is measured
        raise CampaignError(same_file_message(same))
    measured = []
    with ThreadPoolExecutor(1, thread_name_prefix="read-pairs") as pool:
        ahead = pool.submit(_read_pair, sources[0]) if sources else None
        try:
            for k, src in enumerate(sources):
                a, b, sha = ahead.result()
                ahead = pool.submit(_read_pair, sources[k + 1]) if k + 1 < len(sources) else None
                if sha[0] == sha[1]:  # changed since the check above
                    raise CampaignError(same_file_message([src]))
                result = measure(metric, a, b)
                measured.append((src, kept(result, sha)))
                del a, b, result
                if progress:
                    progress(k + 1, len(sources))
        finally:
            if ahead is not None:
                ahead.cancel()
    return measured


def _read_pair(src):
    """Both files of a source read and decoded, with their SHA-256 (in the read-ahead thread)."""
    a, b = load(src.a), load(src.b)
    return a, b, tuple(hashlib.sha256(p.data).hexdigest() for p in (a, b))


def kept(result, sha):
    """What measure_all keeps of a measured pair: numbers, metadata, hashes and texts; no array, no bytes."""
    return {"sha": sha, "metrics": result["metrics"], "meta": (result["a"].meta, result["b"].meta),
            "alpha": result["alpha"], "lpips_how": result["lpips_how"]}


def _same_file(src):
    """Are a source's A and B the same file, or two files of the same bytes? (Sizes first: most pairs differ there.)"""
    try:
        if src.a.resolve() == src.b.resolve():
            return True
        if src.a.stat().st_size != src.b.stat().st_size:
            return False
        return hashlib.sha256(src.a.read_bytes()).digest() == hashlib.sha256(src.b.read_bytes()).digest()
    except OSError:
        return False  # load() says what is wrong with the file


def same_file_message(same):
    """One line refusing pairs whose A and B are the same file: an image against itself has nothing to judge, and
    counted as a pair it would be counted as a comparison. (A campaign's attention checks are made by --checks.)"""
    first = same[0]
    more = "" if len(same) == 1 else (f"; {len(same)} such pairs in all: "
                                      + clip(", ".join(src.a.name for src in same), 300))
    return (f"pair {clip(first.a.name)}: A and B are the same file (same bytes: {clip(str(first.a))} and "
            f"{clip(str(first.b))}), so it is refused, not counted{more}. A pair shows two different images: take "
            "it out (from folders, move one of the two files away and pass --skip-unmatched; from a manifest, "
            "drop its row); attention checks are added by --checks")


# What differs between A and B names a campaign cell only where it is a setting: never what varies from one sample
# to the next (prompts and seeds, whatever a source calls them), else every pair would be a cell of its own.
def _is_setting(key):
    low = str(key).lower()
    return "seed" not in low and "prompt" not in low


def settings(fields):
    """A file's settings: its fields (one value each, flat_fields) without prompts and seeds."""
    return {k: v for k, v in flat_fields(fields).items() if _is_setting(k)}


def campaign_cell(fields_a, fields_b, labels, passes_a=(), passes_b=()):
    """A campaign cell named by the settings A's and B's files state differently ('scheduler: karras vs beta'),
    so two pairs whose files differ in the same settings the same way share one cell; by the labels where the
    files state no setting differently. The fields sum up a multi-pass file (the last pass's sampler); a setting an
    earlier pass states differently is named by its place in execution order ('pass 1 scheduler: karras vs beta'),
    never by a node id, and only where the fields do not already say it."""
    a, b = settings(fields_a), settings(fields_b)
    said = {k: (a.get(k), b.get(k)) for k in differing(a, b, skip=())}
    names = [f"{k}: {_short(x)} vs {_short(y)}" for k, (x, y) in said.items()]
    passes_a, passes_b = (_passes(p) for p in (passes_a, passes_b))
    if len(passes_a) != len(passes_b) and passes_a and passes_b:
        names.append(f"passes: {len(passes_a)} vs {len(passes_b)}")
    elif len(passes_a) > 1:
        for k, (pa, pb) in enumerate(zip(passes_a, passes_b), start=1):
            names += [f"pass {k} {key}: {_short(pa.get(key))} vs {_short(pb.get(key))}"
                      for key in differing(pa, pb, skip=()) if said.get(key) != (pa.get(key), pb.get(key))]
    return "; ".join(names) or f"{labels[0]} vs {labels[1]}"


def _passes(passes):
    """A file's sampling passes as settings: without the node ids (a file's own numbering), prompts and seeds."""
    if not isinstance(passes, (list, tuple)):
        return []
    return [{k: v for k, v in p.items() if k not in ("node", "kind") and _is_setting(k)}
            for p in passes if isinstance(p, dict)]


def _short(value):
    text = "(none)" if value is None else str(value)
    return text if len(text) <= 40 else text[:39] + "…"


def create(store, name, measured, labels, kind, only_visible=False, seed=0, checks=0.1, unmatched=(), progress=None):
    """Store measure_all's pairs as campaign `name`: cells named by the manifest or by the settings the files state
    differently (campaign_cell), the images copied in, the campaign and its attention checks in one transaction; the
    definition. A pair whose A and B are the same bytes is refused (same_file_message). `progress(done, total)` after
    each pair's files are copied in."""
    check_name(name)
    check_rate(checks)
    labels = check_labels(labels)
    if store.campaign(name) is not None:
        raise CampaignError(f"a campaign named {name!r} exists in {store.path}; choose another name")
    same = [src for src, m in measured if m["sha"][0] == m["sha"][1]]
    if same:
        raise CampaignError(same_file_message(same))
    arms = [ImageArm(label, name) for label in labels]
    by_cell, skipped, available = {}, {}, {}
    for src, m in measured:
        meta_a, meta_b = m["meta"]
        cell = src.cell or clip(campaign_cell(meta_a["fields"], meta_b["fields"], labels, meta_a.get("passes", ()),
                                              meta_b.get("passes", ())), 160)
        available[cell] = available.get(cell, 0) + 1
        if only_visible and is_below(m["metrics"]["flip_max"]):
            skipped[cell] = skipped.get(cell, 0) + 1
            continue
        by_cell.setdefault(cell, []).append((src, m))
    if not by_cell:
        raise CampaignError("the selection is empty: every pair is below visibility (try without --only-visible)"
                            if only_visible else "the selection is empty")
    chosen = [(cell, src, m) for cell, items in by_cell.items() for src, m in items]
    pairs = []
    for cell, src, m in chosen:
        pairs.append((_pair_fields(store, cell, arms, src, m), (cell, "", 0)))
        if progress:
            progress(len(pairs), len(chosen))
    check_pairs = _checks(pairs, checks, seed)
    cells = [{"question": cell, "sampler": "", "steps": 0, "pairs": len(items), "available": available[cell],
              "skipped_invisible": skipped.get(cell, 0), "lpips_verdict": NO_REFERENCE, "lpips_a_closer_rate": None,
              "lpips_p_holm": None, "lpips_ab": sum(m["metrics"]["lpips"] for _, m in items) / len(items)}
             for cell, items in by_cell.items()]
    models = {p["model"] for p, _ in pairs}
    definition = {"format": FORMAT, "version": VERSION, "name": name, "study": "", "study_id": "",
                  "model": models.pop() if len(models) == 1 else NOT_STATED,
                  "per_cell": max(c["pairs"] for c in cells), "only_visible": bool(only_visible), "seed": seed,
                  "cells": cells, "checks": checks, "n_checks": len(check_pairs),
                  "source": {"kind": kind, "labels": list(labels), "unmatched": len(unmatched)}}
    store.add_campaign(name, "", json.dumps(definition, sort_keys=True), [], check_pairs, new_pairs=pairs)
    return definition


def _shared(src_value, a, b, key):
    """The manifest's value, else the one both files state alike, else None."""
    if src_value is not None:
        return src_value
    return a[key] if key in a and key in b and a[key] == b[key] else None


def _model(a, b):
    """The pair's model: the checkpoint both files name, 'a / b' where they name different ones (a side that names
    none is NOT_STATED), NOT_STATED where neither names one."""
    ma, mb = a.get("model"), b.get("model")
    if ma is None and mb is None:
        return None
    return ma if ma == mb else f"{_text(ma) if ma is not None else NOT_STATED} / " \
                               f"{_text(mb) if mb is not None else NOT_STATED}"


def _stored_image(store, path, sha):
    """Copy one file into the results file's images (PNG bytes as they came; JPEG and WebP as lossless PNG with
    their text), refused if it changed since it was measured."""
    data = Path(path).read_bytes()
    if hashlib.sha256(data).hexdigest() != sha:
        raise ImageError(f"{path} changed while the campaign was being made; run the command again")
    if data.startswith(PNG_SIGNATURE):  # the bytes measured, kept as they came: nothing to decode again
        return store.save_image_bytes(data)
    return store.save_image_bytes(stored_png(load_bytes(data, str(path))))


def _pair_fields(store, cell, arms, src, m):
    """The pair as ResultsStore stores it (texts within what a bundle carries), its images copied in."""
    fields_a, fields_b = (flat_fields(m["meta"][k]["fields"]) for k in (0, 1))
    seed = _shared(src.seed, fields_a, fields_b, "seed")
    prompt = _shared(src.prompt, fields_a, fields_b, "prompt")
    model = _model(fields_a, fields_b)
    meta = {side: {"file": getattr(src, side.lower()).name, **m["meta"][k]} for k, side in enumerate(("A", "B"))}
    if len(json.dumps({**meta, "columns": src.columns})) > MAX_META:  # a bundle would refuse it: said here instead
        raise CampaignError(f"{src.a} and {src.b} say more about themselves than a pair may keep "
                            f"({MAX_META >> 10} KiB); strip their text chunks or trim the manifest's columns")
    images = [_stored_image(store, path, sha) for path, sha in zip((src.a, src.b), m["sha"])]
    return dict(pairing=cell, model=_bounded(model, NOT_STATED), prompt=_bounded(prompt, ""),
                seed=seed if isinstance(seed, int) and 0 <= seed < 2 ** 63 else NO_SEED,
                config_a=arms[0], config_b=arms[1], image_a=images[0], image_b=images[1], metrics=m["metrics"],
                sigmas_a=[], sigmas_b=[], lockstep=False, seconds=0.0,
                image_meta={**meta, "columns": src.columns, "lpips": m["lpips_how"],
                            **({"transparency": m["alpha"]} if m["alpha"] else {})})


def _bounded(value, missing):
    """A stated text as stored with the pair: at most MAX_TEXT characters (the whole is in image_meta)."""
    return missing if value is None else clip(_text(value), MAX_TEXT - 40)


def _text(value):
    """A stated value as text: a string as it is, anything else (a list of combined prompts) as JSON."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)


def _checks(pairs, rate, seed):
    """round(rate x pairs) attention checks (at least one when rate > 0): a seeded pick of the pairs, each shown
    as its A image against itself."""
    n = max(1, round(rate * len(pairs))) if rate > 0 and pairs else 0
    picks = random.Random(f"{seed}:checks").sample(pairs, min(n, len(pairs)))
    out = []
    for fields, cell in picks:
        meta = fields["image_meta"]
        out.append(({**fields, "pairing": CHECK_PAIRING, "config_b": fields["config_a"], "image_b": fields["image_a"],
                     "metrics": {"lpips": 0.0, "psnr": math.inf, "ssim": 1.0, "max_abs_diff": 0, "flip_max": 0.0},
                     "image_meta": {**meta, "B": meta["A"]}}, cell))
    return out
