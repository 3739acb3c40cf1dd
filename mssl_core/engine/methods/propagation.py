"""Transductive label propagation over a graph of support + unlabeled embeddings, as in TPN
(Liu et al. 2019): edge weights w_ij = exp(-d_ij^2 / (sigma_i sigma_j)), kept for each node's
k nearest neighbours, symmetrically normalised to S, and labels propagated in closed form
F = (I - alpha S)^-1 Y (Zhou et al. 2004). TPN learns each example's scale sigma_i with a
small network; here sigma_i is the distance to the node's k-th neighbour (local scaling,
Zelnik-Manor & Perona 2004) times a meta-learned factor, and alpha is meta-learned too.

An image to predict is linked to the graph the same way and takes the weighted average of
its neighbours' propagated labels.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn

from mssl_core.engine import row_sets
from mssl_core.engine.methods import neighbour_graphs
from mssl_core.engine.methods.base import FewShotMethod, register

DENSE_LIMIT = 500  # nodes up to which F is solved directly; beyond, by iteration (same answer)
SCALE_NEIGHBOUR = 3  # sigma_i: distance to this nearest neighbour (times a learned factor)
FLOOR = 1e-6  # added to predicted distributions before the log: finite logits and gradients
CHUNK = 1024  # rows of pairwise distances computed at a time, at most
CHUNK_DISTANCES = 2**23  # and at most this many distances (32 MB): memory flat at 100,000 nodes
TOLERANCE = 1e-6  # iterative propagation stops when no label score moves by more


@register
class LabelPropagation(FewShotMethod):
    """Graph-based and transductive: the unlabeled batch is part of the graph."""

    name = "propagation"
    family = "metric-based (graph)"
    description = "Spreads the labels through a graph that links each image to its most similar ones."
    uses_unlabeled = True

    def __init__(self, neighbours: int = 10, iterations: int = 50):
        super().__init__()
        self.neighbours, self.iterations = neighbours, iterations
        self.log_scale = nn.Parameter(torch.tensor(0.0))
        # alpha = 0.5 at the start: labels spread to neighbours without washing out on small graphs
        self.alpha_logit = nn.Parameter(torch.tensor(0.0))
        self.nodes: Tensor | None = None
        self.node_lists: neighbour_graphs.NeighbourLists | None = None

    def _nearest(self, x: Tensor, nodes: Tensor, k: int, exclude_self: bool) -> tuple[Tensor, Tensor]:
        """Squared distances and indices of each row's k nearest nodes, in chunks of rows, so
        memory grows with n·k, not n² (a batch of 100,000 images stays small)."""
        values, indices = [], []
        step = max(1, min(CHUNK, CHUNK_DISTANCES // max(1, len(nodes))))
        for start in range(0, len(x), step):
            squared = torch.cdist(x[start : start + step], nodes).pow(2)
            if exclude_self:
                own = torch.arange(len(squared))
                squared = squared.index_put((own, own + start), torch.tensor(float("inf")))
            nearest = squared.topk(k, dim=1, largest=False)
            values.append(nearest.values)
            indices.append(nearest.indices)
        return torch.cat(values), torch.cat(indices)

    def _affinities(self, squared: Tensor, indices: Tensor, node_sigma: Tensor | None) -> tuple[Tensor, Tensor]:
        """Edge weights to the listed neighbours and each row's local scale (distance to its
        SCALE_NEIGHBOUR-th neighbour times the learned factor); `node_sigma=None`: the rows
        are the nodes themselves."""
        kth = squared[:, min(SCALE_NEIGHBOUR, squared.shape[1]) - 1]
        sigma = kth.clamp_min(1e-12).sqrt() * self.log_scale.exp()
        node_sigma = sigma if node_sigma is None else node_sigma
        scale = (sigma.unsqueeze(1) * node_sigma[indices]).clamp_min(1e-12)
        return torch.exp(-squared / scale), sigma

    def _node_neighbours(self, nodes: Tensor) -> tuple[Tensor, Tensor]:
        """Each node's nearest other nodes, remembered for re-fits over the same images."""
        k = max(1, min(self.neighbours, len(nodes) - 1))
        lists, fingerprints = neighbour_graphs.remembered(nodes, k)
        if lists is None:
            squared, indices = self._nearest(nodes, nodes, k, exclude_self=True)
            if fingerprints is not None:
                lists = neighbour_graphs.NeighbourLists(squared, indices, fingerprints)
                neighbour_graphs.remember(lists, k)
        self.node_lists = lists
        return (squared, indices) if lists is None else (lists.squared, lists.indices)

    def _query_neighbours(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Each row's nearest nodes. Rows that are nodes themselves (the app predicts the batch
        it adapted to) are read off the node lists: the row itself, then its k-1 nearest."""
        k = max(1, min(self.neighbours, len(self.nodes)))
        if self.node_lists is None:
            return self._nearest(x, self.nodes, k, exclude_self=False)
        rows, is_node = self.node_lists.rows_of(x)
        squared = torch.cat([torch.zeros(len(x), 1, dtype=x.dtype), self.node_lists.squared[rows, : k - 1]], 1)
        indices = torch.cat([rows.unsqueeze(1), self.node_lists.indices[rows, : k - 1]], 1)
        if not is_node.all():
            others = ~is_node
            squared[others], indices[others] = self._nearest(x[others], self.nodes, k, exclude_self=False)
        return squared, indices

    def _fit(self, support: Tensor, support_labels: Tensor, unlabeled: Tensor | None) -> None:
        # stacked keeping the fingerprints of rows that have them: queries of those rows find them
        nodes = support if unlabeled is None else row_sets.stacked(support, unlabeled)
        n_classes = int(support_labels.max()) + 1
        labels = torch.zeros(len(nodes), n_classes, dtype=nodes.dtype)
        labels[torch.arange(len(support)), support_labels] = 1
        self.nodes, self.propagated, self.node_lists = nodes, labels, None
        if len(nodes) < 2:
            self.node_sigma = torch.ones(len(nodes), dtype=nodes.dtype)
            return
        squared, indices = self._node_neighbours(nodes)
        weights, self.node_sigma = self._affinities(squared, indices, None)
        alpha = torch.sigmoid(self.alpha_logit)
        if len(nodes) <= DENSE_LIMIT or (torch.is_grad_enabled() and alpha.requires_grad):
            # meta-training differentiates through the exact solve (its graphs are small)
            dense = torch.zeros(len(nodes), len(nodes), dtype=nodes.dtype).scatter(1, indices, weights)
            dense = torch.maximum(dense, dense.T)
            inv_sqrt_degree = dense.sum(1).clamp_min(1e-12).rsqrt()
            normalised = inv_sqrt_degree.unsqueeze(1) * dense * inv_sqrt_degree.unsqueeze(0)
            identity = torch.eye(len(nodes), dtype=nodes.dtype)
            self.propagated = torch.linalg.solve(identity - alpha * normalised, labels)
            return
        # Larger graphs: the same graph (max(W, W^T) of the kNN lists) as a sparse matrix and the
        # same fixed point F = alpha S F + Y by iteration, in n·k memory and time instead of
        # n^3 (a dense solve at 2,000 images took about a second per member); the error shrinks
        # by alpha (about 0.35) per step, so it stops once a step changes F by under TOLERANCE.
        n = len(nodes)
        rows = torch.arange(n).repeat_interleave(indices.shape[1])
        edges = torch.cat([rows * n + indices.reshape(-1), indices.reshape(-1) * n + rows])
        edges, where = torch.unique(edges, return_inverse=True)
        values = torch.zeros(len(edges), dtype=nodes.dtype).scatter_reduce(
            0, where, weights.reshape(-1).repeat(2), "amax", include_self=False
        )
        rows, columns = edges // n, edges % n
        inv_sqrt_degree = torch.zeros(n, dtype=nodes.dtype).index_add(0, rows, values).clamp_min(1e-12).rsqrt()
        with warnings.catch_warnings():  # CSR is "beta"; its matrix product is all we use
            warnings.simplefilter("ignore")
            normalised = torch.sparse_coo_tensor(
                torch.stack([rows, columns]),
                inv_sqrt_degree[rows] * values * inv_sqrt_degree[columns],
                (n, n),
                check_invariants=False,
            ).to_sparse_csr()
        for _ in range(self.iterations):
            previous = self.propagated
            self.propagated = alpha * (normalised @ previous) + labels
            if (self.propagated - previous).abs().max() < TOLERANCE:
                break

    def logits(self, x: Tensor) -> Tensor:
        if self.nodes is None:
            raise RuntimeError(f"{self.name}: call fit() before predicting")
        squared, indices = self._query_neighbours(x)
        weights, _ = self._affinities(squared, indices, self.node_sigma)
        distribution = nn.functional.normalize(self.propagated.clamp_min(0), p=1, dim=1)
        scores = (weights.unsqueeze(2) * distribution[indices]).sum(1)
        return (nn.functional.normalize(scores, p=1, dim=1) + FLOOR).log()
