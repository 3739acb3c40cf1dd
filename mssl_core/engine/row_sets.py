"""Work that depends only on a set of rows (embeddings), remembered for the same set in another order.

In review, a decision moves one image from the batch to the labeled rows: the next fit sees the
same embeddings, reordered and relabeled. What depends on the set alone (each node's nearest
neighbours, the task-centred features) is kept for the last few sets and re-indexed instead of
computed again. Rows are recognised by an exact fingerprint of their bytes.

The fingerprints of a whole tensor can be kept while it lives (`remember_fingerprints`): those
of its views (a member's columns, the labeled or unlabeled rows) then follow from them without
hashing the rows again; a re-adaptation at 10,000 images hashed column slices of the same rows
some thirty times.
"""

from __future__ import annotations

import hashlib
import threading
import weakref
from collections import OrderedDict

import numpy as np
import torch
from torch import Tensor

SMALLEST = 1000  # smaller sets are recomputed: cheap, and leave-one-out refits stay out
# rows hashed at a time: their products stay in the cache (10,000 rows of 1,856 values: 0.04 s,
# against 0.11 s for 32-bit words all at once)
FINGERPRINT_CHUNK = 512


def row_fingerprints(rows: Tensor) -> np.ndarray:
    """A 64-bit fingerprint per row, equal for bitwise-equal rows: a random linear hash of the
    row's 64-bit words (pairs of its 32-bit values; single values where a row has an odd number)
    in exact integer arithmetic modulo 2^64, so independent of the row's position. For a view of
    a tensor whose fingerprints are remembered, they are derived from those instead (see
    `remember_fingerprints`)."""
    known = _known_view(rows)
    if known is not None:
        return known
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


# (tensor, its version when remembered, its fingerprints) by the address of its memory
_remembered: dict[int, tuple[weakref.ref, int, np.ndarray]] = {}
_remembered_lock = threading.Lock()  # app sessions run in threads
MIX = np.uint64(0x9E3779B97F4A7C15)  # odd: multiplying by it is a bijection modulo 2^64


def remember_fingerprints(rows: Tensor, fingerprints: np.ndarray | None = None) -> np.ndarray:
    """Keep the fingerprints of `rows` (a contiguous 2-D tensor; computed here unless given) for
    as long as it lives and is not changed in place, and return them. A view of it then gets
    from `row_fingerprints` these same fingerprints where it has whole rows, and where it has
    some columns, these mixed with which columns: a fingerprint of the row *and* the columns,
    not of the columns' bytes alone, so it never equals one computed from a copy of them (a
    memory keyed by fingerprints then misses once; it never mistakes rows for others).

    `fingerprints` may be given for rows computed from other rows (as `derived_fingerprints`
    makes them): they must change whenever a row's values can."""
    if not rows.is_contiguous() or rows.dim() != 2:
        raise ValueError("only a contiguous 2-D tensor's fingerprints can be remembered")
    if fingerprints is None:
        fingerprints = row_fingerprints(rows)
    address = rows.untyped_storage().data_ptr()

    def forget(ref: weakref.ref) -> None:
        with _remembered_lock:
            if address in _remembered and _remembered[address][0] is ref:
                del _remembered[address]

    with _remembered_lock:
        _remembered[address] = (weakref.ref(rows, forget), rows._version, fingerprints)
    return fingerprints


def stacked(*parts: Tensor) -> Tensor:
    """`parts` one after the other in a new tensor; where each is a view of a remembered tensor,
    the new one keeps their fingerprints, so that its rows are recognised as theirs."""
    rows = torch.cat(parts)
    known = [_known_view(part) for part in parts]
    if all(k is not None for k in known):
        remember_fingerprints(rows, np.concatenate(known))
    return rows


def derived_fingerprints(fingerprints: np.ndarray, salt: str) -> np.ndarray:
    """Fingerprints for rows computed from the rows of `fingerprints` by what `salt` names."""
    mixed = int.from_bytes(hashlib.sha1(salt.encode()).digest()[:8], "little")
    return fingerprints * MIX + np.uint64(mixed)


def _known_view(rows: Tensor) -> np.ndarray | None:
    """The fingerprints of `rows` derived from a remembered tensor that `rows` is a view of."""
    if rows.dim() != 2 or not len(rows) or not rows.shape[1]:
        return None
    with _remembered_lock:
        found = _remembered.get(rows.untyped_storage().data_ptr())
    if found is None:
        return None
    ref, version, fingerprints = found
    base = ref()
    if base is None or base._version != version or base.dtype != rows.dtype:
        return None
    width = base.shape[1]
    if (len(rows) > 1 and rows.stride(0) != width) or (rows.shape[1] > 1 and rows.stride(1) != 1):
        return None
    first, column = divmod(rows.storage_offset() - base.storage_offset(), width)
    if first < 0 or first + len(rows) > len(base) or column + rows.shape[1] > width:
        return None
    fingerprints = fingerprints[first : first + len(rows)]
    if rows.shape[1] == width:
        return fingerprints.copy()
    return derived_fingerprints(fingerprints, f"columns {column}:{column + rows.shape[1]}")


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
