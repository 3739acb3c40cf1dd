"""An Omniglot-like corpus of handwritten-looking characters, rendered offline.

Each character of the npm package `hanzi-writer-data` (stroke centre-lines, "medians", on a
1024-unit grid) is one class. Every sample is drawn with its own random affine transform,
per-point jitter and pen width, so two samples of a class differ the way two people's
handwriting does. Classes are split into disjoint meta-train / validation / test sets by a
fixed seed (`SPLIT_SEED`), so benchmark classes are never seen in meta-training.
"""

from __future__ import annotations

import json
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from mssl_core.engine.data.paths import cache_dir, npm_modules_dir

SPLIT_SEED = 2018
SPLIT_FRACTIONS = {"train": 0.7, "val": 0.1, "test": 0.2}
IMAGE_SIZE = 28
RENDER_VERSION = 2  # part of the cache name: changing how samples are drawn re-renders them
STROKE_SHIFT = 0.03  # per-stroke displacement (fraction of the image)
STROKE_DROP = 0.04  # chance that a writer leaves out a stroke (characters of 3+ strokes)
_CANVAS = 4 * IMAGE_SIZE  # draw large, then downsample with antialiasing


@dataclass(frozen=True)
class CharacterCorpus:
    """Rendered images `(n_classes, n_per_class, 28, 28)` uint8 (ink is bright) and class names."""

    images: np.ndarray
    characters: list[str]


def character_files() -> list[Path]:
    """All character files of hanzi-writer-data, sorted so the split is reproducible."""
    folder = npm_modules_dir() / "hanzi-writer-data"
    files = sorted(p for p in folder.glob("*.json") if p.name != "package.json")
    if not files:
        raise FileNotFoundError(f"{folder} holds no character data; run scripts/setup.sh first")
    return files


def split_classes(n_classes: int) -> dict[str, np.ndarray]:
    """Disjoint class indices per split, from a fixed seed."""
    order = np.random.default_rng(SPLIT_SEED).permutation(n_classes)
    n_train = int(SPLIT_FRACTIONS["train"] * n_classes)
    n_val = int(SPLIT_FRACTIONS["val"] * n_classes)
    return {
        "train": np.sort(order[:n_train]),
        "val": np.sort(order[n_train : n_train + n_val]),
        "test": np.sort(order[n_train + n_val :]),
    }


def render_character(medians: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """One handwritten-looking sample of a character given its stroke centre-lines: a global
    affine (slant, size, position), then per stroke what differs between writers — where the
    stroke is placed, a wobble along it, and now and then a stroke left out."""
    angle = rng.uniform(-0.3, 0.3)
    scale = rng.uniform(0.7, 1.1, size=2)
    shear = rng.uniform(-0.35, 0.35)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    affine = rotation @ np.array([[1.0, shear], [0.0, 1.0]]) @ np.diag(scale)
    shift = rng.uniform(-0.08, 0.08, size=2)
    pen = rng.uniform(0.045, 0.09) * _CANVAS

    canvas = Image.new("L", (_CANVAS, _CANVAS), 0)
    draw = ImageDraw.Draw(canvas)
    dropped = rng.random(len(medians)) < STROKE_DROP if len(medians) > 2 else np.zeros(len(medians), bool)
    for stroke, drop in zip(medians, dropped, strict=True):
        if drop:
            continue
        # Grid units -> centred unit square, with y flipped (hanzi-writer's y axis points up).
        points = np.stack([stroke[:, 0] / 1024 - 0.5, (900 - stroke[:, 1]) / 1024 - 0.5], axis=1)
        wobble = np.cumsum(rng.normal(0, 0.01, size=points.shape), axis=0)
        points = points + rng.normal(0, STROKE_SHIFT, size=2) + wobble - wobble.mean(0)
        points = points @ affine.T + shift
        pixels = (points + 0.5) * _CANVAS
        draw.line([tuple(p) for p in pixels], fill=255, width=int(pen), joint="curve")
        for end in (pixels[0], pixels[-1]):
            r = pen / 2
            draw.ellipse([end[0] - r, end[1] - r, end[0] + r, end[1] + r], fill=255)
    return np.asarray(canvas.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.LANCZOS))


def _render_class(args: tuple[Path, int, int]) -> np.ndarray:
    path, n_samples, seed = args
    data = json.loads(path.read_text(encoding="utf-8"))
    medians = [np.asarray(m, dtype=np.float64) for m in data["medians"]]
    rng = np.random.default_rng(seed)
    return np.stack([render_character(medians, rng) for _ in range(n_samples)])


def load_characters(split: str, n_per_class: int = 20, workers: int = 2) -> CharacterCorpus:
    """Rendered samples of every class in `split`, cached on disk after the first call."""
    files = character_files()
    classes = split_classes(len(files))[split]
    cache = cache_dir() / f"characters-v{RENDER_VERSION}-{split}-{n_per_class}-seed{SPLIT_SEED}.npz"
    if cache.exists():
        stored = np.load(cache)
        return CharacterCorpus(stored["images"], list(stored["characters"]))
    jobs = [(files[i], n_per_class, SPLIT_SEED * 100_000 + int(i)) for i in classes]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        images = np.stack(list(pool.map(_render_class, jobs, chunksize=64)))
    characters = [files[i].stem for i in classes]
    np.savez(cache, images=images, characters=np.array(characters))
    return CharacterCorpus(images, characters)
