"""Embeddings cached by (model fingerprint, image content hash) in SQLite, so no image is ever
embedded twice by the same model, across runs, projects and app sessions (bulk.py reads and
writes it)."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path

import numpy as np


class CacheError(RuntimeError):
    """The cache could not be written (disk full, read-only folder); the message is for the user."""


class EmbeddingCache:
    """A key-value store: (model, sha256) -> float32 vector."""

    def __init__(self, path: Path):
        self.path = path
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
        """Store vectors; a full disk or read-only folder is a CacheError saying so (the work
        goes on without the cache's help: nothing the user decided lives here)."""
        try:
            with self.db:
                self.db.executemany(
                    "INSERT OR REPLACE INTO embeddings VALUES (?,?,?)",
                    [(model, sha, v.astype(np.float32).tobytes()) for sha, v in vectors.items()],
                )
        except (sqlite3.OperationalError, OSError) as error:
            raise CacheError(
                f"Could not save embeddings to the cache {self.path}: {error}. Free space or fix the "
                "folder; nothing you decided was affected."
            ) from None

    def delete_hashes(self, hashes: Sequence[str]) -> None:
        with self.db:
            self.db.executemany("DELETE FROM embeddings WHERE sha256 = ?", [(h,) for h in hashes])
