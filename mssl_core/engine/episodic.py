"""Running a method over episodes of a pool of embeddings: accuracy with a 95% confidence
interval and the calibration of the reported confidence. Shared by training and benchmarks."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from mssl_core.engine.calibration import (
    expected_calibration_error,
    held_out_domain_factor,
    reliability,
)
from mssl_core.engine.data.episodes import Episode, EpisodeSampler, EpisodeSpec


@dataclass
class EpisodeResults:
    """Per-episode accuracies and per-query confidences of one method in one setting."""

    accuracies: np.ndarray
    confidence: np.ndarray
    correct: np.ndarray
    seconds_per_episode: float
    task_calibrated_confidence: np.ndarray | None = None  # with the domain factor of each support set

    @property
    def task_calibrated_ece(self) -> float | None:
        if self.task_calibrated_confidence is None:
            return None
        return expected_calibration_error(self.task_calibrated_confidence, self.correct)

    @property
    def mean(self) -> float:
        return float(self.accuracies.mean())

    @property
    def ci95(self) -> float:
        return float(1.96 * self.accuracies.std(ddof=1) / np.sqrt(len(self.accuracies)))

    @property
    def ece(self) -> float:
        return expected_calibration_error(self.confidence, self.correct)

    def reliability(self) -> list[dict]:
        return reliability(self.confidence, self.correct)


def episode_tensors(pool: Tensor, episode: Episode) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Support, support labels, unlabeled and query rows of a flattened pool."""
    return (
        pool[episode.support],
        torch.from_numpy(episode.support_labels),
        pool[episode.unlabeled],
        pool[episode.query],
    )


@torch.no_grad()
def run_episodes(
    method,
    pool: Tensor,
    n_classes: int,
    n_per_class: int,
    spec: EpisodeSpec,
    episodes: int,
    seed: int,
    use_unlabeled: bool = True,
    task_calibration: bool = True,
) -> EpisodeResults:
    """Fit `method` on each episode and score its queries. Same seed, same episodes.
    `task_calibration`: also measure confidence with the domain factor of each support set
    (costs one refit per shot)."""
    sampler = EpisodeSampler(n_classes, n_per_class, spec, seed=seed)
    accuracies, confidences, correct, task_calibrated = [], [], [], []
    seconds = 0.0
    for _ in range(episodes):
        episode = sampler.sample()
        support, support_labels, unlabeled, query = episode_tensors(pool, episode)
        task_unlabeled = unlabeled if use_unlabeled else None
        # What the app does with 2+ shots: adjust the temperature on the support set itself.
        factor = (
            held_out_domain_factor(method, support, support_labels, task_unlabeled)
            if task_calibration
            else None
        )
        started = time.perf_counter()
        method.fit(support, support_labels, task_unlabeled)
        proba = method.predict_proba(query)
        seconds += time.perf_counter() - started
        confidence, predicted = proba.max(1)
        hit = predicted.numpy() == episode.query_labels
        accuracies.append(hit.mean())
        confidences.append(confidence.numpy())
        correct.append(hit)
        if factor is not None:
            recalibrated = torch.softmax(method.logits(query) / (method.temperature * factor), dim=1)
            task_calibrated.append(recalibrated.max(1).values.numpy())
    return EpisodeResults(
        np.asarray(accuracies),
        np.concatenate(confidences),
        np.concatenate(correct),
        seconds / episodes,
        np.concatenate(task_calibrated) if task_calibrated else None,
    )
