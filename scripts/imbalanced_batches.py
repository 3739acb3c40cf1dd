"""Labeling batches where the classes are not equally common, as most real batches are.

    python scripts/imbalanced_batches.py --domains openarena-textures mri-brain-regions \
        [--ways 2 5] [--shots 5 10] [--shapes rare halving balanced] [--episodes 40] [--seed 11]

The benchmark's batches hold about as many images of each class; a user's rarely do (a few
defects among many good parts, a rare finding among normal films). Per domain, ways, shots and
batch shape, tasks as the benchmark draws them but with these batches (the labeled images stay
`shots` per class):

- `rare`: every class 60 images but one, which has a tenth of that (6);
- `halving`: 64, 32, 16, ... images (at least 3), each class half the one before;
- `balanced`: 40 images per class, for comparison.

(fewer where a domain's classes have fewer images.) The default (`fit_task` on the combined
features, as `label` and the app run it) beside the benchmark's baselines on the same tasks:
accuracy ± 95% CI over tasks, the rare class's recall (the smallest class of the batch, where
the classes differ), ECE,
and at >= 0.9 confidence the precision promised and the actual one.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from mssl_core.benchmarks.crossdomain import (
    BASELINES,
    DomainPool,
    baseline_predictions,
    confidence_figures,
    domain_pool,
)
from mssl_core.engine.checkpoints import Model
from mssl_core.engine.data.domains import domain
from mssl_core.engine.data.episodes import Episode
from mssl_core.engine.model_cards import default_method
from mssl_core.labeling.adapt import fit_task, model_for


def batch_sizes(shape: str, ways: int, available: int) -> list[int]:
    """Images per class in the batch, largest first."""
    if shape == "balanced":
        return [min(40, available)] * ways
    if shape == "rare":
        top = min(60, available)
        return [top] * (ways - 1) + [max(3, top // 10)]
    if shape == "halving":
        top = min(64, available)
        return [max(3, top >> i) for i in range(ways)]
    raise ValueError(f"unknown batch shape {shape!r}")


def imbalanced_episode(
    rng: np.random.Generator, n_classes: int, n_per_class: int, shots: int, sizes: list[int]
):
    """A task of `len(sizes)` random classes, `shots` labeled images each and `sizes` batch
    images (which class gets which size is random)."""
    classes = rng.choice(n_classes, len(sizes), replace=False)
    sizes = rng.permutation(sizes)
    support, unlabeled = [], []
    for cls, size in zip(classes, sizes, strict=True):
        order = cls * n_per_class + rng.permutation(n_per_class)
        support.append(order[:shots])
        unlabeled.append(order[shots : shots + size])
    ways = np.arange(len(sizes))
    empty = np.array([], dtype=np.int64)
    return Episode(
        classes,
        np.concatenate(support),
        np.repeat(ways, shots),
        np.concatenate(unlabeled),
        np.repeat(ways, sizes),
        empty,
        empty,
    )


def setting_row(
    name: str, pool: DomainPool, model: Model, ways: int, shots: int, shape: str, episodes: int, seed: int
) -> str:
    """One line of the table: the default and the best baseline on `episodes` tasks."""
    features = pool.features["combined"]
    n_classes, n_per_class = pool.images.shape[:2]
    ways = min(ways, n_classes)
    sizes = batch_sizes(shape, ways, n_per_class - shots)
    rng = np.random.default_rng(seed)
    accuracy, rare_recall, confidence, correct = [], [], [], []
    baseline_accuracy: dict[str, list[float]] = {b: [] for b in BASELINES}
    for _ in range(episodes):
        episode = imbalanced_episode(rng, n_classes, n_per_class, shots, sizes)
        batch, truth = features[episode.unlabeled], episode.unlabeled_labels
        labels = torch.from_numpy(episode.support_labels)
        task = fit_task(model, [str(c) for c in range(ways)], features[episode.support], labels, batch)
        probabilities = task.probabilities(batch).numpy()
        predicted = probabilities.argmax(1)
        accuracy.append(float((predicted == truth).mean()))
        if len(set(sizes)) > 1:
            rare = np.bincount(truth).argmin()
            rare_recall.append(float((predicted[truth == rare] == rare).mean()))
        confidence.append(probabilities.max(1))
        correct.append(predicted == truth)
        for baseline, guess in baseline_predictions(pool, episode).items():
            baseline_accuracy[baseline].append(float((guess == truth).mean()))
    best = max(BASELINES, key=lambda b: np.mean(baseline_accuracy[b]))
    figures = confidence_figures(np.concatenate(confidence), np.concatenate(correct))
    ci = 1.96 * np.std(accuracy, ddof=1) / np.sqrt(len(accuracy))
    promised, actual = figures.get("promised_precision", np.nan), figures.get("actual_precision", np.nan)
    found = f"{np.mean(rare_recall):.1%}" if rare_recall else "-"
    return (
        f"| {name} | {ways}-way {shots}-shot | {shape} {sizes} | {np.mean(accuracy):.2%} ± {ci:.2%} "
        f"| {found} | {np.mean(baseline_accuracy[best]):.2%} ({best}) "
        f"| {figures['ece']:.3f} | {promised:.1%} / {actual:.1%} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--domains", nargs="+", required=True)
    parser.add_argument("--ways", nargs="+", type=int, default=[2, 5])
    parser.add_argument("--shots", nargs="+", type=int, default=[5])
    parser.add_argument("--shapes", nargs="+", default=["rare", "halving", "balanced"])
    parser.add_argument("--episodes", type=int, default=40)
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    print(
        "| domain | setting | batch | default ± 95% CI | rare class found | best baseline "
        "| ECE | at >= 0.9: promised / actual |"
    )
    print("|---|---|---|---|---|---|---|---|")
    method = default_method()
    model = model_for(method, "combined")
    for name in args.domains:
        pool = domain_pool(domain(name), method)
        for ways in args.ways:
            for shots in args.shots:
                for shape in args.shapes:
                    row = setting_row(name, pool, model, ways, shots, shape, args.episodes, args.seed)
                    print(row, flush=True)


if __name__ == "__main__":
    main()
