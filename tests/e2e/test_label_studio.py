"""End to end against a real Label Studio 1.23.2: a project with an image classification config,
images uploaded through its API, our ML backend connected (`python -m mssl_core ml-backend`),
a few tasks annotated through the API; the other tasks must get predictions whose scores
re-adapt after one more annotation.

Label Studio lives in its own virtual environment, `.cache/label-studio-venv`, so its pins never
touch the app's; the first run installs it from the package registry (about a minute), later
runs reuse it. Both servers run with every connection off the machine refused and logged.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx2
import pytest

from mssl_core.engine.data.paths import ASSETS_DIR, cache_dir
from tests.e2e.test_browser import NETWORK_GUARD, REPO, _free_port

pytestmark = pytest.mark.slow

VERSION = "1.23.2"
CONFIG = """<View><Image name="image" value="$image"/>
<Choices name="label" toName="image" choice="single">
<Choice value="trouser"/><Choice value="bag"/><Choice value="sandal"/></Choices></View>"""
USER, PASSWORD = "annotator@example.com", "not-a-real-secret-1"
DEMO = ASSETS_DIR / "demo" / "labeled"


def label_studio_venv() -> Path:
    """The virtual environment with label-studio installed (once; a marker file says it finished)."""
    venv = cache_dir() / "label-studio-venv"
    done = venv / f".installed-label-studio-{VERSION}"
    if not done.exists():
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        install = subprocess.run(
            [str(venv / "bin" / "pip"), "install", "-q", f"label-studio=={VERSION}"],
            capture_output=True,
            text=True,
            timeout=1800,
        )
        if install.returncode != 0:
            pytest.fail(f"label-studio=={VERSION} could not be installed:\n{install.stderr[-2000:]}")
        done.touch()
    return venv


def guarded_env(log: Path, **extra: str) -> dict[str, str]:
    """The environment of a server whose connections off the machine are refused and logged."""
    env = {key: value for key, value in os.environ.items() if key != "HOST"}  # Label Studio reads HOST
    return {
        **env,
        **extra,
        "MSSL_NETWORK_LOG": str(log),
        "PYTHONPATH": os.pathsep.join([str(NETWORK_GUARD), str(REPO)]),
    }


def wait_until_up(url: str, process: subprocess.Popen, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert process.poll() is None, f"{url} exited with {process.returncode}"
        try:
            if httpx2.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx2.TransportError:
            pass
        time.sleep(0.5)  # polling the port: the server has no other way to say it is ready
    raise AssertionError(f"{url} did not start within {seconds} s")


@pytest.fixture
def label_studio(tmp_path):
    """A fresh Label Studio with SQLite in a temporary folder, offline, with one user."""
    venv, port = label_studio_venv(), _free_port()
    env = guarded_env(
        tmp_path / "label-studio-network.log",
        LABEL_STUDIO_BASE_DATA_DIR=str(tmp_path / "label-studio"),
        DJANGO_DB="sqlite",
        LATEST_VERSION_CHECK="false",
        CONVERTER_DOWNLOAD_RESOURCES="false",
        COLLECT_ANALYTICS="false",
        SENTRY_DSN="",
        FRONTEND_SENTRY_DSN="",
        # Label Studio refuses ML backends and webhooks at local or private addresses unless told
        ML_BLOCK_LOCAL_IP="false",
        SSRF_PROTECTION_ENABLED="false",
    )
    command = [str(venv / "bin" / "label-studio"), "start", "--no-browser", "--internal-host", "127.0.0.1"]
    command += ["--port", str(port), "--data-dir", str(tmp_path / "label-studio")]
    command += ["--username", USER, "--password", PASSWORD]
    with (tmp_path / "label-studio.log").open("w") as output:
        process = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT, cwd=tmp_path)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(url, process, 300)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert not (tmp_path / "label-studio-network.log").exists()


def personal_access_token(url: str) -> str:
    """Log in as a person would, then create a personal access token (legacy tokens are off)."""
    with httpx2.Client(base_url=url) as browser:
        browser.get("/user/login/")
        form = {"email": USER, "password": PASSWORD, "csrfmiddlewaretoken": browser.cookies["csrftoken"]}
        browser.post("/user/login/", data=form, headers={"Referer": f"{url}/user/login/"})
        answer = browser.post(
            "/api/token/", headers={"X-CSRFToken": browser.cookies["csrftoken"], "Referer": f"{url}/"}
        )
        assert answer.status_code == 201, answer.text
        return answer.json()["token"]


def api(url: str, token: str) -> httpx2.Client:
    """A Label Studio API client with a short-lived access token from the personal one."""
    access = httpx2.post(f"{url}/api/token/refresh/", json={"refresh": token}).json()["access"]
    return httpx2.Client(base_url=url, headers={"Authorization": f"Bearer {access}"}, timeout=120)


@pytest.fixture
def backend(label_studio, tmp_path):
    """Our backend as the README starts it, reading images from that Label Studio."""
    token, port = personal_access_token(label_studio), _free_port()
    env = guarded_env(
        tmp_path / "backend-network.log",
        LABEL_STUDIO_URL=label_studio,
        LABEL_STUDIO_API_KEY=token,
        MSSL_DATA_DIR=str(tmp_path / "data"),
    )
    command = [sys.executable, "-m", "mssl_core", "ml-backend", "--port", str(port)]
    with (tmp_path / "backend.log").open("w") as output:
        process = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT, cwd=REPO)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(url, process, 60)
        yield label_studio, token, url
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert not (tmp_path / "backend-network.log").exists()


def annotate(ls: httpx2.Client, task: dict, label: str) -> None:
    result = {"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": [label]}}
    answer = ls.post(f"/api/tasks/{task['id']}/annotations/", json={"result": [result]})
    assert answer.status_code == 201, answer.text


def predictions(ls: httpx2.Client, project: int, tasks: list[dict]) -> dict[int, dict]:
    """Ask Label Studio to retrieve predictions for `tasks`; each task's newest prediction."""
    selected = {"all": False, "included": [task["id"] for task in tasks]}
    answer = ls.post(
        "/api/dm/actions", params={"id": "retrieve_tasks_predictions", "project": project},
        json={"selectedItems": selected},
    )  # fmt: skip
    assert answer.status_code == 200, answer.text
    newest = {}
    for task in tasks:
        found = ls.get("/api/predictions/", params={"task": task["id"]}).json()
        if found:
            newest[task["id"]] = max(found, key=lambda p: p["id"])
    return newest


def test_label_studio_tasks_get_predictions_that_readapt_after_each_annotation(backend):
    label_studio, token, backend_url = backend
    ls = api(label_studio, token)
    project = ls.post("/api/projects/", json={"title": "few-shot", "label_config": CONFIG}).json()["id"]
    files = [path for label in ("trouser", "bag", "sandal") for path in sorted((DEMO / label).glob("*.png"))]
    upload = [(f"file{n}", (path.name, path.read_bytes(), "image/png")) for n, path in enumerate(files)]
    assert ls.post(f"/api/projects/{project}/import", files=upload).status_code == 201
    tasks = ls.get("/api/tasks/", params={"project": project, "page_size": 100}).json()["tasks"]
    truth = {task["id"]: task["data"]["image"].rsplit("-", 2)[-2].split("/")[-1] for task in tasks}
    connected = ls.post("/api/ml/", json={"url": backend_url, "project": project, "title": "MSSL few-shot"})
    assert connected.status_code == 201, connected.text

    by_class = {label: [t for t in tasks if truth[t["id"]] == label] for label in ("trouser", "bag", "sandal")}
    for label in ("trouser", "bag"):
        for task in by_class[label][:2]:
            annotate(ls, task, label)
    others = [t for t in tasks if t not in by_class["trouser"][:2] + by_class["bag"][:2]]
    first = predictions(ls, project, others)
    assert set(first) == {t["id"] for t in others}  # every other task has a prediction
    for prediction in first.values():
        (choice,) = prediction["result"]
        assert choice["value"]["choices"][0] in ("trouser", "bag") and 0 < prediction["score"] <= 1
    known = [t["id"] for t in others if truth[t["id"]] in ("trouser", "bag")]
    right = sum(first[t]["result"][0]["value"]["choices"][0] == truth[t] for t in known)
    assert right >= 0.8 * len(known)

    annotate(ls, by_class["sandal"][0], "sandal")  # a third class appears with its first example
    rest = [t for t in others if t != by_class["sandal"][0]]
    second = predictions(ls, project, rest)
    assert all(second[t["id"]]["model_version"] != first[t["id"]]["model_version"] for t in rest)
    assert [second[t["id"]]["score"] for t in rest] != [first[t["id"]]["score"] for t in rest]
    sandals = [t["id"] for t in rest if truth[t["id"]] == "sandal"]
    assert sum(second[t]["result"][0]["value"]["choices"][0] == "sandal" for t in sandals) >= len(sandals) / 2
