"""The A1111 `parameters` parser on hostile texts (the regex it replaced was quadratic: 2.8 s at 16k characters,
44 s at 64k): metadata() (text capped before parsing) and parse_a1111 itself, best of 3.

    .venv/bin/python bench/bench_a1111_parse.py
"""
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from comparisons.core.image_meta import metadata, parse_a1111  # noqa: E402


def best(f, n=3):
    out = []
    for _ in range(n):
        t = time.perf_counter()
        f()
        out.append(time.perf_counter() - t)
    return min(out)


def parse(text):
    """parse_a1111 whole, uncapped; a text without its parameters line is refused, as metadata() says."""
    try:
        parse_a1111(text)
    except ValueError:
        pass


def main():
    for size in (16 << 10, 64 << 10, 1 << 20):
        # The old worst case: a last line of words and spaces without a colon; then one of many real pairs.
        hostile = "a prompt\n" + "word " * (size // 5)
        pairs = "p\nSteps: 20, Sampler: Euler, " + ("Key x: " + "v" * 10 + ", ") * (size // 20)
        print(f"{size:>8} characters: no-colon line {best(lambda: metadata({'parameters': hostile})) * 1e3:7.1f} ms "
              f"(parse_a1111 uncapped {best(lambda: parse(hostile)) * 1e3:7.1f} ms), many pairs "
              f"{best(lambda: metadata({'parameters': pairs})) * 1e3:7.1f} ms "
              f"(uncapped {best(lambda: parse(pairs)) * 1e3:7.1f} ms)")


if __name__ == "__main__":
    main()
