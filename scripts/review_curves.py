"""The review loop measured on every benchmark domain and the demo: a simulated reviewer
(`mssl_core.benchmarks.simulate`) in the app's order and in random order, until the batch is 99% correct.

    python scripts/review_curves.py [--episodes 1] [--per-class 40] [--domains NAME ...]

Writes docs/review-curves.json (the Model page plots it) and prints the table of docs/review.md.
5-way (fewer where a domain has fewer classes) 5-shot tasks, the default method and features.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict

import torch

from mssl_core.benchmarks.crossdomain import domain_pool
from mssl_core.benchmarks.simulate import (
    CURVES_PATH,
    CurvePoint,
    actions_to_reach,
    simulate_folders,
    simulate_review,
)
from mssl_core.engine.data.domains import DOMAINS, domain
from mssl_core.engine.data.paths import ASSETS_DIR
from mssl_core.engine.model_cards import default_method
from mssl_core.labeling.adapt import model_for

ORDERS = ("app", "random")
DEMO = ASSETS_DIR / "demo"


def summary(name: str, role: str, order: str, batch: int, curve: list[CurvePoint], seconds: float) -> dict:
    start = curve[0]
    return {
        "task": name,
        "role": role,
        "order": order,
        "batch": batch,
        "start_accuracy": round(start.batch_accuracy, 4),
        "expected_errors": round(start.expected_errors_remaining, 1),
        "actual_errors": start.actual_errors_remaining,
        "to_95": actions_to_reach(curve, 0.95),
        "to_99": actions_to_reach(curve, 0.99),
        "seconds_per_action": round(seconds / max(len(curve) - 1, 1), 3),
        "curve": [asdict(p) for p in curve],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=1)
    parser.add_argument("--per-class", type=int, default=40, help="batch images per class")
    parser.add_argument("--domains", nargs="*", default=[d.name for d in DOMAINS] + ["demo"])
    args = parser.parse_args()
    method = default_method()
    model = model_for(method, "combined")
    rows = []
    for name in args.domains:
        for order in ORDERS:
            if name == "demo":
                started = time.perf_counter()
                curve = simulate_folders(
                    DEMO / "labeled",
                    DEMO / "unlabeled",
                    DEMO / "unlabeled_truth.csv",
                    order=order,
                    stop_at=0.99,
                )
                batch = len((DEMO / "unlabeled_truth.csv").read_text().splitlines()) - 1
                rows.append(summary("demo", "demo", order, batch, curve, time.perf_counter() - started))
                print(json.dumps({k: v for k, v in rows[-1].items() if k != "curve"}), flush=True)
                continue
            d = domain(name)
            pool = domain_pool(d, method)
            features = pool.features["combined"]
            sampler = pool.tasks(5, 5, args.per_class, seed=7)
            for episode_number in range(args.episodes):
                episode = sampler.sample()
                started = time.perf_counter()
                curve = simulate_review(
                    model,
                    [str(c) for c in range(sampler.spec.ways)],
                    features[episode.support],
                    torch.from_numpy(episode.support_labels),
                    features[episode.unlabeled],
                    episode.unlabeled_labels,
                    order,
                    seed=episode_number,
                    stop_at=0.99,
                )
                seconds = time.perf_counter() - started
                batch = len(episode.unlabeled)
                rows.append(summary(f"{name} #{episode_number}", d.role, order, batch, curve, seconds))
                print(json.dumps({k: v for k, v in rows[-1].items() if k != "curve"}), flush=True)
    CURVES_PATH.write_text(json.dumps(rows, indent=1))
    print("| task | role | batch | start | expected / actual errors | app: to 95% / 99% | random: to 99% |")
    print("|---|---|---|---|---|---|---|")
    for app in (r for r in rows if r["order"] == "app"):
        random = next(r for r in rows if r["task"] == app["task"] and r["order"] == "random")
        print(
            f"| {app['task']} | {app['role']} | {app['batch']} | {app['start_accuracy']:.1%} | "
            f"{app['expected_errors']} / {app['actual_errors']} | {app['to_95']} / {app['to_99']} | "
            f"{random['to_99']} |"
        )


if __name__ == "__main__":
    main()
