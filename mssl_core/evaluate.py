"""The held-out benchmark: every shipped method and three baselines over the same episodes.

Character rows use classes never seen in meta-training (the test split); cross-domain rows use
real digits (MNIST) and clothing (Fashion-MNIST), which no model saw at all. Each row reports
mean query accuracy with a 95% confidence interval over episodes and the expected
calibration error (ECE) of the reported confidence.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image
from torch import Tensor

from mssl_core.backbones import PixelBackbone
from mssl_core.checkpoints import MODELS_DIR, available_models, load_model
from mssl_core.data import characters
from mssl_core.data.episodes import EpisodeSpec
from mssl_core.data.real import as_class_pool, load_fashion_mnist, load_mnist
from mssl_core.episodic import run_episodes
from mssl_core.labeling import embed_images
from mssl_core.methods import make_method

SEMI_SUPERVISED = ("softkmeans", "masked-softkmeans")


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


def run_benchmark(
    episodes: int = 600,
    seed: int = 0,
    quick: bool = False,
    folder=MODELS_DIR,
    log: Callable[[str], None] = print,
    update_cards: bool | None = None,
) -> list[dict]:
    """All rows of the benchmark as dicts (see module docstring)."""
    models = {name: load_model(name, folder) for name in available_models(folder)}
    rows: list[dict] = []
    cache: dict[tuple[str, int], Tensor] = {}  # (dataset, backbone) -> embedded pool
    pixels = PixelBackbone()
    for index, setting in enumerate(settings(quick)):
        images = image_pool(setting.dataset)
        n_classes, n_per_class = images.shape[:2]
        episode_seed = seed * 1000 + index
        backbones = sorted({m.backbone.name for m in models.values()})
        if setting.dataset == "characters":
            backbones = [b for b in backbones if b == "conv4"] or backbones
        candidates = [("pixels", pixels, make_method("protonet"), "nearest centroid")]
        for backbone_name in backbones:
            proto = models[f"{backbone_name}-protonet"]
            candidates += [
                (backbone_name, proto.backbone, make_method("logreg"), "logistic regression"),
                (backbone_name, proto.backbone, make_method("label-spreading"), "LabelSpreading"),
            ]
            candidates += [
                (backbone_name, m.backbone, m.method, name)
                for name, m in models.items()
                if m.backbone.name == backbone_name
            ]
        for backbone_name, backbone, method, name in candidates:
            key = (setting.dataset, id(backbone))
            if key not in cache:
                cache[key] = embed_pool(backbone, images)
            pool = cache[key]
            result = run_episodes(method, pool, n_classes, n_per_class, setting.spec, episodes, episode_seed)
            row = {
                "dataset": setting.dataset,
                "setting": setting.label,
                "ways": setting.spec.ways,
                "shots": setting.spec.shots,
                "unlabeled": setting.spec.unlabeled,
                "distractors": setting.spec.distractors,
                "episodes": episodes,
                "seed": episode_seed,
                "method": name,
                "backbone": backbone_name,
                "semi_supervised": getattr(method, "uses_unlabeled", False),
                "accuracy": round(result.mean, 4),
                "ci95": round(result.ci95, 4),
                "ece": round(result.ece, 4),
                "ece_support_calibrated": None
                if result.task_calibrated_ece is None
                else round(result.task_calibrated_ece, 4),
                "ms_per_episode": round(result.seconds_per_episode * 1000, 2),
            }
            if setting.spec.shots == 5 and setting.spec.ways == 5 and not setting.spec.distractors:
                row["reliability"] = result.reliability()
            rows.append(row)
            log(
                f"{setting.dataset:13s} {setting.label:52s} {name:26s} "
                f"{row['accuracy']:.2%} ± {row['ci95']:.2%}  ECE {row['ece']:.3f}"
            )
    if update_cards if update_cards is not None else not quick:
        write_held_out_to_cards(rows, models, folder)
    return rows


def write_held_out_to_cards(rows: list[dict], models: dict, folder=MODELS_DIR) -> None:
    """Record each model's held-out rows (and a reliability diagram) in its model card."""
    for name, model in models.items():
        mine = [r for r in rows if r["method"] == name]
        model.card["held_out"] = [{k: v for k, v in r.items() if k != "reliability"} for r in mine]
        diagrams = [r["reliability"] for r in mine if "reliability" in r]
        if diagrams:
            model.card["reliability_5way_5shot"] = diagrams[0]
        (folder / f"{name}.json").write_text(json.dumps(model.card, indent=2, ensure_ascii=False))


def format_table(rows: list[dict]) -> str:
    """A plain-text table grouped by dataset and setting."""
    lines, current = [], None
    header = (
        f"  {'method':30s} {'backbone':12s} {'accuracy (95% CI)':>20s} {'ECE':>7s} {'ECE*':>7s} {'ms/task':>8s}"
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
        lines.append(
            f"  {row['method']:30s} {row['backbone']:12s} {accuracy:>20s} "
            f"{row['ece']:7.3f} {recalibrated:>7s} {row['ms_per_episode']:8.1f}"
        )
    lines.append(
        "\nECE: temperature fitted on validation characters. ECE*: temperature refitted on each "
        "task's own support set by leave-one-out (what the app and CLI do when every class has 2+ "
        "images). ms/task: adaptation + prediction time per task on cached embeddings."
    )
    return "\n".join(lines).lstrip("\n")
