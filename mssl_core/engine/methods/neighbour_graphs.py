"""k-nearest-neighbour lists remembered across fits over the same images.

In the app a correction moves one image from the unlabeled batch to the support set: the graph's
nodes stay the same embeddings, only their order and labels change. Finding each node's
neighbours is the costly part (n^2 distances; about a second at 10,000 images on 2 cores), so
the lists of the last few large node sets are kept and re-indexed when the same set comes back
in another order (row_sets.py).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from mssl_core.engine import row_sets
from mssl_core.engine.row_sets import RowSetMemory, row_fingerprints, to_old_order

REMEMBERED = 12  # node sets kept: six per batch (one per graph member of the combined source), two batches

_graphs = RowSetMemory(REMEMBERED)


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
        to_old = to_old_order(self.fingerprints, fingerprints)
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


def remembered(nodes: Tensor, k: int) -> tuple[NeighbourLists | None, np.ndarray | None]:
    """The lists for this node set if they were computed before (re-indexed to this order),
    and the nodes' fingerprints (None when the set is too small or part of a training graph)."""
    if len(nodes) < row_sets.SMALLEST or (torch.is_grad_enabled() and nodes.requires_grad):
        return None, None
    fingerprints = row_fingerprints(nodes)
    found = _graphs.get(str(k), fingerprints)
    return (None if found is None else found.reordered(fingerprints)), fingerprints


def remember(lists: NeighbourLists, k: int) -> None:
    """Keep `lists` for later fits over the same nodes, forgetting the oldest beyond REMEMBERED."""
    _graphs.put(str(k), lists.fingerprints, lists)
