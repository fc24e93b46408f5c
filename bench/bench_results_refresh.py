"""The Results tab's refresh on a store of 5,000 pairs and 20,000 votes: over 12 configs, or (`one`) with every
vote on one question. Builds the store in a temporary folder; prints CPU and wall seconds of two refreshes.

    .venv/bin/python bench/bench_results_refresh.py [one]
"""
import random
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import app  # noqa: E402
from comparisons.core.config import SamplerConfig  # noqa: E402
from comparisons.results.store import ResultsStore  # noqa: E402
from ui import results_tab  # noqa: E402


def build(folder, one_question, pairs=5000, votes=20000):
    store = ResultsStore(Path(folder) / "r.db")
    image = store.save_image(Image.new("RGB", (4, 4)), {})
    rng = random.Random(0)
    configs = [SamplerConfig(steps=s, quantize=q) for s in (4, 7, 10, 25) for q in ("off", "paper", "ingress")]
    with store._transaction() as conn:
        ids = []
        for i in range(pairs):
            a, b = configs[:2] if one_question else rng.sample(configs, 2)
            ids.append(store._insert_pair(conn, pairing="custom", model="embedded", prompt="a red circle", seed=i,
                                          config_a=a, config_b=b, image_a=image, image_b=image,
                                          metrics={"lpips": rng.random() * 0.1}, sigmas_a=[1.0], sigmas_b=[1.0],
                                          lockstep=True, seconds=0.1))
        for i in range(votes):
            winner = rng.choice("AB") if rng.random() < 0.9 else "tie"
            conn.execute("INSERT INTO votes (pair_id, winner, left_config, session, note, created) "
                         "VALUES (?, ?, ?, ?, '', ?)", (ids[i % pairs], winner, rng.choice("AB"), f"s{i}", i))
    return store


def main():
    one = len(sys.argv) > 1 and sys.argv[1] == "one"
    with tempfile.TemporaryDirectory() as folder:
        store = build(folder, one)
        settings = app.Settings(app.parse_args(["--results", str(store.path)]))
        lab = type("Lab", (), {"store": store})()
        for _ in range(2):
            cpu, wall = time.process_time(), time.perf_counter()
            results_tab.refresh_results(lab, settings, 1, 1)
            print(f"{'one question' if one else '12 configs'}: refresh {time.process_time() - cpu:.2f} CPU-s, "
                  f"{time.perf_counter() - wall:.2f} s wall")


if __name__ == "__main__":
    main()
