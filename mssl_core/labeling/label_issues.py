"""Labeled examples that may carry the wrong label.

An expert's few labeled images can hold a slip (a file dropped in the wrong class folder), and
in few-shot learning one wrong example moves a whole class. Each labeled image is predicted by
the model adapted to the others (held out, as for calibration); cleanlab's confident learning
(Northcutt et al. 2021) flags those whose held-out prediction disagrees with their label more
than the task's own error rates explain. On hard images that flags clean labels too, so the
flags a slip explains better than the image does are marked as likely (`likely_slips`).
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import numpy as np

# cleanlab's rule, chosen on planted mistakes in tasks of the development domains (docs/review.md)
FILTER_BY = "prune_by_noise_rate"
# Below this share of labeled images predicted right when held out, a flag is weak evidence: on
# development tasks whose held-out predictions were 61-63% right, every clean task was flagged
# (docs/review.md, "Suspicious labeled examples").
WEAK_CHECK_BELOW = 0.85
# Prior share of labeled images filed under a wrong class, for `likely_slips`. Chosen among
# 0.01-0.2 on planted mistakes in development tasks: fewest clean tasks with a likely flag for
# the most flips caught (docs/review.md, "Suspicious labeled examples").
SLIP_RATE = 0.02


def suspicious_labels(labels: np.ndarray, held_out: np.ndarray) -> list[int]:
    """Rows whose label looks wrong (cleanlab's and `likely_slips`), most suspicious first.
    `held_out`: each row's class probabilities predicted without it (out of sample), columns
    in class order."""
    return _flagged(np.asarray(labels), np.asarray(held_out, dtype=float))[0]


def likely_slips(labels: np.ndarray, held_out: np.ndarray) -> set[int]:
    """Rows whose label is more likely a slip than right, among those predicted as another
    class when held out. With a slip rate s spread over the other K - 1 classes and p the
    held-out probability of the given class, the label is wrong with odds s (1 - p) / (K - 1)
    against (1 - s) p."""
    labels, held_out = np.asarray(labels), np.asarray(held_out, dtype=float)
    if len(labels) == 0:
        return set()
    own_class = held_out[np.arange(len(labels)), labels]
    slip = SLIP_RATE * (1 - own_class) / max(held_out.shape[1] - 1, 1)
    likely = (slip > (1 - SLIP_RATE) * own_class) & (held_out.argmax(1) != labels)
    return {int(row) for row in np.flatnonzero(likely)}


class LabelCheck(NamedTuple):
    """A labeled image whose label looks wrong."""

    row: int
    label: str  # the class it is labeled
    likelier: str  # the other class its held-out prediction favours most
    probability: float  # of that class, held out
    likely: bool  # a slip explains it better than the image does (`likely_slips`)


def labels_to_check(labels: np.ndarray, held_out: np.ndarray, classes: list[str]) -> list[LabelCheck]:
    """`suspicious_labels`, each with the class it looks like and whether it is a likely slip."""
    labels, held_out = np.asarray(labels), np.asarray(held_out, dtype=float)
    rows, likely = _flagged(labels, held_out)
    checks = []
    for row in rows:
        others = held_out[row].copy()
        others[labels[row]] = -1  # the class it looks like: never its own
        likelier = int(others.argmax())
        checks.append(
            LabelCheck(
                row, classes[labels[row]], classes[likelier], float(held_out[row, likelier]), row in likely
            )
        )
    return checks


def _flagged(labels: np.ndarray, held_out: np.ndarray) -> tuple[list[int], set[int]]:
    """The rows of `suspicious_labels`, and which of them are likely slips."""
    from cleanlab.filter import find_label_issues  # imported here: it takes a second to load

    if len(labels) == 0 or len(np.unique(labels)) < 2:
        return [], set()
    with warnings.catch_warnings():  # its notes on tiny classes are for data scientists
        warnings.simplefilter("ignore")
        flagged = find_label_issues(
            labels,
            held_out,
            filter_by=FILTER_BY,
            n_jobs=1,  # its default forks worker processes: never inside the app's server
        )
    likely = likely_slips(labels, held_out)
    own_class = held_out[np.arange(len(labels)), labels]
    return sorted(set(np.flatnonzero(flagged).tolist()) | likely, key=lambda row: own_class[row]), likely
