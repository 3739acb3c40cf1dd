"""Shared core of the methods that compare a query with every stored example (matching
networks, siamese networks, memory): each stored example has a key and a (soft) label, and

    logit_c(q) = logsumexp_j ( score(q, key_j) + log y_jc ),

a smooth "best match within class c". For matching networks, whose prediction is the
attention-weighted sum of labels, this is exactly log sum_j a_j y_jc up to a constant that
the softmax over classes cancels.

Their semi-supervised extension is shared too: unlabeled images the stored examples predict
with confidence >= `threshold` are stored as well, with their predicted distribution as a
soft label (Vinyals et al. 2016 and Koch et al. 2015 are supervised; this follows the
self-training extension of Ren et al. 2018's baselines).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mssl_core.engine.methods.base import FewShotMethod

LOG_ZERO = -1e4  # log of a zero label weight; finite so gradients stay finite


class SupportSetMethod(FewShotMethod):
    """Stores keys and soft labels in `fit`; subclasses define `keys` and `scores`."""

    uses_unlabeled = True
    per_dimension = True

    def __init__(self, embedding_dim: int = 64, threshold: float = 0.7):
        super().__init__()
        self.embedding_dim = embedding_dim
        self.threshold = threshold
        self.stored_keys: Tensor | None = None
        self.stored_labels: Tensor | None = None

    def keys(self, x: Tensor) -> Tensor:
        """How a stored example is represented."""
        raise NotImplementedError

    def queries(self, x: Tensor) -> Tensor:
        """How an image to classify is represented (the same as `keys` unless overridden)."""
        return self.keys(x)

    def scores(self, queries: Tensor, keys: Tensor) -> Tensor:
        """Pairwise match scores, shape (n_queries, n_keys)."""
        raise NotImplementedError

    def store(self, keys: Tensor, soft_labels: Tensor) -> None:
        """Write examples into the stored set (the memory method bounds and merges it)."""
        if self.stored_keys is None:
            self.stored_keys, self.stored_labels = keys, soft_labels
        else:
            self.stored_keys = torch.cat([self.stored_keys, keys])
            self.stored_labels = torch.cat([self.stored_labels, soft_labels])

    def _fit(self, support: Tensor, support_labels: Tensor, unlabeled: Tensor | None) -> None:
        n_classes = int(support_labels.max()) + 1
        self.stored_keys = self.stored_labels = None
        self.store(self.keys(support), nn.functional.one_hot(support_labels, n_classes).to(support))
        if unlabeled is not None and len(unlabeled):
            proba = torch.softmax(self.logits(unlabeled), dim=1)
            confident = proba.detach().max(1).values >= self.threshold
            if confident.any():
                self.store(self.keys(unlabeled[confident]), proba[confident])

    def logits(self, x: Tensor) -> Tensor:
        if self.stored_keys is None:
            raise RuntimeError(f"{self.name}: call fit() before predicting")
        scores = self.scores(self.queries(x), self.stored_keys)
        log_labels = self.stored_labels.clamp_min(1e-12).log().clamp_min(LOG_ZERO)
        return torch.logsumexp(scores.unsqueeze(2) + log_labels.unsqueeze(0), dim=1)

    def task_parameters(self) -> list[Tensor]:
        return [self.stored_keys]

    def set_task_parameters(self, tensors: list[Tensor]) -> None:
        (self.stored_keys,) = tensors
