"""Adding uploaded images to a project: every file is decoded once to prove it is usable,
duplicates (same content) are counted once, and every skipped file is reported with its reason."""

from __future__ import annotations

import functools
import tempfile
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from mssl_core.engine.data.paths import ASSETS_DIR
from mssl_core.labeling.images import ImageError, UploadedFile, decode_image, expand_uploads, list_files
from mssl_core.project.export import WINDOWS_RESERVED
from mssl_core.project.store import (
    LabelingProject,
    content_sha256,
    create_project,
    data_dir,
    open_project,
    slugify,
    storage_error,
)

DEMO_DIR = ASSETS_DIR / "demo"
MAX_CLASS_NAME = 100


def class_name_problem(name: str) -> str | None:
    """Why `name` cannot be a class (it becomes a folder name in exports), or None if it can."""
    if len(name) > MAX_CLASS_NAME:
        return f"is longer than {MAX_CLASS_NAME} characters"
    if any(c in name for c in "/\\"):
        return "contains a path separator (/ or \\)"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return "contains a control character"
    if name.strip(". ") == "":
        return "is only dots or spaces"
    if name.split(".")[0].strip().lower() in WINDOWS_RESERVED:
        return "is a name Windows reserves for devices (CON, NUL, COM1, ...)"
    return None


@dataclass
class IngestReport:
    added: int = 0
    duplicates: list[str] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)


def ingest(
    project: LabelingProject,
    files: list[UploadedFile],
    role: str,
    csv_labels: dict[str, str] | None = None,
    default_label: str | None = None,
) -> IngestReport:
    """Store usable files as `role` images. Labeled files take their label from the CSV, then
    their class folder, then `default_label`; a labeled file with none of these is reported."""
    report = IngestReport()
    labels_added: set[str] = set()
    labeled = {image.sha256: image for image in project.images("labeled")}
    batch = {image.sha256: image for image in project.images("unlabeled")}
    for file in files:
        try:
            decode_image(file.content)
        except ImageError as error:
            report.problems.append((file.name, str(error)))
            continue
        sha = content_sha256(file.content)
        label = None
        if role == "labeled":
            label = (csv_labels or {}).get(file.name) or file.label or (default_label or None)
            if not label:
                report.problems.append((file.name, "no class given (folder, CSV or typed name)"))
                continue
            if problem := class_name_problem(label):
                report.problems.append((file.name, f"class name {label!r} {problem}"))
                continue
        elif sha in labeled:  # one image, counted once: it is already a labeled example
            report.duplicates.append(
                f"{file.name} is already labeled ({labeled[sha].name}); not added to the batch"
            )
            continue
        image, added = project.add_image(file.content, file.name, role, label)
        labels_added.add(label)
        if not added:
            report.duplicates.append(f"{file.name} (same image as {image.name})")
            continue
        report.added += 1
        if sha in batch:
            report.duplicates.append(f"{file.name} was in the unlabeled batch; it now counts as labeled only")
    if csv_labels:
        uploaded = {file.name for file in files}
        report.problems += [
            ("labels CSV", f"lists '{name}', which was not uploaded")
            for name in csv_labels
            if name not in uploaded
        ]
        report.problems += [
            (f"class '{label}'", "has no usable images (its files are missing or unreadable)")
            for label in sorted(set(csv_labels.values()) - labels_added)
        ]
    return report


def ingest_uploads(
    project: LabelingProject,
    uploads: list[tuple[str, BinaryIO]],
    role: str,
    labels_from: Callable[[list[str]], tuple[dict[str, str], list[tuple[str, str]]]] | None = None,
    default_label: str | None = None,
) -> IngestReport:
    """`ingest` uploaded files and zips (name, stream). They pass through a temporary folder
    beside the projects (the same disk, private, removed afterwards), copied and unpacked in
    chunks, so neither an upload nor what a zip expands to is ever held whole in memory.
    `labels_from`: the unpacked file names -> (file -> class, problems), e.g. from a labels
    CSV or a Label Studio export."""
    data_dir().mkdir(parents=True, exist_ok=True)
    try:
        with tempfile.TemporaryDirectory(prefix="upload-", dir=data_dir()) as folder:
            files, problems = expand_uploads(uploads, Path(folder))
            labels, label_problems = labels_from([f.name for f in files]) if labels_from else ({}, [])
            report = ingest(project, files, role, labels, default_label)
    except OSError as error:  # the temporary copy: disk full, folder read-only
        raise storage_error("the upload", error, data_dir()) from None
    report.problems = problems + label_problems + report.problems
    return report


def load_demo(project: LabelingProject) -> tuple[IngestReport, IngestReport]:
    """The bundled demo: a few labeled Fashion-MNIST items per class and an unlabeled batch."""
    labeled = [UploadedFile(p.name, p, p.parent.name) for p in list_files(DEMO_DIR / "labeled")]
    unlabeled = [UploadedFile(p.name, p) for p in list_files(DEMO_DIR / "unlabeled")]
    return ingest(project, labeled, "labeled"), ingest(project, unlabeled, "unlabeled")


def demo_project(user: str | None = None) -> str:
    """The name of a project holding the bundled demo, created and loaded on first use: `demo`,
    or `demo-<user>` for a named user (reopened later; the demo images are never added twice)."""
    name = slugify("demo" if user is None else f"demo-{user}")
    try:
        project = create_project(name, owner=user)
    except ValueError:  # it exists: reopen it
        project = open_project(name, create=False, user=user)
    with closing(project):
        load_demo(project)
    return name


def class_counts(project: LabelingProject) -> dict[str, int]:
    counts: dict[str, int] = {}
    for image in project.images("labeled"):
        counts[image.label] = counts.get(image.label, 0) + 1
    return dict(sorted(counts.items()))


@functools.cache
def demo_truth() -> dict[str, str]:
    """True labels of the demo's unlabeled batch (for measuring, never for predicting), keyed by
    each file's SHA-256: a user's own image that merely shares a demo file's name is not scored."""
    lines = (DEMO_DIR / "unlabeled_truth.csv").read_text().splitlines()[1:]
    rows = (line.split(",", 1) for line in lines)
    return {content_sha256(DEMO_DIR / "unlabeled" / name): label for name, label in rows}


def demo_accuracy(hashes: list[str], labels: list[str]) -> tuple[int, float] | None:
    """(how many, fraction right) of the predictions whose image (by SHA-256) is a demo image with
    a known true label; None if there are none (a real project)."""
    truth = demo_truth()
    known = [(truth[h], label) for h, label in zip(hashes, labels, strict=True) if h in truth]
    if not known:
        return None
    return len(known), sum(true == label for true, label in known) / len(known)
