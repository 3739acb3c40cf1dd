"""How far the Review page's expected count of wrong labels is from the actual count, task by task.

    python scripts/error_count_range.py --domains mnist fashion-mnist ... [--tasks 20] [--shots 5 10]

On benchmark tasks (5-way, or as many classes as a domain has; 40 batch images per class), labeled
as the app labels them, it records the expected count (`review.expected_errors` over the batch)
and the actual one, and prints the 10th / 50th / 90th percentiles of (actual + 1) / (expected + 1)
(on development domains, where `review.ERROR_COUNT_RATIO_90` was chosen) and how often the actual
count stayed at or below `review.likely_most_errors` (on any domain). One JSON line per task goes
to --out.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from mssl_core.benchmarks.crossdomain import DomainPool, domain_pool
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
        actual = int((probabilities.argmax(1) != episode.unlabeled_labels).sum())
        expected = expected_errors(probabilities.max(1))[0]
        rows.append(
            {"shots": shots, "task": number, "images": len(batch), "expected": expected, "actual": actual}
        )
    return rows


def summary(rows: list[dict]) -> str:
    """Percentiles of (actual + 1) / (expected + 1), and the share at or below the bound."""
    ratio = [(r["actual"] + 1) / (r["expected"] + 1) for r in rows]
    within = np.mean([r["actual"] <= likely_most_errors(r["expected"]) for r in rows])
    low, mid, high = np.percentile(ratio, [10, 50, 90])
    return f"{len(rows)} | {low:.2f} / {mid:.2f} / {high:.2f} | {within:.0%}"


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
        "| actual at or below the likely most |"
    )
    print("|---|---|---|---|---|")
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
