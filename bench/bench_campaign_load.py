"""Issue #36 item 2: a hosted campaign under concurrent voters, on loopback (127.0.0.1) only, bounded in time.

    .venv/bin/python bench/bench_campaign_load.py [--voters 50] [--seconds 60] [--pairs 16] [--size 1024]
                                                  [--workdir DIR]

Makes a campaign of `pairs` image pairs of size² pixels (`campaign create --from-manifest`, as
tests/test_public_demo.py does; kept in --workdir and reused when it is there, since measuring 1024² pairs takes
minutes), serves it with `app.py --campaign c --hosted --trust-proxy` in a subprocess with the hosted limits as
shipped, and runs `voters` voters at once (asyncio, one httpx connection pool) for `seconds`. Each voter loops as
gradio_client does it (`/gradio_api/queue/join`, then the session's `/gradio_api/queue/data` stream): `/next_pair`,
GET both image URLs (no client cache: a fresh visitor's browser fetches every image once), `/vote`. A voter is a
visitor with its own session and address (X-Forwarded-For, which --trust-proxy makes the server key limits and
votes on: ui.limits.client_address); after voting on every pair of the campaign it leaves and a new visitor (new
session, new address) takes its place, so 50 are voting at every moment and none is held back by the
per-address limits (30 votes and 60 servings a minute, one counted vote per address and pair).

Before the timed run one visitor votes on every pair (each pair's first serving measures its visibility line and
writes its display PNG once: the warm-up, reported apart). Reports votes/s, serve / vote / image GET p50 and p95,
bytes per answer, the server's resident memory (VmRSS) and CPU seconds, the load average, and errors by kind.
"""
import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


def cpu_seconds(pid):
    """utime + stime of a process (and its reaped children), from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def campaign(workdir, pairs, size):
    """The campaign's results file in `workdir` (made there once per (pairs, size), then reused)."""
    from tests.test_public_demo import image_campaign
    root = Path(workdir) / f"campaign-{pairs}x{size}"
    db = root / "r.db"
    if (root / "complete").exists():
        return db, 0.0
    shutil.rmtree(root, ignore_errors=True)
    started = time.perf_counter()
    image_campaign(root, n=pairs, size=size, checks="0")
    (root / "complete").write_text("ok\n")
    return db, time.perf_counter() - started


class Api:
    """The two endpoints as gradio_client calls them: queue/join, then the session's queue/data stream."""

    def __init__(self, client, url):
        import httpx
        self.client, self.url = client, url.rstrip("/")
        config = httpx.get(self.url + "/config", timeout=60).json()
        self.fn = {d["api_name"]: d["id"] for d in config["dependencies"] if d.get("api_name") in ("next_pair", "vote")}

    async def call(self, api_name, data, session, headers):
        body = {"data": data, "fn_index": self.fn[api_name], "session_hash": session, "event_data": None,
                "trigger_id": None}
        r = await self.client.post(self.url + "/gradio_api/queue/join", json=body, headers=headers)
        if r.status_code != 200:
            raise Failure(f"join HTTP {r.status_code}")
        size = len(r.content)
        async with self.client.stream("GET", f"{self.url}/gradio_api/queue/data", params={"session_hash": session},
                                      headers=headers) as stream:
            async for line in stream.aiter_lines():
                size += len(line) + 1
                if line.startswith("data:"):
                    msg = json.loads(line[5:])
                    if msg.get("msg") == "process_completed":
                        if not msg.get("success"):
                            raise Failure(str((msg.get("output") or {}).get("error") or msg)[:80])
                        return msg["output"]["data"][0], size
        raise Failure("stream ended without an answer")


class Failure(Exception):
    pass


async def voter(k, api, client, pairs, stop_at, rec, visits=None):
    """Visitor after visitor on slot `k` (at most `visits`): each its own session and address, one vote on every
    pair."""
    visit = 0
    while time.monotonic() < stop_at and visit != visits:
        session, visit = uuid.uuid4().hex[:11], visit + 1
        headers = {"X-Forwarded-For": f"10.{k}.{visit // 250}.{visit % 250 + 1}"}
        for i in range(pairs):
            if time.monotonic() >= stop_at:
                return
            try:
                t = time.perf_counter()
                pair, size = await api.call("next_pair", [], session, headers)
                rec["serve"].append(time.perf_counter() - t)
                rec["serve_bytes"].append(size)
                for side in ("left", "right"):
                    t = time.perf_counter()
                    r = await client.get(api.url + pair[side], headers=headers)
                    if r.status_code != 200:
                        raise Failure(f"image HTTP {r.status_code}")
                    rec["image"].append(time.perf_counter() - t)
                    rec["image_bytes"].append(len(r.content))
                t = time.perf_counter()
                _, size = await api.call("vote", [pair["pair_id"], ("left", "right", "tie")[i % 3], ""], session,
                                         headers)
                rec["vote"].append(time.perf_counter() - t)
                rec["vote_bytes"].append(size)
                rec["votes_at"].append(time.monotonic())
            except Exception as exc:  # noqa: BLE001 - every failure is counted by kind and reported
                rec["errors"][f"{type(exc).__name__}: {exc}"[:100]] += 1
                await asyncio.sleep(0.5)
                break  # a new visitor takes the slot


def pct(values, q):
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def load(url, pid, args):
    import httpx
    limits = httpx.Limits(max_connections=4 * args.voters, max_keepalive_connections=4 * args.voters)
    async with httpx.AsyncClient(limits=limits, timeout=120) as client:
        api = Api(client, url)
        rec = {k: [] for k in ("serve", "vote", "image", "serve_bytes", "vote_bytes", "image_bytes", "votes_at")}
        rec["errors"] = Counter()
        t = time.perf_counter()
        await voter(255, api, client, args.pairs, time.monotonic() + 600, rec, visits=1)  # warm-up: every pair once
        warm = time.perf_counter() - t
        if rec["errors"]:
            raise SystemExit(f"warm-up failed: {dict(rec['errors'])}")
        print(f"warm-up: one visitor through all {args.pairs} pairs in {warm:.1f} s "
              f"(first serving {rec['serve'][0]:.2f} s)", flush=True)
        rec = {k: [] for k in rec}
        rec["errors"] = Counter()
        samples = {"rss": [], "load": []}
        start = time.monotonic()
        stop_at = start + args.seconds
        cpu0 = cpu_seconds(pid)

        async def sample():
            while time.monotonic() < stop_at:
                samples["rss"].append((time.monotonic() - start, rss_mib(pid)))
                samples["load"].append(os.getloadavg()[0])
                await asyncio.sleep(min(5.0, args.seconds / 4))
        if os.environ.get("BENCH_GO_FILE"):  # a profiler in the server starts now (bench-only switch)
            Path(os.environ["BENCH_GO_FILE"]).touch()
        rss_start = rss_mib(pid)
        tasks = [asyncio.create_task(voter(k, api, client, args.pairs, stop_at, rec)) for k in range(args.voters)]
        await asyncio.gather(sample(), *tasks)
        elapsed = time.monotonic() - start
        cpu = cpu_seconds(pid) - cpu0
        rss_end = rss_mib(pid)
    middle = min(samples["rss"], key=lambda s: abs(s[0] - args.seconds / 2))[1] if samples["rss"] else float("nan")
    counted = [t for t in rec["votes_at"] if t <= stop_at]
    ms = lambda xs, q: pct(xs, q) * 1000  # noqa: E731
    print(f"{args.voters} voters, {args.seconds:g} s ({elapsed:.1f} s with the last answers), {args.pairs} pairs "
          f"of {args.size}²")
    print(f"  votes: {len(rec['vote'])} ({len(counted) / args.seconds:.1f} votes/s)")
    print(f"  serve (/next_pair) p50 {ms(rec['serve'], .5):.0f} ms, p95 {ms(rec['serve'], .95):.0f} ms; "
          f"vote (/vote) p50 {ms(rec['vote'], .5):.0f} ms, p95 {ms(rec['vote'], .95):.0f} ms; "
          f"image GET p50 {ms(rec['image'], .5):.0f} ms, p95 {ms(rec['image'], .95):.0f} ms")
    mean = lambda xs: statistics.mean(xs) if xs else float("nan")  # noqa: E731
    print(f"  bytes per answer: /next_pair {mean(rec['serve_bytes']):.0f}, /vote {mean(rec['vote_bytes']):.0f}, "
          f"image {mean(rec['image_bytes']) / 1024:.0f} kB")
    print(f"  server RSS: start {rss_start:.0f} MiB, middle {middle:.0f} MiB, end {rss_end:.0f} MiB; server CPU "
          f"{cpu:.1f} s ({cpu / elapsed:.2f} cores, {1000 * cpu / max(1, len(rec['vote'])):.1f} ms a vote)")
    print(f"  load average (1 min) during the run: {min(samples['load']):.1f}-{max(samples['load']):.1f}; "
          f"this process's CPU {time.process_time():.1f} s")
    print(f"  errors: {sum(rec['errors'].values())} {dict(rec['errors'].most_common(5))}")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--voters", type=int, default=50)
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--pairs", type=int, default=16, help="pairs in the campaign (each visitor votes on all)")
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--workdir", default=str(Path(os.environ.get("TMPDIR", "/tmp")) / "bench-campaign-load"))
    p.add_argument("--app-env", action="append", default=[], metavar="NAME=VALUE",
                   help="environment for the server (e.g. a profiler switch)")
    args = p.parse_args()
    if not (1 <= args.voters <= 200 and 1 <= args.seconds <= 600 and 1 <= args.pairs <= 200
            and 32 <= args.size <= 2048):
        p.error("bounded: --voters 1-200, --seconds 1-600, --pairs 1-200, --size 32-2048")
    from tests.conftest import LiveApp
    db, made = campaign(args.workdir, args.pairs, args.size)
    print(f"campaign of {args.pairs} pairs at {args.size}²: " + (f"made in {made:.0f} s" if made else f"reused ({db})"))
    # A fresh copy per run: votes from an earlier run would change which pairs are served first.
    run = Path(args.workdir) / "run"
    shutil.rmtree(run, ignore_errors=True)
    shutil.copytree(db.parent, run)
    env = dict(kv.split("=", 1) for kv in args.app_env)
    app = LiveApp(run / "r.db", "--campaign", "c", "--hosted", "--trust-proxy", env=env)  # binds 127.0.0.1
    try:
        asyncio.run(load(app.url, app.proc.pid, args))
    finally:
        app.stop()


if __name__ == "__main__":
    main()
