"""Which image a person should look at next, and what accepting above a threshold means.

The Review page shows the least confident image first. With calibrated confidence that is the
image most likely to be wrong, so each action fixes the most errors it can expect to; the
simulated reviewer (`simulate.py`) measured it against the orders tried before it on the
development domains (docs/review.md): a mix of margin, disagreement with the plain
prototypical answer and distance from the labeled images, and uncertainty weighted by the
uncertain neighbours a decision would move. Neither reached a 99%-correct batch sooner.

Each image a person decides one by one also tests the confidence it was shown with: it was
chosen by its confidence alone, so among such images the share that was wrong is what that
confidence promised, if it is right. `review_factor` fits one factor on the model's
probabilities of those images to what the person answered, and `recalibrated` applies it to the
rest: confidence calibrated on a few labeled images, corrected by the reviewer's decisions.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.special import softmax

from mssl_core.engine.calibration import fit_temperature

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


# How far above the expected count of wrong labels the actual one went, before any review: the
# smallest ratio under which (actual + 1) <= (expected + 1) * ratio on 90% of 640 development tasks
# shaped like a user's (MNIST, Fashion-MNIST, MRI, OpenArena; 3-way 5-shot and 2-way 10-shot,
# 300 batch images split unevenly among the classes; two draws of 320). On the benchmark's
# 5-way tasks with equal classes 1.5 had sufficed; on these it held on 81% (docs/review.md).
# Confidence is calibrated on a few held-out predictions of the user's labeled images, so the
# expected count is right on average but not task by task; as a review goes on it runs high, not
# low (the simulated reviews of docs/review.md), so a bound above stays a bound.
ERROR_COUNT_RATIO_90 = 1.9
# The same among the images a person accepts above a confidence threshold: a count of a few varies
# more. The smallest ratio holding on 90% of the same 640 tasks at every threshold from 0.8 to
# 0.98 (2.2, chosen on the benchmark's 5-way tasks, held on 86-92% of them; docs/review.md,
# "How many wrong among the images accepted above a threshold" and the section after it).
ACCEPTED_ERROR_RATIO_90 = 2.6


def likely_most_errors(expected: float, images: int | None = None, ratio: float = ERROR_COUNT_RATIO_90) -> int:
    """The count of wrong labels, among images whose expected count is `expected` (`images`
    of them, where given), that the actual count stayed at or below for 9 development tasks
    in 10: ERROR_COUNT_RATIO_90 for the rest of a batch, ACCEPTED_ERROR_RATIO_90 for the images
    above an accept threshold."""
    most = math.ceil((expected + 1) * ratio - 1)
    return most if images is None else min(images, most)


def accepted_errors(count: int, precision: float) -> tuple[float, int]:
    """(wrong labels to expect, how many at most, likely) among `count` images accepted above a
    threshold with expected precision `precision` (`threshold_summary`)."""
    wrong = count * (1 - precision)
    return wrong, likely_most_errors(wrong, count, ACCEPTED_ERROR_RATIO_90)


def confidence_summary(confidence: np.ndarray, checked: bool, threshold: float = 0.9) -> list[str]:
    """What the confidence of a labeled batch promises, in the Review page's terms, for a
    command-line run: the wrong labels to expect over the batch and among the images at or
    above `threshold`, each with its likely most; or why nothing can be promised."""
    if not checked:
        return [
            "confidence not checked on your images (a class has a single labeled image): "
            "read it as a ranking, not as a probability"
        ]
    errors, precision = expected_errors(confidence)
    if precision is None:
        return []
    most = likely_most_errors(errors, len(confidence))
    lines = [
        f"about {errors:.0f} wrong labels expected among the {len(confidence)} images "
        f"(expected precision {precision:.1%}), likely no more than {most}"
    ]
    count, above = threshold_summary(confidence, threshold)
    if count:
        most_above = accepted_errors(count, above)[1]
        lines.append(
            f"at >= {threshold:.0%} confidence: {count} images, expected precision {above:.1%}, "
            f"likely no more than {most_above} wrong"
        )
    return lines


# Prior sd of log(review factor): with few decisions the factor stays near 1 (the labeled
# images' calibration), with many the decisions decide. Chosen on development tasks (MNIST,
# Fashion-MNIST, MRI, OpenArena; docs/review.md, "The reviewer's decisions check the confidence").
REVIEW_PRIOR_SD = 0.25


def review_factor(probabilities: np.ndarray, answers: np.ndarray, prior_sd: float = REVIEW_PRIOR_SD) -> float:
    """The factor on log-probabilities (a temperature) that best explains the classes a person
    gave (`answers`) to images the model predicted with `probabilities` when it showed them;
    1.0 without any."""
    if not len(answers):
        return 1.0
    log_probabilities = torch.from_numpy(np.log(np.clip(probabilities, 1e-12, 1.0)))
    return fit_temperature(log_probabilities, torch.from_numpy(np.asarray(answers)), prior_sd)


def recalibrated(probabilities: np.ndarray, factor: float) -> np.ndarray:
    """`probabilities` at the review factor: the same ranking of classes, confidence softened
    (factor > 1) or sharpened (< 1)."""
    if factor == 1.0:
        return probabilities
    scaled = softmax(np.log(np.clip(probabilities, 1e-12, 1.0)) / factor, axis=1)
    return scaled.astype(probabilities.dtype)
