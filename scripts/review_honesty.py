"""Is the Review page's expected count of wrong labels right as a review goes on, and is its
"you can stop now" right when it says so?

    python scripts/review_honesty.py --domains fashion-mnist mnist ... [--tasks 10] [--shots 5] [--share 0.7]

On benchmark tasks (5-way, or as many classes as a domain has, `--shots` labeled and 40 batch images
per class, episode seed 7 as scripts/review_curves.py), a simulated reviewer decides images in the
app's order (`simulate.review_steps`, the page's own step) for `--share` of the batch. At every
step, the expected count of wrong labels among the images not yet reviewed (`now`: confidence
corrected by the decisions so far, as the page shows it; `before`: calibrated on the labeled
images alone, the page before that correction) against the actual count. Then the stop rule as
the page applies it: the first step where the expected precision of the rest reaches a target
(95%, 98%, 99%), and whether the rest was then as good, and within the page's "likely no more
than" (`review.likely_most_errors`). One JSON line per task goes to --out.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from mssl_core.benchmarks.crossdomain import domain_pool
from mssl_core.benchmarks.simulate import ReviewTask, review_steps
from mssl_core.engine.checkpoints import Model
from mssl_core.engine.data.domains import domain
from mssl_core.engine.data.episodes import Episode
from mssl_core.engine.model_cards import default_method
from mssl_core.labeling.adapt import model_for
from mssl_core.project.review import expected_errors, likely_most_errors

TARGETS = (0.95, 0.98, 0.99)
COUNTS = ("before", "now")


def task_steps(model: Model, features: Tensor, episode: Episode, share: float) -> list[dict]:
    """Per step of one task's simulated review: images not yet reviewed, wrong among them, and
    the expected counts before and after the correction by the decisions."""
    classes = [str(c) for c in range(int(episode.support_labels.max()) + 1)]
    labels = torch.from_numpy(episode.support_labels)
    batch = features[episode.unlabeled]
    steps = []
    task = ReviewTask(model, classes, features[episode.support], labels, batch, episode.unlabeled_labels)
    for point, prediction, pending in review_steps(task):
        before = expected_errors(prediction.before_review[pending].max(1))[0]
        now = point.expected_errors_remaining
        steps.append(
            {"images": len(pending), "wrong": point.actual_errors_remaining, "before": before, "now": now}
        )
        if point.actions >= share * len(batch):
            break
    return steps


def summary(tasks: list[list[dict]], count: str) -> str:
    """Along the curves: mean |expected - actual| and the share of steps within max(3, 25%);
    per target: tasks where the stop rule fired, and of those, the rest as good as promised and
    within the bound."""
    gaps = [abs(s[count] - s["wrong"]) for steps in tasks for s in steps]
    within = [abs(s[count] - s["wrong"]) <= max(3, 0.25 * s["wrong"]) for steps in tasks for s in steps]
    cells = [f"{np.mean(gaps):.1f}", f"{np.mean(within):.0%}"]
    for target in TARGETS:
        stops = [next((s for s in steps if 1 - s[count] / s["images"] >= target), None) for steps in tasks]
        stops = [s for s in stops if s is not None]
        met = sum(1 - s["wrong"] / s["images"] >= target for s in stops)
        bounded = sum(s["wrong"] <= likely_most_errors(s[count]) for s in stops)
        cells.append(f"{len(stops)} / {met} / {bounded}")
    return " | ".join(cells)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--domains", nargs="+", required=True)
    parser.add_argument("--tasks", type=int, default=10)
    parser.add_argument("--shots", type=int, default=5, help="labeled images per class")
    parser.add_argument("--share", type=float, default=0.7, help="share of the batch reviewed")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    method = default_method()
    model = model_for(method, "combined")
    heading = " | ".join(f"stop at {t:.0%}: fired / met / within bound" for t in TARGETS)
    print(f"| domain | tasks | count | mean gap | steps within max(3, 25%) | {heading} |")
    print("|---" * (5 + len(TARGETS)) + "|")
    for name in args.domains:
        pool = domain_pool(domain(name), method)
        sampler = pool.tasks(5, args.shots, 40, args.seed)
        tasks = []
        for task in range(args.tasks):
            tasks.append(task_steps(model, pool.features["combined"], sampler.sample(), args.share))
            if args.out:
                with args.out.open("a") as out:
                    out.write(json.dumps({"domain": name, "task": task, "steps": tasks[-1]}) + "\n")
        for count in COUNTS:
            print(f"| {name} | {len(tasks)} | {count} | {summary(tasks, count)} |", flush=True)


if __name__ == "__main__":
    main()
