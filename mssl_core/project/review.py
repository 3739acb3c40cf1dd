"""Which image a person should look at next, and what accepting above a threshold means.

The Review page shows the least confident image first. With calibrated confidence that is the
image most likely to be wrong, so each action fixes the most errors it can expect to; the
simulated reviewer (`simulate.py`) measured it against the orders tried before it on the
development domains (docs/review.md): a mix of margin, disagreement with the plain
prototypical answer and distance from the labeled images, and uncertainty weighted by the
uncertain neighbours a decision would move. Neither reached a 99%-correct batch sooner.
"""

from __future__ import annotations

import numpy as np

ORDERS = ("app", "least-confident", "random")  # the app's own, and the two it must beat


def review_order(
    probabilities: np.ndarray, order: str = "app", rng: np.random.Generator | None = None
) -> np.ndarray:
    """Indices of the images from most to least in need of a human: in the app's `order` (the
    Review page and `simulate` both call this), least confident first, or at random."""
    if order not in ORDERS:
        raise ValueError(f"unknown order {order!r}; choose one of {ORDERS}")
    if order == "random":
        return (rng or np.random.default_rng(0)).permutation(len(probabilities))
    # "app" is least confident first (see the module docstring), most confident last
    return np.argsort(probabilities.max(1) if len(probabilities) else np.zeros(0), kind="stable")


def threshold_summary(confidence: np.ndarray, threshold: float) -> tuple[int, float | None]:
    """How many images have confidence >= threshold, and the precision to expect among them.

    With calibrated confidences the expected precision of a set is its mean confidence.
    """
    chosen = confidence >= threshold
    count = int(chosen.sum())
    return count, (float(confidence[chosen].mean()) if count else None)


def expected_errors(confidence: np.ndarray) -> tuple[float, float | None]:
    """(wrong labels to expect, expected precision) among images of these confidences: with
    calibrated confidence each image is wrong with probability 1 - confidence, so the rest of
    a batch can be judged without looking at it."""
    if len(confidence) == 0:
        return 0.0, None
    return float((1 - confidence).sum()), float(confidence.mean())
