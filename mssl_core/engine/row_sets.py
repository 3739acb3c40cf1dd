"""Work that depends only on a set of rows (embeddings), remembered for the same set in another order.

In review, a decision moves one image from the batch to the labeled rows: the next fit sees the
same embeddings, reordered and relabeled. What depends on the set alone (each node's nearest
neighbours, the task-centred features) is kept for the last few sets and re-indexed instead of
computed again. Rows are recognised by an exact fingerprint of their bytes.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict

import numpy as np
from torch import Tensor

SMALLEST = 1000  # smaller sets are recomputed: cheap, and leave-one-out refits stay out


def row_fingerprints(rows: Tensor) -> np.ndarray:
    """A 64-bit fingerprint per row, equal for bitwise-equal rows: a random linear hash of the
    row's 32-bit words in exact integer arithmetic (so independent of the row's position)."""
    words = np.ascontiguousarray(rows.detach().float().numpy()).view(np.uint32).astype(np.uint64)
    multipliers = np.random.default_rng(len(words[0]) if len(words) else 0).integers(
        1, 2**63, size=words.shape[1], dtype=np.uint64
    )
    return (words * (multipliers | np.uint64(1))).sum(1, dtype=np.uint64)


def to_old_order(old: np.ndarray, new: np.ndarray) -> np.ndarray:
    """For each row of a new order, its index in the old one (`old`, `new`: fingerprints of the
    same rows; bitwise-equal rows may stand for each other)."""
    to_old = np.empty(len(new), dtype=np.int64)
    to_old[np.argsort(new, kind="stable")] = np.argsort(old, kind="stable")
    return to_old


class RowSetMemory:
    """Values computed for the last `capacity` row sets, each under a tag saying what was
    computed and how; the least recently used are forgotten first."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._values: OrderedDict[str, tuple[np.ndarray, object]] = OrderedDict()
        self._lock = threading.Lock()  # app sessions run in threads and share this memory

    @staticmethod
    def _key(tag: str, fingerprints: np.ndarray) -> str:
        return f"{tag}:" + hashlib.sha1(np.sort(fingerprints).tobytes()).hexdigest()

    def get(self, tag: str, fingerprints: np.ndarray) -> tuple[object, np.ndarray] | None:
        """The value remembered for these rows, and the fingerprints of the order it was
        computed in (see `to_old_order`); None if not remembered."""
        key = self._key(tag, fingerprints)
        with self._lock:
            found = self._values.get(key)
            if found is not None:
                self._values.move_to_end(key)
        return None if found is None else (found[1], found[0])

    def put(self, tag: str, fingerprints: np.ndarray, value: object) -> None:
        """Remember `value` for the rows of `fingerprints`, in that order."""
        with self._lock:
            self._values[self._key(tag, fingerprints)] = (fingerprints, value)
            while len(self._values) > self.capacity:
                self._values.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._values.clear()

    def __len__(self) -> int:
        return len(self._values)
