"""Pseudo-labeling a stored labeling project: the labeled images plus every accepted or
corrected decision form the support set; the undecided images are the unlabeled batch the
method adapts with. Embeddings come from the cache, so re-adapting after a decision costs
only the method's `fit`, not the backbone."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from mssl_core.checkpoints import Model
from mssl_core.embedding_cache import EmbeddingCache, embed_cached
from mssl_core.export import ExportRow
from mssl_core.images import decode_image
from mssl_core.labeling import Prediction, adapt
from mssl_core.store import LabelingProject, StoredImage


@dataclass
class ProjectPrediction:
    """Predictions for every unlabeled image of a project, aligned with `images`."""

    images: list[StoredImage]
    prediction: Prediction
    support_embeddings: np.ndarray
    decisions: dict[int, tuple[str, str | None]]
    disagreement: np.ndarray  # semi-supervised label differs from the nearest class mean's

    def status(self, image: StoredImage) -> str:
        action = self.decisions.get(image.id, ("", None))[0]
        return {"accept": "accepted", "correct": "corrected", "skip": "skipped"}.get(action, "pseudo-labeled")


def support_set(project: LabelingProject) -> list[tuple[StoredImage, str]]:
    """Labeled images and unlabeled images a person accepted or corrected, with their labels."""
    decisions = project.current_decisions()
    support = [(image, image.label) for image in project.images("labeled") if image.label]
    for image in project.images("unlabeled"):
        action, label = decisions.get(image.id, ("", None))
        if action in ("accept", "correct") and label:
            support.append((image, label))
    return support


def pseudo_label_project(
    project: LabelingProject,
    model: Model,
    cache: EmbeddingCache,
    progress: Callable[[float], None] | None = None,
) -> ProjectPrediction:
    """Embed (cached), adapt to the current support set, predict, and store the predictions."""
    support = support_set(project)
    classes = sorted({label for _, label in support})
    if len(classes) < 2:
        raise ValueError(f"two or more classes with labeled images are needed; have {classes}")
    unlabeled = project.images("unlabeled")
    by_hash = {image.sha256: image.path for image, _ in support}
    by_hash.update({image.sha256: image.path for image in unlabeled})
    hashes = [image.sha256 for image, _ in support] + [image.sha256 for image in unlabeled]
    embeddings = embed_cached(
        model.backbone, model.backbone_key, hashes, lambda h: decode_image(by_hash[h]), cache, progress
    )
    support_embeddings = embeddings[: len(support)]
    labels = torch.tensor([classes.index(label) for _, label in support])
    decisions = project.current_decisions()
    prediction = adapt(
        model,
        classes,
        torch.from_numpy(support_embeddings),
        labels,
        torch.from_numpy(embeddings[len(support) :].copy()),
    )
    project.save_predictions(
        [
            (image.id, label, conf)
            for image, label, conf in zip(unlabeled, prediction.labels, prediction.confidence, strict=True)
        ],
        model.name,
    )
    supervised = nearest_class_mean(support_embeddings, labels.numpy(), prediction.embeddings)
    disagreement = supervised != prediction.probabilities.argmax(1)
    return ProjectPrediction(unlabeled, prediction, support_embeddings, decisions, disagreement)


def nearest_class_mean(support: np.ndarray, labels: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Index of the closest class mean for each row of x (the labeled images alone decide)."""
    means = np.stack([support[labels == c].mean(0) for c in range(labels.max() + 1)])
    return ((x[:, None, :] - means[None]) ** 2).sum(-1).argmin(1)


def export_rows(project: LabelingProject, include_pseudo_labels: bool) -> list[ExportRow]:
    """Final labels: labeled images, human decisions, and (optionally) stored pseudo-labels."""
    decisions = project.current_decisions()
    predictions = project.predictions()
    rows = [ExportRow(i.name, i.label, None, "labeled", i.path) for i in project.images("labeled")]
    for image in project.images("unlabeled"):
        action, label = decisions.get(image.id, ("", None))
        if action in ("accept", "correct"):
            confidence = predictions.get(image.id, (None, None))[1]
            status = "accepted" if action == "accept" else "corrected"
            rows.append(ExportRow(image.name, label, confidence, status, image.path))
        elif include_pseudo_labels and image.id in predictions:
            label, confidence = predictions[image.id]
            rows.append(ExportRow(image.name, label, confidence, "pseudo-labeled", image.path))
    return rows
