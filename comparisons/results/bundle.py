"""The campaign bundle, a zip any results file can import: campaign.json (definition and pairs) and
images/<sha256>.png exactly as stored. Reading checks every entry before anything is handed back."""
import hashlib
import io
import json
import math
import re
import stat
import zipfile
import zlib
from pathlib import PurePosixPath

from ..core.config import NO_SEED, ImageArm, arm_from_json
from ..errors import CampaignError, clip
from ..files import replacing

FORMAT, VERSION = "ab-lab-campaign", 1
PAIR_FIELDS = ("pair_id", "created", "pairing", "model", "prompt", "seed", "config_a", "config_b", "lpips", "psnr",
               "ssim", "max_abs_diff", "lpips_a_ref", "lpips_b_ref", "sigmas_a", "sigmas_b", "lockstep", "seconds")
# flip_max: absent from bundles written before FLIP decided visibility; image_meta: only pairs of image files
OPTIONAL_FIELDS = ("flip_max", "image_meta")
IMAGE_NAME = re.compile(r"images/[0-9a-f]{64}\.png")
# Bounds a real bundle fits with room: a campaign of 5,000 SDXL pairs is a 10 MB campaign.json and images of
# 1-3 MB at 1024x1024. Every bound is checked on the zip's directory before any entry is decompressed.
MAX_MANIFEST_BYTES = 64 << 20
MAX_IMAGE_BYTES = 32 << 20
MAX_IMAGE_PIXELS = 4096 * 4096
MAX_BUNDLE_BYTES = 4 << 30      # all entries together, uncompressed
MAX_PAIRS = 100_000
MAX_DEPTH = 8                   # campaign.json nests 4 deep; deeper is not a bundle
MAX_TEXT = 2000                 # characters of any text field (prompts are at most 500 in the app)
MAX_META = 64 << 10             # characters of a pair's image_meta (JSON: two files' parsed fields, raw text clipped)
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # what `campaign create` allows
PAIR_ID = re.compile(r"[0-9a-f]{32}")


def image_name(data):
    """The name a PNG's bytes have in a bundle: images/<sha256>.png."""
    return f"images/{hashlib.sha256(data).hexdigest()}.png"


def write_bundle(out, definition, pairs, images):
    """Write the zip whole or not at all: campaign.json and every image (arcname -> PNG bytes)."""
    with replacing(out) as (tmp,), zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("campaign.json", json.dumps({"definition": definition, "pairs": pairs}, indent=1))
        for arcname, data in sorted(images.items()):
            z.writestr(arcname, data)


class BundleError(CampaignError):
    """A bundle that is refused; the message names the entry and the problem."""


def read_bundle(path):
    """The whole bundle checked before anything is written: (definition, pairs); the images are then read one at a
    time by `bundle_images`. Refused with one line naming the entry and the problem (BundleError)."""
    try:
        z = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise BundleError(f"{path} is not a campaign bundle (not a readable zip: {clip(exc)})") from None
    with z:
        infos = check_entries(path, z)
        definition, pairs = check_manifest(path, z)
        names = {p[side] for p in pairs for side in ("image_a", "image_b")}
        present = {i.filename for i in infos} - {"campaign.json"}
        if names - present:
            raise BundleError(f"{path} is missing {sorted(names - present)[0]}")
        if present - names:
            raise BundleError(f"{path}: {sorted(present - names)[0]} belongs to no pair; not a campaign bundle")
        for name in sorted(names):
            check_image(path, name, read_entry(path, z, z.getinfo(name)))
    return definition, pairs


def bundle_images(path):
    """(arcname, PNG bytes) of every image read_bundle checked. Each is named by its SHA-256, so bytes that still
    match their name are the very bytes it decoded (a file changed since is refused, not decoded again)."""
    with zipfile.ZipFile(path) as z:
        for info in z.infolist():
            if info.filename != "campaign.json":
                data = read_entry(path, z, info)
                if image_name(data) != info.filename:
                    raise BundleError(f"{path}: {info.filename} changed since it was checked; refused")
                yield info.filename, data


def check_entries(path, z):
    """Only regular files, unique names, campaign.json and images/<sha256>.png, sizes within the bounds."""
    infos = z.infolist()
    if len(infos) > 2 * MAX_PAIRS + 1:
        raise BundleError(f"{path} holds {len(infos)} entries; a bundle holds at most {2 * MAX_PAIRS + 1}")
    names = [i.filename for i in infos]
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})[0]
        raise BundleError(f"{path} holds {clip(repr(twice))} twice; refused")
    total = 0
    for info in infos:
        name = info.filename
        parts = PurePosixPath(name).parts
        if name.startswith(("/", "\\")) or "\\" in name or ".." in parts or ":" in name:
            raise BundleError(f"{path} holds a path that escapes the bundle ({clip(repr(name))}); refused")
        if name != "campaign.json" and not IMAGE_NAME.fullmatch(name):
            raise BundleError(f"{path} holds an unexpected entry {clip(repr(name))}; not a campaign bundle")
        kind = stat.S_IFMT(info.external_attr >> 16)
        if info.is_dir() or kind not in (0, stat.S_IFREG):
            raise BundleError(f"{path}: {clip(repr(name))} is not a regular file (a link or a folder); refused")
        if info.flag_bits & 0x1:
            raise BundleError(f"{path}: {clip(repr(name))} is encrypted; refused")
        limit = MAX_MANIFEST_BYTES if name == "campaign.json" else MAX_IMAGE_BYTES
        if info.file_size > limit:
            raise BundleError(f"{path}: {clip(repr(name))} unpacks to {info.file_size} bytes, more than the "
                              f"{limit >> 20} MiB a bundle entry may hold; refused")
        total += info.file_size
    if total > MAX_BUNDLE_BYTES:
        raise BundleError(f"{path} unpacks to more than {MAX_BUNDLE_BYTES >> 30} GiB; refused")
    if "campaign.json" not in names:
        raise BundleError(f"{path} has no campaign.json; not a campaign bundle")
    return infos


def read_entry(path, z, info):
    """One entry's bytes, at most its declared size, its CRC checked."""
    try:
        with z.open(info) as f:
            data = f.read(info.file_size + 1)
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, OSError) as exc:
        raise BundleError(f"{path}: {clip(repr(info.filename))} is corrupt ({clip(exc)})") from None
    if len(data) != info.file_size:
        raise BundleError(f"{path}: {clip(repr(info.filename))} is not the size its header says; refused")
    return data


def check_image(path, name, data):
    """A PNG that decodes, within the pixel bound, named by its content's SHA-256."""
    from PIL import Image

    if image_name(data) != name:
        raise BundleError(f"{path}: {name} is corrupt (its content does not match its name)")
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.format != "PNG":
                raise BundleError(f"{path}: {name} is not a PNG ({im.format}); refused")
            if im.width * im.height > MAX_IMAGE_PIXELS:
                raise BundleError(f"{path}: {name} is {im.width}x{im.height} pixels, more than the "
                                  f"{MAX_IMAGE_PIXELS} a bundle image may have; refused")
            im.load()
    except BundleError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise BundleError(f"{path}: {name} does not decode as an image ({clip(exc)}); refused") from None


def check_manifest(path, z):
    """campaign.json against the schema: every key, every type, finite numbers, names as `create` allows."""
    raw = read_entry(path, z, z.getinfo("campaign.json"))
    try:
        manifest = json.loads(raw, parse_constant=_constant)
    except RecursionError:
        raise BundleError(f"{path}: campaign.json nests too deeply; not a campaign bundle") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path}: campaign.json is not valid JSON ({clip(exc)})") from None
    if _depth(manifest) > MAX_DEPTH:
        raise BundleError(f"{path}: campaign.json nests more than {MAX_DEPTH} deep; not a campaign bundle")
    where = f"{path}: campaign.json"
    _keys(manifest, {"definition": dict, "pairs": list}, where)
    definition, pairs = manifest["definition"], manifest["pairs"]
    if definition.get("format") != FORMAT:
        raise BundleError(f"{path} is not an {FORMAT} bundle (format {clip(repr(definition.get('format')))})")
    if definition.get("version") != VERSION:
        raise BundleError(f"{path} is a version {clip(repr(definition.get('version')))} bundle; this app reads "
                          f"version {VERSION}")
    _keys(definition, DEFINITION, f"{where} definition", optional=DEFINITION_OPTIONAL)
    _name(definition["name"], f"{where} definition name")
    for k, cell in enumerate(definition["cells"]):
        _keys(cell, CELL, f"{where} cell {k + 1}")
    if not pairs:
        raise BundleError(f"{path} holds no pairs")
    if len(pairs) > MAX_PAIRS:
        raise BundleError(f"{path} holds {len(pairs)} pairs; a bundle holds at most {MAX_PAIRS}")
    cells = {(c["question"], c["sampler"], c["steps"]) for c in definition["cells"]}
    ids = set()
    for k, p in enumerate(pairs):
        at = f"{where} pair {k + 1}"
        _keys(p, PAIR, at, optional=PAIR_OPTIONAL)
        if not PAIR_ID.fullmatch(p["pair_id"]):
            raise BundleError(f"{at}: pair_id {clip(repr(p['pair_id']))} is not 32 hex digits")
        if p["pair_id"] in ids:
            raise BundleError(f"{at}: pair_id {p['pair_id']} appears twice")
        ids.add(p["pair_id"])
        arms = []
        for side in ("config_a", "config_b"):
            try:
                arms.append(arm_from_json(p[side]))
            except ValueError as exc:
                raise BundleError(f"{at}: {side} is not a valid config ({clip(exc)})") from None
        if p["seed"] == NO_SEED and not all(isinstance(arm, ImageArm) for arm in arms):
            raise BundleError(f"{at}: seed has a bad value {NO_SEED} (only a pair of image files may state none)")
        for side in ("sigmas_a", "sigmas_b"):
            try:
                sigmas = json.loads(p[side], parse_constant=_constant)
            except (ValueError, RecursionError):
                raise BundleError(f"{at}: {side} is not a JSON list of numbers") from None
            if not (isinstance(sigmas, list) and all(_finite(x) for x in sigmas)):
                raise BundleError(f"{at}: {side} is not a JSON list of finite numbers")
        for side in ("image_a", "image_b"):
            if not IMAGE_NAME.fullmatch(p[side]):
                raise BundleError(f"{at} names a bad image {clip(repr(p[side]))}")
        if not p.get("check") and (p["question"], p["sampler"], p["steps"]) not in cells:
            raise BundleError(f"{at}: cell {clip(p['question'])}:{clip(p['sampler'])}:{p['steps']} is not one of "
                              "the definition's cells")
    return definition, pairs


def _constant(name):
    raise ValueError(f"{name} is not a number a bundle may hold")


def _depth(value, level=1):
    if isinstance(value, dict):
        return max([level] + [_depth(v, level + 1) for v in value.values()])
    if isinstance(value, list):
        return max([level] + [_depth(v, level + 1) for v in value])
    return level


def _finite(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


# The schema: key -> a type, a tuple of allowed types, or a check function returning True for good values.
def _text(x):
    return isinstance(x, str) and len(x) <= MAX_TEXT


def _count(x):
    return isinstance(x, int) and not isinstance(x, bool) and 0 <= x <= 10 ** 9


def _seed(x):
    return isinstance(x, int) and not isinstance(x, bool) and 0 <= x < 2 ** 63


META_FORMATS = ("a1111", "comfyui", "ab-lab", "none", "unparsed")  # core.image_meta.metadata's formats


def _image_meta(x):
    """None, or JSON text within MAX_META and depth 6 of what `image_campaign` stores: each side's file, format,
    fields, raw text, note (and sampling passes), the manifest's columns, how LPIPS was measured. Every reader
    (the reveal, votes.csv, `/export_votes`) indexes these keys, so a bundle missing one is refused here."""
    if x is None:
        return True
    if not isinstance(x, str) or len(x) > MAX_META:
        return False
    try:
        value = json.loads(x, parse_constant=_constant)
    except (ValueError, RecursionError):
        return False
    if not (isinstance(value, dict) and _depth(value) <= 6 and {"A", "B", "columns"} <= set(value)
            and set(value) <= {"A", "B", "columns", "lpips", "transparency"}):
        return False
    columns = value["columns"]
    return (all(_side_meta(value[side]) for side in ("A", "B"))
            and (columns is None or (isinstance(columns, dict) and all(_text(v) for v in columns.values())))
            and all(_text(value.get(k, "")) for k in ("lpips", "transparency")))


def _side_meta(side):
    """One file's stored metadata: {file, format, fields, raw, note[, passes]}, texts and plain values only."""
    if not (isinstance(side, dict) and {"file", "format", "fields", "raw", "note"} <= set(side)
            and set(side) <= {"file", "format", "fields", "raw", "note", "passes"}):
        return False
    passes = side.get("passes", [])
    return (_text(side["file"]) and side["format"] in META_FORMATS and _text(side["note"])
            and isinstance(side["raw"], dict) and all(isinstance(v, str) for v in side["raw"].values())
            and _plain_fields(side["fields"])
            and isinstance(passes, list) and all(_plain_fields(p) for p in passes))


def _plain_fields(fields):
    """Field name -> a text, a finite number, a bool, None or a list of texts (a combined prompt)."""
    def plain(v):
        return v is None or isinstance(v, (str, bool)) or _finite(v)

    return isinstance(fields, dict) and all(
        isinstance(k, str) and (plain(v) or (isinstance(v, list) and all(isinstance(i, str) for i in v)))
        for k, v in fields.items())


def _source(x):
    """Where an image campaign's pairs came from: folders or a manifest, the two labels, files left out."""
    return (isinstance(x, dict) and set(x) == {"kind", "labels", "unmatched"} and x["kind"] in ("folders", "manifest")
            and isinstance(x["labels"], list) and len(x["labels"]) == 2 and all(_text(v) for v in x["labels"])
            and _count(x["unmatched"]))


def _number_or_none(x):
    return x is None or _finite(x)


def _rate(x):
    return _finite(x) and 0 <= x <= 1


DEFINITION = {"format": str, "version": int, "name": _text, "study": _text, "study_id": _text, "model": _text,
              "per_cell": _count, "only_visible": bool, "seed": _seed, "cells": list}
DEFINITION_OPTIONAL = {"checks": _rate, "n_checks": _count, "source": _source}
CELL = {"question": _text, "sampler": _text, "steps": _count, "pairs": _count, "available": _count,
        "skipped_invisible": _count, "lpips_verdict": _text, "lpips_a_closer_rate": _number_or_none,
        "lpips_p_holm": _number_or_none, "lpips_ab": _number_or_none}
PAIR = {"pair_id": str, "created": _finite, "pairing": _text, "model": _text, "prompt": _text,
        "seed": lambda x: _seed(x) or x == NO_SEED,  # NO_SEED: image files that state none (checked below)
        "config_a": _text, "config_b": _text, "lpips": _number_or_none, "psnr": _number_or_none,
        "ssim": _number_or_none, "max_abs_diff": lambda x: _count(x) and x <= 255,
        "lpips_a_ref": _number_or_none, "lpips_b_ref": _number_or_none, "sigmas_a": _text, "sigmas_b": _text,
        "lockstep": lambda x: x in (0, 1), "seconds": _finite, "image_a": str, "image_b": str,
        "question": _text, "sampler": _text, "steps": _count}
PAIR_OPTIONAL = {"check": bool, "flip_max": _number_or_none, "image_meta": _image_meta}


def _keys(obj, schema, where, optional=None):
    """Every key of `schema` present with a good value; no key that neither schema names."""
    optional = optional or {}
    if not isinstance(obj, dict):
        raise BundleError(f"{where} must be a JSON object (got {type(obj).__name__})")
    unknown = sorted(set(obj) - set(schema) - set(optional))
    if unknown:
        raise BundleError(f"{where} has an unknown key {clip(repr(unknown[0]))}")
    for key, rule in {**schema, **{k: v for k, v in optional.items() if k in obj}}.items():
        if key not in obj:
            raise BundleError(f"{where} lacks {key!r}")
        value = obj[key]
        good = rule(value) if callable(rule) and not isinstance(rule, type) else (
            isinstance(value, rule) and not (rule is int and isinstance(value, bool)))
        if not good:
            raise BundleError(f"{where}: {key} has a bad value {clip(repr(value))}")


def _name(value, where):
    if not NAME.fullmatch(value):
        raise BundleError(f"{where} {clip(repr(value))} must be 1-64 letters, digits, '.', '_' or '-'")
