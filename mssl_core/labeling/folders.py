"""Labeling folders of image files: decode, embed, adapt, predict, write the CSV (the CLI's
`label` and the Python API)."""

from __future__ import annotations

import csv
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from mssl_core.engine.backbones import embed_images
from mssl_core.engine.checkpoints import MODELS_DIR, Model
from mssl_core.engine.model_cards import default_method
from mssl_core.engine.ssl import SSLOptions
from mssl_core.labeling.adapt import adapt, choose_backbone, fit_sample, model_for
from mssl_core.labeling.bulk import embed_files
from mssl_core.labeling.embedding_cache import EmbeddingCache
from mssl_core.labeling.images import ImageError, class_folder_files, decode_image, list_files


@dataclass
class PredictionRow:
    """One unlabeled file's outcome: a label and confidence, or the reason it could not be read."""

    path: str
    label: str = ""
    confidence: float | None = None
    error: str = ""
    probabilities: list[float] = field(default_factory=list)


@dataclass
class LabelingResult:
    classes: list[str]
    rows: list[PredictionRow]
    model_name: str
    backbone_reason: str
    seconds: dict[str, float] = field(default_factory=dict)  # model (load + support), decode, embed, adapt


def readable_images(paths: Iterable[Path]) -> Iterator[Image.Image]:
    """The decoded images of `paths`, skipping those that cannot be read (reported elsewhere)."""
    for path in paths:
        try:
            yield decode_image(path)
        except ImageError:
            continue


def decode_all(paths: Sequence[Path], log: Callable[[str], None]) -> tuple[list, list[str]]:
    """Decoded images (None where unreadable) and the error message per path ('' if fine)."""
    images, errors = [], []
    for path in paths:
        try:
            images.append(decode_image(path))
            errors.append("")
        except ImageError as error:
            images.append(None)
            errors.append(str(error))
            log(f"{path}: {error}")
    return images, errors


@dataclass
class Support:
    """The labeled images of a task, embedded by the model chosen for them."""

    classes: list[str]
    labels: Tensor
    embeddings: Tensor
    model: Model
    reason: str  # why this backbone


def prepare_support(
    support_dir: Path,
    method: str | None = None,
    backbone: str = "auto",
    folder: Path | None = None,
    log: Callable[[str], None] = print,
    unlabeled_paths: Sequence[Path] = (),
    cache: EmbeddingCache | None = None,
) -> Support:
    """Decode the class folders of `support_dir`, choose the backbone (measured with a sample
    of `unlabeled_paths`), embed them."""
    folder = folder or MODELS_DIR
    method = method or default_method(folder)
    support_files = class_folder_files(support_dir)
    support_images, support_errors = decode_all([f.path for f in support_files], log)
    usable = [
        (im, f.label) for im, f, e in zip(support_images, support_files, support_errors, strict=True) if not e
    ]
    classes = sorted({label for _, label in usable})
    if len(classes) < 2:
        raise ValueError(
            f"{support_dir} needs at least two class sub-folders with readable images; found {classes}"
        )
    images = [im for im, _ in usable]
    labels = torch.tensor([classes.index(label) for _, label in usable])
    if backbone == "auto":
        backbone, reason = choose_backbone(folder)
    else:
        reason = f"image features {backbone}: chosen by the user"
    model = model_for(method, backbone, folder)
    return Support(classes, labels, embed_images(model.backbone, images), model, reason)


def label_folders(
    support_dir: Path,
    unlabeled_dir: Path,
    method: str | None = None,
    backbone: str = "auto",
    folder: Path = MODELS_DIR,
    log: Callable[[str], None] = print,
    ssl: SSLOptions | None = None,
    cache: EmbeddingCache | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> LabelingResult:
    """Pseudo-label every file under `unlabeled_dir` from the class folders of `support_dir`.

    The batch streams through the network (see bulk.py): memory holds its embeddings, not its
    images. With a `cache`, images embedded before by the same model are not embedded again."""
    started = time.perf_counter()
    unlabeled_paths = list_files(unlabeled_dir)
    task_support = prepare_support(support_dir, method, backbone, folder, log, unlabeled_paths, cache)
    model_seconds = time.perf_counter() - started
    model, classes = task_support.model, task_support.classes
    support, labels, reason = task_support.embeddings, task_support.labels, task_support.reason

    embedded = embed_files(model.backbone, model.backbone_key, unlabeled_paths, cache, log, progress)
    started = time.perf_counter()
    unlabeled = torch.from_numpy(embedded.embeddings)
    prediction = adapt(model, classes, support, labels, unlabeled[fit_sample(len(unlabeled))], unlabeled, ssl)
    seconds = {"model": model_seconds, **embedded.seconds, "adapt": time.perf_counter() - started}
    outcomes = iter(prediction.probabilities)
    rows = [
        prediction_row(str(path.relative_to(unlabeled_dir)), classes, None if error else next(outcomes), error)
        for path, error in zip(unlabeled_paths, embedded.errors, strict=True)
    ]
    return LabelingResult(classes, rows, model.name, reason, seconds)


def prediction_row(
    path: str, classes: list[str], probabilities: np.ndarray | None, error: str = ""
) -> PredictionRow:
    """The CSV row of one file: the most probable class and its probability, or the error."""
    if error:
        return PredictionRow(path, error=error)
    best = int(probabilities.argmax())
    return PredictionRow(path, classes[best], float(probabilities[best]), "", probabilities.tolist())


def write_csv_header(handle: TextIO, classes: list[str]):
    """A CSV writer on `handle` with the header `path,label,confidence,error,p_<class>...`."""
    writer = csv.writer(handle)
    writer.writerow(["path", "label", "confidence", "error", *[f"p_{c}" for c in classes]])
    return writer


def write_csv_row(writer, row: PredictionRow, n_classes: int) -> None:
    confidence = "" if row.confidence is None else f"{row.confidence:.4f}"
    proba = [f"{p:.4f}" for p in row.probabilities] or [""] * n_classes
    writer.writerow([row.path, row.label, confidence, row.error, *proba])


def write_predictions_csv(result: LabelingResult, out: Path) -> None:
    """`path,label,confidence,error,p_<class>...`, one row per unlabeled file."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="", encoding="utf-8") as handle:
        writer = write_csv_header(handle, result.classes)
        for row in result.rows:
            write_csv_row(writer, row, len(result.classes))
