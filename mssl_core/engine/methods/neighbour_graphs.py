"""k-nearest-neighbour lists remembered across fits over the same images.

In the app a correction moves one image from the unlabeled batch to the support set: the graph's
nodes stay the same embeddings, only their order and labels change. Finding each node's
neighbours is the costly part (n^2 distances; about a second at 10,000 images on 2 cores), so
the lists of the last few large node sets are kept and re-indexed when the same set comes back
in another order. Rows are recognised by an exact fingerprint of their bytes.
"""

from __future__ import annotations

import functools
import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

REMEMBERED = 10  # node sets kept: five per batch (one per member of the combined source), two batches
SMALLEST = 1000  # smaller graphs are recomputed: cheap, and leave-one-out refits stay out

_graphs: OrderedDict[str, NeighbourLists] = OrderedDict()
_lock = threading.Lock()  # app sessions run in threads and share this memory


def row_fingerprints(rows: Tensor) -> np.ndarray:
    """A 64-bit fingerprint per row, equal for bitwise-equal rows: a random linear hash of the
    row's 32-bit words in exact integer arithmetic (so independent of the row's position)."""
    words = np.ascontiguousarray(rows.detach().float().numpy()).view(np.uint32).astype(np.uint64)
    multipliers = np.random.default_rng(len(words[0]) if len(words) else 0).integers(
        1, 2**63, size=words.shape[1], dtype=np.uint64
    )
    return (words * (multipliers | np.uint64(1))).sum(1, dtype=np.uint64)


@dataclass
class NeighbourLists:
    """Each node's k nearest other nodes: squared distances and indices, in node order."""

    squared: Tensor
    indices: Tensor
    fingerprints: np.ndarray

    @functools.cached_property
    def order(self) -> np.ndarray:
        """Node indices sorted by fingerprint (computed once, used by every lookup)."""
        return np.argsort(self.fingerprints, kind="stable")

    def reordered(self, fingerprints: np.ndarray) -> NeighbourLists:
        """The same lists for the same rows given in another order (`fingerprints` of the new order)."""
        to_old = np.empty(len(fingerprints), dtype=np.int64)
        to_old[np.argsort(fingerprints, kind="stable")] = self.order
        to_new = np.empty_like(to_old)
        to_new[to_old] = np.arange(len(to_old))
        old = torch.from_numpy(to_old)
        return NeighbourLists(self.squared[old], torch.from_numpy(to_new)[self.indices[old]], fingerprints)

    def rows_of(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Node index of each row of `x`, and whether the row is a node at all."""
        wanted = row_fingerprints(x)
        ordered = self.fingerprints[self.order]
        position = np.minimum(np.searchsorted(ordered, wanted), len(ordered) - 1)
        return torch.from_numpy(self.order[position]), torch.from_numpy(ordered[position] == wanted)


def _key(fingerprints: np.ndarray, k: int) -> str:
    return f"{k}:" + hashlib.sha1(np.sort(fingerprints).tobytes()).hexdigest()


def remembered(nodes: Tensor, k: int) -> tuple[NeighbourLists | None, np.ndarray | None]:
    """The lists for this node set if they were computed before (re-indexed to this order),
    and the nodes' fingerprints (None when the set is too small or part of a training graph)."""
    if len(nodes) < SMALLEST or (torch.is_grad_enabled() and nodes.requires_grad):
        return None, None
    fingerprints = row_fingerprints(nodes)
    with _lock:
        found = _graphs.get(_key(fingerprints, k))
        if found is not None:
            _graphs.move_to_end(_key(fingerprints, k))
    return (None if found is None else found.reordered(fingerprints)), fingerprints


def remember(lists: NeighbourLists, k: int) -> None:
    """Keep `lists` for later fits over the same nodes, forgetting the oldest beyond REMEMBERED."""
    with _lock:
        _graphs[_key(lists.fingerprints, k)] = lists
        while len(_graphs) > REMEMBERED:
            _graphs.popitem(last=False)
