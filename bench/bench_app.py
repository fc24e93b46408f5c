"""App figure: click on Generate -> both images visible in the browser (Chromium), 25 Heun steps.

    .venv/bin/python bench/bench_app.py [--runs 7]
"""
import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.conftest import LiveApp  # noqa: E402
from tests.test_browser import CHROMIUM, LAUNCH_ARGS, generate  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright
    app = LiveApp(Path(tempfile.mkdtemp()) / "results.db")
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
            page = browser.new_page()
            generate(page, app.url, steps="25")  # warm-up
            times = [generate(page, app.url, steps="25") for _ in range(args.runs)]
            browser.close()
    finally:
        app.stop()
    print("click -> both images visible, 25 Heun steps, embedded model: "
          + ", ".join(f"{t:.2f}" for t in times) + f" s; median {statistics.median(times):.2f} s")


if __name__ == "__main__":
    main()
