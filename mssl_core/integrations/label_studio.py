"""Label Studio's side of the exchange: its labeling config, its tasks and annotations, its API.

Used by the ML backend (ml_backend.py) and by the import of a Label Studio export as labeled
examples. Images are read from the Label Studio server named by `LABEL_STUDIO_URL` and from no
other host: a task whose image lives elsewhere (S3, another web site) is reported, not fetched.
"""

from __future__ import annotations

import json
import os
import re
import threading
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from pathlib import PurePosixPath
from urllib.parse import unquote, urljoin, urlsplit

import httpx2


class LabelStudioError(ValueError):
    """A config, task or server answer we cannot use; the message is meant for the user."""


@dataclass(frozen=True)
class ChoicesConfig:
    """An image classification config: one `<Image>` and one single-choice `<Choices>` on it."""

    from_name: str
    to_name: str
    image_key: str  # the task data field holding the image URL ("image" for value="$image")
    labels: tuple[str, ...]


def parse_label_config(xml: str) -> ChoicesConfig:
    """The `<Choices>` / `<Image>` pair of a Label Studio labeling config, or a LabelStudioError
    saying why this backend cannot serve it."""
    try:
        root = ElementTree.fromstring(xml or "")
    except ElementTree.ParseError as error:
        raise LabelStudioError(f"The labeling config is not valid XML: {error}") from None
    images = [tag for tag in root.iter() if tag.tag == "Image"]
    choices = [tag for tag in root.iter() if tag.tag == "Choices"]
    others = sorted(
        {tag.tag for tag in root.iter()} - {"View", "Header", "Image", "Choices", "Choice", "Style"}
    )
    if len(images) != 1 or len(choices) != 1:
        raise LabelStudioError(
            "This backend serves image classification: one <Image> and one <Choices> tag; "
            f"the config has {len(images)} <Image> and {len(choices)} <Choices>."
        )
    if others:
        raise LabelStudioError(f"This backend serves image classification only; the config also has {others}.")
    image, tag = images[0], choices[0]
    if tag.get("choice", "single") != "single" and tag.get("choice") != "single-radio":
        raise LabelStudioError('This backend predicts one class per image; set choice="single" on <Choices>.')
    if tag.get("toName") != image.get("name"):
        raise LabelStudioError("The <Choices> tag must label the <Image> (toName = the image's name).")
    value = image.get("value", "")
    if not value.startswith("$"):
        raise LabelStudioError('The <Image> value must name a task field, e.g. value="$image".')
    labels = tuple(c.get("value") or c.get("alias") or "" for c in tag.iter("Choice"))
    return ChoicesConfig(tag.get("name", ""), image.get("name", ""), value[1:], labels)


def annotation_label(annotation: dict, from_name: str | None = None) -> str | None:
    """The single class an annotation chose (in `from_name` if given); None for a skipped
    annotation or one without exactly one choice."""
    if annotation.get("was_cancelled"):
        return None
    chosen = [
        choice
        for item in annotation.get("result") or []
        if item.get("type") == "choices" and from_name in (None, item.get("from_name"))
        for choice in (item.get("value") or {}).get("choices") or []
    ]
    return chosen[0] if len(chosen) == 1 else None


def task_label(task: dict, from_name: str | None = None) -> str | None:
    """A task's class: that of its latest usable annotation, or None."""
    for annotation in sorted(task.get("annotations") or [], key=lambda a: a.get("id") or 0, reverse=True):
        if label := annotation_label(annotation, from_name):
            return label
    return None


UPLOAD_PREFIX = re.compile(r"^[0-9a-f]{8}-(.+)$")  # Label Studio prefixes uploaded file names


def label_studio_labels(content: bytes, uploaded: list[str]) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """File name -> class from a Label Studio JSON export (as `read_label_csv` gives from a CSV),
    matched to the `uploaded` file names with or without Label Studio's upload prefix; and the
    problems found, by task. Tasks without an annotation are left out: predictions are not labels."""
    try:
        tasks = json.loads(content)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        return {}, [("Label Studio export", f"is not JSON: {error}")]
    if not isinstance(tasks, list) or not all(isinstance(t, dict) for t in tasks):
        return {}, [("Label Studio export", "is not a list of tasks (export as JSON, not JSON-MIN or CSV)")]
    names = set(uploaded)
    labels: dict[str, str] = {}
    problems = []
    for number, task in enumerate(tasks, 1):
        where = f"task {task.get('id', number)}"
        urls = [v for v in (task.get("data") or {}).values() if isinstance(v, str)]
        if not urls:
            problems.append((where, "has no image"))
            continue
        if (label := task_label(task)) is None:
            continue
        file = PurePosixPath(unquote(urlsplit(urls[0]).path) or urls[0]).name
        plain = UPLOAD_PREFIX.sub(r"\1", file)
        match = file if file in names or plain not in names else plain
        labels[match] = label
    return labels, problems


def _is_jwt(key: str) -> bool:
    return key.count(".") == 2


class LabelStudioClient:
    """Reads images and tasks from one Label Studio server, with its API key: a personal access
    token (exchanged for short-lived access tokens, refreshed when they expire) or a legacy token."""

    def __init__(
        self, url: str, api_key: str, timeout: float = 30.0, transport: httpx2.BaseTransport | None = None
    ):
        if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).netloc:
            raise LabelStudioError(f"LABEL_STUDIO_URL must be an http(s) address; got {url!r}.")
        self.url = url.rstrip("/")
        self.api_key = api_key
        self.http = httpx2.Client(timeout=timeout, follow_redirects=False, transport=transport)
        self._access: str | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_environment(cls) -> LabelStudioClient:
        """The server of `LABEL_STUDIO_URL`, with `LABEL_STUDIO_API_KEY`."""
        url, key = os.environ.get("LABEL_STUDIO_URL", ""), os.environ.get("LABEL_STUDIO_API_KEY", "")
        if not url or not key:
            raise LabelStudioError(
                "Set LABEL_STUDIO_URL (e.g. http://127.0.0.1:8080) and LABEL_STUDIO_API_KEY (a personal "
                "access token from Label Studio's Account & Settings) so images can be read."
            )
        return cls(url, key)

    def resolve(self, url: str) -> str:
        """`url` made absolute on this server; a LabelStudioError if it points anywhere else."""
        absolute = urljoin(self.url + "/", url)
        ours, theirs = urlsplit(self.url), urlsplit(absolute)
        if (theirs.scheme, theirs.netloc) != (ours.scheme, ours.netloc):
            raise LabelStudioError(
                f"the image is not on Label Studio ({ours.netloc}) but at {theirs.scheme}://{theirs.netloc}; "
                "images are only read from LABEL_STUDIO_URL"
            )
        return absolute

    def _authorization(self, renew: bool = False) -> str:
        if not _is_jwt(self.api_key):
            return f"Token {self.api_key}"
        with self._lock:
            if self._access is None or renew:
                answer = self.http.post(f"{self.url}/api/token/refresh/", json={"refresh": self.api_key})
                if answer.status_code != 200:
                    raise LabelStudioError(
                        f"Label Studio refused LABEL_STUDIO_API_KEY ({answer.status_code}); create a new "
                        "personal access token in Account & Settings."
                    )
                self._access = answer.json()["access"]
            return f"Bearer {self._access}"

    def get(self, url: str) -> httpx2.Response:
        """GET a URL of this server with the API key; one retry with a fresh access token."""
        absolute = self.resolve(url)
        answer = self.http.get(absolute, headers={"Authorization": self._authorization()})
        if answer.status_code == 401 and _is_jwt(self.api_key):
            answer = self.http.get(absolute, headers={"Authorization": self._authorization(renew=True)})
        if answer.status_code != 200:
            # the path is left out: file names often identify a patient, and this message is logged
            raise LabelStudioError(f"Label Studio answered {answer.status_code}")
        return answer

    def image(self, url: str) -> bytes:
        """An image's bytes, by the URL a task holds (`/data/upload/...`, `/data/local-files/?d=...`)."""
        return self.get(url).content

    def annotated_tasks(self, project: int) -> list[dict]:
        """Every task of a project with an annotation, with its annotations (the JSON export)."""
        return self.get(f"/api/projects/{project}/export?exportType=JSON&download_all_tasks=false").json()
