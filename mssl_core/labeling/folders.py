"""Labeling folders of image files: decode, embed, adapt, predict, write the CSV (the CLI's
`label` and the Python API)."""

from __future__ import annotations

import csv
import logging
import time
from collections.abc import Callable, Sequence
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
from mssl_core.labeling.label_issues import LabelCheck, labels_to_check

logger = logging.getLogger(__name__)


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
    """A labeled batch: one row per image, in the order given (files: sorted by path)."""

    classes: list[str]
    rows: list[PredictionRow]
    model_name: str
    backbone_reason: str
    seconds: dict[str, float] = field(default_factory=dict)  # model (load + support), decode, embed, adapt
    # labeled files (relative to the labeled folder) whose label looks wrong (label_issues.py)
    labels_to_check: list[tuple[str, LabelCheck]] = field(default_factory=list)
    batch_shares: np.ndarray | None = None  # see adapt.Prediction.batch_shares
    confidence_checked: bool = False  # see adapt.Prediction.confidence_checked

    @property
    def paths(self) -> list[str]:
        return [row.path for row in self.rows]

    @property
    def labels(self) -> list[str]:
        """The predicted class per image ("" where it could not be read)."""
        return [row.label for row in self.rows]

    @property
    def errors(self) -> list[str]:
        """Why an image could not be read ("" where it was)."""
        return [row.error for row in self.rows]

    @property
    def probabilities(self) -> np.ndarray:
        """(images, classes), columns in the order of `classes`; NaN rows where unreadable."""
        table = np.full((len(self.rows), len(self.classes)), np.nan)
        for i, row in enumerate(self.rows):
            if row.probabilities:
                table[i] = row.probabilities
        return table

    @property
    def confidence(self) -> np.ndarray:
        """The probability of each predicted class (NaN where unreadable)."""
        return np.array([np.nan if row.confidence is None else row.confidence for row in self.rows])

    def to_csv(self, out: str | Path) -> None:
        """`path,label,confidence,error,p_<class>...`, one row per image (the CLI's file)."""
        write_predictions_csv(self, Path(out))


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
    paths: list[str] = field(default_factory=list)  # the labeled files, in row order, where known


def prepare_support(
    support_dir: Path,
    method: str | None = None,
    backbone: str = "auto",
    folder: Path | None = None,
    log: Callable[[str], None] = logger.warning,
) -> Support:
    """Decode the class folders of `support_dir`, choose the image features, embed them."""
    folder = folder or MODELS_DIR
    support_files = class_folder_files(support_dir)
    support_images, support_errors = decode_all([f.path for f in support_files], log)
    usable = [(im, f) for im, f, e in zip(support_images, support_files, support_errors, strict=True) if not e]
    support = embed_support(
        [im for im, _ in usable],
        [f.label for _, f in usable],
        method,
        backbone,
        folder,
        f"{support_dir} (one sub-folder per class)",
    )
    support.paths = [str(f.path.relative_to(support_dir)) for _, f in usable]
    return support


def embed_support(
    images: Sequence[Image.Image],
    label_names: Sequence[str],
    method: str | None = None,
    backbone: str = "auto",
    folder: Path = MODELS_DIR,
    given: str = "the labeled images",
) -> Support:
    """Choose the image features and model for the labeled images, and embed them."""
    method = method or default_method(folder)
    classes = sorted(set(label_names))
    if len(classes) < 2:
        raise ValueError(f"{given}: need at least two classes with readable images; found {classes}")
    labels = torch.tensor([classes.index(label) for label in label_names])
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
    log: Callable[[str], None] = logger.warning,
    ssl: SSLOptions | None = None,
    cache: EmbeddingCache | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> LabelingResult:
    """Pseudo-label every file under `unlabeled_dir` from the class folders of `support_dir`.

    The batch streams through the network (see bulk.py): memory holds its embeddings, not its
    images. With a `cache`, images embedded before by the same model are not embedded again."""
    started = time.perf_counter()
    unlabeled_paths = list_files(unlabeled_dir)
    task_support = prepare_support(support_dir, method, backbone, folder, log)
    model_seconds = time.perf_counter() - started
    model = task_support.model
    embedded = embed_files(model.backbone, model.backbone_key, unlabeled_paths, cache, log, progress)
    paths = [str(path.relative_to(unlabeled_dir)) for path in unlabeled_paths]
    result = predict_embedded(task_support, torch.from_numpy(embedded.embeddings), paths, embedded.errors, ssl)
    result.seconds = {"model": model_seconds, **embedded.seconds, **result.seconds}
    return result


def predict_embedded(
    task_support: Support,
    unlabeled: Tensor,
    paths: Sequence[str],
    errors: Sequence[str],
    ssl: SSLOptions | None,
) -> LabelingResult:
    """Adapt to the support and the embedded batch (`unlabeled`: the readable images, in order)
    and make one row per path, with the error where an image could not be read."""
    started = time.perf_counter()
    model, classes = task_support.model, task_support.classes
    support, labels = task_support.embeddings, task_support.labels
    prediction = adapt(model, classes, support, labels, unlabeled[fit_sample(len(unlabeled))], unlabeled, ssl)
    outcomes = iter(prediction.probabilities)
    rows = [
        prediction_row(path, classes, None if error else next(outcomes), error)
        for path, error in zip(paths, errors, strict=True)
    ]
    seconds = {"adapt": time.perf_counter() - started}
    checks = []
    if prediction.held_out is not None and task_support.paths:
        found = labels_to_check(labels.numpy(), prediction.held_out, classes)
        checks = [(task_support.paths[check.row], check) for check in found]
    return LabelingResult(
        classes,
        rows,
        model.name,
        task_support.reason,
        seconds,
        checks,
        prediction.batch_shares,
        prediction.confidence_checked,
    )


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
