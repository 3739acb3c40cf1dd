"""Command line: `mssl-label-assist` or `python -m mssl_core`
{label,simulate,train,evaluate,crossdomain,bench,users,ml-backend} (see README.md)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from mssl_core.engine.data.paths import MODELS_DIR


def _train(args: argparse.Namespace) -> int:
    import torch

    from mssl_core.engine.model_cards import record_default_in_cards
    from mssl_core.engine.train import SHIPPED, TrainConfig, recalibrate, train_and_save

    torch.set_num_threads(args.threads)
    if args.all:
        configs = SHIPPED
    else:
        configs = [TrainConfig(args.backbone, args.method)]
    for cfg in configs:
        if args.calibrate_only:
            recalibrate(cfg.name, folder=Path(args.out))
            continue
        if args.episodes:
            cfg.episodes = args.episodes
        cfg.seed = args.seed
        cfg.photo_task_share = args.photo_task_share
        train_and_save(cfg, folder=Path(args.out))
    record_default_in_cards(Path(args.out))  # the default method may have changed
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from mssl_core.engine.evaluate import format_table, run_benchmark

    rows = run_benchmark(episodes=args.episodes, seed=args.seed, quick=args.quick, log=_stderr, jobs=args.jobs)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(format_table(rows))
    return 0


def _crossdomain(args: argparse.Namespace) -> int:
    from mssl_core.benchmarks.crossdomain import (
        RESULTS_PATH,
        fit_one_shot_factors,
        format_table,
        merged,
        run_crossdomain,
    )
    from mssl_core.labeling.adapt import FEATURE_SOURCES

    unknown = sorted(set(args.sources or ()) - set(FEATURE_SOURCES))
    if unknown:
        print(f"error: no image features named {', '.join(unknown)} (there are {', '.join(FEATURE_SOURCES)})")
        return 2
    if args.fit_one_shot:
        print(json.dumps(fit_one_shot_factors(args.domains, args.episodes, args.seed), indent=2))
        return 0
    rows = run_crossdomain(
        args.domains,
        args.episodes,
        args.seed,
        tuple(args.shots),
        args.jobs,
        _stderr,
        tuple(args.ways),
        tuple(args.sources or FEATURE_SOURCES),
    )
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))
    if args.publish:
        published = merged(json.loads(RESULTS_PATH.read_text()) if RESULTS_PATH.exists() else [], rows)
        RESULTS_PATH.write_text(json.dumps(published, indent=1))
        RESULTS_PATH.with_suffix(".txt").write_text(format_table(published) + "\n")
    print(json.dumps(rows, indent=2) if args.json else format_table(rows))
    return 0


def _bench(args: argparse.Namespace) -> int:
    from mssl_core.benchmarks.bench import format_bench, run_bench

    results = run_bench(
        label_sizes=tuple(args.label_sizes),
        readapt_sizes=tuple(args.readapt_sizes),
        repeats=args.repeats,
        threads=args.threads,
        log=_stderr,
    )
    print(json.dumps(results, indent=2) if args.json else format_bench(results))
    return 0


def _label(args: argparse.Namespace) -> int:
    import numpy as np

    from mssl_core.engine.class_shares import describe_shares
    from mssl_core.engine.ssl import SSLOptions
    from mssl_core.labeling.embedding_cache import EmbeddingCache
    from mssl_core.labeling.folders import label_folders, write_predictions_csv
    from mssl_core.project.review import confidence_summary

    ssl = SSLOptions(
        pseudo_label_rounds=args.pseudo_label_rounds,
        pseudo_label_threshold=args.pseudo_label_threshold,
        entropy_weight=args.entropy_weight,
        consistency_weight=args.consistency_weight,
    )
    if args.ray:
        from mssl_core.labeling.ray_labeling import label_folders_on_ray, shutdown

        try:
            summary = label_folders_on_ray(
                Path(args.support),
                Path(args.unlabeled),
                Path(args.out),
                args.ray,
                method=args.method,
                backbone=args.backbone,
                folder=Path(args.models),
                log=_stderr,
                ssl=ssl,
            )
        finally:
            shutdown()
        model_name, reason, images, failed = (
            summary.model_name,
            summary.backbone_reason,
            summary.images,
            summary.failed,
        )
    else:
        result = label_folders(
            Path(args.support),
            Path(args.unlabeled),
            method=args.method,
            backbone=args.backbone,
            folder=Path(args.models),
            log=_stderr,
            ssl=ssl,
            cache=None if args.no_cache else EmbeddingCache(Path(args.cache)),
            progress=_progress_every_tenth(),
        )
        write_predictions_csv(result, Path(args.out))
        model_name, reason, images = result.model_name, result.backbone_reason, len(result.rows)
        failed = sum(1 for row in result.rows if row.error)
        if result.labels_to_check:
            _stderr("labeled images that look like another class when predicted from the others:")
        for path, check in result.labels_to_check:
            _stderr(
                f"  {path}: labeled {check.label}, looks like {check.likelier} ({check.probability:.0%})"
                + (": likely mislabeled" if check.likely else "")
            )
        if result.batch_shares is not None:
            _stderr(describe_shares(result.classes, result.batch_shares))
        confidence = result.confidence
        for line in confidence_summary(confidence[~np.isnan(confidence)], result.confidence_checked):
            _stderr(line)
    _stderr(
        f"labeled {images - failed} images with {model_name}"
        f" ({reason}); {failed} could not be read; wrote {args.out}"
    )
    return 0


def _simulate(args: argparse.Namespace) -> int:
    import logging

    from mssl_core.benchmarks.simulate import actions_to_reach, simulate_folders, write_curve
    from mssl_core.labeling.embedding_cache import EmbeddingCache
    from mssl_core.project.review import likely_most_errors

    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    curve = simulate_folders(
        Path(args.support),
        Path(args.unlabeled),
        Path(args.truth),
        method=args.method,
        order=args.order,
        max_actions=args.max_actions,
        seed=args.seed,
        cache=None if args.no_cache else EmbeddingCache(Path(args.cache)),
        models=Path(args.models),
    )
    write_curve(curve, Path(args.out))
    start = curve[0]
    print(
        f"{args.order} order: the batch starts {start.batch_accuracy:.1%} correct"
        f" ({start.actual_errors_remaining} wrong; the app expects {start.expected_errors_remaining:.1f},"
        f" likely no more than {likely_most_errors(start.expected_errors_remaining)})"
    )
    for target in (0.95, 0.99):
        actions = actions_to_reach(curve, target)
        reached = "not reached" if actions is None else f"{actions} actions"
        print(f"{target:.0%} correct: {reached}")
    print(f"wrote {args.out}")
    return 0


def _users(args: argparse.Namespace) -> int:
    import getpass

    from mssl_core.project.users import add_user, list_users, remove_user, users_file

    try:
        if args.action == "add":
            if args.password_stdin:
                password = sys.stdin.readline().rstrip("\n")
            else:
                password = getpass.getpass(f"Password for {args.name}: ")
                if getpass.getpass("The same password again: ") != password:
                    _stderr("The two passwords differ; nothing was changed.")
                    return 1
            new = add_user(args.name, password)
            _stderr(f"{'Added user' if new else 'Changed the password of'} {args.name} ({users_file()}).")
        elif args.action == "remove":
            remove_user(args.name)
            _stderr(f"Removed user {args.name}; their decisions stay in the audit trail under their name.")
        else:
            print("\n".join(list_users()) or "No users: the app has no per-user log-in.")
    except (ValueError, KeyError) as error:
        _stderr(f"Nothing was changed: {error.args[0]}.")
        return 1
    return 0


def _progress_every_tenth():
    """A progress callback that says how far embedding got at every tenth of a large batch."""
    shown = 0

    def progress(done: int, total: int) -> None:
        nonlocal shown
        if total >= 1000 and done * 10 // total > shown:
            shown = done * 10 // total
            _stderr(f"embedded {done:,} / {total:,} images")

    return progress


def _ml_backend(args: argparse.Namespace) -> int:
    from mssl_core.integrations.ml_backend import serve

    serve(args.host, args.port)
    return 0


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    from mssl_core.engine.ssl import SSLOptions
    from mssl_core.project.store import data_dir, keep_files_private

    keep_files_private()
    # The library logs (unreadable files, progress of long runs); the command line shows it.
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    parser = argparse.ArgumentParser(prog="python -m mssl_core", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    label = commands.add_parser("label", help="pseudo-label a folder of images")
    label.add_argument("--support", required=True, help="folder with one sub-folder of images per class")
    label.add_argument("--unlabeled", required=True, help="folder of images to label (searched recursively)")
    label.add_argument("--out", required=True, help="CSV to write: path,label,confidence,error,p_<class>...")
    label.add_argument("--method", default=None, help="method name (default: the best measured)")
    label.add_argument(
        "--backbone",
        default="auto",
        help="image features: auto (default: combined), combined, imagenet, conv4, pixels or mobilenetv2",
    )
    label.add_argument("--models", default=str(MODELS_DIR), help="folder of checkpoints")
    label.add_argument(
        "--cache",
        default=str(data_dir() / "embeddings.sqlite"),
        help="embedding cache shared with the app: images seen before are not embedded again",
    )
    label.add_argument("--no-cache", action="store_true", help="neither read nor write the embedding cache")
    label.add_argument(
        "--ray",
        metavar="ADDRESS",
        help="run on a Ray cluster with Ray Data: its address, 'auto' (the cluster this machine"
        " is part of) or 'local' (a private one on this machine); writes the same CSV",
    )
    defaults = SSLOptions()
    label.add_argument(
        "--pseudo-label-rounds",
        type=int,
        default=defaults.pseudo_label_rounds,
        help="self-training: rounds in which confident unlabeled images join the labeled set",
    )
    label.add_argument(
        "--pseudo-label-threshold",
        type=float,
        default=defaults.pseudo_label_threshold,
        help="confidence an unlabeled image needs to be used as a pseudo-label",
    )
    label.add_argument(
        "--entropy-weight", type=float, default=defaults.entropy_weight, help="entropy minimisation weight"
    )
    label.add_argument(
        "--consistency-weight",
        type=float,
        default=defaults.consistency_weight,
        help="consistency regularisation weight (two perturbed views must agree)",
    )
    label.set_defaults(run=_label)

    from mssl_core.project.review import ORDERS

    simulate = commands.add_parser(
        "simulate",
        help="replay the Review page with a reviewer who knows the truth: actions to 95%% / 99%% correct",
    )
    simulate.add_argument("--support", required=True, help="folder with one sub-folder of images per class")
    simulate.add_argument("--unlabeled", required=True, help="folder of the batch to review")
    simulate.add_argument("--truth", required=True, help="CSV `file,label`, file relative to --unlabeled")
    simulate.add_argument(
        "--out",
        required=True,
        help="CSV to write: actions,reviewed,batch_accuracy,expected/actual errors remaining",
    )
    simulate.add_argument("--method", default=None, help="method name (default: the best measured)")
    simulate.add_argument("--order", choices=ORDERS, default="app", help="which image the reviewer sees next")
    simulate.add_argument("--max-actions", type=int, default=None, help="stop after this many (default: all)")
    simulate.add_argument("--seed", type=int, default=0, help="for --order random")
    simulate.add_argument("--models", default=str(MODELS_DIR), help="folder of checkpoints")
    simulate.add_argument("--cache", default=str(data_dir() / "embeddings.sqlite"), help="embedding cache")
    simulate.add_argument("--no-cache", action="store_true", help="neither read nor write the embedding cache")
    simulate.set_defaults(run=_simulate)

    train = commands.add_parser("train", help="meta-train a model into mssl_core/assets/models/")
    train.add_argument("--all", action="store_true", help="reproduce every shipped checkpoint")
    train.add_argument("--backbone", default="conv4")
    train.add_argument("--method", default="softkmeans")
    train.add_argument("--episodes", type=int, default=0, help="override the number of episodes")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--threads", type=int, default=2)
    train.add_argument(
        "--photo-task-share",
        type=float,
        default=0.0,
        help="MobileNetV2: share of episodes from augmented photo regions instead of characters",
    )
    train.add_argument("--out", default=str(MODELS_DIR), help="folder to write checkpoints to")
    train.add_argument(
        "--calibrate-only",
        action="store_true",
        help="keep the weights of the checkpoints in --out, re-fit their temperatures on validation classes",
    )
    train.set_defaults(run=_train)

    evaluate = commands.add_parser("evaluate", help="print the held-out benchmark table")
    evaluate.add_argument("--episodes", type=int, default=600, help="episodes per row (default 600)")
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.add_argument("--quick", action="store_true", help="a few settings only, for a smoke test")
    evaluate.add_argument("--json", action="store_true", help="print JSON instead of a table")
    evaluate.add_argument("--jobs", type=int, default=1, help="settings evaluated in parallel (one per core)")
    evaluate.set_defaults(run=_evaluate)

    crossdomain = commands.add_parser(
        "crossdomain", help="print the cross-domain table (install its data: scripts/install_domains.sh)"
    )
    crossdomain.add_argument("--domains", nargs="+", help="only these domains (default: all)")
    crossdomain.add_argument("--episodes", type=int, default=200, help="episodes per row (default 200)")
    crossdomain.add_argument("--shots", type=int, nargs="+", default=[1, 5, 10])
    crossdomain.add_argument(
        "--ways",
        type=int,
        nargs="+",
        default=[2, 5],
        help="classes per task, capped at a domain's (default 2 5)",
    )
    crossdomain.add_argument("--seed", type=int, default=0)
    crossdomain.add_argument(
        "--sources",
        nargs="+",
        help="only these image features' rows beside the baselines, as --backbone names them (default: "
        "all; the default rows come with combined): refreshes what a change to one source moves",
    )
    crossdomain.add_argument(
        "--jobs", type=int, default=1, help="settings evaluated in parallel (one per core)"
    )
    crossdomain.add_argument("--json", action="store_true", help="print JSON instead of a table")
    crossdomain.add_argument("--out", help="also write every row to this JSON file")
    crossdomain.add_argument(
        "--fit-one-shot",
        action="store_true",
        help="print the one-shot factors fitted on --domains (development domains only) instead",
    )
    crossdomain.add_argument(
        "--publish",
        action="store_true",
        help="write docs/crossdomain.json and .txt (the Model page reads them): the rows run "
        "replace the published rows of the same domain, setting and row",
    )
    crossdomain.set_defaults(run=_crossdomain)

    bench = commands.add_parser("bench", help="print speed and memory figures for this machine")
    bench.add_argument("--json", action="store_true", help="print JSON instead of tables")
    bench.add_argument("--repeats", type=int, default=3, help="runs per figure (the median is shown)")
    bench.add_argument("--threads", type=int, default=2)
    bench.add_argument(
        "--label-sizes",
        type=int,
        nargs="+",
        default=[100, 1_000, 10_000],
        help="photos per label run",
    )
    bench.add_argument(
        "--readapt-sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000], help="cached embeddings"
    )
    bench.set_defaults(run=_bench)

    users = commands.add_parser("users", help="the named users who may log in to the app")
    actions = users.add_subparsers(dest="action", required=True)
    add = actions.add_parser("add", help="add a user, or give one a new password (asked for, not shown)")
    add.add_argument("name")
    add.add_argument("--password-stdin", action="store_true", help="read the password from one line of stdin")
    actions.add_parser("remove", help="remove a user").add_argument("name")
    actions.add_parser("list", help="print the user names")
    users.set_defaults(run=_users)

    backend = commands.add_parser(
        "ml-backend",
        help="serve as a Label Studio ML backend (needs LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY;"
        " docs/label-studio.md)",
    )
    backend.add_argument("--host", default="127.0.0.1", help="address to bind (default: this machine only)")
    backend.add_argument("--port", type=int, default=9090)
    backend.set_defaults(run=_ml_backend)

    args = parser.parse_args(argv)
    return args.run(args)
