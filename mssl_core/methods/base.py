"""The one contract every method obeys (see DESIGN.md) and the registry of methods by name."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import Tensor, nn


@runtime_checkable
class Method(Protocol):
    """Adapts to one task from its support set (and unlabeled images), then scores new images."""

    name: str

    def fit(self, support: Tensor, support_labels: Tensor, unlabeled: Tensor | None = None) -> Method: ...

    def predict_proba(self, x: Tensor) -> Tensor: ...


class MetricMethod(nn.Module):
    """Base of methods that score by negative squared distance to per-class prototypes.

    `fit` stores prototypes; `logits` is differentiable so meta-training drives exactly the
    `fit` / `predict_proba` path the app runs. `temperature` is fitted after meta-training on
    validation classes (see calibration.py) so that confidences mean what they say.
    """

    name = ""
    description = ""
    meta_trained = True
    uses_unlabeled = False

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("temperature", torch.tensor(1.0))
        self.prototypes: Tensor | None = None

    def fit(self, support: Tensor, support_labels: Tensor, unlabeled: Tensor | None = None) -> MetricMethod:
        self.prototypes = self.compute_prototypes(support, support_labels, unlabeled)
        return self

    def compute_prototypes(self, support: Tensor, support_labels: Tensor, unlabeled: Tensor | None) -> Tensor:
        raise NotImplementedError

    def logits(self, x: Tensor) -> Tensor:
        if self.prototypes is None:
            raise RuntimeError(f"{self.name}: call fit() before predicting")
        return -torch.cdist(x, self.prototypes).pow(2)

    def predict_proba(self, x: Tensor) -> Tensor:
        return torch.softmax(self.logits(x) / self.temperature, dim=1)


def class_means(support: Tensor, support_labels: Tensor) -> Tensor:
    """Mean embedding of each class 0..C-1 (the prototypes of Snell et al. 2017, eq. 1)."""
    one_hot = nn.functional.one_hot(support_labels, int(support_labels.max()) + 1).to(support)
    return (one_hot.T @ support) / one_hot.sum(0, keepdim=True).T


METHODS: dict[str, type] = {}


def register(cls: type) -> type:
    """Class decorator: make a method available by its `name`."""
    METHODS[cls.name] = cls
    return cls


def make_method(name: str, **kwargs) -> Method:
    """A fresh method by registered name."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose one of {sorted(METHODS)}")
    return METHODS[name](**kwargs)
