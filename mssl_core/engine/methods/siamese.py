"""Siamese networks (Koch et al. 2015): a learned pairwise similarity — a weighted L1
distance between the two embeddings through a logistic unit — trained as Koch's verification
task (same class or not, binary cross-entropy over every query–support pair). A query takes
the class of the support images it matches best. Semi-supervised: confident unlabeled images
join the support set with soft labels (see support_set.py).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mssl_core.engine.methods.base import register
from mssl_core.engine.methods.support_set import SupportSetMethod


@register
class SiameseNetwork(SupportSetMethod):
    """Match score = w · |a - b| + b, the logit of "same class"."""

    name = "siamese"
    family = "metric-based"
    description = "Learns when two images show the same thing; each image takes the class it matches best."

    def __init__(self, embedding_dim: int = 64, threshold: float = 0.7):
        super().__init__(embedding_dim, threshold)
        self.weights = nn.Parameter(torch.full((embedding_dim,), -1.0 / embedding_dim**0.5))
        self.bias = nn.Parameter(torch.tensor(2.0))

    def keys(self, x: Tensor) -> Tensor:
        return x

    def scores(self, queries: Tensor, keys: Tensor) -> Tensor:
        # in chunks of queries: (chunk, n_keys, dim) differences stay small for large batches
        chunks = [(chunk.unsqueeze(1) - keys.unsqueeze(0)).abs() @ self.weights for chunk in queries.split(256)]
        return torch.cat(chunks) + self.bias

    def meta_loss(self, query: Tensor, query_labels: Tensor) -> Tensor:
        """Koch's verification loss over every (query, labeled support image) pair."""
        labeled = self.stored_labels.max(1).values == 1  # one-hot: real labels, not soft ones
        same = query_labels.unsqueeze(1) == self.stored_labels[labeled].argmax(1).unsqueeze(0)
        pair_logits = self.scores(self.queries(query), self.stored_keys[labeled])
        return nn.functional.binary_cross_entropy_with_logits(pair_logits, same.to(query))
