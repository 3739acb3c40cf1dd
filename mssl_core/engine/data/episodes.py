"""Few-shot episodes with unlabeled images and distractor classes (Ren et al. 2018, sec. 4).

An episode draws N classes; each gives K labeled support images, M unlabeled images and Q
queries. D further *distractor* classes add M unlabeled images each that belong to no class
of the task. Episodes are index arrays into a pool laid out `(n_classes, n_per_class, ...)`,
so the same episode can be applied to images or to cached embeddings.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class EpisodeSpec:
    """N-way, K-shot, M unlabeled per class, D distractor classes, Q queries per class."""

    ways: int
    shots: int
    unlabeled: int = 0
    distractors: int = 0
    queries: int = 15

    @property
    def per_class(self) -> int:
        return self.shots + self.unlabeled + self.queries


@dataclass(frozen=True)
class Episode:
    """Flat indices into a pool (`class * n_per_class + sample`) and the labels within the task."""

    classes: np.ndarray
    support: np.ndarray
    support_labels: np.ndarray
    unlabeled: np.ndarray
    unlabeled_labels: np.ndarray  # -1 for images of distractor classes
    query: np.ndarray
    query_labels: np.ndarray


class EpisodeSampler:
    """Draws episodes from a pool with `n_classes` classes of `n_per_class` images each."""

    def __init__(self, n_classes: int, n_per_class: int, spec: EpisodeSpec, seed: int = 0):
        if spec.ways + spec.distractors > n_classes:
            raise ValueError(f"{spec.ways}+{spec.distractors} classes asked, pool has {n_classes}")
        if spec.per_class > n_per_class:
            raise ValueError(f"{spec.per_class} images per class asked, pool has {n_per_class}")
        self.n_classes, self.n_per_class, self.spec = n_classes, n_per_class, spec
        self.rng = np.random.default_rng(seed)

    def sample(self) -> Episode:
        spec, rng = self.spec, self.rng
        classes = rng.choice(self.n_classes, spec.ways + spec.distractors, replace=False)
        support, unlabeled, unlabeled_labels, query = [], [], [], []
        for label, cls in enumerate(classes):
            order = cls * self.n_per_class + rng.permutation(self.n_per_class)
            if label < spec.ways:
                support.append(order[: spec.shots])
                unlabeled.append(order[spec.shots : spec.shots + spec.unlabeled])
                unlabeled_labels.append(np.full(spec.unlabeled, label))
                query.append(order[spec.shots + spec.unlabeled : spec.per_class])
            else:
                unlabeled.append(order[: spec.unlabeled])
                unlabeled_labels.append(np.full(spec.unlabeled, -1))
        ways = np.arange(spec.ways)
        return Episode(
            classes=classes[: spec.ways],
            support=np.concatenate(support),
            support_labels=np.repeat(ways, spec.shots),
            unlabeled=np.concatenate(unlabeled),
            unlabeled_labels=np.concatenate(unlabeled_labels),
            query=np.concatenate(query),
            query_labels=np.repeat(ways, spec.queries),
        )

    def __iter__(self):
        while True:
            yield self.sample()
