"""The Label Studio ML backend against a tiny fake Label Studio (httpx2.MockTransport): protocol,
learning from annotations, persistence across a restart, the host rule and the token."""

from __future__ import annotations

import base64
import io
import json

import httpx2
import numpy as np
import pytest
from PIL import Image
from starlette.testclient import TestClient
from streamlit.testing.v1 import AppTest

from mssl_core.engine.data.paths import ASSETS_DIR, REPO_ROOT
from mssl_core.integrations.label_studio import (
    LabelStudioClient,
    LabelStudioError,
    label_studio_labels,
    parse_label_config,
)
from mssl_core.integrations.ml_backend import MLBackend, create_app
from mssl_core.project import store
from tests.broken_inputs import PATIENT_NAME, dicom
from tests.conftest import SHAPES, draw_shape

CONFIG = """<View><Image name="image" value="$image"/>
<Choices name="label" toName="image" choice="single">
<Choice value="circle"/><Choice value="square"/><Choice value="cross"/></Choices></View>"""
PAT = "header.payload.signature"  # a personal access token is a JWT: three dotted parts


class FakeLabelStudio:
    """Serves `/data/upload/1/<task>.png` to a fresh access token only, and the JSON export."""

    def __init__(self, per_class: int = 6):
        rng = np.random.default_rng(0)
        self.images, self.truth, self.requests = {}, {}, []
        for n in range(per_class * len(SHAPES)):
            shape = SHAPES[n % len(SHAPES)]
            buffer = io.BytesIO()
            draw_shape(shape, rng).save(buffer, format="PNG")
            self.images[n + 1], self.truth[n + 1] = buffer.getvalue(), shape
        self.exported: list[dict] = []

    def task(self, task_id: int, annotations: list[dict] | None = None) -> dict:
        return {
            "id": task_id,
            "data": {"image": f"/data/upload/1/{task_id}.png"},
            "annotations": annotations or [],
        }

    def handle(self, request: httpx2.Request) -> httpx2.Response:
        self.requests.append(str(request.url))
        if request.url.path == "/api/token/refresh/":
            assert json.loads(request.content) == {"refresh": PAT}
            return httpx2.Response(200, json={"access": "fresh"})
        if request.headers.get("authorization") != "Bearer fresh":
            return httpx2.Response(401)
        if request.url.path == "/api/projects/1/export":
            return httpx2.Response(200, json=self.exported)
        if request.url.path == "/data/local-files/":  # local storage: a DICOM scan of the same shape
            task_id = int(request.url.params["d"].rsplit("/", 1)[1])
            pixels = np.asarray(Image.open(io.BytesIO(self.images[task_id])), dtype=np.uint16) * 16
            return httpx2.Response(200, content=dicom(pixels))
        task_id = int(request.url.path.rsplit("/", 1)[1].split(".")[0])
        return httpx2.Response(200, content=self.images[task_id])


def annotation(annotation_id: int, task_id: int, label: str) -> dict:
    result = {"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": [label]}}
    return {"id": annotation_id, "task": task_id, "result": [result], "was_cancelled": False}


@pytest.fixture
def fake() -> FakeLabelStudio:
    return FakeLabelStudio()


def backend_app(fake: FakeLabelStudio, tiny_models, token: str | None = None) -> TestClient:
    client = LabelStudioClient("http://ls.test:8080", PAT, transport=httpx2.MockTransport(fake.handle))
    return TestClient(create_app(MLBackend(client, models=tiny_models), token))


def predict(app: TestClient, fake: FakeLabelStudio, ids) -> list[dict]:
    body = {
        "tasks": [fake.task(i) for i in ids],
        "label_config": CONFIG,
        "project": "1.1700000000",
        "params": {},
    }
    answer = app.post("/predict", json=body)
    assert answer.status_code == 200, answer.text
    return answer.json()["results"]


def annotate(app: TestClient, fake: FakeLabelStudio, annotation_id: int, task_id: int) -> str:
    payload = {
        "action": "ANNOTATION_CREATED",
        "project": {"id": 1, "label_config": CONFIG},
        "annotation": annotation(annotation_id, task_id, fake.truth[task_id]),
        "task": fake.task(task_id),
    }
    answer = app.post("/webhook", json=payload)
    assert answer.status_code == 200, answer.text
    return answer.json()["model_version"]


def test_config_parsing_names_the_tags_and_refuses_what_it_cannot_serve():
    config = parse_label_config(CONFIG)
    assert (config.from_name, config.to_name, config.image_key) == ("label", "image", "image")
    assert config.labels == ("circle", "square", "cross")
    with pytest.raises(LabelStudioError, match="one class per image"):
        parse_label_config(CONFIG.replace('choice="single"', 'choice="multiple"'))
    with pytest.raises(LabelStudioError, match="image classification"):
        parse_label_config('<View><Image name="i" value="$i"/><RectangleLabels name="b" toName="i"/></View>')
    with pytest.raises(LabelStudioError, match="not valid XML"):
        parse_label_config("<View>")


def test_health_setup_and_predictions_that_learn_from_each_annotation(fake, tiny_models):
    app = backend_app(fake, tiny_models)
    assert app.get("/health").json() == {"status": "UP", "model_class": "MSSLFewShot"}
    first = app.post("/setup", json={"project": "1.1700000000", "schema": CONFIG}).json()["model_version"]
    assert first.startswith("mssl-conv4-")
    others = range(4, 19)
    assert predict(app, fake, others) == []  # no class has an example yet
    annotate(app, fake, 1, 1)
    assert predict(app, fake, others) == []  # one class cannot be told apart from anything
    version = annotate(app, fake, 2, 2)
    results = predict(app, fake, others)
    assert len(results) == len(others) and version != first
    for result in results:
        assert result["model_version"] == version and 0 < result["score"] <= 1
        (choice,) = result["result"]
        assert choice["from_name"] == "label" and choice["to_name"] == "image" and choice["type"] == "choices"
        assert choice["value"]["choices"][0] in ("circle", "square")
    newer = annotate(app, fake, 3, 3)
    after = predict(app, fake, others)
    assert newer != version and [r["score"] for r in after] != [r["score"] for r in results]
    assert {r["result"][0]["value"]["choices"][0] for r in after} <= {"circle", "square", "cross"}
    forgotten = app.post(
        "/webhook", json={"action": "ANNOTATIONS_DELETED", "project": {"id": 1}, "annotations": [{"id": 3}]}
    )
    assert forgotten.json()["model_version"] == version
    assert (
        app.post("/webhook", json={"action": "PROJECT_UPDATED", "project": {"id": 1}}).json()["status"]
        == "ignored"
    )


def test_a_restart_keeps_what_was_learnt_and_fetches_no_image_again(fake, tiny_models):
    app = backend_app(fake, tiny_models)
    annotate(app, fake, 1, 1)
    annotate(app, fake, 2, 2)
    before = predict(app, fake, range(4, 10))
    fetched = len(fake.requests)
    again = predict(backend_app(fake, tiny_models), fake, range(4, 10))
    assert again == before
    assert all("/data/upload" not in url for url in fake.requests[fetched:])


def test_setup_learns_the_annotations_made_before_the_backend_was_connected(fake, tiny_models):
    fake.exported = [fake.task(t, [annotation(t, t, fake.truth[t])]) for t in (1, 2, 3)]
    app = backend_app(fake, tiny_models)
    version = app.post("/setup", json={"project": "1.1700000000", "schema": CONFIG}).json()["model_version"]
    assert version.split("-")[-2] == "3"  # three annotations
    assert len(predict(app, fake, range(4, 8))) == 4


def test_images_come_from_label_studio_only(fake, tiny_models):
    app = backend_app(fake, tiny_models)
    annotate(app, fake, 1, 1)
    annotate(app, fake, 2, 2)
    tasks = [fake.task(5), {"id": 6, "data": {"image": "http://elsewhere.test/6.png"}}]
    tasks.append({"id": 7, "data": {"image": "//elsewhere.test/7.png"}})
    body = {"tasks": tasks, "label_config": CONFIG, "project": "1.1700000000"}
    results = app.post("/predict", json=body).json()["results"]
    assert results[0]["result"] and results[1]["result"] == [] and results[2]["result"] == []
    assert all(url.startswith("http://ls.test:8080/") for url in fake.requests)


def test_dicom_scans_in_local_storage_are_decoded_and_their_headers_kept_out(
    fake, tiny_models, tmp_path, caplog
):
    app = backend_app(fake, tiny_models)
    annotate(app, fake, 1, 1)
    annotate(app, fake, 2, 2)
    scans = [{"id": n, "data": {"image": f"/data/local-files/?d=scans/{n}"}} for n in (4, 5)]
    body = {"tasks": scans, "label_config": CONFIG, "project": "1.1700000000"}
    results = app.post("/predict", json=body).json()["results"]
    assert all(r["result"] and 0 < r["score"] <= 1 for r in results)
    assert sum("/data/local-files/?d=scans%2F" in url or "d=scans/" in url for url in fake.requests) == 2
    saved = (tmp_path / "data" / "label-studio" / "project-1.json").read_text()
    assert PATIENT_NAME not in saved and PATIENT_NAME not in caplog.text


def test_an_unsupported_config_is_a_clear_error(fake, tiny_models):
    app = backend_app(fake, tiny_models)
    answer = app.post("/setup", json={"project": "1.1", "schema": "<View><Text name='t' value='$t'/></View>"})
    assert answer.status_code == 400 and "image classification" in answer.json()["error"]


def test_the_token_is_needed_as_bearer_or_basic_auth_password(fake, tiny_models):
    app = backend_app(fake, tiny_models, token="s3cret")
    assert app.get("/health").status_code == 401
    assert app.get("/health", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert app.get("/health", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    basic = base64.b64encode(b"label-studio:s3cret").decode()
    assert app.get("/health", headers={"Authorization": f"Basic {basic}"}).status_code == 200


def test_a_label_studio_export_gives_labels_by_uploaded_file_name():
    tasks = [
        {
            "id": 1,
            "data": {"image": "/data/upload/3/0a1b2c3d-cat%201.png"},
            "annotations": [annotation(1, 1, "cat")],
        },
        {"id": 2, "data": {"image": "dog.png"}, "annotations": [annotation(2, 2, "dog")]},
        {
            "id": 3,
            "data": {"image": "x.png"},
            "annotations": [{**annotation(3, 3, "dog"), "was_cancelled": True}],
        },
        {"id": 4, "data": {"image": "y.png"}, "predictions": [annotation(4, 4, "dog")]},
        {"id": 5, "data": {}},
    ]
    labels, problems = label_studio_labels(json.dumps(tasks).encode(), ["cat 1.png", "dog.png"])
    assert labels == {"cat 1.png": "cat", "dog.png": "dog"}
    assert problems == [("task 5", "has no image")]
    assert label_studio_labels(b"{}", [])[1][0][1].startswith("is not a list of tasks")


@pytest.mark.usefixtures("refuse_outbound")
def test_the_upload_page_takes_a_label_studio_export_as_labels(tmp_path):

    store.open_project("ls").close()
    app = AppTest.from_file(str(REPO_ROOT / "app.py"), default_timeout=120)
    app.session_state["project"] = "ls"
    app.switch_page("views/upload.py").run()
    files = [p for p in sorted((ASSETS_DIR / "demo" / "labeled").rglob("*.png")) if p.parent.name != "dress"]
    app.get("file_uploader")[0].set_value([(p.name, p.read_bytes(), "image/png") for p in files]).run()
    tasks = [
        {
            "id": n,
            "data": {"image": f"/data/upload/1/0123abcd-{p.name}"},
            "annotations": [annotation(n, n, p.parent.name)],
        }
        for n, p in enumerate(files, 1)
    ]
    app.get("file_uploader")[1].set_value(("export.json", json.dumps(tasks).encode(), "application/json")).run()
    next(b for b in app.button if b.label == "Add labeled images").click().run()
    assert not app.exception and not app.error
    project = store.open_project("ls", create=False)
    assert {i.name: i.label for i in project.images("labeled")} == {p.name: p.parent.name for p in files}
