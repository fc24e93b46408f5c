"""Issue #36 item 2, what a hosted campaign's requests cost, counted rather than timed (bench/bench_campaign_load.py
times them): a serving commits without waiting for the disk and a vote waits for it; a serving process keeps the
results file open, so no request pays for the WAL checkpoint of its last connection; an image leaves in one read
and one send."""
import asyncio
import os

from comparisons.results.store import ResultsStore
from comparisons.workflows.blind import cast_vote
from tests.test_integrity import _pair
from ui.limits import Doors


def _commits(store, monkeypatch):
    """Record, for every COMMIT, the connection's PRAGMA synchronous then (1 NORMAL, 2 FULL)."""
    seen, real = [], store._connect

    class Recorder:
        def __init__(self, conn):
            self.conn = conn

        def execute(self, sql, *args):
            if sql == "COMMIT":
                seen.append(self.conn.execute("PRAGMA synchronous").fetchone()[0])
            return self.conn.execute(sql, *args)

        def __getattr__(self, name):
            return getattr(self.conn, name)

    monkeypatch.setattr(store, "_connect", lambda: Recorder(real()))
    return seen


def test_a_serving_does_not_wait_for_the_disk_and_a_vote_does(tmp_path, monkeypatch):
    store = ResultsStore(tmp_path / "r.db")
    pair_id = _pair(store)
    seen = _commits(store, monkeypatch)
    assert store.serve_next("no-such-campaign", "s", lambda *a: "A") is None  # its transaction commits all the same
    assert seen == [1]
    served = store.serve(pair_id, "s", "A")
    cast_vote(store, served, "left", "s")
    assert seen[1:] == [2, 2]  # the Compare tab's serving and the vote: synchronous=FULL, the default


def test_a_held_store_keeps_its_wal_between_requests(tmp_path):
    loose = ResultsStore(tmp_path / "a" / "r.db")
    _pair(loose)
    assert not (tmp_path / "a" / "r.db-wal").exists()  # the last connection's close checkpointed and removed it
    held = ResultsStore(tmp_path / "b" / "r.db").hold_open()
    pair_id = _pair(held)
    assert (tmp_path / "b" / "r.db-wal").stat().st_size > 0
    # Another store on the file (the CLI, a second process) reads what the held one committed.
    assert ResultsStore(tmp_path / "b" / "r.db").pair(pair_id)["pair_id"] == pair_id
    assert ResultsStore(tmp_path / "b" / "r.db", readonly=True).pair(pair_id)["pair_id"] == pair_id


def test_an_image_leaves_in_one_send(tmp_path):
    data = os.urandom(1_500_000)  # a 1024² display PNG is about this size
    (tmp_path / "x.png").write_bytes(data)
    doors = Doors(None, image_path=lambda token: tmp_path / "x.png" if token == "t" * 32 else None)
    sent = []

    async def serve():
        answered = asyncio.Event()

        async def send(message):
            sent.append(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                answered.set()

        async def receive():  # the client stays connected until the whole answer is sent, then leaves
            await answered.wait()
            return {"type": "http.disconnect"}

        scope = {"type": "http", "method": "GET", "path": f"/pair-image/v1/{'t' * 32}.png", "headers": []}
        await asyncio.wait_for(doors(scope, receive, send), 120)  # a fail-safe: a stuck answer fails, not hangs

    asyncio.run(serve())
    start, *bodies = sent
    assert start["status"] == 200 and dict(start["headers"])[b"cache-control"].startswith(b"public")
    assert len([b for b in bodies if b.get("body")]) == 1 and b"".join(b.get("body", b"") for b in bodies) == data
