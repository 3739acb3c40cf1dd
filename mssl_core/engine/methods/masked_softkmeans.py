"""Masked soft k-means (Ren et al. 2018, sec. 3.3): unlabeled images far from every class are
masked out, so distractors (images of no class in the task) do not drag prototypes away.

For each class c, distances d_jc of the unlabeled images are normalised by their mean; a small
meta-learned MLP reads statistics of them (min, max, variance, skewness, kurtosis) and outputs
a soft threshold beta_c and slope gamma_c; the mask is m_jc = sigmoid(-gamma_c (d_jc - beta_c)).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mssl_core.engine.methods.base import register
from mssl_core.engine.methods.softkmeans import SoftKMeans


def distance_statistics(normalised: Tensor) -> Tensor:
    """Per class (column): min, max, variance, skewness, kurtosis of the normalised distances."""
    mean = normalised.mean(0)
    centred = normalised - mean
    var = centred.pow(2).mean(0)
    std = var.clamp_min(1e-8).sqrt()
    skew = (centred / std).pow(3).mean(0)
    kurtosis = (centred / std).pow(4).mean(0)
    return torch.stack([normalised.min(0).values, normalised.max(0).values, var, skew, kurtosis], 1)


@register
class MaskedSoftKMeans(SoftKMeans):
    """Soft k-means whose unlabeled assignments pass through a meta-learned soft mask."""

    name = "masked-softkmeans"
    family = "metric-based"
    description = "Learns from the unlabeled batch but ignores images that fit no class (robust to junk)."
    uses_unlabeled = True

    def __init__(self, hidden: int = 20):
        super().__init__(steps=1)
        self.mask_mlp = nn.Sequential(nn.Linear(5, hidden), nn.Tanh(), nn.Linear(hidden, 2))
        # Start near "keep the images closer than average", a sensible untrained mask.
        nn.init.zeros_(self.mask_mlp[2].weight)
        with torch.no_grad():
            self.mask_mlp[2].bias.copy_(torch.tensor([1.0, 1.0]))

    def mask(self, distances: Tensor) -> Tensor:
        normalised = distances / distances.mean(0, keepdim=True).clamp_min(1e-8)
        if len(distances) < 2:
            return torch.ones_like(distances)
        beta, gamma = self.mask_mlp(distance_statistics(normalised)).unbind(1)
        return torch.sigmoid(-nn.functional.softplus(gamma) * 5 * (normalised - beta))
