"""Labeled examples that may carry the wrong label.

An expert's few labeled images can hold a slip (a file dropped in the wrong class folder), and
in few-shot learning one wrong example moves a whole class. Each labeled image is predicted by
the model adapted to the others (held out, as for calibration); cleanlab's confident learning
(Northcutt et al. 2021) flags those whose held-out prediction disagrees with their label more
than the task's own error rates explain.
"""

from __future__ import annotations

import warnings

import numpy as np

# cleanlab's rule, chosen on planted mistakes in tasks of the development domains (docs/review.md)
FILTER_BY = "prune_by_noise_rate"
# Below this share of labeled images predicted right when held out, a flag is weak evidence: on
# development tasks whose held-out predictions were 61-63% right, every clean task was flagged
# (docs/review.md, "Suspicious labeled examples").
WEAK_CHECK_BELOW = 0.85


def suspicious_labels(labels: np.ndarray, held_out: np.ndarray) -> list[int]:
    """Rows whose label looks wrong, most suspicious first. `held_out`: each row's class
    probabilities predicted without it (out of sample), columns in class order."""
    from cleanlab.filter import find_label_issues  # imported here: it takes a second to load

    labels = np.asarray(labels)
    if len(labels) == 0 or len(np.unique(labels)) < 2:
        return []
    with warnings.catch_warnings():  # its notes on tiny classes are for data scientists
        warnings.simplefilter("ignore")
        ranked = find_label_issues(
            labels,
            np.asarray(held_out, dtype=float),
            filter_by=FILTER_BY,
            return_indices_ranked_by="self_confidence",
            n_jobs=1,  # its default forks worker processes: never inside the app's server
        )
    return [int(row) for row in ranked]
