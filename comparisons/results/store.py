"""The local results table: SQLite (WAL) for pairs and append-only votes, PNGs content-addressed beside it."""
import hashlib
import io
import json
import math
import os
import secrets
import sqlite3
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import PngImagePlugin

from ..errors import DuplicateVote, StoreError, VoteRefused, clip
from ..files import replacing

DEFAULT_PATH = Path("results") / "results.db"
WINNERS = ("A", "B", "tie", "both_bad")
SIDES = ("A", "B")
METRICS = ("lpips", "psnr", "ssim", "max_abs_diff", "lpips_a_ref", "lpips_b_ref", "flip_max")

# Each entry migrates the schema from version i to i + 1 (PRAGMA user_version).
MIGRATIONS = [
    """
    CREATE TABLE pairs (
        pair_id TEXT PRIMARY KEY,
        created REAL NOT NULL,
        pairing TEXT NOT NULL,
        model TEXT NOT NULL,
        prompt TEXT NOT NULL,
        seed INTEGER NOT NULL,
        config_a TEXT NOT NULL,
        config_b TEXT NOT NULL,
        lpips REAL, psnr REAL, ssim REAL, max_abs_diff INTEGER,
        lpips_a_ref REAL, lpips_b_ref REAL,
        image_a TEXT NOT NULL,
        image_b TEXT NOT NULL,
        sigmas_a TEXT NOT NULL,
        sigmas_b TEXT NOT NULL,
        lockstep INTEGER NOT NULL,
        seconds REAL NOT NULL
    );
    CREATE TABLE votes (
        vote_id INTEGER PRIMARY KEY AUTOINCREMENT,
        pair_id TEXT NOT NULL REFERENCES pairs(pair_id),
        winner TEXT NOT NULL CHECK (winner IN ('A', 'B', 'tie', 'both_bad')),
        left_config TEXT NOT NULL CHECK (left_config IN ('A', 'B')),
        session TEXT NOT NULL,
        note TEXT NOT NULL DEFAULT '',
        created REAL NOT NULL,
        UNIQUE (pair_id, session)
    );
    CREATE INDEX votes_by_pair ON votes(pair_id);
    CREATE TRIGGER votes_no_update BEFORE UPDATE ON votes
        BEGIN SELECT RAISE(ABORT, 'votes are append-only'); END;
    CREATE TRIGGER votes_no_delete BEFORE DELETE ON votes
        BEGIN SELECT RAISE(ABORT, 'votes are append-only'); END;
    """,
    # v2: which config a blind viewer was shown on the left ('A' or 'B'); NULL for sweeps.
    "ALTER TABLE pairs ADD COLUMN shown_left TEXT CHECK (shown_left IN ('A', 'B'))",
    # v3: studies. A reference is computed once per (model, prompt, seed, guidance, config, precision);
    # a study row is one sample of one cell, its pair stored in `pairs` so the app can open it.
    """
    CREATE TABLE refs (
        ref_key TEXT PRIMARY KEY,
        model TEXT NOT NULL,
        prompt TEXT NOT NULL,
        seed INTEGER NOT NULL,
        config TEXT NOT NULL,
        precision TEXT NOT NULL,
        image TEXT NOT NULL,
        output TEXT NOT NULL,
        seconds REAL NOT NULL,
        created REAL NOT NULL
    );
    CREATE TABLE studies (
        study_id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        spec TEXT NOT NULL,
        created REAL NOT NULL
    );
    CREATE TABLE study_rows (
        study_id TEXT NOT NULL REFERENCES studies(study_id),
        question TEXT NOT NULL,
        sampler TEXT NOT NULL,
        steps INTEGER NOT NULL,
        prompt TEXT NOT NULL,
        seed INTEGER NOT NULL,
        pair_id TEXT NOT NULL REFERENCES pairs(pair_id),
        ref_key TEXT NOT NULL REFERENCES refs(ref_key),
        lpips_a_ref REAL, lpips_b_ref REAL, rmse_a_ref REAL, rmse_b_ref REAL,
        lpips_ab REAL, max_abs_diff INTEGER, faithful_a INTEGER, faithful_b INTEGER,
        PRIMARY KEY (study_id, question, sampler, steps, prompt, seed)
    );
    CREATE INDEX study_rows_by_pair ON study_rows(pair_id)
    """,
    # v4: a vote belongs to a pair served to that session. Each serving gets an unguessable id; a
    # pair made by sweep or study can be voted on only once the app has served it.
    """
    CREATE TABLE served (
        serve_id TEXT PRIMARY KEY,
        pair_id TEXT NOT NULL REFERENCES pairs(pair_id),
        session TEXT NOT NULL,
        shown_left TEXT NOT NULL CHECK (shown_left IN ('A', 'B')),
        created REAL NOT NULL,
        UNIQUE (pair_id, session)
    );
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)
    """,
    # v5: campaigns, fixed sets of a study's pairs served blind to many voters; a serving and a vote
    # remember the campaign they came through (NULL outside campaigns).
    """
    CREATE TABLE campaigns (
        name TEXT PRIMARY KEY,
        study TEXT NOT NULL,
        definition TEXT NOT NULL,
        created REAL NOT NULL
    );
    CREATE TABLE campaign_pairs (
        campaign TEXT NOT NULL REFERENCES campaigns(name),
        pair_id TEXT NOT NULL REFERENCES pairs(pair_id),
        question TEXT NOT NULL,
        sampler TEXT NOT NULL,
        steps INTEGER NOT NULL,
        PRIMARY KEY (campaign, pair_id)
    );
    ALTER TABLE served ADD COLUMN campaign TEXT;
    ALTER TABLE votes ADD COLUMN campaign TEXT;
    CREATE INDEX served_by_session ON served(session)
    """,
    # v6: FLIP's verdict (the largest FLIP error of the pair as displayed) beside LPIPS; NULL for pairs stored
    # before it, filled in when a study or campaign reads them. A campaign pair may be an attention check
    # (identical images), which never counts toward a cell.
    """
    ALTER TABLE pairs ADD COLUMN flip_max REAL;
    ALTER TABLE study_rows ADD COLUMN flip_max REAL;
    ALTER TABLE campaign_pairs ADD COLUMN is_check INTEGER NOT NULL DEFAULT 0
    """,
    # v7: every arm a study samples, kept like a reference (same key: model, prompt, seed, config, precision) as
    # the sampler's float output, so a later study over the same samples samples only the arms it adds.
    """
    CREATE TABLE arm_outputs (
        arm_key TEXT PRIMARY KEY,
        model TEXT NOT NULL,
        prompt TEXT NOT NULL,
        seed INTEGER NOT NULL,
        config TEXT NOT NULL,
        precision TEXT NOT NULL,
        output TEXT NOT NULL,
        created REAL NOT NULL
    )
    """,
    # v8: pairs of images made elsewhere (a campaign from folders or a manifest): what each file says about itself
    # (core.image_meta) and the manifest's own columns, as JSON; NULL for pairs this tool sampled.
    "ALTER TABLE pairs ADD COLUMN image_meta TEXT",
    # v9: a public campaign counts one vote per (address, pair): a vote keeps its voter's address as a salted hash
    # (NULL outside a hosted campaign), unique per campaign and pair; each campaign pair keeps its servings and
    # votes counted (triggers), so serving the next pair reads the campaign's pairs, not every past serving.
    """
    ALTER TABLE votes ADD COLUMN address TEXT;
    ALTER TABLE campaign_pairs ADD COLUMN n_served INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE campaign_pairs ADD COLUMN n_votes INTEGER NOT NULL DEFAULT 0;
    UPDATE campaign_pairs SET
        n_served = (SELECT COUNT(*) FROM served s
                    WHERE s.campaign = campaign_pairs.campaign AND s.pair_id = campaign_pairs.pair_id),
        n_votes = (SELECT COUNT(*) FROM votes v
                   WHERE v.campaign = campaign_pairs.campaign AND v.pair_id = campaign_pairs.pair_id);
    CREATE TRIGGER served_counted AFTER INSERT ON served WHEN NEW.campaign IS NOT NULL
        BEGIN UPDATE campaign_pairs SET n_served = n_served + 1
              WHERE campaign = NEW.campaign AND pair_id = NEW.pair_id; END;
    CREATE TRIGGER votes_counted AFTER INSERT ON votes WHEN NEW.campaign IS NOT NULL
        BEGIN UPDATE campaign_pairs SET n_votes = n_votes + 1
              WHERE campaign = NEW.campaign AND pair_id = NEW.pair_id; END;
    CREATE UNIQUE INDEX votes_one_per_address ON votes(campaign, address, pair_id) WHERE address IS NOT NULL
    """,
]
STUDY_ROW_FIELDS = ("question", "sampler", "steps", "prompt", "seed", "pair_id", "ref_key", "lpips_a_ref",
                    "lpips_b_ref", "rmse_a_ref", "rmse_b_ref", "lpips_ab", "max_abs_diff", "faithful_a",
                    "faithful_b", "flip_max")


# Every vote with its pair's settings and, for campaign votes, its cell: the one query votes are read by.
VOTES_SQL = ("SELECT v.*, p.pairing, p.config_a, p.config_b, p.prompt, p.model, p.seed, p.lpips, p.flip_max, "
             "p.max_abs_diff, p.image_meta, p.sigmas_a, p.sigmas_b, cp.question, cp.sampler, cp.steps, cp.is_check "
             "FROM votes v JOIN pairs p USING (pair_id) "
             "LEFT JOIN campaign_pairs cp ON cp.campaign = v.campaign AND cp.pair_id = v.pair_id")


# The next campaign pair for a session: fewest votes, then fewest servings (counted per pair, v9), then at random;
# never one this session was served (served_by_session) or, with an address, one that address voted on
# (votes_one_per_address).
SERVE_NEXT_SQL = ("SELECT cp.pair_id, cp.n_served FROM campaign_pairs cp WHERE cp.campaign = ? "
                  "AND cp.pair_id NOT IN (SELECT pair_id FROM served WHERE session = ?) "
                  "AND cp.pair_id NOT IN (SELECT pair_id FROM votes WHERE campaign = ? AND address = ?) "
                  "ORDER BY cp.n_votes, cp.n_served, random() LIMIT 1")


class ResultsStore:
    """Pairs and votes in SQLite; several processes may write at once (WAL, immediate transactions)."""

    def __init__(self, path=DEFAULT_PATH, readonly=False):
        self.path = Path(path)
        self.image_dir = self.path.parent / "images"
        self.readonly = readonly
        if readonly:
            # stats and export only read: they work on a file nobody may write, and change nothing.
            if not self.path.is_file():
                raise StoreError(f"no results file at {self.path}; run a sweep first or pass --results")
            try:
                version = self._read("PRAGMA user_version")[0]["user_version"]
            except sqlite3.DatabaseError as exc:
                raise StoreError(f"results file {self.path} is not a usable results database ({exc}); "
                                 "choose another --results path") from exc
            if version != len(MIGRATIONS):
                raise StoreError(f"results file {self.path} has schema {version}, this version reads "
                                 f"{len(MIGRATIONS)}; open it once with the app or a sweep to upgrade it")
            return
        if self.path.is_dir():
            raise StoreError(f"results path {self.path} is a folder; name a file such as {self.path}/results.db")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the results folder {self.path.parent} ({exc.strerror}); "
                             "choose a writable --results path") from exc
        if not os.access(self.path.parent, os.W_OK) or (self.path.exists() and not os.access(self.path, os.W_OK)):
            raise StoreError(f"results file {self.path} is not writable; choose another --results path")
        self._refuse_foreign()
        self._migrate()

    def _refuse_foreign(self):
        """A file this tool did not make is never migrated: refused while it is still byte-for-byte as it was."""
        if not self.path.exists() or self.path.stat().st_size == 0:
            return
        uri = f"{self.path.absolute().as_uri()}?mode=ro&immutable=1"
        try:
            conn = sqlite3.connect(uri, uri=True)
            try:
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            finally:
                conn.close()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"results file {self.path} is not a usable results database ({exc}); "
                             "move it away or choose another --results path") from exc
        if version > len(MIGRATIONS):
            return  # written by a newer version of this tool: _migrate refuses it in those words
        if (version == 0 and tables) or (version > 0 and not {"pairs", "votes"} <= tables):
            raise StoreError(f"{self.path} is an SQLite file this tool did not make (tables: "
                             f"{clip(', '.join(sorted(tables)) or 'none')}); choose another --results path")

    def _connect(self):
        if self.readonly:
            writable = os.access(self.path, os.W_OK) and os.access(self.path.parent, os.W_OK)
            # immutable=1 where nothing may be written (not even WAL's shared-memory file).
            uri = f"{self.path.absolute().as_uri()}?mode=ro" + ("" if writable else "&immutable=1")
            conn = sqlite3.connect(uri, uri=True, timeout=60, isolation_level=None)
            conn.row_factory = sqlite3.Row
            return conn
        conn = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA busy_timeout = 60000")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA journal_mode = WAL")  # persistent; lets readers and one writer overlap
        return conn

    def hold_open(self):
        """Keep one connection open while this process serves (app.py): the last connection to a WAL file to close
        checkpoints it and deletes the WAL, ~13 ms of writes and syncs that every request paid when nothing else
        held the file (#36). The file stays whole on disk: committed transactions live in the WAL until SQLite's
        automatic checkpoint, and any later open recovers them, after a crash too."""
        if not self.readonly and getattr(self, "_held", None) is None:
            self._held = self._connect()
        return self

    @contextmanager
    def _transaction(self, durable=True):
        """BEGIN IMMEDIATE ... COMMIT, rolled back on any error: never half a row. `durable=False` commits without
        waiting for the disk (WAL's synchronous=NORMAL: atomic and consistent, and kept through a crash of the
        process, but the last such commits may be lost with the machine's power); a later durable commit syncs
        everything before it."""
        conn = self._connect()
        try:
            if not durable:
                conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("BEGIN IMMEDIATE")
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        finally:
            conn.close()

    def _migrate(self):
        try:
            with self._transaction() as conn:
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                if version > len(MIGRATIONS):
                    raise StoreError(f"results file {self.path} was written by a newer version "
                                     f"(schema {version}); upgrade the app or use another --results path")
                for i in range(version, len(MIGRATIONS)):
                    for statement in MIGRATIONS[i].split(";\n"):
                        if statement.strip():
                            conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {len(MIGRATIONS)}")
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"results file {self.path} is not a usable results database ({exc}); "
                             "move it away or choose another --results path") from exc

    def _write(self, sql, params):
        with self._transaction() as conn:
            return conn.execute(sql, params).lastrowid

    def save_image(self, image, metadata):
        """Write a PNG named by its content's SHA-256, with `metadata` as text chunks; relative path."""
        info = PngImagePlugin.PngInfo()
        for key, value in metadata.items():
            info.add_text(key, value if isinstance(value, str) else json.dumps(value, sort_keys=True))
        buf = io.BytesIO()
        image.save(buf, format="PNG", pnginfo=info)
        return self._save_blob(buf.getvalue(), "images", ".png")

    def save_image_bytes(self, data):
        """Store PNG bytes as they are (metadata included), named by their SHA-256; relative path."""
        return self._save_blob(data, "images", ".png")

    def save_array(self, array):
        """Write a float array as .npy named by its content's SHA-256; relative path."""
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
        return self._save_blob(buf.getvalue(), "arrays", ".npy")

    def load_array(self, rel):
        return np.load(self.path.parent / rel, allow_pickle=False)

    def _save_blob(self, data, folder, suffix):
        digest = hashlib.sha256(data).hexdigest()
        rel = Path(folder) / digest[:2] / f"{digest}{suffix}"
        target = self.path.parent / rel
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            with replacing(target, mode=None) as (tmp,):  # a reader never sees half a file
                tmp.write_bytes(data)
        return str(rel)

    def record_pair(self, **fields):
        """Insert one pair (images already saved); returns its pair_id."""
        with self._transaction() as conn:
            return self._insert_pair(conn, **fields)

    def _insert_pair(self, conn, *, pairing, model, prompt, seed, config_a, config_b, image_a, image_b,
                     metrics, sigmas_a, sigmas_b, lockstep, seconds, shown_left=None, image_meta=None):
        pair_id = uuid.uuid4().hex
        row = dict(pair_id=pair_id, created=time.time(), pairing=pairing, model=model, prompt=prompt,
                   seed=int(seed), config_a=config_a.to_json(), config_b=config_b.to_json(),
                   image_a=image_a, image_b=image_b, sigmas_a=json.dumps(sigmas_a),
                   sigmas_b=json.dumps(sigmas_b), lockstep=int(bool(lockstep)), seconds=float(seconds),
                   shown_left=shown_left, image_meta=None if image_meta is None else json.dumps(image_meta),
                   **{k: _real(metrics.get(k)) for k in METRICS})
        cols = ", ".join(row)
        conn.execute(f"INSERT INTO pairs ({cols}) VALUES ({', '.join(':' + k for k in row)})", row)
        return pair_id

    # ---- references and studies -------------------------------------------------------------------

    def reference(self, ref_key):
        rows = self._read("SELECT * FROM refs WHERE ref_key = ?", (ref_key,))
        return rows[0] if rows else None

    def references(self, ref_keys):
        """{ref_key: row} of those of `ref_keys` that are stored, in one connection."""
        return self._rows_by_key("refs", "ref_key", ref_keys)

    def _rows_by_key(self, table, column, keys):
        keys, found = sorted(set(keys)), {}
        conn = self._connect()
        try:
            for i in range(0, len(keys), 500):  # under SQLite's limit on bound variables
                part = keys[i:i + 500]
                sql = f"SELECT * FROM {table} WHERE {column} IN ({', '.join('?' * len(part))})"
                found.update({r[column]: dict(r) for r in conn.execute(sql, part)})
            return found
        finally:
            conn.close()

    def record_reference(self, *, ref_key, model, prompt, seed, config, precision, image, output, seconds):
        """Insert a reference once; a second insert of the same key is a no-op."""
        self._write("INSERT OR IGNORE INTO refs (ref_key, model, prompt, seed, config, precision, image, output, "
                    "seconds, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (ref_key, model, prompt, int(seed), config, precision, image, output, float(seconds),
                     time.time()))

    def arm_outputs(self, arm_keys):
        """{arm_key: row} of those of `arm_keys` whose sampled output is stored, in one connection."""
        return self._rows_by_key("arm_outputs", "arm_key", arm_keys)

    def record_arm_outputs(self, rows):
        """Insert sampled arm outputs [{arm_key, model, prompt, seed, config, precision, output}] in one
        transaction; a key already stored is kept as it is."""
        with self._transaction() as conn:
            conn.executemany("INSERT OR IGNORE INTO arm_outputs (arm_key, model, prompt, seed, config, precision, "
                             "output, created) VALUES (:arm_key, :model, :prompt, :seed, :config, :precision, "
                             ":output, :created)", [{**r, "created": time.time()} for r in rows])

    def open_study(self, study_id, name, spec):
        """The study `name` with this spec: created if new; refused if the name holds another spec."""
        with self._transaction() as conn:
            same_grid = conn.execute("SELECT name FROM studies WHERE study_id = ? AND name != ?",
                                     (study_id, name)).fetchone()
            if same_grid:
                raise StoreError(f"this exact study is already stored as {same_grid[0]!r} in {self.path}; open "
                                 f"it (or rerun it) under that name, or change its grid")
            rows = conn.execute("SELECT study_id FROM studies WHERE name = ?", (name,)).fetchall()
            if rows and rows[0][0] != study_id:
                raise StoreError(f"a study named {name!r} with another grid exists in {self.path}; choose "
                                 "another --name (or --out), or rerun its own command to resume it")
            if not rows:
                conn.execute("INSERT INTO studies (study_id, name, spec, created) VALUES (?, ?, ?, ?)",
                             (study_id, name, spec, time.time()))

    def studies(self):
        return self._read("SELECT s.*, (SELECT COUNT(*) FROM study_rows r WHERE r.study_id = s.study_id) AS rows "
                          "FROM studies s ORDER BY created")

    def study(self, name):
        rows = self._read("SELECT * FROM studies WHERE name = ?", (name,))
        return rows[0] if rows else None

    def study_rows(self, study_id):
        """Every row of a study with its pair's images, in grid order."""
        return self._read("SELECT r.*, p.image_a, p.image_b, p.config_a, p.config_b FROM study_rows r "
                          "JOIN pairs p USING (pair_id) WHERE r.study_id = ? "
                          "ORDER BY question, sampler, steps, prompt, seed", (study_id,))

    def pairs_page(self, page, per_page=50):
        """(one page of the pairs made in the app or by sweep, newest first; how many there are)."""
        where = "WHERE pair_id NOT IN (SELECT pair_id FROM study_rows)"
        rows = self._read(f"SELECT * FROM pairs {where} ORDER BY created DESC, pair_id LIMIT ? OFFSET ?",
                          (per_page, max(0, page) * per_page))
        return rows, self._read(f"SELECT COUNT(*) AS n FROM pairs {where}")[0]["n"]

    def votes_page(self, page, per_page=50):
        """(one page of the votes, newest first; how many there are)."""
        rows = self._read(f"{VOTES_SQL} ORDER BY v.vote_id DESC LIMIT ? OFFSET ?", (per_page, max(0, page) * per_page))
        return rows, self._read("SELECT COUNT(*) AS n FROM votes")[0]["n"]

    def study_row(self, pair_id):
        """The study row a pair belongs to, or None for pairs made in the app or by sweep."""
        rows = self._read("SELECT * FROM study_rows WHERE pair_id = ?", (pair_id,))
        return rows[0] if rows else None

    def study_sample_counts(self, study_id):
        """{(prompt, seed): rows stored}: a sample is complete when it has a row for every cell."""
        rows = self._read("SELECT prompt, seed, COUNT(*) AS n FROM study_rows WHERE study_id = ? "
                          "GROUP BY prompt, seed", (study_id,))
        return {(r["prompt"], r["seed"]): r["n"] for r in rows}

    def record_study_chunk(self, study_id, items):
        """Pairs and study rows of one chunk of samples in one transaction: all of them or none.

        `items` is a list of (pair fields for record_pair, study row dict without pair_id); rows already
        present (a resumed run) are skipped, so no row is ever duplicated.
        """
        with self._transaction() as conn:
            written = 0
            for pair_fields, row in items:
                key = (study_id, row["question"], row["sampler"], row["steps"], row["prompt"], row["seed"])
                if conn.execute("SELECT 1 FROM study_rows WHERE study_id = ? AND question = ? AND sampler = ? "
                                "AND steps = ? AND prompt = ? AND seed = ?", key).fetchone():
                    continue
                pair_id = self._insert_pair(conn, **pair_fields)
                values = {**row, "pair_id": pair_id, "study_id": study_id}
                values = {k: _real(v) if k.startswith(("lpips", "rmse", "flip")) else v for k, v in values.items()}
                cols = ("study_id",) + STUDY_ROW_FIELDS
                conn.execute(f"INSERT INTO study_rows ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                             [values[c] for c in cols])
                written += 1
            return written

    def set_flip(self, flips):
        """Fill in FLIP's verdict {pair_id: max FLIP error} of pairs (and their study rows) stored without it."""
        with self._transaction() as conn:
            for table in ("pairs", "study_rows"):
                conn.executemany(f"UPDATE {table} SET flip_max = ? WHERE pair_id = ? AND flip_max IS NULL",
                                 [(float(v), k) for k, v in flips.items()])

    def record_vote(self, pair_id, winner, left, session, note="", campaign=None, address=None, max_per_address=None):
        """Append a vote: winner A/B/tie/both_bad, which config was on the left, the voter's session. With `address`
        (a salted hash; hosted campaigns): one vote per (campaign, address, pair), and at most `max_per_address` in
        the campaign from that address; checked and written in one transaction. A write the disk refuses (full,
        read-only) is a StoreError "the vote was not saved: <reason>": nothing is half written."""
        if winner not in WINNERS:
            raise ValueError(f"winner must be one of {', '.join(WINNERS)} (got {winner!r})")
        if left not in SIDES:
            raise ValueError(f"left must be 'A' or 'B' (got {left!r})")
        if not session:
            raise ValueError("a vote needs a session id")
        note = str(note or "")[:2000]
        try:
            with self._transaction() as conn:
                if address is not None and max_per_address is not None:
                    n = conn.execute("SELECT COUNT(*) FROM votes WHERE campaign IS ? AND address = ?",
                                     (campaign, address)).fetchone()[0]
                    if n >= max_per_address:
                        raise VoteRefused(f"this campaign takes at most {max_per_address} votes from one address, "
                                          "and yours has cast them: thank you")
                vote_id = conn.execute(
                    "INSERT INTO votes (pair_id, winner, left_config, session, note, created, campaign, address) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (pair_id, winner, left, session, note, time.time(), campaign, address)).lastrowid
        except sqlite3.IntegrityError as exc:
            # The schema decides, inside the transaction: the pair must exist, the vote must be new.
            if "FOREIGN KEY" in str(exc):
                raise KeyError(f"no pair {pair_id!r} in {self.path}") from exc
            if "address" in str(exc):
                raise VoteRefused("a vote on this pair from your address is already recorded; one vote per pair "
                                  "and address counts") from exc
            raise DuplicateVote("this session has already voted on this pair; generate a new pair") from exc
        except sqlite3.OperationalError as exc:
            raise StoreError(f"the vote was not saved: {exc}") from exc
        return {"vote_id": vote_id, "pair_id": pair_id, "winner": winner, "left": left, "session": session,
                "note": note, "campaign": campaign}

    def serve(self, pair_id, session, shown_left, campaign=None):
        """Record that `pair_id` is shown to `session` with `shown_left` on the left; the serving's id.

        Serving the same pair to the same session again returns the first serving (same sides).
        """
        if shown_left not in SIDES:
            raise ValueError(f"shown_left must be 'A' or 'B' (got {shown_left!r})")
        if not session:
            raise ValueError("a served pair needs a session id")
        with self._transaction() as conn:
            row = conn.execute("SELECT serve_id FROM served WHERE pair_id = ? AND session = ?",
                               (pair_id, session)).fetchone()
            if row:
                return row[0]
            serve_id = secrets.token_hex(16)
            try:
                conn.execute("INSERT INTO served (serve_id, pair_id, session, shown_left, created, campaign) "
                             "VALUES (?, ?, ?, ?, ?, ?)",
                             (serve_id, pair_id, session, shown_left, time.time(), campaign))
            except sqlite3.IntegrityError as exc:
                raise KeyError(f"no pair {pair_id!r} in {self.path}") from exc
            return serve_id

    def serve_next(self, campaign, session, side_of, address=None):
        """Serve `session` the campaign pair it has not seen with the fewest votes (then the fewest servings,
        then at random), its left side `side_of(pair_id, servings so far)`; (serve_id, pair_id, shown_left), or
        None when it has seen them all (with `address`: pairs that address has voted on are not served again). One
        transaction, so two visitors asking at once are balanced too. Its cost does not grow with past servings:
        the counts are kept per campaign pair (v9's triggers), the session's servings and the address's votes are
        read through their indexes (SERVE_NEXT_SQL; tests/test_public_demo.py reads its query plan)."""
        try:
            # A serving is not waited on the disk for: losing the last few to a power cut costs their visitors a
            # "not served to you" and a fresh pair, never a vote (a vote's commit syncs the servings before it).
            with self._transaction(durable=False) as conn:
                row = conn.execute(SERVE_NEXT_SQL, (campaign, session, campaign, address)).fetchone()
                if row is None:
                    return None
                serve_id, shown_left = secrets.token_hex(16), side_of(row[0], row[1])
                if shown_left not in SIDES:
                    raise ValueError(f"shown_left must be 'A' or 'B' (got {shown_left!r})")
                conn.execute("INSERT INTO served (serve_id, pair_id, session, shown_left, created, campaign) "
                             "VALUES (?, ?, ?, ?, ?, ?)",
                             (serve_id, row[0], session, shown_left, time.time(), campaign))
                return serve_id, row[0], shown_left
        except sqlite3.OperationalError as exc:
            raise StoreError(f"the pair could not be served: {exc}") from exc

    def quick_check(self):
        """SQLite's PRAGMA quick_check: '' when the file is sound, else what it found (first lines), for a refusal
        at start rather than a failure at the first vote."""
        try:
            conn = self._connect()
            try:
                rows = [r[0] for r in conn.execute("PRAGMA quick_check(5)").fetchall()]
            finally:
                conn.close()
        except sqlite3.DatabaseError as exc:
            return str(exc)
        return "" if rows == ["ok"] else "; ".join(rows)

    def add_campaign(self, name, study, definition, pairs, checks=(), new_pairs=()):
        """Create campaign `name` with its stored pairs [(pair_id, question, sampler, steps)], pairs new to this file
        [(pair fields for record_pair, (question, sampler, steps))] (a campaign of image files) and its attention
        checks (the same form, stored as new pairs); all in one transaction. False if it already exists with the
        same definition (nothing written), StoreError if with another."""
        with self._transaction() as conn:
            row = conn.execute("SELECT definition FROM campaigns WHERE name = ?", (name,)).fetchone()
            if row:
                if row[0] != definition:
                    raise StoreError(f"a campaign named {name!r} with other pairs exists in {self.path}; "
                                     "choose another name")
                return False
            conn.execute("INSERT INTO campaigns (name, study, definition, created) VALUES (?, ?, ?, ?)",
                         (name, study, definition, time.time()))
            conn.executemany("INSERT INTO campaign_pairs (campaign, pair_id, question, sampler, steps) "
                             "VALUES (?, ?, ?, ?, ?)", [(name, *p) for p in pairs])
            conn.executemany("INSERT INTO campaign_pairs (campaign, pair_id, question, sampler, steps, is_check) "
                             "VALUES (?, ?, ?, ?, ?, ?)",
                             [(name, self._insert_pair(conn, **fields), *cell, check)
                              for check, group in ((0, new_pairs), (1, checks)) for fields, cell in group])
            return True

    def import_campaign(self, name, study, definition, pair_rows, cell_pairs):
        """One transaction: the pairs (kept if already here, same id) and the campaign over them."""
        with self._transaction() as conn:
            for row in pair_rows:
                columns = ", ".join(row)
                conn.execute(f"INSERT OR IGNORE INTO pairs ({columns}) VALUES ({', '.join('?' * len(row))})",
                             tuple(row.values()))
            if conn.execute("SELECT 1 FROM campaigns WHERE name = ?", (name,)).fetchone():
                raise StoreError(f"a campaign named {name!r} exists in {self.path}; refused")
            conn.execute("INSERT INTO campaigns (name, study, definition, created) VALUES (?, ?, ?, ?)",
                         (name, study, definition, time.time()))
            conn.executemany("INSERT INTO campaign_pairs (campaign, pair_id, question, sampler, steps, is_check) "
                             "VALUES (?, ?, ?, ?, ?, ?)", [(name, *p) for p in cell_pairs])

    def campaign(self, name):
        rows = self._read("SELECT * FROM campaigns WHERE name = ?", (name,))
        return rows[0] if rows else None

    def campaigns(self):
        return self._read("SELECT c.*, (SELECT COUNT(*) FROM campaign_pairs p WHERE p.campaign = c.name "
                          "AND NOT p.is_check) AS pairs FROM campaigns c ORDER BY created")

    def campaign_pairs(self, name):
        """The campaign's pairs with their cell, whether each is an attention check, and the stored pair columns, in
        cell order."""
        return self._read("SELECT cp.question, cp.sampler, cp.steps, cp.is_check, p.* FROM campaign_pairs cp "
                          "JOIN pairs p USING (pair_id) WHERE cp.campaign = ? "
                          "ORDER BY cp.question, cp.sampler, cp.steps, p.pair_id", (name,))

    def campaign_votes(self, name):
        """Votes cast through the campaign, with the cell of their pair and whether it is an attention check."""
        return self._read("SELECT v.*, cp.question, cp.sampler, cp.steps, cp.is_check FROM votes v "
                          "JOIN campaign_pairs cp ON cp.pair_id = v.pair_id AND cp.campaign = v.campaign "
                          "WHERE v.campaign = ? ORDER BY v.vote_id", (name,))

    def served(self, serve_id):
        rows = self._read("SELECT * FROM served WHERE serve_id = ?", (serve_id,))
        return rows[0] if rows else None

    def voted(self, pair_id, session):
        """Has `session` voted on `pair_id`?"""
        return bool(self._read("SELECT 1 FROM votes WHERE pair_id = ? AND session = ?", (pair_id, session)))

    def salt(self):
        """A random salt kept in the results file, for exporting session ids as salted hashes."""
        with self._transaction() as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = 'salt'").fetchone()
            if row:
                return row[0]
            value = secrets.token_hex(16)
            conn.execute("INSERT INTO meta (key, value) VALUES ('salt', ?)", (value,))
            return value

    def _read(self, sql, params=()):
        conn = self._connect()
        try:
            return [dict(r) for r in conn.execute(sql, params).fetchall()]
        finally:
            conn.close()

    def version(self):
        """What the Results tab's numbers depend on, in one row: the last vote, the pairs, the campaigns."""
        row = self._read("SELECT (SELECT MAX(vote_id) FROM votes) AS votes, (SELECT COUNT(*) FROM pairs) AS pairs, "
                         "(SELECT COUNT(*) FROM campaign_pairs) AS campaign_pairs, "
                         "(SELECT COUNT(*) FROM campaigns) AS campaigns")[0]
        return tuple(row.values())

    def pairs_with_ids(self, pair_ids):
        """{pair_id: row} of those of `pair_ids` that are stored, in one connection."""
        return self._rows_by_key("pairs", "pair_id", pair_ids)

    def pair(self, pair_id):
        rows = self._read("SELECT * FROM pairs WHERE pair_id = ?", (pair_id,))
        return rows[0] if rows else None

    def pairs(self):
        return self._read("SELECT * FROM pairs ORDER BY created, pair_id")

    def votes(self):
        return self._read(f"{VOTES_SQL} ORDER BY v.vote_id")

    def vote_tally(self):
        """{(pairing, config A, config B, prompt, winner, left side): votes}, counted by SQLite (GROUP BY): what
        analysis.stats.tally() makes of votes(), read as one row per distinct key rather than one per vote."""
        rows = self._read("SELECT p.pairing, p.config_a, p.config_b, p.prompt, v.winner, v.left_config, COUNT(*) AS n "
                          "FROM votes v JOIN pairs p USING (pair_id) "
                          "GROUP BY p.pairing, p.config_a, p.config_b, p.prompt, v.winner, v.left_config")
        return {tuple(r.values())[:-1]: r["n"] for r in rows}

    def lpips_pairs(self):
        """Every measured pair's comparison and LPIPS(A, B), oldest first: pairing, config_a, config_b, lpips and
        study (1 for a study's pair), one query; the LPIPS chart groups them per comparison
        (analysis.charts.comparison_groups), never by pairing and steps alone, which pools samplers and configs."""
        return self._read("SELECT pairing, config_a, config_b, lpips, "
                          "pair_id IN (SELECT pair_id FROM study_rows) AS study "
                          "FROM pairs WHERE lpips IS NOT NULL ORDER BY created, pair_id")


def _real(value):
    """SQLite stores inf; NaN and None become NULL."""
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value
