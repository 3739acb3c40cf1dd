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

import torch
from torch import Tensor, nn

from mssl_core.methods.base import FewShotMethod, register

DENSE_LIMIT = 3000  # nodes up to which F is solved exactly; beyond, by iteration
SCALE_NEIGHBOUR = 3  # sigma_i: distance to this nearest neighbour (times a learned factor)
FLOOR = 1e-6  # added to predicted distributions before the log: finite logits and gradients
CHUNK = 1024  # rows of pairwise distances computed at a time


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

    def _neighbours(self, x: Tensor, nodes: Tensor, node_sigma: Tensor | None, exclude_self: bool):
        """For each row of `x`: affinities to its k nearest nodes, their indices, and the row's
        local scale (distance to its SCALE_NEIGHBOUR-th nearest node times the learned factor).
        `node_sigma=None`: x are the nodes themselves. Computed in chunks of rows, so memory
        grows with n·k, not n² (a batch of 100,000 images stays small)."""
        available = len(nodes) - int(exclude_self)
        k = max(1, min(self.neighbours, available))
        values, indices = [], []
        for start in range(0, len(x), CHUNK):
            squared = torch.cdist(x[start : start + CHUNK], nodes).pow(2)
            if exclude_self:
                rows = torch.arange(len(squared))
                mask = torch.zeros_like(squared).index_put((rows, rows + start), torch.tensor(float("inf")))
                squared = squared + mask
            nearest = squared.topk(k, dim=1, largest=False)
            values.append(nearest.values)
            indices.append(nearest.indices)
        values, indices = torch.cat(values), torch.cat(indices)
        kth = values[:, min(SCALE_NEIGHBOUR, k) - 1]
        sigma = kth.clamp_min(1e-12).sqrt() * self.log_scale.exp()
        node_sigma = sigma if node_sigma is None else node_sigma
        scale = (sigma.unsqueeze(1) * node_sigma[indices]).clamp_min(1e-12)
        return torch.exp(-values / scale), indices, sigma

    def fit(self, support: Tensor, support_labels: Tensor, unlabeled: Tensor | None = None) -> LabelPropagation:
        nodes = support if unlabeled is None else torch.cat([support, unlabeled])
        n_classes = int(support_labels.max()) + 1
        labels = torch.zeros(len(nodes), n_classes, dtype=nodes.dtype)
        labels[torch.arange(len(support)), support_labels] = 1
        self.nodes, self.propagated = nodes, labels
        if len(nodes) < 2:
            self.node_sigma = torch.ones(len(nodes), dtype=nodes.dtype)
            return self
        weights, indices, self.node_sigma = self._neighbours(nodes, nodes, None, exclude_self=True)
        alpha = torch.sigmoid(self.alpha_logit)
        if len(nodes) <= DENSE_LIMIT:
            dense = torch.zeros(len(nodes), len(nodes), dtype=nodes.dtype).scatter(1, indices, weights)
            dense = torch.maximum(dense, dense.T)
            inv_sqrt_degree = dense.sum(1).clamp_min(1e-12).rsqrt()
            normalised = inv_sqrt_degree.unsqueeze(1) * dense * inv_sqrt_degree.unsqueeze(0)
            identity = torch.eye(len(nodes), dtype=nodes.dtype)
            self.propagated = torch.linalg.solve(identity - alpha * normalised, labels)
            return self
        # Large batches: the same fixed point F = alpha S F + Y by iteration, with the kNN graph
        # kept as (n, k) lists and symmetrised as W + W^T instead of max(W, W^T).
        flat_indices = indices.reshape(-1)
        degree = weights.sum(1).index_add(0, flat_indices, weights.reshape(-1))
        inv_sqrt_degree = degree.clamp_min(1e-12).rsqrt().unsqueeze(1)

        def spread(values: Tensor) -> Tensor:  # S @ values without forming S
            scaled = inv_sqrt_degree * values
            forward = (weights.unsqueeze(2) * scaled[indices]).sum(1)
            backward = torch.zeros_like(scaled).index_add(
                0, flat_indices, (weights.unsqueeze(2) * scaled.unsqueeze(1)).reshape(-1, scaled.shape[1])
            )
            return inv_sqrt_degree * (forward + backward)

        for _ in range(self.iterations):
            self.propagated = alpha * spread(self.propagated) + labels
        return self

    def logits(self, x: Tensor) -> Tensor:
        if self.nodes is None:
            raise RuntimeError(f"{self.name}: call fit() before predicting")
        weights, indices, _ = self._neighbours(x, self.nodes, self.node_sigma, exclude_self=False)
        distribution = nn.functional.normalize(self.propagated.clamp_min(0), p=1, dim=1)
        scores = (weights.unsqueeze(2) * distribution[indices]).sum(1)
        return (nn.functional.normalize(scores, p=1, dim=1) + FLOOR).log()
