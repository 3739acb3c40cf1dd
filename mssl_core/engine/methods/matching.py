"""Matching networks (Vinyals et al. 2016): a query attends over the support set with cosine
similarity between two separately learned embeddings, f for queries and g for support
images, and takes the attention-weighted sum of their labels (full-context embeddings are
left out). Semi-supervised: confident unlabeled images join the support set with soft labels.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from mssl_core.engine.methods.base import register
from mssl_core.engine.methods.support_set import SupportSetMethod


def _near_identity(dim: int) -> nn.Linear:
    layer = nn.Linear(dim, dim)
    with torch.no_grad():
        layer.weight.copy_(torch.eye(dim))
        layer.bias.zero_()
    return layer


@register
class MatchingNetwork(SupportSetMethod):
    """Cosine attention over the (extended) support set, with a learned sharpness."""

    name = "matching"
    family = "metric-based"
    description = "Compares each image with every labeled example and lets the closest ones vote."

    def __init__(self, embedding_dim: int = 64, threshold: float = 0.7):
        super().__init__(embedding_dim, threshold)
        self.f = _near_identity(embedding_dim)  # queries
        self.g = _near_identity(embedding_dim)  # support (and stored unlabeled) images
        self.log_scale = nn.Parameter(torch.tensor(math.log(10.0)))

    def keys(self, x: Tensor) -> Tensor:
        return nn.functional.normalize(self.g(x), dim=1)

    def queries(self, x: Tensor) -> Tensor:
        return nn.functional.normalize(self.f(x), dim=1)

    def scores(self, queries: Tensor, keys: Tensor) -> Tensor:
        return self.log_scale.exp() * queries @ keys.T
