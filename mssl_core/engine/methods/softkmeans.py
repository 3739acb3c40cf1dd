"""Prototypes refined by soft k-means over the unlabeled images (Ren et al. 2018, sec. 3.1, eq. 3).

Starting from the class means, each unlabeled image is softly assigned to every class by a
softmax over negative squared distances, and each prototype becomes the weighted mean of its
support images (weight 1) and of the unlabeled images (weight = assignment).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mssl_core.engine.methods.base import MetricMethod, class_means, register


def refine(prototypes: Tensor, support: Tensor, support_labels: Tensor, unlabeled: Tensor, mask=None) -> Tensor:
    """One soft k-means step; `mask(distances)` may down-weight assignments (masked variant)."""
    one_hot = nn.functional.one_hot(support_labels, len(prototypes)).to(support)
    distances = torch.cdist(unlabeled, prototypes).pow(2)
    assignment = torch.softmax(-distances, dim=1)
    weights = mask(distances) if mask is not None else None
    if weights is not None:
        assignment = assignment * weights
    weighted_sum = one_hot.T @ support + assignment.T @ unlabeled
    weight = one_hot.sum(0) + assignment.sum(0)
    return weighted_sum / weight.unsqueeze(1)


@register
class SoftKMeans(MetricMethod):
    """Semi-supervised prototypes; with no unlabeled images it is exactly prototypical."""

    name = "softkmeans"
    family = "metric-based"
    description = "Also learns from the unlabeled batch: class centres move towards the groups it forms."
    uses_unlabeled = True

    def __init__(self, steps: int = 1):
        super().__init__()
        self.steps = steps

    def compute_prototypes(self, support: Tensor, support_labels: Tensor, unlabeled: Tensor | None) -> Tensor:
        prototypes = class_means(support, support_labels)
        if unlabeled is None or len(unlabeled) == 0:
            return prototypes
        for _ in range(self.steps):
            prototypes = refine(prototypes, support, support_labels, unlabeled, self.mask)
        return prototypes

    def mask(self, distances: Tensor) -> Tensor | None:
        """Weights for the soft assignments; none here (the masked variant learns them)."""
        return None
