"""How far the Review page's expected count of wrong labels is from the actual count, task by task.

    python scripts/error_count_range.py --domains mnist fashion-mnist ... [--tasks 20] [--shots 5 10]

On benchmark tasks (5-way, or as many classes as a domain has; 40 batch images per class), labeled
as the app labels them, it records the expected count (`review.expected_errors` over the batch)
and the actual one, and prints the 10th / 50th / 90th percentiles of (actual + 1) / (expected + 1)
(on development domains, where `review.ERROR_COUNT_RATIO_90` was chosen) and how often the actual
count stayed at or below `review.likely_most_errors` (on any domain). One JSON line per task goes
to --out.

And how often the count is within max(3, 25%) of the actual one (issue 14's target before any
review), beside two ceilings on the same tasks: a perfectly calibrated model with these very
confidences (the actual count drawn image by image with probability 1 - confidence, 2,000 draws),
and this model at the temperature that fits the batch's truth best (one per task, which no
labeling run can know): how much of the miss is chance and how much the calibration.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from mssl_core.benchmarks.crossdomain import DomainPool, domain_pool
from mssl_core.engine.calibration import fit_temperature
from mssl_core.engine.checkpoints import Model
from mssl_core.engine.data.domains import domain
from mssl_core.engine.model_cards import default_method
from mssl_core.labeling.adapt import fit_task, model_for
from mssl_core.project.review import expected_errors, likely_most_errors


def task_counts(model: Model, pool: DomainPool, shots: int, tasks: int, seed: int) -> list[dict]:
    """Expected and actual wrong labels of `tasks` tasks of one domain, labeled with the defaults."""
    features = pool.features["combined"]
    sampler = pool.tasks(5, shots, 40, seed + shots)
    rows = []
    for number in range(tasks):
        episode = sampler.sample()
        batch = features[episode.unlabeled]
        classes = [str(c) for c in range(sampler.spec.ways)]
        labels = torch.from_numpy(episode.support_labels)
        probabilities = fit_task(model, classes, features[episode.support], labels, batch).probabilities(batch)
        probabilities = probabilities.numpy()
        truth = torch.from_numpy(episode.unlabeled_labels).long()
        actual = int((probabilities.argmax(1) != episode.unlabeled_labels).sum())
        confidence = probabilities.max(1)
        expected = expected_errors(confidence)[0]
        draws = (np.random.default_rng(number).random((2000, len(batch))) > confidence).sum(1)
        log_probabilities = torch.log(torch.from_numpy(probabilities).double().clamp_min(1e-12))
        best = torch.softmax(log_probabilities / fit_temperature(log_probabilities, truth), dim=1)
        rows.append(
            {
                "shots": shots,
                "task": number,
                "images": len(batch),
                "expected": expected,
                "actual": actual,
                "calibrated_chance": float(np.mean([within_target(expected, a) for a in draws])),
                "expected_at_best_temperature": expected_errors(best.max(1).values.numpy())[0],
            }
        )
    return rows


def within_target(expected: float, actual: int) -> bool:
    """Issue 14's target for the count before any review: within max(3, 25%) of the actual."""
    return abs(expected - actual) <= max(3, 0.25 * actual)


def summary(rows: list[dict]) -> str:
    """Percentiles of (actual + 1) / (expected + 1), the share at or below the bound, and the
    share within the target: this model, a perfectly calibrated one, the best temperature."""
    ratio = [(r["actual"] + 1) / (r["expected"] + 1) for r in rows]
    bounded = np.mean([r["actual"] <= likely_most_errors(r["expected"]) for r in rows])
    low, mid, high = np.percentile(ratio, [10, 50, 90])
    within = np.mean([within_target(r["expected"], r["actual"]) for r in rows])
    calibrated = np.mean([r["calibrated_chance"] for r in rows])
    best = np.mean([within_target(r["expected_at_best_temperature"], r["actual"]) for r in rows])
    shares = " | ".join(f"{share:.0%}" for share in (bounded, within, calibrated, best))
    return f"{len(rows)} | {low:.2f} / {mid:.2f} / {high:.2f} | {shares}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--domains", nargs="+", required=True)
    parser.add_argument("--shots", nargs="+", type=int, default=[5, 10])
    parser.add_argument("--tasks", type=int, default=20)
    parser.add_argument("--seed", type=int, default=9100, help="episodes: seed + shots")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    method = default_method()
    model = model_for(method, "combined")
    print(
        "| domain | shots | tasks | (actual + 1) / (expected + 1): 10th / 50th / 90th pct "
        "| actual at or below the likely most | count within max(3, 25%): this model "
        "| a perfectly calibrated one | at the best temperature |"
    )
    print("|---|---|---|---|---|---|---|---|")
    rows = []
    for name in args.domains:
        pool = domain_pool(domain(name), method)
        for shots in args.shots:
            found = [{"domain": name, **r} for r in task_counts(model, pool, shots, args.tasks, args.seed)]
            rows += found
            print(f"| {name} | {shots} | {summary(found)} |")
            if args.out:
                with args.out.open("a") as handle:
                    handle.writelines(json.dumps(r) + "\n" for r in found)
    print(f"| all | | {summary(rows)} |")


if __name__ == "__main__":
    main()
