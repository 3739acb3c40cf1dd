"""The one contract every few-shot method obeys (see DESIGN.md), and the two bases that give it
to what is not meta-trained: scikit-learn baselines and wrappers around another method."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from torch import Tensor


@runtime_checkable
class Method(Protocol):
    """Adapts to one task from its support set (and unlabeled images), then scores new images.

    Everything a caller may ask of a method is declared here; the meta-trained methods get it
    from `FewShotMethod`, the baselines from `Baseline`, wrappers from `MethodWrapper`.
    """

    name: str
    family: str  # metric-based, model-based or optimization-based meta-learning, or "baseline"
    description: str  # one sentence for the app, in plain words
    meta_trained: bool  # False: nothing was learned before the task (baselines)
    uses_unlabeled: bool  # `fit` learns from the unlabeled images too
    per_dimension: bool  # the class's __init__ takes `embedding_dim` (weights per feature)

    def fit(self, support: Tensor, support_labels: Tensor, unlabeled: Tensor | None = None) -> Method: ...

    def predict_proba(self, x: Tensor) -> Tensor: ...

    def logits(self, x: Tensor) -> Tensor:
        """Scores before calibration: `softmax(logits / temperature)` are the probabilities."""
        ...

    @property
    def temperature(self) -> float | None:
        """The fitted task's validation temperature; None where the method has no temperature
        table (baselines: `predict_proba` is what they promise)."""
        ...

    def task_parameters(self) -> list[Tensor]:
        """The tensors `fit` produced that ssl.py may fine-tune on the unlabeled images."""
        ...

    def set_task_parameters(self, tensors: list[Tensor]) -> None:
        """Replace the tensors `task_parameters` returned (same order)."""
        ...


class Baseline:
    """Base of the methods that are not meta-trained (scikit-learn classifiers): no temperature
    table, no task parameters; their logits are their log-probabilities."""

    name = ""
    family = "baseline"
    description = ""
    meta_trained = False
    uses_unlabeled = False
    per_dimension = False
    temperature: float | None = None

    def fit(self, support: Tensor, support_labels: Tensor, unlabeled: Tensor | None = None) -> Baseline:
        raise NotImplementedError

    def predict_proba(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def logits(self, x: Tensor) -> Tensor:
        return self.predict_proba(x).clamp_min(1e-12).log()

    def task_parameters(self) -> list[Tensor]:
        return []

    def set_task_parameters(self, tensors: list[Tensor]) -> None:
        """Nothing to replace."""


class MethodWrapper:
    """Base of what wraps a method (task-centred features, a slice of joint features, the
    semi-supervised terms): the contract forwarded to `self.method`, overridden where the
    wrapper changes it."""

    per_dimension = False

    def __init__(self, method: Method):
        self.method = method
        self.name = method.name
        self.family = method.family
        self.description = method.description
        self.meta_trained = method.meta_trained
        self.uses_unlabeled = method.uses_unlabeled

    @property
    def temperature(self) -> float | None:
        return self.method.temperature

    def logits(self, x: Tensor) -> Tensor:
        return self.method.logits(x)

    def predict_proba(self, x: Tensor) -> Tensor:
        return self.method.predict_proba(x)

    def task_parameters(self) -> list[Tensor]:
        return self.method.task_parameters()

    def set_task_parameters(self, tensors: list[Tensor]) -> None:
        self.method.set_task_parameters(tensors)
