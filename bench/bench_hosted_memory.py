"""Issue #33: the hosted campaign's memory and serving cost, on loopback only, bounded in count.

    python bench/bench_hosted_memory.py [--pairs 25] [--size 1024] [--visitors 500]
    python bench/bench_hosted_memory.py --servings 300000

The first form makes a campaign of `pairs` image pairs of size² pixels, serves it with `app.py --hosted
--trust-proxy` and sends `visitors` visitors (from 100 addresses, X-Forwarded-For) through the Vote view's own
events: each a page load (its first pair) and a vote (which serves the next pair), so `visitors` page loads and
votes; it prints the server's resident memory idle (after 5 warm-up loads), after them, and after 60 s idle, and
the largest answer. The second fills a store with `servings` past servings of a 25-pair campaign and times 200
servings of the next pair (p50, p95) against the same with 300 past servings.
"""
import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.conftest import LiveApp  # noqa: E402
from tests.test_public_demo import Visitor, image_campaign, rss_mib  # noqa: E402


def memory(args):
    import json
    import urllib.request
    root = Path(tempfile.mkdtemp(prefix="bench-hosted-"))
    started = time.perf_counter()
    db = image_campaign(root, n=args.pairs, size=args.size, checks="0")
    print(f"campaign of {args.pairs} pairs at {args.size}² made in {time.perf_counter() - started:.0f} s")
    app = LiveApp(db, "--campaign", "c", "--hosted", "--trust-proxy", "--max-votes-per-address", "1000")
    try:
        config = json.load(urllib.request.urlopen(app.url + "config", timeout=30))
        for k in range(5):
            Visitor(app.url, {"X-Forwarded-For": f"192.0.2.{k}"}, config).page_load()
        idle = rss_mib(app.proc.pid)
        largest, started = 0, time.perf_counter()
        for k in range(args.visitors):
            v = Visitor(app.url, {"X-Forwarded-For": f"203.0.113.{k % 100}"}, config)
            largest = max(largest, v.page_load()[1], v.vote()[1])
        took = time.perf_counter() - started
        after = rss_mib(app.proc.pid)
        time.sleep(60)
        rested = rss_mib(app.proc.pid)
        print(f"{args.visitors} page loads + {args.visitors} votes in {took:.0f} s; RSS idle {idle:.0f} MiB, after "
              f"{after:.0f} MiB (+{after - idle:.0f}), after 60 s idle {rested:.0f} MiB (+{rested - idle:.0f}); "
              f"largest answer {largest / 1024:.1f} kB")
    finally:
        app.stop()


def servings(args):
    import secrets

    from comparisons.results.store import ResultsStore
    from comparisons.workflows.blind import balanced_side
    root = Path(tempfile.mkdtemp(prefix="bench-servings-"))
    db = image_campaign(root, n=25, size=32, checks="0")
    store = ResultsStore(db)
    pairs = [p["pair_id"] for p in store.campaign_pairs("c")]

    def fill(n, tag):
        with store._transaction() as conn:
            conn.executemany("INSERT INTO served (serve_id, pair_id, session, shown_left, created, campaign) "
                             "VALUES (?, ?, ?, 'A', 0, 'c')",
                             ((secrets.token_hex(16), pairs[i % len(pairs)], f"{tag}-{i // len(pairs)}")
                              for i in range(n)))

    def timed(label):
        times = []
        for i in range(200):
            t = time.perf_counter()
            store.serve_next("c", f"{label}-{i}", lambda pid, n: balanced_side("c", pid, n), address=f"a{i}")
            times.append(time.perf_counter() - t)
        times.sort()
        return times[100] * 1000, times[189] * 1000

    fill(300, "few")
    small = timed("small")
    fill(args.servings - 300, "many")
    big = timed("big")
    print(f"serve_next with 300 past servings: p50 {small[0]:.2f} ms, p95 {small[1]:.2f} ms; with {args.servings}: "
          f"p50 {big[0]:.2f} ms, p95 {big[1]:.2f} ms")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--pairs", type=int, default=25)
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--visitors", type=int, default=500)
    p.add_argument("--servings", type=int, default=0)
    args = p.parse_args()
    servings(args) if args.servings else memory(args)


if __name__ == "__main__":
    main()
