"""The default image features: every source at once, their calibrated predictions combined.

No single source wins on every kind of image: Conv-4 on pen strokes, the meta-trained head on
some photos, plain centred ImageNet features on others, raw pixels now and then. Picking one per
task by held-out log loss on a few labeled images chose noisily (and its winner over-promised);
combining them does better on every development domain at 5 and 10 shots (docs/crossdomain.md).

One network pass gives a joint embedding (`JointFeatures`): the pooled MobileNetV2 stages, the
meta-trained head's output on the last of them, Conv-4's embedding, the 28 px pixels and a second
ImageNet network's features (MobileNetV3-Small). Each *member* runs the meta-trained method on
its slice, and a logistic regression runs on the centred last stage of each ImageNet network.
`SourceEnsemble.fit` calibrates each member
on the user's labeled images (each predicted from the others, `calibration.held_out_predictions`),
averages their log-probabilities (a product of experts: a member that is unsure moves the result
little) and fits the ensemble's own temperature on the same held-out predictions. With a single
labeled image in some class nothing can be held out, and factors fitted on the development
domains stand in (`crossdomain.fit_one_shot_factors`). Last, the batch images the ensemble is
surest of join the labeled ones and the members are fitted again (self-training).
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, replace

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from mssl_core.engine.backbones import Backbone, Conv4, MobileNetV2Backbone, MobileNetV3Small, PixelBackbone
from mssl_core.engine.calibration import (
    HeldOut,
    calibrated_logits,
    held_out_predictions,
    held_out_rows,
)
from mssl_core.engine.checkpoints import Model
from mssl_core.engine.class_shares import MIN_LABELED, batch_log_ratios
from mssl_core.engine.contract import Method, MethodWrapper
from mssl_core.engine.feature_sources import (
    IMAGENET_STAGE_DIMS,
    ImageNetStages,
    TaskCentred,
    centred_method,
    centred_on_leading,
    is_stacked,
)
from mssl_core.engine.last_stage import LastStageTuning, matched_temperature
from mssl_core.engine.methods import make_method
from mssl_core.engine.methods.propagation import LabelPropagation
from mssl_core.engine.row_sets import remember_fingerprints, row_fingerprints, rows_among
from mssl_core.engine.ssl import SSLOptions, with_ssl

STAGES_DIM = sum(IMAGENET_STAGE_DIMS)
FINAL_DIM = IMAGENET_STAGE_DIMS[-1]
# Factors on each member's validation temperature, and the ensemble's temperature, where
# confidence cannot be checked on the user's images (a class with one labeled image); maximum
# likelihood on 1-shot tasks of the development domains only (`crossdomain.fit_one_shot_factors`).
# (`python -m mssl_core crossdomain --fit-one-shot --episodes 100 --domains` the five of them)
ONE_SHOT_FACTORS = {
    "imagenet": 3.065,
    "final": 3.171,
    "mobilenetv2": 4.58,
    "conv4": 8.474,
    "pixels": 11.532,
    "mobilenetv3": 3.331,
    "combined": 0.631,
}
# A single source chosen by name (labeling.adapt) keeps the meta-learned scale (not
# PLAIN_LOCAL_SCALE): its one-shot factor is the one fitted for that scale.
SINGLE_SOURCE_ONE_SHOT_FACTORS = {**ONE_SHOT_FACTORS, "imagenet": 4.877}
# Prior sd of log(factor) for each member's factor and the ensemble's temperature (calibration.py
# uses 1.0 for a single source): with 2-way 5-shot tasks they rest on 10 held-out predictions,
# often all right, and 1.0 let them turn sharp. Chosen on the development domains (0.5 against
# 1.0 and 0.3); on the test domains, the largest excess of promised over actual precision at
# >= 0.9 confidence fell from 3.6 to 1.9 points at 5 and 10 shots (docs/crossdomain.md).
ENSEMBLE_PRIOR_SD = 0.5
# Members left out where a class has one labeled image: a classifier fitted to one point per
# class has no calibration to stand on (2-way 1-shot test tasks with it: 78% against 89%).
NEEDS_TWO_PER_CLASS = ("logreg", "mobilenetv3-logreg")
# Self-training (`SourceEnsemble._self_train`): the batch images each class is surest of, up to
# this share of an even split of the batch, join the labeled ones. Chosen on the development
# domains at 1 shot (60 tasks a row), confirmed at 5 and 10 (docs/crossdomain.md).
SELF_TRAINING_SHARE = 0.5
# Members (centred ImageNet features) whose graph uses the plain local scale (the distance to a
# node's 3rd neighbour) instead of the 0.40 of it meta-learned with the head's features: labels
# travel further. Development domains, against the learned scale: 5-way 1-shot (40 tasks each)
# +2.4 OpenArena, +2.0 MNIST, +0.7 Fashion-MNIST, -0.5 MRI and microscopy; 5-way 5-shot (30
# tasks each) +1.4, +0.2, +0.6, +0.0 (docs/crossdomain.md).
PLAIN_LOCAL_SCALE = ("imagenet", "final", "mobilenetv3")


class JointFeatures(Backbone):
    """Every source's features of an image in one vector: MobileNetV2 stages (1,856), the
    meta-trained head on the last stage (256), Conv-4 (64), 28 px pixels (784), MobileNetV3-Small
    (576)."""

    name = "combined"

    def __init__(self, mobilenet: MobileNetV2Backbone, conv4: Conv4):
        super().__init__()
        self.stages, self.pixels = ImageNetStages(mobilenet.image_size), PixelBackbone()
        self.head, self.conv4 = mobilenet.head, conv4
        self.small = MobileNetV3Small(mobilenet.image_size)
        self.head_dim = mobilenet.embedding_dim
        self.embedding_dim = (
            STAGES_DIM + self.head_dim + sum(b.embedding_dim for b in (conv4, self.pixels, self.small))
        )

    def slices(self) -> dict[str, slice]:
        """Where each source sits in the joint vector."""
        head_end = STAGES_DIM + self.head_dim
        conv4_end = head_end + self.conv4.embedding_dim
        pixels_end = conv4_end + self.pixels.embedding_dim
        return {
            "imagenet": slice(0, STAGES_DIM),
            "final": slice(STAGES_DIM - FINAL_DIM, STAGES_DIM),
            "mobilenetv2": slice(STAGES_DIM, head_end),
            "conv4": slice(head_end, conv4_end),
            "pixels": slice(conv4_end, pixels_end),
            "mobilenetv3": slice(pixels_end, self.embedding_dim),
        }

    def preprocess(self, images: Sequence[Image.Image]) -> Tensor:
        """Both inputs of each image, flattened side by side: the 224 px colour picture for
        MobileNetV2, the 28 px grayscale one for Conv-4 and the pixels."""
        colour, gray = self.stages.preprocess(images), self.pixels.preprocess(images)
        return torch.cat([colour.flatten(1), gray.flatten(1)], dim=1)

    def forward(self, x: Tensor) -> Tensor:
        side, gray_side = self.stages.image_size, self.pixels.image_size
        colour, gray = x.split([3 * side * side, gray_side * gray_side], dim=1)
        colour = colour.reshape(-1, 3, side, side)
        stages = self.stages.frozen_features(colour)
        head = self.head(stages[:, -FINAL_DIM:])
        conv4 = self.conv4(gray.reshape(-1, 1, gray_side, gray_side))
        return torch.cat([stages, head, conv4, gray, self.small.frozen_features(colour)], dim=1)

    def trainable_state(self) -> dict[str, Tensor]:
        return {}

    def load_trainable_state(self, state: dict[str, Tensor]) -> None:
        """Nothing of its own: the head and Conv-4 come from their checkpoints."""


class Sliced(MethodWrapper):
    """A method on one source's slice of the joint features."""

    def __init__(self, method: Method, where: slice):
        super().__init__(method)
        self.where = where

    def fit(self, support: Tensor, support_labels: Tensor, unlabeled: Tensor | None = None) -> Sliced:
        self.method.fit(
            support[:, self.where], support_labels, None if unlabeled is None else unlabeled[:, self.where]
        )
        return self

    def logits(self, x: Tensor) -> Tensor:
        return self.method.logits(x[:, self.where])

    def predict_proba(self, x: Tensor) -> Tensor:
        return self.method.predict_proba(x[:, self.where])


@dataclass(frozen=True)
class SelfLabeled:
    """Batch images self-training gave a label: their fingerprints (row_sets.py, so that they are
    found in any order), the labels and the ensemble's logits that chose them (without the batch's
    class shares, which are applied on top)."""

    fingerprints: np.ndarray
    labels: Tensor
    logits: Tensor


@dataclass(frozen=True)
class Calibration:
    """How an ensemble turns its members' scores into confidence for one task."""

    factors: dict[str, float]  # per member: times its validation temperature
    temperature: float  # the ensemble's own, on the members' averaged log-probabilities
    checked: bool  # measured on the user's labeled images (every class has two), not assumed
    held_out: HeldOut | None = None  # the labeled images predicted from the others
    # MobileNetV2's last block tuned to the task (last_stage.py), with `temperature` matched to
    # the frozen ensemble's confidence; None: the frozen features
    tuned_block: nn.Module | None = None
    tuned_on: int = 0  # labeled images the block was tuned with
    tuned_ratio: float = 1.0  # the matched temperature over the frozen one
    # log(share in the batch / among the labeled images) per class, added to the scaled logits
    # where the batch's make-up clearly differs (class_shares.py); None: equal shares
    batch_log_ratios: Tensor | None = None
    # the batch images self-training labeled (`SourceEnsemble._self_train`); a refit passed this
    # calibration back (review) labels them so again rather than choosing anew
    self_labeled: SelfLabeled | None = None

    def with_tuning_of(self, earlier: Calibration) -> Calibration:
        """This (frozen) calibration, measured on a grown labeled set, with the block tuned for
        an earlier one, its temperature scaled as the earlier matching scaled it and the same
        batch's class shares: a refit then skips the tuning (a Label Studio annotation).
        Unchecked: left as it is."""
        if not self.checked:
            return self
        return replace(
            self,
            temperature=self.temperature * earlier.tuned_ratio,
            tuned_block=earlier.tuned_block,
            tuned_on=earlier.tuned_on,
            tuned_ratio=earlier.tuned_ratio,
            batch_log_ratios=earlier.batch_log_ratios,
        )


class SourceEnsemble:
    """The members' calibrated log-probabilities averaged, at a temperature of its own; see the
    module docstring. `checked`: calibrated on the user's labeled images (every class has two)."""

    per_dimension = False

    def __init__(
        self,
        members: dict[str, Sliced],
        one_shot_factors: dict[str, float] = ONE_SHOT_FACTORS,
        tuning: LastStageTuning | None = None,
    ):
        self.members, self.one_shot_factors, self.tuning = members, one_shot_factors, tuning
        first = next(iter(members.values())).method
        self.name = first.name
        self.family, self.description = first.family, first.description
        self.uses_unlabeled, self.meta_trained = first.uses_unlabeled, first.meta_trained
        self.calibration = Calibration({}, 1.0, False)  # until fitted
        self._fitted_rows: tuple[tuple[Tensor, ...], Tensor] | None = None  # see `_fit_members`

    @property
    def factors(self) -> dict[str, float]:
        return self.calibration.factors

    @property
    def temperature(self) -> float:
        return self.calibration.temperature

    @property
    def checked(self) -> bool:
        return self.calibration.checked

    def with_ssl(self, options: SSLOptions | None) -> SourceEnsemble:
        """The semi-supervised terms applied within every member."""
        self.members = {name: with_ssl(member, options) for name, member in self.members.items()}
        return self

    def calibrate(
        self, support: Tensor, support_labels: Tensor, unlabeled: Tensor | None = None
    ) -> Calibration:
        """Each member's factor and the ensemble's temperature, from held-out predictions of
        these labeled images (or the one-shot factors where a class has a single one)."""
        if not (torch.bincount(support_labels) >= 2).all():
            factors = {n: f for n, f in self.one_shot_factors.items() if n in self.members}
            return Calibration(factors, self.one_shot_factors["combined"], False)
        logits = {}
        with torch.no_grad():
            for name, member in self.members.items():
                logits[name], held_labels = held_out_predictions(member, support, support_labels, unlabeled)
        held_out = HeldOut(logits, held_labels, held_out_rows(support_labels), ENSEMBLE_PRIOR_SD)
        factors, temperature, _ = held_out.fit()
        return Calibration(factors, temperature, True, held_out)

    def fit(
        self,
        support: Tensor,
        support_labels: Tensor,
        unlabeled: Tensor | None = None,
        calibration: Calibration | None = None,
        refit_only: bool = False,
    ) -> SourceEnsemble:
        """Fit every active member to the task; `calibration` as `calibrate` gives it (computed
        here from `support` when not given). With a batch and confidence checked, the last stage
        is then tuned to the task (last_stage.py, with `tuning`) and the batch's class shares
        estimated (class_shares.py); then, with any batch, the members are self-trained
        (`_self_train`). `self.calibration` after this fit brings all of that: the review loop
        passes it back to refit fast, with the tuned block, shares and self-labeled images of the
        batch it was first fitted to.

        `refit_only` (review, once a person has decided some of the batch): the members are
        fitted with the tuned block and shares of `calibration` and without self-labeled images.
        A person's decisions take their place: an image self-training labeled keeps the scores
        that chose it, so a wrong one stayed confidently wrong through a review and was reached
        last (docs/review.md)."""
        calibration = calibration or self.calibrate(support, support_labels, unlabeled)
        self.calibration = calibration
        if self.tuning is not None:
            self.tuning.tuned_block = calibration.tuned_block
        if unlabeled is not None and (refit_only or calibration.self_labeled is not None):
            self_labeled = None if refit_only else calibration.self_labeled
            self.calibration = replace(calibration, self_labeled=self_labeled)
            self._fit_members(support, support_labels, unlabeled, self_labeled=self_labeled)
            return self
        self._fit_members(support, support_labels, unlabeled)
        if unlabeled is None:
            return self
        # tuned only where confidence was checked on the user's images: the tuned ensemble's
        # temperature is matched to the frozen one's, which must itself be right (at one shot
        # the tuning also gained nothing on the development domains)
        if calibration.checked and not calibration.tuned_block:
            self._tune_and_share(support, support_labels, unlabeled)
        self._self_train(support, support_labels, unlabeled)
        return self

    def _tune_and_share(self, support: Tensor, support_labels: Tensor, unlabeled: Tensor) -> None:
        """The last stage tuned to the task where it helps, and the batch's class shares where
        they clearly differ, both kept in `self.calibration`."""
        with_shares = bool(torch.bincount(support_labels).min() >= MIN_LABELED)
        if self.tuning is None and not with_shares:
            return  # nothing to tune, no shares to estimate: spare the pass over the batch
        with torch.no_grad():
            frozen_members = self.member_log_probabilities(unlabeled)
            frozen = torch.softmax(torch.stack(list(frozen_members.values())).mean(0) / self.temperature, dim=1)
        tuned = self._tune(support, support_labels, unlabeled, frozen_members, frozen)
        if with_shares:
            # the batch's probabilities as predicted next: the tuned ones where tuning was kept
            probabilities = frozen if tuned is None else torch.softmax(tuned / self.temperature, dim=1)
            ratios = batch_log_ratios(probabilities.double().numpy())
            if ratios is not None:
                self.calibration = replace(self.calibration, batch_log_ratios=torch.from_numpy(ratios).float())

    def _self_train(self, support: Tensor, support_labels: Tensor, unlabeled: Tensor) -> None:
        """The batch images the ensemble is surest of, up to SELF_TRAINING_SHARE of an even share
        of the batch for each class, join the labeled ones with the class it gives them, and
        every member is fitted again. As many for every class the batch allows, so that the class
        most of the batch is given does not grow on its own; the user's labeled images alone
        still place the centre."""
        ways = int(support_labels.max()) + 1
        per_class = round(SELF_TRAINING_SHARE * len(unlabeled) / ways)
        if not per_class:
            return
        with torch.no_grad():
            first = self.logits(unlabeled)
        confidence, predicted = torch.softmax(first / self.temperature, dim=1).max(1)
        picked = []
        for c in range(ways):
            rows = (predicted == c).nonzero().squeeze(1)
            picked.append(rows[confidence[rows].argsort(descending=True)[:per_class]])
        chosen = torch.cat(picked)  # never empty: every image is given some class
        if self.calibration.batch_log_ratios is not None:
            first = first - self.temperature * self.calibration.batch_log_ratios  # `logits` adds them
        # fitted to, an image is then predicted near-certain, right or not (development tasks,
        # OpenArena 5-way 1-shot: 94% promised at >= 0.9 confidence, 86% right): it keeps the
        # scores that chose it, and only the other images take the refitted members' word
        self_labeled = SelfLabeled(row_fingerprints(unlabeled[chosen]), predicted[chosen], first[chosen])
        self._fit_members(support, support_labels, unlabeled, self_labeled=self_labeled)
        self.calibration = replace(self.calibration, self_labeled=self_labeled)

    def _tune(
        self,
        support: Tensor,
        support_labels: Tensor,
        unlabeled: Tensor,
        frozen_members: dict[str, Tensor],
        frozen: Tensor,
    ) -> Tensor | None:
        """Tune the last stage to the task where it helps; the tuned ensemble's logits of the
        batch, or None where it was not tuned."""
        if self.tuning is None or not self.tuning.fit(support, support_labels, unlabeled, frozen):
            return None
        # only the members that read the tuned columns change: the others are not refitted
        changed = [name for name, m in self.active_members().items() if _overlap(m.where, self.tuning.writes)]
        self._fit_members(support, support_labels, unlabeled, changed)
        with torch.no_grad():
            tuned_members = self.member_log_probabilities(unlabeled, changed)
        logits = torch.stack([tuned_members.get(n, lp) for n, lp in frozen_members.items()]).mean(0)
        temperature = matched_temperature(logits, frozen.max(1).values.mean().item())
        self.calibration = replace(
            self.calibration,
            temperature=temperature,
            tuned_block=self.tuning.tuned_block,
            tuned_on=len(support),
            tuned_ratio=temperature / self.calibration.temperature,
        )
        return logits

    def _fit_members(
        self,
        support: Tensor,
        support_labels: Tensor,
        unlabeled: Tensor | None,
        names: list[str] | None = None,
        self_labeled: SelfLabeled | None = None,
    ) -> None:
        """Fit the active members (those of `names` only, where given); with `self_labeled`, its
        images still in `unlabeled` (found by their fingerprints) join the labeled ones, while
        the centre stays on `support`."""
        parts = (support,) if unlabeled is None else (support, unlabeled)
        if self.tuning is not None and self.tuning.tuned_block is not None:
            # one tensor, the parts its views: predicting the same rows (or the batch alone, in
            # its order) then finds them (_tuned)
            tuned = self.tuning.transform(*parts)
            self._fitted_rows = (parts, tuned)
            support, unlabeled = tuned[: len(support)], None if unlabeled is None else tuned[len(support) :]
        centring = nullcontext()
        if self_labeled is not None and unlabeled is not None:
            centring = centred_on_leading(self, len(support))
            # looked up among the batch as given: tuned rows have other bytes
            rows, found = rows_among(row_fingerprints(parts[1]), self_labeled.fingerprints)
            support_labels = torch.cat([support_labels, self_labeled.labels[torch.from_numpy(found)]])
            support, unlabeled = _joined(support, unlabeled, rows)
        with torch.no_grad(), centring:
            for name, member in self.active_members().items():
                if names is None or name in names:
                    member.fit(support, support_labels, unlabeled)

    def _tuned(self, x: Tensor) -> Tensor:
        """`x` with the tuned last stage; the rows of the last fit as they were tuned for it."""
        if self.tuning is None or self.tuning.tuned_block is None:
            return x
        if self._fitted_rows is not None:
            # let go, as TaskCentred lets go of its task: an adapted task kept holds no rows
            (parts, rows), self._fitted_rows = self._fitted_rows, None
            if is_stacked(x, parts):
                return rows
            if len(parts) == 2 and is_stacked(x, parts[1:]):
                return rows[len(parts[0]) :]
        return self.tuning.transform(x)

    def active_members(self) -> dict[str, Sliced]:
        """The members that take part in the task fitted last."""
        return self.members_for(two_per_class=self.checked)

    def members_for(self, two_per_class: bool) -> dict[str, Sliced]:
        """The members of tasks where every class has two labeled images or more, or else of
        tasks with a single one in some class (see NEEDS_TWO_PER_CLASS)."""
        if two_per_class:
            return self.members
        return {name: m for name, m in self.members.items() if name not in NEEDS_TWO_PER_CLASS}

    def member_log_probabilities(self, x: Tensor, names: list[str] | None = None) -> dict[str, Tensor]:
        """Each member's (those of `names` only, where given) calibrated log-probabilities of `x`."""
        x = self._tuned(x)
        return {
            name: torch.log_softmax(calibrated_logits(member, x) / self.factors[name], dim=1)
            for name, member in self.active_members().items()
            if names is None or name in names
        }

    def logits(self, x: Tensor) -> Tensor:
        """The members' averaged log-probabilities (for images self-training labeled, those that
        chose them), with the batch's class shares where they apply (scaled so that
        `softmax(logits / temperature)` applies them by Bayes' rule)."""
        logits = torch.stack(list(self.member_log_probabilities(x).values())).mean(0)
        if (self_labeled := self.calibration.self_labeled) is not None:
            rows, found = rows_among(row_fingerprints(x), self_labeled.fingerprints)
            logits[torch.from_numpy(rows)] = self_labeled.logits[torch.from_numpy(found)]
        if self.calibration.batch_log_ratios is not None:
            logits = logits + self.temperature * self.calibration.batch_log_ratios
        return logits

    def predict_proba(self, x: Tensor) -> Tensor:
        return torch.softmax(self.logits(x) / self.temperature, dim=1)

    def task_parameters(self) -> list[Tensor]:
        return []  # each member tunes its own (`with_ssl`)

    def set_task_parameters(self, tensors: list[Tensor]) -> None:
        """Nothing of its own to replace."""


def _joined(support: Tensor, unlabeled: Tensor, rows: np.ndarray) -> tuple[Tensor, Tensor]:
    """The labeled rows with the unlabeled `rows` after them, and the unlabeled rest: views of one
    new tensor whose fingerprints are those of the rows it copies (row_sets.py), so that each
    member recognises its rows without hashing them again."""
    rest = np.ones(len(unlabeled), dtype=bool)
    rest[rows] = False
    order = np.concatenate([rows, np.flatnonzero(rest)])
    joined = torch.empty(len(support) + len(unlabeled), support.shape[1], dtype=support.dtype)
    joined[: len(support)] = support
    torch.index_select(unlabeled, 0, torch.from_numpy(order), out=joined[len(support) :])
    remember_fingerprints(
        joined, np.concatenate([row_fingerprints(support), row_fingerprints(unlabeled)[order]])
    )
    labeled = len(support) + len(rows)
    return joined[:labeled], joined[labeled:]


def _use_plain_local_scale(member: TaskCentred) -> None:
    """Set a propagation member's kernel to the plain local scale (other methods have none)."""
    if isinstance(member.method, LabelPropagation):
        with torch.no_grad():
            member.method.log_scale.zero_()


def _overlap(a: slice, b: slice) -> bool:
    return a.start < b.stop and b.start < a.stop


def combined_model(mobilenet: Model, conv4: Model) -> Model:
    """The method of two checkpoints of one method (MobileNetV2 head, Conv-4) on every source."""
    backbone = JointFeatures(mobilenet.backbone, conv4.backbone)
    where = backbone.slices()
    small = backbone.small.embedding_dim
    # each member adapts a copy of its own: fitting one must not move another
    members = {
        "imagenet": centred_method(mobilenet, IMAGENET_STAGE_DIMS, 0.5),
        "final": centred_method(mobilenet, (FINAL_DIM,), 0.5),
        "mobilenetv2": copy.deepcopy(mobilenet.method),
        "conv4": copy.deepcopy(conv4.method),
        "pixels": centred_method(mobilenet, (backbone.pixels.embedding_dim,), None),
        # not meta-trained: the plain classifier that beat the meta-trained members on some
        # photo domains; it adds 0.5-1.4 points on four development domains (docs/crossdomain.md)
        "logreg": TaskCentred(make_method("logreg"), (FINAL_DIM,), 0.5, backbone.head_dim, 1.0),
        # a second ImageNet network, trained differently, with the same two members as the first's
        # last stage: +0.4 to +3.0 points on three development domains, -0.2 to +0.1 on MNIST
        # (docs/crossdomain.md)
        "mobilenetv3": centred_method(mobilenet, (small,), 0.5),
        "mobilenetv3-logreg": TaskCentred(make_method("logreg"), (small,), 0.5, backbone.head_dim, 1.0),
    }
    slices = {**where, "logreg": where["final"], "mobilenetv3-logreg": where["mobilenetv3"]}
    tuning = LastStageTuning(
        mobilenet.backbone.features[18], backbone.head, where["final"], where["mobilenetv2"]
    )
    for name in PLAIN_LOCAL_SCALE:
        _use_plain_local_scale(members[name])
    method = SourceEnsemble({name: Sliced(m, slices[name]) for name, m in members.items()}, tuning=tuning)
    fingerprint = hashlib.sha256(f"joint-v2:{mobilenet.fingerprint}:{conv4.fingerprint}".encode()).hexdigest()[
        :16
    ]
    return Model(f"combined+{mobilenet.name}", backbone.eval(), method, mobilenet.card, fingerprint)
