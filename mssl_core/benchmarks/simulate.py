"""A simulated reviewer: how many human actions bring a batch to 95% and 99% correct.

It does what a person does on the Review page: takes the image shown next (`--order app`: the
page's own order, `review.review_order`), accepts the pseudo-label when it is right and
otherwise corrects it to the truth (one action each), and the batch re-adapts after every
decision through the app's own step (`pseudo_label.adapt_batch`), its confidence corrected by
the decisions so far as the page's is. `random` and `least-confident` are the orders the app's
must beat.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from mssl_core.engine.checkpoints import MODELS_DIR, Model
from mssl_core.engine.data.paths import REPO_ROOT
from mssl_core.engine.ssl import SSLOptions
from mssl_core.labeling.adapt import Prediction
from mssl_core.labeling.bulk import embed_files
from mssl_core.labeling.embedding_cache import EmbeddingCache
from mssl_core.labeling.folders import prepare_support
from mssl_core.labeling.images import list_files
from mssl_core.project.pseudo_label import UNDECIDED, Reviewed, adapt_batch
from mssl_core.project.review import expected_errors, review_order

log = logging.getLogger(__name__)


@dataclass
class CurvePoint:
    """The batch after `actions` human decisions."""

    actions: int
    reviewed: int
    batch_accuracy: float  # each image's current label: the person's if reviewed, else the model's
    expected_errors_remaining: float  # sum of (1 - confidence) over the unreviewed: what the app can claim
    actual_errors_remaining: int  # wrong pseudo-labels among the unreviewed


def simulate_review(
    model: Model,
    classes: list[str],
    support: Tensor,
    support_labels: Tensor,
    batch: Tensor,
    truth: np.ndarray,
    order: str = "app",
    max_actions: int | None = None,
    seed: int = 0,
    ssl: SSLOptions | None = None,
    on_point: Callable[[CurvePoint], None] | None = None,
    stop_at: float | None = None,
) -> list[CurvePoint]:
    """The review curve of one batch (`truth`: class index per batch image): a point before any
    action, then one after each, until every image is reviewed, `max_actions`, or the batch is
    `stop_at` correct."""
    limit = len(batch) if max_actions is None else min(max_actions, len(batch))
    curve = []
    task = ReviewTask(model, classes, support, support_labels, batch, np.asarray(truth))
    for point, _, _ in review_steps(task, order, seed, ssl):
        curve.append(point)
        if on_point:
            on_point(point)
        if point.actions == limit or (stop_at is not None and _reached(point, stop_at)):
            break
    return curve


@dataclass(frozen=True)
class ReviewTask:
    """A batch to review: the model, the classes, the labeled images and the batch with its truth
    (class index per batch image)."""

    model: Model
    classes: list[str]
    support: Tensor
    support_labels: Tensor
    batch: Tensor
    truth: np.ndarray


def review_steps(
    task: ReviewTask, order: str = "app", seed: int = 0, ssl: SSLOptions | None = None
) -> Iterator[tuple[CurvePoint, Prediction, np.ndarray]]:
    """The simulated review one state at a time: its curve point, the batch's prediction then
    and the indices of the images not yet reviewed; each next one after one more action, until
    every image is reviewed."""
    truth, batch = task.truth, task.batch
    rng = np.random.default_rng(seed)
    reviewed = np.zeros(len(batch), dtype=bool)
    one_by_one = Reviewed.none(len(task.classes))  # every decision here is one, as on the Review page
    for actions in range(len(batch) + 1):
        decided_labels = np.where(reviewed, truth, UNDECIDED)
        prediction = adapt_batch(
            task.model, task.classes, task.support, task.support_labels, batch, decided_labels, ssl, one_by_one
        )
        predicted = prediction.probabilities.argmax(1)
        pending = np.flatnonzero(~reviewed)
        wrong = int((predicted[pending] != truth[pending]).sum())
        expected = expected_errors(prediction.confidence[pending])[0]
        yield (
            CurvePoint(actions, int(reviewed.sum()), 1 - wrong / len(batch), expected, wrong),
            prediction,
            pending,
        )
        if not len(pending):
            return
        # the reviewer's action (accept or correct) leaves the image with its true label
        shown = pending[review_order(prediction.probabilities[pending], order, rng)[0]]
        reviewed[shown] = True
        one_by_one = one_by_one.plus(prediction.before_review[shown], truth[shown])


def simulate_folders(
    support_dir: Path,
    unlabeled_dir: Path,
    truth_csv: Path,
    method: str | None = None,
    order: str = "app",
    max_actions: int | None = None,
    seed: int = 0,
    cache: EmbeddingCache | None = None,
    models: Path = MODELS_DIR,
    on_point: Callable[[CurvePoint], None] | None = None,
    stop_at: float | None = None,
) -> list[CurvePoint]:
    """`simulate_review` on folders as `label` takes them, with the true class of every batch
    image in `truth_csv` (`file,label`, file relative to `unlabeled_dir`). Files without a
    truth row, or that cannot be read, are left out (and logged)."""
    task = prepare_support(support_dir, method, folder=models, log=log.warning)
    truth = read_truth(truth_csv, task.classes)
    paths = [path for path in list_files(unlabeled_dir) if path.relative_to(unlabeled_dir).as_posix() in truth]
    if not paths:
        raise ValueError(f"no file under {unlabeled_dir} has a row in {truth_csv}")
    if missing := len(truth) - len(paths):
        log.warning("%d rows of %s name no file under %s", missing, truth_csv, unlabeled_dir)
    model = task.model
    embedded = embed_files(model.backbone, model.backbone_key, paths, cache, log.warning)
    readable = [i for i, error in enumerate(embedded.errors) if not error]
    batch = torch.from_numpy(embedded.embeddings)
    classes_of = np.array([truth[paths[i].relative_to(unlabeled_dir).as_posix()] for i in readable])
    return simulate_review(
        model,
        task.classes,
        task.embeddings,
        task.labels,
        batch,
        classes_of,
        order,
        max_actions,
        seed,
        on_point=on_point,
    )


def read_truth(path: Path, classes: list[str]) -> dict[str, int]:
    """`file,label` rows as {file: class index}; a label that is no support class is an error
    naming the row, since the simulated reviewer could never choose it."""
    truth = {}
    with path.open(newline="", encoding="utf-8") as handle:
        for line, row in enumerate(csv.DictReader(handle), start=2):
            if not {"file", "label"} <= set(row):
                raise ValueError(f"{path}: the header must be `file,label`")
            if row["label"] not in classes:
                raise ValueError(
                    f"{path}, line {line}: label {row['label']!r} is not one of the support classes {classes}"
                )
            truth[row["file"]] = classes.index(row["label"])
    return truth


def actions_to_reach(curve: list[CurvePoint], accuracy: float) -> int | None:
    """The fewest actions after which the batch is at least `accuracy` correct (None: never)."""
    return next((p.actions for p in curve if _reached(p, accuracy)), None)


def _reached(point: CurvePoint, accuracy: float) -> bool:
    return point.batch_accuracy >= accuracy - 1e-12  # 1 - 2/200 is 0.99 up to rounding


def write_curve(curve: list[CurvePoint], out: Path) -> None:
    """`actions,reviewed,batch_accuracy,expected_errors_remaining,actual_errors_remaining`."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(CurvePoint.__dataclass_fields__))
        writer.writeheader()
        for point in curve:
            row = asdict(point)
            row["batch_accuracy"] = f"{point.batch_accuracy:.6f}"
            row["expected_errors_remaining"] = f"{point.expected_errors_remaining:.3f}"
            writer.writerow(row)


CURVES_PATH = REPO_ROOT / "docs" / "review-curves.json"  # written by scripts/review_curves.py


def load_curves(path: Path = CURVES_PATH) -> list[dict]:
    """The published review curves: per task and order, its summary and `curve` points."""
    return json.loads(path.read_text()) if path.exists() else []
