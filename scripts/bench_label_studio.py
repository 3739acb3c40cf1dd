"""Speed of the Label Studio ML backend (docs/label-studio.md): `/predict` for 100 tasks whose
images are already embedded, and the re-adapt after one new annotation, at 1,000 tasks.

The backend runs with the shipped default model behind Starlette's TestClient; a stand-in for
Label Studio serves 1,000 Fashion-MNIST images (Debian's dataset-fashion-mnist), so the figures
are the backend's own, without Label Studio's. Run: `python scripts/bench_label_studio.py`."""

from __future__ import annotations

import io
import os
import statistics
import tempfile
import time
from pathlib import Path

import httpx2
import numpy as np
import torch
from PIL import Image
from starlette.testclient import TestClient

from mssl_core.engine.data.real import FASHION_MNIST_CLASSES, load_fashion_mnist
from mssl_core.integrations import ml_backend
from mssl_core.integrations.label_studio import LabelStudioClient
from mssl_core.integrations.ml_backend import MLBackend, create_app
from mssl_core.labeling.adapt import fit_task
from mssl_core.labeling.embedding_cache import EmbeddingCache

TASKS, BATCH, CLASSES, SHOTS, REPEATS = 1_000, 100, 5, 2, 5
CONFIG = (
    '<View><Image name="image" value="$image"/><Choices name="label" toName="image" choice="single">'
    + "".join(f'<Choice value="{c}"/>' for c in FASHION_MNIST_CLASSES[:CLASSES])
    + "</Choices></View>"
)


fit_seconds: list[float] = []


def timed_fit_task(*args, **kwargs):
    """`labeling.fit_task`, timed: the re-adapt itself, apart from the backend around it."""
    started = time.perf_counter()
    fitted = fit_task(*args, **kwargs)
    fit_seconds.append(time.perf_counter() - started)
    return fitted


def main() -> None:
    torch.set_num_threads(2)
    ml_backend.fit_task = timed_fit_task
    images, labels = load_fashion_mnist()
    rows = np.flatnonzero(labels < CLASSES)[:TASKS]
    served = {}
    for task, row in enumerate(rows, 1):
        buffer = io.BytesIO()
        Image.fromarray(images[row]).save(buffer, format="PNG")
        served[f"/data/upload/1/{task}.png"] = buffer.getvalue()

    def label_studio(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, content=served[request.url.path])

    def task(n: int) -> dict:
        return {"id": n, "data": {"image": f"/data/upload/1/{n}.png"}}

    def annotate(annotation: int, n: int) -> None:
        label = FASHION_MNIST_CLASSES[labels[rows[n - 1]]]
        result = [{"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": [label]}}]
        payload = {
            "action": "ANNOTATION_CREATED",
            "project": {"id": 1, "label_config": CONFIG},
            "annotation": {"id": annotation, "task": n, "result": result},
            "task": task(n),
        }
        app.post("/webhook", json=payload).raise_for_status()

    def predict(ids) -> list[dict]:
        body = {"tasks": [task(n) for n in ids], "label_config": CONFIG, "project": "1.1700000000"}
        answer = app.post("/predict", json=body)
        answer.raise_for_status()
        return answer.json()["results"]

    with tempfile.TemporaryDirectory() as folder:
        os.environ["MSSL_DATA_DIR"] = folder
        client = LabelStudioClient(
            "http://ls.test", "legacy-token", transport=httpx2.MockTransport(label_studio)
        )
        app = TestClient(create_app(MLBackend(client, cache=EmbeddingCache(Path(folder) / "e.sqlite"))))
        started = time.perf_counter()
        for n in range(1, TASKS + 1, BATCH):
            predict(range(n, n + BATCH))  # fetches and embeds every image once
        first = time.perf_counter() - started
        shots = [n for c in range(CLASSES) for n in np.flatnonzero(labels[rows] == c)[:SHOTS] + 1]
        for annotation, n in enumerate(shots, 1):
            annotate(annotation, int(n))
        predict(range(1, BATCH + 1))
        timed = {"predict": [], "webhook": [], "readapted": [], "fit": []}
        for repeat in range(REPEATS):
            batch = range(BATCH * (repeat + 1) + 1, BATCH * (repeat + 2) + 1)
            started = time.perf_counter()
            predict(batch)
            timed["predict"].append(time.perf_counter() - started)
            started = time.perf_counter()
            annotate(100 + repeat, TASKS - repeat)  # one new annotation: learnt, re-adapted in the background
            timed["webhook"].append(time.perf_counter() - started)
            predict(batch)  # waits for the re-adapt
            timed["readapted"].append(time.perf_counter() - started)
            timed["fit"].append(fit_seconds[-1])
        right = [
            r["result"][0]["value"]["choices"][0] == FASHION_MNIST_CLASSES[labels[rows[n - 1]]]
            for n, r in zip(range(1, TASKS + 1), predict(range(1, TASKS + 1)), strict=True)
        ]
    median = {step: statistics.median(values) for step, values in timed.items()}
    print(f"Label Studio ML backend, {TASKS:,} tasks, {CLASSES} classes, 2 threads, median of {REPEATS}")
    print("| step | seconds |\n|---|---|")
    print(f"| first /predict of all {TASKS:,} tasks (fetch + decode + embed, {BATCH} a call) | {first:.2f} |")
    print(f"| /predict, {BATCH} tasks already embedded | {median['predict']:.3f} |")
    print(f"| /webhook with one new annotation, answered | {median['webhook']:.3f} |")
    print(f"| ... until the next /predict of {BATCH} answers, re-adapted | {median['readapted']:.3f} |")
    print(f"| ... of which the re-adapt (`fit_task`, {TASKS:,} tasks) | {median['fit']:.3f} |")
    print(f"| ... the slowest re-adapt (the last stage tuned again) | {max(timed['fit']):.3f} |")
    print(f"accuracy over all tasks after {len(shots) + REPEATS} annotations: {np.mean(right):.1%}")


if __name__ == "__main__":
    main()
