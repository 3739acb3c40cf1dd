"""Episodic meta-training (Snell et al. 2017; Ren et al. 2018): every step samples a task from
the meta-train character classes (with unlabeled images and distractor classes inside it),
runs the method's own `fit` / `logits` on the backbone's embeddings, and backpropagates the
query loss into the backbone and the method. Afterwards a temperature is fitted on the
meta-validation classes and the model is saved with its model card."""

from __future__ import annotations

import logging
import platform
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import Tensor

from mssl_core.engine.backbones import Backbone, MobileNetV2Backbone, make_backbone
from mssl_core.engine.calibration import SHOTS_GRID, WAYS_GRID, fit_temperature
from mssl_core.engine.checkpoints import MODELS_DIR, Model, load_model, save_model
from mssl_core.engine.data import characters, photo_tasks
from mssl_core.engine.data.episodes import EpisodeSampler, EpisodeSpec
from mssl_core.engine.data.paths import cache_dir
from mssl_core.engine.episodic import episode_tensors, run_episodes
from mssl_core.engine.methods import make_method

logger = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Everything that determines a shipped checkpoint (recorded in its model card)."""

    backbone: str = "conv4"
    method: str = "softkmeans"
    episodes: int = 2000
    ways: int = 10
    shots: tuple[int, ...] = (1, 5)
    unlabeled: int = 5
    distractors: int = 3
    queries: int = 5
    learning_rate: float = 1e-3
    head_penalty: float = 1.0  # MobileNetV2: weight of GeometryKeepingHead.penalty() in the loss
    calibration_episodes: int = 100  # validation tasks per task shape and distractor count
    seed: int = 0
    train_classes_for_head: int = 250  # MobileNetV2: classes whose frozen features are cached
    images_per_class_for_head: int = 16
    # MobileNetV2: the share of episodes drawn from augmented photo regions (data/photo_tasks.py)
    # instead of characters; 0 keeps meta-training on characters alone
    photo_task_share: float = 0.0

    @property
    def name(self) -> str:
        return f"{self.backbone}-{self.method}"


def _flat_pool(images: np.ndarray, backbone: Backbone) -> Tensor:
    n_classes, n_per_class = images.shape[:2]
    return backbone.preprocess_arrays(images.reshape(n_classes * n_per_class, *images.shape[2:]))


def frozen_feature_pool(backbone: MobileNetV2Backbone, split: str, n_classes: int, n_per_class: int):
    """MobileNetV2 features of the first classes of a split, cached on disk (they never change)."""
    name = (
        f"mobilenetv2-{backbone.image_size}-v{characters.RENDER_VERSION}-{split}-{n_classes}x{n_per_class}.pt"
    )
    path = cache_dir() / name
    if path.exists():
        return torch.load(path, weights_only=True)
    corpus = characters.load_characters(split, 20 if split == "train" else 40)
    images = corpus.images[:n_classes, :n_per_class]
    features = _frozen_features(backbone, images.reshape(-1, *images.shape[2:]))
    torch.save(features, path)
    return features


def _frozen_features(backbone: MobileNetV2Backbone, images: np.ndarray) -> Tensor:
    """The frozen ImageNet features of uint8 images, 64 at a time."""
    chunks = np.array_split(images, max(1, len(images) // 64))
    return torch.cat([backbone.frozen_features(backbone.preprocess_arrays(chunk)) for chunk in chunks])


def photo_feature_pool(backbone: MobileNetV2Backbone) -> tuple[Tensor, int, int]:
    """MobileNetV2 features of the augmented photo regions (photo_tasks.py), cached on disk."""
    path = cache_dir() / f"mobilenetv2-{backbone.image_size}-photo-tasks-v{photo_tasks.VERSION}.pt"
    if not path.exists():
        views = photo_tasks.photo_task_pool()
        features = _frozen_features(backbone, views.reshape(-1, *views.shape[2:]))
        torch.save(features.reshape(*views.shape[:2], -1), path)
    features = torch.load(path, weights_only=True)
    return features.flatten(0, 1), features.shape[0], features.shape[1]


def embedding_pools(backbone: Backbone, split: str, cfg: TrainConfig) -> tuple[Tensor, int, int]:
    """The pool that episodes index: images for trainable backbones, frozen features for MobileNetV2."""
    if isinstance(backbone, MobileNetV2Backbone):
        n_classes = cfg.train_classes_for_head if split == "train" else cfg.train_classes_for_head // 5
        n_per_class = cfg.images_per_class_for_head if split == "train" else 40
        return frozen_feature_pool(backbone, split, n_classes, n_per_class), n_classes, n_per_class
    corpus = characters.load_characters(split, 20 if split == "train" else 40)
    n_classes, n_per_class = corpus.images.shape[:2]
    return _flat_pool(corpus.images, backbone), n_classes, n_per_class


def _embed_episode_pool(backbone: Backbone, pool: Tensor) -> Tensor:
    """Embeddings of a whole pool in evaluation mode."""
    if isinstance(backbone, MobileNetV2Backbone):
        with torch.no_grad():
            return backbone.head(pool)
    return backbone.embed(pool)


def _trainable_forward(backbone: Backbone, batch: Tensor) -> Tensor:
    return backbone.head(batch) if isinstance(backbone, MobileNetV2Backbone) else backbone(batch)


def _samplers(n_classes: int, n_per_class: int, cfg: TrainConfig, seed: int) -> list[EpisodeSampler]:
    """One episode sampler per shot count of the configuration."""
    return [
        EpisodeSampler(
            n_classes,
            n_per_class,
            EpisodeSpec(cfg.ways, shots, cfg.unlabeled, cfg.distractors, cfg.queries),
            seed=seed + shots,
        )
        for shots in cfg.shots
    ]


def meta_train(cfg: TrainConfig, log=logger.info) -> Model:
    """Meta-train one backbone + method, fit its temperature on validation classes, return it."""
    if cfg.photo_task_share > 0 and cfg.backbone != MobileNetV2Backbone.name:
        raise ValueError(f"photo tasks train the MobileNetV2 head; {cfg.backbone!r} has none")
    torch.manual_seed(cfg.seed)
    started = time.perf_counter()
    backbone = make_backbone(cfg.backbone)
    method = make_method(cfg.method, embedding_dim=backbone.embedding_dim)
    pool, n_classes, n_per_class = embedding_pools(backbone, "train", cfg)
    samplers = _samplers(n_classes, n_per_class, cfg, seed=cfg.seed * 1000)
    photo_pool, photo_samplers = None, []
    if cfg.photo_task_share > 0:
        photo_pool, n_photo_classes, n_views = photo_feature_pool(backbone)
        photo_samplers = _samplers(n_photo_classes, n_views, cfg, seed=cfg.seed * 1000 + 500)
    choose_photo = np.random.default_rng(cfg.seed).random(cfg.episodes) < cfg.photo_task_share
    parameters = [p for p in list(backbone.parameters()) + list(method.parameters()) if p.requires_grad]
    optimiser = torch.optim.Adam(parameters, lr=cfg.learning_rate)
    schedule = torch.optim.lr_scheduler.StepLR(optimiser, step_size=max(1, cfg.episodes // 4), gamma=0.5)
    backbone.train()
    method.train()
    running = []
    for step in range(cfg.episodes):
        from_photos = bool(choose_photo[step])
        episode = (photo_samplers if from_photos else samplers)[step % len(samplers)].sample()
        index = np.concatenate([episode.support, episode.unlabeled, episode.query])
        embeddings = _trainable_forward(backbone, (photo_pool if from_photos else pool)[index])
        n_s, n_u = len(episode.support), len(episode.unlabeled)
        support, unlabeled, query = (
            embeddings[:n_s],
            embeddings[n_s : n_s + n_u],
            embeddings[n_s + n_u :],
        )
        method.fit(support, torch.from_numpy(episode.support_labels), unlabeled if n_u else None)
        loss = method.meta_loss(query, torch.from_numpy(episode.query_labels))
        if isinstance(backbone, MobileNetV2Backbone):
            loss = loss + cfg.head_penalty * backbone.head.penalty()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        running.append(loss.item())
        if (step + 1) % 200 == 0:
            log(
                f"{cfg.name} episode {step + 1}/{cfg.episodes} loss {np.mean(running[-200:]):.3f} "
                f"({time.perf_counter() - started:.0f}s)"
            )
    backbone.eval()
    method.eval()
    temperatures, validation = calibrate(backbone, method, cfg)
    card = {
        "name": cfg.name,
        "backbone": cfg.backbone,
        "method": cfg.method,
        "data": "rendered hanzi-writer-data characters (mssl_core/engine/data/characters.py)"
        + (
            f"; {cfg.photo_task_share:.0%} of episodes from augmented regions of unlabeled photos "
            f"(mssl_core/engine/data/photo_tasks.py: {len(photo_tasks.photo_paths())} photos)"
            if photo_pool is not None
            else ""
        ),
        "split": {
            "seed": characters.SPLIT_SEED,
            "fractions": characters.SPLIT_FRACTIONS,
            "meta_train_classes": n_classes,
            "images_per_class": n_per_class,
        },
        "training": asdict(cfg),
        "temperatures": temperatures,
        "validation": validation,
        "wall_time_s": round(time.perf_counter() - started, 1),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
    }
    return Model(cfg.name, backbone, method, card)


def calibrate(backbone: Backbone, method, cfg: TrainConfig) -> tuple[dict, dict]:
    """Fit one temperature per task shape of the grid on meta-validation classes (never test
    classes), with and without distractors; report validation accuracy and calibration."""
    pool, n_classes, n_per_class = embedding_pools(backbone, "val", cfg)
    embedded = _embed_episode_pool(backbone, pool)
    table = torch.ones(len(SHOTS_GRID), len(WAYS_GRID))
    for i, shots in enumerate(SHOTS_GRID):
        for j, ways in enumerate(WAYS_GRID):
            logits, labels = [], []
            for distractors in (0, 5):
                spec = EpisodeSpec(ways, shots, 20, distractors, 10)
                sampler = EpisodeSampler(
                    n_classes, n_per_class, spec, seed=7 + 100 * ways + 10 * shots + distractors
                )
                with torch.no_grad():
                    for _ in range(cfg.calibration_episodes):
                        episode = sampler.sample()
                        support, support_labels, unlabeled, query = episode_tensors(embedded, episode)
                        method.fit(support, support_labels, unlabeled)
                        logits.append(method.logits(query))
                        labels.append(torch.from_numpy(episode.query_labels))
            table[i, j] = fit_temperature(torch.cat(logits), torch.cat(labels))
    method.temperatures.copy_(table)
    validation = {}
    for ways, shots in ((5, 1), (5, 5), (20, 5)):
        spec = EpisodeSpec(ways, shots, 20, 0, 15)
        result = run_episodes(
            method, embedded, n_classes, n_per_class, spec, 300, seed=99, task_calibration=False
        )
        validation[f"{ways}-way {shots}-shot, 20 unlabeled"] = {
            "accuracy": round(result.mean, 4),
            "ci95": round(result.ci95, 4),
            "ece": round(result.ece, 4),
            "episodes": 300,
        }
    temperatures = {
        "shots": list(SHOTS_GRID),
        "ways": list(WAYS_GRID),
        "table": [[round(float(t), 4) for t in row] for row in table],
    }
    return temperatures, validation


def recalibrate(name: str, folder=MODELS_DIR, log=logger.info) -> Model:
    """Re-fit a saved model's temperatures on validation classes, its weights untouched (what
    `meta_train` ends with), and save it again."""
    model = load_model(name, folder)
    training = model.card["training"]
    cfg = TrainConfig(**{**training, "shots": tuple(training["shots"])})
    model.card.pop("temperature", None)
    model.card["training"] = asdict(cfg)
    model.card["temperatures"], model.card["validation"] = calibrate(model.backbone, model.method, cfg)
    path = save_model(model, folder)
    log(f"recalibrated {path}: {model.card['validation']}")
    return model


SHIPPED_METHODS = (
    "protonet",
    "softkmeans",
    "masked-softkmeans",
    "matching",
    "siamese",
    "propagation",
    "memory",
    "maml",
)
SHIPPED = [TrainConfig(backbone, method) for backbone in ("conv4", "mobilenetv2") for method in SHIPPED_METHODS]


def train_and_save(cfg: TrainConfig, folder=MODELS_DIR, log=logger.info) -> Model:
    model = meta_train(cfg, log=log)
    path = save_model(model, folder)
    log(f"saved {path} ({path.stat().st_size / 1e6:.2f} MB): {model.card['validation']}")
    return model
