"""Embeddings cached by (model fingerprint, image content hash) in SQLite, so no image is ever
embedded twice by the same model, across runs, projects and app sessions."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from mssl_core.backbones import Backbone
from mssl_core.labeling import embed_images


class EmbeddingCache:
    """A key-value store: (model, sha256) -> float32 vector."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, timeout=30, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS embeddings ("
            "model TEXT, sha256 TEXT, vector BLOB, PRIMARY KEY (model, sha256))"
        )

    def get_many(self, model: str, hashes: Sequence[str]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        for start in range(0, len(hashes), 500):
            chunk = list(hashes[start : start + 500])
            marks = ",".join("?" * len(chunk))
            rows = self.db.execute(
                f"SELECT sha256, vector FROM embeddings WHERE model = ? AND sha256 IN ({marks})",
                [model, *chunk],
            )
            found.update({sha: np.frombuffer(blob, dtype=np.float32) for sha, blob in rows})
        return found

    def put_many(self, model: str, vectors: dict[str, np.ndarray]) -> None:
        with self.db:
            self.db.executemany(
                "INSERT OR REPLACE INTO embeddings VALUES (?,?,?)",
                [(model, sha, v.astype(np.float32).tobytes()) for sha, v in vectors.items()],
            )

    def delete_hashes(self, hashes: Sequence[str]) -> None:
        with self.db:
            self.db.executemany("DELETE FROM embeddings WHERE sha256 = ?", [(h,) for h in hashes])


def embed_cached(
    backbone: Backbone,
    model_key: str,
    hashes: Sequence[str],
    load: Callable[[str], Image.Image],
    cache: EmbeddingCache,
    progress: Callable[[float], None] | None = None,
    batch_size: int = 64,
) -> np.ndarray:
    """Embeddings for images given by hash, computing (and caching) only the missing ones."""
    known = cache.get_many(model_key, hashes)
    missing = [h for h in dict.fromkeys(hashes) if h not in known]
    for start in range(0, len(missing), batch_size):
        chunk = missing[start : start + batch_size]
        vectors = embed_images(backbone, [load(h) for h in chunk]).numpy()
        fresh = dict(zip(chunk, vectors, strict=True))
        cache.put_many(model_key, fresh)
        known.update(fresh)
        if progress:
            progress(min(1.0, (start + len(chunk)) / len(missing)))
    return np.stack([known[h] for h in hashes]) if hashes else np.zeros((0, 0), np.float32)
