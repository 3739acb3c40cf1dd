"""`python -m mssl_core bench`: how fast the engine is on this machine, as a table (or JSON);
`scripts/bench_app.py` times the app the same way.

Every figure is the median of `repeats` runs. End-to-end runs and re-adaptations each run in a
fresh process, so their peak resident memory (RSS) is their own. The photos are synthetic
224 x 224 JPEGs (shapes on textured backgrounds, made once into the cache folder) so that the
benchmark needs no data and decodes what a camera would give.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import resource
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from mssl_core.engine.data.paths import cache_dir

logger = logging.getLogger(__name__)

PHOTO_CLASSES = ("disc", "square", "triangle", "stripes", "ring")
LABEL_SIZES = (100, 1_000, 10_000)
READAPT_SIZES = (1_000, 10_000, 100_000)


def draw_photo(kind: str, rng: np.random.Generator, size: int = 224) -> Image.Image:
    """A colour photo-like image: a shape of one kind on a noisy two-colour gradient."""
    top, bottom = rng.integers(0, 256, (2, 3))
    ramp = np.linspace(0, 1, size)[:, None, None]
    background = (top * (1 - ramp) + bottom * ramp).repeat(size, axis=1)
    pixels = np.clip(background + rng.normal(0, 12, (size, size, 3)), 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels)
    draw = ImageDraw.Draw(image)
    colour = tuple(int(c) for c in rng.integers(0, 256, 3))
    r = rng.uniform(0.2, 0.35) * size
    cx, cy = rng.uniform(0.35, 0.65, 2) * size
    box = [cx - r, cy - r, cx + r, cy + r]
    if kind == "disc":
        draw.ellipse(box, fill=colour)
    elif kind == "square":
        draw.rectangle(box, fill=colour)
    elif kind == "triangle":
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)
    elif kind == "stripes":
        for offset in range(-3, 4, 2):
            x = cx + offset * r / 3.5
            draw.rectangle([x - r / 8, cy - r, x + r / 8, cy + r], fill=colour)
    else:
        draw.ellipse(box, outline=colour, width=int(r / 4))
    return image


def photo_folders(unlabeled: int, shots: int = 5, seed: int = 0) -> tuple[Path, Path]:
    """support/<kind>/*.jpg (`shots` per kind) and a folder of `unlabeled` photos, made once
    into the cache folder and reused."""
    root = cache_dir() / "bench" / f"photos-{unlabeled}-{shots}shot-seed{seed}"
    support, batch = root / "support", root / "unlabeled"
    if (root / "complete").exists():
        return support, batch
    rng = np.random.default_rng(seed)
    for kind in PHOTO_CLASSES:
        (support / kind).mkdir(parents=True, exist_ok=True)
        for i in range(shots):
            draw_photo(kind, rng).save(support / kind / f"{i}.jpg", quality=90)
    for i in range(unlabeled):
        folder = batch / f"{i // 1000:03d}"  # a thousand per folder, as archives are laid out
        folder.mkdir(parents=True, exist_ok=True)
        draw_photo(PHOTO_CLASSES[i % len(PHOTO_CLASSES)], rng).save(folder / f"{i:06d}.jpg", quality=90)
    (root / "complete").touch()
    return support, batch


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def in_fresh_process(function: Callable, *args) -> dict:
    """Run `function(*args)` in a new process: its own peak memory, nothing warm from before."""
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        return pool.apply(function, args)


def _label_run(unlabeled: int, cached: bool, threads: int) -> dict:
    from mssl_core.labeling.embedding_cache import EmbeddingCache
    from mssl_core.labeling.folders import label_folders, write_predictions_csv

    torch.set_num_threads(threads)
    support, batch = photo_folders(unlabeled)
    with tempfile.TemporaryDirectory() as scratch:
        cache = EmbeddingCache(cache_dir() / "bench" / f"embeddings-{unlabeled}.sqlite") if cached else None
        started = time.perf_counter()
        result = label_folders(support, batch, log=lambda _: None, cache=cache)  # the defaults
        before_csv = time.perf_counter()
        write_predictions_csv(result, Path(scratch) / "predictions.csv")
        finished = time.perf_counter()
    total = finished - started
    accuracy = np.mean([row.label == PHOTO_CLASSES[int(Path(row.path).stem) % 5] for row in result.rows])
    return {
        **result.seconds,
        "csv": finished - before_csv,
        "total": total,
        "images_per_s": unlabeled / total,
        "peak_rss_mb": peak_rss_mb(),
        "accuracy": float(accuracy),
        "model_name": result.model_name,
    }


def _readapt_run(size: int, method: str, repeats: int, threads: int) -> dict:
    """Adapt once to `size` cached embeddings (5-way 5-shot), then time re-adaptations, each
    after one more image was corrected, through the app's own review step (`adapt_batch`)."""
    from mssl_core.labeling.adapt import FEATURE_SOURCES, model_for
    from mssl_core.project.pseudo_label import UNDECIDED, adapt_batch

    torch.set_num_threads(threads)
    model = model_for(method, FEATURE_SOURCES[0])  # the default features
    generator = torch.Generator().manual_seed(size)
    dim = model.backbone.embedding_dim
    centres = torch.randn(5, dim, generator=generator) * 0.6
    truth = torch.arange(5).repeat(size // 5 + 1)[:size]
    batch = centres[truth] + torch.randn(size, dim, generator=generator) * 0.5
    support = centres.repeat_interleave(5, 0) + torch.randn(25, dim, generator=generator) * 0.5
    labels = torch.arange(5).repeat_interleave(5)
    classes = list(PHOTO_CLASSES)
    started = time.perf_counter()
    adapt_batch(model, classes, support, labels, batch, np.full(size, UNDECIDED))
    first = time.perf_counter() - started
    times = []
    for corrected in range(1, repeats + 1):
        decided_labels = np.where(np.arange(size) < corrected, truth.numpy(), UNDECIDED)
        started = time.perf_counter()
        adapt_batch(model, classes, support, labels, batch, decided_labels)
        times.append(time.perf_counter() - started)
    return {"first_s": first, "readapt_s": statistics.median(times), "peak_rss_mb": peak_rss_mb()}


def embedding_throughput(repeats: int, threads: int) -> list[dict]:
    """Images per second through each backbone and inference path, batches of 64."""
    from mssl_core.engine.backbones import make_backbone

    torch.set_num_threads(threads)
    rows = []
    paths = {"conv4": [("torch", None)], "mobilenetv2": [("onnxruntime", "onnxruntime"), ("torch", "torch")]}
    for name, options in paths.items():
        backbone = make_backbone(name).eval()
        side = backbone.image_size
        channels = 3 if name == "mobilenetv2" else 1
        batch = torch.rand(64, channels, side, side)
        for path, setting in options:
            previous = os.environ.get("MSSL_INFERENCE")
            if setting:
                os.environ["MSSL_INFERENCE"] = setting
            try:
                backbone.embed(batch)  # warm-up (and the one-off ONNX export)
                rates = []
                for _ in range(repeats):
                    started = time.perf_counter()
                    backbone.embed(batch)
                    rates.append(len(batch) / (time.perf_counter() - started))
            finally:
                if previous is None:
                    os.environ.pop("MSSL_INFERENCE", None)
                else:
                    os.environ["MSSL_INFERENCE"] = previous
            rows.append(
                {
                    "backbone": name,
                    "input": f"{side} px",
                    "path": path,
                    "images_per_s": statistics.median(rates),
                }
            )
    return rows


def run_bench(
    label_sizes: tuple[int, ...] = LABEL_SIZES,
    readapt_sizes: tuple[int, ...] = READAPT_SIZES,
    repeats: int = 3,
    threads: int = 2,
    log: Callable[[str], None] = logger.info,
) -> dict:
    """Every measurement of the benchmark, as one JSON-ready dict."""
    from mssl_core.engine.model_cards import default_method

    method = default_method()
    log("embedding throughput…")
    results: dict = {"threads": threads, "repeats": repeats, "method": method}
    results["embedding"] = in_fresh_process(embedding_throughput, repeats, threads)
    results["label"] = []
    for size in label_sizes:
        for cached in (False, True) if size == 1_000 else (False,):
            log(f"label {size:,} photos{' (embeddings cached)' if cached else ''}…")
            photo_folders(size)  # made once, outside the timing
            if cached:  # a first run fills the cache
                in_fresh_process(_label_run, size, True, threads)
            runs = [in_fresh_process(_label_run, size, cached, threads) for _ in range(repeats)]
            results["label"].append({"images": size, "cached": cached, **median_of(runs)})
    results["readapt"] = []
    for size in readapt_sizes:
        log(f"re-adaptation at {size:,} embeddings…")
        results["readapt"].append(
            {"embeddings": size, **in_fresh_process(_readapt_run, size, method, max(repeats, 5), threads)}
        )
    return results


def median_of(runs: list[dict]) -> dict:
    """Per key, the median over runs of numbers (and the first run's value for anything else)."""
    return {
        key: statistics.median(run[key] for run in runs) if isinstance(value, int | float) else value
        for key, value in runs[0].items()
    }


def format_bench(results: dict) -> str:
    """The benchmark as plain-text tables."""
    lines = [
        f"Median of {results['repeats']} runs, {results['threads']} threads; method {results['method']}.",
        "",
        "Embedding throughput (batches of 64)",
        f"{'backbone':<12} {'input':<7} {'path':<12} {'images/s':>9}",
    ]
    for row in results["embedding"]:
        lines.append(f"{row['backbone']:<12} {row['input']:<7} {row['path']:<12} {row['images_per_s']:>9.1f}")
    lines += [
        "",
        "label end to end: 224 px JPEG photos, MobileNetV2, 5 classes x 5 labeled (seconds)",
        f"{'images':>8} {'cached':<7} {'total':>7} {'model*':>7} {'decode*':>8} {'embed':>7}"
        f" {'adapt':>7} {'csv':>6} {'images/s':>9} {'peak RSS':>9} {'accuracy':>9}",
    ]
    for row in results["label"]:
        lines.append(
            f"{row['images']:>8,} {'yes' if row['cached'] else 'no':<7} {row['total']:>7.2f}"
            f" {row['model']:>7.2f} {row['decode']:>8.2f} {row['embed']:>7.2f} {row['adapt']:>7.3f}"
            f" {row['csv']:>6.3f}"
            f" {row['images_per_s']:>9.1f} {row['peak_rss_mb']:>6.0f} MB {row['accuracy']:>9.1%}"
        )
    lines += [
        "* model: load the checkpoint and embed the labeled images; decode: read + hash + decode +"
        " resize, summed over the worker threads (overlaps embed)",
        "",
        f"Re-adaptation after one correction ({results['method']}, 5-way 5-shot, cached embeddings)",
        f"{'embeddings':>10} {'first adapt':>12} {'after a correction':>19} {'peak RSS':>9}",
    ]
    for row in results["readapt"]:
        lines.append(
            f"{row['embeddings']:>10,} {row['first_s']:>10.3f} s {row['readapt_s']:>17.3f} s"
            f" {row['peak_rss_mb']:>6.0f} MB"
        )
    return "\n".join(lines)
