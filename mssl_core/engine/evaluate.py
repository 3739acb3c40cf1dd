"""The held-out benchmark: every shipped method and three baselines over the same episodes.

Character rows use classes never seen in meta-training (the test split); cross-domain rows use
real digits (MNIST) and clothing (Fashion-MNIST), which no model saw at all. Each row reports
mean query accuracy with a 95% confidence interval over episodes and the expected
calibration error (ECE) of the reported confidence.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from mssl_core.engine.backbones import PixelBackbone, embed_images
from mssl_core.engine.checkpoints import MODELS_DIR, available_models, load_model, save_card
from mssl_core.engine.data import characters
from mssl_core.engine.data.episodes import EpisodeSpec
from mssl_core.engine.data.paths import cache_dir
from mssl_core.engine.data.real import as_class_pool, load_fashion_mnist, load_mnist
from mssl_core.engine.episodic import run_episodes
from mssl_core.engine.methods import make_method
from mssl_core.engine.model_cards import record_default_in_cards
from mssl_core.engine.ssl import SELF_TRAINING, with_ssl

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Setting:
    dataset: str
    spec: EpisodeSpec

    @property
    def label(self) -> str:
        s = self.spec
        text = f"{s.ways}-way {s.shots}-shot, {s.unlabeled} unlabeled/class"
        return text + (f", {s.distractors} distractor classes" if s.distractors else "")


def settings(quick: bool = False) -> list[Setting]:
    """The benchmark grid; `quick` keeps one character and one real-data setting."""
    grid = [
        Setting("characters", EpisodeSpec(ways, shots, 20, distractors, 15))
        for ways in (5, 20)
        for shots in (1, 5)
        for distractors in (0, 5)
    ]
    grid += [
        Setting(dataset, EpisodeSpec(5, shots, 20, 0, 15))
        for dataset in ("mnist", "fashion-mnist")
        for shots in (1, 5)
    ]
    if quick:
        return [grid[0], grid[-1]]
    return grid


def image_pool(dataset: str) -> np.ndarray:
    """Images `(n_classes, 40, 28, 28)` uint8 of the test classes of a dataset."""
    if dataset == "characters":
        return characters.load_characters("test", 40).images
    loader = {"mnist": load_mnist, "fashion-mnist": load_fashion_mnist}[dataset]
    return as_class_pool(*loader(), n_per_class=40)


def embed_pool(backbone, images: np.ndarray) -> Tensor:
    """Embeddings of a class pool, flattened to `(n_classes * n_per_class, dim)`."""
    flat = images.reshape(-1, *images.shape[2:])
    if isinstance(backbone, PixelBackbone):  # also Conv-4: arrays are already 28x28
        return backbone.embed(backbone.preprocess_arrays(flat))
    return embed_images(backbone, [Image.fromarray(a) for a in flat])


@dataclass(frozen=True)
class Candidate:
    """One row of a setting: a method on a backbone, with or without the unlabeled images."""

    name: str
    backbone_name: str
    backbone_key: str  # identifies the embeddings: backbone name and checkpoint fingerprint
    backbone: object
    method: object
    use_unlabeled: bool = True
    train_s: float | None = None
    # "baseline"; "shipped": the model as the app and CLI run it; "variant": the same model
    # without (or with extra) use of the unlabeled images
    kind: str = "baseline"
    model: str = ""  # the shipped model a row measures ("" for baselines)

    @property
    def semi_supervised(self) -> bool:
        return self.use_unlabeled and self.method.uses_unlabeled


def cached_pool(
    dataset: str,
    backbone_key: str,
    backbone,
    images: np.ndarray,
    embed: Callable[[object, np.ndarray], Tensor] | None = None,
) -> Tensor:
    """`embed` (default `embed_pool`), kept on disk per (dataset, checkpoint): every setting of a
    dataset and every worker process reuses it instead of embedding the same tens of thousands
    of images again."""
    content = hashlib.sha1(images.tobytes()).hexdigest()[:12]
    path = cache_dir() / "pools" / f"{dataset}-{backbone_key.replace(':', '-')}-{content}.pt"
    if path.exists():
        return torch.load(path, weights_only=True)
    pool = (embed or embed_pool)(backbone, images)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.part")
    torch.save(pool.clone(), partial)
    partial.replace(path)
    return pool


def candidates(models: dict, dataset: str) -> list[Candidate]:
    """The baselines, then every shipped model without and with its semi-supervised extension
    (its own use of the unlabeled images; ssl.py's self-training for prototypical networks)."""
    rows = [Candidate("nearest centroid", "pixels", "pixels", PixelBackbone(), make_method("protonet"))]
    backbones = sorted({m.backbone.name for m in models.values()})
    if dataset == "characters":  # MobileNetV2 is for photos; Conv-4 was meta-trained on these
        backbones = [b for b in backbones if b == "conv4"] or backbones
    for backbone_name in backbones:
        proto = models[f"{backbone_name}-protonet"]
        rows += [
            Candidate(
                "logistic regression", backbone_name, proto.backbone_key, proto.backbone, make_method("logreg")
            ),
            Candidate(
                "LabelSpreading",
                backbone_name,
                proto.backbone_key,
                proto.backbone,
                make_method("label-spreading"),
            ),
        ]
        for name, model in models.items():
            if model.backbone.name != backbone_name:
                continue
            train_s = model.card.get("wall_time_s")
            # The row named exactly like the model is what the app and CLI run ("shipped").
            if model.method.uses_unlabeled:
                labeled_only, semi = f"{name} (labeled only)", name
                semi_method, (labeled_kind, semi_kind) = model.method, ("variant", "shipped")
            else:
                labeled_only, semi = name, f"{name} + self-training"
                semi_method, (labeled_kind, semi_kind) = (
                    with_ssl(model.method, SELF_TRAINING),
                    ("shipped", "variant"),
                )
            common = {
                "backbone_name": backbone_name,
                "backbone_key": model.backbone_key,
                "backbone": model.backbone,
                "train_s": train_s,
                "model": name,
            }
            rows += [
                Candidate(labeled_only, method=model.method, use_unlabeled=False, kind=labeled_kind, **common),
                Candidate(semi, method=semi_method, use_unlabeled=True, kind=semi_kind, **common),
            ]
    return rows


def candidate_inputs(candidate: Candidate, dataset: str, images: np.ndarray) -> tuple[object, Tensor]:
    """What `run_episodes` takes for a row: its method and pool."""
    return candidate.method, cached_pool(dataset, candidate.backbone_key, candidate.backbone, images)


def calibrated_on_support(setting: Setting, candidate: Candidate) -> bool:
    """Whether a row also measures ECE* (the domain factor measured per task on its held-out
    labeled images, one refit per shot): on the 5-way 5-shot settings without distractors (those with a
    reliability diagram), for the rows that are what the app and CLI run."""
    spec = setting.spec
    app_row = candidate.kind in ("baseline", "shipped")
    return spec.ways == 5 and spec.shots == 5 and not spec.distractors and app_row


def setting_rows(
    index: int, episodes: int, seed: int, quick: bool, folder=MODELS_DIR, log=logger.info
) -> list[dict]:
    """Every candidate's row for one setting; the episode seed depends on the setting only."""
    setting = settings(quick)[index]
    models = {name: load_model(name, folder) for name in available_models(folder)}
    images = image_pool(setting.dataset)
    n_classes, n_per_class = images.shape[:2]
    episode_seed = seed * 1000 + index
    rows = []
    for candidate in candidates(models, setting.dataset):
        result = run_episodes(
            *candidate_inputs(candidate, setting.dataset, images),
            n_classes,
            n_per_class,
            setting.spec,
            episodes,
            episode_seed,
            use_unlabeled=candidate.use_unlabeled,
            task_calibration=calibrated_on_support(setting, candidate),
        )
        row = {
            "dataset": setting.dataset,
            "setting": setting.label,
            "ways": setting.spec.ways,
            "shots": setting.spec.shots,
            "unlabeled": setting.spec.unlabeled,
            "distractors": setting.spec.distractors,
            "episodes": episodes,
            "seed": episode_seed,
            "method": candidate.name,
            "kind": candidate.kind,
            "model": candidate.model,
            "backbone": candidate.backbone_name,
            "semi_supervised": candidate.semi_supervised,
            "accuracy": round(result.mean, 4),
            "ci95": round(result.ci95, 4),
            "ece": round(result.ece, 4),
            "ece_support_calibrated": None
            if result.task_calibrated_ece is None
            else round(result.task_calibrated_ece, 4),
            "ms_per_episode": round(result.seconds_per_episode * 1000, 2),
            "train_s": candidate.train_s,
        }
        if setting.spec.shots == 5 and setting.spec.ways == 5 and not setting.spec.distractors:
            row["reliability"] = result.reliability()
        rows.append(row)
        log(
            f"{setting.dataset:13s} {setting.label:52s} {candidate.name:36s} "
            f"{row['accuracy']:.2%} ± {row['ci95']:.2%}  ECE {row['ece']:.3f}"
        )
    return rows


def _setting_rows_in_worker(args: tuple) -> list[dict]:
    torch.set_num_threads(1)  # one process per core
    return setting_rows(*args, log=logger.info)


def run_benchmark(
    episodes: int = 600,
    seed: int = 0,
    quick: bool = False,
    folder=MODELS_DIR,
    log: Callable[[str], None] = logger.info,
    update_cards: bool | None = None,
    jobs: int = 1,
) -> list[dict]:
    """All rows of the benchmark as dicts (see module docstring); `jobs` settings at a time."""
    indices = range(len(settings(quick)))
    if jobs > 1:  # embed every pool once, here, so the workers only load them
        models = {name: load_model(name, folder) for name in available_models(folder)}
        for dataset in dict.fromkeys(s.dataset for s in settings(quick)):
            images = image_pool(dataset)
            for candidate in candidates(models, dataset):
                cached_pool(dataset, candidate.backbone_key, candidate.backbone, images)
        with ProcessPoolExecutor(jobs) as pool:
            work = [(i, episodes, seed, quick, folder) for i in reversed(indices)]  # largest first
            per_setting = list(pool.map(_setting_rows_in_worker, work))[::-1]
    else:
        per_setting = [setting_rows(i, episodes, seed, quick, folder, log) for i in indices]
    rows = [row for chunk in per_setting for row in chunk]
    if update_cards if update_cards is not None else not quick:
        models = {name: load_model(name, folder) for name in available_models(folder)}
        write_held_out_to_cards(rows, models, folder)
    return rows


def write_held_out_to_cards(rows: list[dict], models: dict, folder=MODELS_DIR) -> None:
    """Record each model's held-out rows (and a reliability diagram) in its model card."""
    for name, model in models.items():
        mine = [r for r in rows if r["model"] == name]
        model.card["held_out"] = [{k: v for k, v in r.items() if k != "reliability"} for r in mine]
        diagrams = [r["reliability"] for r in mine if "reliability" in r and r["kind"] == "shipped"]
        if diagrams:
            model.card["reliability_5way_5shot"] = diagrams[0]
        save_card(name, model.card, folder)
    record_default_in_cards(folder)


def format_table(rows: list[dict]) -> str:
    """A plain-text table grouped by dataset and setting."""
    lines, current = [], None
    header = (
        f"  {'method':38s} {'backbone':12s} {'unlabeled':>9s} {'accuracy (95% CI)':>20s} "
        f"{'ECE':>6s} {'ECE*':>6s} {'ms/task':>8s} {'train s':>8s}"
    )
    for row in rows:
        key = (row["dataset"], row["setting"])
        if key != current:
            current = key
            lines += [
                "",
                f"{row['dataset']} — {row['setting']} — {row['episodes']} episodes",
                header,
            ]
        accuracy = f"{row['accuracy']:.2%} ± {row['ci95']:.2%}"
        recalibrated = row.get("ece_support_calibrated")
        recalibrated = "" if recalibrated is None else f"{recalibrated:.3f}"
        train_s = "" if row.get("train_s") is None else f"{row['train_s']:.0f}"
        lines.append(
            f"  {row['method']:38s} {row['backbone']:12s} {'yes' if row['semi_supervised'] else 'no':>9s} "
            f"{accuracy:>20s} {row['ece']:6.3f} {recalibrated:>6s} {row['ms_per_episode']:8.1f} {train_s:>8s}"
        )
    lines.append(
        "\nECE: the temperature fitted on validation characters for the task's shape (ways x shots). "
        "ECE*: that temperature times the domain factor measured on each task's own support set, "
        "holding out one labeled image per class at a time (what the app and CLI do when every "
        "class has 2+ images; 5-way 5-shot rows without distractors, for the rows the app runs). "
        "ms/task: adaptation + prediction time per task on cached embeddings. "
        "train s: meta-training wall time on this machine's 2 CPU cores. unlabeled: whether the "
        "row uses the unlabeled images (the same episodes either way). What `label` and the app "
        "run by default (the feature source chosen per task) is measured by "
        "`python -m mssl_core crossdomain`."
    )
    return "\n".join(lines).lstrip("\n")
