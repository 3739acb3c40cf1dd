"""How long a newcomer waits for the first page: a fresh server per run (nothing warm), Debian's
chromium opening it, seconds until the landing page is drawn and the app idle. Prints a table.

    python scripts/bench_first_load.py [--repeats 3] [--repo DIR]   # DIR: another checkout, to compare
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from playwright import sync_api as playwright

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "e2e"))  # the browser test's server and chromium helpers

from test_browser import CHROMIUM, FLAGS, _free_port, _start_server  # noqa: E402


def first_load(repo: Path) -> dict:
    """Seconds from starting the server to the page's first request, and from that request to
    the landing page drawn and idle; the sidebar entries as they first showed."""
    with tempfile.TemporaryDirectory() as scratch, playwright.sync_playwright() as driver:
        port = _free_port()
        started = time.perf_counter()
        server = _start_server(Path(scratch) / "data", port, cwd=repo)
        try:
            listening = time.perf_counter() - started
            browser = driver.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            page = browser.new_page()
            asked = time.perf_counter()
            page.goto(f"http://127.0.0.1:{port}", wait_until="commit")
            page.get_by_test_id("stSidebarNavLink").first.wait_for(timeout=60_000)
            # each entry reads "icon name, blank line, title": keep the title
            first_entries = [
                e.split("\n")[-1] for e in page.get_by_test_id("stSidebarNavLink").all_inner_texts()
            ]
            page.get_by_role("heading", name="MSSL Label Assist").wait_for(timeout=60_000)
            playwright.expect(page.get_by_test_id("stStatusWidget")).to_be_hidden(timeout=60_000)
            ready = time.perf_counter() - asked
            browser.close()
        finally:
            server.terminate()
            server.wait(timeout=20)
    return {"listening_s": listening, "first_page_s": ready, "first_entries": first_entries}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--repo", type=Path, default=REPO)
    args = parser.parse_args()
    runs = [first_load(args.repo.resolve()) for _ in range(args.repeats)]
    print(f"{'run':>4} {'server listening':>17} {'first page ready':>17}  first sidebar entries")
    for i, run in enumerate(runs, 1):
        entries = ", ".join(run["first_entries"])
        print(f"{i:>4} {run['listening_s']:>15.2f} s {run['first_page_s']:>15.2f} s  {entries}")
    median = statistics.median(run["first_page_s"] for run in runs)
    print(f"median first page: {median:.2f} s ({args.repo})")


if __name__ == "__main__":
    main()
