"""A memory-augmented network: an external key–value memory written with the support set and
read by attention (Santoro et al. 2016), with the bounded memory and write rule of Kaiser et
al. 2017 (Learning to Remember Rare Events): a new example whose nearest slot already holds
its class is merged into that slot's key; otherwise it takes a free slot, or the oldest one
when memory is full. A query reads by sharpened cosine attention over the keys. Semi-supervised:
a second pass writes the unlabeled images the memory predicts confidently, with soft labels.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from mssl_core.engine.methods.base import register
from mssl_core.engine.methods.support_set import SupportSetMethod


@register
class MemoryNetwork(SupportSetMethod):
    """Keys: a learned projection, L2-normalised. Values: (soft) labels. Fixed number of slots."""

    name = "memory"
    family = "model-based"
    description = "Writes the labeled examples into a compact memory and looks each image up in it."

    def __init__(self, embedding_dim: int = 64, threshold: float = 0.7, slots: int = 128):
        super().__init__(embedding_dim, threshold)
        self.slots = slots
        self.project = nn.Linear(embedding_dim, embedding_dim)
        with torch.no_grad():
            self.project.weight.copy_(torch.eye(embedding_dim))
            self.project.bias.zero_()
        self.log_strength = nn.Parameter(torch.tensor(math.log(10.0)))
        self.ages: list[int] = []

    def keys(self, x: Tensor) -> Tensor:
        return nn.functional.normalize(self.project(x), dim=1)

    def scores(self, queries: Tensor, keys: Tensor) -> Tensor:
        return self.log_strength.exp() * queries @ keys.T

    def store(self, keys: Tensor, soft_labels: Tensor) -> None:
        if self.stored_keys is None:
            self.stored_keys, self.stored_labels, self.ages = keys[:0], soft_labels[:0], []
        for key, label in zip(keys, soft_labels, strict=True):
            self.write(key, label)

    def write(self, key: Tensor, label: Tensor) -> None:
        """Kaiser et al.'s update for one example (ages count writes since a slot was touched)."""
        self.ages = [age + 1 for age in self.ages]
        if len(self.stored_keys):
            nearest = int((self.stored_keys @ key).argmax())
            if int(self.stored_labels[nearest].argmax()) == int(label.argmax()):
                merged = nn.functional.normalize(self.stored_keys[nearest] + key, dim=0)
                self.stored_keys = _replace_row(self.stored_keys, nearest, merged)
                self.ages[nearest] = 0
                return
        if len(self.stored_keys) < self.slots:
            self.stored_keys = torch.cat([self.stored_keys, key.unsqueeze(0)])
            self.stored_labels = torch.cat([self.stored_labels, label.unsqueeze(0)])
            self.ages.append(0)
            return
        oldest = max(range(len(self.ages)), key=self.ages.__getitem__)
        self.stored_keys = _replace_row(self.stored_keys, oldest, key)
        self.stored_labels = _replace_row(self.stored_labels, oldest, label)
        self.ages[oldest] = 0


def _replace_row(matrix: Tensor, row: int, value: Tensor) -> Tensor:
    """`matrix` with one row replaced, out of place so gradients flow to both."""
    return torch.cat([matrix[:row], value.unsqueeze(0), matrix[row + 1 :]])
