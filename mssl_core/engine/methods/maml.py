"""MAML (Finn et al. 2017) on a linear head over the embeddings. The head starts from the
prototypes (W_c = 2 c_c, b_c = -|c_c|^2: prototypical logits, "Proto-MAML", Triantafillou et
al. 2020, so any number of ways works) and takes a few gradient steps on the support set with a
meta-learned step size. The inner loss adds ssl.py's entropy and consistency terms on the
unlabeled images. Meta-training backpropagates through the inner steps: true second-order
meta-gradients via `torch.func.grad`, or first-order (the inner gradients detached).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.func import grad

from mssl_core.engine.methods.base import FewShotMethod, class_means, register
from mssl_core.engine.ssl import SSLOptions, ordinary, unlabeled_loss

INNER_SSL = SSLOptions(entropy_weight=0.1, consistency_weight=0.1)


def _head_logits(head: tuple[Tensor, Tensor], x: Tensor) -> Tensor:
    weight, bias = head
    return x @ weight.T + bias


@register
class MAML(FewShotMethod):
    """Fine-tunes a prototype-initialised linear head on each task by gradient descent."""

    name = "maml"
    family = "optimization-based"
    description = "Starts from general knowledge and takes a few learning steps on your labeled examples."
    uses_unlabeled = True

    def __init__(
        self, steps: int = 5, first_order: bool = False, ssl: SSLOptions = INNER_SSL, step_size: float = 0.01
    ):
        super().__init__()
        self.steps, self.first_order, self.ssl = steps, first_order, ssl
        self.log_step_size = nn.Parameter(torch.tensor(math.log(step_size)))
        self.head: tuple[Tensor, Tensor] | None = None

    def inner_loss(
        self,
        head: tuple[Tensor, Tensor],
        support: Tensor,
        labels: Tensor,
        unlabeled: Tensor | None,
        generator: torch.Generator,
    ) -> Tensor:
        loss = nn.functional.cross_entropy(_head_logits(head, support), labels)
        if unlabeled is not None and len(unlabeled):
            loss = loss + unlabeled_loss(lambda x: _head_logits(head, x), unlabeled, self.ssl, generator)
        return loss

    def _fit(self, support: Tensor, support_labels: Tensor, unlabeled: Tensor | None) -> None:
        support, unlabeled = ordinary(support), ordinary(unlabeled)
        prototypes = class_means(support, support_labels)
        head = (2 * prototypes, -prototypes.pow(2).sum(1))
        generator = torch.Generator().manual_seed(self.ssl.seed)
        second_order = self.training and not self.first_order and torch.is_grad_enabled()
        step_size = self.log_step_size.exp()
        with torch.enable_grad():  # adaptation needs gradients even when predicting
            if not second_order:
                head = tuple(t.detach().requires_grad_(True) for t in head)
            for _ in range(self.steps):
                gradients = grad(self.inner_loss)(head, support, support_labels, unlabeled, generator)
                if not second_order:
                    gradients = tuple(g.detach() for g in gradients)
                head = tuple(t - step_size * g for t, g in zip(head, gradients, strict=True))
        self.head = head if self.training else tuple(t.detach() for t in head)

    def logits(self, x: Tensor) -> Tensor:
        if self.head is None:
            raise RuntimeError(f"{self.name}: call fit() before predicting")
        return _head_logits(self.head, x)

    def task_parameters(self) -> list[Tensor]:
        return list(self.head)

    def set_task_parameters(self, tensors: list[Tensor]) -> None:
        self.head = tuple(tensors)
