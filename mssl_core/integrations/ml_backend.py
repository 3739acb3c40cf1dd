"""A Label Studio ML backend: each annotation made in Label Studio re-adapts the few-shot model,
and the project's other tasks get pseudo-labels with calibrated scores.

`python -m mssl_core ml-backend` serves Label Studio's ML backend protocol (the one of
HumanSignal/label-studio-ml-backend): `GET /health`, `POST /setup`, `POST /predict`,
`POST /webhook`. A class appears once one of its tasks is annotated; predictions come from
`labeling.fit_task` with the default features and method, as in the app and the CLI. Each Label
Studio project's tasks (by image content hash) and annotations are kept in
`MSSL_DATA_DIR/label-studio/project-<id>.json`, the embeddings in the app's embedding cache, so
a restart loses nothing and no image is embedded twice.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import numpy as np
import torch
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from mssl_core.engine.checkpoints import MODELS_DIR, Model
from mssl_core.engine.model_cards import default_method
from mssl_core.integrations.label_studio import (
    ChoicesConfig,
    LabelStudioClient,
    LabelStudioError,
    annotation_label,
    parse_label_config,
    task_label,
)
from mssl_core.labeling.adapt import AdaptedTask, choose_backbone, fit_sample, fit_task, model_for
from mssl_core.labeling.bulk import embed_files
from mssl_core.labeling.embedding_cache import EmbeddingCache
from mssl_core.project.export import choices_result
from mssl_core.project.store import data_dir

MODEL_CLASS = "MSSLFewShot"
LEARN_EVENTS = ("ANNOTATION_CREATED", "ANNOTATIONS_CREATED", "ANNOTATION_UPDATED")
FORGET_EVENTS = ("ANNOTATION_DELETED", "ANNOTATIONS_DELETED")
log = logging.getLogger("mssl_core.integrations.ml_backend")


@dataclass
class ProjectState:
    """What the backend knows of one Label Studio project; saved after every change."""

    label_config: str = ""
    images: dict[int, tuple[str, str]] = field(default_factory=dict)  # task id -> (image URL, sha256)
    annotations: dict[int, tuple[int, str]] = field(default_factory=dict)  # annotation id -> (task, label)
    synced: bool = False  # the annotations made before the backend was connected were read

    def labels(self) -> dict[int, str]:
        """Task id -> class, from each task's latest annotation."""
        return {task: label for _, (task, label) in sorted(self.annotations.items())}

    @classmethod
    def load(cls, path: Path) -> ProjectState:
        """The saved state, or an empty one for a project not seen before."""
        if not path.exists():
            return cls()
        saved = json.loads(path.read_text())
        return cls(
            saved["label_config"],
            {int(t): (url, sha) for t, (url, sha) in saved["images"].items()},
            {int(a): (task, label) for a, (task, label) in saved["annotations"].items()},
            saved["synced"],
        )

    def save(self, path: Path) -> None:
        """Written to a side file and renamed, so a crash leaves the old state or the new one."""
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".part")
        partial.write_text(json.dumps(self.__dict__))
        partial.replace(path)


class MLBackend:
    """The engine behind the web routes: one state and one fitted task per Label Studio project."""

    def __init__(
        self,
        client: LabelStudioClient | None = None,
        models: Path = MODELS_DIR,
        cache: EmbeddingCache | None = None,
        folder: Path | None = None,
    ):
        self.client = client
        self.models = models
        self.backbone, _ = choose_backbone(models)
        self.method = default_method(models)
        self.folder = folder or data_dir() / "label-studio"
        self.cache = cache or EmbeddingCache(data_dir() / "embeddings.sqlite")
        self.lock = threading.RLock()  # one request at a time changes a state or fits
        self._model: Model | None = None
        self._states: dict[str, ProjectState] = {}
        self._vectors: dict[str, np.ndarray] = {}  # sha256 -> embedding, read from the cache once
        self._fitted: dict[str, tuple[tuple, AdaptedTask]] = {}

    @property
    def model(self) -> Model:
        """The default features and method's model, as the app and the CLI choose them."""
        if self._model is None:  # loaded on first use, so /health answers at once
            self._model = model_for(self.method, self.backbone, self.models)
        return self._model

    def state(self, project: str) -> ProjectState:
        """A Label Studio project's state, read from disk the first time it is asked for."""
        if project not in self._states:
            self._states[project] = ProjectState.load(self._path(project))
        return self._states[project]

    def _path(self, project: str) -> Path:
        return self.folder / f"project-{int(project)}.json"

    def model_version(self, project: str) -> str:
        """Names the features, the method and the annotations learnt from: it changes with every
        annotation, so Label Studio asks again for the predictions of the older version."""
        labels = sorted(self.state(project).labels().items())
        digest = hashlib.sha256(json.dumps(labels).encode()).hexdigest()[:8]
        return f"mssl-{self.backbone}-{self.method}-{len(labels)}-{digest}"

    def setup(self, project: str, label_config: str) -> str:
        """Check the config; the first time, learn the annotations the project already has."""
        parse_label_config(label_config)
        with self.lock:
            state = self.state(project)
            state.label_config = label_config
            if not state.synced and self.client is not None:
                for task in self.client.annotated_tasks(int(project)):
                    self._learn_task(project, task)
                state.synced = True
            state.save(self._path(project))
            return self.model_version(project)

    def predict(self, project: str, label_config: str, tasks: list[dict]) -> list[dict]:
        """One prediction per task, an empty result where the image cannot be read; no predictions
        at all while fewer than two classes have an annotated example."""
        config = parse_label_config(label_config)
        with self.lock:
            state = self.state(project)
            state.label_config = label_config
            for task in tasks:  # Label Studio sends a task's annotations along with it
                self._learn_task(project, task)
            errors = self._embed(state, {t["id"]: t.get("data", {}).get(config.image_key, "") for t in tasks})
            for task, error in errors.items():
                log.warning("task %s: no prediction: %s", task, error)
            state.save(self._path(project))
            fitted = self._fit(project)
            version = self.model_version(project)
            ok = [t["id"] for t in tasks if not errors.get(t["id"])]
            embeddings = self._stack([state.images[t][1] for t in ok])
        if fitted is None:
            return []
        prediction = fitted.predict(embeddings)
        outcome = dict(
            zip(ok, zip(prediction.labels, prediction.confidence.tolist(), strict=True), strict=True)
        )
        return [self._prediction(config, version, outcome.get(t["id"])) for t in tasks]

    def webhook(self, event: str, payload: dict) -> str:
        """Learn from or forget an annotation; the new model version (re-adapted in the background)."""
        project = str(payload["project"]["id"])
        with self.lock:
            state = self.state(project)
            state.label_config = payload["project"].get("label_config") or state.label_config
            if event in FORGET_EVENTS:
                gone = payload.get("annotations") or [payload.get("annotation") or {}]
                for annotation in gone:
                    state.annotations.pop(annotation.get("id"), None)
            else:
                annotations = payload["annotation"]
                tasks = payload["task"]
                if isinstance(annotations, dict):
                    annotations, tasks = [annotations], [tasks]
                by_id = {task["id"]: task for task in tasks}
                for annotation in annotations:
                    task = by_id[annotation["task"]]
                    self._learn_task(project, {**task, "annotations": [annotation]})
            state.save(self._path(project))
            version = self.model_version(project)
        # Label Studio waits one second for a webhook: answer now and re-adapt in the background;
        # a /predict arriving meanwhile waits for the re-adapted model under the lock.
        threading.Thread(target=self.refit, args=(project,), daemon=True).start()
        return version

    def refit(self, project: str) -> AdaptedTask | None:
        """The model adapted to the project's current annotations (fitted if they changed)."""
        with self.lock:
            return self._fit(project)

    def _learn_task(self, project: str, task: dict) -> None:
        """Record a task's annotations (replacing what was known of them) and embed its image."""
        state = self.state(project)
        config = parse_label_config(state.label_config)
        annotations = task.get("annotations") or []
        for annotation in annotations:
            state.annotations.pop(annotation.get("id"), None)
            if label := annotation_label(annotation, config.from_name):
                state.annotations[annotation["id"]] = (task["id"], label)
        if task_label(task, config.from_name):
            errors = self._embed(state, {task["id"]: task.get("data", {}).get(config.image_key, "")})
            if errors:
                log.warning("task %s: annotation not used: %s", task["id"], errors[task["id"]])
                for annotation in annotations:
                    state.annotations.pop(annotation.get("id"), None)

    def _embed(self, state: ProjectState, urls: dict[int, str]) -> dict[int, str]:
        """Embed the images of tasks not embedded yet; task id -> why it could not be (if so)."""
        missing = {task: url for task, url in urls.items() if not self._known(state, task, url)}
        errors: dict[int, str] = {}
        if not missing:
            return errors
        if self.client is None:
            return dict.fromkeys(missing, "LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY are not set")
        with tempfile.TemporaryDirectory() as folder:
            paths, hashes = {}, {}
            for task, url in missing.items():
                try:
                    content = self.client.image(url)
                except (LabelStudioError, OSError) as error:
                    errors[task] = str(error)
                    continue
                suffix = PurePosixPath(urlsplit(url).path).suffix[:10]
                paths[task] = Path(folder) / f"task-{task}{suffix}"
                paths[task].write_bytes(content)
                hashes[task] = hashlib.sha256(content).hexdigest()
            embedded = embed_files(
                self.model.backbone, self.model.backbone_key, list(paths.values()), self.cache, log.warning
            )
        vectors = iter(embedded.embeddings)
        for (task, url), error in zip(((t, missing[t]) for t in paths), embedded.errors, strict=True):
            if error:
                errors[task] = error
                continue
            self._vectors[hashes[task]] = next(vectors)
            state.images[task] = (url, hashes[task])
        return errors

    def _known(self, state: ProjectState, task: int, url: str) -> bool:
        """Whether the task's image (same URL) has an embedding here or in the cache."""
        if task not in state.images or state.images[task][0] != url:
            return False
        sha = state.images[task][1]
        if sha not in self._vectors:
            found = self.cache.get_many(self.model.backbone_key, [sha])
            if not found:
                return False
            self._vectors[sha] = found[sha]
        return True

    def _stack(self, hashes: list[str]) -> torch.Tensor:
        missing = [sha for sha in set(hashes) if sha not in self._vectors]
        self._vectors.update(self.cache.get_many(self.model.backbone_key, missing))
        if not hashes:
            return torch.zeros(0, self.model.backbone.embedding_dim)
        return torch.from_numpy(np.stack([self._vectors[sha] for sha in hashes]))

    def _fit(self, project: str) -> AdaptedTask | None:
        """The task fitted to the annotations and the other known tasks (refitted only when
        either changed); None while fewer than two classes have an example."""
        state = self.state(project)
        labels = {task: label for task, label in state.labels().items() if task in state.images}
        classes = sorted(set(labels.values()))
        if len(classes) < 2:
            return None
        key = (self.model_version(project), len(state.images))
        earlier = self._fitted.get(project)
        if earlier and earlier[0] == key:
            return earlier[1]
        support = self._stack([state.images[task][1] for task in labels])
        support_labels = torch.tensor([classes.index(label) for label in labels.values()])
        others = [sha for task, (_, sha) in state.images.items() if task not in labels]
        unlabeled = self._stack(others)[fit_sample(len(others))]
        # the last stage tuned for fewer annotations is kept while it may serve (fit_task)
        fitted = fit_task(
            self.model, classes, support, support_labels, unlabeled, earlier=earlier and earlier[1]
        )
        self._fitted[project] = (key, fitted)
        return fitted

    def _prediction(self, config: ChoicesConfig, version: str, outcome: tuple[str, float] | None) -> dict:
        if outcome is None:
            return {"result": [], "model_version": version}
        label, score = outcome
        return {
            "result": [choices_result(label, config.from_name, config.to_name)],
            "score": score,
            "model_version": version,
        }


class BearerToken(BaseHTTPMiddleware):
    """Every request needs the token: as `Authorization: Bearer <token>`, or as the password of
    HTTP basic auth (what Label Studio's model connection form sends)."""

    def __init__(self, app, token: str):
        super().__init__(app)
        self.token = token

    async def dispatch(self, request: Request, call_next):
        given = request.headers.get("authorization", "")
        scheme, _, value = given.partition(" ")
        if scheme.lower() == "basic":
            try:
                value = base64.b64decode(value).decode().partition(":")[2]
            except (ValueError, UnicodeDecodeError):
                value = ""
        elif scheme.lower() != "bearer":
            value = ""
        if not hmac.compare_digest(value.encode(), self.token.encode()):
            return JSONResponse({"error": "a valid token is needed (MSSL_BACKEND_TOKEN)"}, status_code=401)
        return await call_next(request)


def _project_id(value) -> str:
    """Label Studio names a project `<id>.<created timestamp>`; the state is kept by id."""
    project = str(value).split(".", 1)[0]
    if not project.isdigit():
        raise LabelStudioError(f"not a Label Studio project id: {value!r}")
    return project


def create_app(backend: MLBackend, token: str | None = None) -> Starlette:
    """The web application around `backend`; with `token`, every request must carry it."""

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "UP", "model_class": MODEL_CLASS})

    def setup(request: Request, body: dict) -> dict:
        return {"model_version": backend.setup(_project_id(body.get("project")), body.get("schema") or "")}

    def predict(request: Request, body: dict) -> dict:
        project = _project_id(body.get("project"))
        return {"results": backend.predict(project, body.get("label_config") or "", body.get("tasks") or [])}

    def webhook(request: Request, body: dict) -> dict:
        event = body.get("action", "")
        if event not in LEARN_EVENTS + FORGET_EVENTS:
            return {"status": "ignored", "event": event}
        return {"status": "ok", "model_version": backend.webhook(event, body)}

    def route(path: str, handler) -> Route:
        async def endpoint(request: Request) -> JSONResponse:
            try:
                body = await request.json()
            except ValueError:
                return JSONResponse({"error": "the request body is not JSON"}, status_code=400)
            try:
                # the model's work blocks: a worker thread keeps the server answering /health
                return JSONResponse(await run_in_threadpool(handler, request, body))
            except (LabelStudioError, KeyError, TypeError) as error:
                log.warning("%s refused: %s", path, error)  # Label Studio shows only "400 Bad Request"
                return JSONResponse({"error": str(error)}, status_code=400)

        return Route(path, endpoint, methods=["POST"])

    routes = [
        Route("/", health),
        Route("/health", health),
        route("/setup", setup),
        route("/predict", predict),
        route("/webhook", webhook),
    ]
    middleware = [Middleware(BearerToken, token=token)] if token else []
    return Starlette(routes=routes, middleware=middleware)


def serve(host: str = "127.0.0.1", port: int = 9090) -> None:
    """Run the backend with uvicorn; images are read from `LABEL_STUDIO_URL`."""
    import uvicorn

    token = os.environ.get("MSSL_BACKEND_TOKEN") or None
    if host not in ("127.0.0.1", "localhost", "::1") and not token:
        raise SystemExit(
            f"Serving on {host} lets other machines ask for predictions: set MSSL_BACKEND_TOKEN first "
            "(Label Studio sends it as the basic-auth password of the model connection)."
        )
    backend = MLBackend(LabelStudioClient.from_environment())
    # the model is loaded before serving: Label Studio gives a webhook one second to answer
    log.warning(
        "serving %s on http://%s:%d for Label Studio at %s", backend.model.name, host, port, backend.client.url
    )
    uvicorn.run(create_app(backend, token), host=host, port=port, log_level="warning")
