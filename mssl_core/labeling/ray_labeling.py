"""`label --ray ADDRESS|auto|local`: the same labeling, spread over a Ray cluster with Ray Data.

1. The driver lists the files and embeds the support set.
2. Ray Data streams the batch through actors that read, decode and embed 64 files at a time
   (bulk.py, the same code as on one machine); the embeddings stay in the cluster's object
   store, spread over the nodes (and spilled to disk beyond its size), never all on one node.
3. The method adapts on the driver to the support set and `fit_sample` of the batch (all of
   it up to 20,000 images, the same images a single machine would use).
4. The fitted task is broadcast; actors predict every image; the driver writes the CSV as
   the rows stream back, in file order: the same CSV a single machine writes.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mssl_core.engine.backbones import make_backbone
from mssl_core.engine.data.paths import cache_dir
from mssl_core.engine.ssl import SSLOptions
from mssl_core.labeling.adapt import fit_sample, fit_task
from mssl_core.labeling.bulk import embed_files
from mssl_core.labeling.folders import prediction_row, prepare_support, write_csv_header, write_csv_row
from mssl_core.labeling.images import list_files

logger = logging.getLogger(__name__)

BATCH = 64


@dataclass
class ClusterLabeling:
    """What a cluster run did; the rows themselves went straight into the CSV."""

    classes: list[str]
    model_name: str
    backbone_reason: str
    images: int
    failed: int


class _Embedder:
    """A Ray actor: rebuilds the backbone once, then embeds batches of file paths."""

    def __init__(self, backbone_name: str, backbone_state: dict, threads: int):
        torch.set_num_threads(threads)
        self.backbone = make_backbone(backbone_name)
        self.backbone.load_trainable_state(backbone_state)
        self.backbone.eval()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        paths = [Path(p) for p in batch["path"]]
        embedded = embed_files(self.backbone, "", paths, cache=None, log=lambda _: None, workers=1)
        vectors = np.zeros((len(paths), self.backbone.embedding_dim), np.float32)
        readable = np.array([not e for e in embedded.errors], dtype=bool)
        vectors[readable] = embedded.embeddings
        return {**batch, "error": np.array(embedded.errors, dtype=object), "embedding": vectors}


class _Predictor:
    """A Ray actor: holds the fitted task, predicts batches of embeddings."""

    def __init__(self, task, threads: int):
        torch.set_num_threads(threads)
        self.task = task

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        embeddings = torch.from_numpy(np.ascontiguousarray(batch["embedding"]))
        probabilities = self.task.probabilities(embeddings).numpy()
        return {"path": batch["path"], "error": batch["error"], "probabilities": probabilities}


def connect(address: str, threads: int) -> None:
    """Join the Ray cluster at `address` ('auto': the one this machine belongs to; 'local': a
    private one on this machine), shipping this package to its workers."""
    import ray

    if ray.is_initialized():
        return
    env = {"py_modules": [str(Path(__file__).resolve().parent)]}
    if address == "local":  # same disk: reuse the exported ONNX network and rendered corpora
        env["env_vars"] = {"MSSL_CACHE_DIR": str(cache_dir()), "OMP_NUM_THREADS": str(threads)}
    ray.init(
        address=None if address == "local" else address,
        runtime_env=env,
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.WARNING,
    )
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # one line per stage otherwise


def label_folders_on_ray(
    support_dir: Path,
    unlabeled_dir: Path,
    out: Path,
    address: str,
    method: str | None = None,
    backbone: str = "auto",
    folder: Path | None = None,
    log: Callable[[str], None] = logger.warning,
    ssl: SSLOptions | None = None,
    threads_per_actor: int = 2,
) -> ClusterLabeling:
    """label_folders on a Ray cluster. Writes `out` itself as the rows stream back and keeps
    only counts: a cluster's batch need not fit in the driver's memory."""
    import ray

    paths = list_files(unlabeled_dir)
    support = prepare_support(support_dir, method, backbone, folder, log)
    connect(address, threads_per_actor)
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # rows come back in file order
    context.enable_progress_bars = False
    actors = max(1, int(ray.cluster_resources().get("CPU", 1)) // threads_per_actor)
    items = [{"index": i, "path": str(p)} for i, p in enumerate(paths)]
    model = support.model
    embedded = (
        ray.data.from_items(items, override_num_blocks=max(1, min(len(items) // BATCH, 4 * actors)))
        .map_batches(
            _Embedder,
            fn_constructor_args=(model.backbone.name, model.backbone.trainable_state(), threads_per_actor),
            batch_size=BATCH,
            compute=ray.data.ActorPoolStrategy(min_size=1, max_size=actors),
            num_cpus=threads_per_actor,
            batch_format="numpy",
        )
        .materialize()
    )
    errors = [row["error"] for row in embedded.select_columns(["error"]).iter_rows()]
    readable = np.flatnonzero([not e for e in errors])
    chosen = set(readable[fit_sample(len(readable))].tolist())
    with warnings.catch_warnings():  # "use expr": an expression cannot hold 20,000 indices well
        warnings.simplefilter("ignore", UserWarning)
        sample = embedded.filter(lambda row: row["index"] in chosen).select_columns(["embedding"])
    unlabeled = torch.zeros(0, model.backbone.embedding_dim)
    if chosen:
        unlabeled = torch.from_numpy(np.stack([row["embedding"] for row in sample.iter_rows()]))
    task = fit_task(model, support.classes, support.embeddings, support.labels, unlabeled, ssl)
    # (no column selection first: a separate task that would wait for the actors' CPUs)
    predicted = embedded.map_batches(
        _Predictor,
        fn_constructor_args=(task, threads_per_actor),
        batch_size=1024,
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=actors),
        num_cpus=threads_per_actor,
        batch_format="numpy",
    )
    failed = 0
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="", encoding="utf-8") as handle:
        writer = write_csv_header(handle, support.classes)
        for batch in predicted.iter_batches(batch_size=1024, batch_format="numpy"):
            for path, error, proba in zip(batch["path"], batch["error"], batch["probabilities"], strict=True):
                if error:
                    failed += 1
                    log(f"{path}: {error}")
                shown = str(Path(path).relative_to(unlabeled_dir))
                write_csv_row(
                    writer, prediction_row(shown, support.classes, proba, error), len(support.classes)
                )
    return ClusterLabeling(support.classes, model.name, support.reason, len(paths), failed)


def shutdown() -> None:
    """Leave the cluster (and stop a 'local' one)."""
    import ray

    ray.shutdown()
