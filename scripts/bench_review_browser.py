"""Accept -> next image, as the reviewer sees it: a real browser (Debian's chromium) presses
"A" on the Review page and waits until the page shows the next image and its count.

    python scripts/bench_review_browser.py [--sizes 300 2000 10000] [--presses 8]

Each size gets a project of the demo's labeled images and a batch of that many distinct
images (demo pictures, each with one pixel changed), embedded and pseudo-labeled before the
clock starts. Prints the median and worst seconds from key press to the next image shown.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "e2e"))  # the browser test's helpers


def make_project(data: Path, size: int) -> int:
    """The project's batch size (a changed pixel can rarely repeat another image: counted once)."""
    os.environ["MSSL_DATA_DIR"] = str(data)
    from mssl_core.engine.model_cards import default_method
    from mssl_core.labeling.adapt import choose_backbone, model_for
    from mssl_core.labeling.embedding_cache import EmbeddingCache
    from mssl_core.labeling.images import list_files
    from mssl_core.project.ingest import DEMO_DIR, UploadedFile, ingest
    from mssl_core.project.pseudo_label import pseudo_label_project
    from mssl_core.project.store import open_project

    project = open_project("bench")
    labeled = [UploadedFile(p.name, p.read_bytes(), p.parent.name) for p in list_files(DEMO_DIR / "labeled")]
    ingest(project, labeled, "labeled")
    pictures = [Image.open(p).convert("L") for p in list_files(DEMO_DIR / "unlabeled")]
    batch = []
    for number in range(size):
        picture = pictures[number % len(pictures)].copy()
        picture.putpixel((number // len(pictures) % 28, 0), number % 251)  # distinct content
        encoded = io.BytesIO()
        picture.save(encoded, format="PNG")
        batch.append(UploadedFile(f"image-{number:05d}.png", encoded.getvalue()))
    ingest(project, batch, "unlabeled")
    model = model_for(default_method(), choose_backbone()[0])
    pseudo_label_project(project, model, EmbeddingCache(data / "embeddings.sqlite"))
    stored = len(project.images("unlabeled"))
    project.close()
    return stored


def press_and_time(server: str, size: int, presses: int) -> list[float]:
    from playwright import sync_api as playwright
    from test_browser import CHROMIUM, FLAGS, _wait_until_idle

    seconds = []
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(300_000)
        # a slow press is a figure for the table, not a crash: expect() waits 5 s unless told
        playwright.expect.set_options(timeout=120_000)
        page.goto(f"{server}/review?project=bench")
        playwright.expect(page.get_by_text(f"0 of {size} reviewed")).to_be_visible(timeout=300_000)
        for done in range(1, presses + 1):
            _wait_until_idle(page)
            # the key goes to the Accept button's shortcut: wait for that button, not for text near
            # it (docs/review.md, "A first key press that went nowhere")
            playwright.expect(page.get_by_role("button", name="Accept '")).to_be_visible()
            shown = page.get_by_text("Next: ").first.inner_text()
            page.get_by_role("heading", name="Review").click()
            started = time.perf_counter()
            page.keyboard.press("a")
            playwright.expect(page.get_by_text(f"{done} of {size} reviewed")).to_be_visible()
            playwright.expect(page.get_by_text("Next: ").first).not_to_have_text(shown)
            seconds.append(time.perf_counter() - started)
        browser.close()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[300, 2000, 10000])
    parser.add_argument("--presses", type=int, default=8)
    args = parser.parse_args()
    from test_browser import _free_port, _start_server

    print("| batch images | Accept -> next image, median s | worst s | presses |")
    print("|---|---|---|---|")
    for size in args.sizes:
        with tempfile.TemporaryDirectory() as folder:
            data = Path(folder) / "data"
            size = make_project(data, size)
            port = _free_port()
            server = _start_server(data, port)
            try:
                seconds = press_and_time(f"http://127.0.0.1:{port}", size, args.presses)
            finally:
                server.terminate()
                try:
                    server.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    server.kill()
        print(
            f"| {size:,} | {statistics.median(seconds):.2f} | {max(seconds):.2f} | {len(seconds)} |", flush=True
        )


if __name__ == "__main__":
    main()
