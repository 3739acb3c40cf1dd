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
# rows hashed at a time: their products stay in the cache (10,000 rows of 1,856 values: 0.04 s,
# against 0.11 s for 32-bit words all at once)
FINGERPRINT_CHUNK = 512


def row_fingerprints(rows: Tensor) -> np.ndarray:
    """A 64-bit fingerprint per row, equal for bitwise-equal rows: a random linear hash of the
    row's 64-bit words (pairs of its 32-bit values; single values where a row has an odd number)
    in exact integer arithmetic modulo 2^64, so independent of the row's position."""
    values = rows.detach().float().numpy()  # a view: each chunk is made contiguous on its own
    width = values.shape[1] // 2 if values.shape[1] % 2 == 0 else values.shape[1]
    multipliers = np.random.default_rng(width).integers(1, 2**63, size=width, dtype=np.uint64)
    multipliers |= np.uint64(1)
    fingerprints = np.empty(len(values), dtype=np.uint64)
    for start in range(0, len(values), FINGERPRINT_CHUNK):
        chunk = np.ascontiguousarray(values[start : start + FINGERPRINT_CHUNK])
        words = chunk.view(np.uint64) if width != values.shape[1] else chunk.view(np.uint32)
        fingerprints[start : start + len(chunk)] = (words * multipliers).sum(1, dtype=np.uint64)
    return fingerprints


def to_old_order(old: np.ndarray, new: np.ndarray) -> np.ndarray:
    """For each row of a new order, its index in the old one (`old`, `new`: fingerprints of the
    same rows; bitwise-equal rows may stand for each other)."""
    to_old = np.empty(len(new), dtype=np.int64)
    to_old[np.argsort(new, kind="stable")] = np.argsort(old, kind="stable")
    return to_old


def rows_among(fingerprints: np.ndarray, known: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The rows whose fingerprint is among `known`, and where in `known` each is."""
    order = np.argsort(known, kind="stable")
    at = np.minimum(np.searchsorted(known[order], fingerprints), len(known) - 1)
    rows = np.flatnonzero(known[order][at] == fingerprints)
    return rows, order[at[rows]]


class RowSetMemory:
    """Values computed for the last `capacity` row sets, each under a tag saying what was
    computed and how; the least recently used are forgotten first. A value that depends on the
    order of its rows keeps that order's fingerprints itself (see `to_old_order`)."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._values: OrderedDict[str, object] = OrderedDict()
        self._lock = threading.Lock()  # app sessions run in threads and share this memory

    @staticmethod
    def _key(tag: str, fingerprints: np.ndarray) -> str:
        return f"{tag}:" + hashlib.sha1(np.sort(fingerprints).tobytes()).hexdigest()

    def get(self, tag: str, fingerprints: np.ndarray) -> object | None:
        """The value remembered for these rows in any order, or None."""
        key = self._key(tag, fingerprints)
        with self._lock:
            found = self._values.get(key)
            if found is not None:
                self._values.move_to_end(key)
        return found

    def put(self, tag: str, fingerprints: np.ndarray, value: object) -> None:
        """Remember `value` for the rows of `fingerprints`."""
        with self._lock:
            self._values[self._key(tag, fingerprints)] = value
            while len(self._values) > self.capacity:
                self._values.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._values.clear()

    def __len__(self) -> int:
        return len(self._values)
