"""End to end in a real headless browser (Debian's chromium driven by Playwright): start the
server, load the demo, pseudo-label, correct one image, accept above a threshold, export the
CSV and check its rows. Screenshots go to MSSL_SCREENSHOT_DIR (docs/ when refreshing them)."""

from __future__ import annotations

import csv
import io
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

import pytest
from playwright import sync_api as playwright

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


NETWORK_GUARD = REPO / "tests" / "network_guard"  # its sitecustomize refuses outbound connections


def _start_server(data_dir: Path, port: int, cwd: Path = REPO, **extra_env: str) -> subprocess.Popen:
    """The app as the README starts it, with every connection off the machine refused and
    logged to `network.log` beside the data folder (tests assert it stays empty)."""
    env = {
        **os.environ,
        **extra_env,
        "MSSL_DATA_DIR": str(data_dir),
        "MSSL_NETWORK_LOG": str(data_dir.parent / "network.log"),
        "PYTHONPATH": os.pathsep.join([str(NETWORK_GUARD), os.environ.get("PYTHONPATH", "")]),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.address", "127.0.0.1",
         "--server.port", str(port), "--server.headless", "true"],
        cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            time.sleep(0.2)  # polling the port, not waiting on the page
    return process


@pytest.fixture
def server(tmp_path):
    port = _free_port()
    process = _start_server(tmp_path / "data", port)
    yield f"http://127.0.0.1:{port}"
    process.terminate()
    process.wait(timeout=20)
    _assert_nothing_went_out(tmp_path)


def _assert_only_local(requested: list[str], server: str) -> None:
    """The browser asked nothing of any machine but the app's (fonts, icons, images included),
    and nothing of Streamlit's /media/ URLs, which answer any client, logged in or not: images
    and downloads travel inside the page."""
    outside = [url for url in requested if not url.startswith((f"{server}/", "data:", "blob:"))]
    assert not outside, outside[:3]
    media = [url for url in requested if urlparse(url).path.startswith("/media/")]
    assert not media, media[:3]


def _assert_nothing_went_out(folder: Path) -> None:
    log = folder / "network.log"
    assert not log.exists(), f"the app tried to connect off the machine: {log.read_text()}"


def _wait_for_images(page) -> None:
    """Thumbnails arrive after the page: wait until every image has loaded."""
    page.wait_for_function(
        "() => document.images.length > 0 && [...document.images].every(i => i.complete && i.naturalWidth > 0)"
    )


def _go(page, title: str) -> None:
    """Open a page from the sidebar navigation."""
    page.get_by_test_id("stSidebarNavLink").filter(has_text=re.compile(re.escape(title))).click()


def _wait_until_idle(page) -> None:
    """The script has finished its run: every element (and keyboard shortcut) is in place."""
    playwright.expect(page.get_by_test_id("stStatusWidget")).to_be_hidden()


def _shot(page, path: Path) -> None:
    """A screenshot of the finished page, with no tooltip in the way."""
    _wait_until_idle(page)
    # charts draw after the script has finished: wait until each has its canvas
    page.wait_for_function(
        "() => [...document.querySelectorAll('[data-testid=stVegaLiteChart]')]"
        ".every(c => c.querySelector('canvas, svg'))"
    )
    page.mouse.move(1, 1)
    page.screenshot(path=path, full_page=True)


def test_label_the_demo_in_a_browser(server, tmp_path):
    shots = Path(os.environ.get("MSSL_SCREENSHOT_DIR", tmp_path / "shots"))
    shots.mkdir(parents=True, exist_ok=True)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
        page.set_default_timeout(120_000)
        expect = playwright.expect
        expect.set_options(timeout=120_000)
        requested: list[str] = []
        page.on("request", lambda request: requested.append(request.url))

        page.goto(server)
        expect(page.get_by_role("heading", name="MSSL Label Assist")).to_be_visible()
        _shot(page, shots / "0-home.png")

        _go(page, "Project & upload")
        page.get_by_label("…or create a new one").fill("browser demo")
        page.get_by_role("button", name="Create project").click()
        expect(page.get_by_text("Project: browser-demo")).to_be_visible()
        page.get_by_role("button", name="Load demo data").click()
        expect(page.get_by_text("300 added")).to_be_visible()
        _wait_for_images(page)
        _shot(page, shots / "1-upload.png")

        _go(page, "Pseudo-label")
        page.get_by_role("button", name="Pseudo-label").click()
        expect(page.get_by_text("Pseudo-labeled 300 images")).to_be_visible()
        _shot(page, shots / "2-pseudo-label.png")

        _go(page, "Review")
        expect(page.get_by_text("0 of 300 reviewed")).to_be_visible()
        _wait_for_images(page)
        _shot(page, shots / "3-review.png")
        # correct the image shown first: pick a class other than the predicted one
        accept_text = page.get_by_role("button", name="Accept '").inner_text()
        predicted = accept_text.split("'")[1]
        class_buttons = page.get_by_role("button", name=" · ")
        class_buttons.filter(has_not_text=f"· {predicted}").first.click()
        expect(page.get_by_text("1 of 300 reviewed")).to_be_visible()
        # keyboard: "A" accepts the image the page puts first
        _wait_until_idle(page)
        expect(page.get_by_role("button", name="Skip", exact=True).first).to_be_enabled()
        page.get_by_role("heading", name="Review").click()  # focus the page, not a widget
        page.keyboard.press("a")
        expect(page.get_by_text("2 of 300 reviewed")).to_be_visible()
        # a browser refresh resumes the same project at the same place
        page.reload()
        expect(page.get_by_text("2 of 300 reviewed")).to_be_visible()

        bulk = page.get_by_role("button", name=re.compile(r"^Accept \d+ images"))
        accepted = int(bulk.inner_text().split()[1])
        bulk.click()
        expect(page.get_by_text(f"{2 + accepted} of 300 reviewed")).to_be_visible()

        _go(page, "Export")
        expect(page.get_by_text(f"{25 + 2 + accepted} images")).to_be_visible()
        expect(page.get_by_role("button", name="Download CSV")).to_be_visible()
        _shot(page, shots / "5-export.png")
        with page.expect_download() as download:
            page.get_by_role("button", name="Download CSV").click()
        rows = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))

        _go(page, "Explore")
        expect(page.locator(".js-plotly-plot").first).to_be_visible()
        _shot(page, shots / "4-explore.png")
        # hovering a point of the map shows that image and its file name
        _wait_until_idle(page)
        point = page.locator(".js-plotly-plot .scatterlayer .point").first.bounding_box()
        page.mouse.move(point["x"] + point["width"] / 2, point["y"] + point["height"] / 2)
        tooltip = page.locator("#mssl-hover-thumbnail")
        expect(tooltip.locator("img")).to_be_visible()
        assert tooltip.locator("img").evaluate("i => i.complete && i.naturalWidth > 0")
        assert tooltip.inner_text().strip().endswith(".png")
        page.screenshot(path=shots / "4-explore-hover.png")
        _go(page, "Model")
        expect(page.get_by_text("Recommended method")).to_be_visible()
        _shot(page, shots / "6-model.png")
        _assert_only_local(requested, server)
        browser.close()

    assert len(rows) == 25 + 2 + accepted
    statuses = [r["status"] for r in rows]
    assert statuses.count("labeled") == 25 and statuses.count("corrected") == 1
    assert statuses.count("accepted") == 1 + accepted
    assert all(r["label"] for r in rows) and set(rows[0]) == {"file", "label", "confidence", "status"}


def test_review_is_shared_across_sessions_and_survives_a_killed_server(tmp_path, monkeypatch):
    """Decisions live in the project database, not in the server: SIGKILL loses nothing."""
    from mssl_core.labeling.adapt import model_for
    from mssl_core.labeling.embedding_cache import EmbeddingCache
    from mssl_core.project import store
    from mssl_core.project.ingest import load_demo
    from mssl_core.project.pseudo_label import pseudo_label_project

    data = tmp_path / "data"
    monkeypatch.setenv("MSSL_DATA_DIR", str(data))
    project = store.open_project("restart")
    load_demo(project)
    model = model_for("softkmeans", "conv4")
    project.set_setting("method", "softkmeans")
    project.set_setting("backbone", "conv4")
    result = pseudo_label_project(project, model, EmbeddingCache(data / "embeddings.sqlite"))
    for image in result.images[:3]:
        project.decide(image.id, "skip", session="setup")

    port = _free_port()
    first = _start_server(data, port)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page()
        expect = playwright.expect
        expect.set_options(timeout=120_000)
        page.goto(f"http://127.0.0.1:{port}/review?project=restart")
        expect(page.get_by_text("3 of 300 reviewed")).to_be_visible()
        _wait_until_idle(page)
        page.get_by_role("button", name="Skip", exact=True).first.click()
        expect(page.get_by_text("4 of 300 reviewed")).to_be_visible()
        # a second browser session on the same project sees the same decisions
        other = browser.new_context().new_page()
        other.goto(f"http://127.0.0.1:{port}/review?project=restart")
        expect(other.get_by_text("4 of 300 reviewed")).to_be_visible()
        _wait_until_idle(other)  # ... and its own decision is not lost beside the first one's
        other.get_by_role("button", name="Skip", exact=True).first.click()
        expect(other.get_by_text("5 of 300 reviewed")).to_be_visible()
        first.kill()  # SIGKILL: no shutdown hooks run
        first.wait(timeout=20)
        second = _start_server(data, port)
        try:
            page.goto(f"http://127.0.0.1:{port}/review?project=restart")
            expect(page.get_by_text("5 of 300 reviewed")).to_be_visible()
        finally:
            browser.close()
            second.terminate()
            second.wait(timeout=20)
    recovered = store.open_project("restart", create=False)
    assert len(recovered.current_decisions()) == 5  # every confirmed decision survived
    sessions = {entry["session"] for entry in recovered.audit_trail()} - {"setup"}
    assert len(sessions) == 2 and all(s.startswith("review ") for s in sessions)  # both tabs
    _assert_nothing_went_out(tmp_path)


@contextmanager
def _logged_out_page(tmp_path: Path, **extra_env: str) -> Iterator[tuple[str, playwright.Page]]:
    """A server on tmp_path/data (with `extra_env`) and a fresh browser page; afterwards, both
    are stopped and nothing may have gone off the machine."""
    port = _free_port()
    process = _start_server(tmp_path / "data", port, **extra_env)
    try:
        with playwright.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            playwright.expect.set_options(timeout=120_000)
            yield f"http://127.0.0.1:{port}", browser.new_page()
            browser.close()
    finally:
        process.terminate()
        process.wait(timeout=20)
    _assert_nothing_went_out(tmp_path)


def test_with_a_password_no_page_opens_without_it(tmp_path):
    with _logged_out_page(tmp_path, MSSL_PASSWORD="correct horse") as (server, page):
        expect = playwright.expect
        page.goto(f"{server}/model")  # a deep link is no way around it
        expect(page.get_by_text("Page not found")).to_be_visible()
        page.keyboard.press("Escape")
        expect(page.get_by_label("Password", exact=True)).to_be_visible()
        expect(page.get_by_role("heading", name="The model")).to_have_count(0)
        page.get_by_label("Password", exact=True).fill("wrong")
        page.get_by_role("button", name="Open").click()
        expect(page.get_by_text("Wrong password.")).to_be_visible()
        page.get_by_label("Password", exact=True).fill("correct horse")
        page.get_by_role("button", name="Open").click()
        _go(page, "Model")
        expect(page.get_by_role("heading", name="The model")).to_be_visible()

        # logged in, the images a page shows reach no one else: none is served at a URL
        requested: list[str] = []
        page.on("request", lambda request: requested.append(request.url))
        _go(page, "Project & upload")
        page.get_by_label("…or create a new one").fill("private")
        page.get_by_role("button", name="Create project").click()
        page.get_by_role("button", name="Load demo data").click()
        expect(page.get_by_text("300 added")).to_be_visible()
        _wait_for_images(page)
        sources = page.eval_on_selector_all("img", "images => images.map(i => i.src)")
        assert sources and all(s.startswith("data:image/") for s in sources), sources[:3]
        outside = [u for u in requested if not u.startswith((f"{server}/", "data:", "blob:"))]
        assert not outside, outside[:3]

        page.get_by_role("button", name="Log out").click()
        expect(page.get_by_label("Password", exact=True)).to_be_visible()


def test_a_named_user_logs_in_and_sees_only_their_own_projects(tmp_path, monkeypatch):
    from mssl_core.project import store, users

    monkeypatch.setenv("MSSL_DATA_DIR", str(tmp_path / "data"))
    users.add_user("alice", "alice's secret")
    users.add_user("bob", "bob's secret!")
    store.create_project("bob ward", owner="bob").close()
    with _logged_out_page(tmp_path) as (server, page):
        expect = playwright.expect
        page.goto(server)
        page.get_by_label("User", exact=True).fill("alice")
        page.get_by_label("Password", exact=True).fill("bob's secret!")
        page.get_by_role("button", name="Open").click()
        expect(page.get_by_text("Wrong user name or password.")).to_be_visible()
        page.get_by_label("Password", exact=True).fill("alice's secret")
        page.get_by_role("button", name="Open").click()
        expect(page.get_by_text("Logged in as alice")).to_be_visible()
        _go(page, "Project & upload")
        page.get_by_label("…or create a new one").fill("alice ward")
        page.get_by_role("button", name="Create project").click()
        expect(page.get_by_text("Project: alice-ward")).to_be_visible()
        page.get_by_label("Open a project").click()  # the list holds her project, not bob's
        expect(page.get_by_role("option", name="alice-ward")).to_be_visible()
        expect(page.get_by_role("option", name="bob-ward")).to_have_count(0)
        page.keyboard.press("Escape")
        page.get_by_role("button", name="Log out").click()
        expect(page.get_by_label("User", exact=True)).to_be_visible()
    assert store.members("alice ward") == ["alice"]
