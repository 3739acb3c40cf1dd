"""Baseline: scikit-learn `LabelSpreading` (Zhou et al. 2004) over support + unlabeled + queries."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.semi_supervised import LabelSpreading
from torch import Tensor, nn

from mssl_core.engine.contract import Baseline
from mssl_core.engine.methods.base import register


@register
class LabelSpreadingBaseline(Baseline):
    """Transductive graph baseline on L2-normalised features; not meta-trained.

    The graph is built at prediction time over support, unlabeled and the images to predict,
    since label spreading only labels the points that are in its graph.
    """

    name = "label-spreading"
    description = "Baseline: spreads labels to similar images through a neighbour graph."
    uses_unlabeled = True

    def __init__(self, neighbours: int = 10, alpha: float = 0.2):
        self.neighbours, self.alpha = neighbours, alpha

    def fit(self, support: Tensor, support_labels: Tensor, unlabeled: Tensor | None = None):
        self.support, self.support_labels = support, support_labels
        self.unlabeled = unlabeled if unlabeled is not None else support[:0]
        return self

    def predict_proba(self, x: Tensor) -> Tensor:
        points = nn.functional.normalize(torch.cat([self.support, self.unlabeled, x]), dim=1)
        labels = np.full(len(points), -1)
        labels[: len(self.support)] = self.support_labels.numpy()
        neighbours = min(self.neighbours, len(points) - 1)
        model = LabelSpreading(kernel="knn", n_neighbors=neighbours, alpha=self.alpha, max_iter=100)
        model.fit(points.numpy(), labels)
        n_classes = int(self.support_labels.max()) + 1
        proba = np.zeros((len(x), n_classes))
        proba[:, model.classes_] = model.label_distributions_[-len(x) :]
        proba = np.nan_to_num(proba, nan=0.0)
        # points the graph never reached (all zeros) get no preference: uniform
        proba[proba.sum(1) == 0] = 1.0
        return torch.from_numpy(proba / proba.sum(1, keepdims=True)).float()
