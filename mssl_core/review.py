"""Which image a person should look at next, and what accepting above a threshold means.

Priority favours images the model is least sure of (small margin between its top two classes),
images on which the semi-supervised prediction and the plain nearest-class-mean prediction
disagree, and images unlike anything already labeled or reviewed (far from every labeled
embedding), so each human decision teaches the model the most.
"""

from __future__ import annotations

import numpy as np


def review_order(
    probabilities: np.ndarray,
    embeddings: np.ndarray,
    labeled_embeddings: np.ndarray,
    disagreement: np.ndarray | None = None,
) -> np.ndarray:
    """Indices of the images from most to least in need of a human."""
    if len(probabilities) == 0:
        return np.zeros(0, dtype=int)
    top_two = np.sort(probabilities, axis=1)[:, -2:] if probabilities.shape[1] > 1 else None
    margin = top_two[:, 1] - top_two[:, 0] if top_two is not None else np.ones(len(probabilities))
    uncertainty = 1 - margin
    if len(labeled_embeddings):
        distances = np.sqrt(((embeddings[:, None, :] - labeled_embeddings[None]) ** 2).sum(-1))
        novelty = distances.min(1)
        novelty = novelty / (novelty.max() + 1e-12)
    else:
        novelty = np.zeros(len(probabilities))
    disagrees = np.zeros(len(probabilities)) if disagreement is None else disagreement.astype(float)
    return np.argsort(-(uncertainty + 0.5 * disagrees + 0.5 * novelty), kind="stable")


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
