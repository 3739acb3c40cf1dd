"""The base classes of the meta-trained methods and the registry of methods by name (the
contract they obey is `engine/contract.py`)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mssl_core.engine.calibration import SHOTS_GRID, WAYS_GRID, task_shape, temperature_for_shape
from mssl_core.engine.contract import Method


class FewShotMethod(nn.Module):
    """Base of the meta-trained methods: `fit` stores a task state, `logits` is differentiable,
    so meta-training drives exactly the `fit` / `predict_proba` path the app runs.

    `temperatures` (one per task shape) are fitted after meta-training on validation classes
    (see calibration.py) so that confidences mean what they say; `fit` records the task's
    shape, `temperature` is then that task's. Subclasses implement `_fit`. `task_parameters` are
    the tensors `fit` produced that ssl.py may fine-tune on the unlabeled images (entropy,
    consistency).
    """

    name = ""
    family = ""  # metric-based, model-based or optimization-based meta-learning
    description = ""
    meta_trained = True
    uses_unlabeled = False
    per_dimension = False  # True: __init__ takes `embedding_dim` (weights per feature)

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("temperatures", torch.ones(len(SHOTS_GRID), len(WAYS_GRID)))
        self.shape = (1.0, WAYS_GRID[0])  # (labeled images per class, classes) of the fitted task

    def fit(self, support: Tensor, support_labels: Tensor, unlabeled: Tensor | None = None) -> FewShotMethod:
        self.shape = task_shape(support_labels)
        self._fit(support, support_labels, unlabeled)
        return self

    def _fit(self, support: Tensor, support_labels: Tensor, unlabeled: Tensor | None) -> None:
        raise NotImplementedError

    @property
    def temperature(self) -> float:
        """The validation temperature of the fitted task's shape."""
        return temperature_for_shape(self.temperatures, *self.shape)

    def logits(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def predict_proba(self, x: Tensor) -> Tensor:
        return torch.softmax(self.logits(x) / self.temperature, dim=1)

    def meta_loss(self, query: Tensor, query_labels: Tensor) -> Tensor:
        """The episodic training loss on the queries (cross-entropy unless a method says otherwise)."""
        return nn.functional.cross_entropy(self.logits(query), query_labels)

    def task_parameters(self) -> list[Tensor]:
        return []

    def set_task_parameters(self, tensors: list[Tensor]) -> None:
        """Replace the tensors `task_parameters` returned (same order)."""


class MetricMethod(FewShotMethod):
    """Methods that score by negative squared distance to per-class prototypes."""

    def __init__(self) -> None:
        super().__init__()
        self.prototypes: Tensor | None = None

    def _fit(self, support: Tensor, support_labels: Tensor, unlabeled: Tensor | None) -> None:
        self.prototypes = self.compute_prototypes(support, support_labels, unlabeled)

    def compute_prototypes(self, support: Tensor, support_labels: Tensor, unlabeled: Tensor | None) -> Tensor:
        raise NotImplementedError

    def logits(self, x: Tensor) -> Tensor:
        if self.prototypes is None:
            raise RuntimeError(f"{self.name}: call fit() before predicting")
        return -torch.cdist(x, self.prototypes).pow(2)

    def task_parameters(self) -> list[Tensor]:
        return [self.prototypes]

    def set_task_parameters(self, tensors: list[Tensor]) -> None:
        (self.prototypes,) = tensors


def class_means(support: Tensor, support_labels: Tensor) -> Tensor:
    """Mean embedding of each class 0..C-1 (the prototypes of Snell et al. 2017, eq. 1)."""
    one_hot = nn.functional.one_hot(support_labels, int(support_labels.max()) + 1).to(support)
    return (one_hot.T @ support) / one_hot.sum(0, keepdim=True).T


METHODS: dict[str, type[Method]] = {}


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: make a method available by its `name`."""
    METHODS[cls.name] = cls
    return cls


def make_method(name: str, embedding_dim: int | None = None, **kwargs) -> Method:
    """A fresh method by registered name; `embedding_dim` reaches the methods that need it."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose one of {sorted(METHODS)}")
    cls = METHODS[name]
    if embedding_dim is not None and cls.per_dimension:
        kwargs["embedding_dim"] = embedding_dim
    return cls(**kwargs)
