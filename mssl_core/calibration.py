"""Temperature scaling (Guo et al. 2017) and expected calibration error, so that "90% confident"
means right about 90% of the time. Temperatures are fitted on meta-validation classes only."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

LOO_UNLABELED = 250  # unlabeled images used by the leave-one-out refits
MAX_LOG_TEMPERATURE = 4.0  # T within [e^-4, e^4]: separable data would otherwise drive T to 0


def fit_temperature(logits: Tensor, labels: Tensor) -> float:
    """The temperature T minimising the negative log-likelihood of softmax(logits / T)."""
    free = torch.zeros((), requires_grad=True)
    optimiser = torch.optim.LBFGS([free], lr=0.1, max_iter=200)

    def temperature() -> Tensor:
        return (MAX_LOG_TEMPERATURE * torch.tanh(free / MAX_LOG_TEMPERATURE)).exp()

    def closure():
        optimiser.zero_grad()
        loss = torch.nn.functional.cross_entropy(logits / temperature(), labels)
        loss.backward()
        return loss

    optimiser.step(closure)
    return float(temperature().detach())


def reliability(confidence: np.ndarray, correct: np.ndarray, bins: int = 15) -> list[dict]:
    """Per confidence bin: its range, count, mean confidence and accuracy (a reliability diagram)."""
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    rows = []
    for b in range(bins):
        in_bin = which == b
        if in_bin.any():
            rows.append(
                {
                    "low": float(edges[b]),
                    "high": float(edges[b + 1]),
                    "count": int(in_bin.sum()),
                    "confidence": float(confidence[in_bin].mean()),
                    "accuracy": float(correct[in_bin].mean()),
                }
            )
    return rows


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = 15) -> float:
    """Count-weighted mean gap between confidence and accuracy over equal-width bins."""
    rows = reliability(confidence, correct, bins)
    total = sum(r["count"] for r in rows)
    return float(sum(r["count"] * abs(r["confidence"] - r["accuracy"]) for r in rows) / total)


def leave_one_out_temperature(
    method, support: Tensor, support_labels: Tensor, unlabeled: Tensor | None
) -> float | None:
    """A temperature fitted on the user's own labeled images: each is predicted by the method
    adapted without it. Confidence learnt on characters does not transfer to, say, clothing
    photos; this measures it on the task at hand. None when a class has a single image or the
    method has no logits."""
    counts = torch.bincount(support_labels)
    if len(counts) < 2 or (counts < 2).any() or not hasattr(method, "logits"):
        return None
    if unlabeled is not None and len(unlabeled) > LOO_UNLABELED:
        # one refit per labeled image: a fixed sample of the batch keeps that cheap at 10,000+
        keep = torch.randperm(len(unlabeled), generator=torch.Generator().manual_seed(0))[:LOO_UNLABELED]
        unlabeled = unlabeled[keep]
    logits = []
    with torch.no_grad():
        for i in range(len(support)):
            keep = torch.arange(len(support)) != i
            method.fit(support[keep], support_labels[keep], unlabeled)
            logits.append(method.logits(support[i : i + 1]))
    return fit_temperature(torch.cat(logits), support_labels)
