"""Real image sets that exist offline, used for cross-domain benchmarks (never for meta-training)."""

from __future__ import annotations

import gzip
import json

import numpy as np
from sklearn.datasets import load_digits as _sklearn_digits

from mssl_core.engine.data.paths import FASHION_MNIST_DIR, npm_modules_dir

FASHION_MNIST_CLASSES = [
    "t-shirt", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle-boot",
]  # fmt: skip


def load_mnist() -> tuple[np.ndarray, np.ndarray]:
    """10,000 MNIST digits from npm `mnist@1.1.0`: uint8 images (n, 28, 28), int labels."""
    folder = npm_modules_dir() / "mnist" / "src" / "digits"
    images, labels = [], []
    for digit in range(10):
        raw = np.asarray(json.loads((folder / f"{digit}.json").read_text())["data"], dtype=np.float32)
        digit_images = (raw.reshape(-1, 28, 28) * 255).round().astype(np.uint8)
        images.append(digit_images)
        labels.append(np.full(len(digit_images), digit))
    return np.concatenate(images), np.concatenate(labels)


def _read_idx(path) -> np.ndarray:
    with gzip.open(path, "rb") as handle:
        data = handle.read()
    n_dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(n_dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * n_dims).reshape(shape)


def load_fashion_mnist() -> tuple[np.ndarray, np.ndarray]:
    """The 10,000 Fashion-MNIST test images from Debian's `dataset-fashion-mnist`."""
    images = _read_idx(FASHION_MNIST_DIR / "t10k-images-idx3-ubyte.gz")
    labels = _read_idx(FASHION_MNIST_DIR / "t10k-labels-idx1-ubyte.gz").astype(np.int64)
    return images, labels


def load_sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 8x8 digits, scaled to uint8."""
    digits = _sklearn_digits()
    return (digits.images * (255 / 16)).round().astype(np.uint8), digits.target.astype(np.int64)


def as_class_pool(images: np.ndarray, labels: np.ndarray, n_per_class: int) -> np.ndarray:
    """Group a labeled set into `(n_classes, n_per_class, ...)`, the layout the episode sampler reads."""
    classes = np.unique(labels)
    return np.stack([images[labels == c][:n_per_class] for c in classes])
