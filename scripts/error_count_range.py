"""How far the Review page's expected count of wrong labels is from the actual count, task by task.

    python scripts/error_count_range.py --domains mnist fashion-mnist ... [--tasks 20] [--shots 5 10]

On benchmark tasks (5-way, or as many classes as a domain has; 40 batch images per class), labeled
as the app labels them, it records the expected count (the sum of 1 - confidence over the batch)
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

from mssl_core.benchmarks.crossdomain import domain_pool
from mssl_core.engine.data.domains import domain
from mssl_core.engine.data.episodes import EpisodeSampler, EpisodeSpec
from mssl_core.engine.model_cards import default_method
from mssl_core.labeling.adapt import fit_task, model_for
from mssl_core.project.review import likely_most_errors


def task_counts(name: str, shots: int, tasks: int, seed: int) -> list[dict]:
    """(expected, actual) wrong labels of `tasks` tasks of one domain, labeled with the defaults."""
    method = default_method()
    model = model_for(method, "combined")
    pool = domain_pool(domain(name), method)
    features = pool.features["combined"]
    n_classes, n_per_class = pool.images.shape[:2]
    spec = EpisodeSpec(min(5, n_classes), shots, min(40, n_per_class - shots), 0, 0)
    sampler = EpisodeSampler(n_classes, n_per_class, spec, seed=seed + shots)
    rows = []
    for number in range(tasks):
        episode = sampler.sample()
        batch = features[episode.unlabeled]
        task = fit_task(
            model,
            [str(c) for c in range(spec.ways)],
            features[episode.support],
            torch.from_numpy(episode.support_labels),
            batch,
        )
        probabilities = task.probabilities(batch).numpy()
        actual = int((probabilities.argmax(1) != episode.unlabeled_labels).sum())
        expected = float((1 - probabilities.max(1)).sum())
        rows.append(
            {
                "domain": name,
                "shots": shots,
                "task": number,
                "images": len(batch),
                "expected": expected,
                "actual": actual,
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--domains", nargs="+", required=True)
    parser.add_argument("--shots", nargs="+", type=int, default=[5, 10])
    parser.add_argument("--tasks", type=int, default=20)
    parser.add_argument("--seed", type=int, default=9100, help="episodes: seed + shots")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    rows = []
    print(
        "| domain | shots | tasks | (actual + 1) / (expected + 1): 10th / 50th / 90th pct "
        "| actual at or below the likely most |"
    )
    print("|---|---|---|---|---|")
    for name in args.domains:
        for shots in args.shots:
            found = task_counts(name, shots, args.tasks, args.seed)
            rows += found
            ratio = [(r["actual"] + 1) / (r["expected"] + 1) for r in found]
            inside = [r["actual"] <= likely_most_errors(r["expected"]) for r in found]
            low, mid, high = np.percentile(ratio, [10, 50, 90])
            spread = f"{low:.2f} / {mid:.2f} / {high:.2f}"
            print(f"| {name} | {shots} | {len(found)} | {spread} | {np.mean(inside):.0%} |")
            if args.out:
                with args.out.open("a") as handle:
                    handle.writelines(json.dumps(r) + "\n" for r in found)
    ratio = [(r["actual"] + 1) / (r["expected"] + 1) for r in rows]
    inside = [r["actual"] <= likely_most_errors(r["expected"]) for r in rows]
    low, mid, high = np.percentile(ratio, [10, 50, 90])
    print(f"| all | | {len(rows)} | {low:.2f} / {mid:.2f} / {high:.2f} | {np.mean(inside):.0%} |")


if __name__ == "__main__":
    main()
