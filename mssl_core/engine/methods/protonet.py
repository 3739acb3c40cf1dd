"""Prototypical networks (Snell et al. 2017): a query takes the class of the nearest class mean."""

from __future__ import annotations

from torch import Tensor

from mssl_core.engine.methods.base import MetricMethod, class_means, register


@register
class ProtoNet(MetricMethod):
    """Supervised: unlabeled images are ignored."""

    name = "protonet"
    family = "metric-based"
    description = "Compares each image with the average of each class's examples (uses labeled images only)."

    def compute_prototypes(self, support: Tensor, support_labels: Tensor, unlabeled: Tensor | None) -> Tensor:
        return class_means(support, support_labels)
