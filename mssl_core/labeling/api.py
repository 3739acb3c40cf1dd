"""The Python API: label a folder, or images already in memory, with the defaults of the CLI's
`label` (the best measured method, image features chosen automatically, each method's own use
of the unlabeled images)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image

from mssl_core.engine.backbones import embed_images
from mssl_core.engine.checkpoints import MODELS_DIR
from mssl_core.engine.ssl import SSLOptions
from mssl_core.labeling.embedding_cache import EmbeddingCache
from mssl_core.labeling.folders import LabelingResult, embed_support, label_folders, predict_embedded
from mssl_core.labeling.images import normalise_image


def label_folder(
    support: str | Path,
    unlabeled: str | Path,
    *,
    method: str | None = None,
    features: str = "auto",
    ssl: SSLOptions | None = None,
    cache: str | Path | None = None,
    models: str | Path = MODELS_DIR,
) -> LabelingResult:
    """Pseudo-label every image file under `unlabeled` from `support`, which holds one
    sub-folder of images per class. Unreadable files get a row with the reason (and a logged
    warning); the rest goes on. `cache`: an SQLite file that keeps embeddings between runs."""
    return label_folders(
        Path(support),
        Path(unlabeled),
        method=method,
        backbone=features,
        folder=Path(models),
        ssl=ssl,
        cache=None if cache is None else EmbeddingCache(Path(cache)),
    )


def label_images(
    support_images: Sequence[Image.Image],
    support_labels: Sequence[str],
    images: Sequence[Image.Image],
    *,
    method: str | None = None,
    features: str = "auto",
    ssl: SSLOptions | None = None,
    models: str | Path = MODELS_DIR,
) -> LabelingResult:
    """Pseudo-label PIL `images` from labeled PIL images (`support_labels[i]` is the class of
    `support_images[i]`). The result's rows are in the order of `images`, named by index."""
    if len(support_images) != len(support_labels):
        raise ValueError(f"{len(support_images)} labeled images but {len(support_labels)} labels")
    task_support = embed_support(
        [normalise_image(image) for image in support_images],
        list(support_labels),
        method,
        features,
        Path(models),
    )
    unlabeled = embed_images(task_support.model.backbone, [normalise_image(image) for image in images])
    if not images:
        unlabeled = torch.zeros(0, task_support.embeddings.shape[1])
    return predict_embedded(
        task_support, unlabeled, [str(i) for i in range(len(images))], [""] * len(images), ssl
    )
