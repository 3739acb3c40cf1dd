"""Fine-tuning MobileNetV2's last stage to the task at labeling time (P>M>F's third stage).

The combined source (combined_source.py) first predicts the batch with frozen features. Its
confident pseudo-labels (>= `CONFIDENT`) and the user's labeled images then tune a copy of
MobileNetV2's last block (`features[18]`: a 1x1 convolution 320 -> 1,280 and batch norm) and a
cosine classifier for a few dozen steps, with feature dropout as the augmentation
(FixMatch-like: labels from the frozen view, loss on a perturbed one). The tuned features replace
the frozen final stage, and the meta-trained head's output on it, for every member that reads
them; the members are fitted again.

The block runs on the *pooled* block-17 features the joint embedding already holds, as a
residual on the frozen final features: `frozen + tuned(pooled) - block(pooled)`. At the start it
gives the frozen features exactly, and nothing beyond the embedding is needed: no images, no
7x7 maps, so `label`, the app and the benchmark tune the same way from the same vectors.
Measured on the development domains (docs/crossdomain.md): +0.6 to +1.9 points at 5 shots; the
7x7 maps with pixel-space views of the images were no better.

Tuned on its own pseudo-labels, the ensemble grows sure of them faster than right (ECE 0.07 where
it was 0.02). Its temperature is therefore set so that its mean confidence on the batch equals
that of the frozen ensemble, whose confidence was checked on the user's labeled images.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import time

import numpy as np
import torch
from torch import Tensor, nn

from mssl_core.engine import row_sets
from mssl_core.engine.feature_sources import IMAGENET_STAGE_DIMS
from mssl_core.engine.row_sets import RowSetMemory, row_fingerprints, to_old_order

logger = logging.getLogger(__name__)

CONFIDENT = 0.9  # pseudo-labels at or above this confidence teach the tuned stage
MIN_CONFIDENT = 10  # fewer confident batch images than this: the stage is left frozen
STEPS = 40
SUPPORT_PER_STEP = 128  # the work per step is capped: the time does not grow with the task
PSEUDO_PER_STEP = 64
DROPOUT = 0.1  # the augmentation, on the pooled block-17 features
BLOCK_RATE, CLASSIFIER_RATE = 1e-3, 1e-2  # Adam's learning rates
COSINE_SCALE = 10.0
MAX_SECONDS = 5.0  # a slow machine stops early rather than keep the user waiting
# where block 17's pooled output sits in the MobileNetV2 stages (IMAGENET_STAGE_DIMS)
BLOCK17 = slice(sum(IMAGENET_STAGE_DIMS[:2]), sum(IMAGENET_STAGE_DIMS[:3]))
# the tuned columns of the last two row sets (a decision in review refits on the same rows)
_tuned_rows = RowSetMemory(2)


class LastStageTuning:
    """Tunes a copy of `block` (MobileNetV2's `features[18]`) to one task; `transform` puts the
    tuned final features, and `head`'s output on them, into joint feature rows at `final` and
    `head_slice`."""

    def __init__(self, block: nn.Module, head: nn.Module, final: slice, head_slice: slice):
        self.frozen_block, self.head = block, head
        self.final, self.head_slice = final, head_slice
        self.tuned_block: nn.Module | None = None
        self._digest: tuple[nn.Module | None, str] = (None, "")
        # the transform writes the final stage and the head's output as one run of columns
        if head_slice.start != final.stop:
            raise ValueError("the head's slice must follow the final stage's")
        kinds = [type(m) for m in block]
        if kinds != [nn.Conv2d, nn.BatchNorm2d, nn.ReLU6] or block[0].kernel_size != (1, 1):
            raise ValueError(f"expected MobileNetV2's last block (1x1 conv, batch norm, ReLU6), got {kinds}")
        self.losses: list[float] = []  # the labeled images' loss at each step of the last `fit`

    def fit(self, support: Tensor, support_labels: Tensor, unlabeled: Tensor, teacher: Tensor) -> bool:
        """Tune to the labeled rows and the rows of `unlabeled` whose `teacher` probabilities
        reach `CONFIDENT`; False (nothing tuned) where fewer than `MIN_CONFIDENT` do."""
        confidence, pseudo_labels = teacher.max(1)
        confident = (confidence >= CONFIDENT).nonzero().squeeze(1)
        self.tuned_block, self.losses = None, []
        if len(confident) < MIN_CONFIDENT:
            return False
        block = copy.deepcopy(self.frozen_block).eval().requires_grad_(True)  # BN statistics stay
        ways = int(support_labels.max()) + 1
        rows = torch.cat([support, unlabeled])
        with torch.no_grad():
            # centred on the task's frozen features, as the members centre theirs
            mean = _powered(rows[:, self.final]).mean(0, keepdim=True)
            start = nn.functional.normalize(_powered(support[:, self.final]) - mean, dim=1)
            weights = torch.stack([start[support_labels == c].mean(0) for c in range(ways)])
        weights = nn.Parameter(nn.functional.normalize(weights, dim=1))
        optimiser = torch.optim.Adam(
            [{"params": block.parameters(), "lr": BLOCK_RATE}, {"params": [weights], "lr": CLASSIFIER_RATE}]
        )
        generator = torch.Generator().manual_seed(0)  # the same task is tuned the same way

        def loss_of(x: Tensor, labels: Tensor) -> Tensor:
            # dropout drawn from the seeded generator, not torch's global one
            kept = torch.rand(len(x), BLOCK17.stop - BLOCK17.start, generator=generator) >= DROPOUT
            features = self._final(block, x[:, BLOCK17] * kept / (1 - DROPOUT), x[:, self.final])
            centred = nn.functional.normalize(_powered(features) - mean, dim=1)
            scores = COSINE_SCALE * centred @ nn.functional.normalize(weights, dim=1).T
            return nn.functional.cross_entropy(scores, labels)

        started = time.perf_counter()
        for step in range(STEPS):
            labeled = torch.randperm(len(support), generator=generator)[:SUPPORT_PER_STEP]
            pseudo = confident[torch.randperm(len(confident), generator=generator)[:PSEUDO_PER_STEP]]
            support_loss = loss_of(support[labeled], support_labels[labeled])
            loss = support_loss + loss_of(unlabeled[pseudo], pseudo_labels[pseudo])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            self.losses.append(support_loss.item())
            if time.perf_counter() - started > MAX_SECONDS:
                logger.info("last-stage tuning stopped after %d of %d steps (time budget)", step + 1, STEPS)
                break
        self.tuned_block = block.requires_grad_(False)
        return True

    def _final(self, block: nn.Module, block17: Tensor, frozen_final: Tensor) -> Tensor:
        """Final features with `block` in place of the frozen one, on pooled input, as a
        residual on the frozen features (equal to them while `block` is the frozen one)."""
        with torch.no_grad():
            frozen_on_pooled = _apply(self.frozen_block, block17)
        return frozen_final + _apply(block, block17) - frozen_on_pooled

    def transform(self, *parts: Tensor) -> Tensor:
        """Joint feature rows (`parts` stacked) with the tuned final stage and the head's output
        on it. What is written for a set of rows is remembered (row_sets.py): in review the same
        rows come back reordered after each decision and get bitwise the same features, so the
        members' own memories (centred features, neighbour lists) find them again."""
        rows = sum(map(len, parts))
        if self.tuned_block is None:
            return parts[0] if len(parts) == 1 else torch.cat(parts)
        written = None
        whole = fingerprints = None
        if rows >= row_sets.SMALLEST:
            # the rows hashed once (or their remembered fingerprints): the columns read follow
            whole = np.concatenate([row_fingerprints(p) for p in parts])
            fingerprints = row_sets.derived_fingerprints(whole, f"reads {self._reads}")
            found = _tuned_rows.get(self._tag, fingerprints)
            if found is not None:
                computed_order, values = found
                written = values[torch.from_numpy(to_old_order(computed_order, fingerprints))]
        if written is None:
            written = self._written(torch.cat([p[:, self._reads] for p in parts]))
            if fingerprints is not None:
                _tuned_rows.put(self._tag, fingerprints, (fingerprints, written))
        out = torch.empty(rows, parts[0].shape[1])
        start = 0
        for part in parts:
            end = start + len(part)
            out[start:end, : self.final.start] = part[:, : self.final.start]
            out[start:end, self.head_slice.stop :] = part[:, self.head_slice.stop :]
            start = end
        out[:, self.writes] = written
        if whole is not None:
            # of the rows given and the block: the members look up the rows they fit and predict
            row_sets.remember_fingerprints(out, row_sets.derived_fingerprints(whole, f"tuned {self._tag}"))
        return out

    @property
    def writes(self) -> slice:
        """The columns the transform changes: the final stage and the head's output."""
        return slice(self.final.start, self.head_slice.stop)

    @property
    def _reads(self) -> slice:
        """The columns the transform reads: block 17's pooled features through the final stage."""
        return slice(BLOCK17.start, self.final.stop)

    def _written(self, reads: Tensor) -> Tensor:
        """The tuned final features and the head's output on them, side by side, from rows of
        the `_reads` columns."""
        block17 = reads[:, : BLOCK17.stop - BLOCK17.start]
        frozen_final = reads[:, self.final.start - BLOCK17.start :]
        with torch.no_grad():
            final = self._final(self.tuned_block, block17, frozen_final)
            return torch.cat([final, self.head(final)], dim=1)

    @property
    def _tag(self) -> str:
        """What identifies the tuned block: a digest of its weights (computed once per block)."""
        if self._digest[0] is not self.tuned_block:
            digest = hashlib.sha1()
            for tensor in self.tuned_block.state_dict().values():
                digest.update(tensor.numpy().tobytes())
            self._digest = (self.tuned_block, digest.hexdigest())
        return self._digest[1]


def _apply(block: nn.Module, pooled: Tensor) -> Tensor:
    """`block` (1x1 convolution, batch norm in eval mode, ReLU6) on pooled features: as a
    matrix product, several times faster than a convolution over a 1x1 map."""
    convolution, norm = block[0], block[1]
    y = pooled @ convolution.weight.flatten(1).T
    y = nn.functional.batch_norm(
        y, norm.running_mean, norm.running_var, norm.weight, norm.bias, False, 0.0, norm.eps
    )
    return nn.functional.relu6(y)


def _powered(x: Tensor) -> Tensor:
    """The members' power transform of ReLU features (feature_sources.TaskCentred)."""
    return x.clamp_min(0).sqrt()


def matched_temperature(logits: Tensor, mean_confidence: float) -> float:
    """The temperature at which `softmax(logits / t)`'s mean top probability is
    `mean_confidence` (bisection on log t: the mean top probability falls as t grows)."""
    low, high = -5.0, 5.0
    for _ in range(40):
        middle = (low + high) / 2
        if torch.softmax(logits / torch.e**middle, dim=1).max(1).values.mean() > mean_confidence:
            low = middle
        else:
            high = middle
    return float(torch.e ** ((low + high) / 2))
