"""`campaign import` against hostile bundles: each refused with exit 2 and one line naming the entry and the
problem, the target results file and its folder byte-for-byte unchanged, no image left behind."""
import copy
import hashlib
import io
import json
import sqlite3
import zipfile

import numpy as np
import pytest
from PIL import Image

from comparisons.cli import main as cli_main
from comparisons.results.bundle import MAX_IMAGE_BYTES, MAX_MANIFEST_BYTES, image_name
from comparisons.results.store import ResultsStore
from tests.test_campaign import STUDY


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    """A real bundle: a tiny study's campaign of 4 pairs and one attention check, exported."""
    root = tmp_path_factory.mktemp("bundle")
    out = io.StringIO()
    assert cli_main([*STUDY, "--results", str(root / "r.db"), "--out", str(root / "tiny")], out=out) == 0
    assert cli_main(["campaign", "create", "real", "--study", "tiny", "--cells", "final-zero:heun:2",
                     "--per-cell", "4", "--checks", "0.25", "--results", str(root / "r.db")], out=out) == 0
    path = root / "bundle.zip"
    assert cli_main(["campaign", "export", "real", "--out", str(path), "--results", str(root / "r.db")], out=out) == 0
    return path


def contents(path):
    with zipfile.ZipFile(path) as z:
        return json.loads(z.read("campaign.json")), {n: z.read(n) for n in z.namelist() if n != "campaign.json"}


def write(path, manifest, images, extra=()):
    """A bundle from a manifest (dict, or raw bytes) and images; `extra` are (ZipInfo or name, bytes) entries."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("campaign.json", manifest if isinstance(manifest, bytes) else json.dumps(manifest))
        for name, data in images.items():
            z.writestr(name, data)
        for info, data in extra:
            z.writestr(info, data)
    return path


@pytest.fixture
def target(tmp_path):
    """A results file that already holds a pair, and a snapshot of its whole folder."""
    store = ResultsStore(tmp_path / "space" / "r.db")
    from comparisons.core.config import SamplerConfig
    image = store.save_image(Image.new("RGB", (8, 8), (1, 2, 3)), {})
    store.record_pair(pairing="p", model="m", prompt="x", seed=1, config_a=SamplerConfig(),
                      config_b=SamplerConfig(steps=4), image_a=image, image_b=image, metrics={}, sigmas_a=[1.0],
                      sigmas_b=[1.0], lockstep=True, seconds=0.0)
    return store.path


def snapshot(folder):
    """Every file's hash, but SQLite's -shm: the WAL index any reader updates, never data."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.name.endswith("-shm")}


def refused(path, results, capsys, message):
    folder = results.parent
    before = snapshot(folder)
    assert cli_main(["campaign", "import", str(path), "--results", str(results)], out=io.StringIO()) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err, err
    assert snapshot(folder) == before  # byte-for-byte: no file changed, none added (no image, no WAL)


def mutate(bundle, change):
    manifest, images = contents(bundle)
    manifest = copy.deepcopy(manifest)
    change(manifest)
    return manifest, images


SIDE_META_WITHOUT_FILE = {"format": "a1111", "fields": {"steps": 20}, "raw": {}, "note": ""}
SCHEMA_CASES = {
    "cells as a string": (lambda m: m["definition"].__setitem__("cells", "all"), "cells has a bad value"),
    "created as a word": (lambda m: m["pairs"][0].__setitem__("created", "yesterday"), "created has a bad value"),
    "no study": (lambda m: m["definition"].pop("study"), "lacks 'study'"),
    "no name": (lambda m: m["definition"].pop("name"), "lacks 'name'"),
    "prompt null": (lambda m: m["pairs"][1].__setitem__("prompt", None), "prompt has a bad value"),
    "steps as a word": (lambda m: m["pairs"][0].__setitem__("steps", "four"), "steps has a bad value"),
    "HTML in the name": (lambda m: m["definition"].__setitem__("name", "<img src=x onerror=alert(1)>"),
                         "must be 1-64 letters"),
    "an unknown key": (lambda m: m["pairs"][0].__setitem__("admin", True), "unknown key 'admin'"),
    "a seed of -1": (lambda m: m["pairs"][0].__setitem__("seed", -1), "seed has a bad value"),
    "a cell not in the definition": (lambda m: next(p for p in m["pairs"] if not p["check"]).__setitem__("steps", 99),
                                     "is not one of the definition's cells"),
    "a bad config": (lambda m: m["pairs"][0].__setitem__("config_a", '{"steps": 0}'), "config_a is not a valid"),
    "a bad pair id": (lambda m: m["pairs"][0].__setitem__("pair_id", "../x"), "is not 32 hex digits"),
    "a pair id twice": (lambda m: m["pairs"][1].__setitem__("pair_id", m["pairs"][0]["pair_id"]), "appears twice"),
    "an image path outside images/": (lambda m: m["pairs"][0].__setitem__("image_a", "../r.db"), "bad image"),
    # image_meta that parses as JSON but lacks what every reader indexes (the reveal, votes.csv, /export_votes)
    "image_meta of a file without its name": (
        lambda m: m["pairs"][0].__setitem__("image_meta", json.dumps(
            {"A": SIDE_META_WITHOUT_FILE, "B": {**SIDE_META_WITHOUT_FILE, "file": "b.png"}, "columns": None})),
        "image_meta has a bad value"),
    "image_meta as a bare object": (lambda m: m["pairs"][0].__setitem__("image_meta", "{}"),
                                    "image_meta has a bad value"),
    "image_meta with markup as a format": (
        lambda m: m["pairs"][0].__setitem__("image_meta", json.dumps(
            {side: {**SIDE_META_WITHOUT_FILE, "file": "x.png", "format": "<b>x</b>"} for side in ("A", "B")}
            | {"columns": None})), "image_meta has a bad value"),
    "image_meta with a nested field value": (
        lambda m: m["pairs"][0].__setitem__("image_meta", json.dumps(
            {side: {**SIDE_META_WITHOUT_FILE, "file": "x.png", "fields": {"steps": {"a": 1}}} for side in ("A", "B")}
            | {"columns": None})), "image_meta has a bad value"),
}


@pytest.mark.parametrize("case", sorted(SCHEMA_CASES))
def test_schema_violations_are_refused(bundle, target, tmp_path, capsys, case):
    change, message = SCHEMA_CASES[case]
    manifest, images = mutate(bundle, change)
    refused(write(tmp_path / "b.zip", manifest, images), target, capsys, message)


def test_json_that_is_not_a_bundle(bundle, target, tmp_path, capsys):
    manifest, images = contents(bundle)
    deep = b"[" * 200_000 + b"]" * 200_000
    refused(write(tmp_path / "deep.zip", deep, images), target, capsys, "nests too deeply")
    text = json.dumps(manifest).replace('"seconds": 0.0', '"seconds": NaN', 1).encode()
    refused(write(tmp_path / "nan.zip", text, images), target, capsys, "NaN is not a number")


@pytest.mark.filterwarnings("ignore:Duplicate name")  # the duplicate entry is the point
def test_zip_entries_that_are_not_plain_images(bundle, target, tmp_path, capsys):
    manifest, images = contents(bundle)
    link = zipfile.ZipInfo(next(iter(images)))
    link.external_attr = (0o120777 << 16)  # a symbolic link, stored under an image's name
    refused(write(tmp_path / "link.zip", manifest, {k: v for k, v in images.items() if k != link.filename},
                  [(link, b"/etc/passwd")]), target, capsys, "is not a regular file")
    refused(write(tmp_path / "twice.zip", manifest, images, [("campaign.json", json.dumps(manifest))]), target,
            capsys, "holds 'campaign.json' twice")
    refused(write(tmp_path / "escape.zip", manifest, images, [("../evil.png", b"x")]), target, capsys,
            "escapes the bundle")
    refused(write(tmp_path / "stray.zip", manifest, images, [("images/" + "0" * 64 + ".png", b"x")]), target,
            capsys, "belongs to no pair")
    refused(write(tmp_path / "odd.zip", manifest, images, [("notes.txt", b"x")]), target, capsys,
            "unexpected entry 'notes.txt'")


def test_a_bad_crc_is_refused(bundle, target, tmp_path, capsys):
    manifest, images = contents(bundle)
    path = tmp_path / "crc.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr("campaign.json", json.dumps(manifest))
        for name, data in images.items():
            z.writestr(name, data)
    raw = bytearray(path.read_bytes())
    first = next(iter(images))
    at = raw.index(images[first][100:120])  # inside the stored bytes of the first image
    raw[at] ^= 0xFF
    path.write_bytes(bytes(raw))
    refused(path, target, capsys, "is corrupt")


def test_size_and_pixel_bombs_small_on_disk(bundle, target, tmp_path, capsys):
    manifest, images = contents(bundle)
    huge = b" " * (MAX_MANIFEST_BYTES + 1)  # a 64 MiB campaign.json, a few kB compressed
    refused(write(tmp_path / "json-bomb.zip", huge, images), target, capsys, "unpacks to")
    name = next(iter(images))
    refused(write(tmp_path / "image-bomb.zip", manifest, {**images, name: b"\0" * (MAX_IMAGE_BYTES + 1)}), target,
            capsys, "unpacks to")
    # A 5000x5000 PNG of one colour: 25 megapixels in a few kB.
    buf = io.BytesIO()
    Image.fromarray(np.zeros((5000, 5000, 3), np.uint8)).save(buf, format="PNG")
    bomb = buf.getvalue()
    manifest["pairs"][0]["image_a"] = image_name(bomb)
    still_used = {p[s] for p in manifest["pairs"] for s in ("image_a", "image_b")}
    kept = {k: v for k, v in images.items() if k in still_used}
    path = write(tmp_path / "pixels.zip", manifest, {**kept, image_name(bomb): bomb})
    assert path.stat().st_size < 1 << 20  # small on disk, like every bomb here
    refused(path, target, capsys, "pixels, more than")


def test_existing_pair_ids_with_other_contents_are_refused(bundle, target, tmp_path, capsys):
    manifest, images = contents(bundle)
    # The target already holds one of the bundle's pair ids, made from another prompt.
    first = manifest["pairs"][0]
    with sqlite3.connect(target) as conn:
        row = conn.execute("SELECT * FROM pairs LIMIT 1").fetchone()
        cols = [d[0] for d in conn.execute("SELECT * FROM pairs LIMIT 1").description]
        clone = dict(zip(cols, row), pair_id=first["pair_id"], prompt="something else")
        conn.execute(f"INSERT INTO pairs ({', '.join(clone)}) VALUES ({', '.join('?' * len(clone))})",
                     list(clone.values()))
    refused(bundle, target, capsys, f"pair {first['pair_id']} already exists in this results file with another")


def test_a_foreign_sqlite_file_is_never_migrated(bundle, tmp_path, capsys):
    foreign = tmp_path / "other" / "app.db"
    foreign.parent.mkdir()
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
    refused(bundle, foreign, capsys, "an SQLite file this tool did not make")


def test_the_real_bundle_imports_and_again_changes_nothing(bundle, tmp_path):
    results = tmp_path / "fresh" / "r.db"
    out = io.StringIO()
    assert cli_main(["campaign", "import", str(bundle), "--results", str(results)], out=out) == 0
    store = ResultsStore(results)
    pairs = store.campaign_pairs("real")
    assert len(pairs) == 5 and sum(p["is_check"] for p in pairs) == 1 and "5 pairs imported" in out.getvalue()
    def state():  # rows and files; the database file's bytes may move between its WAL and itself
        with sqlite3.connect(results) as conn:
            rows = list(conn.iterdump())
        return rows, {k: v for k, v in snapshot(results.parent).items() if not k.startswith("r.db")}
    before = state()
    assert cli_main(["campaign", "import", str(bundle), "--results", str(results)], out=out) == 0
    assert "nothing changed" in out.getvalue() and state() == before
