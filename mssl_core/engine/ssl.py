"""Semi-supervised terms, written once and applied to any method by options (DESIGN.md):

- pseudo-labeling (Lee 2013): unlabeled images predicted with confidence >= a threshold join
  the labeled set with their predicted class, and the method is refitted, for a few rounds;
- consistency regularisation (Sajjadi et al. 2016; Xie et al. 2020): two augmented views of an
  unlabeled image must get the same prediction;
- entropy minimisation (Grandvalet & Bengio 2005): predictions on unlabeled images should be
  confident.

Methods adapt on cached embeddings (re-adapting after a correction must take well under a
second), so the augmented views are made in feature space: random dropout of features plus
Gaussian noise scaled to each feature's spread. Entropy and consistency are minimised by a few
gradient steps on the tensors a method's `fit` produced (`task_parameters`: prototypes, support
keys, memory); MAML minimises them inside its own inner loop.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from mssl_core.engine.contract import Method, MethodWrapper


@dataclass(frozen=True)
class SSLOptions:
    """Which semi-supervised terms to apply at adaptation time, and how strongly."""

    pseudo_label_rounds: int = 0
    pseudo_label_threshold: float = 0.9
    entropy_weight: float = 0.0
    consistency_weight: float = 0.0
    steps: int = 10  # gradient steps for the entropy and consistency terms
    learning_rate: float = 0.01
    view_strength: float = 0.1  # feature dropout rate and relative noise of an augmented view
    seed: int = 0

    @property
    def tunes(self) -> bool:
        return self.entropy_weight > 0 or self.consistency_weight > 0

    @property
    def active(self) -> bool:
        return self.tunes or self.pseudo_label_rounds > 0

    def describe(self) -> str:
        parts = []
        if self.pseudo_label_rounds:
            threshold, rounds = self.pseudo_label_threshold, self.pseudo_label_rounds
            parts.append(f"pseudo-labels ≥ {threshold:.0%} confidence, {rounds} round(s)")
        if self.entropy_weight:
            parts.append(f"entropy minimisation ×{self.entropy_weight:g}")
        if self.consistency_weight:
            parts.append(f"consistency ×{self.consistency_weight:g}")
        return ", ".join(parts) or "none"


DEFAULT_SSL = SSLOptions()  # each method's own use of the unlabeled images, nothing added
SELF_TRAINING = SSLOptions(pseudo_label_rounds=2, pseudo_label_threshold=0.9)


def options_from_dict(values: dict | None) -> SSLOptions:
    """Options saved as a dict (project settings); unknown keys are ignored."""
    known = set(SSLOptions.__dataclass_fields__)
    return SSLOptions(**{k: v for k, v in (values or {}).items() if k in known})


def ordinary(tensor: Tensor | None) -> Tensor | None:
    """`tensor`, copied if it was made in inference mode: autograd cannot save those, and
    methods that adapt by gradient steps (MAML, ssl.py) need to."""
    return tensor.clone() if tensor is not None and tensor.is_inference() else tensor


def entropy(logits: Tensor) -> Tensor:
    """Mean Shannon entropy (nats) of the softmax of each row."""
    log_p = torch.log_softmax(logits, dim=1)
    return -(log_p.exp() * log_p).sum(1).mean()


def augmented_view(x: Tensor, strength: float, generator: torch.Generator) -> Tensor:
    """A random feature-space view of embeddings: dropout plus noise proportional to each
    feature's standard deviation over the batch."""
    keep = (torch.rand(x.shape, generator=generator) >= strength).to(x)
    spread = x.detach().std(0, keepdim=True).nan_to_num(0.0) if len(x) > 1 else x.detach().abs()
    noise = torch.randn(x.shape, generator=generator).to(x) * spread * strength
    return x * keep / (1 - strength) + noise


def consistency(logits_of, x: Tensor, strength: float, generator: torch.Generator) -> Tensor:
    """Squared difference between the predicted distributions of two views of `x`."""
    p = torch.softmax(logits_of(augmented_view(x, strength, generator)), dim=1)
    q = torch.softmax(logits_of(augmented_view(x, strength, generator)), dim=1)
    return (p - q).pow(2).sum(1).mean()


def unlabeled_loss(logits_of, unlabeled: Tensor, options: SSLOptions, generator: torch.Generator) -> Tensor:
    """The weighted entropy + consistency terms on unlabeled embeddings (0 when both are off)."""
    loss = unlabeled.new_zeros(())
    if options.entropy_weight:
        loss = loss + options.entropy_weight * entropy(logits_of(unlabeled))
    if options.consistency_weight:
        loss = loss + options.consistency_weight * consistency(
            logits_of, unlabeled, options.view_strength, generator
        )
    return loss


def tune_task_parameters(
    method, support: Tensor, support_labels: Tensor, unlabeled: Tensor, options: SSLOptions
):
    """A few Adam steps on the method's task parameters: support cross-entropy plus the
    unlabeled terms. Methods without task parameters are left as they are."""
    initial = method.task_parameters()
    if not initial or not options.tunes:
        return method
    generator = torch.Generator().manual_seed(options.seed)
    support, unlabeled = ordinary(support), ordinary(unlabeled)
    parameters = [t.detach().clone().requires_grad_(True) for t in initial]
    optimiser = torch.optim.Adam(parameters, lr=options.learning_rate)
    with torch.enable_grad():
        method.set_task_parameters(parameters)
        for _ in range(options.steps):
            loss = nn.functional.cross_entropy(method.logits(support), support_labels)
            loss = loss + unlabeled_loss(method.logits, unlabeled, options, generator)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    method.set_task_parameters([p.detach() for p in parameters])
    return method


class SemiSupervised(MethodWrapper):
    """Any method plus the options above, behind the same contract."""

    def __init__(self, method: Method, options: SSLOptions):
        super().__init__(method)
        self.options = options
        self.uses_unlabeled = True

    def fit(self, support: Tensor, support_labels: Tensor, unlabeled: Tensor | None = None) -> SemiSupervised:
        method, options = self.method, self.options
        with torch.no_grad():  # adaptation-time only: nothing here is meta-trained
            method.fit(support, support_labels, unlabeled)
        if unlabeled is None or len(unlabeled) == 0:
            return self
        tune_task_parameters(method, support, support_labels, unlabeled, options)
        for _ in range(options.pseudo_label_rounds):
            with torch.no_grad():
                confidence, predicted = method.predict_proba(unlabeled).max(1)
            confident = confidence >= options.pseudo_label_threshold
            if not confident.any():
                break
            with torch.no_grad():
                method.fit(
                    torch.cat([support, unlabeled[confident]]),
                    torch.cat([support_labels, predicted[confident]]),
                    unlabeled[~confident] if (~confident).any() else None,
                )
            tune_task_parameters(method, support, support_labels, unlabeled, options)
        return self


def with_ssl(method, options: SSLOptions | None):
    """`method` wrapped with the semi-supervised terms, or itself when none is switched on."""
    if options is None or not options.active:
        return method
    return SemiSupervised(method, options)
